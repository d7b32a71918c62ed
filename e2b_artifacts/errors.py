"""Errors that carry a hint and a stable exit code.

Every expected failure is raised as :class:`ArtifactError`; the CLI prints
``error: <message>`` and ``hint: <hint>`` and exits with ``code``.
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    """Stable process exit codes, documented in the README."""

    OK = 0
    CHECK_FAILED = 1  # a check ran and found a problem (verify, kernel check, boot)
    USAGE = 2  # bad flag or argument (click uses 2 as well)
    BAD_INPUT = 3  # missing or malformed input file, bad metadata
    TOOL = 4  # an external tool is missing or failed
    NO_SPACE = 5  # image or disk full
    CONFLICT = 6  # build exists, locked, refuses to overwrite
    REMOTE = 7  # network, registry, object store or database failure
    INTEGRITY = 8  # checksum or digest mismatch
    INTERNAL = 70  # a bug: please report (traceback with --debug)


class ArtifactError(Exception):
    """An expected failure: a message, a hint naming the fix, and an exit code."""

    def __init__(self, message: str, hint: str = "", code: ExitCode = ExitCode.BAD_INPUT) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.code = code

    def __str__(self) -> str:
        return self.message


def missing_dependency(package: str, needed_for: str) -> ArtifactError:
    """A core dependency of e2b-artifact that does not import: a broken install, not bad input."""
    return ArtifactError(f"{needed_for} needs the {package} package (a dependency of e2b-artifact), which is not "
                         "importable", hint=f"reinstall e2b-artifact (pip install .), which installs {package}",
                         code=ExitCode.TOOL)
