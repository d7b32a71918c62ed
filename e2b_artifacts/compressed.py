"""Compressed data objects (``memfile.lz4|.zstd``, ``rootfs.ext4.lz4|.zstd``): which object holds a build's
data, and reading its uncompressed bytes frame by frame.

Upstream (e2b-dev/infra ``packages/shared/pkg/storage``): a compressed object is the build's data file cut
into frames (2 MiB of uncompressed data each, the last one shorter), each compressed on its own and stored
one after the other (``compress_upload.go`` ``compressStream``); the V4/V5 header's builds table records,
per build, the codec, the frame table, the uncompressed size and the SHA-256 of the uncompressed bytes
(``header/serialization_v4.go``). The object's name is the data file's name plus the codec's suffix
(``CompressionType.Suffix``); the file backend writes ``<object>.uncompressed-size`` beside it with the
uncompressed size in decimal (``fs.go`` ``storeFileCompressed``) and reports that as the object's size.

Which object a build reads for an ancestor: the child header's builds-table entry decides when it has
one; an ancestor missing from that table is resolved from the ancestor's own header (upstream after
#2994/#3447, ``backfillMissingV3UncompressedBuilds``: "createDiff instead resolves the build's own header");
a V3 ancestor's data is the plain file.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from . import header as header_mod
from . import layout
from .errors import ArtifactError, ExitCode
from .fsutil import write_sparse
from .header import BuildFile, Codec, Frame

FRAME_SIZE = 2 << 20  # upstream's default frame: 2 MiB of uncompressed data
MAX_SIDECAR_BYTES = 64  # a decimal u64 with room for whitespace
_ZSTD_FEED = 4096  # compressed bytes per step when a zstd frame does not declare its size (bounds the output)

Source = Literal["own header", "child's builds table", "ancestor's own header", "plain (no v4+ record)"]


class FrameError(ArtifactError):
    """A frame that does not decompress to what its table entry says."""

    def __init__(self, obj: DataObject, index: int, detail: str) -> None:
        frame = obj.frames[index]
        super().__init__(f"build {obj.build_id}: {obj.name} frame {index} (uncompressed [{frame.start_u:#x}, "
                         f"{frame.end_u:#x}), compressed [{frame.start_c:#x}, {frame.end_c:#x})): {detail}",
                         hint=f"the object is damaged: restore {obj.build_id}/{obj.name} from a good copy, or "
                              "re-push the build", code=ExitCode.INTEGRITY)
        self.index = index


@dataclass(frozen=True)
class DataObject:
    """Where one build's data file (``memfile`` or ``rootfs.ext4``) lives and how it is stored."""

    build_id: str
    data_name: str
    path: Path  # the object: compressed (``memfile.zstd``) or the plain file
    record: BuildFile | None  # the v4+ builds-table entry this was resolved from (None: no record)
    source: Source

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def codec(self) -> Codec:
        return self.record.codec if self.record is not None else Codec.NONE

    @property
    def compressed(self) -> bool:
        return self.codec != Codec.NONE

    @property
    def frames(self) -> tuple[Frame, ...]:
        return self.record.frames if self.record is not None else ()

    @property
    def sidecar(self) -> Path:
        return self.path.with_name(layout.uncompressed_size_name(self.path.name))


def object_name(data_name: str, codec: Codec) -> str:
    """``memfile`` + the codec's suffix, as upstream names the object (``memfile.zstd``; plain: ``memfile``)."""
    return data_name + codec.suffix


def own_record(hdr: header_mod.Header) -> BuildFile | None:
    """The builds-table entry of the header's own build (None for v1-3 headers and v4+ without one)."""
    return hdr.builds.get(hdr.build_id)


