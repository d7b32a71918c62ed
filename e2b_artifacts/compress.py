"""A plain build in upstream's compressed form, and back (``sync push --compress``, ``build --compress``,
``sync pull --decompress``).

The compressed form is what upstream's orchestrator writes with compression on (e2b-dev/infra
``packages/shared/pkg/storage``): each data file a packed diff (its all-zero blocks dropped and mapped to
the nil build, as upstream's diffs never hold them), cut into frames of 2 MiB uncompressed data compressed
one by one (``compress_upload.go`` ``compressStream``; zstd with its CRC at klauspost's default level,
lz4 frames of 4 MiB blocks with block checksums: ``compress_encode.go`` ``newCompressorPool``) into
``<file>.zstd|.lz4``; ``<object>.uncompressed-size`` beside it (``fs.go`` ``storeFileCompressed``); a V4
header whose builds table holds each build's frame table, uncompressed size and the SHA-256 of its
uncompressed (packed) data, which ``inspect-build -validate`` recomputes. Holes and zero blocks cost
nothing: they are neither read (holes, by SEEK_DATA) nor stored.

Packing moves a build's blocks, so a descendant's mappings into it are rewritten with it (a
:class:`Translation` per build and file). To give back the very bytes it was made from, the compressed build
carries ``artifact-plain.json`` (:data:`layout.PLAIN_RECORD`): the source's manifest and, per data file, its
size and original header; ``decompress_build`` rebuilds each file from it and checks it against that
manifest. Without the record (a build upstream compressed) the plain form is the packed data with the
same mappings in a V3 header.
"""

from __future__ import annotations

import base64
import bisect
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from . import compressed as co
from . import header as header_mod
from . import layout, limits
from . import manifest as mf
from .errors import ArtifactError, ExitCode
from .fsutil import all_zero, atomic_write_bytes, copy_sparse, data_extents, read_input
from .header import NIL_BUILD, BuildFile, Codec, Frame, Mapping

CODECS = {"zstd": Codec.ZSTD, "lz4": Codec.LZ4}
ZSTD_LEVEL = 3  # upstream's COMPRESS_LEVEL default 2 is klauspost's SpeedDefault, which matches zstd -3
RECORD_FORMAT = 1
IN_FLIGHT = 4  # frames compressed at once (each 2 MiB in, about as much out): bounds memory to ~16 MiB
READ_CHUNK = 8 << 20
HEADERLESS_BLOCK = {layout.MEMFILE: 2 << 20, layout.ROOTFS: 4096}  # upstream's headerless fallback


def codec_of(name: str) -> Codec:
    try:
        return CODECS[name]
    except KeyError:
        raise ArtifactError(f"unknown compression {name!r}", hint="use zstd or lz4", code=ExitCode.USAGE) from None


# ---- frames ----------------------------------------------------------------------------------

def compress_frame(codec: Codec, data: bytes | memoryview) -> bytes:
    if codec == Codec.ZSTD:
        import zstandard

        return zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_checksum=True).compress(data)
    import lz4.frame  # type: ignore[import-untyped,import-not-found,unused-ignore]

    writer = lz4.frame.LZ4FrameCompressor(block_size=lz4.frame.BLOCKSIZE_MAX4MB, block_linked=False,
                                          block_checksum=True, content_checksum=False, compression_level=0)
    return bytes(writer.begin()) + bytes(writer.compress(data)) + bytes(writer.flush())


