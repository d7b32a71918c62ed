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
import contextlib
import hashlib
import json
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import blake3

from ..errors import ArtifactError, ExitCode
from ..fsutil import atomic_write_bytes, next_data, pread_full, start_writeback, write_sparse, zero_bytes

MiB = 1 << 20
HASH_META_KEY = "blake3"  # user metadata key holding the BLAKE3 hex of the object's bytes


@dataclass(frozen=True)
class ObjectInfo:
    """An object under the storage root: its key relative to the root, size, and recorded hash."""

    key: str
    size: int
    blake3: str | None  # from our own object metadata; None when written by another tool


@dataclass(frozen=True)
class StoredPart:
    """A part of an unfinished upload already on the server, as the server describes it."""

    number: int
    size: int
    md5: str | None  # hex MD5 of the part's bytes computed by the server (None: unknown, never trusted)


@dataclass(frozen=True)
class Cleanup:
    """What :meth:`Storage.clean_temporaries` did: leftovers removed, or why it could not look."""

    removed: int
    warning: str | None = None


DEFAULT_TIMEOUT = 60.0  # seconds a request may go without a reply from the server
STALL_NOTICE = 5.0  # seconds without a reply before saying that we are waiting


def _ignore(_: int) -> None:
    pass


@dataclass(frozen=True)
class JournalEntry:
    url: str
    key: str
    blake3: str
    size: int
    part_size: int
    upload_id: str


class UploadJournal:
    """The multipart uploads this host started and has not completed, so that a killed run continues them.

    One small JSON file, rewritten atomically. An entry names the store, the key, the content hash and
    size the upload is for, its part size and the backend's upload id. When the file cannot be written
    (a read-only storage), uploads simply are not resumable."""

    def __init__(self, path: Path) -> None:
        self.path: Path | None = path
        self.lock = threading.Lock()
        self.entries: list[JournalEntry] = []
        with contextlib.suppress(OSError, ValueError, TypeError, KeyError):
            if path.is_file() and path.stat().st_size < 1 << 20:
                doc = json.loads(path.read_bytes())
                self.entries = [JournalEntry(**{k: e[k] for k in JournalEntry.__dataclass_fields__})
                                for e in doc["uploads"]]

    def find(self, url: str, key: str) -> JournalEntry | None:
        with self.lock:
            return next((e for e in self.entries if e.url == url and e.key == key), None)

    def record(self, entry: JournalEntry) -> None:
        with self.lock:
            self.entries = [e for e in self.entries if (e.url, e.key) != (entry.url, entry.key)] + [entry]
            self._save()

    def forget(self, url: str, key: str) -> None:
        with self.lock:
            kept = [e for e in self.entries if (e.url, e.key) != (url, key)]
            if len(kept) != len(self.entries):
                self.entries = kept
                self._save()

    def keep_only(self, url: str, wanted: Mapping[str, str]) -> set[str]:
        """Drop the entries for ``url`` whose key is not in ``wanted`` (key -> content hash) or is for other
        content; return the upload ids of those kept (uploads a cleanup must leave alone)."""
        with self.lock:
            kept = [e for e in self.entries if e.url != url or wanted.get(e.key) == e.blake3]
            if len(kept) != len(self.entries):
                self.entries = kept
                self._save()
            return {e.upload_id for e in kept if e.url == url}

    def _save(self) -> None:
        if self.path is None:
            return
        try:
            if self.entries:
                doc = {"uploads": [asdict(e) for e in self.entries]}
                atomic_write_bytes(self.path, json.dumps(doc, indent=1).encode())
            else:
                self.path.unlink(missing_ok=True)
        except OSError:
            self.path = None  # not writable here: no resume, nothing else changes


