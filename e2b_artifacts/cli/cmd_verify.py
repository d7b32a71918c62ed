"""``e2b-artifact verify``: every static check of a build, one line each, with the fixing command."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import ExitCode
from .common import AppState, build_command, emit, verdict


@build_command("verify")
@click.option("--strict", is_flag=True, help="Warnings fail too (exit 1).")
@click.option("--quick", is_flag=True, help="Skip hashing file data for the integrity manifest (sizes only).")
@click.option("--fix", is_flag=True,
              help="Repair what is safe: rewrite camelCase/v1 metadata as version 2 (original kept beside it), "
                   "record a missing manifest, cold-start a failing snapshot (undo with restore).")
def command(app: AppState, build_dir: Path, strict: bool, quick: bool, fix: bool, as_json: bool) -> ExitCode:
    """Verify BUILD (a build id under the template storage, or a directory path).

    Exit 0 when nothing failed, 1 when a check failed (--strict: or warned).
    """
    from ..verify import verify

    report = verify(build_dir, app.settings, quick=quick, fix=fix)
    failed = report.failed(strict)
    counts = report.counts()
    lines = [f"fixed: {line}" for line in report.fixed]
    lines += [f.line() for f in report.findings]
    lines.append(f"{report.build_dir}: {counts['ok']} ok, {counts['warn']} warn, {counts['FAIL']} FAIL"
                 f"{' (strict)' if strict else ''} -> {'FAILED' if failed else 'passed'}")
    emit(as_json, report.to_dict(strict), lines)
    return verdict(not failed)