def resolve(storage: Path, build_id: str, data_name: str, child: header_mod.Header | None = None) -> DataObject:
    """The object holding ``build_id``'s ``data_name`` in ``storage`` as upstream reads it through ``child``
    (:func:`header.resolve`: a v1-3 child reads every build plain; a v4+ builds entry decides; a build missing
    from it, by its own header); without ``child``, by ``build_id``'s own header."""
    directory = storage / build_id
    if child is None:
        own = _own_header(directory / layout.HEADER_OF[data_name])
        record = own_record(own) if own is not None and own.build_id == build_id else None
        return DataObject(build_id, data_name, directory / object_name(data_name, record.codec if record else
                                                                       Codec.NONE), record,
                          "own header" if record else "plain (no v4+ record)")
    entry = child.builds.get(build_id) if child.version >= 4 else None
    if entry is not None:
        source: Source = "own header" if child.build_id == build_id else "child's builds table"
        return DataObject(build_id, data_name, directory / object_name(data_name, entry.codec), entry, source)
    if child.version >= 4 and child.build_id != build_id:
        theirs = resolve(storage, build_id, data_name)
        if theirs.record is not None:
            return dataclasses.replace(theirs, source="ancestor's own header")
    return DataObject(build_id, data_name, directory / data_name, None, "plain (no v4+ record)")


def _own_header(path: Path) -> header_mod.Header | None:
    try:
        return header_mod.read_header(path) if path.is_file() else None
    except ArtifactError:
        return None  # reported where that build's own header is checked


def read_sidecar(path: Path) -> int | None:
    """The decimal size in ``<object>.uncompressed-size`` (None when there is none); upstream's ``fsObject.Size``
    trims whitespace and, when the text is not a number, silently reports the compressed object's size."""
    if not path.is_file():
        return None
    with path.open("rb") as fh:
        text = fh.read(MAX_SIDECAR_BYTES + 1)
    value = text.strip()
    if len(text) > MAX_SIDECAR_BYTES or not value.isdigit():
        raise ArtifactError(f"{path}: {text[:40]!r} is not a decimal size",
                            hint="upstream then reports the compressed size as the object's size: write the "
                                 "uncompressed size (the header's builds entry) into it", code=ExitCode.BAD_INPUT)
    return int(value)


def uncompressed_size(obj: DataObject) -> int | None:
    """The object's uncompressed length: its record's size, else the plain file's size."""
    if obj.record is not None and obj.record.size > 0:
        return obj.record.size
    if not obj.compressed and obj.path.is_file():
        return obj.path.stat().st_size
    return None


def coverage_problems(obj: DataObject, object_size: int) -> list[str]:
    """How the frame table fails to cover the object: frames from uncompressed 0 to the recorded size and from
    compressed 0 to the object's end, each starting where the previous one ends (what ``compressStream``
    writes; a gap would make ``inspect-build -validate``'s read of every byte up to the size fail)."""
    problems: list[str] = []
    position_u = position_c = 0
    for i, f in enumerate(obj.frames):
        if f.start_u != position_u:
            what = "gap" if f.start_u > position_u else "overlap"
            problems.append(f"frame {i}: uncompressed {what} [{min(position_u, f.start_u):#x}, "
                            f"{max(position_u, f.start_u):#x}) before it")
        if f.start_c != position_c:
            what = "gap" if f.start_c > position_c else "overlap"
            problems.append(f"frame {i}: compressed {what} [{min(position_c, f.start_c):#x}, "
                            f"{max(position_c, f.start_c):#x}) before it")
        position_u, position_c = f.end_u, f.end_c
    size = obj.record.size if obj.record is not None else 0
    if position_u != size:
        problems.append(f"frames end at uncompressed {position_u:#x}, the recorded size is {size:#x}")
    if position_c != object_size:
        problems.append(f"frames end at compressed {position_c:#x}, {obj.name} is {object_size:#x} bytes")
    return problems


