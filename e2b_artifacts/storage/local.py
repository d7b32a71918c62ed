"""A directory as object storage: key ``a/b`` is the file ``<root>/a/b``.

Objects are written to a hidden temp name in the same directory and renamed
into place, so a reader never sees a half-written file. The BLAKE3 of each
object goes into the extended attribute ``user.e2b_artifact.blake3`` when the
filesystem has user xattrs (otherwise resume re-sends that file).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Collection
from pathlib import Path

from ..errors import ArtifactError, ExitCode
from ..fsutil import start_writeback, write_sparse
from .base import DEFAULT_TIMEOUT, Cleanup, Multipart, ObjectInfo, StallWatch, Storage

XATTR = "user.e2b_artifact.blake3"
TEMP_SUFFIX = ".e2b-partial"


class LocalStorage(Storage):
    min_part_size = 1 << 20

    def __init__(self, root: Path) -> None:
        self.root = root
        self.url = f"file://{root}"
        self.watch = StallWatch(self.url, DEFAULT_TIMEOUT)  # file system calls are not watched

    def _path(self, key: str) -> Path:
        path = self.root / key
        if ".." in Path(key).parts:
            raise ArtifactError(f"refusing key outside the storage root: {key}", code=ExitCode.BAD_INPUT)
        return path

    def list(self, prefix: str) -> list[ObjectInfo]:
        if not self.root.is_dir():
            return []
        found: list[ObjectInfo] = []
        start = self._path(prefix.rpartition("/")[0]) if "/" in prefix else self.root  # walk only what can match
        for dirpath, dirnames, filenames in os.walk(start):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            for name in filenames:
                if name.startswith("."):
                    continue
                path = Path(dirpath) / name
                key = path.relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    info = self._info(key, path)
                    if info is not None:
                        found.append(info)
        return sorted(found, key=lambda i: i.key)

    def _info(self, key: str, path: Path) -> ObjectInfo | None:
        try:
            st = path.stat()
        except FileNotFoundError:
            return None
        try:
            recorded: str | None = os.getxattr(path, XATTR).decode()
        except OSError:
            recorded = None
        return ObjectInfo(key, st.st_size, recorded)

    def stat(self, key: str) -> ObjectInfo | None:
        path = self._path(key)
        return self._info(key, path) if path.is_file() else None

    def read_range(self, key: str, start: int, length: int) -> bytes:
        with self._path(key).open("rb") as fh:
            return os.pread(fh.fileno(), length, start)

    def put_bytes(self, key: str, data: bytes, blake3_hex: str) -> None:
        upload = self.start_multipart(key, blake3_hex, len(data), len(data))
        try:
            upload.upload_part(1, 0, data)
            upload.complete()
        except BaseException:
            upload.abort()
            raise

    def start_multipart(self, key: str, blake3_hex: str, size: int, part_size: int) -> Multipart:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        upload = _LocalUpload(target, blake3_hex, size)
        upload.part_size = part_size
        return upload

    def clean_temporaries(self, prefix: str, keep: Collection[str] = ()) -> Cleanup:
        directory = self._path(prefix)
        if not directory.is_dir():
            return Cleanup(0)
        stale = list(directory.glob(f".*{TEMP_SUFFIX}"))
        for path in stale:  # our own unfinished writes, never a user's file
            path.unlink(missing_ok=True)
        return Cleanup(len(stale))


class _LocalUpload(Multipart):
    def __init__(self, target: Path, blake3_hex: str, size: int) -> None:
        self.target = target
        self.size = size
        self.blake3_hex = blake3_hex
        self.temp = target.with_name(f".{target.name}{TEMP_SUFFIX}")
        self.fd = os.open(self.temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)

    def upload_part(self, number: int, offset: int, data: bytes | bytearray) -> None:
        write_sparse(self.fd, offset, data)  # holes in a sparse rootfs stay holes
        start_writeback(self.fd, offset, len(data))

    def complete(self) -> None:
        os.ftruncate(self.fd, self.size)
        os.fsync(self.fd)
        os.close(self.fd)
        self.fd = -1
        with contextlib.suppress(OSError):  # no user xattrs here: resume just re-sends this file
            os.setxattr(self.temp, XATTR, self.blake3_hex.encode())
        os.replace(self.temp, self.target)

    def abort(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        self.temp.unlink(missing_ok=True)
