"""A content-addressed blob cache: ``${E2B_ARTIFACT_CACHE:-~/.cache/e2b-artifact}/blobs/sha256/<hex>``.

Compressed layers, configs and manifests are stored under their digest; an
uncompressed layer is stored under its diff id (the sha256 of the tar), which
is the same kind of address. Files appear only complete and verified
(temp name + rename), so a crashed pull leaves no half blob behind.

Trust: when a blob is verified (written, or re-hashed), a *stamp* in
``stamps/`` records the digest with the file's device, inode, size, mtime and
ctime. A blob is used without re-hashing only while all of these are unchanged
(ctime cannot be set back by ``touch``); otherwise it is hashed again, and a
blob that no longer matches its name is removed and fetched or unpacked again.
The same stamps record which *source* files (a layout's blob, a member of a
``docker save`` archive) a cached layer was verified from, so a changed source
is checked again instead of being answered from the cache.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import BinaryIO

from ..errors import ArtifactError, ExitCode
from ..fsutil import atomic_write_bytes
from ..settings import cache_dir
from .blobio import CHUNK
from .reference import check_digest

_STAMP_VERSION = 1


def _identity(st: os.stat_result) -> list[int]:
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def file_sha256(path: Path, limit: int | None = None) -> str | None:
    """sha256 of a regular file's bytes (None if it is not one, or longer than ``limit``)."""
    from .blobio import open_regular

    try:
        fh = open_regular(path, "cached blob")
    except ArtifactError:
        return None
    h = hashlib.sha256()
    count = 0
    with fh:
        while chunk := fh.read(CHUNK):
            count += len(chunk)
            if limit is not None and count > limit:
                return None
            h.update(chunk)
    return "sha256:" + h.hexdigest()


class BlobCache:
    def __init__(self, root: Path | None = None, report: Callable[[str], None] = lambda _: None) -> None:
        self.root = root or cache_dir()
        self.blobs = self.root / "blobs" / "sha256"
        self.stamps = self.root / "stamps"
        self.report = report  # says when a cache entry was found damaged

    def path(self, digest: str) -> Path:
        return self.blobs / check_digest(digest).split(":", 1)[1]

    # -- stamps -------------------------------------------------------------------------------

    def _stamp_path(self, key: str) -> Path:
        return self.stamps / hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()

    def _stamp_matches(self, key: str, digest: str, path: Path) -> bool:
        try:
            st = path.stat()
            doc = json.loads(self._stamp_path(key).read_bytes())
        except (OSError, ValueError):
            return False
        return bool(doc == {"v": _STAMP_VERSION, "key": key, "digest": digest, "file": _identity(st)})

    def _stamp(self, key: str, digest: str, path: Path) -> None:
        with contextlib.suppress(OSError):  # a missing stamp only costs a re-hash next time
            st = path.stat()
            self.stamps.mkdir(parents=True, exist_ok=True)
            doc = {"v": _STAMP_VERSION, "key": key, "digest": digest, "file": _identity(st)}
            atomic_write_bytes(self._stamp_path(key), json.dumps(doc).encode())

    def source_trusted(self, path: Path, member: str, digest: str) -> bool:
        """``path`` (``member`` of it, for an archive) was verified as ``digest`` and has not changed since."""
        return self._stamp_matches(f"source\0{path.resolve()}\0{member}", digest, path)

    def remember_source(self, path: Path, member: str, digest: str) -> None:
        self._stamp(f"source\0{path.resolve()}\0{member}", digest, path)

    # -- blobs --------------------------------------------------------------------------------

    def verified(self, digest: str, limit: int | None = None) -> Path | None:
        """The cached blob ``digest`` if it is there and still holds those bytes (re-hashed unless its stamp
        matches); a damaged one is removed (``None``: fetch or unpack it again)."""
        path = self.path(digest)
        if not path.exists() and not path.is_symlink():
            return None
        key = f"blob\0{digest}"
        if self._stamp_matches(key, digest, path):
            return path
        actual = file_sha256(path, limit)
        if actual == digest:
            self._stamp(key, digest, path)
            return path
        self.report(f"image: cache entry {path} was damaged (it no longer matches {digest[:19]}…); "
                    "removed, getting it again")
        with contextlib.suppress(OSError):
            path.unlink()
        return None

    def read_verified(self, digest: str, limit: int) -> bytes | None:
        """A small cached document (manifest, config), re-hashed on every read; None if absent or damaged."""
        path = self.verified(digest, limit)
        if path is None:
            return None
        try:
            data = path.read_bytes()
        except OSError:
            return None
        if "sha256:" + hashlib.sha256(data).hexdigest() != digest:  # changed after the check
            return None
        return data

    def writer(self, digest: str) -> VerifiedWriter:
        """A file object for a blob's bytes; ``commit()`` checks the digest and publishes it."""
        try:
            self.blobs.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ArtifactError(f"cannot create the blob cache {self.blobs}: {exc}",
                                hint="set E2B_ARTIFACT_CACHE to a writable directory", code=ExitCode.BAD_INPUT) from exc
        return VerifiedWriter(self.path(digest), digest,
                              on_commit=lambda path: self._stamp(f"blob\0{digest}", digest, path))

    def put(self, digest: str, chunks: Iterable[bytes]) -> int:
        with self.writer(digest) as out:
            for chunk in chunks:
                out.write(chunk)
            out.commit()
            return out.size


class VerifiedWriter:
    """Write to a temp file beside ``dest`` while hashing; rename only if the digest matches."""

    def __init__(self, dest: Path, digest: str | None, what: str = "blob",
                 on_commit: Callable[[Path], None] = lambda _: None) -> None:
        self.dest = dest
        self.on_commit = on_commit
        self.digest = digest
        self.what = what
        self.hash = hashlib.sha256()
        self.size = 0
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name[:16]}.", suffix=".part", dir=dest.parent)
        self.tmp = Path(tmp)
        self.file: BinaryIO = os.fdopen(fd, "wb")
        self.committed = False

    def write(self, data: bytes) -> None:
        self.hash.update(data)
        self.size += len(data)
        self.file.write(data)

    def actual_digest(self) -> str:
        return "sha256:" + self.hash.hexdigest()

    def commit(self, dest: Path | None = None) -> Path:
        """Verify against the expected digest (or accept the computed one) and rename into place."""
        self.file.close()
        actual = self.actual_digest()
        if self.digest is not None and actual != self.digest:
            self.tmp.unlink(missing_ok=True)
            raise ArtifactError(f"{self.what} digest mismatch: expected {self.digest}, got {actual}",
                                hint="the registry or file served corrupt or tampered data; retry, or check the source",
                                code=ExitCode.INTEGRITY)
        final = dest or self.dest
        os.chmod(self.tmp, 0o644)
        os.replace(self.tmp, final)
        self.committed = True
        self.on_commit(final)
        return final

    def __enter__(self) -> VerifiedWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        if not self.committed:
            self.file.close()
            with contextlib.suppress(FileNotFoundError):
                self.tmp.unlink()
