"""KVM (present, and a guest really runs) and the host kernel's version."""

from __future__ import annotations

import os
import re
from pathlib import Path

from ..findings import Finding
from ..settings import cache_dir
from ..vm.qemu import kvm_usable
from .view import HostView

# Firecracker's supported host kernels (its kernel support policy) for the releases E2B ships.
FIRECRACKER_HOST_KERNELS = ((5, 10), (6, 1))
KVM_FIX = ("enable nested virtualization on the hypervisor (or use bare metal); meanwhile e2b-artifact boot "
           "falls back to QEMU with TCG")


def check_kvm(view: HostView) -> list[Finding]:
    dev = view.path("/dev/kvm")
    if not dev.exists():
        return [Finding("host.kvm", "FAIL", "/dev/kvm is missing: Firecracker cannot start a VM",
                        "modprobe kvm_intel (or kvm_amd); on a VM enable nested virtualization")]
    if not view.is_real:
        return [Finding("host.kvm", "ok", f"{dev} is present (a guest run is probed only on the real root)")]
    kernel = probe_kernel(view)
    if kernel is None:
        return [Finding("host.kvm", "warn", "/dev/kvm is present; no kernel to test a guest run with",
                        "pass --probe-kernel FILE (a vmlinux or bzImage), or install one under HOST_KERNELS_DIR")]
    works, detail = kvm_usable(kernel, cache_dir())
    if works:
        return [Finding("host.kvm", "ok", f"/dev/kvm is present and {detail} (probe kernel {kernel})")]
    return [Finding("host.kvm", "FAIL", f"/dev/kvm is present but unusable: {detail} (probe kernel {kernel})", KVM_FIX)]


def probe_kernel(view: HostView) -> Path | None:
    """A kernel QEMU can boot for the probe: --probe-kernel, else one under HOST_KERNELS_DIR, the host's
    own /boot/vmlinuz (QEMU boots a bzImage), or the small kernel ``scripts/demo.sh --boot`` builds."""
    if view.probe_kernel is not None:
        return view.probe_kernel
    candidates: list[Path] = []
    base = view.settings["HOST_KERNELS_DIR"].value
    if base:
        here = view.path(base)
        candidates += sorted(here.glob("*/vmlinux.bin")) + sorted(here.glob("*/*/vmlinux.bin"))
    release = view.kernel_release()
    if release:
        candidates.append(view.path(f"/boot/vmlinuz-{release}"))
    built = os.environ.get("E2B_ARTIFACT_TEST_KERNELS")
    candidates += sorted((Path(built) if built else cache_dir() / "test-kernels").glob("*/vmlinux"))
    return next((c for c in candidates if c.is_file()), None)


def check_host_kernel(view: HostView) -> list[Finding]:
    release = view.kernel_release()
    if release is None:
        return [Finding("host.kernel", "warn", "host kernel version unknown (no /proc/sys/kernel/osrelease)")]
    match = re.match(r"(\d+)\.(\d+)", release)
    if not match:
        return [Finding("host.kernel", "warn", f"host kernel {release}: version not understood")]
    version = (int(match[1]), int(match[2]))
    supported = ", ".join(f"{a}.{b}" for a, b in FIRECRACKER_HOST_KERNELS)
    if version < FIRECRACKER_HOST_KERNELS[0]:
        return [Finding("host.kernel", "FAIL",
                        f"host kernel {release} is older than Firecracker supports ({supported})",
                        "upgrade the host kernel (upstream's nodes run 6.1-class kernels)")]
    if version in FIRECRACKER_HOST_KERNELS:
        return [Finding("host.kernel", "ok", f"host kernel {release} (Firecracker supports {supported})")]
    return [Finding("host.kernel", "warn", f"host kernel {release} is not one Firecracker tests on ({supported})",
                    "expect it to work; if snapshots misbehave, compare on a 6.1 host")]
