"""Boot a template for real and say whether its init came up.

Two VMMs:

* **Firecracker**, when the build's binary exists under ``FIRECRACKER_VERSIONS_DIR``
  and KVM really works: driven over its API socket (boot-source, drives,
  machine-config, InstanceStart), booting a sparse throwaway copy of rootfs.ext4.
* **QEMU** ``-M microvm`` otherwise: with ``acpi=off`` QEMU appends the same
  ``virtio_mmio.device=`` argument Firecracker's command-line path uses; with
  ``acpi=on`` (what Firecracker >= 1.8 offers, used when the kernel has ACPI)
  the devices come through ACPI instead. The disk is a qcow2 overlay over the
  build's rootfs.ext4, which QEMU opens read-only. KVM is used only when a
  probe boot shows it runs guests (nested hosts open /dev/kvm and then fail);
  otherwise TCG.

The console is followed live: pass when the marker (``expect``) appears, or,
without a marker, when init is still alive ``settle`` seconds after the kernel
ran it. A panic or the VMM exiting fails. An attempt that shows no output for
``hang_after`` seconds before init, or reaches ``timeout`` before init, is a hang
and is retried once. The VMM runs in its own process group, which is always
killed; it also dies with this process (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime as dt
import http.client
import json
import os
import re
import selectors
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, Any, Literal

from .. import layout, runner
from ..diagnose import LogMatch, clean, diagnose_file
from ..errors import ArtifactError, ExitCode
from ..versions import parse_firecracker_version

Vmm = Literal["auto", "firecracker", "qemu"]
Accel = Literal["auto", "kvm", "tcg"]
Verdict = Literal["pass", "fail", "hang"]
Outcome = Literal["marker", "settled", "panic", "exited", "silent", "timeout", "vmm-error"]

QEMU = "qemu-system-x86_64"
# Upstream E2B's arguments minus networking and quiet (we need the kernel's own lines).
BASE_KERNEL_ARGS = ("console=ttyS0 panic=1 pci=off i8042.nokbd i8042.noaux random.trust_cpu=on "
                    "init=/sbin/init")
# Firecracker emulates the i8042 reset (reboot=k) and adds root=/dev/vda rw itself. QEMU's microvm has
# no i8042: reboot=k can hang after "reboot: machine restart", so QEMU gets a triple-fault reboot.
FIRECRACKER_EXTRA_ARGS = "reboot=k"
QEMU_EXTRA_ARGS = "reboot=t root=/dev/vda rw"
INIT_RE = re.compile(r"Run (\S+) as init process")
PANIC_RE = re.compile(r"Kernel panic - not syncing")
PANIC_TAIL_S = 1.0  # after a panic line, keep reading this long for the rest of the trace
FIRST_ACPI_FIRECRACKER = (1, 8)  # Firecracker describes its devices in ACPI from 1.8 (CHANGELOG 1.8.0)
PROBE_TIMEOUT_S = 15.0


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
                "init": self.init,
                "time_to_init_s": None if self.time_to_init is None else round(self.time_to_init, 3),
                "time_to_marker_s": None if self.time_to_marker is None else round(self.time_to_marker, 3),
                "attempts": [a.to_json() for a in self.attempts],
                "diagnosis": [f.to_json() for f in self.findings], "notes": self.notes}


@dataclass
class _Watch:
    outcome: Outcome
    seconds: float
    detail: str
    init: str | None = None
    init_at: float | None = None
    marker_at: float | None = None


class _VmmError(Exception):
    """The VMM refused the configuration (an API fault, a missing socket)."""


# ---------------------------------------------------------------------------------------------- choices


def qemu_acpi(firecracker_version: str | None, kernel_has_acpi: bool | None) -> bool:
    """Emulate Firecracker's device discovery: ACPI only from 1.8 on and only if the kernel has it."""
    parsed = parse_firecracker_version(firecracker_version)
    return bool(kernel_has_acpi) and parsed is not None and parsed >= FIRST_ACPI_FIRECRACKER


