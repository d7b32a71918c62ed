"""Small filesystem helpers: atomic writes, an exclusive lock, moving aside, copying byte ranges."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .errors import ArtifactError, ExitCode

COPY_CHUNK = 8 << 20


def read_input(path: Path, what: str, *, missing_hint: str, hint: str = "check the path and its permissions") -> bytes:
    """The bytes of an input file, or an :class:`ArtifactError` naming ``what`` and the fix."""
    try:
        return path.read_bytes()
    except FileNotFoundError as exc:
        raise ArtifactError(f"{what} not found: {path}", hint=missing_hint, code=ExitCode.BAD_INPUT) from exc
    except OSError as exc:
        raise ArtifactError(f"cannot read {what} {path}: {exc.strerror}", hint=hint, code=ExitCode.BAD_INPUT) from exc


def check_writable(path: Path, what: str) -> None:
    """Refuse (exit 3) an output path that :func:`atomic_write_bytes` could not write, before any work."""
    hint = f"pass {what} a file in a directory you can write"
    if path.is_dir():
        raise ArtifactError(f"{what} {path} is a directory", hint=hint, code=ExitCode.BAD_INPUT)
    parent = path.parent
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".probe", dir=parent)
    except OSError as exc:
        reason = "does not exist" if not parent.exists() else (exc.strerror or str(exc))
        raise ArtifactError(f"{what} {path} cannot be written: {parent} {reason}", hint=hint,
                            code=ExitCode.BAD_INPUT) from exc
    os.close(fd)
    os.unlink(probe)  # our own empty probe file, created just above


def atomic_write_bytes(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` to a temp name beside ``path``, fsync, then rename over it."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def exclusive_lock(lock_path: Path, what: str) -> Iterator[None]:
    """Hold an exclusive, non-blocking flock on ``lock_path``; the file is removed again on release.

    Removing a lock file is safe only because each taker checks, once it holds the flock, that the
    path still names the inode it locked (a file unlinked by the previous holder does not count).
    """
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    for _attempt in range(10):
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise ArtifactError(
                    f"{what} is locked by another process ({lock_path})",
                    hint="wait for the other run to finish; the lock is released when it exits",
                    code=ExitCode.CONFLICT) from exc
            raise
        try:
            current = os.stat(lock_path)
        except FileNotFoundError:
            current = None
        if current is None or current.st_ino != os.fstat(fd).st_ino:
            os.close(fd)  # the previous holder removed it between our open and our flock: take the new one
            continue
        try:
            yield
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(lock_path)  # while still holding it (see above)
            os.close(fd)
        return
    raise ArtifactError(f"{what}: could not take the lock {lock_path}", hint="retry; another process keeps "
                        "replacing it", code=ExitCode.CONFLICT)


def unused_path(path: Path) -> Path:
    """``path`` if free, else ``path.1``, ``path.2``, ... (never an existing name)."""
    if not path.exists() and not path.is_symlink():
        return path
    n = 1
    while True:
        candidate = path.with_name(f"{path.name}.{n}")
        if not candidate.exists() and not candidate.is_symlink():
            return candidate
        n += 1


def copy_range(in_fd: int, out_fd: int, start: int, end: int, dest_start: int | None = None) -> None:
    """Copy bytes [start, end) of ``in_fd`` to ``out_fd`` at ``dest_start`` (default: the same offset)."""
    position, shift = start, (start if dest_start is None else dest_start) - start
    while position < end:
        n = min(COPY_CHUNK, end - position)
        try:
            copied = os.copy_file_range(in_fd, out_fd, n, position, position + shift)
        except OSError:
            copied = os.pwrite(out_fd, os.pread(in_fd, n, position), position + shift)
        if copied == 0:
            raise ArtifactError("short copy: the source ends early or shrank while copying",
                                hint="retry when nothing writes to it", code=ExitCode.BAD_INPUT)
        position += copied


def apparent_and_allocated(path: Path) -> tuple[int, int]:
    """(size in bytes, bytes allocated on disk) of a file."""
    st = path.stat()
    return st.st_size, st.st_blocks * 512
