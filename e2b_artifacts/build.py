"""Assemble a template build directory: rootfs.ext4 + envd + metadata.json (+ manifest).

Everything is staged in a temporary directory beside the target and renamed
into place only when complete. An existing build is replaced only with
``force``, and then moved aside (never deleted) after the new one is in place.
A lock file serializes builds of the same build id.
"""

from __future__ import annotations

import datetime as dt
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from . import __version__, layout, rootfs, sourcecheck
from .envdpath import EnvdChoice
from .errors import ArtifactError, ExitCode
from .fsutil import check_writable
from .image import ImageOptions, build_rootfs
from .inject import InitMode, inject, read_envd, require_systemd_init
from .layout import METADATA as METADATA_NAME
from .layout import ROOTFS as ROOTFS_NAME
from .manifest import write_manifest
from .metadata import DEFAULT_FIRECRACKER_VERSION, DEFAULT_KERNEL_VERSION, DEFAULT_RAM_MB, DEFAULT_VCPU, Metadata
from .oci.flatten import FlatEntry
from .stages import StageTimes
from .versions import FirecrackerVersion, read_firecracker_version

SourceKind = Literal["dir", "tar", "ext4", "image"]


@dataclass
class BuildRequest:
    source_kind: SourceKind
    source: Path
    envd: Path
    storage: Path
    build_id: str | None = None
    template_id: str | None = None
    kernel_version: str = DEFAULT_KERNEL_VERSION
    firecracker_version: str = DEFAULT_FIRECRACKER_VERSION
    envd_version: str | None = None
    init: InitMode = "envd"
    free_mb: int = rootfs.DEFAULT_FREE_MB
    vcpu: int = DEFAULT_VCPU
    ram_mb: int = DEFAULT_RAM_MB
    force: bool = False
    extra_metadata: dict[str, Any] = field(default_factory=dict)
    image: ImageOptions | None = None  # source_kind "image" (build --from-image)
    strict: bool = False  # refuse an envd that is not a static ELF (a warning otherwise)
    envd_choice: EnvdChoice | None = None  # how ``envd`` was chosen (envdpath.resolve), for the result
    compress: str | None = None  # "zstd" / "lz4": store the build in upstream's compressed form (compress.py)


@dataclass
class BuildResult:
    build_id: str
    build_dir: Path
    rootfs_bytes: int
    replaced_moved_to: Path | None = None
    inject_actions: list[str] = field(default_factory=list)
    image: dict[str, Any] | None = None  # --from-image: provenance, bytes downloaded, fidelity
    firecracker: FirecrackerVersion | None = None  # how --firecracker-version was read
    stages: StageTimes | None = None  # seconds per stage (build --debug prints them, --json carries them)
    envd: EnvdChoice | None = None  # which envd file was injected, and why

    def to_json(self) -> dict[str, object]:
        return {"ok": True, "build_id": self.build_id, "build_dir": str(self.build_dir),
                "rootfs": str(stored_rootfs(self.build_dir)), "metadata": str(self.build_dir / METADATA_NAME),
                "rootfs_bytes": self.rootfs_bytes,
                "replaced_build_moved_to": str(self.replaced_moved_to) if self.replaced_moved_to else None,
                "inject": self.inject_actions,
                "firecracker": self.firecracker.to_dict() if self.firecracker else None,
                "stages": self.stages.to_json() if self.stages else None,
                "envd": self.envd.to_json() if self.envd else None,
                **({"image": self.image} if self.image else {})}


def build(req: BuildRequest, progress: Callable[[str], None] = lambda _: None) -> BuildResult:
    """Build ``<storage>/<build-id>/`` from ``req``; returns where it is (and what each stage took)."""
    times = StageTimes()
    build_id = layout.check_build_id(req.build_id or str(uuid.uuid4()))
    if req.compress is not None:  # before anything is built: the compressed form's headers name it by UUID
        from .compress import codec_of, require_uuid

        codec_of(req.compress)
        require_uuid(build_id)
    firecracker = _check_inputs(req, progress)
    _make_storage(req.storage)
    target = req.storage / build_id
    with layout.lock(req.storage, build_id):
        for stale, aside in layout.sweep_stale(req.storage, build_id):
            progress(f"moved {stale.name}, left by an interrupted run, to {aside}")
        if target.exists() and not req.force:
            raise ArtifactError(f"build {build_id} already exists at {target}",
                                hint="pass --force to replace it (the old one is moved aside, not deleted), "
                                     "or choose another --build-id", code=ExitCode.CONFLICT)
        image_summary: dict[str, Any] | None = None
        with layout.stage(req.storage, build_id) as stage:
            image = stage / ROOTFS_NAME
            progress(f"rootfs: creating {ROOTFS_NAME} from {req.source_kind} {req.source}")
            systemd = req.init == "systemd"
            if req.source_kind == "dir":
                if systemd and req.source.is_dir():  # create_from_dir refuses what is not a directory
                    sourcecheck.require_init(sourcecheck.dir_lookup(req.source), f"--rootfs-dir {req.source}")
                rootfs.create_from_dir(req.source, image, free_mb=req.free_mb, times=times)
            elif req.source_kind == "tar":
                members = rootfs.MemberCheck()
                with times.stage("scan"):
                    content = rootfs.scan_tar(req.source, members)
                if systemd:
                    sourcecheck.require_init(sourcecheck.mapping_lookup(members.entries), f"--rootfs-tar {req.source}")
                rootfs.create_from_tar(req.source, image, free_mb=req.free_mb, content_bytes=content.blocks_bytes,
                                       inodes=content.entries, xattrs=content.xattrs, times=times)
            elif req.source_kind == "ext4":
                if systemd:
                    require_systemd_init(req.source)
                with times.stage("copy"):
                    rootfs.create_from_ext4(req.source, image, free_mb=req.free_mb)
            else:  # --- build --from-image: pull/flatten/mke2fs/fidelity in image.py ---
                assert req.image is not None
                if systemd:
                    req.image.before_mke2fs = _require_init_in_image
                image_build = build_rootfs(req.image, image, free_mb=req.free_mb, progress=progress, times=times)
                req.extra_metadata.update(image_build.metadata())
                image_summary = image_build.summary()
            progress(f"inject: installing envd ({req.init} mode)")
            with times.stage("inject"):
                injected = inject(image, req.envd, init=req.init, grow=True, times=times)
            with times.stage("resize"):
                rootfs.ensure_free(image, req.free_mb)
            metadata = _metadata(req, build_id, image)
            metadata.write(stage / METADATA_NAME)
            with times.stage("manifest"):
                write_manifest(stage, build_id)
            if req.compress is None:
                moved = layout.publish(stage, target, replace=req.force)
            else:
                with times.stage("compress"):
                    moved = _publish_compressed(req, stage, build_id, target, progress)
    times.finish()
    return BuildResult(build_id, target, stored_rootfs(target).stat().st_size, moved, injected.actions,
                       image_summary, firecracker, times,
                       req.envd_choice or EnvdChoice(req.envd, "BuildRequest.envd", req.envd_version))


