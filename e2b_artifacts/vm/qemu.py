"""QEMU ``-M microvm`` standing in for Firecracker: its command line, ACPI choice, and the KVM/TCG probe.

With ``acpi=off`` QEMU appends the same ``virtio_mmio.device=`` argument Firecracker's
command-line path uses; with ``acpi=on`` (what Firecracker >= 1.8 offers, used when the
kernel has ACPI) the devices come through ACPI instead. The disk is a qcow2 overlay over
the build's rootfs.ext4, which QEMU opens read-only. KVM is used only when a probe boot
shows it runs guests (nested hosts open /dev/kvm and then fail); otherwise TCG.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from pathlib import Path

from .. import runner
from . import firecracker
from .console import watch_vm

QEMU = "qemu-system-x86_64"
# QEMU's microvm has no i8042: reboot=k can hang after "reboot: machine restart", so QEMU gets a
# triple-fault reboot, and the root device Firecracker would add itself.
EXTRA_KERNEL_ARGS = "reboot=t root=/dev/vda rw"
PROBE_TIMEOUT_S = 15.0


def qemu_acpi(firecracker_version: str | None, kernel_has_acpi: bool | None) -> bool:
    """Emulate Firecracker's device discovery: ACPI only from 1.8 on and only if the kernel has it."""
    return bool(kernel_has_acpi) and firecracker.offers_acpi(firecracker_version)


def qemu_argv(*, kernel: Path, accel: str, acpi: bool, kernel_args: str, overlay: Path, mem_mib: int,
              vcpus: int) -> list[str]:
    machine = f"microvm,acpi={'on' if acpi else 'off'}"
    cpu = ["-cpu", "host"] if accel == "kvm" else []
    return [runner.which(QEMU), "-M", machine, "-accel", accel, *cpu, "-m", str(mem_mib),
            "-smp", str(vcpus), "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
            "-serial", "stdio", "-kernel", str(kernel), "-append", kernel_args,
            "-drive", f"id=rootfs,file={overlay},format=qcow2,if=none,cache=unsafe",
            "-device", "virtio-blk-device,drive=rootfs"]


def kvm_usable(kernel: Path, cache_dir: Path) -> tuple[bool, str]:
    """Can this host run a guest under KVM? Boots ``kernel`` (no disk) once under QEMU+KVM.

    ``/dev/kvm`` opening is not enough: on nested hosts guests then die with
    "KVM internal error" or sit silent. The answer is cached per host boot in ``cache_dir``.
    """
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False, "/dev/kvm is missing or not accessible"
    cache_file = cache_dir / "kvm-probe.json"
    key = f"{_host_boot_id()}:{runner.which(QEMU)}"
    with contextlib.suppress(OSError, ValueError, KeyError):
        cached = json.loads(cache_file.read_text())
        if cached["key"] == key:
            return bool(cached["works"]), str(cached["detail"])
    with tempfile.TemporaryDirectory(prefix="e2b-kvm-probe-") as tmp:
        log = Path(tmp) / "console.log"
        argv = [runner.which(QEMU), "-M", "microvm,acpi=off", "-accel", "kvm", "-cpu", "host", "-m", "128",
                "-smp", "1", "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
                "-serial", "stdio", "-kernel", str(kernel), "-append", "console=ttyS0 panic=-1 reboot=t"]
        # No root disk: a working guest reaches the root-mount panic within a second or two.
        watch = watch_vm(argv, log, timeout=PROBE_TIMEOUT_S, hang_after=PROBE_TIMEOUT_S, settle=None,
                         expect=re.compile(r"Kernel panic - not syncing|Run \S+ as init process"), fail=None)
        works = watch.outcome == "marker"
        said = log.read_text(errors="replace")
    if not works and watch.outcome == "exited" and "kvm" not in said.lower():
        # QEMU refused the kernel itself (e.g. an ELF without the PVH note): says nothing about KVM.
        return False, f"KVM probe inconclusive ({qemu_last_line(said)}): using TCG"
    detail = ("a probe guest booted under KVM" if works
              else f"a probe guest did not boot under KVM ({watch.outcome}: {qemu_last_line(said) or watch.detail})")
    with contextlib.suppress(OSError):
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        cache_file.write_text(json.dumps({"key": key, "works": works, "detail": detail}))
    return works, detail


def qemu_last_line(output: str) -> str:
    """QEMU's own last complaint (``qemu-system-x86_64: ...``) in a console log, if any."""
    said = [ln.strip() for ln in output.splitlines() if ln.startswith(("qemu-system", "qemu:", "KVM"))]
    return said[-1] if said else ""


def tcg_acpi_args(notes: list[str]) -> str:
    """``tsc_early_khz=`` for a QEMU/TCG boot with ACPI on, so the guest does not need the PIT's interrupt.

    Under QEMU's microvm with ACPI on (its MADT has no IRQ0 override) no PIT interrupt reaches a Linux
    6.1 guest: jiffies stand still. The guest then boots only if its TSC calibration, which polls the
    PIT counter and is timing-sensitive under TCG, succeeds; measured with the acpi-nocmdline test
    kernel, 4 of 8 boots instead hung for good after "tsc: Marking TSC unstable due to could not
    calculate TSC khz" (in "Calibrating delay loop"), and 8 of 8 booted with ``tsc_early_khz``. Under
    TCG the guest TSC counts at the host's rate; /proc/cpuinfo's "cpu MHz" is close enough (it only
    scales guest time). KVM guests (and Firecracker) know their TSC rate and are unaffected.
    """
    khz = _host_tsc_khz()
    if khz is None:
        notes.append("QEMU/TCG with ACPI: host TSC frequency unknown, the guest may hang calibrating its TSC")
        return ""
    notes.append(f"QEMU/TCG with ACPI: tsc_early_khz={khz} added (microvm's ACPI tables route no PIT "
                 "interrupt; the guest's own TSC calibration fails about half the time under TCG)")
    return f"tsc_early_khz={khz}"


def _host_tsc_khz() -> int | None:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    m = re.search(r"^cpu MHz\s*:\s*([0-9.]+)", text, re.MULTILINE)
    khz = round(float(m.group(1)) * 1000) if m else 0
    return khz if khz > 0 else None


def _host_boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"
