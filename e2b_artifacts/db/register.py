"""Make a built template visible to the E2B API: upsert its rows in one transaction.

Rows written (columns chosen from what the connected schema has):

* ``envs``: the template (team, ``cluster_id`` NULL = the local cluster, ``source='template'``,
  ``deleted_at`` NULL);
* ``env_builds``: the build, ``status='uploaded'`` (the status the API's lookup wants; on 2026
  schemas the trigger turns it into ``status_group='ready'``), ``finished_at`` set, versions from
  metadata.json, ``envd_version`` never NULL;
* ``env_build_assignments`` (schemas since 20251218160000): tag ``default``;
* ``env_aliases``: the alias, when given.

Before committing, the API's own lookup query for the schema's era must return this build;
otherwise nothing is committed. The times the lookups order by (``finished_at``, the assignment's
``created_at``) are ``clock_timestamp()``, not the transaction's ``now()``, so that of several builds of one
template registered in one transaction the last one is the newest. ``dry_run`` runs the same statements and rolls back.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import metadata as metadata_mod
from ..errors import ArtifactError, ExitCode
from ..layout import ROOTFS
from . import known as known_mod
from .schema import Report, Schema, check, connect, database_errors

if TYPE_CHECKING:
    import psycopg

STATUS_READY = "uploaded"  # what template builds end with; status_group maps it to 'ready'
DEFAULT_TAG = "default"
_ALIAS_RE = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


@dataclass
class BuildInfo:
    """What register writes about one build, from metadata.json and flags."""

    build_id: str
    template_id: str
    kernel_version: str
    firecracker_version: str
    envd_version: str
    vcpu: int
    ram_mb: int
    free_disk_size_mb: int
    total_disk_size_mb: int
    start_cmd: str | None = None
    ready_cmd: str | None = None


def _int(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else default


def build_info(build_dir: Path, template_id: str | None = None, envd_version: str | None = None,
               vcpu: int | None = None, ram_mb: int | None = None,
               free_disk_mb: int | None = None) -> BuildInfo:
    """Read ``build_dir/metadata.json``; flags win over the file, then metadata's defaults."""
    md = metadata_mod.read(build_dir / metadata_mod.FILE_NAME)
    if md.build_id != build_dir.name:
        raise ArtifactError(f"{build_dir / metadata_mod.FILE_NAME}: template.build_id is {md.build_id!r} "
                            f"but the directory is {build_dir.name!r}",
                            hint="the API looks the build up by the directory name: rebuild, or fix build_id",
                            code=ExitCode.BAD_INPUT)
    try:
        uuid.UUID(md.build_id)
    except ValueError as exc:
        raise ArtifactError(f"build id {md.build_id!r} is not a UUID; env_builds.id is a uuid column",
                            hint="build with a UUID build id (e2b-artifact build picks one by default)",
                            code=ExitCode.BAD_INPUT) from exc
    ext = md.ext
    template = template_id or md.template_id
    if not template:
        raise ArtifactError("no template id: metadata.json has none and --template-id was not given",
                            hint="pass --template-id ID (E2B ids are 20 lowercase letters/digits)",
                            code=ExitCode.USAGE)
    envd = envd_version or md.envd_version
    if not envd:
        raise ArtifactError("no envd version: metadata.json has none and --envd-version was not given",
                            hint="pass --envd-version (the output of `envd -version`, e.g. 0.2.0); "
                                 "the API needs env_builds.envd_version to be set",
                            code=ExitCode.USAGE)
    rootfs = build_dir / ROOTFS
    total_mb = _int(ext.get("total_disk_mb"), 0)
    if not total_mb:
        if not rootfs.exists():
            raise ArtifactError(f"{rootfs}: file not found", hint="build the template first (e2b-artifact build)",
                                code=ExitCode.BAD_INPUT)
        total_mb = max(1, rootfs.stat().st_size >> 20)
    found = md.extra.get("start")
    start: dict[str, Any] = found if isinstance(found, dict) else {}
    return BuildInfo(
        build_id=md.build_id, template_id=template, kernel_version=md.kernel_version,
        firecracker_version=md.firecracker_version, envd_version=envd,
        vcpu=vcpu or _int(ext.get("vcpu"), metadata_mod.DEFAULT_VCPU),
        ram_mb=ram_mb or _int(ext.get("ram_mb"), metadata_mod.DEFAULT_RAM_MB),
        free_disk_size_mb=free_disk_mb or _int(ext.get("free_disk_mb"), _int(ext.get("disk_size_mb"), total_mb)),
        total_disk_size_mb=total_mb,
        start_cmd=start.get("start_command") if isinstance(start.get("start_command"), str) else None,
        ready_cmd=start.get("ready_command") if isinstance(start.get("ready_command"), str) else None,
    )


