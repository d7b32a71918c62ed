"""Push and pull template builds between local storage and object stores, verified and resumable.

Rules:

* Keys are upstream's: ``<prefix>/<build-id>/<file name>``.
* A build counts as present where ``metadata.json`` exists (the file the
  orchestrator looks up). Push sends data files first, then the integrity
  manifest ``artifact-manifest.json``, then ``metadata.json``; pull fills a hidden
  staging directory beside the target and renames it into place.
* Every byte is hashed (BLAKE3) on its way and compared with the manifest; each
  uploaded object records its hash in its metadata, so a re-run can tell what is
  already there without reading data. Server ETags are never used as hashes.
* Headers name the builds a layered build reads blocks from; without
  ``with_parents`` a sync whose parents are missing at the other side refuses.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import shutil
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from . import layout, limits
from . import manifest as mf
from .errors import ArtifactError, ExitCode
from .fsutil import atomic_write_bytes, read_input
from .header import chain_view, parent_build_ids
from .layout import HEADERS as HEADER_NAMES
from .layout import MANIFEST as MANIFEST_NAME
from .layout import METADATA as METADATA_NAME
from .layout import check_build_id
from .storage import IntegrityError, ObjectInfo, Storage, TransferOptions, UploadJournal

Action = Literal["send", "skip"]
State = Literal["up-to-date", "transfer"]
Log = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


@dataclass
class FileStep:
    name: str
    size: int
    action: Action
    reason: str


@dataclass
class BuildPlan:
    build_id: str
    state: State
    parents: list[str]
    files: list[FileStep] = field(default_factory=list)
    bytes_sent: int = 0
    chain: list[dict[str, Any]] = field(default_factory=list)  # per header: version, codec, each link's (chain_view)

    @property
    def bytes_total(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def bytes_to_send(self) -> int:
        return sum(f.size for f in self.files if f.action == "send")

    def to_json(self) -> dict[str, Any]:
        return {"build_id": self.build_id, "state": self.state, "parents": self.parents,
                "bytes_total": self.bytes_total, "bytes_to_send": self.bytes_to_send, "bytes_sent": self.bytes_sent,
                "files": [vars(f) for f in self.files], "chain": self.chain}


@dataclass
class SyncReport:
    direction: Literal["push", "pull"]
    location: str
    dry_run: bool
    builds: list[BuildPlan] = field(default_factory=list)
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)

    @property
    def bytes_total(self) -> int:
        return sum(b.bytes_total for b in self.builds)

    @property
    def bytes_sent(self) -> int:
        return sum(b.bytes_sent for b in self.builds)

    @property
    def mb_per_s(self) -> float:
        """Bytes moved per second of the run, in MB/s (10^6 bytes, as the progress line counts)."""
        return self.bytes_sent / self.seconds / 1e6 if self.seconds > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        return {"ok": True, "direction": self.direction, "location": self.location, "dry_run": self.dry_run,
                "bytes_total": self.bytes_total, "bytes_sent": self.bytes_sent,
                "bytes_to_send": sum(b.bytes_to_send for b in self.builds),
                "seconds": round(self.seconds, 3), "mb_per_s": round(self.mb_per_s, 2), "warnings": self.warnings,
                "builds": [b.to_json() for b in self.builds]}


# ---- parents ---------------------------------------------------------------------------------

def header_parents(build_dir: Path, build_id: str) -> list[str]:
    """Build ids other than ``build_id`` whose data the headers in ``build_dir`` map blocks to."""
    ids: set[str] = set()
    for name in HEADER_NAMES:
        path = build_dir / name
        if path.is_file():
            ids.update(parent_build_ids(_read_header_file(path), build_id, str(path)))
    return sorted(ids)


def local_chain(build_dir: Path) -> list[dict[str, Any]]:
    """Each header of a local build, and how upstream reads every build it maps to (ancestors' headers are
    read beside it when its own builds section does not decide)."""
    views = []
    for name in HEADER_NAMES:
        path = build_dir / name
        if path.is_file():
            def load(bid: str, name: str = name) -> bytes | None:
                other = build_dir.parent / bid / name
                return _read_header_file(other) if other.is_file() else None

            views.append(chain_view(_read_header_file(path), name.removesuffix(layout.HEADER_SUFFIX), str(path), load))
    return views


def _read_header_file(path: Path) -> bytes:
    return read_input(path, "header", limit=limits.HEADER,
                      missing_hint="check the build directory (e2b-artifact verify)")


def _missing_parents_error(build_id: str, missing: list[str], where: str) -> ArtifactError:
    return ArtifactError(
        f"build {build_id} references parent build(s) missing at {where}: {', '.join(missing)}",
        hint="add --with-parents to sync the whole chain", code=ExitCode.CONFLICT)


# ---- push ------------------------------------------------------------------------------------

def push(storage_root: Path, build_id: str, dest: Storage, *, with_parents: bool = False, dry_run: bool = False,
         opts: TransferOptions | None = None, log: Log = _quiet, compress: str | None = None) -> SyncReport:
    """Send ``<storage_root>/<build_id>`` (and with ``with_parents`` its parent chain) to ``dest``; with
    ``compress`` (``zstd``, ``lz4``) in upstream's compressed form (:mod:`sync_compress`)."""
    transfer = opts or TransferOptions()
    if compress is not None:
        from .sync_compress import push_compressed

        return push_compressed(storage_root, build_id, dest, compress, with_parents=with_parents, dry_run=dry_run,
                               opts=transfer, log=log)
    report = SyncReport("push", dest.url, dry_run)
    return _carry_out(
        report, lambda: _push_order(storage_root, check_build_id(build_id), dest, with_parents),
        lambda bid: plan_push(storage_root / bid, bid, dest),
        lambda bid, plan: _execute_push(storage_root / bid, plan, dest, transfer, log, report.warnings),
        f"at {dest.url}", log)