class FrameReader:
    """Uncompressed bytes of a compressed object, one frame decompressed at a time (the last one cached)."""

    def __init__(self, obj: DataObject) -> None:
        if not obj.compressed:
            raise ValueError(f"{obj.name} is not compressed")
        self.obj = obj
        self._fh = obj.path.open("rb")
        self._cached: tuple[int, bytes] | None = None

    def __enter__(self) -> FrameReader:
        return self

    def __exit__(self, *_: object) -> None:
        self._fh.close()

    def frame(self, index: int) -> bytes:
        """Frame ``index`` decompressed; :class:`FrameError` when it does not give exactly its declared size."""
        if self._cached is not None and self._cached[0] == index:
            return self._cached[1]
        f = self.obj.frames[index]
        self._fh.seek(f.start_c)
        data = self._fh.read(f.size_c)
        if len(data) != f.size_c:
            raise FrameError(self.obj, index, f"the object ends after {len(data)} of its {f.size_c} bytes")
        try:
            out = decompress_frame(self.obj.codec, data, f.size_u)
        except ValueError as exc:
            raise FrameError(self.obj, index, str(exc)) from None
        self._cached = (index, out)
        return out

    def frames(self) -> Iterator[tuple[int, bytes]]:
        """Every frame in table order, decompressed."""
        for index in range(len(self.obj.frames)):
            yield index, self.frame(index)

    def copy_to(self, out_fd: int, start: int, length: int, dest: int) -> None:
        """Write uncompressed ``[start, start+length)`` at ``dest`` of ``out_fd`` (zero runs stay holes)."""
        end = start + length
        while start < end:
            index = self.obj.record.frame_at(start) if self.obj.record is not None else None
            if index is None:
                raise ArtifactError(f"build {self.obj.build_id}: {self.obj.name} has no frame holding uncompressed "
                                    f"offset {start:#x}", hint="the header's frame table does not cover its mappings",
                                    code=ExitCode.INTEGRITY)
            f = self.obj.frames[index]
            piece = self.frame(index)[start - f.start_u:min(end, f.end_u) - f.start_u]
            write_sparse(out_fd, dest, piece)
            start += len(piece)
            dest += len(piece)


def decompress_frame(codec: Codec, data: bytes, size: int) -> bytes:
    """One independently compressed frame: exactly one codec frame, no trailing bytes, ``size`` bytes out
    (never more than ``size + 1`` produced). Raises ValueError naming what is wrong."""
    if codec == Codec.LZ4:
        import lz4.frame  # type: ignore[import-untyped,import-not-found,unused-ignore]

        decoder = lz4.frame.LZ4FrameDecompressor()
        try:
            out = bytes(decoder.decompress(data, max_length=size + 1))
        except RuntimeError as exc:
            raise ValueError(f"lz4: {exc}") from None
        complete, rest = decoder.eof, len(decoder.unused_data or b"")
    elif codec == Codec.ZSTD:
        out, complete, rest = _zstd_frame(data, size)
    else:
        raise ValueError(f"codec {int(codec)} is not a compression")
    if not complete:
        raise ValueError(f"{codec.name.lower()} frame incomplete after {len(out)} bytes")
    if len(out) != size:
        raise ValueError(f"decompresses to {'more than ' if len(out) > size else ''}{min(len(out), size)} "
                         f"bytes, the table says {size}")
    if rest:
        raise ValueError(f"{rest} bytes after the {codec.name.lower()} frame")
    return out


def _zstd_frame(data: bytes, size: int) -> tuple[bytes, bool, int]:
    import zstandard

    try:
        declared = zstandard.frame_content_size(data)
        decoder = zstandard.ZstdDecompressor().decompressobj()
        if declared >= 0:
            if declared != size:
                raise ValueError(f"zstd frame declares {declared} bytes, the table says {size}")
            out = decoder.decompress(data)  # libzstd refuses output that differs from the declared size
        else:  # no declared size: feed it in small steps so a bomb stops at size + 1 bytes
            parts, total, pos = [], 0, 0
            while pos < len(data) and total <= size and not decoder.eof:
                piece = decoder.decompress(data[pos:pos + _ZSTD_FEED])
                parts.append(piece)
                total += len(piece)
                pos += _ZSTD_FEED
            out = b"".join(parts)
    except zstandard.ZstdError as exc:
        raise ValueError(f"zstd: {exc}") from None
    return out, decoder.eof, len(decoder.unused_data)


def write_data(obj: DataObject, out_fd: int, start: int, length: int, dest: int) -> None:
    """Copy ``length`` uncompressed bytes of ``obj`` from ``start`` to ``dest`` of ``out_fd``, from a compressed
    object frame by frame or from a plain file directly."""
    if obj.compressed:
        with FrameReader(obj) as reader:
            reader.copy_to(out_fd, start, length, dest)
        return
    from .fsutil import copy_range

    with obj.path.open("rb") as fin:
        if os.fstat(fin.fileno()).st_size < start + length:
            raise ArtifactError(f"{obj.path} is shorter than its mappings need ({start + length} bytes)",
                                hint="copy the build again from a good source", code=ExitCode.INTEGRITY)
        copy_range(fin.fileno(), out_fd, start, start + length, dest)
