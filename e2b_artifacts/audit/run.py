"""One audit: read the three views, judge them; with ``fix``, fix what can be fixed and judge again (a fix can
reveal the next mismatch: a build marked failed may leave its template's default tag with no build) until
nothing fixable is left, at most :data:`MAX_PASSES` times."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..db import known as known_mod
from ..db import schema as schema_mod
from ..errors import ArtifactError, ExitCode
from ..settings import Settings
from ..storage import Storage
from . import dbside, hostside
from .fix import Fixer, is_fixable
from .judge import Context, judge
from .model import AuditReport

MAX_PASSES = 4


@dataclass(frozen=True)
class AuditOptions:
    url: str
    location: str  # as given (or resolved from the orchestrator's settings), for the printed commands
    fix: bool = False


def _registrable(st: hostside.StorageView, db: dbside.DbView) -> Callable[[str], str | None]:
    """An orphan register can register without changing what the API serves: its metadata names a template
    and an envd version, and that template has no build the API serves (registering makes the build the
    template's newest)."""
    from ..db.register import build_info

    def check(build_id: str) -> str | None:
        if st.local_root is None:
            return None
        try:
            info = build_info(st.local_root / build_id)
        except ArtifactError:
            return None
        served = any(db.served(b) for (t, _tag), ids in db.tags.items() if t == info.template_id for b in ids)
        return None if served or info.template_id in db.deleted_templates else info.template_id

    return check


def audit(store: Storage, settings: Settings, options: AuditOptions) -> AuditReport:
    started = time.monotonic()
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    with schema_mod.connect(options.url) as conn:
        with schema_mod.database_errors("reading E2B's schema"):
            schema = schema_mod.inspect(conn)
        if not schema.is_e2b(known_mod.load()):
            raise ArtifactError(f"database {schema.database!r} on {schema_mod.describe(options.url)} has no E2B "
                                "tables (envs, env_builds, env_aliases)",
                                hint="e2b-artifact db check --db URL names the database that has them",
                                code=ExitCode.CHECK_FAILED)
        fixer = Fixer(options.url, conn, stamp)
        attempted: set[tuple[str, str]] = set()
        report = AuditReport(store.url, schema.database)
        for number in range(1, MAX_PASSES + 1):
            with schema_mod.database_errors("reading builds, tags and aliases"):
                db = dbside.read(conn, schema)
            st = hostside.read_storage(store)
            caches = hostside.read_caches(settings)
            findings = judge(db, st, caches, Context(options.location, _registrable(st, db)))
            report.passes, report.findings = number, findings
            report.builds_in_storage, report.rows, report.cache_entries = len(st.builds), len(db.builds), len(caches)
            todo = [f for f in findings if is_fixable(f) and (f.check, f.subject) not in attempted]
            if not options.fix or not todo:
                break
            for finding in todo:
                attempted.add((finding.check, finding.subject))
                with schema_mod.database_errors(f"fixing {finding.check} {finding.subject}"):
                    fixer.apply(finding, db, st)
        report.fixed, report.fix_errors = fixer.actions, fixer.errors
        report.quarantines = [str(p) for p in fixer.records]
    report.seconds = time.monotonic() - started
    return report
