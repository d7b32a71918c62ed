"""``e2b-artifact clone``: copy a build under a new id and verify the copy."""

from __future__ import annotations

import click

from ..errors import ExitCode
from .common import AppState, emit, json_option, verdict


@click.command("clone")
@click.argument("source")
@click.option("--build-id", default=None, help="Id of the copy [default: a new UUID].")
@click.option("--template-id", default=None, help="Template id recorded in the copy's metadata.")
@click.option("--quick", is_flag=True, help="Verify the copy without re-hashing its data.")
@click.option("--force", is_flag=True, help="Clone a source that does not match its own manifest (the copy keeps "
                                            "the source's recorded hashes and fails verify the same way).")
@json_option
@click.pass_obj
def command(app: AppState, source: str, build_id: str | None, template_id: str | None, quick: bool, force: bool,
            as_json: bool) -> ExitCode:
    """Copy build SOURCE (sparse files stay sparse), rewrite its ids, verify the copy.

    The source is checked against its manifest first. Exit 0 when the copy verifies, 1 when a
    check of the copy failed (the copy is kept), 8 when the source does not match its manifest
    (nothing copied; --force copies it anyway).
    """
    from ..clone import clone
    from ..verify import verify

    settings = app.settings
    result = clone(settings.build_dir(source), settings.storage, build_id=build_id, template_id=template_id,
                   force=force)
    report = verify(result.target, settings, quick=quick)
    for warning in result.warnings:
        report.add("clone", "warn", warning, f"e2b-artifact verify {result.source.name}")
    lines = [f"cloned {result.source} -> {result.target} ({len(result.files)} files; ids rewritten in "
             f"{', '.join(result.rewritten)})"]
    lines += [f.line() for f in report.findings if f.status != "ok"]
    failed = report.failed()
    lines.append(f"verify {result.build_id}: {'FAILED' if failed else 'passed'}")
    emit(as_json, {**result.to_dict(), "verify": report.to_dict()}, lines)
    return verdict(not failed)
