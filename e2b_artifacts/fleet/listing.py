"""The builds of a storage location, and the shard each one belongs to.

A build is a top-level name that is a valid build id and holds at least one file of its own
(``<id>/<file>``); hidden names (``.leftovers``, ``.<id>.lock``) and prefixes holding only deeper keys
(a results prefix in the same bucket) are not builds. Shards split by a hash of the build id, so every
machine that lists the same storage agrees on the split without talking to the others.
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ArtifactError, ExitCode
from ..layout import BUILD_ID_RE, STAGING_INFIX
from ..settings import Settings
from ..storage import Storage


@dataclass(frozen=True)
class StoredBuild:
    build_id: str
    files: Mapping[str, int] = field(default_factory=dict)  # file name at the top of the build -> size


@dataclass(frozen=True)
class Listing:
    builds: list[StoredBuild]  # sorted by build id
    skipped: list[str]  # top-level names that look like build ids but hold no files of their own
    staging: frozenset[str] = frozenset()  # build ids with a ``.<id>.staging-*`` beside them (directories)

    def by_id(self) -> dict[str, StoredBuild]:
        return {b.build_id: b for b in self.builds}


@dataclass(frozen=True)
class Shard:
    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def holds(self, build_id: str) -> bool:
        return shard_of(build_id, self.count) == self.index


WHOLE = Shard(0, 1)


def shard_of(build_id: str, count: int) -> int:
    """The shard (0..count-1) of ``build_id``: the first 8 bytes of its SHA-256, modulo ``count``.

    A hash, not the position in a listing, so the split does not move when builds are added, and
    Python's per-process string hash randomization plays no part."""
    return int.from_bytes(hashlib.sha256(build_id.encode()).digest()[:8], "big") % count


def parse_shard(text: str) -> Shard:
    index, sep, count = text.partition("/")
    try:
        shard = Shard(int(index), int(count))
    except ValueError:
        shard = None
    if not sep or shard is None or shard.count < 1 or not 0 <= shard.index < shard.count:
        raise ArtifactError(f"--shard {text!r}: expected I/N with 0 <= I < N",
                            hint="e.g. --shard 0/4 ... --shard 3/4 (in Nomad: --shard ${NOMAD_ALLOC_INDEX}/N)",
                            code=ExitCode.USAGE)
    return shard


def list_builds(store: Storage) -> Listing:
    """Every build at ``store``, with the size of each of its top-level files."""
    from ..storage.local import LocalStorage

    if isinstance(store, LocalStorage):
        return _list_directory(store.root)
    files: dict[str, dict[str, int]] = {}
    nested: set[str] = set()
    for info in store.list(""):
        top, sep, rest = info.key.partition("/")
        if not sep or top.startswith(".") or not BUILD_ID_RE.fullmatch(top):
            continue
        if "/" in rest:
            nested.add(top)
        else:
            files.setdefault(sys.intern(top), {})[sys.intern(rest)] = info.size  # names shared by every build
    builds = [StoredBuild(bid, files[bid]) for bid in sorted(files)]
    return Listing(builds, sorted(nested - files.keys()))


def _list_directory(root: Path) -> Listing:
    if not root.is_dir():
        raise ArtifactError(f"storage directory {root} not found",
                            hint="pass the directory that holds the <build-id>/ directories, s3://BUCKET/PREFIX "
                                 "or gs://BUCKET/PREFIX", code=ExitCode.BAD_INPUT)
    builds, skipped, staging = [], [], set()
    with os.scandir(root) as entries:
        for entry in entries:
            if entry.name.startswith(".") and STAGING_INFIX in entry.name:
                staging.add(entry.name[1:].split(STAGING_INFIX, 1)[0])
            if entry.name.startswith(".") or not BUILD_ID_RE.fullmatch(entry.name) or not entry.is_dir():
                continue
            files = _files_of(Path(entry.path))
            if files is None or files:  # an unreadable one too: verify then says what is wrong with it
                builds.append(StoredBuild(sys.intern(entry.name), files or {}))
            else:
                skipped.append(entry.name)
    return Listing(sorted(builds, key=lambda b: b.build_id), sorted(skipped), frozenset(staging))


def _files_of(directory: Path) -> dict[str, int] | None:
    files = {}
    try:
        with os.scandir(directory) as entries:
            for entry in entries:
                if entry.is_file(follow_symlinks=False) or entry.is_symlink():
                    files[sys.intern(entry.name)] = entry.stat(follow_symlinks=False).st_size  # shared names
    except OSError:
        return None
    return files


def template_location(settings: Settings) -> str:
    """The template storage the orchestrator on this host uses, as upstream resolves it
    (``packages/orchestrator/pkg/cfg/storage.go``, ``TemplateStorage``): ``TEMPLATE_STORAGE_URL`` when set,
    else ``STORAGE_PROVIDER`` (default ``GCPBucket``) with ``TEMPLATE_BUCKET_NAME``, or ``Local`` with
    ``LOCAL_TEMPLATE_STORAGE_BASE_PATH``."""
    url = settings["TEMPLATE_STORAGE_URL"].value
    if url:
        return url
    provider = settings["STORAGE_PROVIDER"].value or "GCPBucket"
    if provider == "Local":
        return str(settings.storage)
    if provider not in ("GCPBucket", "AWSBucket"):
        raise ArtifactError(f"unknown STORAGE_PROVIDER {provider!r}", hint="GCPBucket, AWSBucket or Local",
                            code=ExitCode.USAGE)
    bucket = settings["TEMPLATE_BUCKET_NAME"].value
    if not bucket:
        raise ArtifactError(f"STORAGE_PROVIDER={provider} but TEMPLATE_BUCKET_NAME is not set "
                            f"({settings['STORAGE_PROVIDER'].source})",
                            hint="pass the location (a directory, s3://BUCKET/PREFIX, gs://BUCKET/PREFIX), or set "
                                 "TEMPLATE_BUCKET_NAME / STORAGE_PROVIDER=Local as the orchestrator has them",
                            code=ExitCode.USAGE)
    return f"{'gs' if provider == 'GCPBucket' else 's3'}://{bucket}"
