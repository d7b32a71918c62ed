"""Reading a header as upstream's ``DeserializeBytes`` does (header/serialization*.go, header.go NewHeader,
compact.go NewMapping), rule for rule: what it refuses raises :class:`~.rules.HeaderRejected` naming the
rule; what it builds (the implicit mapping, v5's nil gaps) the returned :class:`~.model.Header` holds.

Bounds: a file is read only up to :data:`limits.HEADER` (and, for v1-3, the 40 bytes per 4 KiB page of the
size it describes); a v4/v5 block is decompressed only up to the length its prefix states (at most upstream's
256 MiB cap), in 1 MiB steps. Mappings are kept packed (:class:`~.model.Mappings`), never as one Python
object per mapping.
"""

from __future__ import annotations

import array
import struct
from pathlib import Path
from typing import Any

from .. import limits
from ..errors import missing_dependency
from ..fsutil import open_input
from .model import (
    MAP,
    MAPPING_SIZE,
    META,
    METADATA_SIZE,
    NIL_BUILD,
    PAGE_SIZE,
    BuildFile,
    Codec,
    Frame,
    Header,
    Mapping,
    Mappings,
    round_up_to_page,
    uuid_str,
)
from .rules import RULES, HeaderRejected, Verdict, reject

MAX_BLOCK_BYTES = 256 << 20  # serialization_v4.go v4MaxUncompressedHeaderSize
MAX_PAGE = (1 << 32) - 1  # compact.go maxBlockIdx: page indexes are uint32
MAX_BUILDS = (1 << 16) - 1  # compact.go maxBuildsPerHeader (0xFFFF is the nil index)
MAX_V5_ENTRIES = 8 << 20  # serialization_v5.go maxV5MappingEntries
MAX_V5_BY_MEMORY = MAX_BLOCK_BYTES // (3 * (3 * 4 + 2))  # readV5MappingSection's maxEntriesByMemory
MAX_FRAMES = 1 << 20  # compress_frame_table.go maxDeserializedFrames
LZ4_MAGIC = b"\x04\x22\x4d\x18"
INFLATE_STEP = 1 << 20
_NIL_RAW = bytes(16)
BUILD_INFO = struct.Struct("<16sq32s")  # v4SerializableBuildInfo
FRAME_TABLE_HEAD = struct.Struct("<II")  # codec, frame count
FRAME = struct.Struct("<qqii")  # StartU, StartC, SizeU, SizeC (upstream's frameEntry, 24 bytes)


def read_header(path: Path) -> Header:
    """Read and parse a header file: only a regular file, and no more bytes than its format allows."""
    cap = limits.HEADER.bytes()
    fh, file_size = open_input(path, "header", missing_hint="check the build directory (e2b-artifact verify)")
    where = str(path)
    with fh:
        if file_size > cap:
            raise limits.HEADER.exceeded("header", path, file_size)
        meta = fh.read(METADATA_SIZE)
        bound = _bound(meta, cap, where, file_size)
        body = fh.read(bound - len(meta) + 1)
    if len(meta) + len(body) > bound:  # the file grew while it was read
        _bound(meta, cap, where, len(meta) + len(body))
        raise limits.HEADER.exceeded("header", path, None)
    return _parse(meta, memoryview(body), where)


def parse_header(data: bytes, where: str = "header") -> Header:
    """Parse a whole header held in memory (the same bounds as :func:`read_header`)."""
    _bound(data[:METADATA_SIZE], limits.HEADER.bytes(), where, len(data))
    return _parse(data[:METADATA_SIZE], memoryview(data)[METADATA_SIZE:], where)


def parent_build_ids(data: bytes, build_id: str, where: str = "header") -> list[str]:
    """Build ids other than ``build_id`` (and nil) whose data the header in ``data`` maps blocks to, in
    first-use order: the parents a build ``build_id`` with this header needs beside it."""
    return [i for i in parse_header(data, where).referenced_build_ids() if i != build_id]


def max_mappings() -> int:
    """The most mappings a header may hold here: as many as a v1-3 file at the header size limit."""
    return limits.HEADER.bytes() // MAPPING_SIZE


