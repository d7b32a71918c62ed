"""``host check``: can this host build and start templates?

One module per check family (kvm, memory, nbd, netns, binaries, storage, ports, jobs); every
check reads the host through :class:`~.view.HostView`, so it runs as well against a prepared
directory tree as against this machine.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..findings import Checked, Finding
from . import binaries, kvm, memory, nbd, netns, ports, storage
from .jobs import Job, check_job, load_job
from .view import HostView

__all__ = ["CHECKS", "HostReport", "HostView", "Job", "check_host", "load_job", "load_jobs"]

CHECKS: tuple[Callable[[HostView], list[Finding]], ...] = (
    kvm.check_kvm, kvm.check_host_kernel, memory.check_userfaultfd, nbd.check_nbd, memory.check_hugepages,
    netns.check_netns, binaries.check_envd, binaries.check_kernels, binaries.check_firecrackers,
    storage.check_paths, storage.check_space, ports.check_ports,
)


@dataclass
class HostReport(Checked):
    """What ``host check`` found on the host rooted at ``root``."""

    root: Path
    findings: list[Finding] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"ok": not self.failed(), "root": str(self.root), "counts": self.counts(),
                "checks": [f.to_dict() for f in self.findings]}


def load_jobs(files: Sequence[Path]) -> list[Job]:
    """Parse every job file first, so an unreadable one stops the run before any check."""
    return [load_job(f) for f in files]


def check_host(view: HostView, jobs: Sequence[Job] = ()) -> HostReport:
    report = HostReport(view.root)
    for check in CHECKS:
        report.findings += check(view)
    for job in jobs:
        report.findings += check_job(view, job)
    return report
