"""The library API: every name in ``e2b_artifacts.__all__`` imports, lazily, and means one thing."""

from __future__ import annotations

import importlib
import inspect
import json
import subprocess
import sys

import e2b_artifacts

FUNCTIONS = {"build", "verify", "clone", "cold_start", "restore"}
MODULES = {"sync"}


def python(code: str) -> str:
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return proc.stdout


def test_each_public_name_imports_and_is_what_it_says() -> None:
    assert len(set(e2b_artifacts.__all__)) == len(e2b_artifacts.__all__)
    assert {"ArtifactError", "ExitCode", "VerifyReport", "BuildResult"} <= set(e2b_artifacts.__all__)
    for name in e2b_artifacts.__all__:
        value = getattr(importlib.import_module("e2b_artifacts"), name)
        if name in FUNCTIONS:
            assert inspect.isfunction(value) and value.__name__ == name, name
        elif name in MODULES:
            assert inspect.ismodule(value) and value.__name__ == f"e2b_artifacts.{name}", name
        else:
            assert inspect.isclass(value) and value.__name__ == name, name
        assert name in dir(e2b_artifacts)
    assert all(inspect.isfunction(getattr(e2b_artifacts.sync, f)) for f in ("push", "pull", "list_builds"))


def test_import_is_light_and_names_load_on_first_use() -> None:
    code = ("import e2b_artifacts, sys, json\n"
            "before = sorted(m for m in sys.modules if m.startswith('e2b_artifacts'))\n"
            "from e2b_artifacts import ExitCode\n"
            "after = sorted(m for m in sys.modules if m.startswith('e2b_artifacts'))\n"
            "print(json.dumps([before, after]))\n")
    before, after = json.loads(python(code))
    assert before == ["e2b_artifacts"]
    assert after == ["e2b_artifacts", "e2b_artifacts.errors"]


def test_functions_stay_functions_whatever_was_imported_first() -> None:
    code = ("import e2b_artifacts.build, e2b_artifacts.verify, e2b_artifacts.clone, inspect\n"
            "from e2b_artifacts import build, verify, clone\n"
            "from e2b_artifacts.build import BuildRequest\n"
            "import e2b_artifacts as pkg\n"
            "print([inspect.isfunction(f) for f in (build, verify, clone, pkg.build, pkg.verify, pkg.clone)],"
            " BuildRequest.__module__)\n")
    assert python(code).split() == ["[True,", "True,", "True,", "True,", "True,", "True]", "e2b_artifacts.build"]


def test_unknown_names_are_attribute_errors() -> None:
    assert not hasattr(e2b_artifacts, "no_such_thing")
