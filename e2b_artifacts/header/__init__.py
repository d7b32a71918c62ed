"""E2B's ``memfile.header`` / ``rootfs.ext4.header``: read, judged and written as upstream does.

Layout (e2b-dev/infra ``packages/shared/pkg/storage/header/``, HEAD 54693ff35), all little-endian:

* 64-byte metadata: u64 version, u64 block size, u64 size, u64 generation, 16-byte build id, 16-byte base
  build id. ``version & 0xFFFF`` selects the layout.
* versions 1-3: 40-byte mappings to the end of the file (u64 offset, u64 length, 16-byte build id, u64
  storage offset).
* versions 4 and 5: ``[metadata][u8 flags][u32 block length][LZ4 frame]``; the block holds the builds
  section (``serialization_v4.go`` ``readV4BuildsSection``: u32 count, then per build ``{16-byte id, i64
  uncompressed size, SHA-256 of the uncompressed data}`` and its frame table, ``compress_frame_table.go``
  ``DeserializeFrameTable``: u32 codec (0 none, 1 zstd, 2 lz4), u32 frame count, then per frame ``{i64 StartU,
  i64 StartC, i32 SizeU, i32 SizeC}``), then the mappings (v4: counted 40-byte records; v5: columnar varints
  in 4 KiB pages, nil-build gaps left out).

Modules: :mod:`.model` (what a header holds, and the sizes of its layout), :mod:`.parse` (reading it,
refusing what ``LoadHeader`` refuses), :mod:`.rules` (every rule with the upstream code that decides it;
what ``Mapping.Validate`` refuses), :mod:`.chain` (how upstream reads each build a header maps to),
:mod:`.write` (v1-4 writer).
"""

from .chain import Decided, Link, chain_text, chain_view, resolve
from .model import NIL_BUILD, BuildFile, Codec, Frame, Header, Mapping, Mappings
from .parse import MAX_BLOCK_BYTES, MAX_FRAMES, max_mappings, parent_build_ids, parse_header, read_header
from .rules import MAX_PROBLEMS, RULES, HeaderRejected, Problem, Rule, Verdict
from .write import serialize, trim_frames

__all__ = [
    "MAX_BLOCK_BYTES",
    "MAX_FRAMES",
    "MAX_PROBLEMS",
    "NIL_BUILD",
    "RULES",
    "BuildFile",
    "Codec",
    "Decided",
    "Frame",
    "Header",
    "HeaderRejected",
    "Link",
    "Mapping",
    "Mappings",
    "Problem",
    "Rule",
    "Verdict",
    "chain_text",
    "chain_view",
    "max_mappings",
    "parent_build_ids",
    "parse_header",
    "read_header",
    "resolve",
    "serialize",
    "trim_frames",
]
