"""``e2b-artifact restore``: undo a cold start, byte for byte."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import ExitCode
from .common import AppState, build_command, emit


@build_command("restore")
@click.argument("timestamp")
def command(app: AppState, build_dir: Path, timestamp: str, as_json: bool) -> ExitCode:
    """Move everything cold-start put in BUILD's quarantine TIMESTAMP back in place.

    Refuses (and moves nothing) when one of the original paths exists again.
    """
    from ..coldstart import RESTART_NOTE, restore

    result = restore(build_dir, timestamp)
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
