"""The host files the orchestrator starts sandboxes from: envd, guest kernels, Firecracker binaries."""

from __future__ import annotations

import os
import re
from pathlib import Path

from .. import elf
from ..errors import ArtifactError
from ..findings import Finding, Fix
from ..settings import host_file_candidates
from ..versions import read_firecracker_version
from .view import HostView

ELF_HEAD = 64 * 1024  # the ELF and program headers of a static Go binary sit in its first pages


def check_envd(view: HostView) -> list[Finding]:
    resolved = view.settings["HOST_ENVD_PATH"]
    value = resolved.value or "/fc-envd/envd"
    candidates = [Path(value)]
    staged = sorted(view.path(Path(value).parent).glob("envd.*")) if view.path(Path(value).parent).is_dir() else []
    candidates += [Path(value).parent / p.name for p in staged]
    present = [c for c in candidates if view.path(c).is_file()]
    if not present:
        return [Finding("host.envd", "FAIL", f"HOST_ENVD_PATH={value} does not exist (fork/exec {value}: no such file "
                                             "or directory at template build)",
                        f"put a static envd at {value} (or set HOST_ENVD_PATH to where it is)", fix=Fix.ENVD_REPLACE)]
    findings = [_one_envd(view, c) for c in present]
    if Path(value) not in present:
        findings.insert(0, Finding("host.envd", "FAIL", f"HOST_ENVD_PATH={value} does not exist; staged: "
                                                        + ", ".join(map(str, present)),
                                   f"ln -s {present[0].name} {value} (or set HOST_ENVD_PATH={present[0]})",
                                   fix=Fix.ENVD_REPLACE))
    return findings


def _one_envd(view: HostView, path: Path) -> Finding:
    try:
        with open(view.path(path), "rb") as fh:
            head = fh.read(ELF_HEAD)
    except OSError as exc:
        return Finding("host.envd", "FAIL", f"{path}: cannot read ({exc.strerror})", "fix its permissions")
    info = elf.parse(head)
    if info is None:
        return Finding("host.envd", "FAIL", f"{path} is not an ELF executable", "put the envd binary there",
                       fix=Fix.ENVD_REPLACE)
    machine = info.arch or f"machine {info.machine}"
    if machine != view.arch():
        return Finding("host.envd", "FAIL", f"{path} is a {machine} ELF; this host is {view.arch()}",
                       f"an envd built for {view.arch()} (GOARCH)", fix=Fix.ENVD_REPLACE)
    if info.interpreter is not None:
        return Finding("host.envd", "FAIL", f"{path} is dynamically linked ({info.interpreter}): it will not run in "
                                            "templates without that loader", "build envd with CGO_ENABLED=0",
                       fix=Fix.ENVD_REPLACE)
    version = ""
    if os.access(view.path(path), os.X_OK):
        rc, out = view.run([str(view.path(path)), "-version"], timeout=5)
        found = re.search(r"\d+\.\d+\.\d+\S*", out) if rc == 0 else None
        version = f", version {found[0]}" if found else ""
    return Finding("host.envd", "ok", f"{path}: static {machine} ELF{version}")


def check_kernels(view: HostView) -> list[Finding]:
    from ..kernel.check import check_kernel

    base = view.settings["HOST_KERNELS_DIR"].value or "/fc-kernels"
    here = view.path(base)
    if not here.is_dir():
        return [Finding("host.kernels", "FAIL", f"HOST_KERNELS_DIR={base} does not exist: no template can start",
                        "e2b-artifact kernel fetch <name> (e2b-artifact kernel list shows them)",
                        fix=Fix.KERNEL_INSTALL)]
    versions = sorted(p for p in here.iterdir() if p.is_dir())
    if not versions:
        return [Finding("host.kernels", "FAIL", f"HOST_KERNELS_DIR={base} holds no kernel version directory",
                        "e2b-artifact kernel fetch <name>", fix=Fix.KERNEL_INSTALL)]
    findings = []
    for vdir in versions:
        found = next((c for c in host_file_candidates(vdir, "", "vmlinux.bin", view.arch()) if c.is_file()), None)
        shown = f"{base.rstrip('/')}/{vdir.name}"
        if found is None:
            findings.append(Finding("host.kernels", "FAIL", f"{shown}/vmlinux.bin is missing (Kernel Loader: Unable to "
                                                            "read kernel image)",
                                    f"e2b-artifact kernel fetch {vdir.name}", fix=Fix.KERNEL_INSTALL))
            continue
        try:
            report = check_kernel(found, arch=view.arch(), quick=True)
        except ArtifactError as exc:
            findings.append(Finding("host.kernels", "FAIL", f"{shown}: {exc.message}", exc.hint,
                                    fix=Fix.KERNEL_REPLACE))
            continue
        fails = [f for f in report.findings if f.status == "FAIL"]
        rel = found.relative_to(here)
        if fails:
            findings.append(Finding("host.kernels", "FAIL", f"{base.rstrip('/')}/{rel}: {fails[0].message}",
                                    fails[0].hint.replace(str(found), f"{base.rstrip('/')}/{rel}"), fix=fails[0].fix))
        else:
            version = f" {report.version.split()[0]}" if report.version else ""
            findings.append(Finding("host.kernels", "ok", f"{base.rstrip('/')}/{rel}: {report.kind}{version}"))
    return findings


