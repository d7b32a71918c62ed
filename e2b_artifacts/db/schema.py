"""Which database holds E2B's schema, what goose recorded there, and what is missing.

``check`` never changes anything; ``apply`` runs only the known, idempotent fixes
(``fix_sql`` in the data file) in one transaction and records their goose versions.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import ArtifactError, ExitCode
from ..findings import Finding, any_failed
from . import known as known_mod
from .known import Known, Migration

if TYPE_CHECKING:
    import psycopg

DEFAULT_DB = "postgres"


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError as exc:
        raise ArtifactError("the PostgreSQL driver (psycopg 3) is not installed",
                            hint="pip install 'e2b-artifact[db]'  (or: pip install 'psycopg[binary]')",
                            code=ExitCode.TOOL) from exc
    return psycopg


def _parts(url: str) -> dict[str, Any]:
    psycopg = _psycopg()
    try:
        return dict(psycopg.conninfo.conninfo_to_dict(url))
    except psycopg.ProgrammingError as exc:
        raise ArtifactError(f"cannot read the database URL: {exc}",
                            hint="e.g. postgresql://postgres:PASSWORD@127.0.0.1:5432/e2b",
                            code=ExitCode.USAGE) from exc


def describe(url: str, dbname: str | None = None) -> str:
    """``user@host:port/dbname`` without the password, for messages."""
    parts = _parts(url)
    host = parts.get("host") or "localhost"
    return f"{parts.get('user') or ''}@{host}:{parts.get('port') or 5432}/{dbname or parts.get('dbname') or ''}"


def with_dbname(url: str, dbname: str) -> str:
    psycopg = _psycopg()
    return str(psycopg.conninfo.make_conninfo(url, dbname=dbname))


@contextmanager
def connect(url: str) -> Iterator[psycopg.Connection[Any]]:
    psycopg = _psycopg()
    try:
        conn = psycopg.connect(url, connect_timeout=10)
    except psycopg.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ArtifactError(f"cannot connect to {describe(url)}: {first}",
                            hint="check host, port, user, password and database name in --db "
                                 "(or POSTGRES_CONNECTION_STRING)", code=ExitCode.REMOTE) from exc
    try:
        yield conn
    finally:
        conn.close()


@contextmanager
def database_errors(action: str) -> Iterator[None]:
    """Turn a driver error into one clean error line (the transaction has been rolled back)."""
    psycopg = _psycopg()
    try:
        yield
    except psycopg.Error as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ArtifactError(f"{action} failed, nothing was committed: {first}",
                            hint="check the database user's privileges (it must own E2B's tables); "
                                 "rerun with --debug for details", code=ExitCode.REMOTE) from exc


@dataclass
class Schema:
    """What one database holds that matters to E2B."""

    database: str
    columns: dict[str, set[str]]  # public tables and views -> column names
    not_null_without_default: dict[str, set[str]]
    goose_table: str | None
    applied: set[int]  # goose versions whose latest row says applied

    def has(self, table: str, column: str | None = None) -> bool:
        return table in self.columns and (column is None or column in self.columns[table])

    def is_e2b(self, known: Known) -> bool:
        return all(t in self.columns for t in known.core_tables)


def inspect(conn: psycopg.Connection[Any], known: Known | None = None) -> Schema:
    known = known or known_mod.load()
    with conn.cursor() as cur:
        cur.execute("SELECT current_database()")
        row = cur.fetchone()
        assert row is not None
        database = str(row[0])
        cur.execute("SELECT table_name, column_name, is_nullable, column_default, is_generated, is_identity "
                    "FROM information_schema.columns WHERE table_schema = 'public'")
        columns: dict[str, set[str]] = {}
        required: dict[str, set[str]] = {}
        for table, column, nullable, default, generated, identity in cur.fetchall():
            columns.setdefault(table, set()).add(column)
            if nullable == "NO" and default is None and generated != "ALWAYS" and identity != "YES":
                required.setdefault(table, set()).add(column)
        goose_table = next((t for t in known.goose_tables if {"version_id", "is_applied"} <= columns.get(t, set())),
                           None)
        applied: set[int] = set()
        if goose_table:
            # goose's own rule: a version counts as applied when its newest row says so
            cur.execute(f'SELECT DISTINCT ON (version_id) version_id, is_applied FROM public."{goose_table}" '
                        "ORDER BY version_id, id DESC")
            applied = {int(v) for v, is_applied in cur.fetchall() if is_applied and int(v) > 0}
    conn.rollback()
    return Schema(database=database, columns=columns, not_null_without_default=required,
                  goose_table=goose_table, applied=applied)


def _other_databases(conn: psycopg.Connection[Any]) -> list[str]:
    with conn.cursor() as cur:
        cur.execute("SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate "
                    "AND datname <> current_database() ORDER BY datname")
        names = [str(r[0]) for r in cur.fetchall()]
    conn.rollback()
    return names


def databases_with_e2b(url: str, conn: psycopg.Connection[Any], known: Known) -> list[str]:
    """Other databases on the same server that hold E2B's tables (those this user may open)."""
    psycopg = _psycopg()
    found = []
    for name in _other_databases(conn):
        try:
            with psycopg.connect(with_dbname(url, name), connect_timeout=5) as other:
                if inspect(other, known).is_e2b(known):
                    found.append(name)
        except psycopg.Error:
            continue  # no permission or not reachable: not ours to judge
    return found


