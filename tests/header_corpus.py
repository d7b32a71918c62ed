"""The header corpus: E2B header files packed byte by byte from upstream's format, each with the verdict
upstream's own code gives it. It is the oracle tests/test_header_corpus.py holds header.py and verify to.

Nothing here imports ``e2b_artifacts``: the bytes are packed with ``struct`` from the layout below (the
LZ4 frame of a v4/v5 block through the ``lz4`` package, data frames through ``lz4`` and ``zstandard``, as
upstream uses pierrec/lz4 and klauspost/zstd), so a misreading in header.py is not made twice.

Format and verdicts are read from e2b-dev/infra ``packages/shared/pkg/storage/`` at HEAD 54693ff35
(2026-08-21; e2b-dev/runtime 9c53269 carries the same code, sometimes a refactor newer), the files named
per case:

* ``header/serialization.go`` ``DeserializeBytes``: fewer than 64 bytes, or ``Version & 0xFFFF`` outside
  1-5, are refused; 1-3 go to ``deserializeV3``, 4 to ``deserializeV4``, 5 to ``deserializeV5``.
  ``LoadHeader`` then runs ``backfillMissingV3UncompressedBuilds`` (see the chains below).
* metadata, 64 bytes LE: u64 Version, u64 BlockSize, u64 Size, u64 Generation, 16-byte BuildId,
  16-byte BaseBuildId (``header/metadata.go``).
* v1-3 (``header/serialization_v3.go`` ``deserializeV3``): 40-byte records ``{u64 Offset, u64 Length,
  [16]BuildId, u64 BuildStorageOffset}`` read to EOF; a partial record is an error. Then ``NewHeader``.
* v4 (``header/serialization_v4.go`` ``deserializeV4``): ``[u8 flags][u32 uncompressed length][LZ4
  frame]``; fewer than 5 bytes, a length over the 256 MiB cap, an LZ4 error or a decompressed length other
  than the prefix are refused. The block: ``readV4BuildsSection`` (u32 count, refused when count > remaining
  / 64; per build ``{[16]id, i64 size, [32]sha256}`` then a frame table, ``compress_frame_table.go``
  ``DeserializeFrameTable``: u32 codec, u32 n, n x ``{i64 StartU, i64 StartC, i32 SizeU, i32 SizeC}``),
  then u32 mapping count (refused when > remaining / 40) and the 40-byte records. Bytes after the last
  record are never looked at. Then ``NewHeader``.
* v5 (``header/serialization_v5.go`` ``deserializeV5``, ``readV5MappingSection``): v4's framing and builds
  section; then u32 M (refused over 65535 or over remaining / 16), M build ids, u32 N (refused over 8 Mi
  or over remaining / 4), then four columns of N varints in 4 KiB pages: uvarint offset deltas, uvarint
  lengths, zigzag varint storage deltas, uvarint build-table indexes. Refused: a varint Go's
  ``binary.ReadUvarint``/``ReadVarint`` refuses (truncated, or past 64 bits), a page index past 2^32-1 or a
  negative storage page, an index >= M, a zero length, an entry starting before the previous one ends, an
  entry ending past ceil(Size / 4096) pages. Gaps, and the tail up to ceil(Size / 4096) pages, are filled
  with nil (zero) mappings; N = 0 is one nil mapping over the whole device. No ``NewHeader``; BlockSize 0 is
  refused first. Bytes after the columns are never looked at.
* ``header/header.go`` ``NewHeader``: BlockSize 0 is refused; no mappings means one mapping of the header's
  own build over ``Size`` rounded up to 4096 (``PageSize``); then ``header/compact.go`` ``NewMapping``
  (PageSize) refuses an Offset, Length or BuildStorageOffset that is not a multiple of 4096, a page index past
  2^32-1, more than 65535 distinct builds. It accepts gaps, overlaps and zero lengths.
* ``header/compact.go`` ``Mapping.Validate(Size, BlockSize)`` (and ``header/mapping.go``
  ``ValidateMappings``, which it falls back to when 4096 is not a multiple of BlockSize): entries contiguous
  from 0, none running past Size, together exactly Size; with the fallback each Length a multiple of
  BlockSize. ``diff.go`` ``ToDiffHeader`` runs it on every header upstream writes; a header that loads but
  fails it is one upstream would never have written, and its v3+ lookups fail where it is wrong
  (``header.go`` ``getMapping``).

Verdicts: ``REJECT`` (LoadHeader returns the error: no sandbox of the build starts), ``INVALID`` (it loads;
Mapping.Validate refuses it), ``ACCEPT``. Where this tool keeps a deliberate difference the case says what
it does instead (``here``); docs/verify.md lists each one and why.
"""

from __future__ import annotations

import enum
import hashlib
import struct
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import lz4.frame
import zstandard

PAGE = 4096
MIB = 1 << 20
NIL = str(uuid.UUID(int=0))
A, B, C = (str(uuid.UUID(int=0xA000 + n)) for n in (1, 2, 3))
V4_CAP = 256 * MIB  # serialization_v4.go v4MaxUncompressedHeaderSize


