"""The guest kernel rules (``kernels/rules.json``) applied to a kernel's options."""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal

from ..errors import ArtifactError, ExitCode
from ..findings import Finding, Fix, Status
from ..versions import parse_firecracker_version
from .config import Evidence, OptionValue

DiscoveryPath = Literal["cmdline", "acpi", "device-tree"]
OptionLookup = Callable[[str], OptionValue]


@dataclass(frozen=True)
class KernelFinding(Finding):
    decided_by: str = ""  # config, symbol, string, unknown; "" for findings not about an option

    def to_dict(self) -> dict[str, str]:
        return {**super().to_dict(), "decided_by": self.decided_by}


@dataclass(frozen=True)
class OptionRule:
    """A kernel option a Firecracker guest needs, why, and what goes wrong without it."""

    id: str
    option: str
    need: str
    severity: Status
    arch: tuple[str, ...]
    why: str
    symptom: str
    fix: str


@dataclass(frozen=True)
class Discovery:
    acpi_since: tuple[int, ...]  # (major, minor)
    cmdline_option: str
    acpi_option: str
    symptom: str
    fix: str
    acpi_companion: OptionRule  # what an ACPI-only kernel should also have (a warning: Firecracker may boot it without)


@dataclass(frozen=True)
class GuestLine:
    """A guest kernel line in Firecracker's kernel policy: validated from a release, until at least a date."""

    line: tuple[int, int]  # (6, 1)
    since_firecracker: tuple[int, ...]
    until: dt.date | None  # minimum end of support; None when the policy states none yet

    @property
    def name(self) -> str:
        return f"{self.line[0]}.{self.line[1]}"


@dataclass(frozen=True)
class RuleSet:
    evidence: dict[str, Evidence]
    rules: tuple[OptionRule, ...]
    discovery: Discovery
    bzimage_since: tuple[int, ...]  # (major, minor): the first Firecracker whose x86_64 loader takes a bzImage
    loader_source: str
    guest_lines: tuple[GuestLine, ...]
    support_source: str


def data_path(name: str) -> Path:
    """A file of the ``kernels/`` data: shipped inside the package, or at the top of a source checkout."""
    package_dir = Path(__file__).resolve().parent.parent
    for base in (package_dir / "kernels", package_dir.parent / "kernels"):
        if (base / name).is_file():
            return base / name
    raise ArtifactError(f"kernel data file {name} not found (looked in {package_dir / 'kernels'} and "
                        f"{package_dir.parent / 'kernels'})", hint="reinstall e2b-artifact (pip install .)",
                        code=ExitCode.INTERNAL)


@cache
def load_rules() -> RuleSet:
    doc: dict[str, Any] = json.loads(data_path("rules.json").read_text())
    evidence = {name: Evidence(tuple(e.get("symbols", ())), tuple(s.encode("latin-1") for s in e.get("strings", ())))
                for name, e in doc["evidence"].items()}
    rules = tuple(OptionRule(r["id"], r["option"], r["need"], r["severity"], tuple(r["arch"]), r["why"], r["symptom"],
                       r["fix"]) for r in doc["rules"])
    d = doc["device_discovery"]
    since = parse_firecracker_version(d["acpi_since_firecracker"])
    assert since is not None
    c = d["acpi_companion"]
    companion = OptionRule("acpi-pci", c["option"], "y", "warn", ("x86_64",), c["why"], c["symptom"], c["fix"])
    discovery = Discovery(since, d["cmdline_option"], d["acpi_option"], d["symptom"], d["fix"], companion)
    loader = doc["loader"]
    support = doc["guest_support"]
    lines = tuple(GuestLine(_line(g["line"]), _release(g["since_firecracker"]),
                            dt.date.fromisoformat(g["until"]) if g["until"] else None) for g in support["lines"])
    return RuleSet(evidence, rules, discovery, _release(loader["bzimage_since_firecracker"]), loader["source"],
                   lines, support["source"])


