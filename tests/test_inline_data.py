"""Upstream's mke2fs feature set (inline_data included) on every build path, and every reader of the image
(stat, read, cat batches, symlink targets, /sbin/init resolution, the envd check, inject) on inline-data
images through real e2fsprogs.

The feature set is e2b-dev/infra's packages/orchestrator/pkg/template/build/core/filesystem/ext4.go, Make()
(inline_data since infra#2563); e2b-dev/runtime's Make() keeps dir_index on, so images it writes are read here too.
With 256-byte inodes, e2fsprogs 1.47.2 keeps files of up to 128 bytes in the inode (60 in i_block, the rest
in the ``system.data`` xattr) and debugfs ``cat``/``dump`` of one shorter than 60 bytes writes 60 bytes. An
all-zero file of any size stays an inline inode without data (i_size kept): the kernel reads zeros past the
inline bytes, debugfs writes only the inline area.
"""

from __future__ import annotations

import os
import re
import struct
import subprocess
import tarfile
from pathlib import Path

import pytest

from e2b_artifacts import e2fsprogs, fidelity, rootfs
from e2b_artifacts.image import ImageOptions, build_rootfs
from e2b_artifacts.inject import inject
from e2b_artifacts.verify_rootfs import check_rootfs
from tests.conftest import cli, debugfs_lines, file_bytes, sha256
from tests.oci.images import craft_layout, tar_bytes

UPSTREAM_FEATURES = ("^64bit,^dir_index,^dir_nlink,ext_attr,extent,extra_isize,filetype,flex_bg,huge_file,"
                     "inline_data,large_file,sparse_super2")
RUNTIME_FEATURES = UPSTREAM_FEATURES.replace("^dir_index,", "")  # e2b-dev/runtime ext4.go Make()
ON = {"ext_attr", "extent", "extra_isize", "filetype", "flex_bg", "huge_file", "inline_data", "large_file",
      "sparse_super2"}
OFF = {"64bit", "dir_index", "dir_nlink"}
SIZES = (0, 2, 59, 60, 61, 100, 128, 129, 5000)  # 129 and up: a data block
ZEROS = {"etc/zeros300": 300, "etc/zeros1m": 1 << 20}  # all zero: inline inodes larger than their data
LINKS = {"etc/fast": "/usr/bin/envd", "etc/inline-link": "/" + "c" * 70, "etc/block-link-1": "/" + "d" * 300,
         "etc/block-link-2": "/" + "e" * 200}


def tiny_elf() -> bytes:
    """A static x86_64 ELF header with one PT_LOAD: 120 bytes, small enough to live in the inode."""
    header = struct.pack("<16sHHIQQQIHHHHHH", b"\x7fELF\x02\x01\x01" + bytes(9), 2, 62, 1, 0x400078, 64, 0, 0,
                         64, 56, 1, 64, 0, 0)
    return header + struct.pack("<IIQQQQQQ", 1, 5, 0, 0x400000, 0x400000, 120, 120, 0x1000)


def small_tree(root: Path) -> Path:
    for d in ("etc", "usr/bin", "sbin", "bin", "tiny", "proc", "sys", "dev"):
        (root / d).mkdir(parents=True, exist_ok=True)
    for n in SIZES:
        (root / f"etc/f{n}").write_bytes(bytes((i * 7 + n) % 251 + 1 for i in range(n)))
    for name, target in LINKS.items():
        os.symlink(target, root / name)
    for name, size in ZEROS.items():
        with (root / name).open("wb") as fh:
            fh.truncate(size)
    (root / "tiny/a").write_bytes(b"a\n")
    (root / "bin/sh").write_bytes(b"#!sh\n")
    os.chmod(root / "bin/sh", 0o755)
    return root


def features(image: Path) -> tuple[set[str], dict[str, str]]:
    text = subprocess.run(["dumpe2fs", "-h", str(image)], capture_output=True, text=True, check=True).stdout
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    return set(fields["Filesystem features"].split()), {k: v.strip() for k, v in fields.items()}


def assert_upstream_geometry(image: Path) -> None:
    found, fields = features(image)
    assert found >= ON and not OFF & found, found
    assert fields["Block size"] == "4096" and fields["Inode size"] == "256"
    assert fields["Reserved block count"] == "0"  # -m 0
    assert e2fsprogs.fsck(image).clean


def flags(image: Path, path: str) -> int:
    found = re.search(r"Flags: 0x([0-9a-f]+)", debugfs_lines(image, f"stat {path}"))
    assert found is not None, path
    return int(found.group(1), 16)


def is_inline(image: Path, path: str) -> bool:
    return bool(flags(image, path) & 0x10000000)  # EXT4_INLINE_DATA_FL


