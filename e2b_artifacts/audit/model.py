"""What an audit reports: one finding per mismatch (its class, what it is about, the command that fixes it)
and, with ``--fix``, every action taken with the way to undo it."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Kind(StrEnum):
    """The mismatch classes (issue 14 item 2), as ``check`` names ``audit.<kind>``."""

    BUILD_NO_FILES = "build-no-files"  # a build the API serves (status group ready) with no files in storage
    ORPHAN_FILES = "orphan-files"  # a build in storage no env_builds row points to, and no served build needs
    NAME_UNRESOLVED = "name-unresolved"  # a tag (and the aliases of its template) with no ready build
    PARENT_GONE = "parent-gone"  # a build whose headers map data to a build that is not in storage
    CACHE_STALE = "cache-stale"  # a cache entry of a build storage or the API no longer has


class FixCode(StrEnum):
    """What ``--fix`` does about a finding (``NONE``: a person runs the command in the finding)."""

    NONE = ""
    MARK_FAILED = "row.mark-failed"  # env_builds.status = 'failed' with a reason
    SOFT_DELETE = "template.soft-delete"  # envs.deleted_at = now() (upstream's soft-delete marker)
    REGISTER = "build.register"  # e2b-artifact register: rows for a build the API does not know
    QUARANTINE = "files.quarantine"  # the build directory moved aside in storage (and its row marked failed)
    CACHE_QUARANTINE = "cache.quarantine"  # the cache entry moved aside in its cache directory


@dataclass(frozen=True)
class AuditFinding:
    kind: Kind
    subject: str  # the build id, or template/tag for a name, or the cache entry's path
    message: str
    command: str  # the command that fixes it
    fix: FixCode = FixCode.NONE
    build_id: str = ""
    template_id: str = ""
    details: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def check(self) -> str:
        return f"audit.{self.kind.value}"

    def line(self) -> str:
        return f"FAIL {self.check} {self.subject}: {self.message}\n     fix: {self.command}"

    def to_json(self) -> dict[str, Any]:
        return {"type": "finding", "check": self.check, "class": self.kind.value, "status": "FAIL",
                "subject": self.subject, "build_id": self.build_id or None, "template_id": self.template_id or None,
                "message": self.message, "command": self.command, "fix": self.fix.value, "details": self.details}


@dataclass(frozen=True)
class FixAction:
    """One change ``--fix`` made: what, to which subject, and how to undo it."""

    kind: Kind
    subject: str
    action: str  # "moved", "marked failed", "soft-deleted", "registered"
    detail: str
    undo: str

    def line(self) -> str:
        return f"fixed: {self.kind.value} {self.subject}: {self.action}: {self.detail}\n       undo: {self.undo}"

    def to_json(self) -> dict[str, Any]:
        return {"type": "fixed", "class": self.kind.value, "subject": self.subject, "action": self.action,
                "detail": self.detail, "undo": self.undo}


@dataclass
class AuditReport:
    location: str
    database: str
    findings: list[AuditFinding] = field(default_factory=list)  # what is left (after --fix: after fixing)
    fixed: list[FixAction] = field(default_factory=list)
    fix_errors: list[str] = field(default_factory=list)
    quarantines: list[str] = field(default_factory=list)  # directories --fix moved things into
    passes: int = 1
    builds_in_storage: int = 0
    rows: int = 0
    cache_entries: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.findings and not self.fix_errors

    def counts(self) -> dict[str, int]:
        return {k.value: sum(f.kind is k for f in self.findings) for k in Kind}

    def summary(self) -> dict[str, Any]:
        return {"type": "summary", "ok": self.ok, "location": self.location, "database": self.database,
                "findings": len(self.findings), "counts": self.counts(), "fixed": len(self.fixed),
                "fix_errors": self.fix_errors, "quarantines": self.quarantines, "passes": self.passes,
                "builds_in_storage": self.builds_in_storage, "build_rows": self.rows,
                "cache_entries": self.cache_entries, "seconds": round(self.seconds, 3)}

    def summary_line(self) -> str:
        found = ", ".join(f"{n} {k}" for k, n in self.counts().items() if n) or "no mismatches"
        fixed = f"; {len(self.fixed)} fixed" if self.fixed else ""
        return (f"audit of {self.location} against database {self.database!r}: {self.builds_in_storage} builds in "
                f"storage, {self.rows} build rows, {self.cache_entries} cache entries: {found}{fixed} "
                f"({self.seconds:.1f} s) -> {'clean' if self.ok else 'FAILED'}")
