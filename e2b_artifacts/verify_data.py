"""``verify``'s checks of the data objects behind a build's v4+ headers: compressed objects read through their
frame tables, and the per-build SHA-256 the builds table records, for this build and every ancestor its
mappings draw on (as upstream's ``cmd/inspect-build -validate`` with ``-recursive`` checks them).

What ``inspect-build -validate`` (``validate.go`` ``validateBuild``/``reportValidation``) computes, and this
checks the same way: the SHA-256 of the build's uncompressed data file, bytes ``[0, size)`` with ``size`` the
builds entry's size, read frame by frame; a zero checksum is "n/a" (nothing recorded); the build's own frame
table must cover every range its mappings use and every frame must be used (``validateFrameTable``); an
ancestor's size as the descendant records it must equal the ancestor's own record.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

from . import compressed as co
from . import header as header_mod
from . import layout
from .errors import ArtifactError
from .findings import Finding, Fix

NO_CHECKSUM = "0" * 64
MAX_LISTED = 5


def check_data_objects(build_dir: Path, *, quick: bool = False) -> list[Finding]:
    findings: list[Finding] = []
    for data_name in layout.DATA_FILES:
        findings.extend(_check_data_file(build_dir, data_name, quick))
    return findings


def _check_data_file(build_dir: Path, data_name: str, quick: bool) -> list[Finding]:
    check = f"data.{data_name}"
    storage, build_id = build_dir.parent, build_dir.name
    header_path = build_dir / layout.HEADER_OF[data_name]
    stored = [n for n in layout.compressed_names(data_name) if (build_dir / n).exists()]
    try:
        hdr = header_mod.read_header(header_path) if header_path.is_file() else None
    except ArtifactError:
        return []  # the header check reports it
    if hdr is None or hdr.version < 4:
        if stored and not (build_dir / data_name).exists():
            why = "no header" if hdr is None else f"its header is v{hdr.version}" if hdr.mappings is not None \
                else "its header's mappings were not decoded"
            return [Finding(check, "FAIL", f"{', '.join(stored)} without a v4+ {header_path.name} recording its "
                                           f"frames ({why}): the orchestrator reads {data_name}, which is missing",
                            f"copy the build's v4 {header_path.name} too, or decompress it "
                            f"(e2b-artifact sync pull --decompress)", fix=Fix.FILE_RESTORE)]
        return []
    findings: list[Finding] = []
    if build_id not in hdr.builds and hdr.build_id not in hdr.builds:
        findings.append(Finding(check, "FAIL", f"v{hdr.version} {header_path.name} has no builds entry for its own "
                                               f"build {hdr.build_id} (inspect-build -validate: 'V4+ header is "
                                               "missing its current build entry')", "re-export the build"))
    for bid in _drawn_on(hdr):
        obj = co.resolve(storage, bid, data_name, hdr)
        own = bid == hdr.build_id
        if own and obj.record is not None and obj.record.empty and bid not in hdr.referenced_build_ids():
            findings.append(Finding(check, "ok", f"build {bid}: no {data_name} data of its own (every block maps "
                                                 "to an ancestor or is zero): no object to read"))
            continue
        if not own:
            findings.extend(_against_own_record(storage, obj, hdr, check))
        if own or obj.record is None:
            findings.extend(_check_object(obj, hdr if own else None, check, quick))
        else:  # an ancestor's object is checked by its own header's record, the one its own build wrote
            findings.extend(_check_object(co.resolve(storage, bid, data_name), None, check, quick))
    return findings


def _drawn_on(hdr: header_mod.Header) -> list[str]:
    """This build first, then every ancestor a mapping reads from."""
    ids = [b for b in hdr.referenced_build_ids() if b != hdr.build_id]
    return [hdr.build_id, *ids] if hdr.build_id in hdr.referenced_build_ids() or hdr.build_id in hdr.builds else ids


def _against_own_record(storage: Path, obj: co.DataObject, child: header_mod.Header, check: str) -> list[Finding]:
    """A descendant's record of an ancestor must agree with the ancestor's own header (upstream reads the
    ancestor's object by the descendant's record)."""
    if obj.record is None:
        return []
    own = co.resolve(storage, obj.build_id, obj.data_name)
    if own.record is None:
        return []
    wrong = []
    if own.record.codec != obj.record.codec:
        wrong.append(f"codec {obj.record.codec.name.lower()} here, {own.record.codec.name.lower()} in its own header")
    if own.record.size != obj.record.size:
        wrong.append(f"size {obj.record.size} here, {own.record.size} in its own header (inspect-build: Size "
                     "MISMATCH)")
    if own.record.sha256 != obj.record.sha256:
        wrong.append("a different SHA-256 than its own header")
    known = set(own.record.frames)
    stray = [i for i, f in enumerate(obj.record.frames) if f not in known]
    if stray:
        wrong.append(f"frames {', '.join(map(str, stray[:MAX_LISTED]))} not in its own frame table")
    wrong.extend(_unmapped_reads(obj, child))
    if not wrong:
        return []
    return [Finding(check, "FAIL", f"{layout.HEADER_OF[obj.data_name]} of {child.build_id}: the record of ancestor "
                                   f"{obj.build_id}: " + "; ".join(wrong),
                    "re-export the chain from one source (the records were written against different data)",
                    fix=Fix.BUILD_REBUILD)]


def _unmapped_reads(obj: co.DataObject, hdr: header_mod.Header) -> list[str]:
    """Ranges ``hdr``'s mappings read from ``obj``'s build that its (possibly trimmed) table has no frame for."""
    if not obj.compressed:
        return []
    gaps = []
    for start, end in _merged(_used_ranges(hdr, obj.build_id)):
        position = start
        while position < end:
            index = obj.record.frame_at(position) if obj.record is not None else None
            if index is None:
                gaps.append(f"uncompressed {position:#x} (mapped) is in no frame")
                break
            position = obj.frames[index].end_u
    return gaps[:MAX_LISTED]


def _used_ranges(hdr: header_mod.Header, build_id: str) -> list[tuple[int, int]]:
    return [(m.storage_offset, m.storage_offset + m.length) for m in hdr.mappings if m.build_id == build_id]


def _merged(ranges: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for start, end in sorted(ranges):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


def _check_object(obj: co.DataObject, own_header: header_mod.Header | None, check: str,
                  quick: bool) -> list[Finding]:
    label = f"build {obj.build_id}: {obj.name}"
    if not obj.path.is_file():
        return [Finding(check, "FAIL", f"{label} missing ({'named by ' + obj.source if obj.record else 'plain'}); "
                                       "the orchestrator fails every read of its blocks",
                        "copy the build into storage (e2b-artifact sync ... --with-parents)", fix=Fix.PARENTS_SYNC)]
    if obj.record is None:
        return []  # a plain ancestor without a v4+ record: the header check covers its length
    problems: list[str] = []
    notes: list[str] = []
    object_size = obj.path.stat().st_size
    if obj.compressed:
        problems += co.coverage_problems(obj, object_size)
        if own_header is not None:
            problems += _frame_use_problems(obj, own_header)
        problems += _sidecar_problems(obj, notes)
    elif object_size != obj.record.size:
        problems.append(f"{object_size} bytes, its builds entry says {obj.record.size}")
    if problems:
        return [Finding(check, "FAIL", f"{label}: " + "; ".join(problems[:MAX_LISTED])
                        + (f" (and {len(problems) - MAX_LISTED} more)" if len(problems) > MAX_LISTED else ""),
                        "re-export the build; upstream's inspect-build -validate rejects it the same way",
                        fix=Fix.FILE_RESTORE)]
    what = (f"{len(obj.frames)} {obj.codec.name.lower()} frames cover {obj.record.size} bytes "
            f"({object_size} stored, {object_size / max(obj.record.size, 1):.1%})" if obj.compressed
            else f"{obj.record.size} bytes, stored uncompressed")
    warnings = [Finding(check, "warn", f"{label}: {note}", "write the sidecar (its uncompressed size in decimal)")
                for note in notes]
    if quick:
        return [Finding(check, "ok", f"{label}: {what}; frames not decompressed (--quick)"), *warnings]
    try:
        digest = _sha256(obj)
    except ArtifactError as exc:
        return [Finding(check, "FAIL", exc.message, exc.hint, fix=Fix.FILE_RESTORE)]
    if obj.record.sha256 == NO_CHECKSUM:
        return [Finding(check, "ok", f"{label}: {what}, every frame decompresses to its size; no SHA-256 recorded "
                                     f"(n/a, as inspect-build shows it; computed {digest})"), *warnings]
    if digest != obj.record.sha256:
        return [Finding(check, "FAIL", f"{label}: SHA-256 of the uncompressed data is {digest}, its builds entry "
                                       f"records {obj.record.sha256} (inspect-build -validate: Checksum MISMATCH)",
                        f"restore {obj.build_id}/{obj.name} from a good copy", fix=Fix.FILE_RESTORE)]
    return [Finding(check, "ok", f"{label}: {what}, every frame decompresses to its size, SHA-256 matches "
                                 "(as inspect-build -validate computes it)"), *warnings]


def _frame_use_problems(obj: co.DataObject, hdr: header_mod.Header) -> list[str]:
    """``validateFrameTable``: the build's own table covers every range its mappings use, and each frame is used."""
    used = _merged(_used_ranges(hdr, obj.build_id))
    problems = _unmapped_reads(obj, hdr)
    for i, f in enumerate(obj.frames):
        if not any(start < f.end_u and end > f.start_u for start, end in used):
            problems.append(f"frame {i} [{f.start_u:#x}, {f.end_u:#x}) is used by no mapping")
    return problems


def _sidecar_problems(obj: co.DataObject, notes: list[str]) -> list[str]:
    try:
        size = co.read_sidecar(obj.sidecar)
    except ArtifactError as exc:
        return [exc.message]
    if size is None:
        notes.append(f"no {obj.sidecar.name}: upstream's file backend writes it; it then reports the compressed "
                     "size as the object's size (reads go by the header's record, so they are not affected)")
        return []
    if obj.record is not None and size != obj.record.size:
        return [f"{obj.sidecar.name} says {size}, the builds entry {obj.record.size}"]
    return []


def _sha256(obj: co.DataObject) -> str:
    hasher = hashlib.sha256()
    if obj.compressed:
        with co.FrameReader(obj) as reader:
            for _, data in reader.frames():
                hasher.update(data)
    else:
        with obj.path.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                hasher.update(chunk)
    return hasher.hexdigest()