def _bound(meta: bytes, cap: int, where: str, total: int) -> int:
    """The most bytes a header starting with ``meta`` may have; raises when ``total`` is over it."""
    if len(meta) < METADATA_SIZE:
        raise reject(where, "metadata", f"{len(meta)} bytes, shorter than the {METADATA_SIZE}-byte metadata")
    raw_version, _block, size, *_ = META.unpack_from(meta)
    bound = cap
    if raw_version & 0xFFFF in (1, 2, 3):
        pages = max(-(-size // PAGE_SIZE), 1)
        bound = min(cap, METADATA_SIZE + MAPPING_SIZE * pages)
        if bound < total <= cap:
            raise _bounded(where, f"{(total - METADATA_SIZE) // MAPPING_SIZE} mappings: more than the {pages} "
                                  f"4 KiB pages of its {size}-byte device can hold without overlapping")
    if total > cap:
        raise limits.HEADER.exceeded("header", where, total)
    return bound


def _bounded(where: str, detail: str) -> HeaderRejected:
    """A header this tool refuses to hold in memory where upstream would read on (a deliberate difference)."""
    return HeaderRejected(where, RULES["records-bound"], detail, upstream=Verdict.ACCEPT)


def _parse(meta: bytes, body: memoryview, where: str) -> Header:
    raw_version, block_size, size, generation, build_id, base_build_id = META.unpack_from(meta)
    layout = raw_version & 0xFFFF  # serialization.go metadataFormatVersion
    header = Header(layout, block_size, size, generation, uuid_str(build_id), uuid_str(base_build_id),
                    Mappings(), raw_version=raw_version)  # filled in below, or the header is refused
    if layout in (1, 2, 3):
        if len(body) % MAPPING_SIZE:
            raise reject(where, "v3-records", f"{len(body)} bytes of mappings is not a multiple of {MAPPING_SIZE} "
                                              "(truncated?)")
        header.mappings = Mappings(body)
        _new_header(header, where)
    elif layout in (4, 5):
        _parse_framed(header, body, where)
    else:
        raise reject(where, "version", f"unknown header version {layout} (known: 1 to 5; raw {raw_version:#x})")
    return header


def _new_header(header: Header, where: str) -> None:
    """header.go ``NewHeader``: block size, the implicit mapping, then compact.go ``NewMapping``'s checks."""
    if header.block_size == 0:
        raise reject(where, "block-size-zero", "block size 0")
    mappings = Mappings.of(header.mappings)
    if not len(mappings):
        mappings = Mappings.of([Mapping(0, round_up_to_page(header.size), header.build_id, 0)])
    builds: set[bytes] = set()
    for i, (offset, length, raw_id, storage) in enumerate(MAP.iter_unpack(mappings.records)):
        if (offset | length | storage) % PAGE_SIZE:
            what, value = next((w, v) for w, v in (("offset", offset), ("length", length),
                                                   ("storage offset", storage)) if v % PAGE_SIZE)
            raise reject(where, "page-alignment", f"mapping {i}: {what} {value:#x} is not a multiple of 4096")
        if max(offset, length, storage) // PAGE_SIZE > MAX_PAGE:
            raise reject(where, "page-range", f"mapping {i}: a page index past 2^32-1")
        if raw_id != _NIL_RAW and raw_id not in builds:
            builds.add(raw_id)
            if len(builds) > MAX_BUILDS:
                raise reject(where, "unique-builds", f"more than {MAX_BUILDS} distinct builds")
    header.mappings = mappings


def _parse_framed(header: Header, body: memoryview, where: str) -> None:
    """v4/v5 (serialization_v4.go deserializeV4, serialization_v5.go deserializeV5): ``[u8 flags][u32
    length][LZ4 frame]``, the builds section, then the mappings."""
    v = header.version
    if v == 5 and header.block_size == 0:
        raise reject(where, "block-size-zero", "block size 0 (deserializeV5 checks it first)")
    if bytes(body[4:8]) == LZ4_MAGIC and bytes(body[5:9]) != LZ4_MAGIC:
        raise reject(where, "flags-byte", "no flags byte: the LZ4 frame starts right after a u32 length, as in "
                                          "the early v4 layout; HEAD reads byte 0 as the flags and finds no frame")
    if len(body) < 5:
        raise reject(where, "block-prefix", f"{len(body)} bytes after the metadata, fewer than flags + length")
    flags, (length,) = body[0], struct.unpack_from("<I", body, 1)
    if length > MAX_BLOCK_BYTES:
        raise reject(where, "block-cap", f"length prefix {length} over the 256 MiB cap")
    try:
        import lz4.frame  # type: ignore[import-untyped,import-not-found,unused-ignore]
    except ImportError as exc:
        raise missing_dependency("lz4", f"the v{v} header {where}") from exc
    try:
        block = _inflate(lz4.frame.LZ4FrameDecompressor(), body[5:], length)
    except RuntimeError as exc:
        raise reject(where, "lz4-frame", f"cannot decode the v{v} block: LZ4: {exc}") from None
    if len(block) != length:
        got = f"more than {length}" if len(block) > length else f"{len(block)}"
        raise reject(where, "block-length", f"cannot decode the v{v} block: block is {got} bytes, prefix says {length}")
    header.incomplete = bool(flags & 1)
    reader = _Reader(block, where)
    _builds_section(header, reader)
    if v == 4:
        count = reader.u32("mapping-count", "the mapping count")
        if count > reader.left // MAPPING_SIZE:
            raise reject(where, "mapping-count", f"{count} mappings of 40 bytes in the {reader.left} bytes left")
        header.mappings = Mappings(reader.raw(count * MAPPING_SIZE, "mapping-count", "the mappings"))
        _new_header(header, where)
    else:
        header.mappings = _v5_mappings(header, reader)
    header.trailing_bytes = len(block) - reader.pos


def _inflate(decompressor: Any, frame: memoryview, length: int) -> bytes:
    """At most ``length + 1`` bytes out of ``frame``, in 1 MiB steps: memory follows what the frame really holds,
    not what its prefix or its own header claims (upstream's decompressLZ4 also reads at most length + 1)."""
    parts: list[bytes] = []
    total, data = 0, frame
    while total <= length:
        piece = decompressor.decompress(data, max_length=min(INFLATE_STEP, length + 1 - total))
        data = memoryview(b"")
        parts.append(piece)
        total += len(piece)
        if decompressor.eof or not piece:
            break
    return b"".join(parts)


class _Reader:
    """The decompressed block, read front to back; running out of it is the caller's rule."""

    def __init__(self, data: bytes, where: str) -> None:
        self.data, self.pos, self.where = data, 0, where

    @property
    def left(self) -> int:
        return len(self.data) - self.pos

    def raw(self, n: int, rule: str, what: str) -> memoryview:
        if n > self.left:
            raise reject(self.where, rule, f"the block ends inside {what}")
        chunk = memoryview(self.data)[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def u32(self, rule: str, what: str) -> int:
        (value,) = struct.unpack_from("<I", self.raw(4, rule, what))
        return int(value)

    def uvarint(self, what: str) -> int:
        """Go's ``binary.ReadUvarint``: at most 10 bytes, the tenth at most 1."""
        value, shift = 0, 0
        for i in range(10):
            if self.pos >= len(self.data):
                raise reject(self.where, "v5-varint", f"the block ends inside {what}")
            byte = self.data[self.pos]
            self.pos += 1
            if byte < 0x80:
                if i == 9 and byte > 1:
                    break
                return value | byte << shift
            value |= (byte & 0x7F) << shift
            shift += 7
        raise reject(self.where, "v5-varint", f"{what}: varint overflows 64 bits")

    def varint(self, what: str) -> int:
        """Go's ``binary.ReadVarint`` (zigzag)."""
        u = self.uvarint(what)
        return ~(u >> 1) if u & 1 else u >> 1


def _builds_section(header: Header, reader: _Reader) -> None:
    """serialization_v4.go ``readV4BuildsSection``, shared by v4 and v5."""
    count = reader.u32("builds-count", "the builds count")
    if count > reader.left // (BUILD_INFO.size + FRAME_TABLE_HEAD.size):
        raise reject(reader.where, "builds-count", f"{count} builds in the {reader.left} bytes left "
                                                   f"(at least {BUILD_INFO.size + FRAME_TABLE_HEAD.size} each)")
    for _ in range(count):
        build_id, size, digest = BUILD_INFO.unpack(reader.raw(BUILD_INFO.size, "builds-count", "a builds entry"))
        codec, frames = _frame_table(reader, uuid_str(build_id))
        header.builds[uuid_str(build_id)] = BuildFile(size, digest.hex(), codec, frames)


def _frame_table(reader: _Reader, build_id: str) -> tuple[Codec, tuple[Frame, ...]]:
    """One build's frame table, refused where upstream's ``DeserializeFrameTable`` (compress_frame_table.go)
    refuses it: frames under codec 0, more than 2^20 frames, a frame of size <= 0, frames out of order or
    overlapping in either address space. Codec 0 or no frames: stored uncompressed."""
    what = f"frame table of build {build_id}"
    raw_codec, count = FRAME_TABLE_HEAD.unpack(reader.raw(FRAME_TABLE_HEAD.size, "frame-table", what))

    def bad(detail: str) -> HeaderRejected:
        return reject(reader.where, "frame-table", f"{what}: {detail}")

    if raw_codec == 0 and count:
        raise bad(f"codec 0 (none) with {count} frames")
    if raw_codec == 0 or count == 0:
        return Codec.NONE, ()
    if count > MAX_FRAMES:
        raise bad(f"{count} frames, over upstream's maximum {MAX_FRAMES}")
    try:
        codec = Codec(raw_codec)
    except ValueError:
        # Upstream keeps the low byte and fails every read of the object later ("unsupported compression type").
        raise bad(f"unknown codec {raw_codec} (known: 1 zstd, 2 lz4)") from None
    if count * FRAME.size > reader.left:
        raise bad(f"{count} frames do not fit in the block")
    entries = reader.raw(count * FRAME.size, "frame-table", f"{what}'s {count} frames")
    frames: list[Frame] = []
    for n, values in enumerate(FRAME.iter_unpack(entries)):
        frame = Frame(*(int(v) for v in values))
        if frame.size_u <= 0 or frame.size_c <= 0:
            raise bad(f"frame {n} has zero or negative size (SizeU={frame.size_u}, SizeC={frame.size_c})")
        if frames and frame.start_u < frames[-1].end_u:
            raise bad(f"frame {n} starts at uncompressed {frame.start_u}, before the previous frame ends "
                      f"({frames[-1].end_u})")
        if frames and frame.start_c < frames[-1].end_c:
            raise bad(f"frame {n} starts at compressed {frame.start_c}, before the previous frame ends "
                      f"({frames[-1].end_c})")
        frames.append(frame)
    return codec, tuple(frames)


def _v5_mappings(header: Header, reader: _Reader) -> Mappings:
    """serialization_v5.go ``readV5MappingSection``: the columns in 4 KiB pages, every check it makes; gaps
    and the tail up to ceil(Size / 4096) pages become nil mappings, no mappings at all one nil mapping."""
    where = reader.where
    pages = -(-header.size // PAGE_SIZE)
    if pages > MAX_PAGE:
        raise reject(where, "page-range", f"size {header.size}: {pages} pages, past 2^32-1")
    m = reader.u32("v5-build-table", "the build-id table's count")
    if m > MAX_BUILDS or m > reader.left // 16:
        raise reject(where, "v5-build-table", f"{m} build ids (at most {MAX_BUILDS}, {reader.left} bytes left)")
    ids = [bytes(reader.raw(16, "v5-build-table", "the build-id table")) for _ in range(m)]
    n = reader.u32("mapping-count", "the mapping count")
    if n > MAX_V5_ENTRIES:
        raise reject(where, "mapping-count", f"{n} mappings, over upstream's maximum {MAX_V5_ENTRIES}")
    if n == 0:
        return Mappings(MAP.pack(0, pages * PAGE_SIZE, _NIL_RAW, 0) if header.size else b"")
    if n > min(reader.left // 4, MAX_V5_BY_MEMORY):
        raise reject(where, "mapping-count", f"{n} mappings in the {reader.left} bytes left (4 bytes each at least)")
    offsets, lengths, storage = (array.array("I") for _ in range(3))  # uint32 pages, as upstream's columns
    index = array.array("H")
    position = 0
    for i in range(n):
        delta = reader.uvarint(f"offset delta {i}")
        position += delta
        if delta > MAX_PAGE or position > MAX_PAGE:
            raise reject(where, "page-range", f"mapping {i}: offset page past 2^32-1")
        offsets.append(position)
    for i in range(n):
        length = reader.uvarint(f"length {i}")
        if length > MAX_PAGE:
            raise reject(where, "page-range", f"mapping {i}: length of {length} pages, past 2^32-1")
        lengths.append(length)
    position = 0
    for i in range(n):
        position += reader.varint(f"storage delta {i}")
        if not 0 <= position <= MAX_PAGE:
            raise reject(where, "page-range", f"mapping {i}: storage page {position} out of range")
        storage.append(position)
    for i in range(n):
        build = reader.uvarint(f"build index {i}")
        if build >= m:
            raise reject(where, "build-index", f"mapping {i}: build index {build} out of range ({m} builds)")
        index.append(build)
    return _v5_assembled(where, pages, ids, offsets, lengths, storage, index)


def _v5_assembled(where: str, pages: int, ids: list[bytes], offsets: array.array[int], lengths: array.array[int],
                  storage: array.array[int], index: array.array[int]) -> Mappings:
    out = bytearray()
    current, limit = 0, max_mappings() * MAPPING_SIZE
    for i in range(len(offsets)):
        off, length = offsets[i], lengths[i]
        if length == 0:
            raise reject(where, "zero-length", f"mapping {i}: zero length")
        if off < current:
            raise reject(where, "contiguity", f"mapping {i} starts at page {off}, before the previous end {current}")
        if off > current:
            out += MAP.pack(current * PAGE_SIZE, (off - current) * PAGE_SIZE, _NIL_RAW, 0)
        if off + length > pages:
            raise reject(where, "coverage", f"mapping {i} ends at page {off + length}, past the size ({pages} pages)")
        out += MAP.pack(off * PAGE_SIZE, length * PAGE_SIZE, ids[index[i]], storage[i] * PAGE_SIZE)
        current = off + length
        if len(out) > limit:
            raise _bounded(where, f"more than {max_mappings()} mappings with the gaps filled")
    if current < pages:
        out += MAP.pack(current * PAGE_SIZE, (pages - current) * PAGE_SIZE, _NIL_RAW, 0)
    return Mappings(out)


__all__ = ["MAX_BLOCK_BYTES", "MAX_FRAMES", "NIL_BUILD", "max_mappings", "parent_build_ids", "parse_header",
           "read_header"]
