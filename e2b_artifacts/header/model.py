"""What a header holds: metadata, the mappings (kept packed), the v4/v5 builds section."""

from __future__ import annotations

import bisect
import enum
import struct
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, overload

if TYPE_CHECKING:
    from .rules import Problem

from .. import layout

METADATA_SIZE = 64
MAPPING_SIZE = 40
NIL_BUILD = str(uuid.UUID(int=0))
PAGE_SIZE = 4096  # upstream's header.PageSize: the unit of every mapping (compact.go NewMapping)
KNOWN_BLOCK_SIZES = (4096, 2 << 20)
META = struct.Struct("<QQQQ16s16s")
MAP = struct.Struct("<QQ16sQ")


def uuid_str(raw: bytes) -> str:
    return str(uuid.UUID(bytes=raw))


def round_up_to_page(n: int) -> int:
    return -(-n // PAGE_SIZE) * PAGE_SIZE


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
        return cls(b"".join(MAP.pack(m.offset, m.length, ids.get(m.build_id) or ids.setdefault(
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
        dev_offset, length, build_id, storage_offset = MAP.unpack_from(self._records, position * MAPPING_SIZE)
        return Mapping(dev_offset, length, uuid_str(build_id), storage_offset)

    def __iter__(self) -> Iterator[Mapping]:
        ids: dict[bytes, str] = {}
        for offset, length, raw_id, storage in MAP.iter_unpack(self._records):
            yield Mapping(offset, length, ids.get(raw_id) or ids.setdefault(raw_id, uuid_str(raw_id)), storage)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Mappings):
            return self._records == other._records
        if isinstance(other, Sequence):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Mappings({len(self)} mappings)"


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

    @property
    def empty(self) -> bool:
        """No data of its own (every block from an ancestor, or zero): upstream serializes its table with no
        frames and codec none, and nothing reads its object."""
        return self.size == 0 and not self.frames

    def frame_at(self, offset: int) -> int | None:
        """Index of the frame holding uncompressed byte ``offset`` (None: before, after or in a gap)."""
        i = bisect.bisect_right(self.frames, offset, key=lambda f: f.start_u) - 1
        return i if i >= 0 and offset < self.frames[i].end_u else None

@dataclass
class Header:
    """A parsed header: what upstream's ``DeserializeBytes`` ends up with (implicit mapping made, v5 gaps
    filled with nil mappings). :meth:`problems` says what ``Mapping.Validate`` and this tool object to."""

    version: int  # the layout number (raw ``Version & 0xFFFF``)
    block_size: int
    size: int
    generation: int
    build_id: str
    base_build_id: str
    mappings: Sequence[Mapping]
    raw_version: int = 0
    builds: dict[str, BuildFile] = field(default_factory=dict)
    incomplete: bool = False  # v4/v5 flag bit 0: upload still pending
    trailing_bytes: int = 0  # v4/v5: bytes after the mappings inside the block (upstream never reads them)

    def referenced_build_ids(self) -> list[str]:
        """Distinct non-nil build ids the mappings point at, in first-use order (the builds upstream reads;
        ``copy-build`` follows the same)."""
        seen: dict[str, None] = {}
        for m in self.mappings:
            if m.build_id != NIL_BUILD:
                seen.setdefault(m.build_id)
        return list(seen)

    def required_lengths(self) -> dict[str, int]:
        """Per referenced build: the data object must be at least this long."""
        need: dict[str, int] = {}
        for m in self.mappings:
            if m.build_id != NIL_BUILD:
                need[m.build_id] = max(need.get(m.build_id, 0), m.storage_offset + m.length)
        return need

    @property
    def own_codec(self) -> Codec:
        """How this header says its own build's data is stored: v1-3 always uncompressed; v4/v5 by the
        builds entry of its own build, uncompressed without one (serialization.go LoadHeader's backfill)."""
        own = self.builds.get(self.build_id) if self.version >= 4 else None
        return own.codec if own is not None else Codec.NONE

    def problems(self) -> list[Problem]:
        """What upstream's ``Mapping.Validate`` refuses (FAIL), and where this tool deliberately says more than
        upstream (warn): see :mod:`.rules`."""
        from .rules import check

        return check(self)
