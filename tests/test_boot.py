"""boot on real QEMU with the small test kernels: the four scenarios of the issue, plus the hang path.

Each boot takes about a second under TCG; the timeouts are generous for a loaded box and the
boots end early on a verdict.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from e2b_artifacts.metadata import Metadata
from tests import kernels as test_kernels
from tests.conftest import cli, make_ext4, sha256

pytestmark = pytest.mark.timeout(600)

MARKER = "e2b-envd-standin: started"
FC_VERSION = "v1.12.1_d990331"  # >= 1.8: ACPI would be used if the kernel had it
BOOT_TIMEOUT = "60"


@pytest.fixture(scope="session")
def qemu() -> str:
    """QEMU (and qemu-img), installed here if missing; skip, saying why, only if that fails."""
    if not (shutil.which("qemu-system-x86_64") and shutil.which("qemu-img")):
        proc = subprocess.run(["apt-get", "-o", "DPkg::Lock::Timeout=900", "install", "-y", "qemu-system-x86",
                               "qemu-utils"], capture_output=True, text=True, check=False)
        if proc.returncode != 0 or not shutil.which("qemu-system-x86_64"):
            pytest.skip(f"QEMU is not installed and could not be installed: {proc.stderr.strip()[-300:]}")
    found = shutil.which("qemu-system-x86_64")
    assert found is not None
    return found


@dataclass
class BootEnv:
    root: Path
    storage: Path
    kernels: Path
    env: dict[str, str]

    def boot(self, *args: str | Path) -> tuple[subprocess.CompletedProcess[str], dict[str, object]]:
        proc = cli("--storage", self.storage, "--set", f"HOST_KERNELS_DIR={self.kernels}",
                   "--set", f"FIRECRACKER_VERSIONS_DIR={self.root / 'fc-versions'}",
                   "boot", *args, "--timeout", BOOT_TIMEOUT, "--json", env=self.env)
        assert "Traceback" not in proc.stderr, proc.stderr
        result = json.loads(proc.stdout)
        assert isinstance(result, dict)
        return proc, result

    def build(self, build_id: str, tree_or_tar: Path, envd: Path, kernel_version: str) -> Path:
        source = "--rootfs-tar" if tree_or_tar.is_file() else "--rootfs-dir"
        proc = cli("--storage", self.storage, "build", source, tree_or_tar, "--envd", envd, "--build-id", build_id,
                   "--kernel-version", kernel_version, "--firecracker-version", FC_VERSION, "--disk-size-mb", "16",
                   env=self.env)
        assert proc.returncode == 0, proc.stderr
        return self.storage / build_id


@pytest.fixture(scope="session")
def boot_env(qemu: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BootEnv]:
    root = tmp_path_factory.mktemp("boot")
    kernels = root / "fc-kernels"
    for version, variant in (("test-cmdline", "cmdline-ikconfig"), ("test-nocmdline-noacpi", "nocmdline-noacpi"),
                             ("test-acpi", "acpi-nocmdline")):
        (kernels / version).mkdir(parents=True)
        os.symlink(test_kernels.test_kernel(variant).vmlinux, kernels / version / "vmlinux.bin")
    (root / "fc-versions").mkdir()
    env = {"E2B_ARTIFACT_CACHE": str(root / "cache")}  # KVM probe result, default console logs
    yield BootEnv(root, root / "templates", kernels, env)
    assert _leftover_processes(root) == []


def _leftover_processes(token: Path) -> list[str]:
    """Command lines of live processes that mention ``token`` (our VMMs all do, through their paths)."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(token) in cmdline:
            found.append(f"{pid}: {cmdline}")
    return found


