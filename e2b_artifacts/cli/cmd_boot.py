"""``e2b-artifact boot``: boot a build under Firecracker or QEMU and say whether init came up."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import ExitCode
from ..vm.boot import BootSpec
from .common import AppState, emit, json_option, progress, verdict


@click.command("boot")
@click.argument("build", required=False, metavar="[BUILD-ID|BUILD-DIR]")
@click.option("--rootfs", "rootfs_path", type=click.Path(path_type=Path),
              help="Boot this ext4 image instead of a build's rootfs.ext4 (needs --kernel or a BUILD).")
@click.option("--kernel", "kernel_path", type=click.Path(path_type=Path),
              help="Kernel to boot [default: $HOST_KERNELS_DIR/<kernel_version>/vmlinux.bin].")
@click.option("--firecracker-version", help="Firecracker version to use or emulate [default: from metadata.json].")
@click.option("--kernel-acpi", "acpi_mode", type=click.Choice(["auto", "on", "off"]), default="auto",
              show_default=True, help="Does the kernel have ACPI? auto asks the kernel checker.")
@click.option("--vmm", type=click.Choice(["auto", "firecracker", "qemu"]), default="auto", show_default=True,
              help="auto: Firecracker when its binary exists and KVM works, else QEMU.")
@click.option("--accel", type=click.Choice(["auto", "kvm", "tcg"]), default="auto", show_default=True,
              help="QEMU accelerator; auto probes whether KVM really runs guests.")
@click.option("--timeout", type=click.FloatRange(min=1), default=60.0, show_default=True,
              help="Seconds per attempt (a hang is retried once).")
@click.option("--settle", type=click.FloatRange(min=0), default=3.0, show_default=True,
              help="Without --expect: pass when init is still alive this long after it started.")
@click.option("--expect", metavar="REGEX", help="Pass when a console line matches REGEX (e.g. envd's start line).")
@click.option("--hang-after", type=click.FloatRange(min=1), default=30.0, show_default=True,
              help="Seconds without console output before init that count as a hang.")
@click.option("--console-log", type=click.Path(path_type=Path),
              help="Where to write the console [default: ~/.cache/e2b-artifact/boots/<build>-<time>.console.log].")
@click.option("--append", "extra_args", default="", metavar="ARGS", help="Extra kernel arguments.")
@click.option("--mem-mib", type=click.IntRange(min=64), default=BootSpec.mem_mib, show_default=True,
              help="Guest RAM.")
@json_option
@click.pass_obj
def command(app: AppState, build: str | None, rootfs_path: Path | None, kernel_path: Path | None,
            firecracker_version: str | None, acpi_mode: str, vmm: str, accel: str, timeout: float, settle: float,
            expect: str | None, hang_after: float, console_log: Path | None, extra_args: str, mem_mib: int,
            as_json: bool) -> ExitCode:
    """Boot a build's kernel with a throwaway view of its rootfs.ext4 (the build is never modified).

    Pass: the marker (--expect) appears, or init is still alive --settle seconds
    after the kernel started it. On failure the console log is diagnosed.
    Exit 0 on pass, 1 on fail or hang.
    """
    from ..hostfiles import boot_target
    from ..vm.boot import boot, default_console_log

    target = boot_target(app.settings, build, rootfs=rootfs_path, kernel=kernel_path,
                         firecracker_version=firecracker_version,
                         acpi=acpi_mode)  # type: ignore[arg-type]  # click.Choice checked the value
    spec = BootSpec(kernel=target.kernel, rootfs=target.rootfs,
                    console_log=console_log or default_console_log(target.label),
                    firecracker_version=target.firecracker_version, firecracker_bin=target.firecracker_bin,
                    kernel_has_acpi=target.kernel_has_acpi, assemble_from=target.assemble_from,
                    vmm=vmm, accel=accel,  # type: ignore[arg-type]  # click.Choice checked the values
                    timeout=timeout, settle=settle, expect=expect, hang_after=hang_after, mem_mib=mem_mib,
                    extra_args=extra_args)
    if not as_json:
        progress(f"booting {target.kernel} with {target.rootfs} (console: {spec.console_log})")
    result = boot(spec)
    if target.acpi_note:
        result.notes.append(target.acpi_note)
    lines = [f"boot: {result.verdict.upper()}: {result.reason}",
             f"vmm: {result.vmm} ({result.accel}, acpi={'on' if result.acpi else 'off'})"]
    if result.init_failed is not None:
        lines.append(f"init: {result.init or 'init'} did not start: {result.init_failed}")
    elif result.time_to_init is not None:
        lines.append(f"init: {result.init} started {result.time_to_init:.2f} s after the VMM")
    elif not result.ok:
        lines.append("init: did not start (the kernel never ran it)")
    if result.time_to_marker is not None:
        lines.append(f"marker: seen {result.time_to_marker:.2f} s after the VMM")
    if len(result.attempts) > 1:
        lines.append(f"attempts: {len(result.attempts)} (" + "; ".join(
            f"{a.number}: {a.outcome}" for a in result.attempts) + ")")
    lines.append(f"console log: {result.console_log}")
    lines += [f"note: {n}" for n in result.notes]
    for finding in result.findings:
        lines += finding.text_lines()
    if not result.ok and not result.findings:
        lines.append(f"no known failure in the console log; read it: {result.console_log}")
    emit(as_json, result.to_json(), lines)
    return verdict(result.ok)

