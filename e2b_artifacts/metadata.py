"""Read every metadata.json form seen in the wild; write upstream's current one.

Forms:

* ``v2``: ``{"version": 2, "template": {build_id, kernel_version, firecracker_version},
  "context": {...}, "start": ..., "from_image": ..., "from_template": ...}`` — what
  e2b-dev/infra's ``template/metadata`` package reads and writes since 2025-08-20.
* ``v1``: ``{"version": "v1", "template": {...}, "metadata": {user, workdir, env_vars}, ...}``.
* ``camel``: hand-written flat ``kernelVersion``, ``firecrackerVersion``, ``buildID``,
  ``templateID``, ``envdVersion``. Upstream's reader drops all of it.

Fields upstream has no place for (template id, envd version, how the rootfs was
built) go under ``"e2b_artifact"``; upstream's decoder ignores unknown keys.
Unknown keys of any form survive a read-modify-write, and so do upstream's newer top-level
fields (``cmdline_args``, ``filesystem_only``, ``fs_quiesced``, ``prefetch``, ``balloon``,
``cpu_template``, ``build_cpu_template``, ``vcpu_count``). How upstream itself reads a document
(its version rule, the Go type of each field) is in ``metadata_fields``.
"""

from __future__ import annotations

import copy
import json
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar, overload

from . import layout, limits
from .errors import ArtifactError, ExitCode
from .fsutil import atomic_write_bytes, read_input
from .jsoninput import load_json
from .metadata_fields import UpstreamReading, upstream_reading

FILE_NAME = layout.METADATA
CURRENT_VERSION = 2
EXT_KEY = "e2b_artifact"  # our own namespace inside metadata.json
MAX_VERSION_NAME = 128  # kernel and Firecracker version names are directory names on the orchestrator host

Form = Literal["v2", "v1", "camel"]
T = TypeVar("T")

# What a build records when not told otherwise: upstream's 2025 defaults (packages/shared/pkg/schema).
DEFAULT_KERNEL_VERSION = "vmlinux-6.1.102"
DEFAULT_FIRECRACKER_VERSION = "v1.12.1_d990331"
DEFAULT_VCPU = 2
DEFAULT_RAM_MB = 512

CAMEL_KEYS = {
    "buildID": "build_id",
    "buildId": "build_id",
    "templateID": "template_id",
    "templateId": "template_id",
    "kernelVersion": "kernel_version",
    "firecrackerVersion": "firecracker_version",
    "envdVersion": "envd_version",
}


def _dict_or_none(value: Any) -> dict[str, Any] | None:
    return value if isinstance(value, dict) else None


def _count_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value != 0 else None


class _UpstreamField(Generic[T]):
    """One of upstream's top-level fields, read from ``Metadata.extra`` (where rewrites keep it) by its name."""

    def __init__(self, convert: Callable[[Any], T]) -> None:
        self.convert = convert
        self.key = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.key = name

    @overload
    def __get__(self, metadata: None, owner: type | None = None) -> _UpstreamField[T]: ...

    @overload
    def __get__(self, metadata: Metadata, owner: type | None = None) -> T: ...

    def __get__(self, metadata: Metadata | None, owner: type | None = None) -> T | _UpstreamField[T]:
        if metadata is None:  # looked up on the class (help(), inspect): the field itself, as a property does
            return self
        return self.convert(metadata.extra.get(self.key))