def _push_order(root: Path, build_id: str, dest: Storage, with_parents: bool) -> list[str]:
    def read(bid: str, chain: tuple[str, ...]) -> tuple[str, list[str]] | None:
        build_dir = root / bid
        if chain and not build_dir.is_dir() and dest.stat(f"{bid}/{METADATA_NAME}") is not None:
            return None  # a parent we do not have here, but the destination already does
        if not build_dir.is_dir():
            what = f"parent build {bid} of {chain[-1]}" if chain else f"build {bid}"
            raise ArtifactError(f"{what} not found in local storage ({build_dir})",
                                hint="build or pull it first, or check LOCAL_TEMPLATE_STORAGE_BASE_PATH",
                                code=ExitCode.BAD_INPUT)
        parents = header_parents(build_dir, bid)
        if with_parents:
            return bid, parents
        missing = [p for p in parents if dest.stat(f"{p}/{METADATA_NAME}") is None]
        if missing:
            raise _missing_parents_error(bid, missing, dest.url)
        return bid, []

    return _walk_chain(build_id, read, lambda b: b, "the headers are corrupt; run e2b-artifact verify")


def _local_manifest(build_dir: Path, build_id: str) -> mf.Manifest:
    manifest = mf.load_manifest(build_dir)
    if manifest is None:
        raise ArtifactError(f"{build_dir} has no {MANIFEST_NAME}; the receiver could not verify the build",
                            hint="write it: e2b-artifact verify --fix (or rebuild)", code=ExitCode.INTEGRITY)
    _require_hashes(manifest, f"{build_dir}/{MANIFEST_NAME}",
                    "rewrite the manifest with hashes: e2b-artifact verify --fix")
    if METADATA_NAME not in manifest.files:
        raise ArtifactError(f"{build_dir} has no {METADATA_NAME} (or the manifest does not list it)",
                            hint="an incomplete build cannot be synced; rebuild it", code=ExitCode.BAD_INPUT)
    mismatches = mf.check_manifest(build_dir, quick=True, manifest=manifest)
    if mismatches:
        raise ArtifactError(f"{build_dir} differs from its manifest: "
                            + "; ".join(m.message for m in mismatches[:3]),
                            hint="run e2b-artifact verify to see what changed", code=ExitCode.INTEGRITY)
    return manifest