class FrameWriter:
    """Uncompressed bytes in, 2 MiB frames out to ``out``, compressed on a few threads in order; the frame
    table and the SHA-256 of everything written come back from :meth:`close`."""

    def __init__(self, out: BinaryIO, codec: Codec, pool: ThreadPoolExecutor) -> None:
        self.out, self.codec, self.pool = out, codec, pool
        self.pending: list[tuple[int, Future[bytes]]] = []
        self.buffer = bytearray()
        self.frames: list[Frame] = []
        self.sha = hashlib.sha256()
        self.size = 0
        self.stored = 0

    def write(self, data: bytes | memoryview) -> None:
        """Whole frames of ``data`` go to the compressors as views of it (no copy: ``data`` is immutable or the
        caller's and unchanged until close); only a frame's pieces from two writes are joined in the buffer."""
        self.sha.update(data)
        self.size += len(data)
        view = memoryview(data)
        if self.buffer:
            take = min(len(view), co.FRAME_SIZE - len(self.buffer))
            self.buffer += view[:take]
            view = view[take:]
            if len(self.buffer) < co.FRAME_SIZE:
                return
            self._submit(bytes(self.buffer))
            self.buffer.clear()
        while len(view) >= co.FRAME_SIZE:
            self._submit(view[:co.FRAME_SIZE])
            view = view[co.FRAME_SIZE:]
        self.buffer += view

    def _submit(self, data: bytes | memoryview) -> None:
        self.pending.append((len(data), self.pool.submit(compress_frame, self.codec, data)))
        while len(self.pending) >= IN_FLIGHT:
            self._drain_one()

    def _drain_one(self) -> None:
        size_u, future = self.pending.pop(0)
        blob = future.result()
        start_u = self.frames[-1].end_u if self.frames else 0
        self.frames.append(Frame(start_u, self.stored, size_u, len(blob)))
        self.out.write(blob)
        self.stored += len(blob)

    def close(self) -> BuildFile:
        if self.buffer:
            self._submit(bytes(self.buffer))
            self.buffer.clear()
        while self.pending:
            self._drain_one()
        return BuildFile(self.size, self.sha.hexdigest(), self.codec, tuple(self.frames))


# ---- translations ----------------------------------------------------------------------------

@dataclass
class Translation:
    """Where a build's plain data went: sorted runs ``(plain start, plain end, packed start or None)``;
    None = zero blocks, mapped to the nil build."""

    runs: list[tuple[int, int, int | None]] = field(default_factory=list)

    def add(self, start: int, end: int, packed: int | None) -> None:
        if self.runs:
            last_start, last_end, last_packed = self.runs[-1]
            joined = (last_packed is None and packed is None) or (
                last_packed is not None and packed is not None and last_packed + (last_end - last_start) == packed)
            if last_end == start and joined:
                self.runs[-1] = (last_start, end, last_packed)
                return
        self.runs.append((start, end, packed))

    def pieces(self, start: int, length: int) -> Iterator[tuple[int, int | None]]:
        """``(length, packed offset or None)`` for plain ``[start, start+length)``."""
        end = start + length
        i = bisect.bisect_right(self.runs, start, key=lambda r: r[0]) - 1
        while start < end:
            if i < 0 or i >= len(self.runs) or not self.runs[i][0] <= start < self.runs[i][1]:
                raise ArtifactError(f"plain bytes at {start:#x} are mapped by a descendant but not by their own "
                                    "build's header: they cannot be carried into the compressed form",
                                    hint="check the chain with e2b-artifact verify", code=ExitCode.BAD_INPUT)
            run_start, run_end, packed = self.runs[i]
            piece = min(end, run_end) - start
            yield piece, None if packed is None else packed + (start - run_start)
            start += piece
            i += 1


def translation_between(plain: header_mod.Header, packed: header_mod.Header) -> Translation:
    """The :class:`Translation` of ``plain``'s own build into ``packed`` (the same build compressed)."""
    own = plain.build_id
    translation = Translation()
    for m in sorted((m for m in plain.mappings if m.build_id == own), key=lambda m: m.storage_offset):
        for offset, length, build_id, storage in _device_pieces(packed, m.offset, m.length):
            start = m.storage_offset + (offset - m.offset)
            if translation.runs and start < translation.runs[-1][1]:
                continue  # storage mapped twice: the first device range already placed it
            translation.add(start, start + length, None if build_id == NIL_BUILD else storage)
    return translation


def _device_pieces(hdr: header_mod.Header, start: int, length: int) -> Iterator[tuple[int, int, str, int]]:
    """``(device offset, length, build, storage offset)`` of ``hdr``'s mappings over ``[start, start+length)``."""
    mappings = hdr.mappings or header_mod.Mappings()
    end = start + length
    i = max(0, bisect.bisect_right(mappings, start, key=lambda m: m.offset) - 1)
    while start < end and i < len(mappings):
        m = mappings[i]
        if m.end > start:
            piece_end = min(end, m.end)
            if m.offset > start:
                raise ArtifactError(f"device range [{start:#x}, {m.offset:#x}) is in no mapping",
                                    hint="check the header with e2b-artifact verify", code=ExitCode.BAD_INPUT)
            yield start, piece_end - start, m.build_id, m.storage_offset + (start - m.offset)
            start = piece_end
        i += 1
    if start < end:
        raise ArtifactError(f"device range [{start:#x}, {end:#x}) is in no mapping",
                            hint="check the header with e2b-artifact verify", code=ExitCode.BAD_INPUT)


