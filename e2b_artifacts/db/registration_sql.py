"""The SQL that registers moved builds in the destination's database (``sync ... --sql FILE``).

The rows are the ones upstream's ``packages/orchestrator/cmd/copy-build`` prints with ``-team`` (``main``:
``envs (id, team_id, updated_at, public, source)``, ``env_builds (id, env_id, updated_at, finished_at,
status 'uploaded', ram_mb, vcpu, kernel_version, firecracker_version, envd_version, free_disk_size_mb,
total_disk_size_mb)``, ``env_build_assignments (env_id, build_id, tag)``), with the values
:mod:`.register` writes (template id, versions and sizes from ``metadata.json``, the assignment's
``source 'app'``, ``start_cmd``/``ready_cmd``), for the current schema (2026: assignments, ``envs.source``),
as copy-build's output is. Unlike copy-build's it is idempotent (applying it twice leaves the same rows)
and refuses, inside its transaction, a template that belongs to another team. ``register --builds``
writes the same rows on any schema era, after ``db check``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from ..errors import ArtifactError, ExitCode
from .register import DEFAULT_TAG, STATUS_READY, BuildInfo


def literal(value: str | int | bool | None) -> str:
    """``value`` as a PostgreSQL literal (standard_conforming_strings, the default since 9.1)."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if "\0" in value:
        raise ArtifactError(f"{value!r}: a NUL byte cannot be stored in PostgreSQL text",
                            hint="fix metadata.json", code=ExitCode.BAD_INPUT)
    return "'" + value.replace("'", "''") + "'"


def check_team_id(team_id: str) -> str:
    try:
        return str(uuid.UUID(team_id))
    except ValueError as exc:
        raise ArtifactError(f"--team-id {team_id!r} is not a UUID",
                            hint="teams.id is a uuid: SELECT id, name FROM public.teams;",
                            code=ExitCode.USAGE) from exc


def _refuse_if(query: str, message: str) -> str:
    """A statement that aborts the transaction when ``query`` returns a row (a conflict register refuses too)."""
    text = literal(message + "; nothing was written")
    return f"DO $e2b$ BEGIN IF EXISTS ({query}) THEN RAISE EXCEPTION '%', {text}; END IF; END $e2b$;"


def registration_sql(infos: Iterable[BuildInfo], team_id: str) -> str:
    """One transaction registering every build of ``infos`` (parents first) for ``team_id``."""
    team = literal(check_team_id(team_id))
    builds = list(infos)
    out = [f"-- e2b-artifact: register {len(builds)} build(s) for team {check_team_id(team_id)}",
           "-- apply: psql -v ON_ERROR_STOP=1 \"$POSTGRES_CONNECTION_STRING\" -f FILE",
           "BEGIN;"]
    for info in builds:
        env, build = literal(info.template_id), literal(info.build_id)
        out += [
            "",
            f"-- build {info.build_id} of template {info.template_id}",
            _refuse_if(f"SELECT 1 FROM public.envs WHERE id = {env} AND team_id <> {team}::uuid",
                       f"template {info.template_id} belongs to another team"),
            _refuse_if(f"SELECT 1 FROM public.env_builds WHERE id = {build} AND env_id IS DISTINCT FROM {env}",
                       f"build {info.build_id} belongs to another template"),
            "INSERT INTO public.envs (id, team_id, updated_at, public, source, build_count) "
            f"VALUES ({env}, {team}, now(), false, 'template', 0) ON CONFLICT (id) DO NOTHING;",
            "UPDATE public.envs SET build_count = build_count + 1, updated_at = now() "
            f"WHERE id = {env} AND NOT EXISTS (SELECT 1 FROM public.env_builds WHERE id = {build});",
            "INSERT INTO public.env_builds (id, env_id, created_at, updated_at, finished_at, status, ram_mb, vcpu, "
            "kernel_version, firecracker_version, envd_version, free_disk_size_mb, total_disk_size_mb, start_cmd, "
            f"ready_cmd) VALUES ({build}, {env}, now(), now(), clock_timestamp(), {literal(STATUS_READY)}, "
            f"{info.ram_mb}, {info.vcpu}, {literal(info.kernel_version)}, {literal(info.firecracker_version)}, "
            f"{literal(info.envd_version)}, {info.free_disk_size_mb}, {info.total_disk_size_mb}, "
            f"{literal(info.start_cmd)}, {literal(info.ready_cmd)}) ON CONFLICT (id) DO NOTHING;",
            "INSERT INTO public.env_build_assignments (env_id, build_id, tag, source, created_at) "
            f"SELECT {env}, {build}, {literal(DEFAULT_TAG)}, 'app', clock_timestamp() WHERE NOT EXISTS (SELECT 1 FROM "
            f"public.env_build_assignments WHERE env_id = {env} AND build_id = {build} AND tag = "
            f"{literal(DEFAULT_TAG)});",
        ]
    out += ["", "COMMIT;", ""]
    return "\n".join(out)