def _require_hashes(manifest: mf.Manifest, where: str, hint: str) -> None:
    """Refuse a manifest (at ``where``) with a file whose hash it does not record: a sync checks every byte."""
    unhashed = sorted(n for n, e in manifest.files.items() if e.blake3 is None)
    if unhashed:
        raise ArtifactError(f"{where} records no hash for {', '.join(unhashed)}", hint=hint, code=ExitCode.INTEGRITY)


def _send_order(manifest: mf.Manifest) -> list[str]:
    """Data files (largest first, so parallel parts start early), then metadata.json."""
    data = sorted((n for n in manifest.files if n != METADATA_NAME), key=lambda n: (-manifest.files[n].size, n))
    return [*data, METADATA_NAME]


def _remote_files(store: Storage, build_id: str) -> dict[str, ObjectInfo]:
    found = {}
    for info in store.list(f"{build_id}/"):
        name = info.key[len(build_id) + 1:]
        if "/" not in name:
            found[name] = info
    return found


def plan_push(build_dir: Path, build_id: str, dest: Storage) -> BuildPlan:
    """What a push of one build would send; reads no file data (sizes and recorded hashes only)."""
    manifest = _local_manifest(build_dir, build_id)
    local_manifest_bytes = mf.read_bytes(build_dir / MANIFEST_NAME)
    remote = _remote_files(dest, build_id)
    plan = BuildPlan(build_id, "transfer", header_parents(build_dir, build_id), chain=local_chain(build_dir))
    if METADATA_NAME in remote:
        if MANIFEST_NAME in remote and dest.read_all(f"{build_id}/{MANIFEST_NAME}") == local_manifest_bytes:
            plan.state = "up-to-date"
            plan.files = [FileStep(n, manifest.files[n].size, "skip", "unchanged") for n in _send_order(manifest)]
            plan.files.insert(-1, FileStep(MANIFEST_NAME, len(local_manifest_bytes), "skip", "unchanged"))
            return plan
        raise ArtifactError(
            f"{dest.url}/{build_id} is a complete build with different content"
            + ("" if MANIFEST_NAME in remote else f" (and no {MANIFEST_NAME})"),
            hint="build ids are immutable: push under a new build id, or delete the remote build first",
            code=ExitCode.CONFLICT)
    for name in _send_order(manifest):
        entry = manifest.files[name]
        if name == METADATA_NAME:
            plan.files.append(FileStep(MANIFEST_NAME, len(local_manifest_bytes), "send", "manifest goes last but one"))
            plan.files.append(FileStep(name, entry.size, "send", "published last"))
            continue
        plan.files.append(_compare(dest, build_id, name, entry, remote.get(name)))
    return plan


def _compare(store: Storage, build_id: str, name: str, entry: mf.FileEntry, info: ObjectInfo | None) -> FileStep:
    if info is None:
        return FileStep(name, entry.size, "send", "missing")
    if info.size != entry.size:
        return FileStep(name, entry.size, "send", f"size differs ({info.size})")
    recorded = info.blake3
    if recorded is None:  # listings of some stores carry no metadata: ask for this one object
        stat = store.stat(f"{build_id}/{name}")
        recorded = stat.blake3 if stat else None
    if recorded is None:
        return FileStep(name, entry.size, "send", "no recorded hash")
    if recorded != entry.blake3:
        return FileStep(name, entry.size, "send", "hash differs")
    return FileStep(name, entry.size, "skip", "already there")


