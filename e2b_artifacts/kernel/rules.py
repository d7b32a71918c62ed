"""The guest kernel rules (``kernels/rules.json``) applied to a kernel's options."""

from __future__ import annotations

import json
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
class RuleSet:
    evidence: dict[str, Evidence]
    rules: tuple[OptionRule, ...]
    discovery: Discovery


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
    return RuleSet(evidence, rules, discovery)


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
