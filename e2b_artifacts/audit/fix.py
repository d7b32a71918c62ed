"""What ``audit --fix`` does about each finding: renames (never a delete) and the row changes upstream's own
status values allow.

* storage builds (orphans, a parent gone) move to ``<storage>/.audit-quarantine/<timestamp>/<build-id>``
  (``layout.audit_quarantine_dir``), under the build's lock; a directory storage only (an object store has no
  rename: those findings keep their command);
* cache entries move beside themselves to ``<cache>/.e2b-artifact-quarantine/<timestamp>/<build-id>``
  (``coldstart.CACHE_SIDE_DIR``, where cold-start puts cache entries too);
* rows: a served build without files (or moved aside) is marked ``failed`` with a reason; a template whose
  default tag resolves to no build is soft-deleted (``envs.deleted_at``); an orphan whose metadata names a
  template with no served build is registered (``db.register``), else moved aside.

Every quarantine directory gets ``audit-fix.json``: each move and row change with the command that undoes it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import layout
from ..coldstart import CACHE_SIDE_DIR
from ..errors import ArtifactError, ExitCode
from ..fsutil import atomic_write_bytes, unused_path
from .dbside import DbView, mark_failed, soft_delete
from .hostside import StorageView
from .model import AuditFinding, FixAction, FixCode, Kind

if TYPE_CHECKING:
    import psycopg

RECORD_NAME = "audit-fix.json"


@dataclass
class Fixer:
    url: str
    conn: psycopg.Connection[Any]
    stamp: str
    actions: list[FixAction] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    records: dict[Path, list[dict[str, str]]] = field(default_factory=dict)  # quarantine dir -> its entries

    def apply(self, finding: AuditFinding, db: DbView, st: StorageView) -> None:
        try:
            if finding.fix is FixCode.MARK_FAILED:
                self._mark_failed(finding, db, f"e2b-artifact audit: no files of this build in {st.location}")
            elif finding.fix is FixCode.SOFT_DELETE:
                undo = soft_delete(self.conn, finding.template_id)
                self._done(finding, "soft-deleted", f"envs.deleted_at set on template {finding.template_id}", undo,
                           None)
            elif finding.fix is FixCode.REGISTER:
                self._register(finding, db, st)
            elif finding.fix is FixCode.QUARANTINE:
                self._quarantine_build(finding, db, st)
            elif finding.fix is FixCode.CACHE_QUARANTINE:
                self._quarantine_cache(finding)
        except ArtifactError as exc:
            self.errors.append(f"{finding.check} {finding.subject}: {exc.message}" + (
                f" (hint: {exc.hint})" if exc.hint else ""))

    def _done(self, finding: AuditFinding, action: str, detail: str, undo: str, record_in: Path | None) -> None:
        self.actions.append(FixAction(finding.kind, finding.subject, action, detail, undo))
        if record_in is not None:
            self.records.setdefault(record_in, []).append(
                {"class": finding.kind.value, "subject": finding.subject, "action": action, "detail": detail,
                 "undo": undo})
            atomic_write_bytes(record_in / RECORD_NAME, (json.dumps(
                {"timestamp": self.stamp, "by": "e2b-artifact audit --fix", "entries": self.records[record_in]},
                indent=2) + "\n").encode())

    def _mark_failed(self, finding: AuditFinding, db: DbView, reason: str, record_in: Path | None = None) -> None:
        undo = mark_failed(self.conn, db, finding.build_id, reason)
        was = db.builds[finding.build_id].status
        self._done(finding, "marked failed", f"env_builds.status 'failed' (was {was!r}), reason {reason!r}", undo,
                   record_in)

    def _register(self, finding: AuditFinding, db: DbView, st: StorageView) -> None:
        from ..db.register import build_info, register

        assert st.local_root is not None
        try:
            result = register(self.url, build_info(st.local_root / finding.build_id))
        except ArtifactError as exc:
            # register's own refusal (no single team, a conflict): the orphan is moved aside instead
            self._quarantine_build(finding, db, st, why=f" (register refused: {exc.message})")
            return
        self._done(finding, "registered", f"as template {result.template_id} (team {result.team_id}), "
                                          f"{len(result.statements)} statements",
                   f"UPDATE public.env_builds SET status = 'failed' WHERE id = '{finding.build_id}';", None)

    def _quarantine_build(self, finding: AuditFinding, db: DbView, st: StorageView, why: str = "") -> None:
        if st.local_root is None:
            raise ArtifactError(f"{st.location} is an object store: audit moves builds aside in a directory only",
                                hint=finding.command, code=ExitCode.USAGE)
        root = st.local_root
        qdir = layout.audit_quarantine_dir(root, self.stamp)
        with layout.lock(root, finding.build_id):
            source = root / finding.build_id
            if not source.is_dir():
                raise ArtifactError(f"{source} is gone", hint="run audit again", code=ExitCode.CONFLICT)
            qdir.mkdir(parents=True, exist_ok=True)
            dest = unused_path(qdir / finding.build_id)
            os.rename(source, dest)
        self._done(finding, "moved", f"{source} -> {dest}{why}", f"mv {dest} {source}", qdir)
        if db.served(finding.build_id):
            self._mark_failed(finding, db, f"e2b-artifact audit: build moved aside to {dest} ({finding.kind.value})",
                              qdir)

    def _quarantine_cache(self, finding: AuditFinding) -> None:
        source = Path(finding.details["path"])
        if not source.exists() and not source.is_symlink():
            raise ArtifactError(f"{source} is gone", hint="run audit again", code=ExitCode.CONFLICT)
        qdir = source.parent / CACHE_SIDE_DIR / self.stamp
        qdir.mkdir(parents=True, exist_ok=True)
        dest = unused_path(qdir / source.name)
        os.rename(source, dest)  # beside itself: the same file system, one rename
        self._done(finding, "moved", f"{source} -> {dest}", f"mv {dest} {source}", qdir)


def is_fixable(finding: AuditFinding) -> bool:
    return finding.fix is not FixCode.NONE


__all__ = ["RECORD_NAME", "Fixer", "Kind", "is_fixable"]
