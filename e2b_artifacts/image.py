"""``build --from-image``: an OCI/Docker image to ``rootfs.ext4`` without root, checked member by member.

Steps: resolve the source (registry pull into the blob cache, OCI layout or
``docker save`` archive) -> uncompressed, diff-id-verified layer tars in the
cache -> flatten with OCI whiteout rules into ONE tar beside the output ->
``mke2fs -d`` from that tar (rootfs.create_from_tar) -> fidelity check of the
ext4 against the flattened tar. Nothing is ever extracted to the host.

``mke2fs`` 1.47.2 reads a tar from stdin (``-d -``) in one pass but refuses a
FIFO path or ``/dev/stdin`` (it takes a non-regular file for a directory). Streaming
the flattened tar into ``-d -`` was measured slower than writing it to a temporary
file with ``copy_file_range`` from the cached layer tars (``scripts/bench_image.py``),
so the tar is a temporary file beside the output, removed after use.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import e2fsprogs, fidelity, rootfs
from .errors import ArtifactError, ExitCode
from .oci import flatten, layers, reference, sources
from .oci.cache import BlobCache
from .stages import StageTimes

DEFAULT_PLATFORM = "linux/amd64"
Progress = Callable[[str], None]
_SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str) -> int:
    """``4G``, ``512M``, ``1.5GiB`` or plain bytes (binary units) -> bytes > 0; ValueError otherwise."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*", text, re.IGNORECASE)
    if not match:
        raise ValueError(f"{text!r} is not a size like 4G, 512M or 1.5GiB")
    value = int(float(match.group(1)) * _SIZE_UNITS[match.group(2).upper()])
    if value <= 0:
        raise ValueError("the size must be more than 0")
    return value


@dataclass
class ImageOptions:
    source: str
    platform: str = DEFAULT_PLATFORM
    insecure: bool = False
    report: Path | None = None
    allow_mismatch: bool = False
    cache_dir: Path | None = None
    max_image_size: int = layers.DEFAULT_MAX_IMAGE_SIZE  # uncompressed bytes of all layers
    max_layer_ratio: int = layers.DEFAULT_MAX_LAYER_RATIO  # per layer, uncompressed / compressed; 0: none
    # called with the flattened entries before mke2fs writes anything (build --init systemd checks /sbin/init)
    before_mke2fs: Callable[[list[flatten.FlatEntry]], None] | None = None


@dataclass
class FlattenedImage:
    tar_path: Path  # where the flattened tar is written (rootfs_tar_from_image); build_rootfs streams it instead
    content_bytes: int
    inodes: int
    xattrs: dict[str, dict[str, bytes]]
    entries: list[flatten.FlatEntry]
    image: sources.ResolvedImage
    whiteouts_applied: int
    opaque_dirs: int
    times: StageTimes = field(default_factory=StageTimes)  # resolve, decompress, flatten, then the build's
    flattener: flatten.Flattener | None = None  # what writes the tar (flatten.write_tar)

    def metadata(self) -> dict[str, Any]:
        """metadata.json fields: ``from_image``, ``context``, ``start`` (upstream) and our own details."""
        cfg = self.image.config.get("config") or {}
        env = {}
        for item in cfg.get("Env") or []:
            key, _, value = str(item).partition("=")
            env[key] = value
        context = {k: v for k, v in (("user", cfg.get("User")), ("workdir", cfg.get("WorkingDir")),
                                     ("env_vars", env)) if v}
        argv = [*(cfg.get("Entrypoint") or []), *(cfg.get("Cmd") or [])]
        doc: dict[str, Any] = {"from_image": self.image.reference, "context": context}
        if argv:
            doc["start"] = {"start_command": shlex.join(argv), "context": context}
        doc["e2b_artifact"] = {"image": {
            "reference": self.image.reference, "manifest_digest": self.image.manifest_digest,
            "config_digest": self.image.config_digest, "platform": self.platform(),
            "layers": [layer.diff_id for layer in self.image.layers],
            "entrypoint": cfg.get("Entrypoint"), "cmd": cfg.get("Cmd")}}
        return doc

    def platform(self) -> str | None:
        """The platform picked from an index, else the one the image's config states (os/arch[/variant])."""
        if self.image.platform:
            return self.image.platform
        os_name, arch = self.image.config.get("os"), self.image.config.get("architecture")
        if not (isinstance(os_name, str) and isinstance(arch, str) and os_name and arch):
            return None
        variant = self.image.config.get("variant")
        return f"{os_name}/{arch}" + (f"/{variant}" if isinstance(variant, str) and variant else "")