def check_firecrackers(view: HostView) -> list[Finding]:
    base = view.settings["FIRECRACKER_VERSIONS_DIR"].value or "/fc-versions"
    here = view.path(base)
    if not here.is_dir():
        return [Finding("host.firecracker", "FAIL", f"FIRECRACKER_VERSIONS_DIR={base} does not exist",
                        f"put each release at {base}/<version>/firecracker (e.g. v1.12.1_d990331)",
                        fix=Fix.FIRECRACKER_INSTALL)]
    versions = sorted(p for p in here.iterdir() if p.is_dir())
    if not versions:
        return [Finding("host.firecracker", "FAIL", f"FIRECRACKER_VERSIONS_DIR={base} holds no version directory",
                        f"put each release at {base}/<version>/firecracker", fix=Fix.FIRECRACKER_INSTALL)]
    findings = []
    for vdir in versions:
        shown = f"{base.rstrip('/')}/{vdir.name}"
        found = next((c for c in host_file_candidates(vdir, "", "firecracker", view.arch()) if c.is_file()), None)
        if found is None:
            findings.append(Finding("host.firecracker", "FAIL", f"{shown}/firecracker is missing: builds with "
                                                                f"firecracker_version {vdir.name} cannot start",
                                    f"put the firecracker binary of release {vdir.name.split('_')[0]} at "
                                    f"{shown}/firecracker (chmod 755)", fix=Fix.FIRECRACKER_INSTALL))
            continue
        findings.append(_one_firecracker(view, vdir.name, found, f"{base.rstrip('/')}/{found.relative_to(here)}"))
    return findings


def _one_firecracker(view: HostView, dir_name: str, binary: Path, shown: str) -> Finding:
    if not os.access(binary, os.X_OK):
        return Finding("host.firecracker", "FAIL", f"{shown} is not executable", f"chmod 755 {shown}",
                       fix=Fix.FIRECRACKER_INSTALL)
    rc, out = view.run([str(binary), "--version"])
    said = re.search(r"Firecracker v?(\d+\.\d+\.\d+)", out)
    if rc != 0 or said is None:
        first = out.splitlines()[0] if out else f"exit {rc}"
        return Finding("host.firecracker", "FAIL", f"{shown} --version failed: {first}",
                       f"replace it with the release's firecracker-{dir_name.split('_')[0]}-{view.arch()} binary",
                       fix=Fix.FIRECRACKER_INSTALL)
    wanted = read_firecracker_version(dir_name)
    if wanted is None:
        return Finding("host.firecracker", "warn", f"{shown}: Firecracker v{said[1]}; directory name {dir_name} is in "
                                                   "none of upstream's version forms (v1.12.1_<commit>, v1.10.1, "
                                                   "v1.14-0.2.0)", f"rename it to v{said[1]}_<commit>")
    binary_release = tuple(int(x) for x in said[1].split("."))
    # E2B's fork names only the upstream line (v1.14-0.2.0): compare major.minor there
    same = (binary_release[:2] == wanted.release[:2] if wanted.form == "e2b" else binary_release == wanted.release)
    if not same:
        expected = ".".join(map(str, wanted.release[:2] if wanted.form == "e2b" else wanted.release))
        return Finding("host.firecracker", "FAIL", f"{shown} is Firecracker v{said[1]}, its directory says {dir_name}",
                       f"put release {expected} there (or rename the directory to v{said[1]}_<commit>)",
                       fix=Fix.FIRECRACKER_INSTALL)
    return Finding("host.firecracker", "ok", f"{shown}: Firecracker v{said[1]}")
