"""E2B's ``memfile.header`` / ``rootfs.ext4.header``: parse and check (pure, no I/O but reading the file).

Layout (e2b-dev/infra ``packages/shared/pkg/storage/header``), all little-endian:

* 64-byte metadata: u64 version, u64 block size, u64 size, u64 generation,
  16-byte build id, 16-byte base build id. ``version & 0xFFFF`` selects the layout.
* versions 1-3: 40-byte mappings to the end of the file (u64 offset, u64 length,
  16-byte build id, u64 storage offset).
* versions 4 and 5: ``[metadata][u8 flags][u32 block length][LZ4 frame]``; the
  block holds a builds table and the mappings (v4: counted 40-byte records; v5:
  columnar varints in 4 KiB pages, nil-build gaps left out). Decoding needs the
  ``lz4`` package; without it the metadata is still read and the mappings are
  reported as not decoded.
* the builds table (``serialization_v4.go`` ``readV4BuildsSection``): u32 count, then per build
  ``{16-byte id, i64 uncompressed file size, SHA-256 of the uncompressed file}`` followed by its
  frame table (``compress_frame_table.go`` ``DeserializeFrameTable``): u32 codec (0 none, 1 zstd,
  2 lz4), u32 frame count, then per frame ``{i64 StartU, i64 StartC, i32 SizeU, i32 SizeC}``.

Bounds: a file is read only up to :data:`limits.HEADER` (and, for v1-3, the 40 bytes per 4 KiB
page of the size it describes: more mappings cannot cover the device without overlap); a v4/v5
block is decompressed only up to the length its prefix states (at most upstream's 256 MiB cap).
Mappings are kept packed (:class:`Mappings`, 40 bytes each, as in the v1-3 file), never as one
Python object per mapping.
"""

from __future__ import annotations

import array
import bisect
import enum
import struct
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, overload

from . import layout, limits
from .errors import ArtifactError, ExitCode
from .fsutil import open_input

METADATA_SIZE = 64
MAPPING_SIZE = 40
NIL_BUILD = str(uuid.UUID(int=0))
PAGE_SIZE = 4096
KNOWN_BLOCK_SIZES = (4096, 2 << 20)
MAX_BLOCK_BYTES = 256 << 20  # upstream's cap on a v4/v5 uncompressed block
_META = struct.Struct("<QQQQ16s16s")
_MAP = struct.Struct("<QQ16sQ")
_BUILD_INFO = struct.Struct("<16sq32s")
_FRAME_TABLE_HEAD = struct.Struct("<II")  # codec, frame count
_FRAME = struct.Struct("<qqii")  # StartU, StartC, SizeU, SizeC (upstream's frameEntry, 24 bytes)
MAX_FRAMES = 1 << 20  # upstream's maxDeserializedFrames
INFLATE_STEP = 1 << 20
MAX_PROBLEMS = 20  # layout problems listed per header; the rest are counted


@dataclass(frozen=True)
class Mapping:
    """Device bytes [offset, offset+length) live in build ``build_id``'s data file at ``storage_offset``."""

    offset: int
    length: int
    build_id: str
    storage_offset: int

    @property
    def end(self) -> int:
        return self.offset + self.length