def flatten_image(opts: ImageOptions, workdir: Path, progress: Progress = lambda _: None,
                  times: StageTimes | None = None) -> FlattenedImage:
    """Resolve, verify and flatten the image (every layer's headers, whiteouts applied): what the flattened
    tar will hold, before any of it is written (its ``tar_path`` is still free). ``times`` gets resolve,
    decompress and flatten."""
    times = times if times is not None else StageTimes()
    ref = reference.parse(opts.source)
    platform = reference.Platform.parse(opts.platform)
    cache = BlobCache(opts.cache_dir, report=progress)
    progress(f"image: resolving {ref}")
    with times.stage("resolve"):
        image = sources.resolve(ref, platform=platform, insecure=opts.insecure, cache=cache, progress=progress,
                                max_image_size=opts.max_image_size)
    if isinstance(ref, reference.RegistryRef):
        progress(f"image: downloaded {image.downloaded_bytes} bytes, {image.cached_blobs} blobs from cache")
    with times.stage("decompress"):
        layer_tars = layers.unpack_layers(image.layers, cache,
                                          layers.Limits(opts.max_image_size, opts.max_layer_ratio))
    with times.stage("flatten"):
        flat = flatten.Flattener()
        for n, tar_path in enumerate(layer_tars):
            flat.add_layer(n, tar_path, cache.root / "index")
        result = flatten.describe(flat)
    progress(f"image: {len(image.layers)} layers flattened to {len(result.entries)} entries "
             f"({result.whiteouts_applied} whiteouts, {result.opaque_dirs} opaque dirs)")
    return FlattenedImage(workdir / ".flattened-image.tar", result.content_bytes, len(result.entries) + 1,
                          result.xattrs, result.entries, image, result.whiteouts_applied, result.opaque_dirs, times,
                          flat)


def rootfs_tar_from_image(opts: ImageOptions, workdir: Path, progress: Progress = lambda _: None,
                          times: StageTimes | None = None) -> FlattenedImage:
    """Resolve, verify and flatten the image into a new tar under ``workdir`` (``tar_path``)."""
    flat = flatten_image(opts, workdir, progress, times)
    with flat.times.stage("flatten"):
        _write_flattened(flat)
    return flat


def _write_flattened(flat: FlattenedImage) -> None:
    assert flat.flattener is not None
    flat.tar_path.unlink(missing_ok=True)  # our own temp name inside the staging directory
    flatten.write_tar(flat.flattener, flat.tar_path)


@dataclass
class ImageBuild:
    flattened: FlattenedImage
    report: fidelity.FidelityReport

    def metadata(self) -> dict[str, Any]:
        return self.flattened.metadata()

    def summary(self) -> dict[str, Any]:
        img = self.flattened.image
        return {"reference": img.reference, "manifest_digest": img.manifest_digest,
                "platform": self.flattened.platform(),
                "layers": len(img.layers), "downloaded_bytes": img.downloaded_bytes,
                "cached_blobs": img.cached_blobs, "whiteouts_applied": self.flattened.whiteouts_applied,
                "opaque_dirs": self.flattened.opaque_dirs, "fidelity": self.report.summary(),
                "fidelity_entries": self.report.entries, "fidelity_mismatches": len(self.report.mismatches),
                "seconds": self.flattened.times.to_json()}


def build_rootfs(opts: ImageOptions, image_path: Path, *, free_mb: int = rootfs.DEFAULT_FREE_MB,
                 progress: Progress = lambda _: None, times: StageTimes | None = None) -> ImageBuild:
    """Create ``image_path`` from the image; fails on any fidelity mismatch unless ``allow_mismatch``.

    ``times`` records resolve, decompress, flatten, mke2fs, xattrs, resize and fidelity."""
    times = times if times is not None else StageTimes()
    flat = flatten_image(opts, image_path.parent, progress, times)
    if opts.before_mke2fs is not None:
        opts.before_mke2fs(flat.entries)
    flattener = flat.flattener
    assert flattener is not None
    if e2fsprogs.tar_input_supported():
        # the tar goes straight into mke2fs -d - while it is written: no file, and writing it (copying the
        # members from the layer tars) runs beside mke2fs instead of before it
        rootfs.create_from_tar_stream(lambda fd: flatten.write_tar(flattener, fd), image_path,
                                      content_bytes=flat.content_bytes, inodes=flat.inodes, xattrs=flat.xattrs,
                                      free_mb=free_mb, times=times)
    else:
        try:
            with times.stage("flatten"):
                _write_flattened(flat)
            rootfs.create_from_tar(flat.tar_path, image_path, free_mb=free_mb, content_bytes=flat.content_bytes,
                                   inodes=flat.inodes, xattrs=flat.xattrs, times=times)
        finally:
            flat.tar_path.unlink(missing_ok=True)
    with times.stage("fidelity"):
        report = fidelity.compare(flat.entries, image_path)
    report.image = opts.source  # the ext4 is still in the staging directory here
    if opts.report is not None:
        report.write(opts.report)
    progress(report.summary())
    if not report.ok and not opts.allow_mismatch:
        first = report.mismatches[0]
        raise ArtifactError(f"{report.summary()}; first: {first.path} {first.field} "
                            f"(expected {first.expected!r}, got {first.actual!r})",
                            hint="see the details with --report FILE; --allow-mismatch builds anyway",
                            code=ExitCode.CHECK_FAILED)
    return ImageBuild(flat, report)