class StallWatch:
    """Says on ``notice`` when requests to a store have had no reply for a while (a stuck server looks
    exactly like a slow one until the timeout); a background thread, started with the first request."""

    def __init__(self, url: str, timeout: float) -> None:
        self.url = url
        self.timeout = timeout
        self.notice: Callable[[str], None] | None = None
        self.notice_after = min(STALL_NOTICE, timeout / 2)
        self.repeat_after = 15.0
        self._lock = threading.Lock()
        self._inflight: dict[int, str] = {}
        self._next_id = 0
        self._last_progress = time.monotonic()
        self._last_notice = 0.0
        self._thread: threading.Thread | None = None

    @contextlib.contextmanager
    def request(self, what: str) -> Iterator[None]:
        with self._lock:
            if not self._inflight:
                self._last_progress = time.monotonic()
            ident = self._next_id
            self._next_id += 1
            self._inflight[ident] = what
            if self.notice is not None and self._thread is None:
                self._thread = threading.Thread(target=self._watch, name="stall-watch", daemon=True)
                self._thread.start()
        try:
            yield
        finally:
            with self._lock:
                del self._inflight[ident]
                self._last_progress = time.monotonic()

    def progress(self) -> None:
        """Bytes arrived (or left) in the middle of a request."""
        with self._lock:
            self._last_progress = time.monotonic()

    def _watch(self) -> None:
        while True:
            time.sleep(0.25)
            with self._lock:
                now = time.monotonic()
                idle = now - self._last_progress
                if not self._inflight or idle < self.notice_after:
                    continue
                if self._last_notice > self._last_progress and now - self._last_notice < self.repeat_after:
                    continue  # said already for this stall; say it again now and then
                self._last_notice = now
                what = next(iter(self._inflight.values()))
                notice = self.notice
            if notice is not None:
                notice(f"waiting for {self.url}: no reply for {idle:.0f} s ({what}); "
                       f"giving up after {self.timeout:g} s (--timeout)")


