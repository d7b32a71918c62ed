"""Cold start: move a build's snapshot and its orchestrator cache entries into quarantine; restore undoes it.

Nothing is deleted. ``<build>/.quarantine/<UTC timestamp>/`` receives ``snapfile``,
``memfile`` (and its compressed variants) and ``memfile.header``; the build's
``TEMPLATE_CACHE_DIR/<id>`` and ``SHARED_CHUNK_CACHE_PATH/<id>`` go to
``<quarantine>/cache/...`` when on the same filesystem, else beside themselves
under ``<cache>/.e2b-artifact-quarantine/<timestamp>/``. ``quarantine.json``
records every move (and the manifest as it was) so that ``restore`` puts each
byte back. Only renames are used: no copy, no partial state on another disk.
"""

from __future__ import annotations

import datetime as dt
import errno
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import layout, limits, manifest, metadata
from .errors import ArtifactError, ExitCode
from .fsutil import atomic_write_bytes, read_input, unused_path
from .jsoninput import load_json
from .layout import QUARANTINE_DIR
from .settings import Settings

RECORD_NAME = "quarantine.json"
CACHE_SIDE_DIR = ".e2b-artifact-quarantine"
CACHE_SETTINGS = ("TEMPLATE_CACHE_DIR", "SHARED_CHUNK_CACHE_PATH")
RESTART_NOTE = ("a running orchestrator keeps the template (snapfile, memfile mappings) in its in-memory cache "
                "for up to 25 h: restart it (template-manager too, when separate) so the change takes effect")


def snapshot_files(build_dir: Path) -> list[Path]:
    """``snapfile``, ``memfile`` and everything named ``memfile.*``/``snapfile.*`` (headers, compressed forms)."""
    found = []
    for entry in sorted(os.scandir(build_dir), key=lambda e: e.name):
        name = entry.name
        if layout.is_snapshot_name(name) and manifest.is_artifact_name(name) and entry.is_file(follow_symlinks=False):
            found.append(Path(entry.path))
    return found


@dataclass(frozen=True)
class Move:
    source: Path  # where it was
    dest: Path  # where it is now (in quarantine)
    what: str  # "snapshot" or the cache setting's name

    def to_dict(self) -> dict[str, str]:
        return {"from": str(self.source), "to": str(self.dest), "what": self.what}


@dataclass
class ColdStartResult:
    build_id: str
    timestamp: str
    quarantine: Path
    moves: list[Move] = field(default_factory=list)
    dry_run: bool = False
    manifest_updated: bool = False
    metadata_marked: bool = False
    leftovers: list[tuple[Path, Path]] = field(default_factory=list)  # stale temp files moved aside first

    @property
    def restore_command(self) -> str:
        return f"e2b-artifact restore {self.build_id} {self.timestamp}"

    def to_dict(self) -> dict[str, Any]:
        return {"ok": True, "build_id": self.build_id, "timestamp": self.timestamp, "dry_run": self.dry_run,
                "quarantine": str(self.quarantine), "moves": [m.to_dict() for m in self.moves],
                "manifest_updated": self.manifest_updated, "filesystem_only": self.metadata_marked,
                "restore": self.restore_command, "note": RESTART_NOTE,
                "leftovers_moved": [{"from": str(a), "to": str(b)} for a, b in self.leftovers]}


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")


def _same_fs(a: Path, b: Path) -> bool:
    return os.stat(a).st_dev == os.stat(b).st_dev


def plan_cold_start(build_dir: Path, settings: Settings, timestamp: str | None = None) -> ColdStartResult:
    build_id = build_dir.name
    stamp = timestamp or _now()
    quarantine = build_dir / QUARANTINE_DIR / stamp
    if quarantine.exists():
        quarantine = unused_path(quarantine)
        stamp = quarantine.name
    result = ColdStartResult(build_id, stamp, quarantine)
    for path in snapshot_files(build_dir):
        result.moves.append(Move(path, quarantine / path.name, "snapshot"))
    for name in CACHE_SETTINGS:
        resolved = settings[name]
        if resolved.value is None:
            continue
        entry = Path(resolved.value) / build_id
        if not entry.exists() and not entry.is_symlink():
            continue
        if _same_fs(entry.parent, build_dir):
            dest = quarantine / "cache" / name / build_id
        else:
            dest = entry.parent / CACHE_SIDE_DIR / stamp / build_id
        result.moves.append(Move(entry, dest, name))
    return result


def _filesystem_only_metadata(build_dir: Path) -> tuple[bytes, bytes]:
    """(current metadata.json bytes, the same document with ``"filesystem_only": true``)."""
    path = build_dir / metadata.FILE_NAME
    hint = "fix metadata.json first (e2b-artifact verify --fix), or cold-start without --filesystem-only"
    try:
        original = read_input(path, "metadata file", limit=limits.METADATA, missing_hint=hint)
        doc = load_json(original, str(path), hint)
    except ArtifactError as exc:
        raise ArtifactError(f"cannot mark {path} filesystem-only: {exc.message}", hint=exc.hint,
                            code=ExitCode.BAD_INPUT) from exc
    if not isinstance(doc, dict):
        raise ArtifactError(f"cannot mark {path} filesystem-only: not a JSON object", hint="fix metadata.json first",
                            code=ExitCode.BAD_INPUT)
    doc["filesystem_only"] = True
    return original, (json.dumps(doc, indent=2) + "\n").encode()