@dataclass
class Missing:
    """A known migration whose effect is absent."""

    migration: Migration
    columns: list[str]  # "table.column" (or "table") that are absent
    recorded: bool  # goose says applied, yet the columns are absent

    def describe(self) -> str:
        what = ", ".join(self.columns) if self.columns else "no goose record"
        return f"{what} (migration {self.migration.file_name})"

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.migration.version, "migration": self.migration.file_name,
                "missing": self.columns, "recorded_in_goose": self.recorded,
                "breaks": self.migration.breaks, "fix_sql": self.migration.fix_sql}


@dataclass
class Report:
    url: str
    schema: Schema
    findings: list[Finding] = field(default_factory=list)
    missing: list[Missing] = field(default_factory=list)
    newest_known_applied: int | None = None
    elsewhere: list[str] = field(default_factory=list)  # other databases with E2B's schema

    @property
    def ok(self) -> bool:
        return not any_failed(self.findings)

    def failures(self) -> list[Finding]:
        return [f for f in self.findings if f.status == "FAIL"]

    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.status == "warn"]

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "database": self.schema.database, "server": describe(self.url),
                "goose_table": self.schema.goose_table,
                "goose_max_version": max(self.schema.applied) if self.schema.applied else None,
                "newest_known_migration_applied": self.newest_known_applied,
                "other_databases_with_e2b_schema": self.elsewhere,
                "findings": [f.to_dict() for f in self.findings],
                "missing": [m.to_dict() for m in self.missing]}


def _absent(schema: Schema, migration: Migration) -> list[str]:
    absent = []
    for table, columns in migration.adds.items():
        if table not in schema.columns:
            absent.append(table)
            continue
        absent += [f"{table}.{c}" for c in columns if c not in schema.columns[table]]
    return absent


def _era(schema: Schema, known: Known) -> int | None:
    """The newest known migration this schema has reached (by goose, else by its columns)."""
    if schema.applied:
        reached = [m.version for m in known.migrations if m.version <= max(schema.applied)]
    else:
        reached = [m.version for m in known.migrations if m.adds and not _absent(schema, m)]
    return max(reached) if reached else None


def _fix_hint(missing: Missing, known: Known, schema: Schema) -> str:
    if missing.migration.fix_sql:
        return f"e2b-artifact db check --apply runs: {missing.migration.fix_sql}"
    if missing.recorded and schema.goose_table:
        return (f"goose records {missing.migration.version} as applied but its columns are gone: "
                f"DELETE FROM public.{schema.goose_table} WHERE version_id = {missing.migration.version}; "
                f"then: {known.migrate_missing_command}")
    return f"run the migration: {known.migrate_missing_command}"


