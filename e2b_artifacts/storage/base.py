"""The one interface every object store implements, and the transfer loops built on it.

A backend provides list / stat / read-range / put / multipart / delete; the
parallel, verifying upload and download loops live here once, so every backend
gets the same integrity rules: bytes are hashed (BLAKE3) in order as they pass,
and an object is only ever published under its final name after its hash
matched. Server checksums (ETags, CRC32C) are never read as content hashes:
an S3 multipart ETag is not an MD5 of the object.
"""

from __future__ import annotations

import abc
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import blake3

from ..errors import ArtifactError, ExitCode

MiB = 1 << 20
HOLE_GRAIN = 64 << 10  # all-zero runs of this size are left as holes when writing local files
_ZEROS = bytes(HOLE_GRAIN)
HASH_META_KEY = "blake3"  # user metadata key holding the BLAKE3 hex of the object's bytes


@dataclass(frozen=True)
class ObjectInfo:
    """An object under the storage root: its key relative to the root, size, and recorded hash."""

    key: str
    size: int
    blake3: str | None  # from our own object metadata; None when written by another tool


def _ignore(_: int) -> None:
    pass


@dataclass
class TransferOptions:
    """How to move bytes: part size, parallelism, an optional rate limit, a byte counter."""

    part_size: int = 16 * MiB  # upload parts
    range_size: int = 64 * MiB  # download ranges (some servers re-read the whole object per range)
    concurrency: int = 8
    max_rate: float | None = None  # bytes per second, None = unlimited
    on_bytes: Callable[[int], None] = _ignore
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _started: float = field(default=0.0, repr=False)
    _counted: int = field(default=0, repr=False)

    def account(self, n: int) -> None:
        """Report ``n`` transferred bytes; sleep when that exceeds ``max_rate``."""
        self.on_bytes(n)
        if not self.max_rate:
            return
        with self._lock:
            now = time.monotonic()
            if not self._started:
                self._started = now
            self._counted += n
            due = self._started + self._counted / self.max_rate
            if due > now:
                time.sleep(due - now)


class IntegrityError(ArtifactError):
    """Bytes did not hash to what the manifest says."""

    def __init__(self, name: str, where: str, expected: str, actual: str) -> None:
        super().__init__(
            f"{name}: content does not match the integrity manifest ({where}: blake3 {actual[:16]}..., "
            f"manifest {expected[:16]}...)",
            hint="the copy at the source is damaged or was changed after its manifest was written; "
                 "re-push it from a good copy, or rewrite the manifest if the change was intended",
            code=ExitCode.INTEGRITY,
        )
        self.name = name


class Multipart(abc.ABC):
    """An object being written in parts; invisible under its key until :meth:`complete`."""

    @abc.abstractmethod
    def upload_part(self, number: int, offset: int, data: bytes) -> None:
        """Store part ``number`` (1-based) holding bytes ``offset..offset+len(data)``; thread-safe."""

    @abc.abstractmethod
    def complete(self) -> None: ...

    @abc.abstractmethod
    def abort(self) -> None: ...


