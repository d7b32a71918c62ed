"""`build` and `inject` refuse bad input before any work: storage, --report, tar members, unreadable trees,
envd that is not a static ELF, --init systemd without systemd; metadata of an image build names its platform."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from tests.conftest import Unprivileged, assert_clean_error, cli, debugfs_lines, file_bytes, make_ext4
from tests.oci import images

PATHS = {"mke2fs -d tar": {}, "extract + debugfs": {"E2B_ARTIFACT_NO_TAR_INPUT": "1"}}


def _tar(path: Path, *members: tuple[str, bytes, str | bytes]) -> Path:
    """A tar of ``(name, type, data-or-linkname)``; dirs 0755, files 0644 (0755 when the data starts with #!)."""
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, payload in members:
            info = tarfile.TarInfo(name)
            info.type = kind
            data = payload if isinstance(payload, bytes) else b""
            info.mode = 0o755 if kind == tarfile.DIRTYPE or data.startswith(b"#!") else 0o644
            if isinstance(payload, str):
                info.linkname = payload
            info.size = len(data) if kind == tarfile.REGTYPE else 0
            tar.addfile(info, io.BytesIO(data) if info.size else None)
    return path


D, F, L, H = tarfile.DIRTYPE, tarfile.REGTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE
LONG = "/".join(["d" * 200] * 30)  # 6,029 characters, every component within NAME_MAX
BAD_TARS: dict[str, tuple[list[tuple[str, bytes, str | bytes]], str]] = {
    "through a symlink": ([("a", L, "/etc"), ("a/passwd", F, b"root::0:0::/:/bin/sh\n")],
                          "'a/passwd' is written through the symlink 'a'"),
    "hard link to /etc/shadow": ([("etc", D, b""), ("etc/x", H, "/etc/shadow")],
                                 "'etc/x' is a hard link to '/etc/shadow', outside the archive"),
    "hard link to ../x": ([("d", D, b""), ("d/x", H, "../x")], "'d/x' is a hard link to '../x', outside the archive"),
    "hard link before its file": ([("g", H, "f"), ("f", F, b"x")], "'g' is a hard link to 'f', which no earlier"),
    "missing parent": ([("a/b/c", F, b"x")], "'a/b/c' comes before (or without) its parent directory 'a'"),
    "file then directory": ([("etc", D, b""), ("etc/x", F, b"x"), ("etc/x", D, b"")],
                            "'etc/x' is a directory but an earlier member of that name is a file"),
    "directory then file": ([("etc", D, b""), ("etc/x", D, b""), ("etc/x", F, b"x")],
                            "'etc/x' is a non-directory but an earlier member of that name is a directory"),
    "6,000-character path": ([(LONG, F, b"x")], "has a name longer than the filesystem allows (6029 bytes"),
    "300-character name": ([("n" * 300, F, b"x")], "has a name longer than the filesystem allows"),
}


@pytest.mark.parametrize("path_env", PATHS.values(), ids=PATHS.keys())
@pytest.mark.parametrize("case", BAD_TARS.keys())
def test_bad_tar_members_are_refused_naming_the_member(tmp_path: Path, envd_standin: Path, case: str,
                                                       path_env: dict[str, str]) -> None:
    members, message = BAD_TARS[case]
    tar = _tar(tmp_path / "bad.tar", *members)
    storage = tmp_path / "t"
    proc = cli("--storage", storage, "build", "--rootfs-tar", tar, "--envd", envd_standin, "--build-id", "b",
               env=path_env)
    assert_clean_error(proc, 3, "tar member", message)
    assert not (storage / "b").exists()
    assert [p.name for p in storage.iterdir() if not p.name.endswith(".lock")] == []  # no staging left


@pytest.mark.parametrize("path_env", PATHS.values(), ids=PATHS.keys())
def test_later_member_of_the_same_kind_replaces_the_earlier(tmp_path: Path, envd_standin: Path,
                                                            path_env: dict[str, str]) -> None:
    """As GNU tar extracts it: the second etc/x wins, a symlink may replace a file."""
    tar = _tar(tmp_path / "dup.tar", ("etc", D, b""), ("etc/x", F, b"first"), ("etc/x", F, b"second\n"),
               ("etc/y", F, b"file"), ("etc/y", L, "x"), ("etc/z", F, b"z"), ("etc/h", H, "etc/z"))
    proc = cli("--storage", tmp_path / "t", "build", "--rootfs-tar", tar, "--envd", envd_standin, "--build-id", "b",
               "--disk-size-mb", "8", env=path_env)
    assert proc.returncode == 0, proc.stderr
    image = tmp_path / "t" / "b" / "rootfs.ext4"
    assert file_bytes(image, "/etc/x") == b"second\n"
    out = debugfs_lines(image, "stat /etc/y", "stat /etc/h")
    assert 'Fast link dest: "x"' in out and "Links: 2" in out


def test_storage_that_is_a_file(tmp_path: Path, sample_tar: Path, envd_standin: Path) -> None:
    storage = tmp_path / "storage"
    storage.write_text("not a directory\n")
    proc = cli("--storage", storage, "build", "--rootfs-tar", sample_tar, "--envd", envd_standin)
    assert_clean_error(proc, 3, f"storage {storage} is not a directory")
    assert storage.read_text() == "not a directory\n" and sorted(p.name for p in tmp_path.iterdir()) == ["storage"]
    below = cli("--storage", storage / "sub", "build", "--rootfs-tar", sample_tar, "--envd", envd_standin)
    assert_clean_error(below, 3, "cannot be created")


def _sentinel_mke2fs(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """A PATH whose mke2fs notes that it ran, then runs the real one."""
    bin_dir, marker = tmp_path / "bin", tmp_path / "mke2fs-ran"
    bin_dir.mkdir()
    real = shutil.which("mke2fs", path="/usr/sbin:/sbin")
    assert real
    script = bin_dir / "mke2fs"
    script.write_text(f'#!/bin/sh\ntouch {marker}\nexec {real} "$@"\n')
    script.chmod(0o755)
    return {"PATH": f"{bin_dir}:{os.environ['PATH']}"}, marker


def test_unwritable_report_is_refused_before_any_work(tmp_path: Path, envd_standin: Path) -> None:
    layout = images.craft_layout(tmp_path / "layout", [images.tar_bytes(("etc", D, b""), ("etc/os", F, b"x"))])
    env, marker = _sentinel_mke2fs(tmp_path)
    env["E2B_ARTIFACT_CACHE"] = str(tmp_path / "cache")
    for report in (tmp_path / "no-such-dir" / "report.json", tmp_path):
        proc = cli("--storage", tmp_path / "t", "build", "--from-image", f"oci-layout:{layout}:t", "--envd",
                   envd_standin, "--report", report, env=env)
        assert_clean_error(proc, 3, f"--report {report}")
        assert not marker.exists() and not (tmp_path / "t").exists() and not (tmp_path / "cache").exists()


def test_image_build_records_the_platform_of_its_config(tmp_path: Path, envd_standin: Path) -> None:
    layout = images.craft_layout(tmp_path / "layout", [images.tar_bytes(("etc", D, b""), ("etc/os", F, b"x"))])
    proc = cli("--storage", tmp_path / "t", "build", "--from-image", f"oci-layout:{layout}:t", "--envd", envd_standin,
               "--build-id", "img", "--disk-size-mb", "8", "--json", env={"E2B_ARTIFACT_CACHE": str(tmp_path / "c")})
    assert proc.returncode == 0, proc.stderr
    metadata = json.loads((tmp_path / "t" / "img" / "metadata.json").read_text())
    assert metadata["e2b_artifact"]["image"]["platform"] == "linux/amd64"
    assert json.loads(proc.stdout)["image"]["platform"] == "linux/amd64"


def test_unreadable_file_in_rootfs_dir_is_named(nobody: Unprivileged, envd_standin: Path) -> None:
    tree = nobody.path("tree")
    (tree / "etc").mkdir(parents=True)
    (tree / "etc" / "hostname").write_text("sandbox\n")
    (tree / "etc" / "shadow").write_text("root:*:19000:0:99999:7:::\n")
    os.chmod(tree / "etc" / "shadow", 0o600)  # owned by root, unreadable for uid 65534
    for d in (tree, tree / "etc"):
        os.chmod(d, 0o755)
    os.chmod(tree / "etc" / "hostname", 0o644)
    envd = nobody.path("envd")
    envd.write_bytes(envd_standin.read_bytes())
    envd.chmod(0o755)
    args: list[str | Path] = ["--storage", nobody.workdir / "templates", "build", "--rootfs-dir", tree, "--envd", envd]
    proc = nobody.run(*args)
    assert_clean_error(proc, 3, "/etc/shadow cannot be read by uid 65534", "--rootfs-tar")
    assert "Permission denied while populating" not in proc.stderr
    debug = nobody.run("--debug", *args)  # --debug adds the traceback, the message stays the same
    assert debug.returncode == 3 and "error: --rootfs-dir" in debug.stderr and "/etc/shadow" in debug.stderr


def _dynamic_envd(tmp_path: Path) -> Path:
    envd = tmp_path / "envd-dynamic"
    shutil.copy("/bin/true", envd)  # Debian's coreutils: dynamically linked
    return envd


def test_envd_not_static_warns_and_strict_refuses(tmp_path: Path, sample_tar: Path, envd_standin: Path) -> None:
    script = tmp_path / "envd.sh"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(0o755)
    for envd, problem in ((_dynamic_envd(tmp_path), "is dynamically linked"), (script, "is a script")):
        base: list[str | Path] = ["--storage", tmp_path / "t", "build", "--rootfs-tar", sample_tar, "--envd", envd,
                                  "--disk-size-mb", "8"]
        strict = cli(*base, "--strict", "--build-id", "strict")
        assert_clean_error(strict, 3, f"envd {envd} {problem}")
        assert not (tmp_path / "t" / "strict").exists()
        warned = cli(*base, "--build-id", f"warned-{envd.name}")
        assert warned.returncode == 0, warned.stderr
        assert f"warning: envd {envd} {problem}" in warned.stderr
    quiet = cli("--storage", tmp_path / "t", "build", "--rootfs-tar", sample_tar, "--envd", envd_standin,
                "--disk-size-mb", "8", "--strict")
    assert quiet.returncode == 0 and "warning" not in quiet.stderr, quiet.stderr


def test_inject_envd_not_static_warns_and_strict_refuses(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "usr/bin").mkdir(parents=True)
    image = make_ext4(tmp_path / "img.ext4", tree)
    before = image.read_bytes()
    envd = _dynamic_envd(tmp_path)
    strict = cli("inject", image, "--envd", envd, "--strict")
    assert_clean_error(strict, 3, "is dynamically linked")
    assert image.read_bytes() == before
    warned = cli("inject", image, "--envd", envd)
    assert warned.returncode == 0, warned.stderr
    assert f"warning: envd {envd} is dynamically linked" in warned.stderr


def _tree_with_systemd(root: Path, merged_usr: bool) -> Path:
    systemd = root / "usr/lib/systemd/systemd" if merged_usr else root / "lib/systemd/systemd"
    systemd.parent.mkdir(parents=True)
    systemd.write_text("#!/bin/sh\nexit 0\n")
    systemd.chmod(0o755)
    if merged_usr:
        (root / "usr/sbin").mkdir(parents=True)
        os.symlink("usr/sbin", root / "sbin")
        os.symlink("usr/lib", root / "lib")
        os.symlink("/lib/systemd/systemd", root / "usr/sbin/init")
    else:
        (root / "sbin").mkdir()
        os.symlink("../lib/systemd/systemd", root / "sbin/init")
    return root


def test_init_systemd_without_systemd_fails_before_mke2fs(tmp_path: Path, sample_tar: Path,
                                                           envd_standin: Path) -> None:
    env, marker = _sentinel_mke2fs(tmp_path)
    env["E2B_ARTIFACT_CACHE"] = str(tmp_path / "cache")
    tree = tmp_path / "tree"
    (tree / "sbin").mkdir(parents=True)
    os.symlink("/lib/systemd/systemd", tree / "sbin/init")  # dangling: no systemd installed
    ext4 = tmp_path / "src.ext4"
    subprocess.run(["/usr/sbin/mke2fs", "-q", "-F", "-t", "ext4", "-d", str(tree), str(ext4), "16M"], check=True)
    layout = images.craft_layout(tmp_path / "layout", [images.tar_bytes(("etc", D, b""), ("etc/os", F, b"x"))])
    sources: dict[str, tuple[str | Path, str]] = {"--rootfs-tar": (sample_tar, "/sbin/init does not exist"),
               "--rootfs-dir": (tree, "/sbin/init leads to /lib, which is missing"),
               "--rootfs-ext4": (ext4, "/sbin/init"),
               "--from-image": (f"oci-layout:{layout}:t", "/sbin/init does not exist")}
    for flag, (source, problem) in sources.items():
        proc = cli("--storage", tmp_path / "t", "build", flag, source, "--envd", envd_standin, "--init", "systemd",
                   env=env)
        assert_clean_error(proc, 3, problem)
        assert not marker.exists(), f"{flag}: mke2fs ran before the check"
    assert [p.name for p in (tmp_path / "t").iterdir() if not p.name.endswith(".lock")] == []
    not_ext4 = cli("--storage", tmp_path / "t", "build", "--rootfs-ext4", sample_tar, "--envd", envd_standin,
                   "--init", "systemd", env=env)
    assert_clean_error(not_ext4, 3)


@pytest.mark.parametrize("merged_usr", [False, True], ids=["sbin-dir", "merged-usr"])
def test_init_systemd_with_systemd_builds(tmp_path: Path, envd_standin: Path, merged_usr: bool) -> None:
    tree = _tree_with_systemd(tmp_path / "tree", merged_usr)
    tar = tmp_path / "rootfs.tar"
    subprocess.run(["tar", "-C", str(tree), "-cf", str(tar), "."], check=True)
    for flag, source in (("--rootfs-dir", tree), ("--rootfs-tar", tar)):
        proc = cli("--storage", tmp_path / "t", "build", flag, source, "--envd", envd_standin, "--init", "systemd",
                   "--disk-size-mb", "8")
        assert proc.returncode == 0, (flag, proc.stderr)
