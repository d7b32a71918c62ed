"""``sync push --compress``: send builds in upstream's compressed form (:mod:`compress`), made on the way.

Each build of the chain (parents first) is compressed into ``<storage>/.<id>.compressed-<codec>/`` and that
directory is pushed like a build (same plan, same resumable uploads, ``metadata.json`` last); it is removed
once sent, kept when the push fails so that a re-run resumes with the same bytes. A build is up to date at
the destination when the destination holds a complete build whose ``artifact-plain.json`` records this very
source manifest: a re-run reads no data. Parents already at the destination in compressed form are read from
there (their header and record, a few KiB) to rewrite the child's mappings into their packed data.
"""

from __future__ import annotations

import base64
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from . import compress as cz
from . import header as header_mod
from . import layout, sync
from . import manifest as mf
from .errors import ArtifactError, ExitCode
from .header import Codec
from .storage import Storage, TransferOptions

Packed = dict[tuple[str, str], cz.Packed]


def push_compressed(storage_root: Path, build_id: str, dest: Storage, codec_name: str, *, with_parents: bool,
                    dry_run: bool, opts: TransferOptions, log: sync.Log) -> sync.SyncReport:
    codec = cz.codec_of(codec_name)
    report = sync.SyncReport("push", dest.url, dry_run)
    packed: Packed = {}
    staged: dict[str, Path] = {}
    with ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1))) as pool:

        def plan_one(bid: str) -> sync.BuildPlan:
            source = storage_root / bid
            plan = _up_to_date(source, bid, dest, packed)
            if plan is not None:
                return plan
            if dry_run:
                return _plain_preview(source, bid, dest)
            for parent in sync.header_parents(source, bid):
                _load_remote_parent(dest, parent, packed)
            staged[bid] = _stage(storage_root, source, bid, codec, packed, pool, log)
            return sync.plan_push(staged[bid], bid, dest)

        def execute(bid: str, plan: sync.BuildPlan) -> None:
            sync._execute_push(staged[bid], plan, dest, opts, log, report.warnings)
            cz.remove_tree(staged[bid])  # sent and verified there: our derived copy is no longer needed

        return sync._carry_out(report, lambda: sync._push_order(storage_root, layout.check_build_id(build_id), dest,
                                                              with_parents), plan_one, execute, f"at {dest.url}", log)


def _up_to_date(source: Path, bid: str, dest: Storage, packed: Packed) -> sync.BuildPlan | None:
    """The plan of a build the destination already holds complete: compressed from this very source (its record
    says so), or as the source itself; None when it must be sent. Refuses a complete build of other content."""
    manifest_bytes = mf.read_bytes(source / layout.MANIFEST)
    remote = sync._remote_files(dest, bid)
    if layout.METADATA not in remote:
        return None
    record = _remote_record(dest, bid, remote)
    if record is not None and record["manifest"].encode() == manifest_bytes:
        remote_manifest = mf.parse(dest.read_all(f"{bid}/{layout.MANIFEST}"), f"{dest.url}/{bid}")
        _remember(dest, bid, record, packed)
        plan = sync.BuildPlan(bid, "up-to-date", sync.header_parents(source, bid))
        plan.files = [sync.FileStep(n, e.size, "skip", "unchanged") for n, e in sorted(remote_manifest.files.items())]
        return plan
    return sync.plan_push(source, bid, dest)  # the same plain build (up to date), or a conflict it raises


def _plain_preview(source: Path, bid: str, dest: Storage) -> sync.BuildPlan:
    plan = sync.plan_push(source, bid, dest)
    for step in plan.files:
        if step.name in layout.DATA_FILES or step.name in layout.HEADERS:
            step.reason = "compressed on the way (its size is known once compressed)"
    return plan


def _remote_record(dest: Storage, bid: str, remote: dict[str, Any]) -> dict[str, Any] | None:
    if layout.PLAIN_RECORD not in remote:
        return None
    try:
        record = json.loads(dest.read_all(f"{bid}/{layout.PLAIN_RECORD}"))
    except ValueError:
        return None
    return record if isinstance(record, dict) and isinstance(record.get("manifest"), str) else None


def _load_remote_parent(dest: Storage, parent: str, packed: Packed) -> None:
    """A parent the destination holds compressed (and this run did not compress): learn where its data went."""
    if any(b == parent for b, _ in packed):
        return
    remote = sync._remote_files(dest, parent)
    record = _remote_record(dest, parent, remote) if layout.METADATA in remote else None
    if record is not None:
        _remember(dest, parent, record, packed)


def _remember(dest: Storage, bid: str, record: dict[str, Any], packed: Packed) -> None:
    for data_name, entry in record.get("files", {}).items():
        if data_name not in layout.DATA_FILES or not isinstance(entry, dict):
            continue
        v4 = header_mod.parse_header(dest.read_all(f"{bid}/{layout.HEADER_OF[data_name]}"),
                                     f"{dest.url}/{bid}/{layout.HEADER_OF[data_name]}")
        packed[(bid, data_name)] = cz.packed_from(v4, _plain_of(v4, entry))


def _plain_of(v4: header_mod.Header, entry: dict[str, Any]) -> header_mod.Header:
    raw = entry.get("header")
    if isinstance(raw, str):
        return header_mod.parse_header(base64.b64decode(raw), f"{layout.PLAIN_RECORD} header")
    size = entry.get("size")
    if not isinstance(size, int):
        raise ArtifactError(f"{layout.PLAIN_RECORD} of {v4.build_id} records no size", hint="re-push the build",
                            code=ExitCode.BAD_INPUT)
    return cz.identity_header(v4.build_id, v4.block_size, size)


def _stage(root: Path, source: Path, bid: str, codec: Codec, packed: Packed, pool: ThreadPoolExecutor,
           log: sync.Log) -> Path:
    """The compressed form of ``source`` in its staging directory: reused when an earlier run left it complete
    for this very source manifest, else made anew."""
    staging = layout.compressed_staging_dir(root, bid, codec.name.lower())
    manifest_bytes = mf.read_bytes(source / layout.MANIFEST)
    record = cz.read_record(staging) if (staging / layout.MANIFEST).is_file() else None
    if record is not None and record["manifest"].encode() == manifest_bytes and not mf.check_manifest(
            staging, quick=True):
        for data_name in record["files"]:
            v4 = header_mod.read_header(staging / layout.HEADER_OF[data_name])
            packed[(bid, data_name)] = cz.packed_from(v4, cz.plain_header(source, data_name, bid)[0])
        log(f"{bid}: compressed form from an earlier run reused ({staging})")
        return staging
    cz.remove_tree(staging)  # ours, from a run on other content
    staging.mkdir(parents=True)
    log(f"{bid}: compressing ({codec.name.lower()})")
    result = cz.compress_build(source, staging, codec, packed, pool, build_id=bid)
    log(f"{bid}: {result.plain_bytes} bytes of data files stored as {result.stored_bytes}")
    return staging
