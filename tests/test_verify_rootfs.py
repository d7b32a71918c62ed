"""Rootfs checks through debugfs on real ext4 images made with mke2fs -d."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from e2b_artifacts import elf
from e2b_artifacts.findings import Finding
from e2b_artifacts.verify_rootfs import check_rootfs
from tests.conftest import FIXTURES, make_ext4

ENVD = FIXTURES / "envd-standin" / "envd"


def tree(root: Path, *, init: str | None = "../usr/bin/envd", envd: bytes | None = None,
         envd_mode: int = 0o755, dirs: tuple[str, ...] = ("proc", "sys", "dev")) -> Path:
    for d in ("sbin", "usr/bin", "etc", *dirs):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "usr/bin/envd").write_bytes(ENVD.read_bytes() if envd is None else envd)
    os.chmod(root / "usr/bin/envd", envd_mode)
    if init is not None:
        os.symlink(init, root / "sbin/init")
    return root


def check(tmp_path: Path, root: Path, init_mode: str | None = "envd", arch: str = "x86_64",
          tweak: Callable[[Path], None] | None = None) -> dict[str, list[Finding]]:
    image = make_ext4(tmp_path / "rootfs.ext4", root, "16M")
    if tweak:
        tweak(image)
    by_check: dict[str, list[Finding]] = {}
    for f in check_rootfs(image, init_mode=init_mode, arch=arch):
        by_check.setdefault(f.check, []).append(f)
    return by_check


def status(found: dict[str, list[Finding]], name: str) -> str:
    return ",".join(f.status for f in found[name])


def text(found: dict[str, list[Finding]], name: str) -> str:
    return " | ".join(f.message for f in found[name])


def test_good_envd_mode(tmp_path: Path) -> None:
    found = check(tmp_path, tree(tmp_path / "t"))
    assert {k: status(found, k) for k in found} == {"rootfs.fsck": "ok", "rootfs.init": "ok",
                                                      "rootfs.mountpoints": "ok", "rootfs.envd": "ok"}
    assert "static x86_64 ELF" in text(found, "rootfs.envd")
    assert "-> /usr/bin/envd" in text(found, "rootfs.init")


def test_init_resolves_inside_the_image_not_on_the_host(tmp_path: Path) -> None:
    found = check(tmp_path, tree(tmp_path / "t", init="/../../../usr/bin/envd"))
    assert status(found, "rootfs.init") == "ok"


@pytest.mark.parametrize(("init", "needle"), [
    (None, "does not exist"),
    ("/nonexistent/init", "does not exist"),
    ("init2", "too many levels"),
])
def test_init_missing_dangling_or_looping(tmp_path: Path, init: str | None, needle: str) -> None:
    root = tree(tmp_path / "t", init=init)
    if init == "init2":
        os.symlink("init", root / "sbin/init2")
    found = check(tmp_path, root)
    assert status(found, "rootfs.init") == "FAIL" and needle in text(found, "rootfs.init")
    assert "e2b-artifact inject" in found["rootfs.init"][0].hint


def test_init_and_envd_not_executable(tmp_path: Path) -> None:
    found = check(tmp_path, tree(tmp_path / "t", envd_mode=0o644))
    assert status(found, "rootfs.init") == "FAIL" and "not executable" in text(found, "rootfs.init")
    assert status(found, "rootfs.envd") == "FAIL"


def test_missing_mount_points(tmp_path: Path) -> None:
    found = check(tmp_path, tree(tmp_path / "t", dirs=("proc",)))
    assert status(found, "rootfs.mountpoints") == "FAIL"
    assert "/sys, /dev missing" in text(found, "rootfs.mountpoints")


def test_envd_wrong_arch(tmp_path: Path) -> None:
    data = bytearray(ENVD.read_bytes())
    data[18:20] = (183).to_bytes(2, "little")  # EM_AARCH64
    found = check(tmp_path, tree(tmp_path / "t", envd=bytes(data)))
    assert status(found, "rootfs.envd") == "FAIL" and "aarch64 ELF; the kernel is x86_64" in text(found, "rootfs.envd")


def test_dynamic_envd_needs_its_interpreter_in_the_image(tmp_path: Path) -> None:
    host_binary = Path(shutil.which("true") or "/bin/true").read_bytes()
    info = elf.parse(host_binary)
    assert info is not None and info.interpreter is not None
    found = check(tmp_path, tree(tmp_path / "a", envd=host_binary))
    assert status(found, "rootfs.envd") == "FAIL" and info.interpreter in text(found, "rootfs.envd")

    root = tree(tmp_path / "b", envd=host_binary)
    interp = root / info.interpreter.lstrip("/")
    interp.parent.mkdir(parents=True, exist_ok=True)
    interp.write_bytes(b"\x7fELF stand-in")
    os.chmod(interp, 0o755)
    (tmp_path / "rootfs.ext4").unlink()
    found = check(tmp_path, root)
    assert status(found, "rootfs.envd") == "ok" and "present in the image" in text(found, "rootfs.envd")


def test_script_envd(tmp_path: Path) -> None:
    root = tree(tmp_path / "t", envd=b"#!/bin/sh -e\nexec sleep inf\n")
    found = check(tmp_path, root)
    assert status(found, "rootfs.envd") == "FAIL" and "/bin/sh" in text(found, "rootfs.envd")
    (root / "bin").mkdir()
    (root / "bin/sh").write_bytes(b"sh")
    os.chmod(root / "bin/sh", 0o755)
    (tmp_path / "rootfs.ext4").unlink()
    found = check(tmp_path, root)
    assert status(found, "rootfs.envd") == "warn" and "upstream envd is a static ELF" in text(found, "rootfs.envd")


def test_systemd_mode_unit_and_enablement(tmp_path: Path) -> None:
    root = tree(tmp_path / "t", init="../lib/systemd/systemd")
    (root / "lib/systemd").mkdir(parents=True)
    (root / "lib/systemd/systemd").write_bytes(b"\x7fELF systemd stand-in")
    os.chmod(root / "lib/systemd/systemd", 0o755)
    found = check(tmp_path, root, init_mode="systemd")
    assert status(found, "rootfs.systemd") == "FAIL" and "envd.service missing" in text(found, "rootfs.systemd")

    units = root / "etc/systemd/system"
    units.mkdir(parents=True)
    (units / "envd.service").write_text("[Service]\nExecStart=/usr/bin/envd\n")
    (tmp_path / "rootfs.ext4").unlink()
    found = check(tmp_path, root, init_mode="systemd")
    assert status(found, "rootfs.systemd") == "FAIL" and "not enabled" in text(found, "rootfs.systemd")
    assert "--init systemd" in found["rootfs.systemd"][0].hint

    (units / "multi-user.target.wants").mkdir()
    os.symlink("../envd.service", units / "multi-user.target.wants/envd.service")
    (tmp_path / "rootfs.ext4").unlink()
    found = check(tmp_path, root, init_mode=None)  # mode inferred: /sbin/init is not envd
    assert status(found, "rootfs.systemd") == "ok" and "multi-user.target.wants" in text(found, "rootfs.systemd")


def test_fsck_problems(tmp_path: Path) -> None:
    def corrupt(image: Path) -> None:
        subprocess.run(["debugfs", "-w", "-R", "clri /usr/bin/envd", str(image)], check=True,
                       capture_output=True)

    found = check(tmp_path, tree(tmp_path / "t"), tweak=corrupt)
    assert status(found, "rootfs.fsck") == "FAIL" and "e2fsck -fn found problems" in text(found, "rootfs.fsck")


def test_not_an_image(tmp_path: Path) -> None:
    junk = tmp_path / "rootfs.ext4"
    junk.write_bytes(b"\0" * 65536)
    found = check_rootfs(junk, init_mode="envd", arch="x86_64")
    assert [(f.check, f.status) for f in found] == [("rootfs.fsck", "FAIL")]


def test_init_mode_disagreeing_with_the_image(tmp_path: Path) -> None:
    found = check(tmp_path, tree(tmp_path / "t"), init_mode="systemd")  # /sbin/init -> envd
    assert "rootfs.init" in found and status(found, "rootfs.init") == "ok,warn"
    assert "envd.service never runs" in text(found, "rootfs.init")
    root = tree(tmp_path / "u", init="../bin/other-init")
    (root / "bin").mkdir()
    (root / "bin/other-init").write_bytes(b"\x7fELF")
    os.chmod(root / "bin/other-init", 0o755)
    (tmp_path / "rootfs.ext4").unlink()
    found = check(tmp_path, root, init_mode="envd")
    assert status(found, "rootfs.init") == "ok,warn" and "not /usr/bin/envd" in text(found, "rootfs.init")
