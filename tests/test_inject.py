"""envd injection: systemd-linked init, no /sbin at all, idempotence, all-or-nothing."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from e2b_artifacts import e2fsprogs, inject
from e2b_artifacts.errors import ArtifactError
from tests.conftest import cli, debugfs_lines, file_bytes, make_ext4, sha256


def _systemd_tree(root: Path) -> Path:
    (root / "lib/systemd").mkdir(parents=True)
    systemd = root / "lib/systemd/systemd"
    systemd.write_text("#!/bin/sh\n")
    systemd.chmod(0o755)
    (root / "usr/sbin").mkdir(parents=True)
    (root / "sbin").symlink_to("usr/sbin")  # merged /usr: /sbin is itself a symlink
    (root / "usr/sbin/init").symlink_to("../../lib/systemd/systemd")
    (root / "etc").mkdir()
    return root


def _readback(image: Path, envd: Path) -> None:
    view = e2fsprogs.Ext4Image(image)
    node = view.stat("/usr/bin/envd")
    assert node is not None and node.kind == "file"
    assert (node.mode, node.uid, node.gid) == (0o755, 0, 0)
    assert view.read("/usr/bin/envd") == envd.read_bytes()
    assert e2fsprogs.fsck(image).clean


def test_envd_mode_replaces_systemd_link(tmp_path: Path, envd_standin: Path) -> None:
    image = make_ext4(tmp_path / "sd.ext4", _systemd_tree(tmp_path / "tree"))
    proc = cli("inject", image, "--envd", envd_standin, "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["changed"] and any("was symlink -> ../../lib/systemd/systemd" in a for a in result["actions"])
    _readback(image, envd_standin)
    # /sbin -> usr/sbin stays a symlink; the init link was replaced where it really lives
    assert 'Fast link dest: "usr/sbin"' in debugfs_lines(image, "stat /sbin")
    assert 'Fast link dest: "/usr/bin/envd"' in debugfs_lines(image, "stat /usr/sbin/init")
    assert e2fsprogs.Ext4Image(image).resolve("/sbin/init") == "/usr/bin/envd"
    before = sha256(image)
    again = cli("inject", image, "--envd", envd_standin, "--json")
    assert again.returncode == 0 and json.loads(again.stdout)["changed"] is False
    assert sha256(image) == before  # a second inject changes no byte


def test_systemd_mode_keeps_init_and_enables_unit(tmp_path: Path, envd_standin: Path) -> None:
    image = make_ext4(tmp_path / "sd.ext4", _systemd_tree(tmp_path / "tree"))
    proc = cli("inject", image, "--envd", envd_standin, "--init", "systemd")
    assert proc.returncode == 0, proc.stderr
    _readback(image, envd_standin)
    assert 'Fast link dest: "../../lib/systemd/systemd"' in debugfs_lines(image, "stat /usr/sbin/init")
    unit = file_bytes(image, "/etc/systemd/system/envd.service").decode()
    assert "ExecStart=/usr/bin/envd" in unit and "WantedBy=multi-user.target" in unit
    wants = debugfs_lines(image, "stat /etc/systemd/system/multi-user.target.wants/envd.service")
    assert 'Fast link dest: "/etc/systemd/system/envd.service"' in wants
    before = sha256(image)
    assert cli("inject", image, "--envd", envd_standin, "--init", "systemd").returncode == 0
    assert sha256(image) == before


def test_image_without_sbin(tmp_path: Path, envd_standin: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "etc").mkdir(parents=True)
    image = make_ext4(tmp_path / "bare.ext4", tree)
    proc = cli("inject", image, "--envd", envd_standin)
    assert proc.returncode == 0, proc.stderr
    assert "mkdir /sbin" in proc.stdout and "mkdir /usr/bin" in proc.stdout
    _readback(image, envd_standin)
    assert 'Fast link dest: "/usr/bin/envd"' in debugfs_lines(image, "stat /sbin/init")
    before = sha256(image)
    assert "nothing written" in cli("inject", image, "--envd", envd_standin).stdout
    assert sha256(image) == before


def test_systemd_mode_refuses_missing_init(tmp_path: Path, envd_standin: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "etc").mkdir(parents=True)
    image = make_ext4(tmp_path / "bare.ext4", tree)
    before = sha256(image)
    proc = cli("inject", image, "--envd", envd_standin, "--init", "systemd")
    assert proc.returncode == 3 and "systemd mode needs a working /sbin/init" in proc.stderr, proc.stderr
    assert sha256(image) == before


def _full_image(tmp_path: Path) -> Path:
    tree = tmp_path / "tree"
    (tree / "sbin").mkdir(parents=True)
    (tree / "filler").write_bytes(os.urandom(1 << 20))
    image = make_ext4(tmp_path / "full.ext4", tree, "4M")
    geo = e2fsprogs.geometry(image)
    # eat the remaining free space with one more file
    (tmp_path / "pad").write_bytes(b"\x01" * (geo.free_bytes - 8192))
    e2fsprogs.debugfs(image, [f"write {tmp_path / 'pad'} /pad"], write=True)
    return image


def test_full_image_no_grow_is_byte_identical(tmp_path: Path) -> None:
    image = _full_image(tmp_path)
    big_envd = tmp_path / "envd"
    big_envd.write_bytes(os.urandom(2 << 20))
    before = sha256(image)
    proc = cli("inject", image, "--envd", big_envd, "--no-grow")
    assert proc.returncode == 5, proc.stderr
    assert "is full" in proc.stderr and "hint: drop --no-grow" in proc.stderr
    assert sha256(image) == before


def test_full_image_grows(tmp_path: Path) -> None:
    image = _full_image(tmp_path)
    big_envd = tmp_path / "envd"
    big_envd.write_bytes(os.urandom(2 << 20))
    size = image.stat().st_size
    proc = cli("inject", image, "--envd", big_envd, "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["grown_to_bytes"] > size
    _readback(image, big_envd)


def test_failure_midway_restores_every_byte(tmp_path: Path, envd_standin: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A write that fails after debugfs changed the image: the undo file puts back every byte."""
    image = _full_image(tmp_path)
    big_envd = tmp_path / "envd"
    big_envd.write_bytes(os.urandom(2 << 20))
    before = sha256(image)
    size = image.stat().st_size
    real_plan = inject._plan

    def plan_then_break(*args: object, **kwargs: object) -> inject._Plan:
        plan = real_plan(*args, **kwargs)  # type: ignore[arg-type]
        # after the real writes, a command that fails: debugfs keeps going, we must undo
        return inject._Plan(plan.envd_dir, plan.init_link, [*plan.commands, "mkdir /no/such/parent"], plan.actions)

    monkeypatch.setattr(inject, "_plan", plan_then_break)
    with pytest.raises(ArtifactError, match=r"writing into full\.ext4 failed"):
        inject.inject(image, big_envd)  # grows the image first, then writes, then hits the failure
    assert image.stat().st_size == size
    assert sha256(image) == before


