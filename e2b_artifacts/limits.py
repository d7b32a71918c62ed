"""Size limits of the files the tool reads whole: one per input kind, each raised by an environment variable.

A hostile or broken input (a 500 MB ``metadata.json``, a symlink to ``/dev/zero``) must end in a clean
error, not in gigabytes of memory. The defaults are far above anything a real build holds; the table
in docs/verify.md lists them.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from . import layout
from .errors import ArtifactError, ExitCode

KIB, MIB, GIB = 1 << 10, 1 << 20, 1 << 30
_SIZE = re.compile(r"^\s*(\d{1,15})\s*([kmg]i?b?|b)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": KIB, "m": MIB, "g": GIB}


@dataclass(frozen=True)
class InputLimit:
    """The most bytes the tool reads from one input of a kind (``kind`` names it in messages)."""

    kind: str
    default: int
    about: str

    @property
    def env(self) -> str:
        return "E2B_ARTIFACT_MAX_" + self.kind.upper().replace("-", "_").replace(" ", "_") + "_BYTES"

    def bytes(self) -> int:
        """The limit in force: the environment variable when set, else the default."""
        raw = os.environ.get(self.env)
        if not raw:
            return self.default
        return parse_size(raw, self.env)

    def exceeded(self, what: str, path: object, size: int | None) -> ArtifactError:
        got = f"{size} bytes" if size is not None else "larger"
        return ArtifactError(f"{what} {path} is {got}, over the {self.bytes()}-byte limit for {self.kind} files",
                             hint=f"check that it is the right file; to read a bigger one, set {self.env}=BYTES "
                                  "(suffixes K, M, G)", code=ExitCode.BAD_INPUT)


def parse_size(text: str, where: str) -> int:
    """``1048576``, ``64M``, ``2GiB`` -> bytes."""
    m = _SIZE.match(text)
    if not m:
        raise ArtifactError(f"{where}: expected a size in bytes (suffixes K, M, G), got {text!r}",
                            hint=f"e.g. {where}=64M", code=ExitCode.USAGE)
    return int(m.group(1)) * _UNITS[(m.group(2) or "")[:1].lower()]


METADATA = InputLimit("metadata", 1 * MIB, layout.METADATA)
MANIFEST = InputLimit("manifest", 16 * MIB, layout.MANIFEST)
PLAIN_RECORD = InputLimit("plain-record", 64 * MIB, layout.PLAIN_RECORD + " (a compressed build's plain manifest "
                          "and original headers)")
HEADER = InputLimit("header", 256 * MIB + KIB, ", ".join(layout.HEADERS) + " (also bounded by the size they "
                                                "describe: 40 bytes per 4 KiB page)")
SNAPFILE = InputLimit(layout.SNAPFILE, 64 * MIB, "the Firecracker snapshot state (Firecracker refuses more than 10 MB)")
KERNEL = InputLimit("kernel", 512 * MIB, "a kernel file, and a bzImage's decompressed payload")
KERNEL_CONFIG = InputLimit("kernel-config", 16 * MIB, "a kernel .config (--config, sidecar files, IKCONFIG)")
ENVD = InputLimit("envd", 512 * MIB, "the envd binary injected into a rootfs")
QUARANTINE_RECORD = InputLimit("quarantine-record", 32 * MIB, "quarantine.json of a cold start (it holds the "
                                                             "manifest and metadata.json as they were)")
ALL = (METADATA, MANIFEST, PLAIN_RECORD, HEADER, SNAPFILE, KERNEL, KERNEL_CONFIG, ENVD, QUARANTINE_RECORD)