def kvm_usable(kernel: Path, cache_dir: Path | None = None) -> tuple[bool, str]:
    """Can this host run a guest under KVM? Boots ``kernel`` (no disk) once under QEMU+KVM.

    ``/dev/kvm`` opening is not enough: on nested hosts guests then die with
    "KVM internal error" or sit silent. The answer is cached per host boot.
    """
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False, "/dev/kvm is missing or not accessible"
    cache_file = (cache_dir or default_cache_dir()) / "kvm-probe.json"
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
        watch = _watch_vm(argv, log, timeout=PROBE_TIMEOUT_S, hang_after=PROBE_TIMEOUT_S, settle=None,
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


def _host_boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


def default_cache_dir() -> Path:
    base = os.environ.get("E2B_ARTIFACT_CACHE")
    return Path(base) if base else Path.home() / ".cache" / "e2b-artifact"


def default_console_log(label: str) -> Path:
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    return default_cache_dir() / "boots" / f"{label}-{stamp}-{os.getpid()}.console.log"


# ---------------------------------------------------------------------------------------------- boot


def boot(spec: BootSpec) -> BootResult:
    """Boot ``spec.kernel`` with a throwaway view of ``spec.rootfs``; never modifies the rootfs."""
    for path, what in ((spec.kernel, "kernel"), (spec.rootfs, "rootfs")):
        if not path.is_file():
            raise ArtifactError(f"{what} not found: {path}",
                                hint="pass --kernel PATH, or check HOST_KERNELS_DIR and the build's metadata.json"
                                if what == "kernel" else "check the build id and LOCAL_TEMPLATE_STORAGE_BASE_PATH",
                                code=ExitCode.BAD_INPUT)
    expect = _compile_expect(spec.expect)
    notes: list[str] = []
    vmm, accel = _choose(spec, notes)
    spec.console_log.parent.mkdir(parents=True, exist_ok=True)
    spec.console_log.write_bytes(b"")
    with _sigterm_as_interrupt(), tempfile.TemporaryDirectory(prefix="e2b-boot-") as tmp:
        scratch = Path(tmp)
        acpi = qemu_acpi(spec.firecracker_version, spec.kernel_has_acpi)  # what Firecracker would offer, too
        if vmm == "firecracker":
            assert spec.firecracker_bin is not None
            kernel_args = _join_args(BASE_KERNEL_ARGS, FIRECRACKER_EXTRA_ARGS, spec.extra_args)
            disk = scratch / layout.ROOTFS
            sock = scratch / "fc.sock"
            argv = [str(spec.firecracker_bin), "--api-sock", str(sock)]
            configure: Callable[[], None] | None = _firecracker_configure(sock, spec.kernel, disk, kernel_args, spec)
        else:
            tcg_acpi = _tcg_acpi_args(notes) if acpi and accel == "tcg" else ""
            kernel_args = _join_args(BASE_KERNEL_ARGS, QEMU_EXTRA_ARGS, tcg_acpi, spec.extra_args)
            disk = scratch / "rootfs.qcow2"
            argv = _qemu_argv(spec, accel, acpi, kernel_args, disk)
            configure = None
        result = BootResult(verdict="hang", reason="", vmm=vmm, accel=accel, acpi=acpi, kernel=spec.kernel,
                            rootfs=spec.rootfs, console_log=spec.console_log, kernel_args=kernel_args,
                            command=argv, notes=notes)
        for number in (1, 2):
            if number == 2:
                _append_log(spec.console_log, f"\n=== e2b-artifact boot: attempt 2 after a hang "
                                              f"({result.attempts[0].detail}) ===\n")
                for leftover in scratch.iterdir():
                    leftover.unlink()
            _throwaway_disk(spec.rootfs, disk, vmm)  # fresh for each attempt: the guest writes to it
            watch = _watch_vm(argv, spec.console_log, timeout=spec.timeout, hang_after=spec.hang_after,
                              settle=None if expect else spec.settle, expect=expect, fail=PANIC_RE,
                              configure=configure)
            result.attempts.append(Attempt(number, watch.outcome, watch.seconds, watch.detail))
            if watch.outcome not in ("silent", "timeout") or watch.init_at is not None:
                break
    _conclude(result, watch, spec, expect)
    if not result.ok:
        result.findings = diagnose_file(spec.console_log)
    return result


def _join_args(*parts: str) -> str:
    return " ".join(p.strip() for p in parts if p.strip())


def _tcg_acpi_args(notes: list[str]) -> str:
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


def _throwaway_disk(rootfs: Path, disk: Path, vmm: str) -> None:
    """What the VM writes to: a qcow2 overlay (QEMU) or a sparse copy (Firecracker needs a raw file)."""
    if vmm == "firecracker":
        runner.run(["cp", "--reflink=auto", "--sparse=always", rootfs, disk],
                   hint="the throwaway copy of rootfs.ext4 needs as much free space in TMPDIR as the image uses")
    else:
        runner.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", rootfs.resolve(), disk],
                   hint="qemu-img comes with qemu-utils")


def _compile_expect(expect: str | None) -> re.Pattern[str] | None:
    if expect is None:
        return None
    try:
        return re.compile(expect)
    except re.error as exc:
        raise ArtifactError(f"--expect is not a valid regular expression: {exc}",
                            hint="e.g. --expect 'e2b-envd-standin: started'", code=ExitCode.USAGE) from exc


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
    elif _has_tool(QEMU):
        kvm, why = kvm_usable(spec.kernel)
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