def test_not_an_image(tmp_path: Path, envd_standin: Path) -> None:
    junk = tmp_path / "junk.ext4"
    junk.write_bytes(b"not a filesystem" * 1000)
    proc = cli("inject", junk, "--envd", envd_standin)
    assert proc.returncode == 3 and "not an ext2/3/4 image" in proc.stderr, proc.stderr
    missing = cli("inject", junk, "--envd", tmp_path / "nope")
    assert missing.returncode == 3 and "envd not found" in missing.stderr


def test_switching_modes_both_ways_puts_back_what_envd_mode_replaced(tmp_path: Path, envd_standin: Path) -> None:
    image = make_ext4(tmp_path / "sd.ext4", _systemd_tree(tmp_path / "tree"))
    assert cli("inject", image, "--envd", envd_standin).returncode == 0  # envd mode: /sbin/init -> envd
    view = e2fsprogs.Ext4Image(image)
    assert view.resolve("/sbin/init") == "/usr/bin/envd"
    assert view.read(inject.INIT_RECORD_PATH) == b"symlink ../../lib/systemd/systemd\n"

    to_systemd = cli("inject", image, "--envd", envd_standin, "--init", "systemd", "--json")
    assert to_systemd.returncode == 0, to_systemd.stderr
    doc = json.loads(to_systemd.stdout)
    assert doc["changed"], doc  # not "already up to date"
    assert any("put back from" in a for a in doc["actions"]), doc["actions"]
    view = e2fsprogs.Ext4Image(image)
    assert view.resolve("/sbin/init") == "/lib/systemd/systemd"
    assert 'Fast link dest: "../../lib/systemd/systemd"' in debugfs_lines(image, "stat /usr/sbin/init")
    assert view.stat(inject.INIT_RECORD_PATH) is None
    assert e2fsprogs.fsck(image).clean
    verified = cli("inject", image, "--envd", envd_standin, "--init", "systemd", "--json")
    assert json.loads(verified.stdout)["changed"] is False  # now it really is up to date

    back = cli("inject", image, "--envd", envd_standin, "--json")
    assert back.returncode == 0 and json.loads(back.stdout)["changed"]
    assert e2fsprogs.Ext4Image(image).resolve("/sbin/init") == "/usr/bin/envd"


