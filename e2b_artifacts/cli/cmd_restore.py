"""``e2b-artifact restore``: undo a cold start, byte for byte."""

from __future__ import annotations

import click

from ..errors import ExitCode
from .common import AppState, emit, json_option


@click.command("restore")
@click.argument("build")
@click.argument("timestamp")
@json_option
@click.pass_obj
def command(app: AppState, build: str, timestamp: str, as_json: bool) -> ExitCode:
    """Move everything cold-start put in BUILD's quarantine TIMESTAMP back in place.

    Refuses (and moves nothing) when one of the original paths exists again.
    """
    from ..coldstart import RESTART_NOTE, restore

    result = restore(app.settings.build_dir(build), timestamp)
    lines = [f"restored {m.dest} <- {m.source}" for m in result.moves]
    if result.metadata_restored:
        lines.append("metadata.json restored (filesystem_only mark removed)")
    if result.metadata_kept_at is not None:
        lines.append(f"metadata.json changed after the cold start and was kept; the original is at "
                     f"{result.metadata_kept_at}")
    if result.manifest_restored:
        lines.append("integrity manifest restored")
    lines.append(f"note: {RESTART_NOTE}")
    emit(as_json, result.to_dict(), lines)
    return ExitCode.OK
