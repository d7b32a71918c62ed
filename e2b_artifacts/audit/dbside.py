"""What E2B's database says about builds, tags and aliases, and the two row changes ``audit --fix`` makes.

Status values and groups are upstream's: ``packages/db/pkg/types/types.go`` (``BuildStatus``: pending, waiting,
building, snapshotting, uploaded, success, failed; ``BuildStatusGroup``: pending, in_progress, ready, failed) and
migration ``20260210120002_add_status_group_column.sql`` (``compute_status_group``, which every other value
falls into ``failed``). On schemas with the ``status_group`` column its value is read, as the API reads it;
older schemas are grouped here by the same rule.

Tags are ``env_build_assignments`` rows (migration ``20251218160000``); before that table a template's builds
are the ``env_builds.env_id`` ones, served by the 2025 lookup as one implicit ``default`` tag. Aliases
(``env_aliases``) name a template, which the API resolves through its ``default`` tag
(``packages/db/queries/templates/get_template_with_build_by_tag.sql``).
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..db.schema import Schema

if TYPE_CHECKING:
    import psycopg

READY, FAILED, PENDING, IN_PROGRESS = "ready", "failed", "pending", "in_progress"
DEFAULT_TAG = "default"
FAILED_STATUS = "failed"  # types.go BuildStatusFailed: the status --fix writes


def status_group(status: str) -> str:
    """``compute_status_group`` (migration 20260210120002) for schemas that predate the column."""
    if status in ("pending", "waiting"):
        return PENDING
    if status in ("in_progress", "building", "snapshotting"):
        return IN_PROGRESS
    if status in ("ready", "uploaded", "success"):
        return READY
    return FAILED


@dataclass(frozen=True)
class BuildRow:
    build_id: str
    status: str
    group: str
    templates: tuple[str, ...]  # the templates it is assigned to (or its env_id)


@dataclass
class DbView:
    database: str
    builds: dict[str, BuildRow] = field(default_factory=dict)
    tags: dict[tuple[str, str], list[str]] = field(default_factory=dict)  # (template, tag) -> build ids
    aliases: dict[str, list[str]] = field(default_factory=dict)  # template -> alias names (namespace/alias)
    templates: set[str] = field(default_factory=set)  # not soft-deleted
    deleted_templates: set[str] = field(default_factory=set)
    can_soft_delete: bool = False  # envs.deleted_at exists (20260628120000)
    reason_type: str | None = None  # env_builds.reason: 'jsonb' (since 20250815181502), 'text', or absent

    def served(self, build_id: str) -> bool:
        """The API lists and starts it: status group ready, for a template that is not deleted."""
        row = self.builds.get(build_id)
        return row is not None and row.group == READY and (
            not row.templates or any(t in self.templates for t in row.templates))

    def under_way(self, build_id: str) -> bool:
        row = self.builds.get(build_id)
        return row is not None and row.group in (PENDING, IN_PROGRESS)


def _column_type(conn: psycopg.Connection[Any], table: str, column: str) -> str | None:
    row = conn.execute("SELECT data_type FROM information_schema.columns WHERE table_schema = 'public' "
                       "AND table_name = %s AND column_name = %s", (table, column)).fetchone()
    return str(row[0]) if row else None


def read(conn: psycopg.Connection[Any], schema: Schema) -> DbView:
    view = DbView(database=schema.database, can_soft_delete=schema.has("envs", "deleted_at"))
    reason = _column_type(conn, "env_builds", "reason")
    view.reason_type = "jsonb" if reason == "jsonb" else "text" if reason in ("text", "character varying") else None
    deleted = "deleted_at IS NOT NULL" if view.can_soft_delete else "false"
    for template_id, is_deleted in conn.execute(f"SELECT id, {deleted} FROM public.envs"):
        (view.deleted_templates if is_deleted else view.templates).add(str(template_id))
    templates_of: defaultdict[str, set[str]] = defaultdict(set)
    if schema.has("env_build_assignments"):
        for template_id, build_id, tag in conn.execute(
                "SELECT env_id, build_id::text, tag FROM public.env_build_assignments"):
            view.tags.setdefault((str(template_id), str(tag)), []).append(str(build_id))
            templates_of[str(build_id)].add(str(template_id))
    group_col = "status_group" if schema.has("env_builds", "status_group") else "NULL"
    env_col = "env_id" if schema.has("env_builds", "env_id") else "NULL"
    for build_id, status, group, env_id in conn.execute(
            f"SELECT id::text, status, {group_col}, {env_col} FROM public.env_builds"):
        bid = str(build_id)
        if env_id is not None:
            templates_of[bid].add(str(env_id))
            if not schema.has("env_build_assignments"):
                view.tags.setdefault((str(env_id), DEFAULT_TAG), []).append(bid)
        view.builds[bid] = BuildRow(bid, str(status), str(group) if group else status_group(str(status)),
                                    tuple(sorted(templates_of.get(bid, ()))))
    namespace = "namespace" if schema.has("env_aliases", "namespace") else "NULL"
    for alias, ns, template_id in conn.execute(f"SELECT alias, {namespace}, env_id FROM public.env_aliases"):
        view.aliases.setdefault(str(template_id), []).append(f"{ns}/{alias}" if ns else str(alias))
    conn.rollback()
    return view


# ---- the row changes --fix makes -------------------------------------------------------------------

def mark_failed(conn: psycopg.Connection[Any], view: DbView, build_id: str, message: str) -> str:
    """``status = 'failed'`` with ``reason = {"message": ...}`` (types.go ``BuildReason``), only while the row still
    has the status audit saw; returns the SQL that undoes it. Upstream's own failure write
    (``update_template_build_status.sql`` ``FailTemplateBuildAndDeactivate``) sets the same columns."""
    row = view.builds[build_id]
    sets, params = ["status = %(failed)s", "updated_at = now()"], {"failed": FAILED_STATUS, "id": build_id,
                                                                    "was": row.status}
    if view.reason_type == "jsonb":
        sets.append("reason = %(reason)s::jsonb")
        params["reason"] = json.dumps({"message": message})
    elif view.reason_type == "text":
        sets.append("reason = %(reason)s")
        params["reason"] = message
    with conn.transaction():
        conn.execute(f"UPDATE public.env_builds SET {', '.join(sets)} WHERE id = %(id)s AND status = %(was)s", params)
    undo_reason = ", reason = NULL" if view.reason_type else ""
    return f"UPDATE public.env_builds SET status = '{row.status}'{undo_reason} WHERE id = '{build_id}';"


def soft_delete(conn: psycopg.Connection[Any], template_id: str) -> str:
    """``envs.deleted_at = now()``: upstream's soft-delete marker (migration 20260628120000: deleting a template
    stamps deleted_at; ``active_envs`` is the API's read path). Returns the SQL that undoes it."""
    with conn.transaction():
        conn.execute("UPDATE public.envs SET deleted_at = now(), updated_at = now() "
                     "WHERE id = %s AND deleted_at IS NULL", (template_id,))
    return f"UPDATE public.envs SET deleted_at = NULL WHERE id = '{template_id}';"
