"""``e2b-artifact register <build-id>`` (or ``--all`` / ``--builds FILE``): make built templates visible to the
E2B API (PostgreSQL)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ..errors import ArtifactError, ExitCode
from ..metadata import DEFAULT_RAM_MB, DEFAULT_VCPU
from .cmd_db import db_option
from .common import AppState, emit, json_option, progress

if TYPE_CHECKING:
    from ..db.register import BuildInfo


@click.command("register")
@click.argument("build", required=False)
@click.option("--all", "everything", is_flag=True, help="Every complete build in the storage directory, parents "
              "first, in one transaction.")
@click.option("--builds", default=None, metavar="FILE", help="The build ids in FILE (one a line; '-': stdin), "
              "in one transaction.")
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
@json_option
@click.pass_obj
def command(app: AppState, build: str | None, everything: bool, builds: str | None, url: str,
            template_id: str | None, team_id: str | None, alias: str | None, public: bool | None, vcpu: int | None,
            ram_mb: int | None, free_disk_mb: int | None, envd_version: str | None, dry_run: bool,
            as_json: bool) -> ExitCode:
    """Upsert envs, env_builds, env_aliases (and env_build_assignments) for BUILD in one transaction.

    BUILD is a build id under the storage directory, or a path to a build directory; --all or
    --builds FILE register many builds (e.g. the ones `sync pull --all` brought) in one transaction.
    Runs `db check` first and refuses when the schema misses something the API reads.
    Idempotent: running it twice leaves the same rows.
    """
    from ..db.register import register_many
    from ..sync_many import Selection, local_builds
    from .verify_all import read_build_id_list

    many = everything or builds is not None
    if sum((build is not None, everything, builds is not None)) != 1:
        raise ArtifactError("give one of BUILD, --all or --builds FILE",
                            hint="e2b-artifact register BUILD --db URL, or register --all --db URL",
                            code=ExitCode.USAGE)
    if many and template_id:
        raise ArtifactError("--template-id names the template of one build",
                            hint="with --all / --builds each build's metadata.json names its template",
                            code=ExitCode.USAGE)
    if build is not None:
        dirs = [app.settings.build_dir(build)]
    else:
        ids = local_builds(app.settings.storage, Selection(everything, tuple(read_build_id_list(builds))
                                                           if builds else ()))
        if not ids:
            raise ArtifactError(f"no complete builds in {app.settings.storage}",
                                hint="pull them first (e2b-artifact sync pull --all SRC), or check --storage",
                                code=ExitCode.BAD_INPUT)
        dirs = [app.settings.storage / bid for bid in ids]
    infos = [_info(d, many, template_id=template_id, envd_version=envd_version, vcpu=vcpu, ram_mb=ram_mb,
                   free_disk_mb=free_disk_mb) for d in dirs]
    results = register_many(url, infos, team_id=team_id, alias=alias, public=public, dry_run=dry_run)
    for warning in results[0].warnings:
        progress(f"warning: {warning}")
    verb = "would register" if dry_run else "registered"
    lines = []
    for result in results:
        lines += result.statements if dry_run else []
        lines.append(f"{verb} build {result.build_id} as template {result.template_id} (team {result.team_id}) "
                     f"in database {result.database!r}")
        row = result.lookup
        lines.append(f"API lookup returns build {row.get('build_id')} kernel {row.get('kernel_version')} "
                     f"firecracker {row.get('firecracker_version')} envd {row.get('envd_version')}"
                     + (" (rolled back)" if dry_run else ""))
    if many:
        lines.append(f"{verb} {len(results)} builds of {len({r.template_id for r in results})} templates "
                     "in one transaction")
        emit(as_json, {"ok": True, "dry_run": dry_run, "committed": not dry_run,
                       "builds": [r.to_dict() for r in results]}, lines)
    else:
        emit(as_json, results[0].to_dict(), lines)
    return ExitCode.OK


def _info(build_dir: Path, many: bool, **flags: Any) -> BuildInfo:
    """What register writes for ``build_dir``; with many builds an error names the build it is about."""
    from ..db.register import build_info

    try:
        return build_info(build_dir, **flags)
    except ArtifactError as exc:
        if not many:
            raise
        hint = ("record it in the build's metadata.json (e2b_artifact.template_id, as e2b-artifact build does), "
                "or register that build alone with --template-id" if "--template-id" in exc.message else exc.hint)
        raise ArtifactError(f"{build_dir.name}: {exc.message}", hint=hint, code=exc.code) from exc
