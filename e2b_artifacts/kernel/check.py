"""``kernel check``: can Firecracker boot this guest kernel, and will it find its devices?

The file format is checked as Firecracker's loader does (kernel.image), the config comes from
IKCONFIG, a config file or the kernel's own symbols and strings (kernel.config), and the rules
in ``kernels/rules.json`` are applied for the arch and Firecracker version (kernel.rules).
"""

from __future__ import annotations

import datetime as dt
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import limits
from ..elf import Elf
from ..errors import ArtifactError, ExitCode
from ..findings import Fix, Status
from ..fsutil import atomic_write_bytes, read_input
from . import image as img
from .config import ConfigFile, OptionReader, OptionValue, find_config
from .rules import (
    DiscoveryPath,
    KernelFinding,
    RuleSet,
    bzimage_bootable,
    check_acpi_companion,
    check_discovery,
    check_options,
    check_support,
    load_rules,
)


@dataclass
class KernelReport:
    kernel: Path
    kind: img.Kind
    arch: str | None
    version: str | None = None
    firecracker_version: str | None = None
    config: ConfigFile | None = None
    discovery: DiscoveryPath | None = None
    findings: list[KernelFinding] = field(default_factory=list)
    _options: OptionReader | None = None

    @property
    def ok(self) -> bool:
        return not any(f.status == "FAIL" for f in self.findings)

    def option(self, name: str) -> OptionValue:
        """One CONFIG_ option (without the prefix), with how it was decided."""
        if self._options is None:
            return OptionValue(name, None, "unknown", f"the contents of this {self.kind} file were not read")
        return self._options(name)

    def add(self, check: str, status: Status, message: str, hint: str = "",
            decided_by: str = "", *, fix: Fix = Fix.NONE) -> None:
        self.findings.append(KernelFinding(check, status, message, hint, decided_by, fix=fix))

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "kernel": str(self.kernel), "format": self.kind, "arch": self.arch,
                "version": self.version, "firecracker_version": self.firecracker_version,
                "config_source": self.config.origin if self.config else None, "device_discovery": self.discovery,
                "findings": [f.to_dict() for f in self.findings]}


def check_kernel(kernel: Path, *, firecracker_version: str | None = None, arch: str | None = None,
                 config: Path | None = None, quick: bool = False, today: dt.date | None = None) -> KernelReport:
    """Check ``kernel`` for Firecracker ``firecracker_version`` on ``arch`` (default: the kernel's own).

    ``quick``: only the file format (what Firecracker's loader decides), nothing decompressed or read for options.
    ``today``: the date Firecracker's guest support window is compared with (default: today).
    """
    data = _read_kernel(kernel)
    fmt = img.identify(data)
    target = arch or (fmt.arch if fmt.arch in img.ARCHES else "x86_64")
    report = KernelReport(kernel, fmt.kind, fmt.arch, firecracker_version=firecracker_version)
    rules = load_rules()
    content = _check_format(report, rules, fmt, data, target, quick)
    if quick:
        report.version = img.linux_banner(data) or (img.bzimage_version(data) if fmt.kind == "bzimage" else None)
        return report
    if content is None:
        return report
    report.version = img.linux_banner(content.body) or (img.bzimage_version(data) if fmt.kind == "bzimage" else None)
    if report.version:
        report.add("kernel.version", "ok", report.version)
    else:
        report.add("kernel.version", "warn", "no 'Linux version' banner found")
    report.findings.append(check_support(rules, report.version, firecracker_version, today or dt.date.today()))
    report.config, notes = find_config(content.body, kernel, config)
    for note in notes:
        report.add("kernel.config", "warn", note, "drop --config, or check which kernel it belongs to")
    if content.unreadable is not None and report.config is None:
        report.add("kernel.payload", "warn", f"options not checked: {content.unreadable.message}",
                   f"pass the kernel's .config with --config FILE (or put it beside the kernel as {kernel.name}"
                   f".config); {content.unreadable.hint}".rstrip("; "))
        return report
    if content.unreadable is not None and report.config is not None:
        report.add("kernel.payload", "warn", f"the kernel itself was not read ({content.unreadable.message}); "
                                             f"every option is decided by {report.config.origin}",
                   content.unreadable.hint)
    symbols = img.elf_symbol_names(content.body, content.elf) if content.elf is not None else None
    report._options = OptionReader(content.body, report.config, symbols, rules.evidence)
    if report.config is not None:
        report.add("kernel.config", "ok", f"config from {report.config.origin} "
                                          f"({len(report.config.options)} options)", decided_by="config")
    else:
        source = "the symbol table and strings" if symbols is not None else "strings (no symbol table)"
        report.add("kernel.config", "warn", f"no embedded or sidecar config: options decided from {source}",
                   f"pass --config FILE (the kernel's .config) or put it beside the kernel as {kernel.name}.config",
                   decided_by="symbol" if symbols is not None else "string")
    rules_arch = report.arch if report.arch in img.ARCHES else target
    report.findings += check_options(rules, report.option, rules_arch)
    found, report.discovery = check_discovery(rules, report.option, rules_arch, firecracker_version)
    report.findings.append(found if report.discovery == "device-tree"  # a statement of the path, not a find
                           else _unless_driver_missing(found, report.findings))
    if caveat := check_acpi_companion(rules, report.option, report.discovery):
        report.findings.append(caveat)
    return report


