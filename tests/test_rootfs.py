"""rootfs.ext4 from a tar, a tree and an image: what the source says lands exactly, without root."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import tarfile
from pathlib import Path

import pytest

from e2b_artifacts.rootfs import open_tar
from tests.conftest import Unprivileged, cli, debugfs_lines, file_bytes, make_ext4

LONG_TARGET = "/usr/lib/" + "x" * 90 + "/target"  # longer than a fast symlink (60 bytes)
CAP = bytes.fromhex("0100000200200000000000000000000000000000")  # cap_net_bind_service=ep
MTIME = 1_650_000_000


def _add(tar: tarfile.TarFile, name: str, kind: bytes, mode: int, uid: int = 0, gid: int = 0,
         data: bytes = b"", **extra: object) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.uid, info.gid, info.mtime = kind, mode, uid, gid, MTIME
    for key, value in extra.items():
        setattr(info, key, value)
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def every_item_tar(path: Path) -> Path:
    """A tar with each kind of entry a rootfs holds: owners, special modes, links, devices, fifo, xattrs, mtimes."""
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for d, mode, owner in (("etc", 0o755, 0), ("home", 0o755, 0), ("home/user", 0o750, 1000),
                               ("tmp", 0o1777, 0), ("dev", 0o755, 0), ("usr", 0o755, 0), ("usr/bin", 0o755, 0),
                               ("srv", 0o2775, 100000)):
            _add(tar, d, tarfile.DIRTYPE, mode, owner, owner)
        _add(tar, "etc/root-file", tarfile.REGTYPE, 0o644, data=b"root\n")
        _add(tar, "home/user/own", tarfile.REGTYPE, 0o600, 1000, 1000, data=b"user\n")
        _add(tar, "srv/big-ids", tarfile.REGTYPE, 0o640, 100000, 200000, data=b"big ids\n")
        _add(tar, "usr/bin/suid", tarfile.REGTYPE, 0o4755, data=b"#!/bin/sh\n")
        _add(tar, "usr/bin/sgid", tarfile.REGTYPE, 0o2755, 0, 50, data=b"#!/bin/sh\n")
        _add(tar, "usr/bin/hard", tarfile.LNKTYPE, 0o4755, linkname="usr/bin/suid")
        _add(tar, "usr/bin/short-link", tarfile.SYMTYPE, 0o777, linkname="suid")
        _add(tar, "usr/bin/long-link", tarfile.SYMTYPE, 0o777, linkname=LONG_TARGET)
        _add(tar, "dev/null", tarfile.CHRTYPE, 0o666, devmajor=1, devminor=3)
        _add(tar, "dev/vda", tarfile.BLKTYPE, 0o660, 0, 6, devmajor=254, devminor=0)
        _add(tar, "tmp/fifo", tarfile.FIFOTYPE, 0o644)
        info = tarfile.TarInfo("usr/bin/capped")
        info.mode, info.mtime, info.size = 0o755, MTIME, 4
        info.pax_headers = {"SCHILY.xattr.security.capability": CAP.decode("latin-1"),
                            "SCHILY.xattr.user.note": "hello"}
        tar.addfile(info, io.BytesIO(b"cap\n"))
    return path


def _stat(image: Path, path: str) -> str:
    return debugfs_lines(image, f"stat {path}")


def _field(text: str, pattern: str) -> str:
    match = re.search(pattern, text, re.M)
    assert match, (pattern, text)
    return match.group(1)


def check_every_item(image: Path) -> None:
    """Read each item back through debugfs, parsing its output here (independently of the package)."""
    def owner(path: str) -> tuple[int, int]:
        text = _stat(image, path)
        return int(_field(text, r"User:\s+(\d+)")), int(_field(text, r"Group:\s+(\d+)"))

    def mode(path: str) -> str:
        return _field(_stat(image, path), r"Mode:\s+(\d+)")

    assert owner("/home/user/own") == (1000, 1000)
    assert owner("/home/user") == (1000, 1000)
    assert owner("/srv/big-ids") == (100000, 200000)
    assert owner("/srv") == (100000, 100000)
    assert owner("/usr/bin/sgid") == (0, 50)
    assert mode("/usr/bin/suid") == "04755"
    assert mode("/usr/bin/sgid") == "02755"
    assert mode("/tmp") == "01777"
    assert mode("/srv") == "02775"
    assert mode("/home/user/own") == "0600"
    suid, hard = _stat(image, "/usr/bin/suid"), _stat(image, "/usr/bin/hard")
    assert _field(suid, r"^Inode: (\d+)") == _field(hard, r"^Inode: (\d+)")
    assert _field(suid, r"^Links: (\d+)") == "2"
    assert 'Fast link dest: "suid"' in _stat(image, "/usr/bin/short-link")
    assert LONG_TARGET in _stat(image, "/usr/bin/long-link") or \
        file_bytes(image, "/usr/bin/long-link") == LONG_TARGET.encode()
    null, vda = _stat(image, "/dev/null"), _stat(image, "/dev/vda")
    assert "Type: character special" in null and re.search(r"Device major/minor number: 01:03", null)
    assert "Type: block special" in vda and re.search(r"Device major/minor number: 254:00", vda)
    assert owner("/dev/vda") == (0, 6)
    assert "Type: FIFO" in _stat(image, "/tmp/fifo")
    capped = _stat(image, "/usr/bin/capped")
    assert "security.capability (20) = " + " ".join(f"{b:02x}" for b in CAP) in capped
    assert 'user.note (5) = "hello"' in capped
    mtime = f"0x{MTIME:08x}"
    for path in ("/etc/root-file", "/usr/bin/suid", "/dev/null", "/tmp/fifo", "/srv"):
        assert f"mtime: {mtime}" in _stat(image, path), path
    assert file_bytes(image, "/srv/big-ids") == b"big ids\n"
    fsck = subprocess.run(["e2fsck", "-fn", str(image)], capture_output=True, text=True, check=False)
    assert fsck.returncode == 0, fsck.stdout


@pytest.mark.parametrize("tar_input", ["mke2fs-tar", "debugfs-fixup"])
def test_unprivileged_build_from_tar_keeps_every_item(nobody: Unprivileged, envd_standin: Path,
                                                      tar_input: str) -> None:
    tar = every_item_tar(nobody.path("every.tar"))
    envd = nobody.path("envd")
    envd.write_bytes(envd_standin.read_bytes())
    envd.chmod(0o755)
    nobody.share(tar)
    env = {"E2B_ARTIFACT_NO_TAR_INPUT": "1"} if tar_input == "debugfs-fixup" else {}
    proc = nobody.run("--storage", nobody.workdir / "templates", "build", "--rootfs-tar", tar, "--envd", envd,
                      "--build-id", "every", "--disk-size-mb", "8", "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    image = Path(result["rootfs"])
    assert image.stat().st_uid == 65534  # really built by the unprivileged user
    check_every_item(image)


@pytest.mark.parametrize("suffix", [".tar.gz", ".tar.zst"])
def test_compressed_tar(tmp_path: Path, envd_standin: Path, suffix: str) -> None:
    plain = every_item_tar(tmp_path / "every.tar")
    packed = tmp_path / f"every{suffix}"
    tool = ["gzip", "-c"] if suffix == ".tar.gz" else ["zstd", "-q", "-c"]
    packed.write_bytes(subprocess.run([*tool, str(plain)], capture_output=True, check=True).stdout)
    proc = cli("--storage", tmp_path / "t", "build", "--rootfs-tar", packed, "--envd", envd_standin,
               "--build-id", "c", "--disk-size-mb", "8")
    assert proc.returncode == 0, proc.stderr
    check_every_item(tmp_path / "t" / "c" / "rootfs.ext4")


def test_build_from_dir_and_free_space(tmp_path: Path, envd_standin: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc" / "hostname").write_text("dir-source\n")
    (tree / "data.bin").write_bytes(os.urandom(3 << 20))
    proc = cli("--storage", tmp_path / "t", "build", "--rootfs-dir", tree, "--envd", envd_standin,
               "--build-id", "d", "--disk-size-mb", "100", "--json")
    assert proc.returncode == 0, proc.stderr
    image = Path(json.loads(proc.stdout)["rootfs"])
    assert file_bytes(image, "/etc/hostname") == b"dir-source\n"
    stats = debugfs_lines(image, "stats")
    free = int(_field(stats, r"^Free blocks:\s+(\d+)")) * 4096
    assert 100 << 20 <= free <= 110 << 20, free  # the requested free space, not the generous build size
    assert _field(stats, r"^Block size:\s+(\d+)") == "4096"


def test_build_from_ext4_never_modifies_source(tmp_path: Path, envd_standin: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "sbin").mkdir(parents=True)
    source = make_ext4(tmp_path / "src.ext4", tree, "16M")
    before = source.read_bytes()
    proc = cli("--storage", tmp_path / "t", "build", "--rootfs-ext4", source, "--envd", envd_standin,
               "--build-id", "e", "--disk-size-mb", "32")
    assert proc.returncode == 0, proc.stderr
    assert source.read_bytes() == before
    image = tmp_path / "t" / "e" / "rootfs.ext4"
    assert 'Fast link dest: "/usr/bin/envd"' in _stat(image, "/sbin/init")
    free = int(_field(debugfs_lines(image, "stats"), r"^Free blocks:\s+(\d+)")) * 4096
    assert free >= 32 << 20


def test_malicious_tar_writes_nothing_outside(tmp_path: Path, envd_standin: Path) -> None:
    for name in ("../escape", "/abs"):
        bad = tmp_path / "bad.tar"
        with tarfile.open(bad, "w") as tar:
            _add(tar, name, tarfile.REGTYPE, 0o644, data=b"x")
        for env in ({}, {"E2B_ARTIFACT_NO_TAR_INPUT": "1"}):
            proc = cli("--storage", tmp_path / "t", "build", "--rootfs-tar", bad, "--envd", envd_standin, env=env)
            assert proc.returncode == 3, proc.stderr
            assert "unsafe tar member name" in proc.stderr
    assert not (tmp_path / "escape").exists() and not Path("/abs").exists()
    link = tmp_path / "link.tar"
    with tarfile.open(link, "w") as tar:
        _add(tar, "evil", tarfile.SYMTYPE, 0o777, linkname=str(tmp_path / "outside"))
        _add(tar, "evil/owned", tarfile.REGTYPE, 0o644, data=b"x")
    (tmp_path / "outside").mkdir()
    proc = cli("--storage", tmp_path / "t", "build", "--rootfs-tar", link, "--envd", envd_standin,
               env={"E2B_ARTIFACT_NO_TAR_INPUT": "1"})
    assert proc.returncode == 3 and "written through the symlink" in proc.stderr, proc.stderr
    assert list((tmp_path / "outside").iterdir()) == []


class _Repeat(io.RawIOBase):
    """``size`` bytes of one random 1 MiB block repeated: real data blocks, cheap to make."""

    def __init__(self, size: int, block: bytes) -> None:
        self.left, self.block, self.pos = size, block, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buf: memoryview) -> int:  # type: ignore[override]
        n = min(len(buf), self.left, len(self.block) - self.pos)
        buf[:n] = self.block[self.pos:self.pos + n]
        self.pos = (self.pos + n) % len(self.block)
        self.left -= n
        return n


def test_build_of_a_1_5_gib_tree_with_default_options(tmp_path: Path, envd_standin: Path) -> None:
    """resize2fs's own minimum exceeds "used + free" for trees of about 1 GiB and up; it must be honoured."""
    tar_path = tmp_path / "big.tar"
    block = os.urandom(1 << 20)
    with tarfile.open(tar_path, "w") as tar:
        for d in ("etc", "usr", "usr/lib", "sbin", "proc", "sys", "dev"):
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        for i in range(24):  # 24 x 64 MiB = 1.5 GiB
            info = tarfile.TarInfo(f"usr/lib/blob{i}")
            info.size = 64 << 20
            tar.addfile(info, io.BufferedReader(_Repeat(info.size, block)))
        for i in range(2000):
            data = f"file {i}\n".encode()
            info = tarfile.TarInfo(f"etc/f{i}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    storage = tmp_path / "templates"
    proc = cli("--storage", storage, "build", "--rootfs-tar", tar_path, "--envd", envd_standin,
               "--kernel-version", "vmlinux-6.1.102", "--json")
    tar_path.unlink()
    assert proc.returncode == 0, proc.stderr
    build_id = json.loads(proc.stdout)["build_id"]
    image = storage / build_id / "rootfs.ext4"
    geo = subprocess.run(["dumpe2fs", "-h", str(image)], capture_output=True, text=True, check=True).stdout
    free = int(re.search(r"Free blocks:\s+(\d+)", geo).group(1)) * 4096  # type: ignore[union-attr]
    assert free >= 512 << 20  # the default free space is there
    verify = cli("--storage", storage, "verify", build_id, "--json")
    assert not [f for f in json.loads(verify.stdout)["findings"] if f["status"] == "FAIL"], verify.stdout


def test_open_tar_closes_the_file_under_a_zstd_stream(tmp_path: Path) -> None:
    """TarFile.close leaves a fileobj it was given open: the .tar.zst file must be closed by open_tar itself
    (an unclosed file is a ResourceWarning, which the suite turns into an error when it is collected)."""
    import gc
    import warnings

    import zstandard

    plain = io.BytesIO()
    with tarfile.open(fileobj=plain, mode="w") as tar:
        info = tarfile.TarInfo("etc/hostname")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"e2b\n"))
    path = tmp_path / "rootfs.tar.zst"
    path.write_bytes(zstandard.ZstdCompressor().compress(plain.getvalue()))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        with open_tar(path) as tar:
            assert [m.name for m in tar] == ["etc/hostname"]
        del tar  # the closed TarFile still holds its fileobj: once it goes, an open file would warn
        gc.collect()
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)]