class Mappings(Sequence[Mapping]):
    """Mappings packed as the v1-3 file stores them: 40-byte records, decoded one at a time when read."""

    __slots__ = ("_records",)

    def __init__(self, records: bytes | bytearray | memoryview = b"") -> None:
        view = memoryview(records).cast("B")
        if len(view) % MAPPING_SIZE:
            raise ValueError(f"{len(view)} bytes is not a whole number of {MAPPING_SIZE}-byte mappings")
        self._records = view

    @classmethod
    def of(cls, mappings: Iterable[Mapping]) -> Mappings:
        if isinstance(mappings, Mappings):
            return mappings
        ids: dict[str, bytes] = {}
        return cls(b"".join(_MAP.pack(m.offset, m.length, ids.get(m.build_id) or ids.setdefault(
            m.build_id, uuid.UUID(m.build_id).bytes), m.storage_offset) for m in mappings))

    @property
    def records(self) -> memoryview:
        return self._records

    def __len__(self) -> int:
        return len(self._records) // MAPPING_SIZE

    @overload
    def __getitem__(self, index: int) -> Mapping: ...

    @overload
    def __getitem__(self, index: slice) -> list[Mapping]: ...

    def __getitem__(self, index: int | slice) -> Mapping | list[Mapping]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        n = len(self)
        position = index + n if index < 0 else index
        if not 0 <= position < n:
            raise IndexError("mapping index out of range")
        return _mapping(self._records, position * MAPPING_SIZE)

    def __iter__(self) -> Iterator[Mapping]:
        ids: dict[bytes, str] = {}
        for offset, length, raw_id, storage in _MAP.iter_unpack(self._records):
            yield Mapping(offset, length, ids.get(raw_id) or ids.setdefault(raw_id, _uuid(raw_id)), storage)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Mappings):
            return self._records == other._records
        if isinstance(other, Sequence):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Mappings({len(self)} mappings)"


class FrameTableError(ValueError):
    """A frame table upstream's ``DeserializeFrameTable`` refuses (the whole header is then refused)."""


class Codec(enum.IntEnum):
    """How a build's data object is stored (upstream's ``storage.CompressionType``)."""

    NONE = 0
    ZSTD = 1
    LZ4 = 2

    @property
    def suffix(self) -> str:
        """The object name suffix upstream's ``CompressionType.Suffix`` gives (``""`` when not compressed)."""
        return {Codec.ZSTD: layout.ZSTD_SUFFIX, Codec.LZ4: layout.LZ4_SUFFIX}.get(self, "")


@dataclass(frozen=True)
class Frame:
    """One independently compressed frame: uncompressed bytes [start_u, start_u+size_u) of the build's data
    are stored compressed at [start_c, start_c+size_c) of its compressed object (upstream's ``frameEntry``)."""

    start_u: int
    start_c: int
    size_u: int
    size_c: int

    @property
    def end_u(self) -> int:
        return self.start_u + self.size_u

    @property
    def end_c(self) -> int:
        return self.start_c + self.size_c


@dataclass(frozen=True)
class BuildFile:
    """A v4/v5 header's record of one build's data object: its uncompressed size, the SHA-256 of its
    uncompressed bytes, and how it is stored (``codec``; ``frames`` only when compressed, sorted, possibly
    sparse: upstream trims a table to the frames the header's mappings use)."""

    size: int
    sha256: str
    codec: Codec = Codec.NONE
    frames: tuple[Frame, ...] = ()

    @property
    def compressed(self) -> bool:
        return self.codec != Codec.NONE

    def frame_at(self, offset: int) -> int | None:
        """Index of the frame holding uncompressed byte ``offset`` (None: before, after or in a gap)."""
        i = bisect.bisect_right(self.frames, offset, key=lambda f: f.start_u) - 1
        return i if i >= 0 and offset < self.frames[i].end_u else None