def _has_tool(name: str) -> bool:
    try:
        runner.which(name)
    except ArtifactError:
        return False
    return True


def _qemu_argv(spec: BootSpec, accel: str, acpi: bool, kernel_args: str, overlay: Path) -> list[str]:
    machine = f"microvm,acpi={'on' if acpi else 'off'}"
    cpu = ["-cpu", "host"] if accel == "kvm" else []
    return [runner.which(QEMU), "-M", machine, "-accel", accel, *cpu, "-m", str(spec.mem_mib),
            "-smp", str(spec.vcpus), "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
            "-serial", "stdio", "-kernel", str(spec.kernel), "-append", kernel_args,
            "-drive", f"id=rootfs,file={overlay},format=qcow2,if=none,cache=unsafe",
            "-device", "virtio-blk-device,drive=rootfs"]


def _conclude(result: BootResult, watch: _Watch, spec: BootSpec, expect: re.Pattern[str] | None) -> None:
    result.init, result.time_to_init, result.time_to_marker = watch.init, watch.init_at, watch.marker_at
    if watch.outcome == "marker":
        result.verdict, result.reason = "pass", f"marker /{spec.expect}/ appeared"
    elif watch.outcome == "settled":
        result.verdict, result.reason = "pass", f"init ({watch.init}) still alive {spec.settle:g} s after it started"
    elif watch.outcome in ("silent", "timeout") and watch.init_at is None:
        result.verdict = "hang"
        result.reason = f"no init after {len(result.attempts)} attempt(s): {watch.detail}"
    else:
        result.verdict = "fail"
        if watch.outcome == "timeout" and expect is not None:
            result.reason = f"init ran but /{spec.expect}/ did not appear within {spec.timeout:g} s"
        else:
            result.reason = watch.detail
        if watch.outcome == "exited":
            complaint = qemu_last_line(spec.console_log.read_text(errors="replace"))
            if complaint:
                result.reason += f": {complaint}"


# ---------------------------------------------------------------------------------------------- the VMM process


def _watch_vm(argv: list[str], console_log: Path, *, timeout: float, hang_after: float, settle: float | None,
              expect: re.Pattern[str] | None, fail: re.Pattern[str] | None,
              configure: Callable[[], None] | None = None) -> _Watch:
    """Run the VMM in its own process group, follow its console into ``console_log``, always kill it."""
    started = time.monotonic()
    with console_log.open("ab") as log:
        # Popen, not runner.run(): the console must be followed while the VMM runs.
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                start_new_session=True, preexec_fn=_die_with_parent)
        try:
            if configure is not None:
                try:
                    configure()
                except _VmmError as exc:
                    log.write(f"e2b-artifact: {exc}\n".encode())
                    return _Watch("vmm-error", time.monotonic() - started, str(exc))
            assert proc.stdout is not None
            return _follow(proc, proc.stdout, log, started, timeout=timeout, hang_after=hang_after, settle=settle,
                           expect=expect, fail=fail)
        finally:
            _kill_group(proc)
            if proc.stdout is not None:
                # Whatever the VMM printed while dying still belongs in the log.
                with contextlib.suppress(OSError, ValueError):
                    os.set_blocking(proc.stdout.fileno(), False)
                    log.write(proc.stdout.read() or b"")
                proc.stdout.close()


