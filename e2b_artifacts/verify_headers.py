"""verify's header findings: each header judged rule by rule as upstream judges it (:mod:`.header.rules`), and
the chain of builds it maps to, each read as upstream reads it (:mod:`.header.chain`): the object it opens,
that object's header version and compression, and whether it is there and long enough."""

from __future__ import annotations

from pathlib import Path

from . import header as header_mod
from .errors import ArtifactError
from .findings import Finding, Fix
from .layout import DATA_FILE_OF, HEADER_SUFFIX, HEADERS, compressed_names, uncompressed_size_name

REEXPORT_HINT = "re-export the build; the header is optional: moving it aside makes the orchestrator map the data 1:1"


def check_headers(build_dir: Path) -> list[Finding]:
    findings: list[Finding] = []
    for name in HEADERS:
        path = build_dir / name
        if not (path.exists() or path.is_symlink()):
            continue
        check = f"header.{name.removesuffix(HEADER_SUFFIX)}"
        try:
            hdr = header_mod.read_header(path)
        except ArtifactError as exc:
            findings.append(Finding(check, "FAIL", exc.message, exc.hint, fix=Fix.BUILD_REBUILD))
            continue
        findings.extend(_judged(build_dir, hdr, check))
        findings.append(_chain(build_dir, DATA_FILE_OF[name], hdr, check))
    return findings


def _judged(build_dir: Path, hdr: header_mod.Header, check: str) -> list[Finding]:
    summary = (f"v{hdr.version}, block {hdr.block_size}, size {hdr.size}, generation {hdr.generation}, "
               f"{len(hdr.mappings)} mappings, own data {_codec_text(hdr.own_codec)}"
               + (", flagged incomplete (a peer's in-flight header; upstream never stores one)" if hdr.incomplete
                  else ""))
    problems = hdr.problems()
    fails = [str(p) for p in problems if p.severity == "FAIL"]
    out = [Finding(check, "FAIL", summary + ": " + "; ".join(fails[:5]), REEXPORT_HINT, fix=Fix.BUILD_REBUILD)
           if fails else Finding(check, "ok", summary)]
    out.extend(Finding(check, "warn", str(p), "upstream accepts this; see docs/verify.md, 'Where verify differs "
                                              "from upstream'") for p in problems if p.severity == "warn")
    if hdr.build_id != build_dir.name:
        out.append(Finding(check, "warn", f"header build id {hdr.build_id} differs from the directory name "
                                          f"{build_dir.name}", "check that the header belongs to this build"))
    return out


def _codec_text(codec: header_mod.Codec) -> str:
    return "uncompressed" if codec is header_mod.Codec.NONE else codec.name.lower()


def _chain(build_dir: Path, data_name: str, hdr: header_mod.Header, check: str) -> Finding:
    storage = build_dir.parent  # parents live beside the build, in the same storage
    header_name = data_name + HEADER_SUFFIX

    def load(build_id: str) -> header_mod.Header | None:
        path = storage / build_id / header_name
        return header_mod.read_header(path) if path.exists() or path.is_symlink() else None

    needed = hdr.required_lengths()
    links, failures = [], []
    for link in header_mod.resolve(hdr, data_name, load):
        own = link.own or link.build_id == build_dir.name
        where = build_dir if own else storage / link.build_id
        label = "this build" if own else f"parent {link.build_id}"
        state, failure = _state(where, link, needed.get(link.build_id))
        if failure:
            failures.append(f"{label}: {failure}")
        links.append(f"{'this build' if own else link.build_id} ({_describe(link)}): {state}")
    text = f"chain of {data_name}: v{hdr.version} generation {hdr.generation} {build_dir.name} <- " + (
        ", ".join(links) if links else "(no data from any build: all zero)")
    if failures:
        return Finding(check, "FAIL", text + "; " + "; ".join(failures),
                       "copy the missing parent builds into storage (e2b-artifact sync ...), or rebuild this template",
                       fix=Fix.PARENTS_SYNC)
    return Finding(check, "ok", text)


def _describe(link: header_mod.Link) -> str:
    parts = []
    if link.version is not None:
        parts.append(f"v{link.version} generation {link.generation}")
    parts.append(f"{link.codec_name} {link.decided.value}")
    return ", ".join(parts)


def _state(where: Path, link: header_mod.Link, needed: int | None) -> tuple[str, str]:
    """(short state for the chain line, failure sentence or "")."""
    if link.codec is None:
        return "UNREADABLE", f"upstream cannot open it: its header fails to load ({link.error})"
    path = where / link.object_name
    if not path.is_file():
        others = [n for n in (link.object_name.removesuffix(link.codec.suffix),
                              *compressed_names(link.object_name.removesuffix(link.codec.suffix)))
                  if n != link.object_name and (where / n).is_file()]
        seen = f"; only {', '.join(others)} is there" if others else ""
        return "MISSING", f"upstream opens {path} ({link.codec_name} {link.decided.value}): missing{seen}"
    length = _uncompressed_length(path, link)
    if needed is not None and length is not None and length < needed:
        return "short", f"{path} holds {length} bytes{' uncompressed' if link.codec.suffix else ''}, " \
                        f"mappings need {needed}"
    return "ok" if length is not None or needed is None else "ok, length not known", ""


def _uncompressed_length(path: Path, link: header_mod.Link) -> int | None:
    if link.codec is header_mod.Codec.NONE:
        return path.stat().st_size
    if link.size is not None:
        return link.size
    sidecar = path.parent / uncompressed_size_name(path.name)
    try:
        return int(sidecar.read_text().strip()) if sidecar.is_file() and sidecar.stat().st_size < 32 else None
    except ValueError:
        return None