def _execute_push(build_dir: Path, plan: BuildPlan, dest: Storage, opts: TransferOptions, log: Log,
                  warnings: list[str]) -> None:
    bid = plan.build_id
    manifest = _local_manifest(build_dir, bid)
    journal = UploadJournal(layout.push_uploads_path(build_dir.parent, bid))
    resumable = journal.keep_only(dest.url, {f"{bid}/{n}": _hash(manifest, n) for n in manifest.files})
    cleaned = dest.clean_temporaries(f"{bid}/", keep=resumable)
    if cleaned.warning:
        warnings.append(cleaned.warning)
        log(f"warning: {cleaned.warning}")
    if cleaned.removed:
        log(f"{bid}: dropped {cleaned.removed} unfinished upload(s) of an earlier run")
    counted = dataclasses.replace(_counting(opts, plan), journal=journal)

    def send(name: str, size: int) -> None:
        log(f"{bid}: sending {name} ({_human(size)})")
        dest.upload_file(f"{bid}/{name}", build_dir / name, _hash(manifest, name), counted)

    _in_parallel([functools.partial(send, step.name, step.size) for step in plan.files
                  if step.action == "send" and step.name not in (MANIFEST_NAME, METADATA_NAME)])
    # Before publishing: every data object is there with our size and our hash.
    remote = _remote_files(dest, bid)
    for name in _send_order(manifest)[:-1]:
        step = _compare(dest, bid, name, manifest.files[name], remote.get(name))
        if step.action != "skip":
            raise ArtifactError(f"{dest.url}/{bid}/{name}: not as uploaded ({step.reason})",
                                hint="another writer may be using the same build id; re-run the push",
                                code=ExitCode.REMOTE)
    manifest_bytes = mf.read_bytes(build_dir / MANIFEST_NAME)
    dest.put_bytes(f"{bid}/{MANIFEST_NAME}", manifest_bytes, _blake3_bytes(manifest_bytes))
    counted.account(len(manifest_bytes))
    log(f"{bid}: publishing {METADATA_NAME}")
    dest.upload_file(f"{bid}/{METADATA_NAME}", build_dir / METADATA_NAME, _hash(manifest, METADATA_NAME), counted)


# ---- pull ------------------------------------------------------------------------------------

@dataclass
class _Remote:
    build_id: str
    manifest: mf.Manifest
    manifest_bytes: bytes
    listing: dict[str, ObjectInfo]
    parents: list[str]
    chain: list[dict[str, Any]]
    plain_manifest: bytes | None = None  # a build this tool compressed: the manifest of its plain form


def pull(storage_root: Path, build_id: str, src: Storage, *, with_parents: bool = False, dry_run: bool = False,
         opts: TransferOptions | None = None, log: Log = _quiet, decompress: bool = False) -> SyncReport:
    """Fetch ``build_id`` (and with ``with_parents`` its parent chain) from ``src`` into ``storage_root``; with
    ``decompress``, a build stored compressed is put in place in its plain form."""
    transfer = opts or TransferOptions()
    return _carry_out(
        SyncReport("pull", src.url, dry_run),
        lambda: _pull_order(storage_root, check_build_id(build_id), src, with_parents),
        lambda remote: plan_pull(storage_root, remote, decompress=decompress),
        lambda remote, plan: _execute_pull(storage_root, remote, plan, src, transfer, log, decompress),
        f"in {storage_root}", log)


