"""Writing a header: v1-3 records, or v4 as upstream's ``serializeV4`` lays it out."""

from __future__ import annotations

import bisect
import struct
import uuid
from collections.abc import Sequence

from ..errors import ArtifactError, ExitCode
from .model import META, Frame, Header, Mappings
from .parse import BUILD_INFO, FRAME, FRAME_TABLE_HEAD, MAX_BLOCK_BYTES


def serialize(header: Header) -> bytes:
    """Bytes of a v1-3 or v4 header (the layouts this tool writes); v5 raises."""
    if header.version not in (1, 2, 3, 4):
        raise ArtifactError(f"cannot write a version {header.version} header (only 1 to 4)",
                            hint="re-export the build with v3 or v4 headers", code=ExitCode.BAD_INPUT)
    out = META.pack(header.raw_version or header.version, header.block_size, header.size, header.generation,
                     uuid.UUID(header.build_id).bytes, uuid.UUID(header.base_build_id).bytes)
    if header.version == 4:
        return out + _v4_body(header)
    return out + bytes(Mappings.of(header.mappings).records)


def _v4_body(header: Header) -> bytes:
    """``[u8 flags][u32 block length][LZ4 frame(block)]`` as upstream's ``serializeV4`` (serialization_v4.go)
    writes it: builds sorted by their 16 id bytes, each frame table trimmed to the frames the mappings use
    (``TrimToRanges``), then the counted 40-byte mappings; the LZ4 frame as ``compressLZ4`` makes it (4 MiB
    blocks, block and content checksums)."""
    import lz4.frame  # type: ignore[import-untyped,import-not-found,unused-ignore]

    mappings = Mappings.of(header.mappings)
    used: dict[str, list[tuple[int, int]]] = {}
    for m in mappings:
        used.setdefault(m.build_id, []).append((m.storage_offset, m.storage_offset + m.length))
    parts = [struct.pack("<I", len(header.builds))]
    for build_id in sorted(header.builds, key=lambda b: uuid.UUID(b).bytes):
        build = header.builds[build_id]
        parts.append(BUILD_INFO.pack(uuid.UUID(build_id).bytes, build.size, bytes.fromhex(build.sha256)))
        frames = trim_frames(build.frames, used.get(build_id, [])) if build.compressed else ()
        parts.append(FRAME_TABLE_HEAD.pack(int(build.codec) if frames else 0, len(frames)))
        parts.extend(FRAME.pack(f.start_u, f.start_c, f.size_u, f.size_c) for f in frames)
    parts.append(struct.pack("<I", len(mappings)))
    parts.append(bytes(mappings.records))
    block = b"".join(parts)
    if len(block) > MAX_BLOCK_BYTES:
        raise ArtifactError(f"a v4 header block of {len(block)} bytes is over upstream's 256 MiB cap",
                            hint="upstream refuses to store such a header (StoreHeader); split the build",
                            code=ExitCode.BAD_INPUT)
    # The streaming compressor keeps the 4 MiB block size (lz4.frame.compress shrinks it to fit small input).
    writer = lz4.frame.LZ4FrameCompressor(block_size=lz4.frame.BLOCKSIZE_MAX4MB, block_linked=False,
                                          content_checksum=True, block_checksum=True, compression_level=0)
    compressed = bytes(writer.begin()) + bytes(writer.compress(block)) + bytes(writer.flush())
    return bytes([1 if header.incomplete else 0]) + struct.pack("<I", len(block)) + compressed


def trim_frames(frames: Sequence[Frame], ranges: Sequence[tuple[int, int]]) -> tuple[Frame, ...]:
    """The frames overlapping at least one uncompressed ``[start, end)`` range; all of them when ``ranges`` is
    empty (upstream's ``FrameTable.TrimToRanges``)."""
    if not ranges or not frames:
        return tuple(frames)
    keep = [False] * len(frames)
    for start, end in ranges:
        i = bisect.bisect_right(frames, start, key=lambda f: f.end_u)
        while i < len(frames) and frames[i].start_u < end:
            keep[i] = True
            i += 1
    return tuple(f for f, k in zip(frames, keep, strict=True) if k)