class Storage(abc.ABC):
    """Objects under one root (a directory, ``s3://bucket/prefix`` or ``gs://bucket/prefix``).

    Writes only ever create or replace whole objects; the only deletions are of our own unfinished
    uploads (:meth:`clean_temporaries`, and :meth:`Multipart.abort`)."""

    url: str
    min_part_size = 5 * MiB  # S3's floor for every part but the last

    @abc.abstractmethod
    def list(self, prefix: str) -> list[ObjectInfo]:
        """Every object whose relative key starts with ``prefix`` (recursive)."""

    @abc.abstractmethod
    def stat(self, key: str) -> ObjectInfo | None: ...

    @abc.abstractmethod
    def read_range(self, key: str, start: int, length: int) -> bytes: ...

    @abc.abstractmethod
    def put_bytes(self, key: str, data: bytes, blake3_hex: str) -> None:
        """Write a whole object at once, recording ``blake3_hex`` in its metadata."""

    @abc.abstractmethod
    def start_multipart(self, key: str, blake3_hex: str, size: int) -> Multipart: ...

    @abc.abstractmethod
    def clean_temporaries(self, prefix: str) -> int:
        """Drop unfinished uploads (parts, temp files) under ``prefix`` left by a killed run; return the count."""

    def read_all(self, key: str) -> bytes:
        info = self.stat(key)
        if info is None:
            raise ArtifactError(f"{self.url}/{key}: no such object", hint="check the build id and the URL",
                                code=ExitCode.REMOTE)
        return self.read_range(key, 0, info.size) if info.size else b""

    # ---- transfer loops shared by every backend -------------------------------------------------

    def upload_file(self, key: str, path: Path, expected_blake3: str, opts: TransferOptions) -> int:
        """Upload ``path`` to ``key`` in parallel parts; fail (and publish nothing) unless it hashes to
        ``expected_blake3``. Returns the bytes sent."""
        size = path.stat().st_size
        part_size = max(opts.part_size, self.min_part_size)
        hasher = blake3.blake3(max_threads=blake3.blake3.AUTO)
        with path.open("rb") as fh:
            if size <= part_size:
                data = fh.read()
                hasher.update(data)
                _check(hasher, expected_blake3, path.name, str(path))
                self.put_bytes(key, data, expected_blake3)
                opts.account(len(data))
                return len(data)
            upload = self.start_multipart(key, expected_blake3, size)
            try:
                with ThreadPoolExecutor(max_workers=opts.concurrency) as pool:
                    pending: deque[Future[None]] = deque()
                    number, offset = 1, 0
                    while offset < size:
                        data = fh.read(part_size)
                        if not data:
                            raise ArtifactError(f"{path}: file shrank while being uploaded",
                                                hint="do not modify a build while syncing it")
                        hasher.update(data)
                        while len(pending) >= opts.concurrency:  # bound memory to concurrency parts
                            pending.popleft().result()
                        pending.append(pool.submit(self._send_part, upload, number, offset, data, opts))
                        number, offset = number + 1, offset + len(data)
                    while pending:
                        pending.popleft().result()
                _check(hasher, expected_blake3, path.name, str(path))
                upload.complete()
            except BaseException:
                upload.abort()
                raise
        return size

    @staticmethod
    def _send_part(upload: Multipart, number: int, offset: int, data: bytes, opts: TransferOptions) -> None:
        upload.upload_part(number, offset, data)
        opts.account(len(data))

    def download_file(self, key: str, size: int, dest: Path, expected_blake3: str, opts: TransferOptions) -> None:
        """Fetch ``key`` into ``dest`` with parallel range reads, hashing in order; on a mismatch
        ``dest`` is removed and :class:`IntegrityError` raised."""
        part_size = max(opts.range_size, 1 << 20)
        hasher = blake3.blake3(max_threads=blake3.blake3.AUTO)
        try:
            with dest.open("wb") as out, ThreadPoolExecutor(max_workers=opts.concurrency) as pool:
                pending: deque[Future[bytes]] = deque()
                offset = 0
                written = 0

                def drain_one() -> None:
                    nonlocal written
                    data = pending.popleft().result()
                    hasher.update(data)
                    write_sparse(out.fileno(), written, data)
                    written += len(data)
                    opts.account(len(data))

                while offset < size:
                    length = min(part_size, size - offset)
                    while len(pending) >= opts.concurrency:
                        drain_one()
                    pending.append(pool.submit(self._fetch, key, offset, length))
                    offset += length
                while pending:
                    drain_one()
                os.ftruncate(out.fileno(), size)  # a trailing hole still counts
                os.fsync(out.fileno())
            _check(hasher, expected_blake3, dest.name, f"{self.url}/{key}")
        except BaseException:
            dest.unlink(missing_ok=True)
            raise

    def _fetch(self, key: str, offset: int, length: int) -> bytes:
        data = self.read_range(key, offset, length)
        if len(data) != length:
            raise ArtifactError(f"{self.url}/{key}: short read at offset {offset} ({len(data)} of {length} bytes)",
                                hint="the object changed or was truncated during the transfer; retry",
                                code=ExitCode.REMOTE)
        return data


def write_sparse(fd: int, offset: int, data: bytes) -> None:
    """``pwrite`` ``data`` at ``offset``, skipping all-zero ``HOLE_GRAIN`` blocks (the file must be new or
    truncated, so skipped blocks read back as zeros; the caller sets the final size)."""
    view = memoryview(data)
    start = 0
    while start < len(view):
        end = min(start + HOLE_GRAIN, len(view))
        if view[start:end] != _ZEROS[: end - start]:
            run_end = end  # extend over following non-zero blocks: fewer, larger writes
            while run_end < len(view):
                nxt = min(run_end + HOLE_GRAIN, len(view))
                if view[run_end:nxt] == _ZEROS[: nxt - run_end]:
                    break
                run_end = nxt
            chunk, at = view[start:run_end], offset + start
            while chunk:
                n = os.pwrite(fd, chunk, at)
                chunk, at = chunk[n:], at + n
            start = run_end
        else:
            start = end


def _check(hasher: blake3.blake3, expected: str, name: str, where: str) -> None:
    actual = hasher.hexdigest()
    if actual != expected:
        raise IntegrityError(name, where, expected, actual)


def join_key(*parts: str) -> str:
    return "/".join(p.strip("/") for p in parts if p.strip("/"))
