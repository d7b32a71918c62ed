"""boot without a guest kernel: VMM and ACPI choices, the KVM probe cache, the Firecracker API driver.

Firecracker cannot run on this host (no working KVM), so the driver is exercised against a
stand-in that serves Firecracker's API on the unix socket (tests/boot/firecracker_standin.py).
That proves the request sequence, bodies, console capture and cleanup, not compatibility with a
real Firecracker release.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from e2b_artifacts.errors import ArtifactError
from e2b_artifacts.vm import boot, qemu
from tests.conftest import cli, make_ext4, sha256, stop

STANDIN = Path(__file__).parent / "boot" / "firecracker_standin.py"


@pytest.mark.parametrize(("version", "kernel_acpi", "expected"), [
    ("v1.12.1_d990331", True, True),
    ("v1.8.0_abc1234", True, True),
    ("v1.7.0_abc1234", True, False),  # Firecracker < 1.8 has no ACPI tables
    ("v1.12.1_d990331", False, False),  # the kernel cannot use them
    ("v1.12.1_d990331", None, False),  # unknown kernel: the legacy command-line path
    (None, True, False),
    ("nonsense", True, False),
])
def test_qemu_acpi_follows_firecracker(version: str | None, kernel_acpi: bool | None, expected: bool) -> None:
    assert qemu.qemu_acpi(version, kernel_acpi) is expected


def test_missing_inputs_are_clean_errors(tmp_path: Path) -> None:
    spec = boot.BootSpec(kernel=tmp_path / "nope", rootfs=tmp_path / "nope.ext4", console_log=tmp_path / "c.log")
    with pytest.raises(ArtifactError, match="kernel not found"):
        boot.boot(spec)
    proc = cli("boot", "--json")
    assert proc.returncode == 2 and "give a BUILD-ID" in proc.stderr
    proc = cli("--storage", tmp_path, "boot", "no-such-build")
    assert proc.returncode == 3 and "no metadata.json" in proc.stderr and "Traceback" not in proc.stderr


def _standin_binary(tmp_path: Path) -> Path:
    binary = tmp_path / "fc-versions" / "v1.12.1_test" / "firecracker"
    binary.parent.mkdir(parents=True)
    binary.write_text(f"#!{sys.executable}\nimport runpy\nrunpy.run_path({str(STANDIN)!r}, run_name='__main__')\n")
    binary.chmod(0o755)
    return binary


def _read_records(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_firecracker_driver_configures_boots_and_cleans_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    binary = _standin_binary(tmp_path)
    record = tmp_path / "requests.jsonl"
    monkeypatch.setenv("FC_STANDIN_RECORD", str(record))
    kernel = tmp_path / "vmlinux.bin"
    kernel.write_bytes(b"\x7fELF-not-booted-by-the-stand-in")
    tree = tmp_path / "tree"
    (tree / "etc").mkdir(parents=True)
    rootfs = make_ext4(tmp_path / "rootfs.ext4", tree, "8M")
    before = sha256(rootfs)
    spec = boot.BootSpec(kernel=kernel, rootfs=rootfs, console_log=tmp_path / "console.log",
                         firecracker_version="v1.12.1_test", firecracker_bin=binary, vmm="firecracker",
                         accel="kvm", expect="e2b-envd-standin: started", timeout=30)
    result = boot.boot(spec)
    assert result.verdict == "pass" and result.vmm == "firecracker", result
    assert result.time_to_init is not None and result.time_to_marker is not None

    requests = _read_records(record)
    assert [r["path"] for r in requests] == ["/boot-source", "/drives/rootfs", "/machine-config", "/actions"]
    boot_source, drive, machine, action = (r["body"] for r in requests)
    assert isinstance(boot_source, dict) and isinstance(drive, dict) and isinstance(machine, dict)
    assert boot_source["kernel_image_path"] == str(kernel.resolve())
    args = str(boot_source["boot_args"])
    assert "console=ttyS0" in args and "reboot=k" in args and "panic=1" in args and "pci=off" in args
    assert "root=" not in args, "Firecracker adds root=/dev/vda itself for the root drive"
    assert drive["is_root_device"] is True and drive["is_read_only"] is False
    assert drive["path_on_host"] != str(rootfs), "the VM must get a throwaway copy"
    assert not Path(str(drive["path_on_host"])).exists(), "the throwaway copy is removed afterwards"
    assert machine == {"vcpu_count": 1, "mem_size_mib": 256}
    assert action == {"action_type": "InstanceStart"}
    assert "Run /sbin/init as init process" in spec.console_log.read_text()
    assert sha256(rootfs) == before
    assert not _alive(binary)


def test_firecracker_api_fault_is_reported_and_diagnosed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    binary = _standin_binary(tmp_path)
    monkeypatch.setenv("FC_STANDIN_RECORD", str(tmp_path / "requests.jsonl"))
    monkeypatch.setenv("FC_STANDIN_FAULT", "/boot-source")
    kernel = tmp_path / "bzImage"
    kernel.write_bytes(b"MZ")
    tree = tmp_path / "tree"
    tree.mkdir()
    spec = boot.BootSpec(kernel=kernel, rootfs=make_ext4(tmp_path / "r.ext4", tree, "8M"),
                         console_log=tmp_path / "console.log", firecracker_bin=binary, vmm="firecracker",
                         accel="kvm", timeout=30)
    result = boot.boot(spec)
    assert result.verdict == "fail"
    assert "answered 400: Kernel Loader: failed to load ELF kernel image" in result.reason
    assert [a.outcome for a in result.attempts] == ["vmm-error"]
    assert [f.rule.id for f in result.findings] == ["vmm-kernel-format"]
    assert not _alive(binary)


def test_firecracker_needs_kvm_and_a_binary(tmp_path: Path) -> None:
    kernel = tmp_path / "k"
    kernel.write_bytes(b"x")
    spec = boot.BootSpec(kernel=kernel, rootfs=kernel, console_log=tmp_path / "c.log",
                         firecracker_bin=tmp_path / "missing", vmm="firecracker")
    with pytest.raises(ArtifactError, match="no Firecracker binary"):
        boot.boot(spec)
    spec.firecracker_bin, spec.accel = _standin_binary(tmp_path), "tcg"
    with pytest.raises(ArtifactError, match="Firecracker needs KVM"):
        boot.boot(spec)


def _alive(binary: Path) -> bool:
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if str(binary) in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"):
                return True
        except OSError:
            continue
    return False


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL])
def test_no_vmm_outlives_the_command(tmp_path: Path, how: signal.Signals) -> None:
    """SIGTERM unwinds and kills the VMM group; SIGKILL of the CLI kills the VMM through PDEATHSIG."""
    binary = _standin_binary(tmp_path)
    kernel = tmp_path / "vmlinux"
    kernel.write_bytes(b"\x7fELF")
    tree = tmp_path / "tree"
    tree.mkdir()
    rootfs = make_ext4(tmp_path / "r.ext4", tree, "8M")
    env = {**os.environ, "FC_STANDIN_RECORD": str(tmp_path / "requests.jsonl"), "FC_STANDIN_SILENT": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "e2b_artifacts", "--set",
                             f"FIRECRACKER_VERSIONS_DIR={tmp_path / 'fc-versions'}", "boot", "--kernel", kernel,
                             "--rootfs", rootfs, "--firecracker-version", "v1.12.1_test", "--vmm", "firecracker",
                             "--accel", "kvm", "--console-log", tmp_path / "console.log"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while "InstanceStart" not in _text(tmp_path / "requests.jsonl"):
            assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
            time.sleep(0.05)
        assert _alive(binary)
        proc.send_signal(how)
        _, stderr = proc.communicate(timeout=30)
    finally:
        stop(proc)
    if how == signal.SIGTERM:
        assert proc.returncode == 2 and "error: boot interrupted by SIGTERM" in stderr, stderr
    deadline = time.monotonic() + 10
    while _alive(binary) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(binary)


def _text(path: Path) -> str:
    return path.read_text() if path.exists() else ""


def test_importing_boot_loads_no_libc() -> None:
    """libc (ctypes, for PR_SET_PDEATHSIG) is loaded only when a VMM is started."""
    code = ("import sys, e2b_artifacts.vm.boot; "
            "print(sorted(m for m in sys.modules if m == 'ctypes' or m.startswith('ctypes.')))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "[]", proc.stdout