class Verdict(enum.Enum):
    REJECT = "LoadHeader refuses it"
    INVALID = "loads; Mapping.Validate refuses it"
    ACCEPT = "accepted"


class Here(enum.Enum):
    """What header.py/verify do: ``REJECT`` parse raises, ``FAIL``/``WARN`` a problem of that level, ``OK``."""

    REJECT = "reject"
    FAIL = "FAIL"
    WARN = "warn"
    OK = "ok"


DEFAULT_HERE = {Verdict.REJECT: Here.REJECT, Verdict.INVALID: Here.FAIL, Verdict.ACCEPT: Here.OK}

MapTuple = tuple[int, int, str, int]  # offset, length, build id, storage offset (bytes)


@dataclass(frozen=True)
class Case:
    name: str
    data: bytes
    upstream: Verdict
    rule: str  # the rule id header.py names (header.rules)
    cite: str  # upstream file and function that decide it
    why: str  # the reasoning from that code
    here: Here | None = None  # a deliberate difference; None: as upstream
    mappings: tuple[MapTuple, ...] | None = None  # accepted: the mappings upstream ends up with

    @property
    def expected(self) -> Here:
        return self.here or DEFAULT_HERE[self.upstream]


# ---------------------------------------------------------------- packing

def meta(version: int, size: int, *, block_size: int = PAGE, generation: int = 0, build_id: str = A,
         base_build_id: str | None = None) -> bytes:
    return struct.pack("<QQQQ16s16s", version, block_size, size, generation, uuid.UUID(build_id).bytes,
                       uuid.UUID(base_build_id or build_id).bytes)


def records(mappings: Sequence[MapTuple]) -> bytes:
    return b"".join(struct.pack("<QQ16sQ", o, n, uuid.UUID(b).bytes, s) for o, n, b, s in mappings)


@dataclass(frozen=True)
class FrameEntry:
    start_u: int
    start_c: int
    size_u: int
    size_c: int


@dataclass(frozen=True)
class BuildEntry:
    """One builds-section entry: size and SHA-256 of the uncompressed object, codec (0 none, 1 zstd, 2 lz4)."""

    build_id: str
    size: int
    sha256: bytes = bytes(32)
    codec: int = 0
    frames: tuple[FrameEntry, ...] = ()


def builds_section(entries: Sequence[BuildEntry], *, count: int | None = None) -> bytes:
    out = struct.pack("<I", len(entries) if count is None else count)
    for e in sorted(entries, key=lambda e: uuid.UUID(e.build_id).bytes):  # writeV4BuildsSection's order
        out += struct.pack("<16sq32s", uuid.UUID(e.build_id).bytes, e.size, e.sha256)
        out += struct.pack("<II", e.codec, len(e.frames))
        out += b"".join(struct.pack("<qqii", f.start_u, f.start_c, f.size_u, f.size_c) for f in e.frames)
    return out


def v4_mappings(mappings: Sequence[MapTuple], *, count: int | None = None) -> bytes:
    return struct.pack("<I", len(mappings) if count is None else count) + records(mappings)


def uvarint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    return bytes(out + bytes([n]))


def varint(n: int) -> bytes:
    return uvarint((n << 1) ^ (n >> 63) if n >= 0 else ((-n) << 1) - 1)  # Go's zigzag PutVarint


