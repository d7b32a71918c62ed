"""``e2b-artifact audit``: template storage against E2B's database against this host's caches
(:mod:`e2b_artifacts.audit`).

Text: the findings, each with the command that fixes it, then a summary line. ``--json``: JSON lines on
stdout, ``{"type": "fixed"}`` per change --fix made, ``{"type": "finding"}`` per mismatch left, then one
``{"type": "summary"}`` (verify --all's form).
"""

from __future__ import annotations

import json

import click

from ..errors import ExitCode
from .cmd_db import db_option
from .common import AppState, json_option, verdict


@click.command("audit")
@db_option
@click.option("--storage", "location", default=None, metavar="LOC",
              help="Template storage: a directory, s3://BUCKET/PREFIX or gs://BUCKET/PREFIX (default: the "
                   "orchestrator's, TEMPLATE_STORAGE_URL or STORAGE_PROVIDER, as verify --all).")
@click.option("--fix", is_flag=True, help="Move aside (never delete) orphan builds, builds whose parent is gone and "
                                          "stale cache entries; mark served builds without files failed; "
                                          "soft-delete templates no build can serve; register orphans register can.")
@click.option("--endpoint-url", default=None, metavar="URL", help="S3-compatible endpoint (MinIO, Ceph RGW, ...).")
@click.option("--timeout", type=click.FloatRange(1, 3600), default=60, show_default=True, metavar="SECONDS",
              help="Give up on an object store request unanswered for this long.")
@json_option
@click.pass_obj
def command(app: AppState, url: str, location: str | None, fix: bool, endpoint_url: str | None, timeout: float,
            as_json: bool) -> ExitCode:
    """Compare storage, database and this host's caches; one FAIL line per mismatch, with its fix.

    Changes nothing unless --fix is given. Exit 0 clean, 1 mismatches (left), 7 database or storage
    unreachable.
    """
    from ..audit import AuditOptions, audit
    from ..fleet import template_location
    from .verify_all import open_location

    where = location or template_location(app.settings)
    store = open_location(where, endpoint_url, timeout, 1)
    report = audit(store, app.settings, AuditOptions(url=url, location=where, fix=fix))
    if as_json:
        for doc in [*(a.to_json() for a in report.fixed), *(f.to_json() for f in report.findings),
                    report.summary()]:
            click.echo(json.dumps(doc, default=str))
    else:
        for line in [*(a.line() for a in report.fixed), *(f"error: fix failed: {e}" for e in report.fix_errors),
                     *(f.line() for f in report.findings), *(f"quarantine: {q}" for q in report.quarantines),
                     report.summary_line()]:
            click.echo(line)
    return verdict(report.ok)