@dataclass
class TransferOptions:
    """How to move bytes: part size, parallelism, an optional rate limit, a byte counter."""

    part_size: int = 16 * MiB  # upload parts
    range_size: int = 16 * MiB  # download ranges: more of them in flight keeps the in-order drain fed (bench_sync)
    concurrency: int = 8
    max_rate: float | None = None  # bytes per second, None = unlimited
    on_bytes: Callable[[int], None] = _ignore
    journal: UploadJournal | None = None  # where unfinished multipart uploads are recorded to be resumed
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

    upload_id = ""  # names the upload, so a later run can continue it (:meth:`Storage.resume_multipart`)
    part_size = 0  # every part but the last has this size

    def stored_parts(self) -> dict[int, StoredPart]:
        """Parts already on the server (an upload continued from an earlier run)."""
        return {}

    def keep_part(self, number: int, data: bytes | bytearray) -> None:
        """Use the stored part ``number`` (found equal to ``data``) instead of sending it again."""
        raise NotImplementedError(f"{type(self).__name__} reports no stored parts")

    @abc.abstractmethod
    def upload_part(self, number: int, offset: int, data: bytes | bytearray) -> None:
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
    watch: StallWatch

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
    def start_multipart(self, key: str, blake3_hex: str, size: int, part_size: int) -> Multipart: ...

    def resume_multipart(self, key: str, blake3_hex: str, size: int, part_size: int,
                         upload_id: str) -> Multipart | None:
        """The unfinished upload ``upload_id`` of ``key`` from an earlier run, or None where it is gone
        (or the backend cannot continue uploads)."""
        return None

    @abc.abstractmethod
    def clean_temporaries(self, prefix: str, keep: Collection[str] = ()) -> Cleanup:
        """Drop unfinished uploads (parts, temp files) under ``prefix`` left by a killed run, except the
        uploads named in ``keep``. Not being able to look is a warning, never an error: the listing only
        tidies up."""

    def read_all(self, key: str) -> bytes:
        info = self.stat(key)
        if info is None:
            raise ArtifactError(f"{self.url}/{key}: no such object", hint="check the build id and the URL",
                                code=ExitCode.REMOTE)
        return self.read_range(key, 0, info.size) if info.size else b""

    # ---- transfer loops shared by every backend -------------------------------------------------

    def upload_file(self, key: str, path: Path, expected_blake3: str, opts: TransferOptions) -> int:
        """Upload ``path`` to ``key`` in parallel parts; fail (and publish nothing) unless it hashes to
        ``expected_blake3``. With ``opts.journal``, an upload of the same content a killed run left
        unfinished is continued: parts already on the server whose size and MD5 match the local bytes
        are kept. Returns the bytes sent."""
        size = path.stat().st_size
        part_size = max(opts.part_size, self.min_part_size)
        hasher = blake3.blake3(max_threads=blake3.blake3.AUTO)
        journal = opts.journal
        with path.open("rb", buffering=0) as fh:
            upload = self._continue_upload(key, expected_blake3, size, journal)
            if upload is None and size <= part_size:
                data = fh.read()
                hasher.update(data)
                _check(hasher, expected_blake3, path.name, str(path))
                self.put_bytes(key, data, expected_blake3)
                opts.account(len(data))
                return len(data)
            if upload is None:
                upload = self.start_multipart(key, expected_blake3, size, part_size)
                if journal is not None:
                    journal.record(JournalEntry(self.url, key, expected_blake3, size, upload.part_size,
                                                upload.upload_id))
            part_size = upload.part_size
            stored = upload.stored_parts()
            sent = 0
            try:
                with ThreadPoolExecutor(max_workers=opts.concurrency) as pool:
                    parts = _PartReader(fh.fileno(), path, size, part_size)
                    pending: deque[tuple[Future[None], bytearray | None]] = deque()
                    number, offset = 1, 0
                    while offset < size:
                        while len(pending) >= opts.concurrency:  # bound memory to concurrency parts
                            parts.give_back(_finished(pending.popleft()))
                        part, buffer = parts.read(offset)
                        hasher.update(part)
                        have = stored.get(number)
                        if have is not None and have.size == len(part) and have.md5 == _md5(part):
                            upload.keep_part(number, part)  # sent by an earlier run, verified against our bytes
                            parts.give_back(buffer)
                        else:
                            pending.append((pool.submit(self._send_part, upload, number, offset, part, opts),
                                            buffer))
                            sent += len(part)
                        number, offset = number + 1, offset + len(part)
                    while pending:
                        _finished(pending.popleft())
                _check(hasher, expected_blake3, path.name, str(path))
                upload.complete()
            except BaseException as exc:
                resumable = journal is not None and (not isinstance(exc, ArtifactError) or exc.code == ExitCode.REMOTE)
                if not resumable:  # a remote failure or an interrupt keeps the parts for the next run
                    upload.abort()
                    if journal is not None:
                        journal.forget(self.url, key)
                raise
        if journal is not None:
            journal.forget(self.url, key)
        return sent

    def _continue_upload(self, key: str, expected_blake3: str, size: int,
                         journal: UploadJournal | None) -> Multipart | None:
        entry = journal.find(self.url, key) if journal is not None else None
        if entry is None or journal is None:
            return None
        upload = None
        if entry.blake3 == expected_blake3 and entry.size == size:
            upload = self.resume_multipart(key, expected_blake3, size, entry.part_size, entry.upload_id)
        if upload is None:
            journal.forget(self.url, key)
        return upload

    @staticmethod
    def _send_part(upload: Multipart, number: int, offset: int, data: bytes | bytearray, opts: TransferOptions) -> None:
        upload.upload_part(number, offset, data)
        opts.account(len(data))

    def download_file(self, key: str, size: int, dest: Path, expected_blake3: str, opts: TransferOptions,
                      *, resume: bool = False) -> None:
        """Fetch ``key`` into ``dest`` with parallel range reads, hashing in order; on a mismatch
        ``dest`` is removed and :class:`IntegrityError` raised. With ``resume``, the bytes an earlier,
        killed run left in ``dest`` are kept and only the rest is fetched (ranges from there on); the
        whole file is still checked against ``expected_blake3``, and fetched again once from the start
        if the kept bytes were what made it fail."""
        kept = dest.stat().st_size if resume and dest.is_file() else 0
        if kept > size:
            kept = 0
        try:
            try:
                self._download(key, size, dest, expected_blake3, opts, kept)
            except IntegrityError:
                if not kept:
                    raise
                dest.unlink(missing_ok=True)
                self._download(key, size, dest, expected_blake3, opts, 0)
        except BaseException as exc:
            if not resume or (isinstance(exc, ArtifactError) and exc.code != ExitCode.REMOTE):
                dest.unlink(missing_ok=True)
            raise

    def _download(self, key: str, size: int, dest: Path, expected_blake3: str, opts: TransferOptions,
                  kept: int) -> None:
        part_size = max(opts.range_size, 1 << 20)
        hasher = blake3.blake3(max_threads=blake3.blake3.AUTO)
        with dest.open("r+b" if kept else "wb") as out, ThreadPoolExecutor(max_workers=opts.concurrency) as pool:
            offset = 0
            while offset < kept:  # what an earlier run wrote: hashed from the local copy
                data = os.pread(out.fileno(), min(16 * MiB, kept - offset), offset)
                if not data:
                    break
                hasher.update(data)
                offset += len(data)
            pending: deque[Future[bytes]] = deque()
            written = offset

            def drain_one() -> None:
                nonlocal written
                data = pending.popleft().result()
                hasher.update(data)
                write_sparse(out.fileno(), written, data)
                start_writeback(out.fileno(), written, len(data))  # the fsync below then waits for little
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

    def _fetch(self, key: str, offset: int, length: int) -> bytes:
        data = self.read_range(key, offset, length)
        if len(data) != length:
            raise ArtifactError(f"{self.url}/{key}: short read at offset {offset} ({len(data)} of {length} bytes)",
                                hint="the object changed or was truncated during the transfer; retry",
                                code=ExitCode.REMOTE)
        return data


