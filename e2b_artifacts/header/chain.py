"""How upstream reads each build a header maps blocks to: which object, compressed how, decided by whom.

Mixed chains are normal: a v4/v5 child may map blocks to v3 ancestors, and its builds section may lack an
ancestor. Upstream decides per build (``orchestrator/pkg/sandbox/build/storage_diff.go`` ``createDiff`` and
``openFromLoadedHeader``, after ``header/serialization.go`` ``LoadHeader`` ran
``backfillMissingV3UncompressedBuilds``; e2b-dev/infra #2994 and #3447):

* a v1-3 header: every build it maps to gets an "uncompressed, size unknown" entry, so each is read from its
  plain object (``memfile``), whatever that build's own header says;
* a v4/v5 header's builds entry for the build: its codec decides (``memfile.lz4``/``.zstd``, or ``memfile``
  for codec 0); the header's own build without an entry is backfilled as uncompressed;
* an ancestor missing from a v4/v5 header's builds section: its own header decides; a v1-3 one means
  uncompressed, a v4/v5 one its own entry for itself (uncompressed without one); no header at all means a
  legacy build, read uncompressed. An ancestor header that fails to load fails the read.

An incomplete (peer-served) header skips the backfill; this tool reads it as if it had run.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import ArtifactError
from .model import Codec, Header


class Decided(enum.Enum):
    TABLE = "per this header's builds entry"
    BACKFILL = "per LoadHeader's backfill"  # every build of a v1-3 header; a v4/v5 header's own without entry
    OWN_HEADER = "per its own header"  # not in the builds section: createDiff loads the build's header
    NO_HEADER = "per createDiff's fallback: no header of its own"  # not in the section, no header: read plain
    UNREADABLE = "per its own header, which fails to load"  # createDiff fails


@dataclass(frozen=True)
class Link:
    """One build as upstream reads it through a header."""

    build_id: str
    own: bool  # the header's own build
    codec: Codec | None  # None: undecidable (its header fails to load)
    decided: Decided
    object_name: str  # what upstream opens under <build id>/ (``memfile.lz4``); "" when undecidable
    size: int | None  # uncompressed size a builds entry records (None: unknown, upstream asks the object)
    version: int | None  # the build's own header version, when read
    generation: int | None  # the build's own header generation, when read
    error: str = ""  # why its header failed to load

    @property
    def codec_name(self) -> str:
        return "?" if self.codec is None else _name(self.codec)


Loader = Callable[[str], Header | None]  # a build id -> its header for this data file; None: no header file


def resolve(header: Header, data_name: str, load: Loader) -> list[Link]:
    """Every build ``header`` maps blocks to (first-use order), read as upstream reads it. ``load`` gives an
    ancestor's own header (None when it has none; raises ArtifactError when it fails to load)."""
    links = []
    for build_id in header.referenced_build_ids():
        own = build_id == header.build_id
        theirs: Header | None = header if own else None
        error = ""
        if not own:
            try:
                theirs = load(build_id)
            except ArtifactError as exc:
                error = exc.message
        entry = header.builds.get(build_id)
        codec: Codec | None
        if header.version <= 3:
            codec, decided, size = Codec.NONE, Decided.BACKFILL, None
        elif entry is not None:
            codec, decided, size = entry.codec, Decided.TABLE, entry.size if entry.size > 0 else None
        elif own:
            codec, decided, size = Codec.NONE, Decided.BACKFILL, None
        elif error:
            codec, decided, size = None, Decided.UNREADABLE, None
        elif theirs is None:
            codec, decided, size = Codec.NONE, Decided.NO_HEADER, None
        else:
            codec, decided = theirs.own_codec, Decided.OWN_HEADER
            size = _own_size(theirs)
        links.append(Link(build_id, own, codec, decided, "" if codec is None else data_name + codec.suffix, size,
                          theirs.version if theirs else None, theirs.generation if theirs else None, error))
    return links


def _own_size(header: Header) -> int | None:
    entry = header.builds.get(header.build_id) if header.version >= 4 else None
    return entry.size if entry is not None and entry.size > 0 else None


def chain_view(data: bytes, data_name: str, where: str, load: Callable[[str], bytes | None]) -> dict[str, Any]:
    """For a sync plan: the header in ``data`` (its version, how its own data is stored) and every build it
    maps to as upstream reads it, as JSON. ``load`` gives an ancestor's header bytes (None: it has none)."""
    from .parse import parse_header

    hdr = parse_header(data, where)

    def loader(build_id: str) -> Header | None:
        raw = load(build_id)
        return None if raw is None else parse_header(raw, f"{build_id}/{data_name}.header")

    return {"file": data_name, "version": hdr.version, "generation": hdr.generation,
            "codec": _name(hdr.own_codec),
            "links": [{"build_id": k.build_id, "codec": k.codec_name, "object": k.object_name,
                       "decided_by": k.decided.value, "version": k.version, "generation": k.generation}
                      for k in resolve(hdr, data_name, loader)]}


def chain_text(view: dict[str, Any]) -> str:
    """One line of a :func:`chain_view`: ``memfile: v5 (zstd) <- <id> v3 uncompressed per its own header, ...``."""
    links = ", ".join(f"{k['build_id']} {'v' + str(k['version']) + ' ' if k['version'] else ''}{k['codec']} "
                      f"{k['decided_by']}" for k in view["links"])
    return f"{view['file']}: v{view['version']} ({view['codec']}) <- {links or 'no data from any build'}"


def _name(codec: Codec) -> str:
    return "uncompressed" if codec is Codec.NONE else codec.name.lower()
