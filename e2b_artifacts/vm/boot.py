"""Boot a template for real and say whether its init came up.

Two VMMs:

* **Firecracker** (:mod:`.firecracker`), when the build's binary exists under
  ``FIRECRACKER_VERSIONS_DIR`` and KVM really works: driven over its API socket,
  booting a sparse throwaway copy of rootfs.ext4.
* **QEMU** ``-M microvm`` (:mod:`.qemu`) otherwise, offering the guest the same
  device discovery Firecracker would (ACPI or ``virtio_mmio.device=``), on a qcow2
  overlay; under KVM when a probe boot shows it works, else TCG.

The console is followed live (:mod:`.console`): pass when the marker (``expect``)
appears, or, without a marker, when init is still alive ``settle`` seconds after the
kernel ran it. A panic or the VMM exiting fails. An attempt that shows no output for
``hang_after`` seconds before init, or reaches ``timeout`` before init, is a hang
and is retried once. The VMM's process group is always killed; it also dies with
this process.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import signal
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, Literal

from .. import layout, runner, settings
from ..diagnose import LogMatch, diagnose_file
from ..errors import ArtifactError, ExitCode
from ..fsutil import copy_sparse
from . import firecracker, qemu
from .console import PANIC_RE, Outcome, Watch, append_log, compile_expect, watch_vm
from .qemu import QEMU, kvm_usable, qemu_acpi, qemu_last_line

Vmm = Literal["auto", "firecracker", "qemu"]
Accel = Literal["auto", "kvm", "tcg"]
Verdict = Literal["pass", "fail", "hang"]

# Upstream E2B's arguments minus networking and quiet (we need the kernel's own lines).
BASE_KERNEL_ARGS = ("console=ttyS0 panic=1 pci=off i8042.nokbd i8042.noaux random.trust_cpu=on "
                    "init=/sbin/init")


@dataclass
class BootSpec:
    kernel: Path
    rootfs: Path
    console_log: Path
    firecracker_version: str | None = None  # the version the template runs with (decides ACPI under QEMU)
    firecracker_bin: Path | None = None
    kernel_has_acpi: bool | None = None
    vmm: Vmm = "auto"
    accel: Accel = "auto"
    timeout: float = 60.0  # per attempt
    settle: float = 3.0
    expect: str | None = None
    hang_after: float = 30.0
    mem_mib: int = 256
    vcpus: int = 1
    extra_args: str = ""
    assemble_from: Path | None = None  # a build whose rootfs is stored compressed: its device is assembled first


@dataclass
class Attempt:
    number: int
    outcome: Outcome
    seconds: float
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {"attempt": self.number, "outcome": self.outcome, "seconds": round(self.seconds, 3),
                "detail": self.detail}


@dataclass
class BootResult:
    verdict: Verdict
    reason: str
    vmm: str
    accel: str
    acpi: bool
    kernel: Path
    rootfs: Path
    console_log: Path
    kernel_args: str
    command: list[str]
    init: str | None = None
    time_to_init: float | None = None
    init_failed: str | None = None  # the console line saying the kernel could not execute init
    time_to_marker: float | None = None
    attempts: list[Attempt] = field(default_factory=list)
    findings: list[LogMatch] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.verdict == "pass"

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "verdict": self.verdict, "reason": self.reason, "vmm": self.vmm,
                "accel": self.accel, "acpi": self.acpi, "kernel": str(self.kernel), "rootfs": str(self.rootfs),
                "console_log": str(self.console_log), "kernel_args": self.kernel_args, "command": self.command,
                "init": self.init, "init_failed": self.init_failed,
                "time_to_init_s": None if self.time_to_init is None else round(self.time_to_init, 3),
                "time_to_marker_s": None if self.time_to_marker is None else round(self.time_to_marker, 3),
                "attempts": [a.to_json() for a in self.attempts],
                "diagnosis": [f.to_json() for f in self.findings], "notes": self.notes}


# ---------------------------------------------------------------------------------------------- choices


def kernel_has_acpi(kernel: Path) -> tuple[bool | None, str | None]:
    """Whether ``kernel`` can take its devices from QEMU's ACPI tables, from the kernel checker; None when unknown.

    That is CONFIG_ACPI, except for a kernel without CONFIG_PCI (it cannot load QEMU microvm's
    tables) that also reads ``virtio_mmio.device=``: it boots through that path, which Firecracker
    offers too, instead of failing where Firecracker would not.
    """
    from ..kernel.check import check_kernel
    from ..kernel.rules import load_rules

    try:
        report = check_kernel(kernel)
    except ArtifactError as exc:
        return None, f"kernel ACPI support unknown ({exc.message}): booting as without ACPI"
    discovery = load_rules().discovery
    acpi = report.option(discovery.acpi_option)
    pci, cmdline = report.option(discovery.acpi_companion.option), report.option(discovery.cmdline_option)
    if acpi.value is None:
        return None, f"kernel ACPI support unknown ({acpi.how()}): booting as without ACPI"
    note = f"kernel: {acpi.describe()} ({acpi.how()})"
    if acpi.value != "y" or pci.value == "y":
        return acpi.value == "y", note
    if cmdline.value == "y":
        return False, (f"{note}; {pci.describe()}: QEMU's ACPI tables need CONFIG_PCI in the guest, so QEMU boots "
                       f"it with acpi=off through the virtio_mmio.device= path ({cmdline.describe()}), which "
                       "Firecracker offers too")
    return True, (f"{note}; {pci.describe()}: QEMU's ACPI tables need CONFIG_PCI in the guest (without it Linux 6.1 "
                  "cannot load them and finds no disk), so a QEMU boot of this kernel may fail where Firecracker's "
                  "may not")


def default_console_log(label: str) -> Path:
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    return settings.cache_dir() / "boots" / f"{label}-{stamp}-{os.getpid()}.console.log"


# ---------------------------------------------------------------------------------------------- boot


def boot(spec: BootSpec) -> BootResult:
    """Boot ``spec.kernel`` with a throwaway view of ``spec.rootfs``; never modifies the rootfs."""
    for path, what in ((spec.kernel, "kernel"), (spec.rootfs, "rootfs")):
        if not path.is_file() and not (what == "rootfs" and spec.assemble_from is not None):
            raise ArtifactError(f"{what} not found: {path}",
                                hint="pass --kernel PATH, or check HOST_KERNELS_DIR and the build's metadata.json"
                                if what == "kernel" else "check the build id and LOCAL_TEMPLATE_STORAGE_BASE_PATH",
                                code=ExitCode.BAD_INPUT)
    expect = compile_expect(spec.expect)
    notes: list[str] = []
    vmm, accel = _choose(spec, notes)
    spec.console_log.parent.mkdir(parents=True, exist_ok=True)
    spec.console_log.write_bytes(b"")
    with _sigterm_as_interrupt(), tempfile.TemporaryDirectory(prefix="e2b-boot-") as tmp, \
            tempfile.TemporaryDirectory(prefix="e2b-boot-device-") as device_tmp:
        scratch = Path(tmp)
        source = spec.rootfs if spec.assemble_from is None else _assembled(spec.assemble_from, Path(device_tmp), notes)
        acpi = qemu_acpi(spec.firecracker_version, spec.kernel_has_acpi)  # what Firecracker would offer, too
        if vmm == "firecracker":
            assert spec.firecracker_bin is not None
            kernel_args = _join_args(BASE_KERNEL_ARGS, firecracker.EXTRA_KERNEL_ARGS, spec.extra_args)
            disk = scratch / layout.ROOTFS
            sock = scratch / "fc.sock"
            argv = firecracker.argv(spec.firecracker_bin, sock)
            configure: Callable[[], None] | None = firecracker.configure(
                sock, spec.kernel, disk, kernel_args, vcpus=spec.vcpus, mem_mib=spec.mem_mib)
        else:
            tcg_acpi = qemu.tcg_acpi_args(notes) if acpi and accel == "tcg" else ""
            kernel_args = _join_args(BASE_KERNEL_ARGS, qemu.EXTRA_KERNEL_ARGS, tcg_acpi, spec.extra_args)
            disk = scratch / "rootfs.qcow2"
            argv = qemu.qemu_argv(kernel=spec.kernel, accel=accel, acpi=acpi, kernel_args=kernel_args, overlay=disk,
                                  mem_mib=spec.mem_mib, vcpus=spec.vcpus)
            configure = None
        result = BootResult(verdict="hang", reason="", vmm=vmm, accel=accel, acpi=acpi, kernel=spec.kernel,
                            rootfs=spec.rootfs, console_log=spec.console_log, kernel_args=kernel_args,
                            command=argv, notes=notes)
        for number in (1, 2):
            if number == 2:
                append_log(spec.console_log, f"\n=== e2b-artifact boot: attempt 2 after a hang "
                                             f"({result.attempts[0].detail}) ===\n")
                for leftover in scratch.iterdir():
                    leftover.unlink()
            _throwaway_disk(source, disk, vmm)  # fresh for each attempt: the guest writes to it
            watch = watch_vm(argv, spec.console_log, timeout=spec.timeout, hang_after=spec.hang_after,
                             settle=None if expect else spec.settle, expect=expect, fail=PANIC_RE,
                             configure=configure)
            result.attempts.append(Attempt(number, watch.outcome, watch.seconds, watch.detail))
            if watch.outcome not in ("silent", "timeout") or watch.init_at is not None:
                break
    _conclude(result, watch, spec, expect is not None)
    if not result.ok:
        result.findings = diagnose_file(spec.console_log)
    return result


def _join_args(*parts: str) -> str:
    return " ".join(p.strip() for p in parts if p.strip())


def _assembled(build_dir: Path, scratch: Path, notes: list[str]) -> Path:
    """The device a build's rootfs header describes, decompressed from its (and its ancestors') objects into a
    sparse file in ``scratch`` (the build is only read)."""
    from .. import header as header_mod
    from ..verify_rootfs import assemble

    hdr = header_mod.read_header(build_dir / layout.ROOTFS_HEADER)
    device = scratch / layout.ROOTFS
    builds = assemble(hdr, build_dir, layout.ROOTFS, device)
    notes.append(f"{layout.ROOTFS} is stored compressed: booted the device assembled from {builds} build(s)")
    return device


def _throwaway_disk(rootfs: Path, disk: Path, vmm: str) -> None:
    """What the VM writes to: a qcow2 overlay (QEMU) or a sparse copy (Firecracker needs a raw file)."""
    if vmm == "firecracker":
        copy_sparse(rootfs, disk, dig_holes=True, durable=False,
                    hint="the throwaway copy of rootfs.ext4 needs as much free space in TMPDIR as the image uses")
    else:
        runner.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", rootfs.resolve(), disk],
                   hint="qemu-img comes with qemu-utils")


def _choose(spec: BootSpec, notes: list[str]) -> tuple[str, str]:
    fc_ready = spec.firecracker_bin is not None and spec.firecracker_bin.is_file() \
        and os.access(spec.firecracker_bin, os.X_OK)
    if spec.vmm == "firecracker" and not fc_ready:
        raise ArtifactError(f"no Firecracker binary at {spec.firecracker_bin}",
                            hint="install it as $FIRECRACKER_VERSIONS_DIR/<version>/firecracker, or use --vmm qemu",
                            code=ExitCode.TOOL)
    if spec.accel == "tcg":
        if spec.vmm == "firecracker":
            raise ArtifactError("Firecracker needs KVM; --accel tcg works only with QEMU",
                                hint="use --vmm qemu --accel tcg", code=ExitCode.USAGE)
        runner.which(QEMU)
        return "qemu", "tcg"
    if spec.accel == "kvm":
        kvm, why = True, "KVM forced with --accel kvm"
    elif runner.installed(QEMU):
        kvm, why = kvm_usable(spec.kernel, settings.cache_dir())
    else:
        kvm = os.access("/dev/kvm", os.R_OK | os.W_OK)
        why = "/dev/kvm is accessible (no QEMU to probe it)" if kvm else "/dev/kvm is not accessible"
    notes.append(why)
    if spec.vmm == "firecracker" or (spec.vmm == "auto" and fc_ready and kvm):
        if not kvm:
            raise ArtifactError(f"Firecracker needs KVM, and KVM does not work here: {why}",
                                hint="use --vmm qemu (falls back to TCG emulation)", code=ExitCode.TOOL)
        return "firecracker", "kvm"
    if spec.vmm == "auto":
        notes.append(("no Firecracker version known" if spec.firecracker_bin is None
                      else f"no Firecracker binary at {spec.firecracker_bin}") + ": booting under QEMU" if not fc_ready
                     else "KVM does not work: booting under QEMU with TCG instead of Firecracker")
    runner.which(QEMU)
    return "qemu", "kvm" if kvm else "tcg"


def _conclude(result: BootResult, watch: Watch, spec: BootSpec, expected: bool) -> None:
    result.init, result.time_to_init, result.time_to_marker = watch.init, watch.init_at, watch.marker_at
    result.init_failed = watch.init_failed
    if watch.outcome == "marker":
        result.verdict, result.reason = "pass", f"marker /{spec.expect}/ appeared"
    elif watch.outcome == "settled":
        result.verdict, result.reason = "pass", f"init ({watch.init}) still alive {spec.settle:g} s after it started"
    elif watch.outcome in ("silent", "timeout") and watch.init_at is None:
        result.verdict = "hang"
        result.reason = f"no init after {len(result.attempts)} attempt(s): {watch.detail}"
    else:
        result.verdict = "fail"
        if watch.outcome == "timeout" and expected:
            result.reason = f"init ran but /{spec.expect}/ did not appear within {spec.timeout:g} s"
        else:
            result.reason = watch.detail
        if watch.outcome == "exited":
            complaint = qemu_last_line(spec.console_log.read_text(errors="replace"))
            if complaint:
                result.reason += f": {complaint}"


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C (an error, not a kill), so the VMM group is killed and scratch removed."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        raise ArtifactError("boot interrupted by SIGTERM",
                            hint="the VM was stopped and its scratch files removed; the build was not changed",
                            code=ExitCode.USAGE)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