@pytest.fixture(scope="session")
def busybox_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A root tree with busybox-static as /bin/sh, so envd can be a shell script."""
    busybox = Path("/bin/busybox")
    if not busybox.is_file():
        subprocess.run(["apt-get", "-o", "DPkg::Lock::Timeout=900", "install", "-y", "busybox-static"],
                       check=True, capture_output=True)
    tree = tmp_path_factory.mktemp("busybox-tree")
    for d in ("bin", "dev", "proc", "sys", "tmp", "usr/bin", "sbin"):
        (tree / d).mkdir(parents=True)
    shutil.copy2(busybox, tree / "bin" / "busybox")
    os.symlink("busybox", tree / "bin" / "sh")
    return tree


def _diagnosis_ids(result: dict[str, object]) -> list[str]:
    diagnosis = result["diagnosis"]
    assert isinstance(diagnosis, list)
    return [str(f["id"]) for f in diagnosis]


def test_good_template_passes_and_build_is_untouched(boot_env: BootEnv, sample_tar: Path, envd_standin: Path) -> None:
    build = boot_env.build("good", sample_tar, envd_standin, "test-cmdline")
    before = sha256(build / "rootfs.ext4")
    proc, result = boot_env.boot("good", "--expect", MARKER)
    assert proc.returncode == 0, proc.stdout
    assert result["verdict"] == "pass" and result["vmm"] == "qemu" and result["acpi"] is False
    assert result["init"] == "/sbin/init"
    assert isinstance(result["time_to_init_s"], float) and isinstance(result["time_to_marker_s"], float)
    assert result["time_to_marker_s"] >= result["time_to_init_s"]
    console = Path(str(result["console_log"])).read_text()
    assert "Run /sbin/init as init process" in console and MARKER in console
    # QEMU's microvm (acpi=off) hands the disk over the way Firecracker's command-line path does.
    assert "virtio_mmio.device=" in console
    assert sha256(build / "rootfs.ext4") == before, "boot must not modify the build's rootfs"

    # Without a marker: init still alive after --settle seconds.
    settled = cli("--storage", boot_env.storage, "--set", f"HOST_KERNELS_DIR={boot_env.kernels}", "boot", "good",
                  "--settle", "2", "--timeout", BOOT_TIMEOUT, env=boot_env.env)
    assert settled.returncode == 0, settled.stdout + settled.stderr
    assert "boot: PASS: init (/sbin/init) still alive 2 s after it started" in settled.stdout
    assert "console log: " in settled.stdout
    assert sha256(build / "rootfs.ext4") == before


def test_kernel_without_cmdline_devices_or_acpi_is_device_discovery(boot_env: BootEnv, sample_tar: Path,
                                                                    envd_standin: Path) -> None:
    boot_env.build("nocmdline", sample_tar, envd_standin, "test-nocmdline-noacpi")
    proc, result = boot_env.boot("nocmdline", "--expect", MARKER)
    assert proc.returncode == 1
    assert result["verdict"] == "fail" and result["time_to_init_s"] is None
    assert "unknown-block(0,0)" in str(result["reason"])
    assert _diagnosis_ids(result)[0] == "device-discovery"


def test_acpi_kernel_finds_its_disk_only_through_acpi(boot_env: BootEnv, sample_tar: Path, envd_standin: Path) -> None:
    """ACPI=y without cmdline devices: boots with Firecracker >= 1.8's ACPI, finds no disk with an older one."""
    boot_env.build("acpi", sample_tar, envd_standin, "test-acpi")
    proc, result = boot_env.boot("acpi", "--expect", MARKER)
    assert proc.returncode == 0, result
    assert result["verdict"] == "pass" and result["acpi"] is True, result
    console = Path(str(result["console_log"])).read_text()
    assert "virtio_mmio.device=" not in console  # the disk came through the DSDT, not the command line
    assert "Run /sbin/init as init process" in console and MARKER in console
    if result["accel"] == "tcg":  # microvm+ACPI routes no PIT interrupt: the guest must be told its TSC rate
        assert "tsc_early_khz=" in str(result["kernel_args"])

    proc, result = boot_env.boot("acpi", "--expect", MARKER, "--firecracker-version", "v1.7.0")
    assert proc.returncode == 1
    assert result["verdict"] == "fail" and result["acpi"] is False
    assert "unknown-block(0,0)" in str(result["reason"])
    assert _diagnosis_ids(result)[0] == "device-discovery"