def _read_remote(src: Storage, build_id: str) -> _Remote:
    listing = _remote_files(src, build_id)
    if METADATA_NAME not in listing:
        found = ", ".join(sorted(listing)) or "nothing"
        raise ArtifactError(f"{src.url}/{build_id} is not a complete build (no {METADATA_NAME}; found: {found})",
                            hint="check the build id (e2b-artifact sync ls), or finish the push that made it",
                            code=ExitCode.BAD_INPUT)
    if MANIFEST_NAME not in listing:
        raise ArtifactError(f"{src.url}/{build_id} has no {MANIFEST_NAME}; its content cannot be verified",
                            hint="push it with e2b-artifact sync push, which sends the manifest",
                            code=ExitCode.INTEGRITY)
    manifest_bytes = src.read_all(f"{build_id}/{MANIFEST_NAME}")
    manifest = mf.parse(manifest_bytes, f"{src.url}/{build_id}/{MANIFEST_NAME}")
    for name, entry in manifest.files.items():
        if "/" in name or "\0" in name or name in (".", "..") or not mf.is_artifact_name(name):
            raise ArtifactError(f"{src.url}/{build_id}/{MANIFEST_NAME} lists {name!r}, not a build file name",
                                hint="refusing to write outside the build directory; check the source",
                                code=ExitCode.INTEGRITY)
        info = listing.get(name)
        if info is None or info.size != entry.size:
            state = "missing" if info is None else f"{info.size} bytes, manifest says {entry.size}"
            raise ArtifactError(f"{src.url}/{build_id}/{name}: {state}",
                                hint="the remote build is damaged; re-push it from a good copy",
                                code=ExitCode.INTEGRITY)
    _require_hashes(manifest, f"{src.url}/{build_id}/{MANIFEST_NAME}", "re-push the build with e2b-artifact sync push")
    if METADATA_NAME not in manifest.files:
        raise ArtifactError(f"{src.url}/{build_id}/{MANIFEST_NAME} does not list {METADATA_NAME}",
                            hint="re-push the build with e2b-artifact sync push", code=ExitCode.INTEGRITY)
    ids: set[str] = set()
    chain = []
    for name in HEADER_NAMES:  # small: read (and verified) only to learn the parents and how they are read
        if name in manifest.files:
            where = f"{src.url}/{build_id}/{name}"
            data = src.read_all(f"{build_id}/{name}")
            if (actual := _blake3_bytes(data)) != _hash(manifest, name):
                raise IntegrityError(name, where, _hash(manifest, name), actual)
            ids.update(parent_build_ids(data, build_id, where))

            def load(bid: str, name: str = name) -> bytes | None:
                return src.read_all(f"{bid}/{name}") if src.stat(f"{bid}/{name}") is not None else None

            chain.append(chain_view(data, name.removesuffix(layout.HEADER_SUFFIX), where, load))
    return _Remote(build_id, manifest, manifest_bytes, listing, sorted(ids), chain,
                   _plain_manifest(src, build_id, manifest))


def _plain_manifest(src: Storage, build_id: str, manifest: mf.Manifest) -> bytes | None:
    """The plain form's manifest a compressed build's ``artifact-plain.json`` records (verified; small)."""
    if layout.PLAIN_RECORD not in manifest.files:
        return None
    where = f"{src.url}/{build_id}/{layout.PLAIN_RECORD}"
    data = src.read_all(f"{build_id}/{layout.PLAIN_RECORD}")
    if (actual := _blake3_bytes(data)) != _hash(manifest, layout.PLAIN_RECORD):
        raise IntegrityError(layout.PLAIN_RECORD, where, _hash(manifest, layout.PLAIN_RECORD), actual)
    from .compress import parse_record

    plain: str = parse_record(data, where)["manifest"]
    return plain.encode()


def _pull_order(root: Path, build_id: str, src: Storage, with_parents: bool) -> list[_Remote]:
    def read(bid: str, chain: tuple[str, ...]) -> tuple[_Remote, list[str]]:
        remote = _read_remote(src, bid)
        missing = [p for p in remote.parents if not (root / p / METADATA_NAME).is_file()]
        if missing and not with_parents:
            raise _missing_parents_error(bid, missing, str(root))
        return remote, missing

    return _walk_chain(build_id, read, lambda r: r.build_id, "the remote headers are corrupt")


def plan_pull(root: Path, remote: _Remote, *, decompress: bool = False) -> BuildPlan:
    """What a pull of one build would fetch; reads no file data."""
    bid = remote.build_id
    target = root / bid
    plan = BuildPlan(bid, "transfer", remote.parents, chain=remote.chain)
    order = [*_send_order(remote.manifest)]
    if target.exists():
        local = target / MANIFEST_NAME
        wanted = {remote.manifest_bytes} | ({remote.plain_manifest} if decompress and remote.plain_manifest else set())
        if local.is_file() and mf.read_bytes(local) in wanted and (target / METADATA_NAME).is_file():
            plan.state = "up-to-date"
            plan.files = [FileStep(n, remote.manifest.files[n].size, "skip", "unchanged") for n in order]
            plan.files.insert(-1, FileStep(MANIFEST_NAME, len(remote.manifest_bytes), "skip", "unchanged"))
            return plan
        raise ArtifactError(f"{target} exists and differs from {bid} at the source",
                            hint=f"move it aside (mv {target} {target}.old) and pull again",
                            code=ExitCode.CONFLICT)
    staging = layout.resumable_staging_dir(root, bid)
    resumable = (staging / MANIFEST_NAME).is_file() and mf.read_bytes(staging / MANIFEST_NAME) == remote.manifest_bytes
    for name in order:
        size = remote.manifest.files[name].size
        if name == METADATA_NAME:  # the manifest, like push's, is one of the build's files
            plan.files.append(FileStep(MANIFEST_NAME, len(remote.manifest_bytes), "send", "read to plan the pull"))
        done = resumable and (staging / name).is_file() and (staging / name).stat().st_size == size
        kept = _partial(staging, name).stat().st_size if resumable and _partial(staging, name).is_file() else 0
        reason = "verified by an earlier run" if done else f"resumes after {kept} bytes" if kept else "missing"
        plan.files.append(FileStep(name, size, "skip" if done else "send", reason))
    return plan