def _release(text: str) -> tuple[int, ...]:
    found = parse_firecracker_version(text)
    if found is None:
        raise ArtifactError(f"kernels/rules.json: {text!r} is not a Firecracker version", code=ExitCode.INTERNAL)
    return found


def _line(text: str) -> tuple[int, int]:
    major, minor = text.split(".")
    return int(major), int(minor)


_GUEST_VERSION = re.compile(r"Linux version (\d+)\.(\d+)")


def bzimage_bootable(rules: RuleSet, firecracker_version: str | None) -> bool | None:
    """Whether this Firecracker's x86_64 loader takes a bzImage (PR #6037, 1.17+); None when the version is unknown."""
    fc = parse_firecracker_version(firecracker_version)
    return None if fc is None else fc >= rules.bzimage_since


def check_support(rules: RuleSet, kernel_version: str | None, firecracker_version: str | None,
                  today: dt.date) -> KernelFinding:
    """Is this guest kernel line inside Firecracker's support window (docs/kernel-policy.md)? Never a FAIL:
    a kernel past its window still boots; the policy only says Firecracker may stop validating it."""
    check = "kernel.support"
    known = ", ".join(g.name for g in rules.guest_lines)
    m = _GUEST_VERSION.match(kernel_version or "")
    if m is None:
        return KernelFinding(check, "warn", "the guest kernel version is unknown: Firecracker's support window "
                                            f"(guest lines {known}) not checked", "pass a kernel with its "
                                            "'Linux version' banner (an uncompressed vmlinux)")
    line = (int(m[1]), int(m[2]))
    entry = next((g for g in rules.guest_lines if g.line == line), None)
    newest = max(rules.guest_lines, key=lambda g: g.line)
    move = f"plan the move to {newest.name} (validated from Firecracker v{_shown(newest.since_firecracker)})"
    if entry is None:
        return KernelFinding(check, "warn", f"Linux {line[0]}.{line[1]} is not a guest line Firecracker's kernel "
                                            f"policy validates ({known})", move if line < newest.line else
                             "use a validated guest line if the guest misbehaves")
    fc = parse_firecracker_version(firecracker_version)
    if fc is not None and fc < entry.since_firecracker:
        return KernelFinding(check, "warn", f"Firecracker {firecracker_version} predates its validation of "
                                            f"{entry.name} guests (from v{_shown(entry.since_firecracker)})",
                             f"use Firecracker >= v{_shown(entry.since_firecracker)} with this kernel")
    if entry.until is not None and today > entry.until:
        return KernelFinding(check, "warn", f"{entry.name} guests are past the minimum end of support in "
                                            f"Firecracker's kernel policy ({entry.until.isoformat()}; today is "
                                            f"{today.isoformat()}): a release after that date may stop "
                                            "validating or supporting them", move if entry is not newest else "")
    until = f"until at least {entry.until.isoformat()}" if entry.until else "with no end date stated yet"
    return KernelFinding(check, "ok", f"{entry.name} guests are in Firecracker's support window ({until}, "
                                      f"from v{_shown(entry.since_firecracker)})")


def _shown(release: tuple[int, ...]) -> str:
    return ".".join(str(n) for n in release)


def check_options(rules: RuleSet, option: OptionLookup, arch: str) -> list[KernelFinding]:
    findings = []
    for rule in rules.rules:
        if arch not in rule.arch:
            continue
        value = option(rule.option)
        check = f"kernel.{rule.id}"
        if value.value == rule.need:
            findings.append(KernelFinding(check, "ok", f"{value.describe()} ({value.how()})",
                                          decided_by=value.decided_by))
        elif value.value is None:
            findings.append(KernelFinding(check, "warn", f"{value.describe()}: {rule.why} ({value.how()})",
                                          "pass the kernel's .config with --config FILE, or rebuild with "
                                          f"CONFIG_IKCONFIG=y; needed: CONFIG_{rule.option}={rule.need}",
                                          value.decided_by))
        else:
            module = " (a module is not loaded: no initrd)" if value.value == "m" else ""
            findings.append(KernelFinding(check, rule.severity,
                                          f"{value.describe()}{module}: {rule.why}; you will see: {rule.symptom} "
                                          f"({value.how()})", rule.fix, value.decided_by,
                                          fix=Fix.NONE if rule.severity == "ok" else Fix.KERNEL_REBUILD))
    return findings


