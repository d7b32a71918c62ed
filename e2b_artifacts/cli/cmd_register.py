"""``e2b-artifact register <build-id>``: make a built template visible to the E2B API (PostgreSQL)."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import ExitCode
from ..metadata import DEFAULT_RAM_MB, DEFAULT_VCPU
from .cmd_db import db_option
from .common import AppState, build_command, emit, progress


@build_command("register")
@db_option
@click.option("--template-id", default=None, help="Template (envs.id); default: the one in metadata.json.")
@click.option("--team-id", default=None, metavar="UUID", help="Owning team; default: the only team there is.")
@click.option("--alias", default=None, help="Also name the template (env_aliases), e.g. my-template.")
@click.option("--public/--private", "public", default=None, help="Set envs.public (default: keep; new: private).")
@click.option("--vcpu", type=click.IntRange(1, 64), default=None, help="vCPUs the snapshot was taken with "
              f"(default: metadata.json, else {DEFAULT_VCPU}).")
@click.option("--ram-mb", type=click.IntRange(128), default=None, help="RAM in MiB the snapshot was taken with "
              f"(default: metadata.json, else {DEFAULT_RAM_MB}).")
@click.option("--free-disk-mb", type=click.IntRange(1), default=None,
              help="env_builds.free_disk_size_mb (default: metadata.json, else the rootfs size).")
@click.option("--envd-version", default=None, help="envd version in the rootfs (default: metadata.json).")
@click.option("--dry-run", is_flag=True, help="Run the statements in a transaction that is rolled back; print them.")
def command(app: AppState, build_dir: Path, url: str, template_id: str | None, team_id: str | None, alias: str | None,
            public: bool | None, vcpu: int | None, ram_mb: int | None, free_disk_mb: int | None,
            envd_version: str | None, dry_run: bool, as_json: bool) -> ExitCode:
    """Upsert envs, env_builds, env_aliases (and env_build_assignments) for BUILD in one transaction.

    BUILD is a build id under the storage directory, or a path to a build directory.
    Runs `db check` first and refuses when the schema misses something the API reads.
    Idempotent: running it twice leaves the same rows.
    """
    from ..db.register import build_info, register

    info = build_info(build_dir, template_id=template_id, envd_version=envd_version,
                      vcpu=vcpu, ram_mb=ram_mb, free_disk_mb=free_disk_mb)
    result = register(url, info, team_id=team_id, alias=alias, public=public, dry_run=dry_run)
    for warning in result.warnings:
        progress(f"warning: {warning}")
    verb = "would register" if dry_run else "registered"
    lines = list(result.statements) if dry_run else []
    lines.append(f"{verb} build {result.build_id} as template {result.template_id} (team {result.team_id}) "
                 f"in database {result.database!r}")
    row = result.lookup
    lines.append(f"API lookup returns build {row.get('build_id')} kernel {row.get('kernel_version')} "
                 f"firecracker {row.get('firecracker_version')} envd {row.get('envd_version')}"
                 + (" (rolled back)" if dry_run else ""))
    emit(as_json, result.to_dict(), lines)
    return ExitCode.OK