def _partial(staging: Path, name: str) -> Path:
    return staging / f".{name}.e2b-partial"


def _execute_pull(root: Path, remote: _Remote, plan: BuildPlan, src: Storage, opts: TransferOptions,
                  log: Log, decompress: bool = False) -> None:
    root.mkdir(parents=True, exist_ok=True)
    with layout.lock(root, remote.build_id):  # the same lock `build` takes for this id
        _pull_locked(root, remote, plan, src, opts, log, decompress)


def _pull_locked(root: Path, remote: _Remote, plan: BuildPlan, src: Storage, opts: TransferOptions,
                 log: Log, decompress: bool = False) -> None:
    bid = remote.build_id
    target = root / bid
    if target.exists():
        raise ArtifactError(f"{target} appeared while pulling", hint="another process wrote it; check it",
                            code=ExitCode.CONFLICT)
    staging = layout.resumable_staging_dir(root, bid)
    saved = staging / MANIFEST_NAME
    if staging.exists() and not (saved.is_file() and mf.read_bytes(saved) == remote.manifest_bytes):
        shutil.rmtree(staging)  # our own staging from a pull of different content
        plan.files = [FileStep(f.name, f.size, "send", "missing") for f in plan.files]
    with layout.stage(root, bid, resumable=True) as staging:
        _fill_staging(staging, remote, plan, src, opts, log)
        if decompress and _stored_compressed(staging):
            from .compress import decompress_build, remove_tree

            log(f"{bid}: decompressing")
            with layout.stage(root, bid) as plain:
                decompress_build(staging, plain, build_id=bid)
                layout.publish(plain, target)
            remove_tree(staging)  # the fetched compressed form: ours, and now published decompressed
        else:
            layout.publish(staging, target)
    log(f"{bid}: complete in {target}")


def _stored_compressed(build_dir: Path) -> bool:
    return any((build_dir / n).is_file() for d in layout.DATA_FILES for n in layout.compressed_names(d))


def _fill_staging(staging: Path, remote: _Remote, plan: BuildPlan, src: Storage, opts: TransferOptions,
                  log: Log) -> None:
    bid = remote.build_id
    atomic_write_bytes(staging / MANIFEST_NAME, remote.manifest_bytes)  # what the staged files are checked against
    counted = _counting(opts, plan)
    counted.account(len(remote.manifest_bytes))

    def fetch(name: str, size: int) -> None:
        partial = _partial(staging, name)
        kept = partial.stat().st_size if partial.is_file() else 0
        log(f"{bid}: fetching {name} ({_human(size)}" + (f", resuming after {_human(kept)})" if kept else ")"))
        src.download_file(f"{bid}/{name}", size, partial, _hash(remote.manifest, name), counted, resume=True)
        os.replace(partial, staging / name)

    try:
        _in_parallel([functools.partial(fetch, step.name, step.size)
                      for step in plan.files if step.action == "send" and step.name != MANIFEST_NAME])
    except IntegrityError:
        shutil.rmtree(staging, ignore_errors=True)  # never publish, never keep unverified bytes
        raise
    mismatches = mf.check_manifest(staging, quick=True, manifest=remote.manifest)
    if mismatches:
        raise ArtifactError(f"staging {staging} is incomplete: {mismatches[0].message}",
                            hint="re-run the pull", code=ExitCode.INTERNAL)