@dataclass
class Metadata:
    """A parsed metadata.json: typed core fields plus everything else untouched."""

    build_id: str
    kernel_version: str
    firecracker_version: str
    template_id: str | None = None
    envd_version: str | None = None
    form: Form = "v2"
    # The document as read, in v2 shape, minus the fields above; survives rewrites.
    extra: dict[str, Any] = field(default_factory=dict)
    # How upstream's deserialize reads the file as it is (version 1 = every field dropped).
    upstream: UpstreamReading = field(default_factory=lambda: UpstreamReading(CURRENT_VERSION))
    version_as_read: Any = CURRENT_VERSION  # the "version" value of the file (for messages)

    def to_dict(self) -> dict[str, Any]:
        """The current upstream form (version 2, or the integer version >= 2 it had), unknown fields preserved."""
        doc = copy.deepcopy(self.extra)
        template = dict(doc.get("template") or {})
        template.update(build_id=self.build_id, kernel_version=self.kernel_version,
                        firecracker_version=self.firecracker_version)
        version = doc.get("version")
        keep = isinstance(version, int) and not isinstance(version, bool) and version >= CURRENT_VERSION
        doc["version"] = version if keep else CURRENT_VERSION
        doc["template"] = template
        doc.setdefault("context", {})  # upstream always writes it
        ext = dict(doc.get(EXT_KEY) or {})
        if self.template_id is not None:
            ext["template_id"] = self.template_id
        if self.envd_version is not None:
            ext["envd_version"] = self.envd_version
        if ext:
            doc[EXT_KEY] = ext
        ordered: dict[str, Any] = {k: doc.pop(k) for k in ("version", "template", "context") if k in doc}
        ordered.update(doc)
        return ordered

    def to_json(self) -> bytes:
        return (json.dumps(self.to_dict(), indent=2) + "\n").encode()

    def write(self, path: Path) -> None:
        atomic_write_bytes(path, self.to_json())

    @property
    def ext(self) -> dict[str, Any]:
        """Our own extension fields (init mode, vCPU/RAM, source image, ...)."""
        value = self.extra.setdefault(EXT_KEY, {})
        assert isinstance(value, dict)
        return value

    # Upstream's newer top-level fields, as the file states them (``None``/False when absent or of
    # another type; upstream_reading says whether upstream reads them at all).
    filesystem_only = _UpstreamField(lambda v: v is True)
    fs_quiesced = _UpstreamField(lambda v: v is True)
    vcpu_count = _UpstreamField(_count_or_none)
    cmdline_args = _UpstreamField(_dict_or_none)
    cpu_template = _UpstreamField(_dict_or_none)
    build_cpu_template = _UpstreamField(_dict_or_none)
    prefetch = _UpstreamField(_dict_or_none)
    balloon = _UpstreamField(_dict_or_none)

    @property
    def upstream_filesystem_only(self) -> bool:
        """Does upstream's orchestrator see ``filesystem_only: true`` (it drops it for version <= 1)?"""
        return self.filesystem_only and not self.upstream.dropped and self.upstream.decodes


def read(path: Path) -> Metadata:
    """Parse ``path`` in any known form; errors name the file and the field."""
    raw = read_input(path, "metadata file", limit=limits.METADATA,
                     missing_hint="build the template first (e2b-artifact build)")
    return parse(raw, str(path))


def version_name_problem(value: str) -> str | None:
    """Why ``value`` cannot be a kernel or Firecracker version (a directory name on the host), or None."""
    if len(value) > MAX_VERSION_NAME:
        return f"{len(value)} characters, longer than the {MAX_VERSION_NAME} a version name may have"
    if value in (".", "..") or "/" in value:
        return "not a single directory name"
    if any(unicodedata.category(c).startswith("C") for c in value):
        return "contains control characters"
    return None


def parse(raw: bytes, where: str = FILE_NAME) -> Metadata:
    doc = load_json(raw, where, "fix the file, or rebuild it with e2b-artifact build")
    if not isinstance(doc, dict):
        raise ArtifactError(f"{where}: expected a JSON object at the top level",
                            hint="see the README for the metadata.json format", code=ExitCode.BAD_INPUT)
    if EXT_KEY in doc and not isinstance(doc[EXT_KEY], dict):
        raise ArtifactError(f"{where}: field {EXT_KEY}: expected an object, got {_json_type(doc[EXT_KEY])}",
                            hint=f"{EXT_KEY} holds this tool's own fields: make it an object or remove it",
                            code=ExitCode.BAD_INPUT)
    reading = upstream_reading(doc)
    if not reading.dropped:  # a number > 1: upstream decodes every field (or fails on one, see reading.problems)
        md = _from_v2(doc, where)
    elif version_is_v1_shaped(doc):
        md = _from_v1(doc, where)
    elif any(k in doc for k in CAMEL_KEYS):
        md = _from_camel(doc, where)
    else:
        version = doc.get("version")
        what = "missing" if version is None else f"{json.dumps(version)[:40]}"
        raise ArtifactError(f"{where}: field version: {what}, and no template object or camelCase fields: upstream "
                            "reads it as version 1 with every field dropped, and this tool finds no kernel or "
                            "Firecracker version in it",
                            hint='upstream expects {"version": 2, "template": {...}}', code=ExitCode.BAD_INPUT)
    md.upstream, md.version_as_read = reading, doc.get("version")
    return md


def version_is_v1_shaped(doc: dict[str, Any]) -> bool:
    """A document upstream reads as version 1 that still has the v1/v2 layout (a ``template`` object)."""
    camel = any(k in doc for k in CAMEL_KEYS)
    return doc.get("version") == "v1" or (isinstance(doc.get("template"), dict) and not camel)


