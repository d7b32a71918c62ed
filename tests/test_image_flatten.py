"""Whiteout, opaque-dir and hard-link rules of the flattener, end to end into ext4, and the fidelity check."""

from __future__ import annotations

import os
import re
import subprocess
import tarfile
import threading
from pathlib import Path

import pytest

from e2b_artifacts import fidelity
from e2b_artifacts.image import ImageOptions, build_rootfs, rootfs_tar_from_image
from e2b_artifacts.oci import flatten, layers, reference, sources
from e2b_artifacts.oci.cache import BlobCache
from tests.conftest import debugfs_lines, file_bytes
from tests.oci.images import craft_layout, tar_bytes

REG, DIR, SYM, LNK = tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE

LAYERS = [
    tar_bytes(("a", DIR, b""), ("a/b", DIR, b""), ("a/b/c", REG, b"c1"),
              ("d", DIR, b""), ("d/x", REG, b"x1"), ("f", REG, b"file1"),
              ("one", REG, b"one"), ("gone", REG, b"gone"), ("same", REG, b"old")),
    tar_bytes(("b-link", LNK, "one"), ("g-link", LNK, "gone"),
              ("d", REG, b"file replaces dir"),  # and its subtree
              ("f", DIR, b""), ("f/y", REG, b"dir replaces file"),
              ("p/q/implied", REG, b"parents not in the tar")),
    tar_bytes((".wh.a", REG, b""), ("a/.wh.b", REG, b""),  # redundant nested whiteout: a is already gone
              ("one", REG, b"two"),  # the layer-2 link keeps the content it was made with
              (".wh.gone", REG, b""),  # the layer-2 link keeps the deleted file alive
              (".wh.same", REG, b""), ("same", REG, b"new")),  # whiteout then re-add in one layer
]


@pytest.fixture
def layout(tmp_path: Path) -> Path:
    return craft_layout(tmp_path / "layout", LAYERS)


def cat(image: Path, path: str) -> str:
    return file_bytes(image, path).decode()


def inode(image: Path, path: str) -> tuple[int, int] | None:
    out = debugfs_lines(image, f"stat {path}")
    ino, links = re.search(r"Inode: (\d+)", out), re.search(r"Links: (\d+)", out)
    return (int(ino.group(1)), int(links.group(1))) if ino and links else None