def check(url: str, conn: psycopg.Connection[Any], known: Known | None = None) -> Report:
    known = known or known_mod.load()
    schema = inspect(conn, known)
    report = Report(url=url, schema=schema)
    add = report.findings.append
    report.elsewhere = databases_with_e2b(url, conn, known)
    if not schema.is_e2b(known):
        where = (f"E2B's schema is in database {', '.join(repr(d) for d in report.elsewhere)}"
                 if report.elsewhere else "no database on this server holds it")
        add(Finding("db.database", "FAIL", f"database {schema.database!r} has no E2B tables "
                    f"({', '.join(known.core_tables)}); {where}",
                    hint=(f"use the same URL with database {report.elsewhere[0]!r}: "
                          f"postgresql://{describe(url, report.elsewhere[0])} (plus your password, if any)"
                          if report.elsewhere
                          else f"create the schema: {known.migrate_command}")))
        return report
    if schema.database == DEFAULT_DB and report.elsewhere:
        add(Finding("db.database", "warn",
                    f"connected to the default database {DEFAULT_DB!r}, but E2B's schema is also in "
                    f"{', '.join(repr(d) for d in report.elsewhere)}",
                    hint="the API uses the database named in its POSTGRES_CONNECTION_STRING: "
                         "make sure that is the one you check and register into"))
    else:
        add(Finding("db.database", "ok", f"database {schema.database!r} holds E2B's schema"))

    if schema.goose_table:
        add(Finding("db.goose", "ok", f"goose table public.{schema.goose_table}: {len(schema.applied)} versions, "
                                      f"newest {max(schema.applied) if schema.applied else 'none'}"))
    else:
        add(Finding("db.goose", "warn", f"no goose table ({' or '.join(known.goose_tables)}): "
                                        "judging the schema by its columns only",
                    hint="schemas made by upstream's migrator have public._migrations"))

    era = _era(schema, known)
    report.newest_known_applied = era
    for migration in known.migrations:
        absent = _absent(schema, migration)
        recorded = migration.version in schema.applied
        if era is None or migration.version > era:
            continue  # a newer schema than this database's: not expected here
        if not absent and (recorded or not schema.goose_table):
            continue
        if not absent and schema.applied and max(schema.applied) > migration.version:
            # Upstream renumbers or folds migrations (its goose runs only the files it has): a version
            # below the newest recorded one, whose columns exist, needs nothing run.
            continue
        if not absent:
            add(Finding(f"db.migration.{migration.version}", "warn",
                        f"{migration.file_name} is not recorded in goose, but its columns exist",
                        hint=f"goose will try to run it again: {known.migrate_missing_command}"))
            continue
        missing = Missing(migration=migration, columns=absent, recorded=recorded)
        report.missing.append(missing)
        why = f": {migration.breaks}" if migration.breaks else ""
        add(Finding(f"db.migration.{migration.version}", "FAIL", f"missing {missing.describe()}{why}",
                    hint=_fix_hint(missing, known, schema)))
    if not report.missing:
        add(Finding("db.columns", "ok", "every table and column the API reads for a template build is present"))
    newer = [m for m in known.migrations if era is not None and m.version > era]
    if newer:
        add(Finding("db.era", "ok", f"schema reaches known migration {era}; {len(newer)} newer known ones "
                                    f"({newer[0].version}..{newer[-1].version}) are not applied: fine for an API "
                                    "of this schema's release, a newer API needs `make migrate` first"))
    return report


def apply(conn: psycopg.Connection[Any], report: Report) -> list[Migration]:
    """Run the known fixes for ``report.missing`` in one transaction; record them in goose."""
    fixable = [m.migration for m in report.missing if m.migration.fix_sql]
    if not fixable:
        return []
    goose_table = report.schema.goose_table
    with database_errors("applying the fixes"), conn.transaction(), conn.cursor() as cur:
        for migration in fixable:
            cur.execute(migration.fix_sql)
            if goose_table and migration.version not in report.schema.applied:
                cur.execute(f'INSERT INTO public."{goose_table}" (version_id, is_applied) VALUES (%s, true)',
                            (migration.version,))
    return fixable
