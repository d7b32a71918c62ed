"""The rules a header is judged by, each named after the upstream code that decides it.

Upstream (e2b-dev/infra ``packages/shared/pkg/storage/header/``, HEAD 54693ff35) judges a header twice:

* ``LoadHeader`` -> ``DeserializeBytes`` (``serialization*.go``, ``header.go NewHeader``,
  ``compact.go NewMapping``): an error there means no sandbox of the build starts. Here: the parse raises
  :class:`HeaderRejected` naming the rule (:func:`reject`).
* ``compact.go Mapping.Validate(Size, BlockSize)`` (``mapping.go ValidateMappings`` when 4096 is not a
  multiple of BlockSize), which ``diff.go ToDiffHeader`` runs on every header upstream writes: a header that
  loads but fails it is one upstream never writes, and its v3+ lookups fail where it is wrong
  (``header.go getMapping``). Here: a FAIL problem (:func:`check`).

Where this tool deliberately says more than upstream, the problem is a warning that still states upstream's
verdict (docs/verify.md, "Where verify differs from upstream", lists each and why).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from ..errors import ArtifactError, ExitCode
from .model import KNOWN_BLOCK_SIZES, PAGE_SIZE, round_up_to_page

if TYPE_CHECKING:
    from .model import Header

MAX_PROBLEMS = 20  # problems listed per header; the rest are counted


class Verdict(enum.Enum):
    """What upstream's own code does with a header that breaks the rule."""

    REJECT = "upstream's LoadHeader refuses the header"
    INVALID = "upstream loads it, but Mapping.Validate refuses it"
    ACCEPT = "upstream accepts it"


@dataclass(frozen=True)
class Rule:
    id: str
    upstream: str  # the file and function that decide it (under packages/shared/pkg/storage/)
    says: str  # the rule, in upstream's terms


_LIST = (
    Rule("metadata", "header/serialization.go DeserializeBytes", "a header starts with 64 bytes of metadata"),
    Rule("version", "header/serialization.go DeserializeBytes", "Version & 0xFFFF is a layout from 1 to 5"),
    Rule("block-size-zero", "header/header.go NewHeader, header/serialization_v5.go deserializeV5",
         "BlockSize is not zero"),
    Rule("v3-records", "header/serialization_v3.go deserializeV3", "v1-3 mappings are whole 40-byte records"),
    Rule("records-bound", "header/serialization_v3.go deserializeV3",
         "(this tool) no more v1-3 records than 4 KiB pages of the device"),
    Rule("implicit-mapping", "header/header.go NewHeader",
         "no mappings: one mapping of the header's own build over Size rounded up to 4096 (v5: all zeros)"),
    Rule("page-alignment", "header/header.go NewHeader -> header/compact.go NewMapping",
         "Offset, Length and BuildStorageOffset are multiples of 4096"),
    Rule("page-range", "header/compact.go NewMapping, header/serialization_v5.go readV5MappingSection",
         "every page index fits in 32 bits (storage pages are not negative)"),
    Rule("unique-builds", "header/compact.go NewMapping", "at most 65535 distinct builds in the mappings"),
    Rule("flags-byte", "header/serialization_v4.go deserializeV4, header/serialization_v5.go deserializeV5",
         "v4/v5: [u8 flags][u32 length][LZ4 frame] after the metadata, with no fallback"),
    Rule("block-prefix", "header/serialization_v4.go deserializeV4",
         "at least the flags byte and the length prefix follow the metadata"),
    Rule("block-cap", "header/serialization_v4.go deserializeV4",
         "the length prefix is at most 256 MiB (v4MaxUncompressedHeaderSize)"),
    Rule("lz4-frame", "header/serialization_v4.go decompressLZ4", "the block is one valid LZ4 frame"),
    Rule("block-length", "header/serialization_v4.go deserializeV4",
         "the LZ4 frame decompresses to exactly the length prefix"),
    Rule("builds-count", "header/serialization_v4.go readV4BuildsSection",
         "the builds count fits the rest of the block (64 bytes a build at least) and every entry is whole"),
    Rule("frame-table", "compress_frame_table.go DeserializeFrameTable",
         "frames only under a codec, at most 2^20, sizes > 0, sorted in both address spaces"),
    Rule("mapping-count", "header/serialization_v4.go deserializeV4, header/serialization_v5.go "
         "readV5MappingSection", "the mapping count fits the rest of the block (v4: 40 bytes a mapping; v5: 4 "
         "bytes, at most 8 Mi)"),
    Rule("v5-build-table", "header/serialization_v5.go readV5MappingSection",
         "the v5 build-id table has at most 65535 ids, all in the block"),
    Rule("v5-varint", "header/serialization_v5.go readV5MappingSection",
         "every v5 column value is a whole varint of at most 64 bits (binary.ReadUvarint)"),
    Rule("build-index", "header/serialization_v5.go readV5MappingSection",
         "a v5 build index is below the build-id table's size"),
    Rule("trailing-bytes", "header/serialization_v4.go deserializeV4, header/serialization_v5.go "
         "readV5MappingSection", "bytes after the last mapping inside the block are never read"),
    Rule("zero-length", "header/compact.go Mapping.Validate, header/serialization_v5.go readV5MappingSection",
         "v1-4: a zero-length mapping at the running offset passes; v5 refuses it at load"),
    Rule("contiguity", "header/compact.go Mapping.Validate",
         "mappings are contiguous from 0, in file order (v5 refuses an overlap at load)"),
    Rule("coverage", "header/compact.go Mapping.Validate",
         "the mappings end exactly at Size (v5 refuses one past it at load, and fills the rest with zeros)"),
    Rule("size-rounding", "header/header.go NewHeader + header/compact.go Mapping.Validate",
         "Size is a multiple of 4096: mappings are whole pages (the implicit one is rounded up), so they can "
         "cover Size exactly only then"),
    Rule("block-multiple", "header/compact.go Mapping.Validate -> header/mapping.go ValidateMappings",
         "with a BlockSize 4096 is not a multiple of, every Length is a multiple of BlockSize"),
    Rule("block-size", "header/diff.go IsEmptyBlock",
         "upstream loads any non-zero BlockSize, but writes layers only with 4096 or 2 MiB"),
    Rule("incomplete", "header/serialization.go LoadHeader, StoreHeader",
         "flags bit 0 (upload pending) is loaded without backfill; StoreHeader never stores such a header"),
)
RULES = {r.id: r for r in _LIST}