@dataclass
class Result:
    build_id: str
    template_id: str
    team_id: str
    database: str
    dry_run: bool
    statements: list[str] = field(default_factory=list)
    lookup: dict[str, Any] = field(default_factory=dict)
    lookup_query: str = ""
    warnings: list[str] = field(default_factory=list)  # from the schema check

    def to_dict(self) -> dict[str, Any]:
        return {"ok": True, "build_id": self.build_id, "template_id": self.template_id, "team_id": self.team_id,
                "database": self.database, "dry_run": self.dry_run, "committed": not self.dry_run,
                "statements": self.statements, "api_lookup": {"query": self.lookup_query, "row": self.lookup},
                "warnings": self.warnings}


class _Writer:
    """Runs statements in the open transaction and keeps their literal SQL for --dry-run and the log."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        import psycopg

        self.cur = psycopg.ClientCursor(conn)
        self.log: list[str] = []

    def query(self, sql: str, params: dict[str, Any] | tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        self.cur.execute(sql, params or None)
        return list(self.cur.fetchall()) if self.cur.description else []

    def write(self, sql: str, params: dict[str, Any] | tuple[Any, ...] = ()) -> None:
        self.log.append(self.cur.mogrify(sql, params or None).strip() + ";")
        self.cur.execute(sql, params or None)


def _conflict(message: str, hint: str) -> ArtifactError:
    return ArtifactError(message, hint=hint, code=ExitCode.CONFLICT)


def _team(w: _Writer, team_id: str | None) -> str:
    if team_id:
        try:
            team_id = str(uuid.UUID(team_id))
        except ValueError as exc:
            raise ArtifactError(f"--team-id {team_id!r} is not a UUID", hint="teams.id is a uuid: "
                                "SELECT id, name FROM public.teams;", code=ExitCode.USAGE) from exc
        if not w.query("SELECT 1 FROM public.teams WHERE id = %s", (team_id,)):
            raise ArtifactError(f"team {team_id} does not exist in public.teams",
                                hint="list teams: SELECT id, name FROM public.teams;", code=ExitCode.BAD_INPUT)
        return team_id
    teams = w.query("SELECT id::text, name FROM public.teams ORDER BY created_at LIMIT 6")
    if len(teams) == 1:
        return str(teams[0][0])
    listed = ", ".join(f"{t[0]} ({t[1]})" for t in teams[:5]) or "none"
    raise ArtifactError(f"cannot pick a team: {len(teams) if len(teams) < 6 else 'many'} teams exist ({listed})",
                        hint="pass --team-id UUID" if teams else
                        "create a team first (E2B's seed: make seed-db); a role under row-level security sees "
                        "no teams: connect as the owner of E2B's tables",
                        code=ExitCode.USAGE)


def _unknown_required(schema: Schema, table: str, written: set[str]) -> None:
    extra = schema.not_null_without_default.get(table, set()) - written
    if extra:
        raise ArtifactError(f"public.{table} requires {', '.join(sorted(extra))}, which this tool does not know "
                            "how to fill (a schema newer than the tool?)",
                            hint="report it with `e2b-artifact db check --json` output", code=ExitCode.CHECK_FAILED)


def _upsert_env(w: _Writer, schema: Schema, info: BuildInfo, team_id: str, public: bool | None,
                new_build: bool) -> None:
    existing = w.query("SELECT team_id::text FROM public.envs WHERE id = %s FOR UPDATE", (info.template_id,))
    if existing and existing[0][0] != team_id:
        raise _conflict(f"template {info.template_id} belongs to team {existing[0][0]}, not {team_id}",
                        "pass --team-id of the owning team, or register under another --template-id")
    values: dict[str, Any] = {"id": info.template_id, "team_id": team_id, "public": bool(public)}
    sets = ["cluster_id = NULL"] if schema.has("envs", "cluster_id") else []
    if public is not None:
        sets.append("public = EXCLUDED.public")
    if schema.has("envs", "source"):
        values["source"] = "template"
        sets.append("source = EXCLUDED.source")
    if schema.has("envs", "deleted_at"):
        sets.append("deleted_at = NULL")
    if new_build:
        sets += ["build_count = envs.build_count + 1", "updated_at = now()"]
    _unknown_required(schema, "envs", set(values) | {"updated_at"})
    cols = list(values)
    sql = (f"INSERT INTO public.envs ({', '.join(cols)}, updated_at) "
           f"VALUES ({', '.join(f'%({c})s' for c in cols)}, now()) ON CONFLICT (id) DO ")
    sql += f"UPDATE SET {', '.join(sets)}" if sets else "NOTHING"
    if existing and not sets:
        return
    w.write(sql, values)


def _finished_at_is_latest(w: _Writer, info: BuildInfo) -> bool:
    rows = w.query("SELECT eb.finished_at IS NOT NULL AND eb.finished_at >= COALESCE((SELECT max(o.finished_at) "
                   "FROM public.env_builds o WHERE o.env_id = eb.env_id AND o.id <> eb.id "
                   "AND o.status = %s), eb.finished_at) FROM public.env_builds eb WHERE eb.id = %s",
                   (STATUS_READY, info.build_id))
    return bool(rows and rows[0][0])


def _upsert_build(w: _Writer, schema: Schema, info: BuildInfo, team_id: str) -> bool:
    """Insert or update the build row; True when it was not there before."""
    existing = w.query("SELECT env_id FROM public.env_builds WHERE id = %s FOR UPDATE", (info.build_id,))
    if existing and existing[0][0] not in (None, info.template_id):
        raise _conflict(f"build {info.build_id} already belongs to template {existing[0][0]}",
                        "a build id names one template's build: register it under that --template-id")
    values: dict[str, Any] = {
        "id": info.build_id, "status": STATUS_READY, "kernel_version": info.kernel_version,
        "firecracker_version": info.firecracker_version, "envd_version": info.envd_version,
        "vcpu": info.vcpu, "ram_mb": info.ram_mb, "free_disk_size_mb": info.free_disk_size_mb,
        "total_disk_size_mb": info.total_disk_size_mb, "start_cmd": info.start_cmd,
    }
    if schema.has("env_builds", "ready_cmd"):
        values["ready_cmd"] = info.ready_cmd
    if schema.has("env_builds", "env_id"):
        values["env_id"] = info.template_id
    if schema.has("env_builds", "team_id"):
        values["team_id"] = team_id
    if "cluster_node_id" in schema.not_null_without_default.get("env_builds", set()):
        values["cluster_node_id"] = "unknown"  # NOT NULL 2025-08-24 .. 2025-11-21; upstream backfilled 'unknown'
    # status_group: set by trigger trg_compute_status_group (20260210120002)
    _unknown_required(schema, "env_builds", set(values) | {"updated_at", "finished_at", "status_group"})
    compared = [c for c in values if c not in ("id", "start_cmd", "ready_cmd")]
    changed = " OR ".join(f"env_builds.{c} IS DISTINCT FROM EXCLUDED.{c}" for c in compared)
    cols = list(values)
    w.write(f"INSERT INTO public.env_builds ({', '.join(cols)}, created_at, updated_at, finished_at) "
            f"VALUES ({', '.join(f'%({c})s' for c in cols)}, now(), now(), clock_timestamp()) "
            f"ON CONFLICT (id) DO UPDATE SET {', '.join(f'{c} = EXCLUDED.{c}' for c in compared)}, "
            f"updated_at = CASE WHEN {changed} THEN now() ELSE env_builds.updated_at END, "
            "finished_at = COALESCE(env_builds.finished_at, EXCLUDED.finished_at) "
            "WHERE " + changed + " OR env_builds.finished_at IS NULL", values)
    if schema.has("env_builds", "env_id") and not _finished_at_is_latest(w, info):
        # the 2025 lookup takes the newest finished_at: make this build the newest
        w.write("UPDATE public.env_builds SET finished_at = clock_timestamp(), updated_at = now() WHERE id = %s",
                (info.build_id,))
    return not existing


def _assign(w: _Writer, info: BuildInfo) -> None:
    mine = w.query("SELECT max(created_at) FROM public.env_build_assignments "
                   "WHERE env_id = %s AND build_id = %s AND tag = %s", (info.template_id, info.build_id, DEFAULT_TAG))
    others = w.query("SELECT max(created_at) FROM public.env_build_assignments "
                     "WHERE env_id = %s AND build_id <> %s AND tag = %s",
                     (info.template_id, info.build_id, DEFAULT_TAG))
    mine_at, others_at = mine[0][0], others[0][0]
    if mine_at is None:
        w.write("INSERT INTO public.env_build_assignments (env_id, build_id, tag, source, created_at) "
                "VALUES (%s, %s, %s, 'app', clock_timestamp())",
                (info.template_id, info.build_id, DEFAULT_TAG))
    elif others_at is not None and others_at >= mine_at:
        # the API takes the newest assignment of the tag: make this one the newest again
        w.write("UPDATE public.env_build_assignments SET created_at = clock_timestamp() "
                "WHERE env_id = %s AND build_id = %s AND tag = %s", (info.template_id, info.build_id, DEFAULT_TAG))


def _alias(w: _Writer, schema: Schema, info: BuildInfo, alias: str) -> None:
    if not _ALIAS_RE.match(alias):
        raise ArtifactError(f"alias {alias!r}: E2B aliases are lowercase letters, digits, '-' and '_'",
                            hint="e.g. --alias my-template", code=ExitCode.USAGE)
    namespaced = schema.has("env_aliases", "namespace")
    where = "alias = %s" + (" AND namespace IS NULL" if namespaced else "")
    rows = w.query(f"SELECT env_id FROM public.env_aliases WHERE {where}", (alias,))
    if rows and rows[0][0] != info.template_id:
        raise _conflict(f"alias {alias!r} already names template {rows[0][0]}",
                        f"pick another --alias, or remove it: DELETE FROM public.env_aliases WHERE {where}")
    if not rows:
        w.write("INSERT INTO public.env_aliases (alias, env_id, is_renamable) VALUES (%s, %s, true)",
                (alias, info.template_id))


def lookup_query(schema: Schema) -> tuple[str, str]:
    """(key, SQL) of the query the API of this schema's era runs for a template's latest build."""
    lookups = known_mod.load().lookups
    if not schema.has("env_build_assignments"):
        query = lookups["by_env_id"]
    elif not schema.has("env_builds", "status_group"):
        query = lookups["by_tag_status"]
    else:
        query = lookups["by_tag_status_group"]
    envs = "public.active_envs" if schema.has("active_envs") else "public.envs"
    return query.key, query.sql.replace("{envs}", envs)


def api_lookup(conn: psycopg.Connection[Any], schema: Schema, name: str) -> dict[str, Any]:
    """Run the API's lookup for ``name`` (template id; alias too on 2025 schemas)."""
    _, sql = lookup_query(schema)
    with conn.cursor() as cur:
        cur.execute(sql, {"name": name})
        row = cur.fetchone()
        if row is None:
            return {}
        assert cur.description is not None
        return {d.name: v for d, v in zip(cur.description, row, strict=True)}