def test_mke2fs_command_line_is_upstreams(tmp_path: Path) -> None:
    args = [str(a) for a in e2fsprogs.mke2fs_args(tmp_path / "x.ext4", 64 << 20)]
    assert args[args.index("-O") + 1] == UPSTREAM_FEATURES
    assert args[args.index("-b") + 1] == "4096" and args[args.index("-m") + 1] == "0"
    assert args[args.index("-i") + 1] == "4096" and args[args.index("-I") + 1] == "256"


@pytest.mark.parametrize("source", ["dir", "tar", "tar-fixup", "image"])
def test_every_build_path_writes_upstreams_features(tmp_path: Path, source: str,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    tree = small_tree(tmp_path / "tree")
    image = tmp_path / "out" / "rootfs.ext4"
    image.parent.mkdir()
    if source == "dir":
        rootfs.create_from_dir(tree, image, free_mb=4)
    elif source == "image":
        monkeypatch.setenv("E2B_ARTIFACT_CACHE", str(tmp_path / "cache"))
        layer = tar_bytes(("etc", tarfile.DIRTYPE, b""), ("etc/f2", tarfile.REGTYPE, b"\x01\x02"),
                          ("etc/link", tarfile.SYMTYPE, "/" + "c" * 70))
        built = build_rootfs(ImageOptions(f"oci-layout:{craft_layout(tmp_path / 'layout', [layer])}:t"), image,
                             free_mb=4)
        assert built.report.ok, built.report.mismatches  # fidelity read every inline file back
    else:
        if source == "tar-fixup":
            monkeypatch.setenv("E2B_ARTIFACT_NO_TAR_INPUT", "1")
        tar = tmp_path / "tree.tar"
        subprocess.run(["tar", "-C", str(tree), "-cpf", str(tar), "."], check=True)
        rootfs.create_from_tar(tar, image, free_mb=4)
    assert_upstream_geometry(image)
    assert is_inline(image, "/etc/f2") and is_inline(image, "/etc/link" if source == "image" else "/etc/f128")
    if source != "image":
        assert not is_inline(image, "/etc/f129") and is_inline(image, "/tiny")
        assert file_bytes(image, "/etc/f2") == (tree / "etc/f2").read_bytes()


@pytest.mark.parametrize("made_by", ["infra", "runtime"])
def test_readers_on_inline_data(tmp_path: Path, made_by: str) -> None:
    """What upstream's mkfs writes (infra: ^dir_index; runtime: dir_index with a hashed /many), read back."""
    tree = small_tree(tmp_path / "tree")
    (tree / "many").mkdir()
    os.symlink("../etc/f2", tree / "tiny/up")
    for i in range(260):  # more than one block of entries: an htree directory where dir_index is on
        (tree / "many" / f"entry-{i:04d}").write_bytes(b"%d\n" % i)
    image = tmp_path / "rootfs.ext4"
    subprocess.run(["mke2fs", "-q", "-F", "-t", "ext4", "-b", "4096", "-m", "0", "-i", "4096", "-O",
                    UPSTREAM_FEATURES if made_by == "infra" else RUNTIME_FEATURES, "-d", str(tree), str(image),
                    "32M"], check=True)
    if made_by == "runtime":
        subprocess.run(["e2fsck", "-fyD", str(image)], capture_output=True, check=False)  # index the big dirs
        assert flags(image, "/many") & 0x1000  # EXT4_INDEX_FL: a hashed directory
    view = e2fsprogs.Ext4Image(image)
    paths = [f"/etc/f{n}" for n in SIZES]
    stats = view.stat_many([*paths, *("/" + name for name in LINKS)])
    for n, path in zip(SIZES, paths, strict=True):
        node = stats[path]
        assert node is not None and node.size == n and node.xattrs == {}  # system.data is storage, not an xattr
        assert (node.inline_size is not None) == (n <= 128), (path, node.inline_size)
        assert view.read(path) == (tree / path[1:]).read_bytes(), path
    for name, size in ZEROS.items():
        node = view.stat("/" + name)
        assert node is not None and node.size == size and node.inline_size == 60, (name, node)
        assert view.read("/" + name) == bytes(size)
    for name, target in LINKS.items():
        node = stats["/" + name]
        assert node is not None and node.kind == "symlink" and node.target == target, name
    assert is_inline(image, "/etc/inline-link") and not is_inline(image, "/etc/block-link-1")
    # one cat batch, inline and block files interleaved, an inline one last: each cut at its own size
    names = ("etc/f2", "etc/zeros300", "etc/f5000", "etc/f0", "etc/f59", "etc/zeros1m", "etc/f129", "etc/f60",
             "etc/f2", "etc/zeros300")
    order = [view.stat("/" + name) for name in names]
    got = [bytes(data) for _, data in e2fsprogs.cat_inodes(image, [n for n in order if n is not None])]
    assert got == [(tree / name).read_bytes() for name in names]
    dumped = tmp_path / "dumped"
    for name in ("etc/f59", "etc/zeros1m"):
        node = view.stat("/" + name)
        assert node is not None
        e2fsprogs.dump_inode(image, node, dumped)
        assert dumped.read_bytes() == (tree / name).read_bytes(), name
        dumped.unlink()
    walked = {path for path, _ in view.walk() if not path.startswith("/lost+found")}
    assert walked == {"/" + str(p.relative_to(tree)) for p in tree.rglob("*")}
    assert view.resolve("/tiny/up") == "/etc/f2"  # a relative link inside an inline directory


def test_fidelity_on_inline_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The --from-image fidelity check hashes inline files through the cat pipe and dump (small _BIG_FILE)."""
    monkeypatch.setenv("E2B_ARTIFACT_CACHE", str(tmp_path / "cache"))
    members = [("etc", tarfile.DIRTYPE, b""), ("etc/zeros", tarfile.REGTYPE, bytes(70_000))] + [
        (f"etc/f{n}", tarfile.REGTYPE, b"x" * n) for n in SIZES]
    layout = craft_layout(tmp_path / "layout", [tar_bytes(*members)])
    image = tmp_path / "out" / "rootfs.ext4"
    image.parent.mkdir()
    built = build_rootfs(ImageOptions(f"oci-layout:{layout}:t"), image, free_mb=4)
    assert built.report.ok, built.report.mismatches
    monkeypatch.setattr(fidelity, "_BIG_FILE", 1)  # every file but f0 goes through dump
    assert fidelity.compare(built.flattened.entries, image).ok
    value = tmp_path / "v"
    value.write_bytes(b"y" * 59)
    subprocess.run(["debugfs", "-w", "-R", f"ea_set -f {value} /etc/f2 user.k", str(image)], check=True,
                   capture_output=True)
    found = {(m.path, m.field) for m in fidelity.compare(built.flattened.entries, image).mismatches}
    assert found == {("/etc/f2", "xattrs")}


def test_inject_and_verify_on_an_inline_image(tmp_path: Path) -> None:
    """envd (a 120-byte ELF: inline), /usr/bin, /sbin and /etc inline directories, the init record inline."""
    tree = small_tree(tmp_path / "tree")
    os.symlink("../lib/systemd/systemd", tree / "sbin/init")
    (tree / "lib/systemd").mkdir(parents=True)
    (tree / "lib/systemd/systemd").write_bytes(b"#!/bin/sh\n")
    os.chmod(tree / "lib/systemd/systemd", 0o755)
    image = tmp_path / "rootfs.ext4"
    rootfs.create_from_dir(tree, image, free_mb=4)
    assert is_inline(image, "/usr/bin") and is_inline(image, "/sbin")
    envd = tmp_path / "envd"
    envd.write_bytes(tiny_elf())
    os.chmod(envd, 0o755)

    result = inject(image, envd, init="envd")
    assert result.changed and is_inline(image, "/usr/bin/envd") and is_inline(image, "/etc/e2b-artifact")
    assert file_bytes(image, "/usr/bin/envd") == tiny_elf()
    assert file_bytes(image, "/etc/e2b-artifact/init-before-envd") == b"symlink ../lib/systemd/systemd\n"
    found = {f.check: f for f in check_rootfs(image, init_mode="envd", arch="x86_64")}
    assert {k: f.status for k, f in found.items()} == {"rootfs.fsck": "ok", "rootfs.init": "ok",
                                                        "rootfs.mountpoints": "ok", "rootfs.envd": "ok"}
    assert "static x86_64 ELF" in found["rootfs.envd"].message
    before = sha256(image)
    assert not inject(image, envd, init="envd").changed and sha256(image) == before  # read back inline: equal

    result = inject(image, envd, init="systemd")  # puts /sbin/init back from the inline record
    assert any("put back from" in a for a in result.actions), result.actions
    found = {f.check: f for f in check_rootfs(image, init_mode="systemd", arch="x86_64")}
    assert all(f.status == "ok" for f in found.values()), found
    assert re.search(r'Fast link dest: "\.\./lib/systemd/systemd"', debugfs_lines(image, "stat /sbin/init"))
    before = sha256(image)
    assert not inject(image, envd, init="systemd").changed and sha256(image) == before


def test_tiny_script_envd_on_an_inline_image(tmp_path: Path) -> None:
    """A 20-byte #! envd is inlined; the check reads its interpreter line, not the NUL padding."""
    tree = small_tree(tmp_path / "tree")
    image = tmp_path / "rootfs.ext4"
    rootfs.create_from_dir(tree, image, free_mb=4)
    envd = tmp_path / "envd"
    envd.write_bytes(b"#!/bin/sh\nexec true\n")
    os.chmod(envd, 0o755)
    proc = cli("inject", image, "--envd", envd, "--json")
    assert proc.returncode == 0, proc.stderr
    found = {f.check: f for f in check_rootfs(image, init_mode="envd", arch="x86_64")}
    assert found["rootfs.envd"].status == "warn"
    assert "script interpreter /bin/sh present in the image" in found["rootfs.envd"].message