def remote_error(what: str, problem: object, hint: str) -> ArtifactError:
    """The error of a request the store or its client library failed: ``what`` was being done, ``problem``
    is their word for it."""
    return ArtifactError(f"{what}: {problem}", hint=hint, code=ExitCode.REMOTE)


def no_answer(what: str, timeout: float, *, connecting: bool, check: str, server: str = "") -> ArtifactError:
    """The error of a request to ``server`` left unanswered for ``timeout`` seconds; ``check``: what else the
    user should look at (the backend's endpoint setting)."""
    verb = "could not connect" if connecting else "no reply"
    return ArtifactError(f"{what}: {verb} within {timeout:g} s" + (f" ({server})" if server else ""),
                         hint=f"the server is not answering: check it {check}, or wait longer with --timeout "
                              "SECONDS; a re-run continues where this one stopped", code=ExitCode.REMOTE)


class BucketStorage(Storage):
    """A bucket of an object store (S3, GCS), its objects under a key prefix.

    Every request runs inside :meth:`_remote`: the stall watch reports a wait, and the backend's
    :meth:`_errors` turns its client library's exceptions into one :class:`ArtifactError`.
    """

    def __init__(self, scheme: str, bucket: str, prefix: str, timeout: float) -> None:
        self.prefix = prefix.strip("/")
        self.url = f"{scheme}://{bucket}/{self.prefix}".rstrip("/")
        self.timeout = timeout
        self.watch = StallWatch(self.url, timeout)

    @abc.abstractmethod
    def _errors(self, what: str) -> contextlib.AbstractContextManager[None]:
        """Errors of the client library, raised inside, as one :class:`ArtifactError` about ``what``."""

    @contextlib.contextmanager
    def _remote(self, what: str) -> Iterator[None]:
        """A request: errors become one clear :class:`ArtifactError`, and a stall is reported while it waits."""
        with self.watch.request(what), self._errors(what):
            yield

    def _key(self, key: str) -> str:
        return join_key(self.prefix, key)

    def _rel(self, full: str) -> str:
        return full[len(self.prefix) + 1:] if self.prefix else full

    def _list_prefix(self, prefix: str) -> str:
        """The full key prefix that lists ``prefix``: one naming a directory (or the root) ends in "/"."""
        full = join_key(self.prefix, prefix)
        return f"{full}/" if full and (prefix.endswith("/") or not prefix) else full


def _check(hasher: blake3.blake3, expected: str, name: str, where: str) -> None:
    actual = hasher.hexdigest()
    if actual != expected:
        raise IntegrityError(name, where, expected, actual)


def _md5(data: bytes | bytearray) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def join_key(*parts: str) -> str:
    return "/".join(p.strip("/") for p in parts if p.strip("/"))


def _finished(item: tuple[Future[None], bytearray | None]) -> bytearray | None:
    """Wait for one sent part (its error raised here) and hand back its buffer for the next."""
    future, buffer = item
    future.result()
    return buffer


class _PartReader:
    """The parts of an upload, read in order into reused buffers; a part that lies wholly in a hole is the
    same zero bytes every time and is not read.

    Buffers: a new 16 MiB buffer per part cost ~7% of a push's client CPU in page faults and page clearing
    (perf, bench_sync build). Holes: reading one makes the kernel clear a page cache page per 4 KiB and copy
    it out; a fresh Debian rootfs (722 MiB, 142 MiB of data) has 32 of its 46 parts in holes, and pushing
    it took 1.57 -> 1.21 s of client CPU without reading them."""

    def __init__(self, fd: int, path: Path, size: int, part_size: int) -> None:
        self.fd, self.path, self.size, self.part_size = fd, path, size, part_size
        self.free: list[bytearray] = []
        self.data_from = -1  # the next data offset at or after the last part looked at (SEEK_DATA)

    def read(self, offset: int) -> tuple[bytes | bytearray, bytearray | None]:
        """The part at ``offset`` and the buffer holding it (``None``: zeros, or a copy of a short last part)."""
        want = min(self.part_size, self.size - offset)
        if self.data_from < offset:
            self.data_from = next_data(self.fd, offset, self.size)
        if self.data_from >= offset + want:
            return zero_bytes(want), None
        buffer = self.free.pop() if self.free else bytearray(self.part_size)
        got = pread_full(self.fd, memoryview(buffer)[:want], offset)
        if got < want:
            raise ArtifactError(f"{self.path}: file shrank while being uploaded",
                                hint="do not modify a build while syncing it")
        if got == self.part_size:
            return buffer, buffer
        self.free.append(buffer)
        return bytes(memoryview(buffer)[:got]), None

    def give_back(self, buffer: bytearray | None) -> None:
        if buffer is not None:
            self.free.append(buffer)
