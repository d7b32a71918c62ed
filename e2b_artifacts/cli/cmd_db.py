"""``e2b-artifact db check``: is this the database the E2B API reads, and is its schema complete?"""

from __future__ import annotations

import click

from ..errors import ExitCode
from .common import emit, json_option, verdict

DB_ENVVAR = "POSTGRES_CONNECTION_STRING"  # the variable E2B's API and migrator read


def db_option(func: click.decorators.FC) -> click.decorators.FC:
    return click.option("--db", "url", envvar=DB_ENVVAR, required=True, metavar="URL",
                        help=f"PostgreSQL URL, e.g. postgresql://postgres:PW@127.0.0.1:5432/e2b "
                             f"(default: ${DB_ENVVAR}).")(func)


@click.group("db")
def command() -> None:
    """Inspect E2B's PostgreSQL schema."""


@command.command("check")
@db_option
@click.option("--apply", "apply_fixes", is_flag=True,
              help="Run the known fixes for missing columns (one transaction) and record them in goose.")
@json_option
def check_cmd(url: str, apply_fixes: bool, as_json: bool) -> ExitCode:
    """Find E2B's schema, compare it with the goose migrations this tool knows, name each missing piece.

    Changes nothing unless --apply is given. Exit 1 when something the API needs is missing.
    """
    from ..db import schema

    with schema.connect(url) as conn:
        report = schema.check(url, conn)
        applied = []
        if apply_fixes and report.missing:
            done = schema.apply(conn, report)
            applied = [m.file_name for m in done]
            report = schema.check(url, conn)
    result = report.to_dict()
    result["applied"] = applied
    lines = [f"database {report.schema.database!r} on {schema.describe(url)}"]
    lines += [f.line() for f in report.findings]
    lines += [f"applied {name}" for name in applied]
    if not report.ok and report.missing and not apply_fixes and any(m.migration.fix_sql for m in report.missing):
        lines.append("run again with --apply to add the missing columns listed above")
    emit(as_json, result, lines)
    return verdict(report.ok)