def cold_start(build_dir: Path, settings: Settings, *, dry_run: bool = False,
               filesystem_only: bool = False) -> ColdStartResult:
    """Quarantine the snapshot of ``build_dir`` and its cache entries (see the module docstring).

    ``filesystem_only`` also sets ``"filesystem_only": true`` in metadata.json, which makes HEAD
    orchestrators boot the rootfs instead of looking for a snapshot; restore puts the original back.
    """
    if not build_dir.is_dir():
        raise ArtifactError(f"build directory {build_dir} not found", hint="check the build id and the storage path "
                            "(e2b-artifact paths)", code=ExitCode.BAD_INPUT)
    with layout.lock(build_dir.parent, build_dir.name):
        leftovers = [] if dry_run else layout.sweep_stale(build_dir.parent, build_dir.name)
        result = plan_cold_start(build_dir, settings)
        result.dry_run = dry_run
        result.leftovers = leftovers
        if not result.moves:
            raise ArtifactError(f"{build_dir}: no snapshot files and no cache entries to move",
                                hint="nothing to do: the build already cold-boots from rootfs",
                                code=ExitCode.BAD_INPUT)
        new_metadata = None
        record: dict[str, Any] = {"build_id": result.build_id, "timestamp": result.timestamp,
                                  "build_dir": str(build_dir), "moves": [], "manifest": None, "metadata": None}
        if filesystem_only:
            original, new_metadata = _filesystem_only_metadata(build_dir)
            record["metadata"] = {"original": original.decode(), "written": new_metadata.decode()}
            result.metadata_marked = True
        if dry_run:
            return result
        _quarantine(build_dir, result, record, new_metadata)
        return result


def _quarantine(build_dir: Path, result: ColdStartResult, record: dict[str, Any], new_metadata: bytes | None) -> None:
    """Carry out a cold start in an order where a kill at any point leaves either a build that verifies or
    a quarantine record that ``restore`` completes:

    1. the record, listing every planned move (and the manifest and metadata as they were), is written
       before anything moves; a kill here leaves the build as it was;
    2. the manifest drops the snapshot files in one write: a kill here leaves them present but unlisted,
       which verify reports as a warning, not a failure;
    3. the renames: a kill between two of them splits memfile from snapfile (verify FAILs), and restore
       puts back what moved and leaves in place what had not;
    4. metadata.json (``--filesystem-only``), then its manifest entry: a kill between the two is the one
       other window where verify FAILs, and restore completes it.
    """
    result.quarantine.mkdir(parents=True, exist_ok=True)
    record_path = result.quarantine / RECORD_NAME
    old_manifest = build_dir / manifest.FILE_NAME
    if old_manifest.is_file():
        record["manifest"] = manifest.read_bytes(old_manifest).decode(errors="replace")
    record["moves"] = [m.to_dict() for m in result.moves]
    record["state"] = "moving"
    atomic_write_bytes(record_path, (json.dumps(record, indent=2) + "\n").encode())
    snapshot_names = [m.source.name for m in result.moves if m.what == "snapshot"]
    if record["manifest"] is not None:
        manifest.drop_manifest_entries(build_dir, snapshot_names)
    done: list[Move] = []
    try:
        for move in result.moves:
            move.dest.parent.mkdir(parents=True, exist_ok=True)
            os.rename(move.source, move.dest)
            done.append(move)
    except OSError as exc:
        for moved in reversed(done):  # put back what already moved
            os.rename(moved.dest, moved.source)
        if record["manifest"] is not None:
            atomic_write_bytes(old_manifest, record["manifest"].encode())
        record_path.unlink(missing_ok=True)
        _remove_empty_dirs(result.quarantine, stop=build_dir)
        raise ArtifactError(f"cannot move {move.source} to {move.dest}: {exc.strerror}; nothing was moved",
                            hint="check permissions and free space", code=ExitCode.BAD_INPUT) from exc
    if new_metadata is not None:
        atomic_write_bytes(build_dir / metadata.FILE_NAME, new_metadata)
        if record["manifest"] is not None:
            manifest.update_manifest_entry(build_dir, metadata.FILE_NAME)
    result.manifest_updated = record["manifest"] is not None
    record["state"] = "done"
    atomic_write_bytes(record_path, (json.dumps(record, indent=2) + "\n").encode())