def test_regular_init_is_kept_aside_and_moved_back(tmp_path: Path, envd_standin: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "sbin").mkdir(parents=True)
    (tree / "lib/systemd").mkdir(parents=True)
    (tree / "sbin/init").write_bytes(b"\x7fELF fake busybox init")
    (tree / "sbin/init").chmod(0o755)
    image = make_ext4(tmp_path / "bb.ext4", tree)
    assert cli("inject", image, "--envd", envd_standin).returncode == 0
    view = e2fsprogs.Ext4Image(image)
    assert view.read(inject.SAVED_INIT_PATH) == b"\x7fELF fake busybox init"
    assert e2fsprogs.fsck(image).clean  # the ln + unlink rename keeps link counts right
    assert cli("inject", image, "--envd", envd_standin, "--init", "systemd").returncode == 0
    view = e2fsprogs.Ext4Image(image)
    assert view.read("/sbin/init") == b"\x7fELF fake busybox init"
    assert view.stat(inject.SAVED_INIT_PATH) is None
    assert e2fsprogs.fsck(image).clean


def test_systemd_mode_on_envd_image_without_record_or_systemd_is_refused(tmp_path: Path,
                                                                        envd_standin: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "usr/bin").mkdir(parents=True)
    (tree / "sbin").mkdir()
    (tree / "usr/bin/envd").write_bytes(envd_standin.read_bytes())
    (tree / "usr/bin/envd").chmod(0o755)
    (tree / "sbin/init").symlink_to("/usr/bin/envd")  # injected by some other tool: no record
    image = make_ext4(tmp_path / "e.ext4", tree)
    before = sha256(image)
    proc = cli("inject", image, "--envd", envd_standin, "--init", "systemd")
    assert proc.returncode == 3 and "no record of what it was" in proc.stderr, proc.stderr
    assert sha256(image) == before


def test_inject_creates_the_mountpoints_verify_asks_for(tmp_path: Path, envd_standin: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "etc").mkdir(parents=True)
    image = make_ext4(tmp_path / "bare.ext4", tree)
    proc = cli("inject", image, "--envd", envd_standin, "--json")
    assert proc.returncode == 0, proc.stderr
    assert {"mkdir /proc", "mkdir /sys", "mkdir /dev"} <= set(json.loads(proc.stdout)["actions"])
    view = e2fsprogs.Ext4Image(image)
    modes = {d: view.stat(d) for d in ("/proc", "/sys", "/dev")}
    assert all(n is not None and n.kind == "dir" for n in modes.values()), modes
    assert e2fsprogs.fsck(image).clean
