"""Small filesystem helpers: atomic writes, an exclusive lock, moving aside, sparse and range copies."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, cast

from .errors import ArtifactError, ExitCode

if TYPE_CHECKING:  # only its methods are used: layout imports fsutil and stays free of other modules
    from .limits import InputLimit


def open_input(path: Path, what: str, *, missing_hint: str, hint: str = "check the path and its permissions",
               ) -> tuple[BinaryIO, int]:
    """``path`` opened for reading if it is a regular file (symlinks followed), with its size.

    Opened with ``O_NONBLOCK`` so a FIFO cannot block the open, then refused by ``fstat`` unless it is a
    regular file: a FIFO, a device (``/dev/zero``), a socket or a directory is an error naming ``what``.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError as exc:
        raise ArtifactError(f"{what} not found: {path}", hint=missing_hint, code=ExitCode.BAD_INPUT) from exc
    except OSError as exc:
        raise ArtifactError(f"cannot read {what} {path}: {exc.strerror}", hint=hint, code=ExitCode.BAD_INPUT) from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ArtifactError(f"{what} {path} is not a regular file ({_file_kind(st.st_mode)})",
                                hint=f"put the {what} itself there (a FIFO or device is never read)",
                                code=ExitCode.BAD_INPUT)
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb"), st.st_size
    except BaseException:
        os.close(fd)
        raise


def read_input(path: Path, what: str, *, limit: InputLimit, missing_hint: str,
               hint: str = "check the path and its permissions") -> bytes:
    """The bytes of a regular input file of at most ``limit`` bytes, or an :class:`ArtifactError`."""
    most = limit.bytes()  # before the open: a bad limit variable must not leave the file open
    fh, size = open_input(path, what, missing_hint=missing_hint, hint=hint)
    with fh:
        if size > most:
            raise limit.exceeded(what, path, size)
        try:
            data = fh.read(most + 1)  # a file that grew since fstat is still cut at the limit
        except OSError as exc:
            raise ArtifactError(f"cannot read {what} {path}: {exc.strerror}", hint=hint,
                                code=ExitCode.BAD_INPUT) from exc
    if len(data) > most:
        raise limit.exceeded(what, path, None)
    return data


def _file_kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a directory")):
        if test(mode):
            return name
    return "not a regular file"


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


COPY_CHUNK = 8 << 20  # bytes per copy_file_range call (and per read where the kernel refuses it)
HOLE_GRAIN = 64 << 10  # all-zero runs of this size are left as holes by write_sparse
_FICLONE = 0x40049409  # ioctl: share all extents (btrfs, XFS); refused elsewhere


class ShortCopy(ArtifactError):
    """The source ended before the range to copy did."""


def copy_range(in_fd: int, out_fd: int, start: int, end: int, dest_start: int | None = None) -> None:
    """Copy bytes [start, end) of ``in_fd`` to ``out_fd`` at ``dest_start``, or at ``out_fd``'s file
    position (which advances) when it is None.

    ``copy_file_range`` first: the kernel copies (or shares extents) without a trip through user space;
    where it refuses these two files, pread and write.
    """
    position, dest = start, dest_start
    while position < end:
        n = min(COPY_CHUNK, end - position)
        try:
            copied = os.copy_file_range(in_fd, out_fd, n, position, dest)
        except OSError:  # EXDEV, EINVAL, EOPNOTSUPP, ...: not between these files; real errors recur below
            copied = 0
        if copied == 0:
            copied = _copy_through_user_space(in_fd, out_fd, n, position, dest)
        position += copied
        if dest is not None:
            dest += copied


def _copy_through_user_space(in_fd: int, out_fd: int, n: int, position: int, dest: int | None) -> int:
    data = os.pread(in_fd, n, position)
    if not data:
        raise _short_copy()
    view = memoryview(data)
    while view:
        written = os.write(out_fd, view) if dest is None else os.pwrite(out_fd, view, dest + len(data) - len(view))
        view = view[written:]
    return len(data)


def _short_copy() -> ShortCopy:
    return ShortCopy("short copy: the source ends early or shrank while copying",
                     hint="retry when nothing writes to it", code=ExitCode.BAD_INPUT)


_SYNC_FILE_RANGE_WRITE = 2  # linux/fs.h: start writeback of the range's dirty pages, do not wait