def test_rootfs_without_init_is_missing_init_and_passes_after_inject(boot_env: BootEnv, busybox_tree: Path,
                                                                     envd_standin: Path) -> None:
    build = boot_env.storage / "noinit"
    build.mkdir(parents=True)
    make_ext4(build / "rootfs.ext4", busybox_tree)
    Metadata(build_id="noinit", kernel_version="test-cmdline", firecracker_version=FC_VERSION).write(
        build / "metadata.json")
    proc, result = boot_env.boot("noinit", "--expect", MARKER)
    assert proc.returncode == 1
    assert result["verdict"] == "fail"
    assert _diagnosis_ids(result)[0] == "init-missing"
    text = cli("diagnose", str(result["console_log"]))
    assert "[init-missing]" in text.stdout and "e2b-artifact inject" in text.stdout

    injected = cli("inject", build / "rootfs.ext4", "--envd", envd_standin)
    assert injected.returncode == 0, injected.stderr
    proc, result = boot_env.boot("noinit", "--expect", MARKER)
    assert proc.returncode == 0, result
    assert result["verdict"] == "pass" and result["diagnosis"] == []


def test_envd_exiting_2_panics_with_exitcode_0x200(boot_env: BootEnv, busybox_tree: Path) -> None:
    envd = boot_env.root / "envd-exit-2"
    envd.write_text("#!/bin/sh\necho 'envd: cannot start, exiting'\nexit 2\n")
    envd.chmod(0o755)
    boot_env.build("exit2", busybox_tree, envd, "test-cmdline")
    proc, result = boot_env.boot("exit2")
    assert proc.returncode == 1
    assert result["verdict"] == "fail"
    assert "Attempted to kill init! exitcode=0x00000200" in str(result["reason"])
    diagnosis = result["diagnosis"]
    assert isinstance(diagnosis, list) and diagnosis[0]["id"] == "init-exited"
    assert diagnosis[0]["detail"] == "init exited with status 2"
    assert "envd: cannot start, exiting" in Path(str(result["console_log"])).read_text()


def test_silent_hang_is_retried_once_then_reported(boot_env: BootEnv, sample_tar: Path, envd_standin: Path) -> None:
    """loglevel=0 silences the kernel: no 'Run /sbin/init' line ever comes, which looks like a hang."""
    if not (boot_env.storage / "good").exists():
        boot_env.build("good", sample_tar, envd_standin, "test-cmdline")
    proc, result = boot_env.boot("good", "--append", "loglevel=0", "--hang-after", "3")
    assert proc.returncode == 1
    assert result["verdict"] == "hang"
    attempts = result["attempts"]
    assert isinstance(attempts, list) and [a["outcome"] for a in attempts] == ["silent", "silent"]
    assert "attempt 2 after a hang" in Path(str(result["console_log"])).read_text()
    assert _leftover_processes(boot_env.root) == []


def test_failed_exec_of_init_is_not_reported_as_started(boot_env: BootEnv, busybox_tree: Path, sample_tar: Path,
                                                        envd_standin: Path) -> None:
    """The kernel prints "Run /sbin/init as init process" before the exec; a failed exec is no start."""
    build = boot_env.storage / "badinit"
    build.mkdir(parents=True)
    make_ext4(build / "rootfs.ext4", busybox_tree)  # no /sbin/init at all
    Metadata(build_id="badinit", kernel_version="test-cmdline", firecracker_version=FC_VERSION).write(
        build / "metadata.json")
    text = cli("--storage", boot_env.storage, "--set", f"HOST_KERNELS_DIR={boot_env.kernels}",
               "--set", f"FIRECRACKER_VERSIONS_DIR={boot_env.root / 'fc-versions'}",
               "boot", "badinit", "--timeout", BOOT_TIMEOUT, env=boot_env.env)
    assert text.returncode == 1, text.stdout + text.stderr
    assert "started" not in "".join(ln for ln in text.stdout.splitlines() if ln.startswith("init:"))
    assert "init: /sbin/init did not start: " in text.stdout and "Requested init /sbin/init failed" in text.stdout
    _, result = boot_env.boot("badinit")
    assert str(result["init_failed"]).startswith("Requested init /sbin/init failed")

    boot_env.build("goodinit", sample_tar, envd_standin, "test-cmdline")
    passed = cli("--storage", boot_env.storage, "--set", f"HOST_KERNELS_DIR={boot_env.kernels}",
                 "--set", f"FIRECRACKER_VERSIONS_DIR={boot_env.root / 'fc-versions'}",
                 "boot", "goodinit", "--expect", MARKER, "--timeout", BOOT_TIMEOUT, env=boot_env.env)
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert "init: /sbin/init started " in passed.stdout