@dataclass
class Header:
    version: int  # the layout number (raw ``Version & 0xFFFF``)
    block_size: int
    size: int
    generation: int
    build_id: str
    base_build_id: str
    mappings: Sequence[Mapping] | None  # None: a v4/v5 block this tool could not decode (see ``note``)
    raw_version: int = 0
    builds: dict[str, BuildFile] = field(default_factory=dict)
    incomplete: bool = False  # v4/v5 flag bit 0: upload still pending
    note: str = ""

    def referenced_build_ids(self) -> list[str]:
        """Distinct non-nil build ids the mappings point at, in first-use order."""
        seen: dict[str, None] = {}
        for m in self.mappings or []:
            if m.build_id != NIL_BUILD:
                seen.setdefault(m.build_id)
        for build_id in self.builds:  # v4/v5 list them even when the mappings were not decoded
            if build_id != NIL_BUILD:
                seen.setdefault(build_id)
        return list(seen)

    def required_lengths(self) -> dict[str, int]:
        """Per referenced build: the data object must be at least this long."""
        need: dict[str, int] = {}
        for m in self.mappings or []:
            if m.build_id != NIL_BUILD:
                need[m.build_id] = max(need.get(m.build_id, 0), m.storage_offset + m.length)
        return need

    def problems(self) -> list[str]:
        """Layout errors: block size, mappings that overlap, leave gaps or run past ``size``."""
        found: list[str] = []
        if self.block_size not in KNOWN_BLOCK_SIZES:
            found.append(f"block size {self.block_size} is neither 4096 nor 2 MiB (upstream accepts only these)")
        if self.mappings is None:
            return found
        position, more = 0, 0
        for i, m in enumerate(self.mappings):
            where = f"mapping {i} [{m.offset:#x}, {m.end:#x})"
            wrong = []
            if m.length == 0:
                wrong.append(f"{where}: zero length")
            if m.offset < position:
                wrong.append(f"{where} overlaps the previous mapping (which ends at {position:#x})")
            elif m.offset > position:
                wrong.append(f"gap [{position:#x}, {m.offset:#x}) before {where}: not covered by any mapping")
            if m.offset % PAGE_SIZE or m.storage_offset % PAGE_SIZE:
                wrong.append(f"{where}: offset or storage offset {m.storage_offset:#x} not 4 KiB aligned")
            room = max(0, MAX_PROBLEMS - len(found))
            found.extend(wrong[:room])
            more += len(wrong) - len(wrong[:room])
            position = max(position, m.end)
        if more:
            found.append(f"... and {more} more problems in the mappings")
        if position < self.size:
            found.append(f"mappings end at {position:#x}, short of the size {self.size:#x}")
        elif position > -(-self.size // PAGE_SIZE) * PAGE_SIZE:  # HEAD rounds the last length up to 4 KiB
            found.append(f"mappings run to {position:#x}, past the size {self.size:#x}")
        return found


def _uuid(raw: bytes) -> str:
    return str(uuid.UUID(bytes=raw))


def read_header(path: Path) -> Header:
    """Read and parse a header file: only a regular file, and no more bytes than its format allows."""
    fh, file_size = open_input(path, "header", missing_hint="check the build directory (e2b-artifact verify)")
    where = str(path)
    with fh:
        cap = limits.HEADER.bytes()
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


def _bound(meta: bytes, cap: int, where: str, total: int) -> int:
    """The most bytes a header starting with ``meta`` may have; raises when ``total`` is over it."""
    if len(meta) < METADATA_SIZE:
        raise _bad(where, f"{len(meta)} bytes, shorter than the {METADATA_SIZE}-byte metadata")
    raw_version, _block, size, *_ = _META.unpack_from(meta)
    bound = cap
    if raw_version & 0xFFFF in (1, 2, 3):
        pages = -(-size // PAGE_SIZE)
        bound = min(cap, METADATA_SIZE + MAPPING_SIZE * max(pages, 1))
        if total > bound and total <= cap:
            raise _bad(where, f"{(total - METADATA_SIZE) // MAPPING_SIZE} mappings: more than the {max(pages, 1)} "
                              f"4 KiB pages of its {size}-byte device can hold without overlapping")
    if total > cap:
        raise limits.HEADER.exceeded("header", where, total)
    return bound


def _parse(meta: bytes, body: memoryview, where: str) -> Header:
    raw_version, block_size, size, generation, build_id, base_build_id = _META.unpack_from(meta)
    layout = raw_version & 0xFFFF
    header = Header(layout, block_size, size, generation, _uuid(build_id), _uuid(base_build_id), None,
                    raw_version=raw_version)
    if layout in (1, 2, 3):
        if len(body) % MAPPING_SIZE:
            raise _bad(where, f"{len(body)} bytes of mappings is not a multiple of {MAPPING_SIZE} (truncated?)")
        header.mappings = Mappings(body)
    elif layout in (4, 5):
        _parse_compressed(header, body, where)
    else:
        raise _bad(where, f"unknown header version {layout} (known: 1 to 5)")
    if header.mappings is not None and len(header.mappings) == 0:  # upstream: no mappings = the whole device
        header.mappings = Mappings.of([Mapping(0, size, header.build_id, 0)])
    return header


def parent_build_ids(data: bytes, build_id: str, where: str = "header") -> list[str]:
    """Build ids other than ``build_id`` (and nil) whose data the header in ``data`` maps blocks to, in
    first-use order: the parents a build ``build_id`` with this header needs beside it."""
    return [i for i in parse_header(data, where).referenced_build_ids() if i != build_id]


def _mapping(buf: bytes | memoryview, offset: int) -> Mapping:
    dev_offset, length, build_id, storage_offset = _MAP.unpack_from(buf, offset)
    return Mapping(dev_offset, length, _uuid(build_id), storage_offset)


def _parse_compressed(header: Header, body: memoryview, where: str) -> None:
    """v4/v5: ``[u8 flags][u32 length][LZ4 frame]``; early v4 writers had no flags byte."""
    try:
        import lz4.frame  # type: ignore[import-untyped,import-not-found,unused-ignore]
    except ImportError:
        header.note = f"v{header.version} mappings not decoded: install the lz4 package (pip install lz4)"
        return
    errors: list[str] = []
    for prefix in (5, 4):  # with the flags byte, then without
        if len(body) < prefix:
            continue
        (length,) = struct.unpack_from("<I", body, prefix - 4)
        if length > MAX_BLOCK_BYTES:
            errors.append(f"block length {length} over the 256 MiB cap")
            continue
        try:
            block = _inflate(lz4.frame.LZ4FrameDecompressor(), body[prefix:], length)
        except RuntimeError as exc:
            errors.append(f"LZ4: {exc}")
            continue
        if len(block) != length:
            got = f"more than {length}" if len(block) > length else f"{len(block)}"
            errors.append(f"block is {got} bytes, prefix says {length}")
            continue
        header.incomplete = prefix == 5 and bool(body[0] & 1)
        try:
            _parse_block(header, block)
            return
        except FrameTableError as exc:  # upstream's DeserializeFrameTable refuses the header
            raise _bad(where, str(exc)) from None
        except (struct.error, ValueError, OverflowError) as exc:
            header.builds.clear()
            # The LZ4 frame is intact (its checksum passed): an upstream layout variant this tool does not know.
            header.mappings = None
            header.note = (f"v{header.version} block decompressed but its layout is not one this tool knows "
                           f"({exc}): mappings not checked")
            return
    raise _bad(where, f"cannot decode the v{header.version} block: " + "; ".join(dict.fromkeys(errors)))


def _inflate(decompressor: Any, frame: memoryview, length: int) -> bytes:
    """At most ``length + 1`` bytes out of ``frame``, in 1 MiB steps: memory follows what the frame really holds,
    not what its prefix or its own header claims."""
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
    def __init__(self, data: bytes | memoryview) -> None:
        self.data, self.pos = data, 0

    def take(self, fmt: struct.Struct) -> tuple[object, ...]:
        values = fmt.unpack_from(self.data, self.pos)
        self.pos += fmt.size
        return values

    def u32(self) -> int:
        (value,) = struct.unpack_from("<I", self.data, self.pos)
        self.pos += 4
        return int(value)

    def raw(self, n: int) -> bytes | memoryview:
        if self.pos + n > len(self.data):
            raise ValueError("block ends early")
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def count(self, record_size: int) -> int:
        """A u32 record count, refused when the records could not fit in the rest of the block."""
        n = self.u32()
        if n * record_size > len(self.data) - self.pos:
            raise ValueError(f"{n} records of {record_size} bytes do not fit in the block")
        return n

    def uvarint(self) -> int:
        value, shift = 0, 0
        while True:
            if self.pos >= len(self.data) or shift > 63:
                raise ValueError("bad varint")
            byte = self.data[self.pos]
            self.pos += 1
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                return value
            shift += 7

    def varint(self) -> int:
        u = self.uvarint()
        return (u >> 1) ^ -(u & 1)


def _parse_block(header: Header, block: bytes) -> None:
    reader = _Reader(block)
    for _ in range(reader.count(_BUILD_INFO.size + _FRAME_TABLE_HEAD.size)):
        build_id, size, digest = reader.take(_BUILD_INFO)
        assert isinstance(build_id, bytes) and isinstance(size, int) and isinstance(digest, bytes)
        codec, frames = _frame_table(reader, _uuid(build_id))
        header.builds[_uuid(build_id)] = BuildFile(size, digest.hex(), codec, frames)
    if header.version == 4:
        count = reader.count(MAPPING_SIZE)
        header.mappings = Mappings(reader.raw(count * MAPPING_SIZE))
    else:
        header.mappings = _v5_mappings(reader)
        header.mappings = with_gaps_as_nil(header)
    if reader.pos != len(block):
        raise ValueError(f"{len(block) - reader.pos} unexpected bytes after the mappings")


def _frame_table(reader: _Reader, build_id: str) -> tuple[Codec, tuple[Frame, ...]]:
    """One build's frame table, refused where upstream's ``DeserializeFrameTable`` (compress_frame_table.go)
    refuses it: frames under codec 0, more than 2^20 frames, a frame of size <= 0, frames out of order or
    overlapping in either address space. Codec 0 or no frames: stored uncompressed."""
    raw_codec, count = reader.u32(), reader.u32()
    where = f"frame table of build {build_id}"
    if raw_codec == 0 and count:
        raise FrameTableError(f"{where}: codec 0 (none) with {count} frames")
    if raw_codec == 0 or count == 0:
        return Codec.NONE, ()
    if count > MAX_FRAMES:
        raise FrameTableError(f"{where}: {count} frames, over upstream's maximum {MAX_FRAMES}")
    try:
        codec = Codec(raw_codec)
    except ValueError:
        # Upstream keeps the low byte and fails every read of the object later ("unsupported compression type").
        raise FrameTableError(f"{where}: unknown codec {raw_codec} (known: 1 zstd, 2 lz4)") from None
    if count * _FRAME.size > len(reader.data) - reader.pos:
        raise FrameTableError(f"{where}: {count} frames do not fit in the block")
    frames: list[Frame] = []
    for n in range(count):
        start_u, start_c, size_u, size_c = (int(v) for v in _FRAME.unpack_from(reader.data, reader.pos))
        reader.pos += _FRAME.size
        frame = Frame(start_u, start_c, size_u, size_c)
        if frame.size_u <= 0 or frame.size_c <= 0:
            raise FrameTableError(f"{where}: frame {n} has zero or negative size (SizeU={frame.size_u}, "
                             f"SizeC={frame.size_c})")
        if frames and frame.start_u < frames[-1].end_u:
            raise FrameTableError(f"{where}: frame {n} starts at uncompressed {frame.start_u}, before the previous "
                             f"frame ends ({frames[-1].end_u})")
        if frames and frame.start_c < frames[-1].end_c:
            raise FrameTableError(f"{where}: frame {n} starts at compressed {frame.start_c}, before the previous "
                             f"frame ends ({frames[-1].end_c})")
        frames.append(frame)
    return codec, tuple(frames)


def _v5_mappings(reader: _Reader) -> Mappings:
    builds = [bytes(reader.raw(16)) for _ in range(reader.count(16))]
    count = reader.count(4)  # each mapping takes at least four varint bytes
    if count > max_mappings():
        raise ValueError(f"{count} mappings, over the {max_mappings()} a header may hold")
    offsets = _column(count, reader.uvarint, cumulative=True)
    lengths = _column(count, reader.uvarint, cumulative=False)
    storage = _column(count, reader.varint, cumulative=True)
    out = bytearray(count * MAPPING_SIZE)
    for n in range(count):
        index = reader.uvarint()
        if index >= len(builds):
            raise ValueError("build index out of range")
        _MAP.pack_into(out, n * MAPPING_SIZE, offsets[n], lengths[n], builds[index], storage[n])
    return Mappings(out)


def _column(count: int, read: Callable[[], int], *, cumulative: bool) -> array.array[int]:
    """One v5 column in bytes (the file counts 4 KiB pages); offsets and storage are deltas."""
    column = array.array("Q", bytes(8 * count))
    position = 0
    for n in range(count):
        position = position + read() if cumulative else read()
        if not 0 <= position < 1 << 52:  # pages: times 4 KiB must stay a u64
            raise ValueError("a mapping runs outside the 64-bit range")
        column[n] = position * PAGE_SIZE
    return column


def max_mappings() -> int:
    """The most mappings a header may hold: as many as a v1-3 file at the header size limit."""
    return limits.HEADER.bytes() // MAPPING_SIZE


def with_gaps_as_nil(header: Header) -> Mappings:
    """v5 leaves nil-build gaps out; fill them back so coverage can be checked like v1-4."""
    filled = bytearray()
    position = 0
    nil = uuid.UUID(NIL_BUILD).bytes
    for offset, length, build_id, storage in _MAP.iter_unpack(Mappings.of(header.mappings or []).records):
        if offset > position:
            filled += _MAP.pack(position, offset - position, nil, 0)
        filled += _MAP.pack(offset, length, build_id, storage)
        position = max(position, offset + length)
        if len(filled) > max_mappings() * MAPPING_SIZE:
            raise ValueError(f"more than {max_mappings()} mappings with the gaps filled")
    if position < header.size:
        filled += _MAP.pack(position, header.size - position, nil, 0)
    return Mappings(filled)


def _bad(where: str, detail: str) -> ArtifactError:
    return ArtifactError(f"{where}: malformed header: {detail}",
                         hint="the header is optional: move it aside and the orchestrator maps the data file "
                              "1:1, or re-export the build", code=ExitCode.BAD_INPUT)


def serialize(header: Header) -> bytes:
    """Bytes of a v1-3 or v4 header (the layouts this tool writes); v5 raises."""
    if header.version not in (1, 2, 3, 4) or header.mappings is None:
        raise ArtifactError(f"cannot write a version {header.version} header (only 1 to 4)",
                            hint="re-export the build with v3 or v4 headers", code=ExitCode.BAD_INPUT)
    out = _META.pack(header.raw_version or header.version, header.block_size, header.size, header.generation,
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

    mappings = Mappings.of(header.mappings or [])
    used: dict[str, list[tuple[int, int]]] = {}
    for m in mappings:
        used.setdefault(m.build_id, []).append((m.storage_offset, m.storage_offset + m.length))
    parts = [struct.pack("<I", len(header.builds))]
    for build_id in sorted(header.builds, key=lambda b: uuid.UUID(b).bytes):
        build = header.builds[build_id]
        parts.append(_BUILD_INFO.pack(uuid.UUID(build_id).bytes, build.size, bytes.fromhex(build.sha256)))
        frames = trim_frames(build.frames, used.get(build_id, [])) if build.compressed else ()
        parts.append(_FRAME_TABLE_HEAD.pack(int(build.codec) if frames else 0, len(frames)))
        parts.extend(_FRAME.pack(f.start_u, f.start_c, f.size_u, f.size_c) for f in frames)
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