@functools.cache
def _sync_file_range() -> Callable[[int, int, int, int], int] | None:
    import ctypes

    fn = getattr(ctypes.CDLL(None, use_errno=True), "sync_file_range", None)
    if fn is None:
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return cast(Callable[[int, int, int, int], int], fn)


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Start writing ``[offset, offset + length)`` of ``fd`` to disk now, without waiting for it.

    A download that fsyncs its file at the end otherwise waits there for every dirty page at once (300 MB on
    the test machine's disk: 3.7 s after the last byte arrived); started range by range, the writeback runs
    while later ranges are still on the wire and the final fsync finds little left. Best effort: where the
    call does not exist or fails, the fsync still does the work.
    """
    fn = _sync_file_range()
    if fn is not None and length > 0:
        fn(fd, offset, length, _SYNC_FILE_RANGE_WRITE)


def all_zero(data: bytes | bytearray, start: int = 0, end: int | None = None) -> bool:
    """Whether ``data[start:end]`` holds only zero bytes.

    Data blocks rarely start and end with a zero byte: two lookups decide most of them without a copy. The rest
    is a bytes slice compared with bytes, a memcmp (memoryviews compare item by item: 9 s per GiB of zeros).
    """
    end = len(data) if end is None else end
    if start >= end:
        return True
    if data[start] or data[end - 1]:
        return False
    return data[start:end] == zero_bytes(end - start)


@functools.lru_cache(maxsize=8)
def zero_bytes(n: int) -> bytes:
    """``n`` zero bytes, shared (a large one is calloc'ed: its pages map the kernel's zero page when read)."""
    return bytes(n)


def write_sparse(fd: int, offset: int, data: bytes | bytearray) -> None:
    """``pwrite`` ``data`` at ``offset``, skipping all-zero ``HOLE_GRAIN`` blocks (the file must be new or
    truncated, so skipped blocks read back as zeros; the caller sets the final size)."""
    view = memoryview(data)
    size = len(data)
    start = 0
    while start < size:
        end = min(start + HOLE_GRAIN, size)
        if not all_zero(data, start, end):
            run_end = end  # extend over following non-zero blocks: fewer, larger writes
            while run_end < size:
                nxt = min(run_end + HOLE_GRAIN, size)
                if all_zero(data, run_end, nxt):
                    break
                run_end = nxt
            chunk, at = view[start:run_end], offset + start
            while chunk:
                n = os.pwrite(fd, chunk, at)
                chunk, at = chunk[n:], at + n
            start = run_end
        else:
            start = end


def next_data(fd: int, offset: int, size: int) -> int:
    """Offset of the first data byte at or after ``offset`` (SEEK_DATA; ``size`` when only a hole is left),
    or ``offset`` itself where the filesystem cannot tell, so that the caller reads. Moves the fd's position:
    read with ``pread``."""
    try:
        return min(os.lseek(fd, offset, os.SEEK_DATA), size)
    except OSError as exc:
        return size if exc.errno == errno.ENXIO else offset


def pread_full(fd: int, view: memoryview, offset: int) -> int:
    """Fill ``view`` from ``offset`` on (``pread`` again after a short read); fewer bytes only at end of file."""
    got = 0
    while got < len(view):
        n = os.preadv(fd, [view[got:]], offset + got)
        if n == 0:
            break
        got += n
    return got


def data_extents(fd: int, size: int) -> Iterator[tuple[int, int]]:
    """[start, end) of every data extent of an open file (SEEK_DATA/SEEK_HOLE); holes are left out."""
    offset = 0
    while offset < size:
        try:
            start = os.lseek(fd, offset, os.SEEK_DATA)
        except OSError:  # ENXIO: only a hole remains
            return
        end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
        yield start, end
        offset = end


def copy_sparse(src: Path, dst: Path, *, dig_holes: bool = False, durable: bool = True,
                hint: str = "check the free space and permissions of the target") -> None:
    """Copy ``src`` to a new ``dst`` with the same size, bytes and mode, holes staying holes.

    A reflink where the filesystem shares extents (like ``cp --reflink=auto``); else only the data
    extents are copied (``copy_file_range``). ``dig_holes`` also leaves all-zero runs inside the data as
    holes (like ``cp --sparse=always``; that data is read through user space). ``durable`` fsyncs ``dst``.
    An OS error becomes an :class:`ArtifactError` carrying ``hint``.
    """
    try:
        with src.open("rb") as fin, dst.open("wb") as fout:
            in_fd, out_fd = fin.fileno(), fout.fileno()
            size = os.fstat(in_fd).st_size
            if not _reflink(in_fd, out_fd):
                for start, end in data_extents(in_fd, size):
                    if dig_holes:
                        _dig_holes(in_fd, out_fd, start, end)
                    else:
                        copy_range(in_fd, out_fd, start, end, start)
                os.ftruncate(out_fd, size)
            if durable:
                os.fsync(out_fd)
        shutil.copymode(src, dst)
    except OSError as exc:
        code = ExitCode.NO_SPACE if exc.errno in (errno.ENOSPC, errno.EDQUOT) else ExitCode.BAD_INPUT
        raise ArtifactError(f"cannot copy {src} to {dst}: {exc.strerror}", hint=hint, code=code) from exc


def _reflink(in_fd: int, out_fd: int) -> bool:
    try:
        fcntl.ioctl(out_fd, _FICLONE, in_fd)
    except OSError:
        return False
    return True


def _dig_holes(in_fd: int, out_fd: int, start: int, end: int) -> None:
    position = start
    while position < end:
        data = os.pread(in_fd, min(COPY_CHUNK, end - position), position)
        if not data:
            raise _short_copy()
        write_sparse(out_fd, position, data)
        position += len(data)