# ---- one data file ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Packed:
    """A compressed data file of one build: its V4 header and the translation of its own data."""

    header: header_mod.Header
    translation: Translation
    plain_header: header_mod.Header


def packed_from(v4: header_mod.Header, plain: header_mod.Header) -> Packed:
    """The :class:`Packed` of a build compressed earlier, from its V4 header and its plain header."""
    return Packed(v4, translation_between(plain, v4), plain)


def identity_header(build_id: str, block_size: int, size: int) -> header_mod.Header:
    """Upstream's headerless fallback: one mapping of the whole file onto itself."""
    return header_mod.Header(1, block_size, size, 0, build_id, build_id,
                             header_mod.Mappings.of([Mapping(0, size, build_id, 0)]))


def plain_header(build_dir: Path, data_name: str, build_id: str) -> tuple[header_mod.Header, bytes | None]:
    """The build's v1-3 header of ``data_name`` (and its bytes), or upstream's headerless fallback: one
    identity mapping of the whole file (``None`` bytes)."""
    path = build_dir / layout.HEADER_OF[data_name]
    build_id = require_uuid(build_id)
    if path.is_file():
        data = read_input(path, "header", limit=limits.HEADER, missing_hint="check the build directory")
        hdr = header_mod.parse_header(data, str(path))
        if hdr.version not in (1, 2, 3):
            raise ArtifactError(f"{path}: a v{hdr.version} header; only builds with v1-3 headers (or none) are "
                                "compressed here", hint="push it as it is (without --compress)",
                                code=ExitCode.BAD_INPUT)
        return hdr, data
    return identity_header(build_id, HEADERLESS_BLOCK[data_name], (build_dir / data_name).stat().st_size), None


def pack(build_dir: Path, build_id: str, data_name: str, out_dir: Path, codec: Codec, pool: ThreadPoolExecutor,
         ancestors: dict[str, Packed]) -> Packed:
    """Write ``out_dir/<data_name><suffix>``, its sidecar and its V4 header from the plain ``data_name`` of
    ``build_dir`` (build ``build_id``); ``ancestors`` hold the already compressed builds its mappings read from."""
    plain, _ = plain_header(build_dir, data_name, build_id)
    own = plain.build_id
    if own != require_uuid(build_id):
        raise ArtifactError(f"{build_dir / layout.HEADER_OF[data_name]} belongs to build {own}, not {build_id}",
                            hint="check that the header belongs to this build", code=ExitCode.BAD_INPUT)
    ranges = _merged((m.storage_offset, m.storage_offset + m.length) for m in plain.mappings
                     if m.build_id == own)
    name = co.object_name(data_name, codec)
    translation = Translation()
    with (build_dir / data_name).open("rb") as src, (out_dir / name).open("wb") as out:
        writer = FrameWriter(out, codec, pool)
        for start, end in ranges:
            _pack_range(src, start, end, plain.block_size, writer, translation)
        record = writer.close()
        out.flush()
        os.fsync(out.fileno())
    # Kept when empty (a build with no block of its own): the build's files stay the same set whatever it holds;
    # its header then records no frames and codec none, as upstream's serializer writes an empty table.
    atomic_write_bytes(out_dir / layout.uncompressed_size_name(name), str(record.size).encode())
    mappings = _rewrite(plain, translation, ancestors)
    builds = {own: record} | {b: ancestors[b].header.builds[b] for b in _referenced(mappings) if b in ancestors}
    hdr = header_mod.Header(4, plain.block_size, plain.size, plain.generation, own, plain.base_build_id,
                            header_mod.Mappings.of(mappings), raw_version=4, builds=builds)
    atomic_write_bytes(out_dir / layout.HEADER_OF[data_name], header_mod.serialize(hdr))
    return Packed(hdr, translation, plain)


