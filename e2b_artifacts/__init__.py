"""Build and verify the template artifacts of self-hosted E2B sandboxes.

The library's public API is ``__all__``::

    from e2b_artifacts import BuildRequest, Settings, build, verify

    result = build(BuildRequest(source_kind="tar", source=tar, envd=envd, storage=storage))
    report = verify(result.build_dir, Settings())

Each name is imported on first use, so ``import e2b_artifacts`` (and importing one of its
modules) loads nothing else. ``build``, ``verify`` and ``clone`` are the functions; the modules
of the same names stay importable as ``from e2b_artifacts.build import ...``. ``sync`` is the
module (``sync.push``, ``sync.pull``, ``sync.list_builds``).
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "ArtifactError", "BuildRequest", "BuildResult", "CloneResult", "ColdStartResult", "ExitCode", "Finding",
    "RestoreResult", "Settings", "SyncReport", "VerifyReport", "build", "clone", "cold_start", "restore", "sync",
    "verify",
]

# public name -> the module that defines it ("" for the module of that name itself)
_HOMES: dict[str, str] = {
    "ArtifactError": "errors", "ExitCode": "errors", "Finding": "findings", "Settings": "settings",
    "build": "build", "BuildRequest": "build", "BuildResult": "build",
    "verify": "verify", "VerifyReport": "verify",
    "clone": "clone", "CloneResult": "clone",
    "cold_start": "coldstart", "ColdStartResult": "coldstart", "restore": "coldstart", "RestoreResult": "coldstart",
    "sync": "", "SyncReport": "sync",
}
# Functions named like their module: importing ``e2b_artifacts.build`` binds the package attribute
# ``build`` to the module, so these are properties of the package, which win over that binding.
_NAMED_LIKE_MODULE = ("build", "verify", "clone")

if TYPE_CHECKING:
    from . import sync as sync
    from .build import BuildRequest, BuildResult, build
    from .clone import CloneResult, clone
    from .coldstart import ColdStartResult, RestoreResult, cold_start, restore
    from .errors import ArtifactError, ExitCode
    from .findings import Finding
    from .settings import Settings
    from .sync import SyncReport
    from .verify import VerifyReport, verify

_loaded: dict[str, Any] = {}


def _load(name: str) -> Any:
    if name not in _loaded:
        home = _HOMES[name]
        module = importlib.import_module(f"{__name__}.{home or name}")
        _loaded[name] = module if not home else getattr(module, name)
    return _loaded[name]


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return _load(name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


class _Package(types.ModuleType):
    pass


def _function_property(name: str) -> property:
    def get(self: types.ModuleType) -> Any:
        return _load(name)

    def set_(self: types.ModuleType, value: Any) -> None:
        self.__dict__[name] = value  # the submodule, bound by the import system; the getter ignores it

    return property(get, set_)


for _name in _NAMED_LIKE_MODULE:
    setattr(_Package, _name, _function_property(_name))
sys.modules[__name__].__class__ = _Package
