"""Local stand-ins for builds in an object store, so that ``verify`` checks them where they lie.

For each build a private temp directory gets: the build's small files (metadata, headers, snapfile,
manifest, sidecars) fetched whole; its data files (``rootfs.ext4``, ``memfile``, compressed forms, and
anything over 64 MiB) as sparse placeholders of the stored size. Without ``--quick`` each data file the
manifest lists is streamed once through BLAKE3 (the digests go to ``verify`` through
:class:`~e2b_artifacts.verify.StandIn`), and ``rootfs.ext4`` is written, holes kept, into its placeholder
for the e2fsprogs checks, with the ranges a diff layer maps to its parents fetched into theirs. The
parents a build's headers name get placeholders and their headers (fetched once per run, shared by
every child). The directory is removed as soon as the build is verified: no local copy stays behind.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
from collections import deque
from collections.abc import Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import blake3

from .. import header as header_mod
from .. import layout
from .. import manifest as mf
from ..errors import ArtifactError, ExitCode
from ..fsutil import atomic_write_bytes, write_sparse
from ..storage import Storage
from ..sync import header_parents
from ..verify import StandIn
from .listing import StoredBuild

SMALL_MAX = 64 << 20  # a file larger than this is streamed even if its name is not a data file's
STREAM_CHUNK = 8 << 20  # one ranged read
STREAM_AHEAD = 3  # ranged reads in flight per file


def is_streamed(name: str, size: int) -> bool:
    """Data files (and anything large) are never fetched whole: placeholders, streamed when needed."""
    return layout.data_name_of(name) in layout.DATA_FILES or size > SMALL_MAX


def _shared(name: str) -> bool:
    """Small files a child's checks read from its parents: headers and size sidecars."""
    return name.endswith((layout.HEADER_SUFFIX, layout.UNCOMPRESSED_SIZE_SUFFIX))


def _safe(name: str) -> bool:
    return name not in ("", ".", "..") and "/" not in name and "\0" not in name


class StandIns:
    """Stand-ins for the builds of one run; thread-safe (``--jobs``)."""

    def __init__(self, store: Storage, builds: Mapping[str, StoredBuild], workdir: Path, *, quick: bool) -> None:
        self.store = store
        self.builds = builds
        self.workdir = workdir
        self.quick = quick
        self.cache = workdir / "shared"
        self._locks: dict[str, threading.Lock] = {}
        self._locks_lock = threading.Lock()

    @contextlib.contextmanager
    def prepare(self, build: StoredBuild) -> Iterator[tuple[Path, StandIn, list[str]]]:
        """The stand-in directory of ``build``, what ``verify`` needs to know about it, and its parents."""
        root = Path(tempfile.mkdtemp(prefix="build-", dir=self.workdir))
        try:
            own = root / build.build_id
            self._populate(own, build, whole=True)
            try:
                parents = header_parents(own, build.build_id)
            except ArtifactError:
                parents = []  # an unreadable header: verify reports it
            for parent in parents:
                if parent in self.builds and parent != build.build_id:
                    self._populate(root / parent, self.builds[parent], whole=False)
            digests: dict[str, str] = {}
            rootfs_read = not self.quick and layout.ROOTFS in build.files
            if not self.quick:
                listed = _manifest_names(own)
                for name, size in sorted(build.files.items(), key=lambda item: -item[1]):
                    if _safe(name) and is_streamed(name, size) and (name == layout.ROOTFS or name in listed):
                        into = own / name if name == layout.ROOTFS else None
                        digests[name] = self._stream(f"{build.build_id}/{name}", size, into)
                if rootfs_read:
                    self._fill_mapped_ranges(root, own)
            yield own, StandIn(f"{self.store.url}/{build.build_id}", digests, rootfs_read), parents
        finally:
            shutil.rmtree(root, ignore_errors=True)

    def _populate(self, directory: Path, build: StoredBuild, *, whole: bool) -> None:
        """``whole``: every file of the build; else (a parent) its placeholders and shared small files."""
        directory.mkdir()
        for name, size in build.files.items():
            if not _safe(name):
                continue
            path = directory / name
            if is_streamed(name, size):
                with path.open("wb") as fh:
                    os.ftruncate(fh.fileno(), size)
            elif _shared(name):
                os.link(self._cached(build.build_id, name), path)
            elif whole:
                atomic_write_bytes(path, self.store.read_all(f"{build.build_id}/{name}"))

    def _cached(self, build_id: str, name: str) -> Path:
        """A shared small file, fetched once per run (a parent's header serves all its children)."""
        key = f"{build_id}/{name}"
        with self._locks_lock:
            lock = self._locks.setdefault(key, threading.Lock())
        path = self.cache / build_id / name
        with lock:
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                atomic_write_bytes(path, self.store.read_all(key))
        return path

    def _stream(self, key: str, size: int, into: Path | None) -> str:
        """BLAKE3 of an object, read once in ranges; with ``into``, its bytes also land there (holes kept)."""
        hasher = blake3.blake3(max_threads=blake3.blake3.AUTO)
        with contextlib.ExitStack() as stack:
            fd = os.open(into, os.O_WRONLY) if into is not None else -1
            if fd >= 0:
                stack.callback(os.close, fd)
            pool = stack.enter_context(ThreadPoolExecutor(max_workers=STREAM_AHEAD))
            pending: deque[tuple[Future[bytes], int, int]] = deque()

            def drain_one() -> None:
                future, at, length = pending.popleft()
                data = future.result()
                if len(data) != length:
                    raise ArtifactError(f"{self.store.url}/{key}: short read at offset {at} ({len(data)} of "
                                        f"{length} bytes)", hint="the object changed while it was verified; retry",
                                        code=ExitCode.REMOTE)
                hasher.update(data)
                if fd >= 0:
                    write_sparse(fd, at, data)

            offset = 0
            while offset < size:
                length = min(STREAM_CHUNK, size - offset)
                if len(pending) >= STREAM_AHEAD:
                    drain_one()
                pending.append((pool.submit(self.store.read_range, key, offset, length), offset, length))
                offset += length
            while pending:
                drain_one()
        return hasher.hexdigest()

    def _fill_mapped_ranges(self, root: Path, own: Path) -> None:
        """A diff-layer rootfs reads blocks of its parents: fetch exactly the mapped ranges into their
        placeholders, so the device verify assembles from the header chain is the real one."""
        header_path = own / layout.ROOTFS_HEADER
        if not header_path.is_file():
            return
        try:
            hdr = header_mod.read_header(header_path)
        except ArtifactError:
            return  # reported by the header check
        mine = {own.name, hdr.build_id, header_mod.NIL_BUILD}
        for m in hdr.mappings:
            parent = self.builds.get(m.build_id)
            if m.build_id in mine or parent is None or layout.ROOTFS not in parent.files:
                continue
            stored = parent.files[layout.ROOTFS]
            start, end = m.storage_offset, min(m.storage_offset + min(m.end, hdr.size) - m.offset, stored)
            fd = os.open(root / m.build_id / layout.ROOTFS, os.O_WRONLY)
            try:
                while start < end:
                    length = min(STREAM_CHUNK, end - start)
                    write_sparse(fd, start, self.store.read_range(f"{m.build_id}/{layout.ROOTFS}", start, length))
                    start += length
            finally:
                os.close(fd)


def _manifest_names(build_dir: Path) -> set[str]:
    try:
        found = mf.load_manifest(build_dir)
    except ArtifactError:
        return set()  # malformed: verify says so, and there is nothing to compare hashes with
    return set(found.files) if found is not None else set()
