"""`build` end to end: layout, refusal to overwrite, --force keeps the old build, locks, clean errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from e2b_artifacts import metadata, runner
from e2b_artifacts.cli import main
from e2b_artifacts.errors import ArtifactError
from tests.conftest import REPO, assert_clean_error, cli, debugfs_lines, stop


def test_build_layout_and_metadata(tmp_path: Path, sample_tar: Path, envd_standin: Path) -> None:
    proc = cli("--storage", tmp_path, "build", "--rootfs-tar", sample_tar, "--envd", envd_standin,
               "--template-id", "sample", "--envd-version", "0.0.1", "--kernel-version", "vmlinux-6.1.158",
               "--disk-size-mb", "16", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    build_dir = Path(result["build_dir"])
    assert build_dir.parent == tmp_path and build_dir.name == result["build_id"]
    names = {p.name for p in build_dir.iterdir()}
    assert {"rootfs.ext4", "metadata.json"} <= names
    assert not [n for n in names if n.startswith(".")], names  # no staging leftovers
    md = metadata.read(build_dir / "metadata.json")
    assert (md.build_id, md.template_id, md.envd_version, md.kernel_version) == (
        result["build_id"], "sample", "0.0.1", "vmlinux-6.1.158")
    raw = json.loads((build_dir / "metadata.json").read_text())
    assert raw["version"] == 2 and raw["template"]["firecracker_version"] == "v1.12.1_d990331"
    image = build_dir / "rootfs.ext4"
    assert 'Fast link dest: "/usr/bin/envd"' in debugfs_lines(image, "stat /sbin/init")
    assert "e2b-envd-standin" not in debugfs_lines(image, "ls /")
    assert [p for p in tmp_path.iterdir() if p.name.startswith(".") and "staging" in p.name] == []


def test_existing_build_needs_force_and_is_kept(tmp_path: Path, sample_tar: Path, envd_standin: Path) -> None:
    args: list[str | Path] = ["--storage", tmp_path, "build", "--rootfs-tar", sample_tar, "--envd", envd_standin,
            "--build-id", "b1", "--disk-size-mb", "8"]
    assert cli(*args).returncode == 0
    marker = tmp_path / "b1" / "user-note.txt"
    marker.write_text("keep me")
    assert_clean_error(cli(*args), 6, "build b1 already exists")
    assert marker.exists()
    forced = cli(*args, "--force", "--json")
    assert forced.returncode == 0, forced.stderr
    moved = Path(json.loads(forced.stdout)["replaced_build_moved_to"])
    assert (moved / "user-note.txt").read_text() == "keep me"  # the old build is moved aside, not deleted
    assert not (tmp_path / "b1" / "user-note.txt").exists()


def test_lock_serializes_builds(tmp_path: Path, sample_tar: Path, envd_standin: Path) -> None:
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from e2b_artifacts.fsutil import exclusive_lock\n"
        "with exclusive_lock(Path(sys.argv[1]), 'x'):\n    print('locked', flush=True); time.sleep(30)"),
        str(tmp_path / ".b2.lock")], stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        proc = cli("--storage", tmp_path, "build", "--rootfs-tar", sample_tar, "--envd", envd_standin,
                   "--build-id", "b2")
        assert_clean_error(proc, 6, "build b2 is locked by another process")
    finally:
        stop(holder)
    assert not (tmp_path / "b2").exists()


def test_clean_errors(tmp_path: Path, sample_tar: Path, envd_standin: Path) -> None:
    base: list[str | Path] = ["--storage", tmp_path, "build", "--envd", envd_standin]
    assert_clean_error(cli(*base, "--rootfs-tar", tmp_path / "missing.tar"), 3, "missing.tar")
    assert_clean_error(cli(*base), 2, "exactly one of --rootfs-dir")
    assert_clean_error(cli(*base, "--rootfs-tar", sample_tar, "--build-id", "../evil"), 2, "invalid build id")
    not_ext4 = tmp_path / "x.img"
    not_ext4.write_bytes(b"\0" * 65536)
    assert_clean_error(cli(*base, "--rootfs-ext4", not_ext4), 3, "not an ext2/3/4 image")
    not_tar = tmp_path / "x.tar"
    not_tar.write_text("hello")
    assert_clean_error(cli(*base, "--rootfs-tar", not_tar), 3, "not a readable tar archive")
    not_tar.write_bytes(b"\x1f\x8b\x08")  # a gzip header cut short: Python's tarfile raised TypeError
    assert_clean_error(cli(*base, "--rootfs-tar", not_tar), 3, "readable tar archive: its gzip header is cut short")
    assert_clean_error(cli("--storage", tmp_path, "build", "--rootfs-tar", sample_tar, "--envd", tmp_path / "no"),
                       3, "envd not found")
    assert_clean_error(cli(*base, "--rootfs-tar", sample_tar, "--bogus-flag"), 2, "No such option")
    as_json = cli(*base, "--rootfs-tar", tmp_path / "missing.tar", "--json")
    assert json.loads(as_json.stdout)["exit_code"] == 3
    md = tmp_path / "bad" / "metadata.json"
    md.parent.mkdir()
    md.write_text('{"version": 2, "template": {}}')
    assert list(tmp_path.glob(".*staging*")) == []


def test_missing_e2fsprogs_is_a_clean_error(tmp_path: Path, sample_tar: Path, envd_standin: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A missing tool becomes one error line with the apt package to install, also through the CLI's main()."""
    monkeypatch.setattr(shutil, "which", lambda *a, **k: None)
    with pytest.raises(ArtifactError) as err:
        runner.run(["mke2fs", "-V"])
    assert err.value.code == 4 and "apt-get install e2fsprogs" in err.value.hint
    code = main(["--storage", str(tmp_path), "build", "--rootfs-tar", str(sample_tar), "--envd", str(envd_standin)])
    assert code == 4