@dataclass(frozen=True)
class _Content:
    """The uncompressed kernel to read options from; ``unreadable`` says why there is none (a compressed
    payload that could not be decompressed), in which case only a config file can decide options."""

    body: bytes
    elf: Elf | None = None
    unreadable: ArtifactError | None = None


def _unless_driver_missing(found: KernelFinding, findings: list[KernelFinding]) -> KernelFinding:
    """The discovery line, made to agree with a FAIL of the virtio-mmio driver: a path the driver
    is not there to use finds nothing, so it may not read ``ok``."""
    driver = next((f for f in findings if f.check == "kernel.virtio-mmio" and f.status == "FAIL"), None)
    if driver is None or found.status == "FAIL":
        return found
    return KernelFinding(found.check, "FAIL", "no devices found: the virtio-mmio driver is not built in "
                                              f"(kernel.virtio-mmio); once it is, {found.message}",
                         driver.hint, found.decided_by, fix=driver.fix)


def _check_format(report: KernelReport, rules: RuleSet, fmt: img.KernelFormat, data: bytes,
                  target: str, quick: bool = False) -> _Content | None:
    """Add the format findings; the kernel to read options from (None: nothing to read)."""
    if fmt.arch is not None and fmt.arch != target:
        report.add("kernel.format", "FAIL", f"{fmt.detail} for {fmt.arch}; the guest is {target}",
                   f"use a {target} kernel (e2b-artifact kernel list)", fix=Fix.KERNEL_REPLACE)
    if fmt.kind == "elf":
        if fmt.arch == "aarch64" and target == "aarch64":
            report.add("kernel.format", "FAIL", "an aarch64 ELF vmlinux: Firecracker on aarch64 boots the arm64 "
                                                "Image (invalid Image magic number)", "use arch/arm64/boot/Image",
                       fix=Fix.KERNEL_REPLACE)
        for problem in fmt.problems:
            report.add("kernel.format", "FAIL", problem, "use the vmlinux from the kernel build tree",
                       fix=Fix.KERNEL_REPLACE)
        if fmt.arch == target == "x86_64" and not fmt.problems:
            report.add("kernel.format", "ok", f"{fmt.detail} (x86-64): " + "; ".join(fmt.notes))
        return _Content(data, fmt.elf if fmt.elf is not None and fmt.elf.elf_class == 2 else None)
    if fmt.kind == "arm64-image":
        if target == "aarch64":
            report.add("kernel.format", "ok", "arm64 Image (magic ARM\\x64 at 0x38)")
        return _Content(data)
    if fmt.kind == "bzimage":
        if target == "x86_64":
            _check_bzimage(report, rules, fmt, data)
        if quick:
            return None
        try:
            _method, vmlinux = img.decompress_bzimage(data)
        except ArtifactError as exc:
            return _Content(b"", unreadable=exc)
        return _Content(vmlinux, img.parse_elf(vmlinux))
    if fmt.kind == "gzip":
        report.add("kernel.format", "FAIL", f"{fmt.detail}: Firecracker needs an uncompressed kernel",
                   f"gunzip -c {report.kernel} > vmlinux (for a bzImage: e2b-artifact kernel extract)",
                   fix=Fix.KERNEL_EXTRACT)
        try:
            inner = img.gunzip(data)
        except (zlib.error, ArtifactError) as exc:
            why = exc if isinstance(exc, ArtifactError) else ArtifactError(f"the gzip stream is corrupt ({exc})")
            return _Content(b"", unreadable=why)
        inner_fmt = img.identify(inner)
        if inner_fmt.kind in ("elf", "arm64-image"):
            return _Content(inner, inner_fmt.elf)
        return _Content(b"", unreadable=ArtifactError(f"the gzip stream holds {inner_fmt.detail}"))
    report.add("kernel.format", "FAIL", fmt.detail,
               "give the vmlinux (x86_64) or arch/arm64/boot/Image (aarch64); e2b-artifact kernel list shows "
               "known kernels", fix=Fix.KERNEL_REPLACE)
    return None


