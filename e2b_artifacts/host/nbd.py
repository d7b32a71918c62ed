"""NBD: how the orchestrator exposes each sandbox's rootfs."""

from __future__ import annotations

import re

from ..findings import Finding
from .view import HostView

UPSTREAM_NBDS_MAX = 4096
FIX = (f"modprobe -r nbd; modprobe nbd nbds_max={UPSTREAM_NBDS_MAX} "
       f"(persist: echo 'options nbd nbds_max={UPSTREAM_NBDS_MAX}' > /etc/modprobe.d/nbd.conf, "
       "echo nbd > /etc/modules-load.d/nbd.conf)")


def check_nbd(view: HostView) -> list[Finding]:
    module = view.path("/sys/module/nbd")
    if not module.is_dir():
        return [Finding("host.nbd", "FAIL", "the nbd module is not loaded: sandboxes get no rootfs device", FIX)]
    raw = view.read("/sys/module/nbd/parameters/nbds_max")
    nbds_max = int(raw.strip()) if raw and raw.strip().isdigit() else None
    devices = sorted(p for p in view.path("/sys/block").glob("nbd*") if re.fullmatch(r"nbd\d+", p.name))
    busy = [p for p in devices if (p / "pid").exists()]
    count = f"{len(devices)} devices, {len(devices) - len(busy)} free"
    if nbds_max is None:
        return [Finding("host.nbd", "warn", f"nbd loaded, nbds_max unknown; {count}", FIX)]
    if nbds_max < UPSTREAM_NBDS_MAX:
        return [Finding("host.nbd", "FAIL", f"nbd loaded with nbds_max={nbds_max} (upstream loads "
                                             f"{UPSTREAM_NBDS_MAX}; one device per running sandbox and build, "
                                             f"so the pool runs out: no free slots); {count}", FIX)]
    if devices and not len(devices) - len(busy):
        return [Finding("host.nbd", "FAIL", f"nbds_max={nbds_max} but every device is in use ({count})",
                        "stop leftover sandboxes (nbd-client -d /dev/nbdN for stale ones)")]
    return [Finding("host.nbd", "ok", f"nbd loaded, nbds_max={nbds_max}; {count}")]