def test_help_lists_commands() -> None:
    proc = cli("--help")
    assert proc.returncode == 0
    for name in ("build", "inject", "paths"):
        assert f"  {name} " in proc.stdout


def test_firecracker_version_names_as_upstream_reads_them(tmp_path: Path, sample_tar: Path,
                                                          envd_standin: Path) -> None:
    from e2b_artifacts.versions import read_firecracker_version

    fork = read_firecracker_version("v1.14-0.2.0")
    assert fork is not None and fork.form == "e2b" and fork.line_key == "v1.14-0" and fork.release == (1, 14, 0)
    legacy = read_firecracker_version("v1.14.1_431f1fc")
    assert legacy is not None and legacy.line_key == "v1.14" and legacy.commit == "431f1fc"
    bare = read_firecracker_version("v1.10.1")
    assert bare is not None and bare.form == "bare" and bare.line_key is None
    assert [read_firecracker_version(v) for v in ("foo", "1.10", "v1.14-0.2", "v1.14_abc")] == [None] * 4
    no_commit = read_firecracker_version("v1.14.1_")  # upstream splits at "_" and checks only the release
    assert no_commit is not None and no_commit.form == "legacy" and no_commit.commit == ""
    two = read_firecracker_version("v1.14.1_431f1fc_x")  # parts[1] is the commit, the rest is ignored
    assert two is not None and two.commit == "431f1fc"
    # semver.StrictNewVersion and Go's RE2 (fcversion.New): no leading zeros, ASCII digits, nothing trimmed,
    # "$" is the end of the text (a trailing newline is not a version)
    assert [read_firecracker_version(v) for v in ("v01.14.1_431f1fc", "v1.14-0.02.0", " v1.14.1_431f1fc",
                                                  "v1.14-0.2.0\n", "v1.\u0661\u0664-0.2.0", "vv1.10.1")] == [None] * 6
    assert read_firecracker_version("v1.10.1-rc.1") is not None  # a prerelease is valid semver
    ok = cli("--storage", tmp_path, "build", "--rootfs-tar", sample_tar, "--envd", envd_standin,
             "--firecracker-version", "v1.14-0.2.0", "--json")
    assert ok.returncode == 0, ok.stderr
    result = json.loads(ok.stdout)
    assert result["firecracker"] == {"name": "v1.14-0.2.0", "form": "e2b", "line": "v1.14-0", "release": "1.14.0",
                                     "commit": None, "e2b": "0.2.0"}
    assert "v1.14-0.2.0 read as the E2B fork form: line v1.14-0" in ok.stderr
    meta = json.loads((tmp_path / result["build_id"] / "metadata.json").read_text())
    assert meta["template"]["firecracker_version"] == "v1.14-0.2.0"
    bad = cli("--storage", tmp_path / "other", "build", "--rootfs-tar", sample_tar, "--envd", envd_standin,
              "--firecracker-version", "foo")
    assert_clean_error(bad, 2, "'foo' is not a Firecracker version")
    assert not (tmp_path / "other").exists() or not any((tmp_path / "other").iterdir())
