"""Small template builds for sync tests: random data, v3 headers that chain builds, metadata, manifest."""

from __future__ import annotations

import hashlib
import os
import struct
import uuid
from pathlib import Path

from e2b_artifacts.manifest import write_manifest
from e2b_artifacts.metadata import Metadata

BLOCK = 4096


def header_v3(build_id: str, size: int, mappings: list[tuple[int, int, str, int]]) -> bytes:
    """A version-3 header: 64-byte metadata, then 40-byte (offset, length, build id, storage offset) records."""
    generation = len({m[2] for m in mappings}) - 1
    out = struct.pack("<QQQQ16s16s", 3, BLOCK, size, generation, uuid.UUID(build_id).bytes,
                      uuid.UUID(mappings[0][2]).bytes)
    for offset, length, owner, storage_offset in mappings:
        out += struct.pack("<QQ16sQ", offset, length, uuid.UUID(owner).bytes, storage_offset)
    return out


def make_build(root: Path, *, parents: list[str] = (), rootfs_blocks: int = 16,  # type: ignore[assignment]
               extra: dict[str, int] | None = None, build_id: str | None = None) -> str:
    """Write ``<root>/<id>/`` whose rootfs header maps one slice of the device to each parent and the rest
    to itself; returns the id. ``extra`` adds random files (name -> size)."""
    build_id = build_id or str(uuid.uuid4())
    d = root / build_id
    d.mkdir(parents=True)
    owners = [*parents, build_id]
    slice_len = rootfs_blocks * BLOCK
    mappings = [(i * slice_len, slice_len, owner, 0) for i, owner in enumerate(owners)]
    (d / "rootfs.ext4").write_bytes(os.urandom(slice_len))
    (d / "rootfs.ext4.header").write_bytes(header_v3(build_id, slice_len * len(owners), mappings))
    (d / "snapfile").write_bytes(os.urandom(3 * BLOCK + 17))
    for name, size in (extra or {}).items():
        (d / name).write_bytes(os.urandom(size))
    Metadata(build_id=build_id, kernel_version="vmlinux-6.1.102", firecracker_version="v1.12.1_d990331").write(
        d / "metadata.json")
    write_manifest(d, build_id)
    return build_id


def tree_digest(build_dir: Path) -> dict[str, str]:
    """name -> sha256 of every file in a build dir (hidden ones included)."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(build_dir.iterdir()) if p.is_file()}


def storage_snapshot(root: Path) -> dict[str, str]:
    """Every path under ``root`` with the sha256 of files ("dir" for directories)."""
    snap = {}
    for p in sorted(root.rglob("*")):
        snap[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
    return snap