@pytest.mark.parametrize("tar_input", ["mke2fs-tar", "debugfs-fixup"])
def test_rules(layout: Path, tmp_path: Path, tar_input: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("E2B_ARTIFACT_CACHE", str(tmp_path / "cache"))
    if tar_input == "debugfs-fixup":
        monkeypatch.setenv("E2B_ARTIFACT_NO_TAR_INPUT", "1")
    image = tmp_path / "out" / "rootfs.ext4"
    image.parent.mkdir()
    built = build_rootfs(ImageOptions(f"oci-layout:{layout}:t"), image, free_mb=4)
    assert built.report.ok, built.report.mismatches
    paths = {e.path for e in built.flattened.entries}
    assert paths == {"/b-link", "/g-link", "/d", "/f", "/f/y", "/p", "/p/q", "/p/q/implied", "/one", "/same"}
    assert inode(image, "/a") is None and inode(image, "/gone") is None and inode(image, "/d/x") is None
    assert cat(image, "/one") == "two" and cat(image, "/b-link") == "one"
    assert cat(image, "/g-link") == "gone" and cat(image, "/same") == "new" and cat(image, "/d") == "file replaces dir"
    one, b_link = inode(image, "/one"), inode(image, "/b-link")
    assert one and b_link and one[0] != b_link[0] and b_link[1] == 1
    assert not (tmp_path / "out" / ".flattened-image.tar").exists()


def test_fidelity_sees_every_kind_of_difference(layout: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("E2B_ARTIFACT_CACHE", str(tmp_path / "cache"))
    image = tmp_path / "rootfs.ext4"
    built = build_rootfs(ImageOptions(f"oci-layout:{layout}:t"), image, free_mb=4)
    assert built.report.ok
    value = tmp_path / "v"
    value.write_bytes(b"changed")
    script = ["sif /same mode 0100600", "sif /f/y uid 7", f"write {value} /.wh.leftover", "rm /p/q/implied",
              f"ea_set -f {value} /one user.extra", "ln /one /extra-link", "sif /one links_count 2"]
    subprocess.run(["debugfs", "-w", "-f", "-", str(image)], input="\n".join(script) + "\n", text=True,
                   check=True, capture_output=True)
    report = fidelity.compare(built.flattened.entries, image)
    found = {(m.path, m.field) for m in report.mismatches}
    assert found >= {("/same", "mode"), ("/f/y", "uid"), ("/.wh.leftover", "leftover whiteout"),
                     ("/p/q/implied", "missing path"), ("/one", "xattrs"), ("/extra-link", "extra path")}
    assert report.summary() == f"fidelity: {len(built.flattened.entries)} entries, {len(report.mismatches)} mismatches"
    report.write(tmp_path / "report.json")
    assert '"leftover whiteout"' in (tmp_path / "report.json").read_text()


@pytest.mark.parametrize("read", ["cat-pipe", "dump-big-files"])
def test_content_and_link_group_mismatch(layout: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         read: str) -> None:
    monkeypatch.setenv("E2B_ARTIFACT_CACHE", str(tmp_path / "cache"))
    if read == "dump-big-files":
        monkeypatch.setattr(fidelity, "_BIG_FILE", 2)  # every file but the 1-2 byte ones goes through dump
    work = tmp_path / "w"
    work.mkdir()
    flat = rootfs_tar_from_image(ImageOptions(f"oci-layout:{layout}:t"), work)
    # the image built from the tar, then the expectation changed: content and link groups must be compared
    from e2b_artifacts import rootfs

    image = work / "rootfs.ext4"
    rootfs.create_from_tar(flat.tar_path, image, free_mb=4, content_bytes=flat.content_bytes, inodes=flat.inodes)
    assert fidelity.compare(flat.entries, image).ok
    by_path = {e.path: e for e in flat.entries}
    by_path["/one"].content_hash = "0" * 64
    by_path["/same"].inode = by_path["/one"].inode
    report = fidelity.compare(flat.entries, image)
    found = {(m.path, m.field) for m in report.mismatches}
    assert ("/one", "content") in found and ("/same", "hard-link group") in found



def test_flattened_tar_written_to_a_pipe_is_the_same_tar(layout: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """write_tar into a descriptor (what bench_image.py streams into ``mke2fs -d -``) gives the file's bytes."""
    monkeypatch.setenv("E2B_ARTIFACT_CACHE", str(tmp_path / "cache"))
    flat = rootfs_tar_from_image(ImageOptions(f"oci-layout:{layout}:t"), tmp_path)
    chunks: list[bytes] = []
    read_end, write_end = os.pipe()
    reader = threading.Thread(target=lambda: chunks.extend(iter(lambda: os.read(read_end, 1 << 16), b"")))
    reader.start()
    try:
        result = flatten.write_tar(_flattener_of(layout, tmp_path), write_end)
    finally:
        os.close(write_end)
        reader.join()
        os.close(read_end)
    assert b"".join(chunks) == flat.tar_path.read_bytes()
    assert [e.path for e in result.entries] == [e.path for e in flat.entries]


def _flattener_of(layout: Path, tmp_path: Path) -> flatten.Flattener:
    cache = BlobCache(tmp_path / "cache")
    resolved = sources.resolve(reference.parse(f"oci-layout:{layout}:t"), platform=reference.Platform.parse(
        "linux/amd64"), insecure=False, cache=cache, progress=lambda _: None)
    flat = flatten.Flattener()
    for n, tar_path in enumerate(layers.unpack_layers(resolved.layers, cache)):
        flat.add_layer(n, tar_path, cache.root / "index")
    return flat