@dataclass
class RestoreResult:
    build_id: str
    timestamp: str
    moves: list[Move] = field(default_factory=list)
    manifest_restored: bool = False
    metadata_restored: bool = False
    metadata_kept_at: Path | None = None  # the pre-cold-start metadata, when metadata.json changed since

    def to_dict(self) -> dict[str, Any]:
        return {"ok": True, "build_id": self.build_id, "timestamp": self.timestamp,
                "moves": [m.to_dict() for m in self.moves], "manifest_restored": self.manifest_restored,
                "metadata_restored": self.metadata_restored,
                "metadata_kept_at": str(self.metadata_kept_at) if self.metadata_kept_at else None,
                "note": RESTART_NOTE}


def list_quarantines(build_dir: Path) -> list[str]:
    root = build_dir / QUARANTINE_DIR
    return sorted(p.name for p in root.iterdir() if (p / RECORD_NAME).is_file()) if root.is_dir() else []


def restore(build_dir: Path, timestamp: str) -> RestoreResult:
    """Move everything a cold start quarantined back to where it was; refuses to overwrite anything."""
    quarantine = build_dir / QUARANTINE_DIR / timestamp
    record_path = quarantine / RECORD_NAME
    if "/" in timestamp or not record_path.is_file():
        known = ", ".join(list_quarantines(build_dir)) if build_dir.is_dir() else ""
        raise ArtifactError(f"no quarantine {timestamp!r} in {build_dir}",
                            hint=f"known timestamps: {known}" if known else "cold-start prints the timestamp",
                            code=ExitCode.BAD_INPUT)
    record = load_json(read_input(record_path, "quarantine record", limit=limits.QUARANTINE_RECORD,
                                  missing_hint="cold-start prints the timestamp"), str(record_path),
                       hint="the record was damaged; move the files back by hand (they are in the quarantine)")
    if not isinstance(record, dict) or not isinstance(record.get("moves"), list):
        raise ArtifactError(f"{record_path} is not a quarantine record", hint="move the files back by hand",
                            code=ExitCode.BAD_INPUT)
    moves = [Move(Path(m["from"]), Path(m["to"]), m["what"]) for m in record["moves"]]
    strays = [m.dest for m in moves if not (m.dest.is_relative_to(quarantine) or (
        m.dest.parent.name == timestamp and m.dest.parent.parent.name == CACHE_SIDE_DIR))]
    if strays:
        raise ArtifactError(f"{record_path} names paths outside the quarantine: " + ", ".join(map(str, strays)),
                            hint="the record was edited; move the files back by hand", code=ExitCode.BAD_INPUT)
    with layout.lock(build_dir.parent, build_dir.name):
        def there(p: Path) -> bool:
            return p.exists() or p.is_symlink()

        # A cold start killed while moving (record state "moving") left some sources in place: those
        # never moved and stay where they are; everything else must be in the quarantine, and nothing
        # may have come back in its place.
        interrupted = record.get("state") == "moving"
        pending = [m for m in moves if not (interrupted and there(m.source) and not there(m.dest))]
        busy = [m.source for m in pending if there(m.source)]
        if busy:
            raise ArtifactError("cannot restore: these paths exist again: " + ", ".join(map(str, busy)),
                                hint="move them aside first (e.g. a newer snapshot), then rerun restore",
                                code=ExitCode.CONFLICT)
        lost = [m.dest for m in pending if not there(m.dest)]
        if lost:
            raise ArtifactError("cannot restore: quarantined paths are gone: " + ", ".join(map(str, lost)),
                                hint="nothing was moved; check the quarantine directory", code=ExitCode.BAD_INPUT)
        result = RestoreResult(build_dir.name, timestamp)
        for move in pending:
            move.source.parent.mkdir(parents=True, exist_ok=True)
            os.rename(move.dest, move.source)
            result.moves.append(Move(move.dest, move.source, move.what))
        marked = record.get("metadata")
        if marked is not None:
            md_path = build_dir / metadata.FILE_NAME
            if md_path.is_file() and read_input(md_path, "metadata", limit=limits.METADATA, missing_hint="") \
                    == marked["written"].encode():
                atomic_write_bytes(md_path, marked["original"].encode())
                result.metadata_restored = True
            else:  # changed since the cold start: keep the newer file, say where the original is
                kept = unused_path(build_dir / (metadata.FILE_NAME + ".before-cold-start"))
                atomic_write_bytes(kept, marked["original"].encode())
                result.metadata_kept_at = kept
        if record.get("manifest") is not None:
            atomic_write_bytes(build_dir / manifest.FILE_NAME, record["manifest"].encode())
            result.manifest_restored = True
        record_path.unlink()  # our own bookkeeping; the user's files are all back
        for move in moves:
            _remove_empty_dirs(move.dest.parent, stop=move.dest.parent.parent.parent)
        _remove_empty_dirs(quarantine, stop=build_dir)
    return result


def _remove_empty_dirs(directory: Path, stop: Path) -> None:
    """rmdir ``directory`` and its parents while empty, never ``stop`` or above."""
    current = directory
    while current != stop and stop in current.parents:
        try:
            current.rmdir()
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                return  # not empty (or not ours to remove): stop here
        current = current.parent