# ---- ls --------------------------------------------------------------------------------------

@dataclass
class RemoteBuild:
    build_id: str
    files: int
    bytes: int
    complete: bool  # metadata.json present
    has_manifest: bool

    def to_json(self) -> dict[str, Any]:
        return vars(self).copy()


def list_builds(store: Storage) -> list[RemoteBuild]:
    """Every ``<build-id>/`` under the root, with whether it is complete."""
    grouped: dict[str, list[ObjectInfo]] = {}
    for info in store.list(""):
        build_id, sep, name = info.key.partition("/")
        if sep and name and "/" not in name:
            grouped.setdefault(build_id, []).append(info)
    builds = []
    for build_id, infos in sorted(grouped.items()):
        names = {i.key.partition("/")[2] for i in infos}
        builds.append(RemoteBuild(build_id, len(infos), sum(i.size for i in infos),
                                  METADATA_NAME in names, MANIFEST_NAME in names))
    return builds


# ---- helpers ---------------------------------------------------------------------------------

_Build = TypeVar("_Build")


def _carry_out(report: SyncReport, walk: Callable[[], list[_Build]], plan_one: Callable[[_Build], BuildPlan],
               execute: Callable[[_Build, BuildPlan], None], where: str, log: Log) -> SyncReport:
    """Plan each build ``walk`` yields (parents first) into ``report`` and, unless a dry run, transfer it."""
    started = time.monotonic()
    for build in walk():
        plan = plan_one(build)
        report.builds.append(plan)
        if plan.state == "transfer" and not report.dry_run:
            execute(build, plan)
        elif plan.state == "up-to-date":
            log(f"{plan.build_id}: already complete {where}")
    report.seconds = time.monotonic() - started
    return report


def _walk_chain(build_id: str, read: Callable[[str, tuple[str, ...]], tuple[_Build, list[str]] | None],
                id_of: Callable[[_Build], str], corrupt_hint: str) -> list[_Build]:
    """``build_id`` and the parents ``read`` says to visit, depth first, each parent before its children.

    ``read(bid, chain)`` (``chain``: the builds that led here) returns the build and the parents to walk
    into, or None to leave the build out; it raises where the chain cannot be synced.
    """
    order: list[_Build] = []

    def visit(bid: str, chain: tuple[str, ...]) -> None:
        if any(id_of(b) == bid for b in order):
            return
        found = read(bid, chain)
        if found is None:
            return
        build, parents = found
        for parent in parents:
            if parent in chain:
                raise ArtifactError(f"headers form a cycle: {' -> '.join((*chain, bid, parent))}",
                                    hint=corrupt_hint, code=ExitCode.BAD_INPUT)
            visit(parent, (*chain, bid))
        order.append(build)

    visit(build_id, ())
    return order


FILES_AT_ONCE = 2  # two files in flight hide one file's multipart completion behind the other's parts


def _in_parallel(tasks: list[Callable[[], None]]) -> None:
    """Run ``tasks`` (in order, ``FILES_AT_ONCE`` at a time); the first failure cancels what has not started."""
    with ThreadPoolExecutor(max_workers=FILES_AT_ONCE) as pool:
        futures = [pool.submit(task) for task in tasks]
        try:
            for future in futures:
                future.result()
        except BaseException:
            for future in futures:
                future.cancel()
            raise

def _hash(manifest: mf.Manifest, name: str) -> str:
    digest = manifest.files[name].blake3
    assert digest is not None  # checked when the manifest was loaded
    return digest


def _blake3_bytes(data: bytes) -> str:
    import blake3

    return blake3.blake3(data).hexdigest()


def _counting(opts: TransferOptions, plan: BuildPlan) -> TransferOptions:
    """``opts`` whose byte callback also adds to ``plan.bytes_sent``."""
    outer = opts.on_bytes
    lock = threading.Lock()

    def on_bytes(n: int) -> None:
        with lock:  # parts finish on several threads
            plan.bytes_sent += n
        outer(n)

    return dataclasses.replace(opts, on_bytes=on_bytes)


def _human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"