def _check_bzimage(report: KernelReport, rules: RuleSet, fmt: img.KernelFormat, data: bytes) -> None:
    """A bzImage on x86_64: refused by Firecracker before 1.17, booted directly from 1.17 (PR #6037)."""
    since = f"v{rules.bzimage_since[0]}.{rules.bzimage_since[1]}"
    extract_hint = f"e2b-artifact kernel extract {report.kernel} -o vmlinux, then use vmlinux"
    bootable = bzimage_bootable(rules, report.firecracker_version)
    if not bootable:
        fc = f"Firecracker {report.firecracker_version}" if bootable is False else \
            f"Firecracker before {since} (the version was not given)"
        newer = "" if bootable is False else f" (a Firecracker {since} or newer would boot it)"
        report.add("kernel.format", "FAIL", f"{fmt.detail}: {fc} boots only an uncompressed ELF vmlinux on x86_64 "
                                            "(Kernel Loader: failed to load ELF kernel image: Invalid Elf magic "
                                            f"number); bzImage boot arrived in {since}{newer}",
                   extract_hint, fix=Fix.KERNEL_EXTRACT)
        return
    problems = img.bzimage_loader_problems(data)
    for problem in problems:
        report.add("kernel.format", "FAIL", f"{fmt.detail}: {problem}", extract_hint, fix=Fix.KERNEL_EXTRACT)
    if not problems:
        report.add("kernel.format", "ok", f"{fmt.detail}: Firecracker {report.firecracker_version} boots a bzImage "
                                          f"directly on x86_64 (since {since}: the ELF loader first, then the "
                                          "bzImage loader); an extracted ELF vmlinux boots faster (no in-guest "
                                          "decompression)")


def extract(bzimage: Path, out: Path) -> tuple[str, int]:
    """Write the ELF vmlinux inside ``bzimage`` to ``out`` (temp name, then rename); (compression, size)."""
    data = _read_kernel(bzimage)
    fmt = img.identify(data)
    if fmt.kind != "bzimage":
        raise ArtifactError(f"{bzimage} is not a bzImage ({fmt.detail})",
                            hint="kernel extract reads a bzImage / vmlinuz; e2b-artifact kernel check says what "
                                 "it is", code=ExitCode.BAD_INPUT)
    method, vmlinux = img.decompress_bzimage(data)
    try:
        atomic_write_bytes(out, vmlinux)
    except OSError as exc:
        raise ArtifactError(f"cannot write {out}: {exc.strerror}", hint="choose another -o path",
                            code=ExitCode.BAD_INPUT) from exc
    return method, len(vmlinux)


def _read_kernel(path: Path) -> bytes:
    return read_input(path, "kernel", limit=limits.KERNEL, missing_hint="check the path (e2b-artifact kernel list)")
