"""Compressed builds as upstream writes them, assembled in the tests (independent of e2b_artifacts.compress):
data cut into 2 MiB frames, each a complete lz4 or zstd frame (compress_encode.go: lz4 4 MiB blocks with block
checksums; zstd with its CRC), the V4 header's builds table holding the frame table and the SHA-256 of the
uncompressed data (compress_upload.go compressStream), ``<object>.uncompressed-size`` beside the object
(fs.go storeFileCompressed)."""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path

import lz4.frame
import zstandard

from e2b_artifacts import header, layout
from e2b_artifacts.header import BuildFile, Codec, Frame
from e2b_artifacts.manifest import write_manifest
from e2b_artifacts.metadata import Metadata

FRAME = 2 << 20
BLOCK = 4096


def compress_frame(codec: Codec, data: bytes) -> bytes:
    if codec == Codec.ZSTD:
        return zstandard.ZstdCompressor(level=3, write_checksum=True).compress(data)
    writer = lz4.frame.LZ4FrameCompressor(block_size=lz4.frame.BLOCKSIZE_MAX4MB, block_linked=False,
                                          block_checksum=True, content_checksum=False)
    return bytes(writer.begin()) + bytes(writer.compress(data)) + bytes(writer.flush())


def frame(codec: Codec, data: bytes) -> tuple[bytes, tuple[Frame, ...]]:
    """``data`` cut into 2 MiB frames, compressed one by one: (the object's bytes, its frame table)."""
    parts, frames, position_c = [], [], 0
    for start in range(0, len(data), FRAME):
        out = compress_frame(codec, data[start:start + FRAME])
        frames.append(Frame(start, position_c, len(data[start:start + FRAME]), len(out)))
        parts.append(out)
        position_c += len(out)
    return b"".join(parts), tuple(frames)


def write_layer(build_dir: Path, data_name: str, data: bytes, codec: Codec, *, size: int,
                mappings: list[tuple[int, int, str, int]], ancestors: dict[str, BuildFile] | None = None,
                generation: int = 0, base_build_id: str | None = None) -> BuildFile:
    """``<data_name><suffix>`` + sidecar + a V4 header of ``build_dir``'s build; returns its own record."""
    build_id = build_dir.name
    blob, frames = frame(codec, data)
    name = data_name + codec.suffix
    (build_dir / name).write_bytes(blob)
    (build_dir / layout.uncompressed_size_name(name)).write_text(str(len(data)))
    record = BuildFile(len(data), hashlib.sha256(data).hexdigest(), codec, frames)
    hdr = header.Header(4, BLOCK, size, generation, build_id, base_build_id or build_id,
                        header.Mappings.of([header.Mapping(*m) for m in mappings]),
                        builds={**(ancestors or {}), build_id: record})
    (build_dir / layout.HEADER_OF[data_name]).write_bytes(header.serialize(hdr))
    return record


def chain(root: Path, codec: Codec, *, mib: int = 6) -> list[str]:
    """Three builds (base, child, grandchild) of a ``mib`` MiB rootfs and memfile, compressed: the base holds the
    whole device, the child rewrites [0, 2 MiB), the grandchild [2, 3 MiB); ids base, child, grandchild."""
    size, two, three = mib << 20, 2 << 20, 3 << 20
    ids = [str(uuid.uuid4()) for _ in range(3)]
    base_data = os.urandom(size // 2) + bytes(size - size // 2)  # random, then zeros (they compress to little)
    layers = [
        (base_data, [(0, size, ids[0], 0)]),
        (os.urandom(two), [(0, two, ids[1], 0), (two, size - two, ids[0], two)]),
        (os.urandom(1 << 20), [(0, two, ids[1], 0), (two, 1 << 20, ids[2], 0),
                               (three, size - three, ids[0], three)]),
    ]
    records: dict[str, dict[str, BuildFile]] = {name: {} for name in layout.DATA_FILES}
    for generation, (bid, (data, mappings)) in enumerate(zip(ids, layers, strict=True)):
        d = root / bid
        d.mkdir(parents=True)
        for data_name in layout.DATA_FILES:
            used = {m[2] for m in mappings} - {bid}
            record = write_layer(d, data_name, data, codec, size=size, mappings=mappings, generation=generation,
                                 base_build_id=ids[0], ancestors={a: records[data_name][a] for a in used})
            records[data_name][bid] = record
        (d / layout.SNAPFILE).write_bytes(os.urandom(3 * BLOCK + 17))
        Metadata(build_id=bid, kernel_version="vmlinux-6.1.102", firecracker_version="v1.12.1_d990331").write(
            d / layout.METADATA)
        write_manifest(d, bid)
    return ids


def device(root: Path, build_id: str, data_name: str) -> bytes:
    """The device a build's header describes, read the slow obvious way (whole objects decompressed)."""
    hdr = header.read_header(root / build_id / layout.HEADER_OF[data_name])
    out = bytearray(hdr.size)
    for m in hdr.mappings or []:
        if m.build_id == header.NIL_BUILD:
            continue
        entry = hdr.builds[m.build_id]
        blob = (root / m.build_id / (data_name + entry.codec.suffix)).read_bytes()
        plain = bytearray(entry.size)
        for f in entry.frames:  # a descendant's table may be trimmed: place each frame where it starts
            plain[f.start_u:f.end_u] = _decompress(entry.codec, blob[f.start_c:f.end_c])
        out[m.offset:m.end] = plain[m.storage_offset:m.storage_offset + m.length]
    return bytes(out)


def _decompress(codec: Codec, data: bytes) -> bytes:
    if codec == Codec.ZSTD:
        return zstandard.ZstdDecompressor().decompress(data)
    return bytes(lz4.frame.decompress(data))