def _pack_range(src: BinaryIO, start: int, end: int, block: int, writer: FrameWriter,
                translation: Translation) -> None:
    """Pack plain ``[start, end)``: blocks (on a grid from ``start``) in holes or past the end of the file are
    zero without being read; the rest is read in chunks, zero blocks dropped, the others written."""
    fd = src.fileno()
    size = os.fstat(fd).st_size
    position = start
    for data_start, data_end in data_extents(fd, size):
        if data_end <= position or data_start >= end:
            continue
        first = start + (max(data_start, position) - start) // block * block  # the block the data begins in
        last = min(end, start + -(-(data_end - start) // block) * block)
        if first > position:
            translation.add(position, first, None)
        position = max(position, first)
        while position < last:
            chunk_end = min(last, position + READ_CHUNK)
            src.seek(position)
            data = src.read(chunk_end - position)
            data += bytes(chunk_end - position - len(data))  # past the end of the file: zeros
            _pack_blocks(data, position, block, writer, translation)
            position = chunk_end
    if position < end:
        translation.add(position, end, None)


def _pack_blocks(raw: bytes, start: int, block: int, writer: FrameWriter, translation: Translation) -> None:
    """Zero blocks of ``raw`` (at plain offset ``start``) to the nil build, each run of the others written at
    once (one write per run, not per block: per-block writes cost 1.6 s of a 1 GiB push's 5.7 s of CPU)."""
    if all_zero(raw):
        translation.add(start, start + len(raw), None)
        return
    run_start: int | None = None  # offset in ``raw`` where the current run of data blocks began
    for offset in range(0, len(raw), block):
        end = min(offset + block, len(raw))
        zero = all_zero(raw, offset, end)
        if zero and run_start is not None:
            _write_run(raw, run_start, offset, start, writer, translation)
            run_start = None
        if zero:
            translation.add(start + offset, start + end, None)
        elif run_start is None:
            run_start = offset
    if run_start is not None:
        _write_run(raw, run_start, len(raw), start, writer, translation)


def _write_run(raw: bytes, begin: int, end: int, start: int, writer: FrameWriter, translation: Translation) -> None:
    translation.add(start + begin, start + end, writer.size)
    writer.write(memoryview(raw)[begin:end])


def _rewrite(plain: header_mod.Header, own: Translation, ancestors: dict[str, Packed]) -> list[Mapping]:
    """``plain``'s mappings with every range of a compressed build moved to where its data went."""
    out: list[Mapping] = []

    def emit(offset: int, length: int, build_id: str, storage: int) -> None:
        if out:
            last = out[-1]
            nil_run = last.build_id == build_id == NIL_BUILD
            joined = last.build_id == build_id and last.storage_offset + last.length == storage
            if last.end == offset and (nil_run or joined):
                out[-1] = Mapping(last.offset, last.length + length, build_id, 0 if nil_run else last.storage_offset)
                return
        out.append(Mapping(offset, length, build_id, 0 if build_id == NIL_BUILD else storage))

    for m in plain.mappings:
        translation = own if m.build_id == plain.build_id else (
            ancestors[m.build_id].translation if m.build_id in ancestors else None)
        if m.build_id == NIL_BUILD or translation is None:
            emit(m.offset, m.length, m.build_id, m.storage_offset)
            continue
        offset = m.offset
        for length, packed in translation.pieces(m.storage_offset, m.length):
            emit(offset, length, NIL_BUILD if packed is None else m.build_id, packed or 0)
            offset += length
    return out


def _referenced(mappings: Sequence[Mapping]) -> list[str]:
    return list(dict.fromkeys(m.build_id for m in mappings if m.build_id != NIL_BUILD))


def _merged(ranges: Iterator[tuple[int, int]] | list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for start, end in sorted(ranges):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        elif end > start:
            out.append((start, end))
    return out


def require_uuid(build_id: str) -> str:
    try:
        return str(uuid.UUID(build_id))
    except ValueError:
        raise ArtifactError(f"build id {build_id!r} is not a UUID: headers name builds by UUID",
                            hint="clone it under a UUID first (e2b-artifact clone --build-id)",
                            code=ExitCode.USAGE) from None


# ---- whole builds ----------------------------------------------------------------------------

@dataclass
class CompressResult:
    build_id: str
    codec: str
    plain_bytes: int = 0  # the data files' sizes as files (apparent)
    stored_bytes: int = 0  # the compressed objects' sizes
    files: dict[str, dict[str, int]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"build_id": self.build_id, "codec": self.codec, "plain_bytes": self.plain_bytes,
                "stored_bytes": self.stored_bytes, "files": self.files}


def compress_build(build_dir: Path, out_dir: Path, codec: Codec, ancestors: dict[tuple[str, str], Packed],
                   pool: ThreadPoolExecutor, *, build_id: str | None = None) -> CompressResult:
    """Fill the empty ``out_dir`` with ``build_dir`` (build ``build_id``, default its directory name) in
    compressed form; ``ancestors`` maps (build id, data file) to an already compressed ancestor and gains this
    build's entries."""
    bid = build_id or build_dir.name
    source_manifest = mf.read_bytes(build_dir / layout.MANIFEST)
    result = CompressResult(bid, codec.name.lower())
    plain_files: dict[str, Any] = {}
    for data_name in layout.DATA_FILES:
        if not (build_dir / data_name).is_file():
            if any((build_dir / n).exists() for n in layout.compressed_names(data_name)):
                raise ArtifactError(f"{build_dir} already holds {data_name} compressed",
                                    hint="push it as it is (without --compress)", code=ExitCode.BAD_INPUT)
            continue
        _, header_bytes = plain_header(build_dir, data_name, bid)
        packed = pack(build_dir, bid, data_name, out_dir, codec, pool,
                      {b: p for (b, n), p in ancestors.items() if n == data_name})
        ancestors[(packed.header.build_id, data_name)] = packed
        stored = (out_dir / co.object_name(data_name, codec)).stat().st_size
        plain_size = (build_dir / data_name).stat().st_size
        plain_files[data_name] = {"size": plain_size,
                                  "header": base64.b64encode(header_bytes).decode() if header_bytes else None}
        result.files[data_name] = {"plain": plain_size, "packed": packed.header.builds[packed.header.build_id].size,
                                   "stored": stored}
        result.plain_bytes += plain_size
        result.stored_bytes += stored
    taken = {*layout.DATA_FILES, *layout.HEADERS, layout.MANIFEST}
    for path in mf.artifact_files(build_dir):
        if path.name not in taken:
            copy_sparse(path, out_dir / path.name)
    record = {"format": RECORD_FORMAT, "build_id": bid, "codec": result.codec,
              "manifest": source_manifest.decode(), "files": plain_files}
    atomic_write_bytes(out_dir / layout.PLAIN_RECORD, json.dumps(record, indent=1, sort_keys=True).encode() + b"\n")
    mf.write_manifest(out_dir, bid)
    return result


def read_record(build_dir: Path) -> dict[str, Any] | None:
    """The compressed build's ``artifact-plain.json`` (None when it has none)."""
    path = build_dir / layout.PLAIN_RECORD
    if not path.is_file():
        return None
    return parse_record(read_input(path, layout.PLAIN_RECORD, limit=limits.PLAIN_RECORD,
                                   missing_hint="check the build directory"), str(path))


def parse_record(data: bytes, where: str) -> dict[str, Any]:
    try:
        record = json.loads(data)
        if not isinstance(record, dict) or record.get("format") != RECORD_FORMAT \
                or not isinstance(record.get("manifest"), str) or not isinstance(record.get("files"), dict):
            raise ValueError("not a format-1 record")
    except ValueError as exc:
        raise ArtifactError(f"{where}: {exc}", hint="the record is damaged; restore it from the pushed copy",
                            code=ExitCode.BAD_INPUT) from None
    return record


def decompress_build(build_dir: Path, out_dir: Path, *, build_id: str | None = None) -> None:
    """Fill the empty ``out_dir`` with the plain form of the compressed ``build_dir`` (build ``build_id``,
    default its directory name): with its record, the very files it was made from (checked against the
    source's manifest), else packed data + V3 headers."""
    record = read_record(build_dir)
    bid = build_id or build_dir.name
    for data_name in layout.DATA_FILES:
        header_path = build_dir / layout.HEADER_OF[data_name]
        if not header_path.is_file():
            if (build_dir / data_name).is_file():
                copy_sparse(build_dir / data_name, out_dir / data_name)
            continue
        hdr = header_mod.read_header(header_path)
        own = co.own_record(hdr)
        entry = (record or {}).get("files", {}).get(data_name)
        if own is not None and own.empty:
            _restore_empty(hdr, data_name, entry, out_dir)
            continue
        if own is None or not own.compressed:  # already plain
            for name in (data_name, layout.HEADER_OF[data_name]):
                if (build_dir / name).is_file():
                    copy_sparse(build_dir / name, out_dir / name)
            continue
        obj = co.DataObject(hdr.build_id, data_name, build_dir / co.object_name(data_name, own.codec), own,
                            "own header")
        if entry is not None:
            _restore(obj, hdr, entry, out_dir / data_name, out_dir / layout.HEADER_OF[data_name])
        else:
            _unpack(obj, hdr, out_dir / data_name, out_dir / layout.HEADER_OF[data_name])
    skip = {*layout.DATA_FILES, *layout.HEADERS, layout.MANIFEST, layout.PLAIN_RECORD}
    for path in mf.artifact_files(build_dir):
        name = layout.data_name_of(path.name.removesuffix(layout.UNCOMPRESSED_SIZE_SUFFIX))
        if path.name not in skip and name not in layout.DATA_FILES:
            copy_sparse(path, out_dir / path.name)
    if record is None:
        mf.write_manifest(out_dir, bid)
        return
    manifest_bytes = record["manifest"].encode()
    original = mf.parse(manifest_bytes, f"{build_dir / layout.PLAIN_RECORD}: manifest")
    atomic_write_bytes(out_dir / layout.MANIFEST, manifest_bytes)
    wrong = [m.message for m in mf.check_manifest(out_dir, manifest=original) if m.problem != "unlisted"]
    if wrong:
        raise ArtifactError(f"the plain form of {bid} differs from the build it was made from: {wrong[0]}",
                            hint="the compressed copy is damaged: e2b-artifact verify it, re-push from the source",
                            code=ExitCode.INTEGRITY)


def _restore_empty(hdr: header_mod.Header, data_name: str, entry: dict[str, Any] | None, out_dir: Path) -> None:
    """The plain form of a data file without blocks of its own: a hole of the recorded size (its blocks all live
    in ancestors, or are zero) and its original header; without a record, an empty file and a V3 header."""
    raw = base64.b64decode(entry["header"]) if entry is not None and entry.get("header") else None
    size = entry.get("size") if entry is not None else 0
    if not isinstance(size, int) or size < 0:
        raise ArtifactError(f"{layout.PLAIN_RECORD}: no size for {data_name}", hint="the record is damaged",
                            code=ExitCode.BAD_INPUT)
    with (out_dir / data_name).open("wb") as fout:
        os.ftruncate(fout.fileno(), size)
    if raw is None:
        raw = header_mod.serialize(header_mod.Header(3, hdr.block_size, hdr.size, hdr.generation, hdr.build_id,
                                                     hdr.base_build_id, hdr.mappings, raw_version=3))
    atomic_write_bytes(out_dir / layout.HEADER_OF[data_name], raw)


def _restore(obj: co.DataObject, hdr: header_mod.Header, entry: dict[str, Any], out: Path, out_header: Path) -> None:
    size = entry.get("size")
    if not isinstance(size, int) or size < 0:
        raise ArtifactError(f"{layout.PLAIN_RECORD}: no size for {obj.data_name}", hint="the record is damaged",
                            code=ExitCode.BAD_INPUT)
    raw = base64.b64decode(entry["header"]) if entry.get("header") else None
    if raw is not None:
        plain = header_mod.parse_header(raw, f"{layout.PLAIN_RECORD}: {obj.data_name} header")
    else:
        plain = identity_header(hdr.build_id, hdr.block_size, size)
    with out.open("wb") as fout, co.FrameReader(obj) as reader:
        fd = fout.fileno()
        os.ftruncate(fd, size)
        own = sorted((m for m in plain.mappings if m.build_id == plain.build_id),
                     key=lambda m: m.storage_offset)
        for m in own:
            for offset, length, build_id, storage in _device_pieces(hdr, m.offset, m.length):
                dest = m.storage_offset + (offset - m.offset)
                if build_id == hdr.build_id and dest < size:
                    reader.copy_to(fd, storage, min(length, size - dest), dest)
        os.ftruncate(fd, size)
    if raw is not None:
        atomic_write_bytes(out_header, raw)


def _unpack(obj: co.DataObject, hdr: header_mod.Header, out: Path, out_header: Path) -> None:
    assert obj.record is not None
    with out.open("wb") as fout, co.FrameReader(obj) as reader:
        os.ftruncate(fout.fileno(), obj.record.size)
        reader.copy_to(fout.fileno(), 0, obj.record.size, 0)
    v3 = header_mod.Header(3, hdr.block_size, hdr.size, hdr.generation, hdr.build_id, hdr.base_build_id,
                           hdr.mappings, raw_version=3)
    atomic_write_bytes(out_header, header_mod.serialize(v3))


def remove_tree(path: Path) -> None:
    """Remove a staging directory this module made (never a user's build)."""
    shutil.rmtree(path, ignore_errors=True)
