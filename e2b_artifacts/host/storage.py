"""The E2B path variables (as ``paths`` decides them) and free space under storage and caches."""

from __future__ import annotations

import os
from pathlib import Path

from ..findings import Finding, Status
from ..settings import BY_NAME, inspect_path
from .view import HostView

SPACE_PATHS = ("LOCAL_TEMPLATE_STORAGE_BASE_PATH", "TEMPLATE_CACHE_DIR", "SANDBOX_CACHE_DIR", "SNAPSHOT_CACHE_DIR",
               "SHARED_CHUNK_CACHE_PATH")
# A template is its rootfs (upstream's default disk 512 MiB plus content) and its memfile (the VM's RAM).
SPACE_FAIL = 2 << 30
SPACE_WARN = 20 << 30
BAD = ("absent-mount", "not-mounted", "wrong-type")


def check_paths(view: HostView) -> list[Finding]:
    findings = []
    for resolved in view.settings.all():
        setting = BY_NAME[resolved.name]
        if setting.kind == "value":
            continue
        status = inspect_path(setting, resolved.value, None if view.is_real else view.root)
        where = f"{resolved.name}={resolved.value} [{resolved.source}]"
        if status.state in BAD:
            verdict: Status = "FAIL" if resolved.source != "default" else "warn"
            findings.append(Finding("host.paths", verdict, f"{where}: {status.detail}",
                                    f"set {resolved.name} for this host (environment or --env-file), or mount "
                                    "the disk"))
        elif status.state == "missing":
            findings.append(Finding("host.paths", "warn", f"{where}: does not exist",
                                    "e2b-artifact paths --create" if setting.kind == "dir"
                                    else f"put the file at {resolved.value}"))
        elif status.state == "unset":
            findings.append(Finding("host.paths", "ok", f"{resolved.name}: unset (off)"))
        else:
            findings.append(Finding("host.paths", "ok", f"{where}: exists"))
    return findings


def check_space(view: HostView) -> list[Finding]:
    seen: dict[int, list[str]] = {}
    space: dict[int, tuple[int, Path]] = {}
    for name in SPACE_PATHS:
        value = view.settings[name].value
        if not value:
            continue
        here = _existing_ancestor(view.path(value))
        try:
            st = os.statvfs(here)
            dev = os.stat(here).st_dev
        except OSError:
            continue
        seen.setdefault(dev, []).append(name)
        space.setdefault(dev, (st.f_bavail * st.f_frsize, here))
    findings = []
    for dev, names in seen.items():
        free, here = space[dev]
        line = f"{free / (1 << 30):.1f} GiB free on the filesystem of {here} ({', '.join(names)})"
        if free < SPACE_FAIL:
            findings.append(Finding("host.disk", "FAIL", line + ": a single template does not fit",
                                    "free space there, or point these variables at a larger disk"))
        elif free < SPACE_WARN:
            findings.append(Finding("host.disk", "warn", line + f": under {SPACE_WARN >> 30} GiB, a few templates "
                                                                "and their caches fill it",
                                    "free space there, or point these variables at a larger disk"))
        else:
            findings.append(Finding("host.disk", "ok", line))
    return findings


def _existing_ancestor(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path