def _refuse(report: Report) -> ArtifactError:
    problems = "; ".join(f.message for f in report.failures())
    return ArtifactError(f"refusing to register into {report.schema.database!r}: {problems}",
                         hint=next((f.hint for f in report.failures() if f.hint), "") +
                         "  (see: e2b-artifact db check --db URL; --apply fixes what it can)",
                         code=ExitCode.CHECK_FAILED)


def register(url: str, info: BuildInfo, team_id: str | None = None, alias: str | None = None,
             public: bool | None = None, dry_run: bool = False) -> Result:
    """Register one build (see the module docstring); ``dry_run`` rolls the transaction back."""
    return register_many(url, [info], team_id=team_id, alias=alias, public=public, dry_run=dry_run)[0]


def register_many(url: str, infos: list[BuildInfo], team_id: str | None = None, alias: str | None = None,
                  public: bool | None = None, dry_run: bool = False) -> list[Result]:
    """Register every build of ``infos`` in one transaction: all of them or none. Where several are builds of
    one template, the last one is the build the API serves for it. ``alias`` needs a single template."""
    if alias and len({i.template_id for i in infos}) > 1:
        raise ArtifactError("--alias names one template, and these builds are of several",
                            hint="register the aliased template on its own (register BUILD --alias NAME)",
                            code=ExitCode.USAGE)
    with connect(url) as conn:
        report = check(url, conn)
        if not report.ok:
            raise _refuse(report)
        schema = report.schema
        results = []
        with database_errors("registering"), conn.transaction(force_rollback=dry_run):
            w = _Writer(conn)
            team = _team(w, team_id)
            for info in infos:
                start = len(w.log)
                new_build = not w.query("SELECT 1 FROM public.env_builds WHERE id = %s", (info.build_id,))
                _upsert_env(w, schema, info, team, public, new_build)
                _upsert_build(w, schema, info, team)
                if schema.has("env_build_assignments"):
                    _assign(w, info)
                if alias:
                    _alias(w, schema, info, alias)
                results.append(Result(build_id=info.build_id, template_id=info.template_id, team_id=team,
                                      database=schema.database, dry_run=dry_run, statements=w.log[start:]))
            key, sql = lookup_query(schema)
            served = {i.template_id: i.build_id for i in infos}  # the last build of each template
            for result in results:
                row = api_lookup(conn, schema, result.template_id)
                if row.get("build_id") != served[result.template_id]:
                    raise ArtifactError(
                        f"after writing, the API's lookup ({key}) of template {result.template_id} returns build "
                        f"{row.get('build_id')!r}, not {served[result.template_id]}; nothing was committed",
                        hint="run e2b-artifact db check; report this with --json output", code=ExitCode.CHECK_FAILED)
                result.lookup, result.lookup_query = row, sql
        warnings = [f"{f.message} ({f.hint})" if f.hint else f.message for f in report.warnings()]
        for result in results:
            result.warnings = warnings
        return results