def stored_rootfs(build_dir: Path) -> Path:
    """``rootfs.ext4``, or the compressed object that holds it (``rootfs.ext4.zstd``)."""
    names = (ROOTFS_NAME, *layout.compressed_names(ROOTFS_NAME))
    return next((build_dir / n for n in names if (build_dir / n).is_file()), build_dir / ROOTFS_NAME)


def _publish_compressed(req: BuildRequest, stage: Path, build_id: str, target: Path,
                        progress: Callable[[str], None]) -> Path | None:
    """The staged plain build compressed into a second staging directory, and that published."""
    from concurrent.futures import ThreadPoolExecutor

    from .compress import codec_of, compress_build

    assert req.compress is not None
    codec = codec_of(req.compress)
    with layout.stage(req.storage, build_id) as packed, ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        progress(f"compress: {ROOTFS_NAME} as {req.compress} frames")
        result = compress_build(stage, packed, codec, {}, pool, build_id=build_id)
        progress(f"compress: {result.plain_bytes} bytes stored as {result.stored_bytes}")
        return layout.publish(packed, target, replace=req.force)


def _check_inputs(req: BuildRequest, progress: Callable[[str], None]) -> FirecrackerVersion:
    firecracker = read_firecracker_version(req.firecracker_version)
    if firecracker is None:
        raise ArtifactError(f"--firecracker-version {req.firecracker_version!r} is not a Firecracker version",
                            hint="use a name as E2B writes them: v1.14-0.2.0 (E2B's fork), v1.14.1_431f1fc "
                                 "(release_commit) or v1.10.1", code=ExitCode.USAGE)
    progress(f"firecracker: {firecracker.name} read as the {firecracker.describe()}")
    if not req.envd.is_file():
        raise ArtifactError(f"envd not found at {req.envd}",
                            hint="pass --envd PATH, or set HOST_ENVD_PATH (upstream default /fc-envd/envd)",
                            code=ExitCode.BAD_INPUT)
    sourcecheck.check_envd(req.envd, read_envd(req.envd), strict=req.strict, warn=progress)
    if req.image is not None and req.image.report is not None:
        check_writable(req.image.report, "--report")
    if req.source_kind != "image" and not req.source.exists():
        raise ArtifactError(f"rootfs source not found: {req.source}", hint="check the path", code=ExitCode.BAD_INPUT)
    if req.free_mb < 0:
        raise ArtifactError("--disk-size-mb must be >= 0", hint="e.g. --disk-size-mb 512", code=ExitCode.USAGE)
    return firecracker


def _make_storage(storage: Path) -> None:
    if storage.exists() and not storage.is_dir():
        raise ArtifactError(f"storage {storage} is not a directory",
                            hint="point --storage (or LOCAL_TEMPLATE_STORAGE_BASE_PATH) at a directory; "
                                 "nothing was written", code=ExitCode.BAD_INPUT)
    try:
        storage.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as exc:  # a parent of it is a file
        raise ArtifactError(f"storage {storage} cannot be created: {exc.strerror} ({exc.filename})",
                            hint="point --storage (or LOCAL_TEMPLATE_STORAGE_BASE_PATH) at a directory; "
                                 "nothing was written", code=ExitCode.BAD_INPUT) from exc


def _require_init_in_image(entries: list[FlatEntry]) -> None:
    rows = ((e.path, e.kind, e.mode, e.target) for e in entries)
    sourcecheck.require_init(sourcecheck.flat_lookup(rows), "the image")


def _metadata(req: BuildRequest, build_id: str, image: Path) -> Metadata:
    md = Metadata(build_id=build_id, kernel_version=req.kernel_version,
                  firecracker_version=req.firecracker_version, template_id=req.template_id,
                  envd_version=req.envd_version, extra={"context": {}, **req.extra_metadata})
    md.ext.update(init=req.init, vcpu=req.vcpu, ram_mb=req.ram_mb, free_disk_mb=req.free_mb,
                  total_disk_mb=image.stat().st_size >> 20,
                  source={"kind": req.source_kind, "path": str(req.source)},
                  built_by=f"e2b-artifact {__version__}",
                  built_at=dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
    return md


