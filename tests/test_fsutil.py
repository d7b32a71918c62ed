"""fsutil's sparse and range copies on real files: holes stay holes, bytes and sizes stay the same."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from e2b_artifacts import fsutil
from e2b_artifacts.errors import ArtifactError, ExitCode

MIB = 1 << 20


def sparse_file(path: Path, size: int = 64 * MIB) -> Path:
    """``size`` bytes with 1 MiB of data at each end and 64 KiB in the middle; the rest is holes."""
    with path.open("wb") as fh:
        fh.write(os.urandom(MIB))
        fh.seek(size // 2)
        fh.write(os.urandom(64 << 10))
        fh.seek(size - MIB)
        fh.write(os.urandom(MIB))
    os.chmod(path, 0o640)
    return path


def allocated(path: Path) -> int:
    return path.stat().st_blocks * 512


def test_copy_sparse_keeps_holes_bytes_size_and_mode(tmp_path: Path) -> None:
    src = sparse_file(tmp_path / "src")
    assert allocated(src) < src.stat().st_size // 16  # the filesystem keeps holes at all
    dst = tmp_path / "dst"
    fsutil.copy_sparse(src, dst)
    assert dst.read_bytes() == src.read_bytes()
    assert dst.stat().st_size == src.stat().st_size
    assert allocated(dst) <= allocated(src) + (64 << 10)  # the holes stayed holes
    assert dst.stat().st_mode == src.stat().st_mode


def test_copy_sparse_of_a_trailing_hole_keeps_the_size(tmp_path: Path) -> None:
    src = tmp_path / "src"
    with src.open("wb") as fh:
        fh.write(b"head")
        fh.truncate(16 * MIB)
    dst = tmp_path / "dst"
    fsutil.copy_sparse(src, dst, durable=False)
    assert dst.stat().st_size == 16 * MIB and dst.read_bytes() == src.read_bytes()
    assert allocated(dst) <= 64 << 10


def test_dig_holes_turns_written_zeros_into_holes(tmp_path: Path) -> None:
    src = tmp_path / "src"
    data = os.urandom(MIB) + bytes(30 * MIB) + os.urandom(MIB)  # zeros written out: allocated, not holes
    src.write_bytes(data)
    assert allocated(src) >= len(data)
    plain, dug = tmp_path / "plain", tmp_path / "dug"
    fsutil.copy_sparse(src, plain)
    fsutil.copy_sparse(src, dug, dig_holes=True)
    assert plain.read_bytes() == dug.read_bytes() == data
    assert allocated(plain) >= len(data)  # without dig_holes only existing holes stay holes
    assert allocated(dug) <= 2 * MIB + (128 << 10)


def test_copy_sparse_error_is_one_artifact_error_with_the_hint(tmp_path: Path) -> None:
    src = sparse_file(tmp_path / "src", 4 * MIB)
    with pytest.raises(ArtifactError) as caught:
        fsutil.copy_sparse(src, tmp_path / "no-such-dir" / "dst", hint="make room")
    assert "cannot copy" in caught.value.message and caught.value.hint == "make room"
    assert caught.value.code == ExitCode.BAD_INPUT


def test_copy_range_to_an_offset_and_appending(tmp_path: Path) -> None:
    src = tmp_path / "src"
    payload = os.urandom(3 * fsutil.COPY_CHUNK + 12345)  # more than one chunk
    src.write_bytes(payload)
    at_offset, appended = tmp_path / "at-offset", tmp_path / "appended"
    with src.open("rb") as fin, at_offset.open("wb") as fout:
        fsutil.copy_range(fin.fileno(), fout.fileno(), 100, len(payload), 4096)
    assert at_offset.read_bytes() == bytes(4096) + payload[100:]
    with src.open("rb") as fin, appended.open("wb") as fout:
        fout.write(b"head:")
        fout.flush()
        fsutil.copy_range(fin.fileno(), fout.fileno(), 0, 10)
        fsutil.copy_range(fin.fileno(), fout.fileno(), len(payload) - 10, len(payload))
        fout.write(b":tail")
    assert appended.read_bytes() == b"head:" + payload[:10] + payload[-10:] + b":tail"


def test_copy_range_falls_back_where_copy_file_range_is_refused(tmp_path: Path) -> None:
    src = tmp_path / "src"
    payload = os.urandom(fsutil.COPY_CHUNK + 7)
    src.write_bytes(payload)
    out = tmp_path / "out"
    out.write_bytes(b"x")
    fd = os.open(out, os.O_WRONLY | os.O_APPEND)  # copy_file_range refuses O_APPEND targets (EBADF)
    try:
        with src.open("rb") as fin:
            fsutil.copy_range(fin.fileno(), fd, 0, len(payload))
    finally:
        os.close(fd)
    assert out.read_bytes() == b"x" + payload


def test_copy_range_past_the_end_of_the_source_is_a_short_copy(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.write_bytes(b"0123456789")
    with src.open("rb") as fin, (tmp_path / "dst").open("wb") as fout, pytest.raises(fsutil.ShortCopy) as caught:
        fsutil.copy_range(fin.fileno(), fout.fileno(), 0, 20, 0)
    assert caught.value.code == ExitCode.BAD_INPUT and "short copy" in caught.value.message
    assert (tmp_path / "dst").read_bytes() == b"0123456789"  # what there was, was copied


def test_write_sparse_skips_zero_grains(tmp_path: Path) -> None:
    path = tmp_path / "f"
    data = os.urandom(fsutil.HOLE_GRAIN) + bytes(16 * fsutil.HOLE_GRAIN) + os.urandom(100)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        fsutil.write_sparse(fd, 0, data)
        os.ftruncate(fd, len(data))
    finally:
        os.close(fd)
    assert path.read_bytes() == data
    assert allocated(path) <= 4 * fsutil.HOLE_GRAIN
    with path.open("rb") as fh:
        extents = list(fsutil.data_extents(fh.fileno(), len(data)))
    assert extents == [(0, fsutil.HOLE_GRAIN), (17 * fsutil.HOLE_GRAIN, len(data))]


def test_start_writeback_leaves_the_bytes_and_ignores_what_cannot_be_written_back(tmp_path: Path) -> None:
    path = tmp_path / "f"
    data = os.urandom(3 << 20)
    with path.open("wb") as fh:
        fsutil.write_sparse(fh.fileno(), 0, data)
        fsutil.start_writeback(fh.fileno(), 0, len(data))
        fsutil.start_writeback(fh.fileno(), len(data), 0)  # an empty range is a no-op
        os.fsync(fh.fileno())
    assert path.read_bytes() == data
    read_end, write_end = os.pipe()
    try:
        fsutil.start_writeback(write_end, 0, 4096)  # ESPIPE from the kernel: best effort, no exception
    finally:
        os.close(read_end)
        os.close(write_end)