def check_discovery(rules: RuleSet, option: OptionLookup, arch: str,
                    firecracker_version: str | None) -> tuple[KernelFinding, DiscoveryPath | None]:
    """Which way this kernel finds its virtio-mmio devices under this Firecracker, if any."""
    check = "kernel.devices"
    if arch == "aarch64":
        return KernelFinding(check, "ok", "devices come from the device tree Firecracker passes (no command-line "
                                          "rule on aarch64)"), "device-tree"
    d = rules.discovery
    cmdline, acpi = option(d.cmdline_option), option(d.acpi_option)
    fc = parse_firecracker_version(firecracker_version)
    fc_name = firecracker_version or "an unknown Firecracker version"
    since = f"v{d.acpi_since[0]}.{d.acpi_since[1]}"
    how = f"{cmdline.describe()} ({cmdline.how()}); {acpi.describe()} ({acpi.how()})"
    decided = "unknown" if None in (cmdline.value, acpi.value) else \
        cmdline.decided_by if cmdline.decided_by == acpi.decided_by else f"{cmdline.decided_by}+{acpi.decided_by}"
    if acpi.value == "y" and fc is not None and fc >= d.acpi_since:
        also = "; the virtio_mmio.device= arguments are accepted too" if cmdline.value == "y" else ""
        return KernelFinding(check, "ok", f"devices found through ACPI: Firecracker {fc_name} describes them in its "
                                          f"ACPI tables (since {since}){also}; {how}", decided_by=decided), "acpi"
    if cmdline.value == "y":
        return KernelFinding(check, "ok", "devices found through the virtio_mmio.device= kernel arguments Firecracker "
                                          f"appends (every version); {how}", decided_by=decided), "cmdline"
    if acpi.value == "y" and fc is None:
        return KernelFinding(check, "warn", f"devices only through ACPI, which needs Firecracker >= {since}; the "
                                            f"Firecracker version is unknown; {how}",
                             "pass --firecracker-version (e.g. v1.12.1_d990331)", decided), "acpi"
    if acpi.value == "y":
        return KernelFinding(check, "FAIL", f"Firecracker {fc_name} passes devices only as virtio_mmio.device= "
                                            f"arguments, which this kernel ignores; its ACPI path needs Firecracker "
                                            f">= {since}; you will see: {d.symptom}; {how}",
                             f"use Firecracker >= {since} (e.g. v1.12.1_d990331), or rebuild with "
                             f"CONFIG_{d.cmdline_option}=y", decided, fix=Fix.KERNEL_REBUILD), None
    if cmdline.value is None or acpi.value is None:
        return KernelFinding(check, "warn", f"device discovery unknown: {how}",
                             "pass the kernel's .config with --config FILE", decided), None
    need_fc = "" if fc is None or fc >= d.acpi_since else f" (and Firecracker >= {since} for ACPI)"
    return KernelFinding(check, "FAIL", f"no way to find the virtio-mmio devices under Firecracker {fc_name}: "
                                        f"you will see: {d.symptom}; {how}", d.fix + need_fc, decided,
                         fix=Fix.KERNEL_REBUILD), None


def check_acpi_companion(rules: RuleSet, option: OptionLookup, path: DiscoveryPath | None) -> KernelFinding | None:
    """A warning when the kernel relies on ACPI alone and lacks what ACPI boots are documented to need."""
    c = rules.discovery.acpi_companion
    value = option(c.option)
    if path != "acpi" or option(rules.discovery.cmdline_option).value == "y" or value.value == "y":
        return None
    return KernelFinding(f"kernel.{c.id}", "warn", f"{value.describe()} ({value.how()}) on a kernel that finds its "
                                                   f"devices only through ACPI: {c.why} You may see: {c.symptom}",
                         c.fix, value.decided_by, fix=Fix.KERNEL_REBUILD)
