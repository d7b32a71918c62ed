"""``e2b-artifact cold-start``: quarantine a build's snapshot and cache entries (undo with restore)."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import ExitCode
from .common import AppState, build_command, emit


@build_command("cold-start")
@click.option("--dry-run", is_flag=True, help="Print what would move; move nothing.")
@click.option("--filesystem-only", is_flag=True,
              help='Also set "filesystem_only": true in metadata.json (HEAD orchestrators then boot the rootfs; '
                   "restore puts the original back).")
def command(app: AppState, build_dir: Path, dry_run: bool, filesystem_only: bool, as_json: bool) -> ExitCode:
    """Move BUILD's memfile, snapfile and headers into <build>/.quarantine/<UTC timestamp>/.

    Its TEMPLATE_CACHE_DIR and SHARED_CHUNK_CACHE_PATH entries move into quarantine too.
    Nothing is deleted; the printed restore command puts everything back.
    """
    from ..coldstart import RESTART_NOTE, cold_start

    result = cold_start(build_dir, app.settings, dry_run=dry_run,
                        filesystem_only=filesystem_only)
    verb = "would move" if dry_run else "moved"
    lines = [f"moved {a.name}, left by an interrupted run, to {b}" for a, b in result.leftovers]
    lines += [f"{verb} {m.source} -> {m.dest}" for m in result.moves]
    if result.metadata_marked:
        lines.append(f'{"would set" if dry_run else "set"} "filesystem_only": true in metadata.json '
                     "(the original is kept in the quarantine record)")
    if result.manifest_updated:
        lines.append("integrity manifest updated (the original is kept in the quarantine record)")
    if not dry_run:
        lines.append(f"undo: {result.restore_command}")
        lines.append("sandboxes now cold-boot from rootfs (e2b-artifact verify warns: no snapshot)")
    lines.append(f"note: {RESTART_NOTE}")
    emit(as_json, result.to_dict(), lines)
    return ExitCode.OK
