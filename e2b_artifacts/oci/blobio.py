"""Reading blobs through their descriptors: regular files only, never more than the size they claim.

A descriptor names a blob by digest *and* size, so a reader never needs more
than ``size + 1`` bytes to tell whether a blob is what it claims: a FIFO, a
symlink to ``/dev/zero`` or a sparse 4 GiB file behind a 200-byte descriptor
costs one ``fstat`` (or at most ``size + 1`` bytes), not all the memory there is.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path
from typing import IO, BinaryIO

from ..errors import ArtifactError, ExitCode

CHUNK = 1 << 20

_KINDS = {stat.S_IFDIR: "a directory", stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device",
          stat.S_IFIFO: "a FIFO", stat.S_IFSOCK: "a socket"}


def open_regular(path: Path, what: str, *, missing_hint: str = "the layout is incomplete") -> BinaryIO:
    """``path`` opened for reading if it is a regular file (symlinks to one are fine); never blocks on a FIFO."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError as exc:
        raise ArtifactError(f"{what} missing: {path}", hint=missing_hint, code=ExitCode.BAD_INPUT) from exc
    except OSError as exc:
        raise ArtifactError(f"cannot read {what} {path}: {exc.strerror}", hint="check the path and its permissions",
                            code=ExitCode.BAD_INPUT) from exc
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise ArtifactError(f"{what} {path} is not a regular file ({_KINDS.get(stat.S_IFMT(mode), 'special')})",
                            hint="an image layout holds regular files only; rebuild it with skopeo or umoci",
                            code=ExitCode.BAD_INPUT)
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def too_large(what: str, size: int) -> ArtifactError:
    return ArtifactError(f"{what} has more than the {size} bytes its descriptor says",
                         hint="the source is corrupt or was tampered with", code=ExitCode.INTEGRITY)


def too_small(what: str, actual: int, size: int) -> ArtifactError:
    return ArtifactError(f"{what} has {actual} bytes, its descriptor says {size}",
                         hint="the source is corrupt or was tampered with", code=ExitCode.INTEGRITY)


def digest_mismatch(what: str, expected: str, actual: str) -> ArtifactError:
    return ArtifactError(f"{what} digest mismatch: expected {expected}, got {actual}",
                         hint="the source is corrupt or was tampered with", code=ExitCode.INTEGRITY)


class BoundedReader:
    """Reads at most ``size`` bytes of ``raw`` (refusing a byte more), hashing them with sha256."""

    def __init__(self, raw: IO[bytes], size: int, what: str) -> None:
        self.raw = raw
        self.size = size
        self.what = what
        self.count = 0
        self.hash = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        want = CHUNK if n is None or n < 0 else n
        # one byte past the end is asked for, so a longer blob is caught without reading it
        data = self.raw.read(min(want, self.size - self.count + 1))
        self.count += len(data)
        if self.count > self.size:
            raise too_large(self.what, self.size)
        self.hash.update(data)
        return data

    def drain(self) -> None:
        while self.read(CHUNK):
            pass

    def digest(self) -> str:
        return "sha256:" + self.hash.hexdigest()

    def check(self, digest: str | None) -> None:
        """After the last read: the size and (when known) the digest are what the descriptor says."""
        self.drain()
        if self.count != self.size:
            raise too_small(self.what, self.count, self.size)
        if digest is not None and self.digest() != digest:
            raise digest_mismatch(self.what, digest, self.digest())


def read_verified(path: Path, size: int, digest: str, what: str) -> bytes:
    """The bytes of a blob file, checked against its descriptor's size (before reading) and digest."""
    with open_regular(path, what) as fh:
        actual = os.fstat(fh.fileno()).st_size
        if actual > size:
            raise too_large(f"{what} {path}", size)
        reader = BoundedReader(fh, size, f"{what} {path}")
        data = b"".join(iter(lambda: reader.read(CHUNK), b""))
        reader.check(digest)
    return data


def read_bounded(path: Path, limit: int, what: str, *, missing_hint: str) -> bytes:
    """A regular file of at most ``limit`` bytes (a document without a descriptor, e.g. index.json)."""
    with open_regular(path, what, missing_hint=missing_hint) as fh:
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise ArtifactError(f"{what} {path} is larger than {limit >> 20} MiB", hint="check the image source",
                            code=ExitCode.BAD_INPUT)
    return data
