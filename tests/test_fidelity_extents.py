"""The fidelity check's fast content read: a file's blocks read from the image at its extent map (``debugfs ex``),
holes and unwritten extents as zeros, and a corrupted block still reported, as debugfs ``cat`` reads it."""

from __future__ import annotations

import os
import re
import subprocess
import tarfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from e2b_artifacts import e2fsprogs, fidelity
from e2b_artifacts.e2fsprogs import Inode
from e2b_artifacts.image import ImageBuild, ImageOptions, build_rootfs
from tests.oci.images import craft_layout, tar_bytes

HOLES = b"a" * 5000 + bytes(40000) + b"b" * 5000  # mke2fs -d leaves the zero blocks 2-9 as a hole
BIG = bytes(range(256)) * 1200  # 300 KiB, one extent


@pytest.fixture
def built(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[ImageBuild, Path]:
    monkeypatch.setenv("E2B_ARTIFACT_CACHE", str(tmp_path / "cache"))
    layout = craft_layout(tmp_path / "layout", [tar_bytes(
        ("etc", tarfile.DIRTYPE, b""), ("etc/holes", tarfile.REGTYPE, HOLES), ("etc/big", tarfile.REGTYPE, BIG),
        ("etc/tiny", tarfile.REGTYPE, b"inline"), ("etc/empty", tarfile.REGTYPE, b""))])
    image = tmp_path / "out" / "rootfs.ext4"
    image.parent.mkdir()
    result = build_rootfs(ImageOptions(f"oci-layout:{layout}:t"), image, free_mb=4)
    assert result.report.ok, result.report.mismatches
    return result, image


@pytest.fixture
def cat_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Inode numbers fidelity read through debugfs cat (the real one, recorded)."""
    calls: list[int] = []
    real = e2fsprogs.cat_inodes

    def recording(image: Path, inodes: Sequence[Inode]) -> Iterator[tuple[int, memoryview]]:
        calls.extend(node.ino for node in inodes)
        return real(image, inodes)

    monkeypatch.setattr(e2fsprogs, "cat_inodes", recording)
    return calls


def _ino(image: Path, path: str) -> int:
    node = e2fsprogs.Ext4Image(image).stat(path)
    assert node is not None
    return node.ino


def _extents(image: Path, path: str) -> list[e2fsprogs.Extent]:
    extents = e2fsprogs.inode_extras(image, [(_ino(image, path), "file")])[_ino(image, path)].extents
    assert extents is not None
    return extents


def test_extent_map_with_a_hole_and_unwritten_extents(built: tuple[ImageBuild, Path], cat_calls: list[int]) -> None:
    result, image = built
    assert [(x.logical, x.length) for x in _extents(image, "/etc/holes")] == [(0, 2), (10, 3)]
    # debugfs fallocate turns the hole (and blocks past the end) into unwritten extents: still zeros
    subprocess.run(["debugfs", "-w", "-R", "fallocate /etc/holes 0 20", str(image)], check=True, capture_output=True)
    extents = _extents(image, "/etc/holes")
    assert any(x.uninit for x in extents)
    unwritten = next(x for x in extents if x.uninit and x.logical == 2)
    with image.open("r+b") as fh:  # garbage in the unwritten blocks is not content
        os.pwrite(fh.fileno(), b"\xff" * e2fsprogs.BLOCK_SIZE, unwritten.physical * e2fsprogs.BLOCK_SIZE)
    report = fidelity.compare(result.flattened.entries, image)
    assert report.ok, report.mismatches
    inline = {_ino(image, "/etc/tiny")}  # inline data has no extent map: read through cat
    assert set(cat_calls) == inline, "files with an extent map are read from the image, not through cat"


def test_corrupted_block_is_a_content_mismatch(built: tuple[ImageBuild, Path], cat_calls: list[int]) -> None:
    result, image = built
    first = _extents(image, "/etc/big")[0]
    with image.open("r+b") as fh:
        os.pwrite(fh.fileno(), b"corrupt", first.physical * e2fsprogs.BLOCK_SIZE + 100)
    report = fidelity.compare(result.flattened.entries, image)
    assert [(m.path, m.field) for m in report.mismatches] == [("/etc/big", "content")]
    assert _ino(image, "/etc/big") in cat_calls  # the mismatch is confirmed the way debugfs reads the file


def test_ex_output_parsed_as_debugfs_prints_it(built: tuple[ImageBuild, Path]) -> None:
    image = built[1]
    text = subprocess.run(["debugfs", "-R", "ex /etc/big", str(image)], capture_output=True, text=True).stdout
    rows = [line for line in text.splitlines() if re.match(r"\s*\d+/", line)]
    assert len(rows) == len(_extents(image, "/etc/big")) == 1
    assert e2fsprogs.inode_extras(image, [(_ino(image, "/etc/tiny"), "file")])[_ino(image, "/etc/tiny")].extents is None
