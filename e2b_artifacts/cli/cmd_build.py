"""``e2b-artifact build``: a template build directory from a tree, a tar or an ext4 image."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import ArtifactError, ExitCode
from ..metadata import DEFAULT_FIRECRACKER_VERSION, DEFAULT_KERNEL_VERSION, DEFAULT_RAM_MB, DEFAULT_VCPU
from ..rootfs import DEFAULT_FREE_MB
from .common import AppState, emit, json_option, progress


@click.command("build")
@click.option("--rootfs-dir", type=click.Path(path_type=Path), help="Build from this directory tree.")
@click.option("--rootfs-tar", type=click.Path(path_type=Path), help="Build from a tar, tar.gz or tar.zst.")
@click.option("--rootfs-ext4", type=click.Path(path_type=Path), help="Build from a copy of this ext4 image.")
# --- build --from-image options (e2b_artifacts/image.py) ---
@click.option("--from-image", "from_image", metavar="SRC",
              help="Build from an OCI/Docker image: REGISTRY/REPO:TAG, REGISTRY/REPO@sha256:..., "
                   "oci-layout:DIR[:TAG] or docker-archive:FILE.")
@click.option("--platform", default="linux/amd64", show_default=True,
              help="Platform to pick from a multi-platform image (--from-image).")
@click.option("--insecure", is_flag=True, help="Talk plain HTTP to the registry (--from-image).")
@click.option("--report", "report_file", type=click.Path(path_type=Path),
              help="Write the fidelity report (JSON, every mismatch) here (--from-image).")
@click.option("--allow-mismatch", is_flag=True, help="Build even if the ext4 differs from the image (--from-image).")
@click.option("--max-image-size", "max_image_size", metavar="SIZE", default="4G", show_default=True,
              callback=lambda ctx, param, value: _size(param, value),
              help="Refuse an image whose layers expand to more than this (--from-image).")
@click.option("--max-layer-ratio", type=click.IntRange(min=0), default=100, show_default=True,
              help="Refuse a layer that expands beyond N times its compressed size, past 64 MiB; "
                   "0: no ratio limit (--from-image).")
# --- end of --from-image options ---
@click.option("--envd", type=click.Path(path_type=Path),
              help="envd binary to inject [default: the --envd-version staged beside $HOST_ENVD_PATH, "
                   "else $HOST_ENVD_PATH].")
@click.option("--build-id", help="Build id (directory name) [default: a new UUID4].")
@click.option("--template-id", help="Template id recorded in metadata.")
@click.option("--kernel-version", default=DEFAULT_KERNEL_VERSION, show_default=True,
              help="Directory name under $HOST_KERNELS_DIR.")
@click.option("--firecracker-version", default=DEFAULT_FIRECRACKER_VERSION, show_default=True,
              help="Directory name under $FIRECRACKER_VERSIONS_DIR.")
@click.option("--envd-version", metavar="V",
              help="envd version recorded in metadata (the DB needs one); without --envd it picks "
                   "envd.V or V/envd beside $HOST_ENVD_PATH, as upstream stages them.")
@click.option("--init", "init_mode", type=click.Choice(["envd", "systemd"]), default="envd", show_default=True,
              help="envd: /sbin/init -> /usr/bin/envd. systemd: enabled envd.service, /sbin/init kept.")
@click.option("--disk-size-mb", type=int, default=DEFAULT_FREE_MB, show_default=True,
              help="Free space left in rootfs.ext4 beyond the content.")
@click.option("--vcpu", type=int, default=DEFAULT_VCPU, show_default=True, help="vCPUs recorded for the sandbox.")
@click.option("--ram-mb", type=int, default=DEFAULT_RAM_MB, show_default=True,
              help="Guest RAM recorded for the sandbox.")
@click.option("--force", is_flag=True, help="Replace an existing build (the old one is moved aside).")
@click.option("--strict", is_flag=True, help="Refuse an envd that is not a static ELF (otherwise a warning).")
@click.option("--compress", type=click.Choice(["zstd", "lz4"]), default=None,
              help="Store the build in upstream's compressed form (rootfs.ext4.zstd|.lz4, V4 header, frames).")
@json_option
@click.pass_obj
def command(app: AppState, rootfs_dir: Path | None, rootfs_tar: Path | None, rootfs_ext4: Path | None,
            from_image: str | None, platform: str, insecure: bool, report_file: Path | None, allow_mismatch: bool,
            max_image_size: int, max_layer_ratio: int,
            envd: Path | None, build_id: str | None, template_id: str | None, kernel_version: str,
            firecracker_version: str, envd_version: str | None, init_mode: str, disk_size_mb: int,
            vcpu: int, ram_mb: int, force: bool, strict: bool, compress: str | None, as_json: bool) -> ExitCode:
    """Build <storage>/<build-id>/ with rootfs.ext4 (envd injected) and metadata.json.

    No root, no mount. Prints the build id (or a JSON result with --json).
    """
    from ..build import BuildRequest, SourceKind, build
    from ..envdpath import resolve as resolve_envd

    given: tuple[tuple[SourceKind, Path | None], ...] = (("dir", rootfs_dir), ("tar", rootfs_tar),
                                                         ("ext4", rootfs_ext4),
                                                         ("image", Path(from_image) if from_image else None))
    sources = [(k, p) for k, p in given if p is not None]
    if len(sources) != 1:
        raise ArtifactError("give exactly one of --rootfs-dir, --rootfs-tar, --rootfs-ext4, --from-image",
                            hint="e.g. e2b-artifact build --rootfs-tar rootfs.tar --envd ./envd", code=ExitCode.USAGE)
    kind, source = sources[0]
    settings = app.settings
    host_envd = settings["HOST_ENVD_PATH"]
    choice = resolve_envd(envd, envd_version, host_envd.path, host_envd.source)
    if choice.looked_for:
        progress(f"envd: {choice.path} ({choice.chosen_by})")
    req = BuildRequest(source_kind=kind, source=source, envd=choice.path, envd_choice=choice,
                       storage=settings.storage, build_id=build_id, template_id=template_id,
                       kernel_version=kernel_version, firecracker_version=firecracker_version,
                       envd_version=envd_version, init="systemd" if init_mode == "systemd" else "envd",
                       free_mb=disk_size_mb, vcpu=vcpu, ram_mb=ram_mb, force=force, strict=strict,
                       compress=compress)
    if from_image:
        from ..image import ImageOptions

        req.image = ImageOptions(from_image, platform=platform, insecure=insecure, report=report_file,
                                 allow_mismatch=allow_mismatch, max_image_size=max_image_size,
                                 max_layer_ratio=max_layer_ratio)
    result = build(req, progress=progress)
    if app.debug and result.stages is not None:
        for line in result.stages.table():
            progress(f"stage: {line}")
    lines = [result.build_id]
    if not as_json:
        progress(f"build {result.build_id} is at {result.build_dir}")
        if result.replaced_moved_to:
            progress(f"the previous build was moved to {result.replaced_moved_to} "
                     f"(undo: mv {result.build_dir} elsewhere && mv {result.replaced_moved_to} {result.build_dir})")
    emit(as_json, result.to_json(), lines)
    return ExitCode.OK


def _size(param: click.Parameter, value: str) -> int:
    from ..image import parse_size

    try:
        return parse_size(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param=param) from exc