def _follow(proc: subprocess.Popen[bytes], stream: IO[bytes], log: IO[bytes], started: float, *, timeout: float,
            hang_after: float, settle: float | None, expect: re.Pattern[str] | None,
            fail: re.Pattern[str] | None) -> _Watch:
    fd = stream.fileno()
    os.set_blocking(fd, False)
    sel = selectors.DefaultSelector()
    sel.register(fd, selectors.EVENT_READ)
    deadline = started + timeout
    last_output = started
    pending = b""
    watch = _Watch("timeout", 0.0, "")
    failed_at: float | None = None
    failed_line = ""
    try:
        while True:
            now = time.monotonic()
            watch.seconds = now - started
            if failed_at is not None and now - failed_at >= PANIC_TAIL_S:
                watch.outcome, watch.detail = "panic", failed_line
                return watch
            if settle is not None and watch.init_at is not None and failed_at is None \
                    and now - (started + watch.init_at) >= settle:
                watch.outcome, watch.detail = "settled", f"{watch.init} alive for {settle:g} s"
                return watch
            if now >= deadline:
                watch.outcome = "timeout"
                watch.detail = (f"no verdict within {timeout:g} s" if watch.init_at is not None
                                else f"init not reached within {timeout:g} s")
                return watch
            if watch.init_at is None and failed_at is None and now - last_output >= hang_after:
                watch.outcome, watch.detail = "silent", f"no console output for {hang_after:g} s before init"
                return watch
            if not sel.select(timeout=0.1):
                continue
            chunk = os.read(fd, 1 << 16)
            now = time.monotonic()
            if not chunk:
                lines = [pending] if pending else []
                pending = b""
                found = _scan(lines, watch, now - started, expect, fail)
                if found == "marker":
                    return watch
                code = proc.wait()
                if failed_at is not None or found == "fail":
                    watch.outcome, watch.detail = "panic", failed_line or watch.detail
                else:
                    watch.outcome, watch.detail = "exited", f"the VMM exited (status {code})" + (
                        f" after init ({watch.init}) started" if watch.init_at is not None else " before init ran")
                return watch
            log.write(chunk)
            log.flush()
            last_output = now
            *lines, pending = (pending + chunk).split(b"\n")
            found = _scan(lines, watch, now - started, expect, fail)
            if found == "marker":
                return watch
            if found == "fail" and failed_at is None:
                failed_at, failed_line = now, watch.detail
    finally:
        sel.close()


def _scan(lines: list[bytes], watch: _Watch, at: float, expect: re.Pattern[str] | None,
          fail: re.Pattern[str] | None) -> str | None:
    """Update ``watch`` from complete console lines; "marker" or "fail" when one shows."""
    found: str | None = None
    for raw in lines:
        line = clean(raw.decode(errors="replace"))
        if watch.init_at is None:
            m = INIT_RE.search(line)
            if m:
                watch.init, watch.init_at = m.group(1), at
        if expect is not None and expect.search(line):
            watch.outcome, watch.marker_at, watch.detail = "marker", at, line
            return "marker"
        if found is None and fail is not None and fail.search(line):
            found, watch.detail = "fail", line
    return found


_libc = ctypes.CDLL(None, use_errno=True)
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child before exec: get SIGKILL when this process dies, so no VMM outlives us."""
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)


def _append_log(path: Path, text: str) -> None:
    with path.open("a") as fh:
        fh.write(text)


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


# ---------------------------------------------------------------------------------------------- Firecracker API


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, socket_path: Path, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._socket_path = socket_path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(str(self._socket_path))
        self.sock = sock


def firecracker_put(socket_path: Path, path: str, body: dict[str, Any], timeout: float = 10.0) -> None:
    """One ``PUT`` to Firecracker's API; a non-2xx answer raises with its ``fault_message``."""
    conn = _UnixHTTPConnection(socket_path, timeout)
    try:
        conn.request("PUT", path, body=json.dumps(body),
                     headers={"Content-Type": "application/json", "Accept": "application/json"})
        response = conn.getresponse()
        data = response.read()
    except OSError as exc:
        raise _VmmError(f"Firecracker API PUT {path} failed: {exc}") from exc
    finally:
        conn.close()
    if response.status >= 300:
        try:
            fault = json.loads(data).get("fault_message", data.decode(errors="replace"))
        except ValueError:
            fault = data.decode(errors="replace")
        raise _VmmError(f"Firecracker API PUT {path} answered {response.status}: {fault}")


def firecracker_requests(kernel: Path, disk: Path, kernel_args: str, vcpus: int,
                         mem_mib: int) -> list[tuple[str, dict[str, Any]]]:
    """The API calls of a cold boot, in order (bodies valid from Firecracker 0.2x to 1.1x)."""
    return [
        ("/boot-source", {"kernel_image_path": str(kernel), "boot_args": kernel_args}),
        ("/drives/rootfs", {"drive_id": "rootfs", "path_on_host": str(disk), "is_root_device": True,
                            "is_read_only": False}),
        ("/machine-config", {"vcpu_count": vcpus, "mem_size_mib": mem_mib}),
        ("/actions", {"action_type": "InstanceStart"}),
    ]


def _firecracker_configure(sock: Path, kernel: Path, disk: Path, kernel_args: str,
                           spec: BootSpec) -> Callable[[], None]:
    def configure() -> None:
        deadline = time.monotonic() + 10.0
        while not sock.exists():
            if time.monotonic() > deadline:
                raise _VmmError(f"Firecracker did not create its API socket {sock} within 10 s")
            time.sleep(0.02)
        for path, body in firecracker_requests(kernel.resolve(), disk, kernel_args, spec.vcpus, spec.mem_mib):
            firecracker_put(sock, path, body)
    return configure
