"""One line of a check report: ``ok``, ``warn`` or ``FAIL``, why, the command that fixes it, and the fix as a code."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

Status = Literal["ok", "warn", "FAIL"]


class Fix(StrEnum):
    """What repairs a finding, for programs: ``verify --fix`` acts on these, never on the wording of a message."""

    NONE = ""
    # applied by verify --fix (AUTOMATIC)
    METADATA_REWRITE = "metadata.rewrite"  # camelCase / v1 metadata.json -> version 2, the original kept beside it
    SNAPSHOT_QUARANTINE = "snapshot.quarantine"  # cold start: memfile + snapfile moved aside, restore undoes it
    MANIFEST_WRITE = "manifest.write"  # record the integrity manifest from the current files
    MANIFEST_ADD = "manifest.add"  # add files present but not listed to the manifest
    # a person runs the command in the hint
    BUILD_REBUILD = "build.rebuild"  # e2b-artifact build (the file is missing, damaged or malformed)
    BUILD_CLONE = "build.clone"  # e2b-artifact clone --build-id: the ids disagree with the directory
    FILE_RESTORE = "file.restore"  # the file changed after the build: restore it from a good copy
    PARENTS_SYNC = "parents.sync"  # copy missing or short parent builds into storage (e2b-artifact sync)
    ROOTFS_INJECT = "rootfs.inject"  # e2b-artifact inject: envd, init, mount points, envd.service
    ENVD_REPLACE = "envd.replace"  # an envd built for the guest (its arch, static), then inject it
    KERNEL_INSTALL = "kernel.install"  # put the kernel where HOST_KERNELS_DIR says
    KERNEL_EXTRACT = "kernel.extract"  # e2b-artifact kernel extract: a compressed kernel -> vmlinux
    KERNEL_REPLACE = "kernel.replace"  # a kernel of the right format and arch (e2b-artifact kernel list)
    KERNEL_REBUILD = "kernel.rebuild"  # rebuild the kernel with the options the finding names
    FIRECRACKER_INSTALL = "firecracker.install"  # put Firecracker where FIRECRACKER_VERSIONS_DIR says


AUTOMATIC = frozenset({Fix.METADATA_REWRITE, Fix.SNAPSHOT_QUARANTINE, Fix.MANIFEST_WRITE, Fix.MANIFEST_ADD})


@dataclass(frozen=True)
class Finding:
    check: str  # dotted area: files, metadata, kernel, rootfs.init, snapshot.crc, header.memfile, manifest, ...
    status: Status
    message: str
    hint: str = ""
    fix: Fix = field(default=Fix.NONE, kw_only=True)

    def line(self) -> str:
        text = f"{self.status:<4} {self.check}: {self.message}"
        return text + (f"\n     hint: {self.hint}" if self.hint and self.status != "ok" else "")

    def to_dict(self) -> dict[str, str]:
        return {"check": self.check, "status": self.status, "message": self.message, "hint": self.hint,
                "fix": self.fix.value}


class Checked:
    """A report made of findings (host check, verify): whether a check failed, and how many of each status."""

    findings: list[Finding]

    def failed(self, strict: bool = False) -> bool:
        """Whether a check failed (with ``strict``: or warned)."""
        return any_failed(self.findings, strict)

    def counts(self) -> dict[str, int]:
        return count_by_status(self.findings)


def count_by_status(findings: Sequence[Finding]) -> dict[str, int]:
    """How many of ``findings`` have each status (every status named, with zeros)."""
    return {s: sum(f.status == s for f in findings) for s in ("ok", "warn", "FAIL")}


def any_failed(findings: Sequence[Finding], strict: bool = False) -> bool:
    """Whether a check failed (with ``strict``: or warned)."""
    return any(f.status == "FAIL" or (strict and f.status == "warn") for f in findings)
