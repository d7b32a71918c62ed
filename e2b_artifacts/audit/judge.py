"""The mismatch classes, judged from the database, storage and cache views.

One finding per mismatch, each under one class only: a build whose parent is gone is not also an orphan.
"Served" is what the API lists and starts (status group ``ready``, for a template that is not soft-deleted);
"live" is every served or under-way build in storage and, transitively, every build their headers map to (a
parent's files and cache entries are in use even when no row names the parent itself).
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from .dbside import DEFAULT_TAG, DbView
from .hostside import CacheEntry, StorageView
from .model import AuditFinding, FixCode, Kind

DB_ARG = '--db "$POSTGRES_CONNECTION_STRING"'


@dataclass(frozen=True)
class Context:
    location: str  # as the user names it (the --storage of the commands printed)
    registrable: Callable[[str], str | None]  # orphan build id -> its template id, when register can register it

    @property
    def audit_fix(self) -> str:
        return f"e2b-artifact audit {DB_ARG} --storage {shlex.quote(self.location)} --fix"


def live_builds(db: DbView, st: StorageView) -> set[str]:
    live = {b for b in st.builds if db.served(b) or db.under_way(b)}
    todo = list(live)
    while todo:
        for parent in st.parents.get(todo.pop(), ()):
            if parent in st.builds and parent not in live:
                live.add(parent)
                todo.append(parent)
    return live


def judge(db: DbView, st: StorageView, caches: Iterable[CacheEntry], ctx: Context) -> list[AuditFinding]:
    live = live_builds(db, st)
    findings = _builds_without_files(db, st, ctx)
    gone = {b for b in st.builds if st.missing_parents(b)}
    findings += [_parent_gone(b, db, st, ctx) for b in sorted(gone)]
    findings += [_orphan(b, db, ctx, local=st.local_root is not None)
                 for b in sorted(st.builds - gone - live) if b not in db.builds]
    findings += _unresolved_names(db, ctx)
    findings += [_stale_cache(e, db, st, ctx) for e in caches if e.build_id not in live]
    return findings


def _templates(db: DbView, build_id: str) -> str:
    row = db.builds.get(build_id)
    return ",".join(row.templates) if row else ""


def _builds_without_files(db: DbView, st: StorageView, ctx: Context) -> list[AuditFinding]:
    out = []
    for build_id in sorted(db.builds):
        if db.served(build_id) and build_id not in st.builds:
            row = db.builds[build_id]
            out.append(AuditFinding(
                Kind.BUILD_NO_FILES, build_id,
                f"env_builds says {row.status!r} (status group ready: the API lists and starts it) but {st.location} "
                f"has no files of it; sandboxes of it fail ('failed to get snapfile', 'object does not exist'). "
                f"--fix marks it failed with a reason; if a copy exists, put it back instead "
                f"(e2b-artifact sync push {build_id} {st.location})",
                ctx.audit_fix, FixCode.MARK_FAILED, build_id, _templates(db, build_id),
                {"status": row.status, "templates": list(row.templates)}))
    return out


def _parent_gone(build_id: str, db: DbView, st: StorageView, ctx: Context) -> AuditFinding:
    missing = st.missing_parents(build_id)
    local = st.local_root is not None
    row = db.builds.get(build_id)
    state = f"env_builds says {row.status!r}" if row else "no env_builds row"
    then = ("--fix moves the build aside (quarantine, never deleted) and marks its row failed" if local else
            "put the parent back")
    command = ctx.audit_fix if local else \
        f"e2b-artifact sync push {missing[0]} {shlex.quote(st.location)} --with-parents  (on a host that has it)"
    return AuditFinding(
        Kind.PARENT_GONE, build_id,
        f"its headers map data to build(s) {', '.join(missing)}, not in {st.location}: the orchestrator cannot read "
        f"those blocks ({state}). If a copy of the parent exists, push it instead (e2b-artifact sync push "
        f"{missing[0]} {st.location} --with-parents); else {then}",
        command, FixCode.QUARANTINE if local else FixCode.NONE, build_id, _templates(db, build_id),
        {"missing_parents": missing, "status": row.status if row else None})


def _orphan(build_id: str, db: DbView, ctx: Context, *, local: bool) -> AuditFinding:
    template = ctx.registrable(build_id) if local else None
    if template is not None:
        fix, command = FixCode.REGISTER, ctx.audit_fix
        then = (f"--fix registers it (e2b-artifact --storage {ctx.location} register {build_id} {DB_ARG}): "
                f"template {template} has no build the API serves")
    elif local:
        fix, command = FixCode.QUARANTINE, ctx.audit_fix
        then = (f"--fix moves it aside (quarantine, never deleted); to serve it instead: e2b-artifact --storage "
                f"{ctx.location} register {build_id} {DB_ARG} --template-id T --envd-version V")
    else:
        fix, command = FixCode.NONE, f"e2b-artifact sync pull {build_id} {shlex.quote(ctx.location)} && " \
                                     f"e2b-artifact register {build_id} {DB_ARG}"
        then = "register it from a local copy, or remove it from the bucket yourself"
    return AuditFinding(Kind.ORPHAN_FILES, build_id,
                        f"in storage, but no env_builds row points to it and no build the API serves maps data "
                        f"to it; {then}", command, fix, build_id, template or "")


def _unresolved_names(db: DbView, ctx: Context) -> list[AuditFinding]:
    tags = dict(db.tags)
    for template in db.aliases:
        tags.setdefault((template, DEFAULT_TAG), [])
    resolving = {t for (t, _tag), ids in tags.items() if any(db.served(b) for b in ids)}
    out = []
    for (template, tag), ids in sorted(tags.items()):
        if template not in db.templates or any(db.served(b) or db.under_way(b) for b in ids):
            continue  # deleted template, a tag that resolves, or a build under way
        statuses = {b: db.builds[b].status for b in ids if b in db.builds}
        what = ", ".join(f"{b} {s!r}" for b, s in sorted(statuses.items())) or "no builds at all"
        aliases = db.aliases.get(template, []) if tag == DEFAULT_TAG else []
        named = f" (aliases {', '.join(aliases)} resolve to nothing either)" if aliases else ""
        if tag == DEFAULT_TAG and db.can_soft_delete and template not in resolving:
            fix, command = FixCode.SOFT_DELETE, ctx.audit_fix
            then = (f"--fix soft-deletes template {template} (envs.deleted_at, as upstream deletes templates); "
                    f"to keep it, register a good build: e2b-artifact register BUILD {DB_ARG} --template-id {template}")
        elif tag == DEFAULT_TAG:
            fix, command = FixCode.NONE, f"e2b-artifact register BUILD {DB_ARG} --template-id {template}"
            then = "register a good build of it"
        else:
            fix = FixCode.NONE
            command = f"psql \"$POSTGRES_CONNECTION_STRING\" -c \"DELETE FROM public.env_build_assignments " \
                      f"WHERE env_id = '{template}' AND tag = '{tag}'\""
            then = "build it again under this tag, or drop the tag (audit never deletes rows)"
        out.append(AuditFinding(
            Kind.NAME_UNRESOLVED, f"{template}:{tag}",
            f"tag {tag!r} of template {template} points to no build the API can serve: {what}{named}; {then}",
            command, fix, "", template, {"tag": tag, "builds": statuses, "aliases": aliases}))
    return out


def _stale_cache(entry: CacheEntry, db: DbView, st: StorageView, ctx: Context) -> AuditFinding:
    row = db.builds.get(entry.build_id)
    if entry.build_id not in st.builds:
        why = f"its template files are not in {st.location}"
    else:
        why = (f"env_builds says {row.status!r}" if row else "no env_builds row") + ": the API maps no template to it"
    return AuditFinding(
        Kind.CACHE_STALE, str(entry.path),
        f"{entry.setting} entry of build {entry.build_id}, which no longer exists ({why}); an orchestrator may "
        f"still serve it from here. --fix moves it aside beside itself (never deleted); restart the orchestrator",
        ctx.audit_fix, FixCode.CACHE_QUARANTINE, entry.build_id, _templates(db, entry.build_id),
        {"setting": entry.setting, "path": str(entry.path)})