def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", int: "a number",
             float: "a number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def _version_name(obj: dict[str, Any], key: str, where: str, dotted: str) -> str:
    value = str(_string(obj, key, where, dotted))
    if problem := version_name_problem(value):
        raise ArtifactError(f"{where}: field {dotted}: {problem}",
                            hint=f"set {dotted} to the name of its directory on the host (e.g. vmlinux-6.1.102, "
                                 "v1.12.1_d990331)", code=ExitCode.BAD_INPUT)
    return value


def _string(obj: dict[str, Any], key: str, where: str, dotted: str, required: bool = True) -> str | None:
    value = obj.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or (required and not value):
        got = "missing" if value is None else f"got {_json_type(value)}" if isinstance(value, dict | list) else (
            f"got {json.dumps(value)[:80]}")
        raise ArtifactError(f"{where}: field {dotted}: expected a non-empty string, {got}",
                            hint=f"set {dotted} in {where}, or rebuild it with e2b-artifact build",
                            code=ExitCode.BAD_INPUT)
    return value


def _object(doc: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    value = doc.get(key)
    if not isinstance(value, dict):
        got = "missing" if value is None else f"got {type(value).__name__}"
        raise ArtifactError(f"{where}: field {key}: expected an object, {got}",
                            hint='upstream expects {"version": 2, "template": {"build_id": ..., ...}}',
                            code=ExitCode.BAD_INPUT)
    return value


def _from_v2(doc: dict[str, Any], where: str) -> Metadata:
    template = _object(doc, "template", where)
    found = doc.get(EXT_KEY)
    ext: dict[str, Any] = found if isinstance(found, dict) else {}
    extra = copy.deepcopy(doc)
    extra["template"] = {k: v for k, v in template.items()
                         if k not in ("build_id", "kernel_version", "firecracker_version")}
    return Metadata(
        build_id=str(_string(template, "build_id", where, "template.build_id")),
        kernel_version=_version_name(template, "kernel_version", where, "template.kernel_version"),
        firecracker_version=_version_name(template, "firecracker_version", where, "template.firecracker_version"),
        template_id=ext.get("template_id") if isinstance(ext.get("template_id"), str) else None,
        envd_version=ext.get("envd_version") if isinstance(ext.get("envd_version"), str) else None,
        form="v2",
        extra=extra,
    )


def _from_v1(doc: dict[str, Any], where: str) -> Metadata:
    template = _object(doc, "template", where)
    extra = copy.deepcopy(doc)
    extra.pop("version", None)
    if "metadata" in extra and "context" not in extra:  # v1 "metadata" became v2 "context"
        extra["context"] = extra.pop("metadata")
    extra["template"] = {k: v for k, v in template.items()
                         if k not in ("build_id", "kernel_version", "firecracker_version", "template_id")}
    return Metadata(
        build_id=str(_string(template, "build_id", where, "template.build_id")),
        kernel_version=_version_name(template, "kernel_version", where, "template.kernel_version"),
        firecracker_version=_version_name(template, "firecracker_version", where, "template.firecracker_version"),
        template_id=_string(template, "template_id", where, "template.template_id", required=False),
        form="v1",
        extra=extra,
    )


def _from_camel(doc: dict[str, Any], where: str) -> Metadata:
    values: dict[str, str | None] = {}
    if "template" in doc and not isinstance(doc["template"], dict):
        raise ArtifactError(f"{where}: field template: expected an object, got {_json_type(doc['template'])}",
                            hint='upstream expects {"version": 2, "template": {...}}', code=ExitCode.BAD_INPUT)
    for camel, snake in CAMEL_KEYS.items():
        if camel in doc:
            values[snake] = _string(doc, camel, where, camel, required=snake in ("build_id",))
    for snake, camel in (("kernel_version", "kernelVersion"), ("firecracker_version", "firecrackerVersion")):
        if values.get(snake) and (problem := version_name_problem(str(values[snake]))):
            raise ArtifactError(f"{where}: field {camel}: {problem}",
                                hint=f"set {camel} to the name of its directory on the host", code=ExitCode.BAD_INPUT)
    for needed, camel in (("build_id", "buildID"), ("kernel_version", "kernelVersion"),
                          ("firecracker_version", "firecrackerVersion")):
        if not values.get(needed):
            raise ArtifactError(f"{where}: field {camel}: missing",
                                hint="add it, or rebuild metadata with e2b-artifact build", code=ExitCode.BAD_INPUT)
    extra = {k: copy.deepcopy(v) for k, v in doc.items() if k not in CAMEL_KEYS and k != "version"}
    return Metadata(
        build_id=str(values["build_id"]),
        kernel_version=str(values["kernel_version"]),
        firecracker_version=str(values["firecracker_version"]),
        template_id=values.get("template_id"),
        envd_version=values.get("envd_version"),
        form="camel",
        extra=extra,
    )