def v5_mappings(mappings: Sequence[MapTuple], *, table: Sequence[str] | None = None) -> bytes:
    """writeV5MappingSection: nil-build entries are left out; columns in pages."""
    kept = [m for m in mappings if m[2] != NIL]
    ids = list(table) if table is not None else list(dict.fromkeys(m[2] for m in kept))
    out = struct.pack("<I", len(ids)) + b"".join(uuid.UUID(i).bytes for i in ids) + struct.pack("<I", len(kept))
    prev = 0
    for o, _, _, _ in kept:
        out += uvarint(o // PAGE - prev)
        prev = o // PAGE
    out += b"".join(uvarint(n // PAGE) for _, n, _, _ in kept)
    prev = 0
    for _, _, _, s in kept:
        out += varint(s // PAGE - prev)
        prev = s // PAGE
    return out + b"".join(uvarint(ids.index(b)) for _, _, b, _ in kept)


def lz4_block_frame(block: bytes) -> bytes:
    """The LZ4 frame compressLZ4 writes: 4 MiB blocks, block and content checksums."""
    return bytes(lz4.frame.compress(block, block_size=lz4.frame.BLOCKSIZE_MAX4MB, block_checksum=True,
                                    content_checksum=True, store_size=False))


def framed(version: int, size: int, block: bytes, *, flags: int | None = 0, length: int | None = None,
           frame: bytes | None = None, **kw: Any) -> bytes:
    """``[metadata][u8 flags][u32 length][LZ4 frame]``; ``flags=None`` leaves the byte out (an early v4)."""
    prefix = b"" if flags is None else bytes([flags])
    prefix += struct.pack("<I", len(block) if length is None else length)
    return meta(version, size, **kw) + prefix + (lz4_block_frame(block) if frame is None else frame)


def v4(size: int, mappings: Sequence[MapTuple], builds: Sequence[BuildEntry] = (), *, tail: bytes = b"",
       **kw: Any) -> bytes:
    return framed(4, size, builds_section(builds) + v4_mappings(mappings) + tail, **kw)


def v5(size: int, mappings: Sequence[MapTuple], builds: Sequence[BuildEntry] = (), *, tail: bytes = b"",
       **kw: Any) -> bytes:
    return framed(5, size, builds_section(builds) + v5_mappings(mappings) + tail, **kw)


def v3(size: int, mappings: Sequence[MapTuple], *, version: int = 3, **kw: Any) -> bytes:
    return meta(version, size, **kw) + records(mappings)


def v5_columns(m_ids: Sequence[str], n: int, columns: bytes, *, size: int = 8 * PAGE) -> bytes:
    """A v5 header whose mapping section is written column by column (for the varint cases)."""
    block = builds_section([]) + struct.pack("<I", len(m_ids)) + b"".join(uuid.UUID(i).bytes for i in m_ids)
    return framed(5, size, block + struct.pack("<I", n) + columns)


# ---------------------------------------------------------------- the cases

S = 8 * PAGE  # a 32 KiB device
WHOLE: tuple[MapTuple, ...] = ((0, S, A, 0),)
TWO: tuple[MapTuple, ...] = ((0, 2 * PAGE, B, 0), (2 * PAGE, 6 * PAGE, A, 2 * PAGE))
V3_DEC, V4_DEC, V5_DEC = ("serialization_v3.go deserializeV3", "serialization_v4.go deserializeV4",
                          "serialization_v5.go readV5MappingSection")
NEW_MAPPING = "header.go NewHeader -> compact.go NewMapping"
VALIDATE = "compact.go Mapping.Validate"
VALIDATE_SLICE = "compact.go Mapping.Validate -> mapping.go ValidateMappings"
BUILDS = "serialization_v4.go readV4BuildsSection"
FRAMES = "compress_frame_table.go DeserializeFrameTable"


def _accepted() -> list[Case]:
    a_entry = BuildEntry(A, S)
    return [
        *(Case(f"v{v}-whole-device", v3(S, WHOLE, version=v), Verdict.ACCEPT, "version", "serialization.go "
               "DeserializeBytes", "layouts 1-3 share deserializeV3", mappings=WHOLE) for v in (1, 2, 3)),
        Case("v3-version-high-bits", v3(S, WHOLE, version=0x0007_0003), Verdict.ACCEPT, "version",
             "serialization.go metadataFormatVersion", "only Version & 0xFFFF selects the layout", mappings=WHOLE),
        Case("v3-two-builds", v3(S, TWO, generation=1, build_id=B, base_build_id=A), Verdict.ACCEPT, "contiguity",
             VALIDATE, "contiguous from 0, exactly Size", mappings=TWO),
        Case("v3-nil-gap-mapping", v3(S, ((0, 4 * PAGE, A, 0), (4 * PAGE, 4 * PAGE, NIL, 0))), Verdict.ACCEPT,
             "contiguity", VALIDATE, "a nil mapping is a mapping: the device stays covered",
             mappings=((0, 4 * PAGE, A, 0), (4 * PAGE, 4 * PAGE, NIL, 0))),
        Case("v3-implicit-mapping", v3(S, ()), Verdict.ACCEPT, "implicit-mapping", "header.go NewHeader",
             "no mappings: one mapping of the header's own build over Size", mappings=WHOLE),
        Case("v3-hugepages", v3(4 * MIB, ((0, 2 * MIB, A, 0), (2 * MIB, 2 * MIB, B, 0)), block_size=2 * MIB),
             Verdict.ACCEPT, "block-multiple", VALIDATE_SLICE, "2 MiB lengths over a 2 MiB block size",
             mappings=((0, 2 * MIB, A, 0), (2 * MIB, 2 * MIB, B, 0))),
        Case("v4-plain", v4(S, TWO, [a_entry, BuildEntry(B, 2 * PAGE)], build_id=B), Verdict.ACCEPT, "flags-byte",
             V4_DEC, "flags byte, length prefix, LZ4 frame of builds + counted mappings", mappings=TWO),
        Case("v4-implicit-mapping", v4(S, (), [a_entry]), Verdict.ACCEPT, "implicit-mapping",
             "serialization_v4.go deserializeV4 -> header.go NewHeader", "zero mappings: NewHeader's implicit one",
             mappings=WHOLE),
        Case("v4-lz4-frames", v4(S, WHOLE, [BuildEntry(A, S, codec=2, frames=(
            FrameEntry(0, 0, 4 * PAGE, 100), FrameEntry(4 * PAGE, 100, 4 * PAGE, 90)))]), Verdict.ACCEPT,
             "frame-table", FRAMES, "sorted frames, positive sizes", mappings=WHOLE),
        Case("v4-unknown-flag-bits", v4(S, WHOLE, [a_entry], flags=0xFE), Verdict.ACCEPT, "flags-byte", V4_DEC,
             "only bit 0 (incomplete) is read", mappings=WHOLE),
        Case("v4-incomplete", v4(S, WHOLE, [BuildEntry(A, S)], flags=1), Verdict.ACCEPT, "incomplete",
             "serialization.go LoadHeader / StoreHeader", "loaded (without the backfill); only StoreHeader refuses "
             "one, and only on write", mappings=WHOLE),
        Case("v5-plain", v5(S, TWO, [BuildEntry(B, 2 * PAGE)], build_id=B), Verdict.ACCEPT, "v5-varint", V5_DEC,
             "columnar varints in pages", mappings=TWO),
        Case("v5-gaps-are-nil", v5(S, ((2 * PAGE, 2 * PAGE, A, 0),), [a_entry]), Verdict.ACCEPT, "coverage",
             V5_DEC, "gaps and the tail are filled with nil mappings",
             mappings=((0, 2 * PAGE, NIL, 0), (2 * PAGE, 2 * PAGE, A, 0), (4 * PAGE, 4 * PAGE, NIL, 0))),
        Case("v5-empty-is-zeros", v5(S, (), [a_entry]), Verdict.ACCEPT, "implicit-mapping", V5_DEC,
             "N = 0: one nil mapping over the device (v5 does not call NewHeader)", mappings=((0, S, NIL, 0),)),
        Case("v5-negative-storage-delta", v5(S, ((0, 4 * PAGE, A, 4 * PAGE), (4 * PAGE, 4 * PAGE, A, 0)), [a_entry]),
             Verdict.ACCEPT, "v5-varint", V5_DEC, "storage deltas are signed",
             mappings=((0, 4 * PAGE, A, 4 * PAGE), (4 * PAGE, 4 * PAGE, A, 0))),
    ]


def _load_rules() -> list[Case]:
    whole_v4 = builds_section([BuildEntry(A, S)]) + v4_mappings(WHOLE)
    return [
        Case("metadata-short", meta(3, S)[:40], Verdict.REJECT, "metadata", "serialization.go DeserializeBytes",
             "fewer than 64 bytes: 'header too short'"),
        *(Case(f"version-{v}", v3(S, WHOLE, version=v), Verdict.REJECT, "version", "serialization.go "
               "DeserializeBytes", "layout outside 1-5: 'unsupported header version'") for v in (0, 6, 0x10000)),
        Case("v3-block-size-zero", v3(S, WHOLE, block_size=0), Verdict.REJECT, "block-size-zero",
             "header.go NewHeader", "'block size cannot be zero'"),
        Case("v4-block-size-zero", v4(S, WHOLE, [BuildEntry(A, S)], block_size=0), Verdict.REJECT,
             "block-size-zero", "header.go NewHeader", "'block size cannot be zero'"),
        Case("v5-block-size-zero", v5(S, WHOLE, block_size=0), Verdict.REJECT, "block-size-zero",
             "serialization_v5.go deserializeV5", "'v5 header has zero block size'"),
        Case("v3-partial-record", v3(S, WHOLE)[:-3], Verdict.REJECT, "v3-records", V3_DEC,
             "binary.Read of a partial record: unexpected EOF"),
        Case("v3-offset-unaligned", v3(S, ((0, PAGE, A, 0), (PAGE + 512, 7 * PAGE - 512, A, PAGE))),
             Verdict.REJECT, "page-alignment", NEW_MAPPING, "'offset not block-aligned to 4096'"),
        Case("v3-length-unaligned", v3(S, ((0, 6000, A, 0), (6000, S - 6000, A, 8192))), Verdict.REJECT,
             "page-alignment", NEW_MAPPING, "'length not block-aligned to 4096'"),
        Case("v3-storage-unaligned", v3(S, ((0, S, A, 100),)), Verdict.REJECT, "page-alignment", NEW_MAPPING,
             "'build storage offset not block-aligned to 4096'"),
        Case("v4-storage-unaligned", v4(S, ((0, S, A, 512),), [BuildEntry(A, S)]), Verdict.REJECT,
             "page-alignment", NEW_MAPPING, "the same NewMapping after deserializeV4"),
        Case("v3-page-index-past-u32", v3(S, ((0, S, A, (1 << 32) * PAGE),)), Verdict.REJECT, "page-range",
             NEW_MAPPING, "storage page 2^32 does not fit the uint32 column"),
        Case("v3-too-many-builds", v3(65536 * PAGE, tuple((i * PAGE, PAGE, str(uuid.UUID(int=0x10000 + i)), 0)
                                                          for i in range(65536))), Verdict.REJECT, "unique-builds",
             NEW_MAPPING, "65536 distinct builds: 'more than 65535 unique build IDs'"),
        Case("v4-no-flags-byte", framed(4, S, whole_v4, flags=None), Verdict.REJECT, "flags-byte", V4_DEC,
             "byte 0 is read as the flags, bytes 1-4 as the length: the LZ4 frame then starts mid-magic"),
        Case("v5-no-flags-byte", framed(5, S, builds_section([]) + v5_mappings(WHOLE), flags=None),
             Verdict.REJECT, "flags-byte", "serialization_v5.go deserializeV5", "as deserializeV4: no fallback"),
        Case("v4-block-prefix-short", meta(4, S) + b"\0\1\0", Verdict.REJECT, "block-prefix", V4_DEC,
             "fewer than 5 bytes after the metadata"),
        Case("v4-length-over-cap", framed(4, S, whole_v4, length=V4_CAP + 1), Verdict.REJECT, "block-cap", V4_DEC,
             "'uncompressed size exceeds cap' (256 MiB)"),
        Case("v5-length-over-cap", framed(5, S, builds_section([]) + v5_mappings(WHOLE), length=0xFFFF_FFFF),
             Verdict.REJECT, "block-cap", "serialization_v5.go deserializeV5", "over the v5 cap"),
        Case("v4-lz4-corrupt", framed(4, S, whole_v4, frame=_corrupt(lz4_block_frame(whole_v4))), Verdict.REJECT,
             "lz4-frame", V4_DEC, "decompressLZ4 fails (block checksum)"),
        Case("v4-length-says-more", framed(4, S, whole_v4, length=len(whole_v4) + 8), Verdict.REJECT,
             "block-length", V4_DEC, "'decompressed size != prefix'"),
        Case("v4-length-says-less", framed(4, S, whole_v4, length=len(whole_v4) - 8), Verdict.REJECT,
             "block-length", V4_DEC, "decompressLZ4 reads prefix+1 bytes: != prefix"),
        Case("v4-builds-count-past-block", framed(4, S, builds_section([BuildEntry(A, S)], count=5)
                                                  + v4_mappings(WHOLE)), Verdict.REJECT, "builds-count", BUILDS,
             "'build count exceeds remaining bytes' (64 bytes a build at least)"),
        Case("v5-builds-count-past-block", framed(5, S, builds_section([], count=3) + v5_mappings(WHOLE)),
             Verdict.REJECT, "builds-count", BUILDS, "the same builds section in v5"),
        Case("v4-frames-under-codec-0", v4(S, WHOLE, [BuildEntry(A, S, frames=(FrameEntry(0, 0, S, 10),))]),
             Verdict.REJECT, "frame-table", FRAMES, "'compression type is 0 but frame count is 1'"),
        Case("v4-frame-size-zero", v4(S, WHOLE, [BuildEntry(A, S, codec=1, frames=(FrameEntry(0, 0, 0, 10),))]),
             Verdict.REJECT, "frame-table", FRAMES, "'frame has zero or negative size'"),
        Case("v4-frames-unsorted", v4(S, WHOLE, [BuildEntry(A, S, codec=2, frames=(
            FrameEntry(4 * PAGE, 0, 4 * PAGE, 10), FrameEntry(0, 10, 4 * PAGE, 10)))]), Verdict.REJECT,
             "frame-table", FRAMES, "'U-entries not sorted'"),
        Case("v4-too-many-frames", framed(4, S, struct.pack("<I", 1) + struct.pack("<16sq32s", uuid.UUID(A).bytes,
                                                                                    S, bytes(32))
                                          + struct.pack("<II", 2, (1 << 20) + 1) + bytes(64)),
             Verdict.REJECT, "frame-table", FRAMES, "'frame count exceeds maximum' (2^20)"),
        Case("v4-mapping-count-past-block", framed(4, S, builds_section([BuildEntry(A, S)])
                                                   + v4_mappings(WHOLE, count=1000)), Verdict.REJECT,
             "mapping-count", V4_DEC, "'mapping count exceeds remaining bytes' (40 bytes a mapping)"),
        Case("v5-mapping-count-past-block", v5_columns([A], 9, b"\0\x08\0\0"), Verdict.REJECT, "mapping-count",
             V5_DEC, "'mapping count exceeds remaining bytes' (4 bytes an entry at least)"),
        Case("v5-mapping-count-over-max", v5_columns([A], (8 << 20) + 1, b""), Verdict.REJECT, "mapping-count",
             V5_DEC, "'mapping count exceeds maximum' (8 Mi)"),
        Case("v5-build-table-past-block", framed(5, S, builds_section([]) + struct.pack("<I", 3)
                                                 + uuid.UUID(A).bytes + struct.pack("<I", 0)), Verdict.REJECT,
             "v5-build-table", V5_DEC, "'mapping build count exceeds remaining bytes' (16 bytes an id)"),
        Case("v5-build-table-over-max", framed(5, S, builds_section([]) + struct.pack("<I", 1 << 16)),
             Verdict.REJECT, "v5-build-table", V5_DEC, "'mapping build count exceeds maximum' (65535)"),
        Case("v5-varint-truncated", v5_columns([A], 2, b"\0\x04" + b"\x04\x04" + b"\0\x08" + b"\0\x80"),
             Verdict.REJECT, "v5-varint", V5_DEC, "the last index varint ends mid-way: 'failed to read build index'"),
        Case("v5-varint-past-64-bits", v5_columns([A], 1, b"\xff" * 10 + b"\x01" + b"\x08\0\0"), Verdict.REJECT,
             "v5-varint", V5_DEC, "binary.ReadUvarint: 'varint overflows a 64-bit integer'"),
        Case("v5-offset-past-u32", v5_columns([A], 1, uvarint(1 << 32) + b"\x01\0\0"), Verdict.REJECT,
             "page-range", V5_DEC, "'offset delta exceeds uint32'"),
        Case("v5-storage-negative", v5_columns([A], 1, b"\0\x08" + varint(-1) + b"\0"), Verdict.REJECT,
             "page-range", V5_DEC, "'storage block -1 out of range'"),
        Case("v5-build-index-out-of-range", v5_columns([A], 1, b"\0\x08\0\x01"), Verdict.REJECT, "build-index",
             V5_DEC, "'build index 1 out of range (1 builds)'"),
        Case("v5-zero-length", v5_columns([A], 2, b"\0\x04" + b"\x04\0" + b"\0\0" + b"\0\0"), Verdict.REJECT,
             "zero-length", V5_DEC, "'zero-length mapping at entry 1'"),
        Case("v5-overlap", v5(S, ((0, 4 * PAGE, A, 0), (2 * PAGE, 6 * PAGE, A, 0)), [BuildEntry(A, S)]),
             Verdict.REJECT, "contiguity", V5_DEC, "'mapping offset overlaps previous end'"),
        Case("v5-past-size", v5(S, ((0, 9 * PAGE, A, 0),), [BuildEntry(A, S)]), Verdict.REJECT, "coverage",
             V5_DEC, "'mapping end block exceeds size'"),
    ]


def _validate_rules() -> list[Case]:
    odd = 8 * PAGE - 1000
    return [
        Case("v3-size-rounding", v3(odd, ()), Verdict.INVALID, "size-rounding", "header.go NewHeader + " + VALIDATE,
             "the implicit mapping is Size rounded up to 4096: it runs past Size"),
        Case("v4-size-rounding", v4(odd, (), [BuildEntry(A, S)]), Verdict.INVALID, "size-rounding",
             "header.go NewHeader + " + VALIDATE, "the same rounding after deserializeV4"),
        Case("v5-size-rounding", v5(odd, ((0, 4 * PAGE, A, 0),), [BuildEntry(A, S)]), Verdict.INVALID,
             "size-rounding", V5_DEC + " + " + VALIDATE, "the nil tail runs to ceil(Size / 4096) pages, past Size"),
        Case("v3-size-not-block-multiple", v3(3 * MIB, (), block_size=2 * MIB), Verdict.INVALID, "block-multiple",
             VALIDATE_SLICE, "the implicit 3 MiB mapping is not a multiple of the 2 MiB block"),
        Case("v3-length-not-block-multiple", v3(4 * MIB, ((0, MIB, A, 0), (MIB, 3 * MIB, A, MIB)),
                                                block_size=2 * MIB), Verdict.INVALID, "block-multiple",
             VALIDATE_SLICE, "'has an invalid length ... multiple of block size'"),
        Case("v3-gap", v3(S, ((0, PAGE, A, 0), (2 * PAGE, 6 * PAGE, A, PAGE))), Verdict.INVALID, "contiguity",
             VALIDATE, "'expected offset 4096, got 8192'"),
        Case("v3-overlap", v3(S, ((0, 6 * PAGE, A, 0), (4 * PAGE, 4 * PAGE, A, 0))), Verdict.INVALID, "contiguity",
             VALIDATE, "'expected offset 24576, got 16384'"),
        Case("v3-unsorted", v3(S, ((4 * PAGE, 4 * PAGE, A, 0), (0, 4 * PAGE, A, 4 * PAGE))), Verdict.INVALID,
             "contiguity", VALIDATE, "NewMapping keeps the file order; the first entry does not start at 0"),
        Case("v4-gap", v4(S, ((0, PAGE, A, 0), (2 * PAGE, 6 * PAGE, A, PAGE)), [BuildEntry(A, S)]),
             Verdict.INVALID, "contiguity", VALIDATE, "as v3: deserializeV4 does not check the order"),
        Case("v3-short", v3(S, ((0, 4 * PAGE, A, 0),)), Verdict.INVALID, "coverage", VALIDATE,
             "'total 16384 != size 32768'"),
        Case("v3-past-size", v3(S, ((0, 9 * PAGE, A, 0),)), Verdict.INVALID, "coverage", VALIDATE,
             "'current offset + length > size'"),
        Case("v4-past-size", v4(S, ((0, 9 * PAGE, A, 0),), [BuildEntry(A, S)]), Verdict.INVALID, "coverage",
             VALIDATE, "as v3"),
    ]


def _differences() -> list[Case]:
    """Where header.py deliberately says more than upstream (docs/verify.md, 'Where verify differs')."""
    whole_v4 = builds_section([BuildEntry(A, S)]) + v4_mappings(WHOLE)
    return [
        Case("v4-trailing-bytes", framed(4, S, whole_v4 + b"\x5a" * 7), Verdict.ACCEPT, "trailing-bytes", V4_DEC,
             "nothing after the last mapping is read", here=Here.WARN, mappings=WHOLE),
        Case("v5-trailing-bytes", v5(S, WHOLE, [BuildEntry(A, S)], tail=b"\x01\x02\x03"), Verdict.ACCEPT,
             "trailing-bytes", V5_DEC, "nothing after the index column is read", here=Here.WARN, mappings=WHOLE),
        Case("v3-zero-length", v3(S, ((0, 4 * PAGE, A, 0), (4 * PAGE, 0, A, 0), (4 * PAGE, 4 * PAGE, A, 4 * PAGE))),
             Verdict.ACCEPT, "zero-length", VALIDATE, "a zero-length entry at the running offset is contiguous",
             here=Here.WARN, mappings=((0, 4 * PAGE, A, 0), (4 * PAGE, 0, A, 0), (4 * PAGE, 4 * PAGE, A, 4 * PAGE))),
        Case("v3-block-size-8k", v3(4 * PAGE, (), block_size=2 * PAGE), Verdict.ACCEPT, "block-size",
             VALIDATE_SLICE, "any non-zero block size loads; lengths are multiples of it",
             here=Here.WARN, mappings=((0, 4 * PAGE, A, 0),)),
        Case("v3-more-records-than-pages", v3(PAGE, ((0, PAGE, A, 0), (PAGE, 0, A, 0))), Verdict.ACCEPT,
             "records-bound", V3_DEC, "any number of records is read; the zero-length one is contiguous",
             here=Here.REJECT),
    ]


def _corrupt(frame: bytes) -> bytes:
    out = bytearray(frame)
    out[len(out) // 2] ^= 0xFF
    return bytes(out)


def cases() -> list[Case]:
    found = [*_accepted(), *_load_rules(), *_validate_rules(), *_differences()]
    names = [c.name for c in found]
    assert len(names) == len(set(names)), "case names are unique"
    return found


# ---------------------------------------------------------------- chains of three builds

@dataclass(frozen=True)
class Link:
    """How upstream reads one build a header maps to: the object it opens and who decided its codec."""

    build_id: str
    codec: str  # "none", "zstd", "lz4"
    object_name: str
    decided_by: str  # "builds-table", "backfill", "own-header", "no-header"


@dataclass
class ChainBuild:
    build_id: str
    files: dict[str, bytes] = field(default_factory=dict)  # name -> bytes (data objects, headers, sidecars)
    links: tuple[Link, ...] = ()  # upstream's reading of this build's header, for every build it maps to


@dataclass
class Chain:
    name: str
    builds: list[ChainBuild]  # ancestors first; the last one is the child verify is run on
    ok: bool  # upstream can read every mapped block
    why: str
    cite: str = "orchestrator/pkg/sandbox/build/storage_diff.go createDiff, openFromLoadedHeader"

    @property
    def child(self) -> ChainBuild:
        return self.builds[-1]


def _pattern(tag: int, n: int) -> bytes:
    """``n`` bytes, every 4 KiB page distinct (tag and page number), compressible."""
    return b"".join(struct.pack("<II", tag, page) * (PAGE // 8) for page in range(-(-n // PAGE)))[:n]


def compress_frames(data: bytes, codec: str, frame_size: int) -> tuple[bytes, tuple[FrameEntry, ...]]:
    """Each frame compressed on its own as storage's compressor does: LZ4 frames (4 MiB blocks, block
    checksums, no content checksum) or zstd frames with a checksum; the object is their concatenation."""
    out, frames, start_c = bytearray(), [], 0
    for start in range(0, len(data), frame_size):
        raw = data[start:start + frame_size]
        if codec == "lz4":
            packed = bytes(lz4.frame.compress(raw, block_size=lz4.frame.BLOCKSIZE_MAX4MB, block_checksum=True,
                                              content_checksum=False, store_size=False))
        else:
            packed = zstandard.ZstdCompressor(write_checksum=True).compress(raw)
        frames.append(FrameEntry(start, start_c, len(raw), len(packed)))
        out += packed
        start_c += len(packed)
    return bytes(out), tuple(frames)


CODEC = {"none": 0, "zstd": 1, "lz4": 2}
SUFFIX = {"none": "", "zstd": ".zstd", "lz4": ".lz4"}


def _stored(build: ChainBuild, name: str, data: bytes, codec: str, frame_size: int) -> BuildEntry:
    """``data`` stored under ``name`` as ``codec``; the builds-section entry that describes it."""
    digest = hashlib.sha256(data).digest()
    if codec == "none":
        build.files[name] = data
        return BuildEntry(build.build_id, len(data), digest)
    packed, frames = compress_frames(data, codec, frame_size)
    build.files[name + SUFFIX[codec]] = packed
    build.files[name + SUFFIX[codec] + ".uncompressed-size"] = str(len(data)).encode()
    return BuildEntry(build.build_id, len(data), digest, CODEC[codec], frames)


def mixed_chain(kind: str, *, name: str = "memfile", block: int = PAGE, blocks: int = 8,
                ids: tuple[str, str, str] = (A, B, C)) -> Chain:
    """Three builds A <- B <- C of one data file (``blocks`` >= 8 blocks of ``block`` bytes: B holds blocks
    2-3, C the first and the last two, A the rest); ``kind`` says which header versions and codecs:

    * ``v3-v4-v5``: A v3 (uncompressed), B v4 (lz4; its table lists A as uncompressed), C v5 (zstd; its table
      lists B and itself, not A): A is resolved from A's own v3 header. Upstream reads all of it.
    * ``v3-v3-v5``: A and B v3, C v5 uncompressed listing only itself: both ancestors resolved from their
      own v3 headers (#2994/#3447). Upstream reads all of it.
    * ``v5-no-ancestor-header``: as ``v3-v3-v5`` but A never had a header (a legacy build): createDiff falls
      back to A's uncompressed object. Upstream reads all of it.
    * ``v4-v4-v3``: A v4 (lz4 only), B v4 (lz4), C v3: LoadHeader backfills every build of a v3 header as
      uncompressed, so upstream opens A's and B's plain objects, which do not exist: reads fail.
    """
    a_id, b_id, c_id = ids
    size = blocks * block
    a, b, c = ChainBuild(a_id), ChainBuild(b_id), ChainBuild(c_id)
    header_name = name + ".header"
    frame = 2 * block
    a_data = _pattern(1, size)
    b_data = _pattern(2, 2 * block)  # B's blocks 2-3
    c_data = _pattern(3, 3 * block)  # C's first block and last two
    b_maps = ((0, 2 * block, a_id, 0), (2 * block, 2 * block, b_id, 0), (4 * block, size - 4 * block, a_id, 4 * block))
    c_maps = ((0, block, c_id, 0), (block, block, a_id, block), (2 * block, 2 * block, b_id, 0),
              (4 * block, size - 6 * block, a_id, 4 * block), (size - 2 * block, 2 * block, c_id, block))
    kw_a: dict[str, Any] = {"block_size": block, "build_id": a_id}
    kw_b: dict[str, Any] = {"block_size": block, "build_id": b_id, "base_build_id": a_id, "generation": 1}
    kw_c: dict[str, Any] = {"block_size": block, "build_id": c_id, "base_build_id": a_id, "generation": 2}
    plain = "none"

    def link(bid: str, codec: str, by: str) -> Link:
        return Link(bid, codec, name + SUFFIX[codec], by)

    if kind == "v3-v4-v5":
        _stored(a, name, a_data, plain, frame)
        a.files[header_name] = v3(size, ((0, size, a_id, 0),), **kw_a)
        a.links = (link(a_id, plain, "backfill"),)
        b_entry = _stored(b, name, b_data, "lz4", frame)
        b.files[header_name] = v4(size, b_maps, [BuildEntry(a_id, size, hashlib.sha256(a_data).digest()), b_entry],
                                  **kw_b)
        b.links = (link(a_id, plain, "builds-table"), link(b_id, "lz4", "builds-table"))
        c_entry = _stored(c, name, c_data, "zstd", frame)
        c.files[header_name] = v5(size, c_maps, [b_entry, c_entry], **kw_c)
        c.links = (link(c_id, "zstd", "builds-table"), link(a_id, plain, "own-header"),
                   link(b_id, "lz4", "builds-table"))
        return Chain(kind, [a, b, c], True, "C's table lacks A: A's own v3 header says uncompressed")
    if kind in ("v3-v3-v5", "v5-no-ancestor-header"):
        _stored(a, name, a_data, plain, frame)
        if kind == "v3-v3-v5":
            a.files[header_name] = v3(size, (), **kw_a)
            a.links = (link(a_id, plain, "backfill"),)
        _stored(b, name, b_data, plain, frame)
        b.files[header_name] = v3(size, b_maps, **kw_b)
        b.links = (link(a_id, plain, "backfill"), link(b_id, plain, "backfill"))
        c_entry = _stored(c, name, c_data, plain, frame)
        c.files[header_name] = v5(size, c_maps, [c_entry], **kw_c)
        a_by = "own-header" if kind == "v3-v3-v5" else "no-header"
        c.links = (link(c_id, plain, "builds-table"), link(a_id, plain, a_by), link(b_id, plain, "own-header"))
        return Chain(kind, [a, b, c], True, "ancestors missing from C's table are read as their own headers say"
                     if kind == "v3-v3-v5" else "A has no header: createDiff reads its plain object")
    if kind == "v4-v4-v3":
        a_entry = _stored(a, name, a_data, "lz4", frame)
        a.files[header_name] = v4(size, ((0, size, a_id, 0),), [a_entry], **kw_a)
        a.links = (link(a_id, "lz4", "builds-table"),)
        b_entry = _stored(b, name, b_data, "lz4", frame)
        b.files[header_name] = v4(size, b_maps, [a_entry, b_entry], **kw_b)
        b.links = (link(a_id, "lz4", "builds-table"), link(b_id, "lz4", "builds-table"))
        _stored(c, name, c_data, plain, frame)
        c.files[header_name] = v3(size, c_maps, **kw_c)
        c.links = (link(c_id, plain, "backfill"), link(a_id, plain, "backfill"), link(b_id, plain, "backfill"))
        return Chain(kind, [a, b, c], False, "a v3 header reads every build uncompressed "
                     "(serialization.go backfillMissingV3UncompressedBuilds): A and B exist only compressed",
                     cite="serialization.go backfillMissingV3UncompressedBuilds; storage_diff.go createDiff")
    raise ValueError(kind)


CHAIN_KINDS = ("v3-v4-v5", "v3-v3-v5", "v5-no-ancestor-header", "v4-v4-v3")