class HeaderRejected(ArtifactError):
    """A header upstream's ``LoadHeader`` refuses (or, for a deliberate difference, this tool refuses)."""

    def __init__(self, where: str, rule: Rule, detail: str, *, upstream: Verdict = Verdict.REJECT) -> None:
        verdict = (f"{rule.upstream} refuses it, so upstream's LoadHeader fails" if upstream is Verdict.REJECT
                   else f"refused here; {upstream.value} ({rule.upstream})")
        super().__init__(f"{where}: malformed header: {detail} [{rule.id}: {verdict}]",
                         hint="the header is optional: move it aside and the orchestrator maps the data file "
                              "1:1, or re-export the build", code=ExitCode.BAD_INPUT)
        self.rule = rule
        self.upstream = upstream


def reject(where: str, rule_id: str, detail: str) -> HeaderRejected:
    """The error for a header upstream's ``LoadHeader`` refuses under ``rule_id``."""
    return HeaderRejected(where, RULES[rule_id], detail)


@dataclass(frozen=True)
class Problem:
    """A rule a loaded header breaks: ``FAIL`` when upstream refuses it too, ``warn`` where only this tool
    objects (``upstream`` then says what upstream does)."""

    rule: Rule
    detail: str
    upstream: Verdict
    severity: Literal["FAIL", "warn"]

    def __str__(self) -> str:
        return f"{self.detail} [{self.rule.id}: {self.upstream.value}, {self.rule.upstream}]"


class _Found:
    """Problems listed up to :data:`MAX_PROBLEMS`, the rest counted; ``last`` ones are always listed."""

    def __init__(self) -> None:
        self.items: list[Problem] = []
        self.last: list[Problem] = []
        self.more = 0
        self.more_refused: Problem | None = None  # the first counted problem upstream refuses too

    def add(self, rule_id: str, detail: str, upstream: Verdict, *, last: bool = False) -> None:
        problem = Problem(RULES[rule_id], detail, upstream, "warn" if upstream is Verdict.ACCEPT else "FAIL")
        if last:
            self.last.append(problem)
        elif len(self.items) >= MAX_PROBLEMS:
            self.more += 1
            if problem.severity == "FAIL" and self.more_refused is None:
                self.more_refused = problem
        else:
            self.items.append(problem)

    def listed(self) -> list[Problem]:
        if not self.more:
            return self.items + self.last
        like = self.more_refused or self.items[-1]  # a FAIL among the counted ones keeps the summary a FAIL
        summary = Problem(like.rule, f"... and {self.more} more problems in the mappings", like.upstream,
                          like.severity)
        return [*self.items, summary, *self.last]


def check(h: Header) -> list[Problem]:
    """The problems of a loaded header: ``Mapping.Validate(Size, BlockSize)`` emulated rule by rule (all
    findings, where upstream stops at the first), and the deliberate warnings."""
    found = _Found()
    if h.block_size not in KNOWN_BLOCK_SIZES:
        found.add("block-size", f"block size {h.block_size} is neither 4096 nor 2 MiB", Verdict.ACCEPT)
    if h.trailing_bytes:
        found.add("trailing-bytes", f"{h.trailing_bytes} bytes after the mappings inside the v{h.version} block",
                  Verdict.ACCEPT)
    _validate(h, found)
    return found.listed()


def _validate(h: Header, found: _Found) -> None:
    size, block = h.size, h.block_size
    by_block = block > 0 and PAGE_SIZE % block != 0  # Validate falls back to ValidateMappings(..., BlockSize)
    end = size
    if size % PAGE_SIZE and len(h.mappings):
        end = round_up_to_page(size)
        found.add("size-rounding", f"size {size} is not a multiple of 4096: the mappings are whole pages "
                                   f"(upstream rounds the implicit one up to {end})", Verdict.INVALID)
    position = 0
    for i, m in enumerate(h.mappings):
        where = f"mapping {i} [{m.offset:#x}, {m.end:#x})"
        if m.length == 0:
            found.add("zero-length", f"{where}: zero length", Verdict.ACCEPT)
        if m.offset > position:
            found.add("contiguity", f"gap [{position:#x}, {m.offset:#x}) before {where}", Verdict.INVALID)
        elif m.offset < position:
            found.add("contiguity", f"{where} overlaps the previous mapping (which ends at {position:#x})",
                      Verdict.INVALID)
        if by_block and m.length % block:
            found.add("block-multiple", f"{where}: length {m.length:#x} is not a multiple of the block size "
                                        f"{block:#x}", Verdict.INVALID)
        if m.end > end:
            found.add("coverage", f"{where} runs past the size {size:#x}", Verdict.INVALID)
        position = max(position, m.end)
    if position < size:
        found.add("coverage", f"mappings end at {position:#x}, short of the size {size:#x}", Verdict.INVALID,
                  last=True)
