"""userfaultfd (how the orchestrator serves snapshot memory) and hugepages."""

from __future__ import annotations

import ctypes
import fcntl
import os
import struct

from ..findings import Finding
from .view import HostView

SYS_USERFAULTFD = {"x86_64": 323, "aarch64": 282}
UFFD_API = 0xAA
UFFDIO_API = 0xC018AA3F  # _IOWR(0xAA, 0x3F, struct uffdio_api)
UFFD_FEATURE_MISSING_HUGETLBFS = 1 << 4
UFFD_FEATURE_EVENT_REMOVE = 1 << 3
UFFD_USER_MODE_ONLY = 1
HUGEPAGE_KB = 2048


def userfaultfd_features(arch: str) -> tuple[int | None, str]:
    """Open a userfaultfd through the syscall and do the API handshake: (features, detail)."""
    number = SYS_USERFAULTFD.get(arch)
    if number is None:
        return None, f"no userfaultfd syscall number known for {arch}"
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.syscall(number, os.O_CLOEXEC | os.O_NONBLOCK)
    if fd < 0:
        err = ctypes.get_errno()
        return None, f"userfaultfd() failed: {os.strerror(err)}"
    try:
        buf = bytearray(struct.pack("QQQ", UFFD_API, 0, 0))
        fcntl.ioctl(fd, UFFDIO_API, buf)
        _api, features, _ioctls = struct.unpack("QQQ", buf)
        return int(features), "userfaultfd() and UFFDIO_API work"
    except OSError as exc:
        return None, f"UFFDIO_API failed: {exc.strerror}"
    finally:
        os.close(fd)


def check_userfaultfd(view: HostView) -> list[Finding]:
    sysctl = view.read("/proc/sys/vm/unprivileged_userfaultfd")
    dev = view.path("/dev/userfaultfd").exists()
    findings: list[Finding] = []
    if sysctl is None and not dev:
        return [Finding("host.userfaultfd", "FAIL", "the kernel has no userfaultfd (no vm.unprivileged_userfaultfd, "
                                                     "no /dev/userfaultfd): snapshots cannot be resumed",
                        "a host kernel built with CONFIG_USERFAULTFD=y (every distribution kernel has it)")]
    where = ", ".join(w for w, present in (("vm.unprivileged_userfaultfd", sysctl is not None),
                                            ("/dev/userfaultfd", dev)) if present)
    if view.is_real:
        features, detail = userfaultfd_features(view.arch())
        if features is None:
            findings.append(Finding("host.userfaultfd", "FAIL", f"{detail} (kernel has {where})",
                                    "run the orchestrator as root, or sysctl vm.unprivileged_userfaultfd=1"))
        elif not features & UFFD_FEATURE_MISSING_HUGETLBFS:
            findings.append(Finding("host.userfaultfd", "warn", f"{detail}, features {features:#x} lack "
                                    "MISSING_HUGETLBFS: hugepage-backed snapshots cannot load "
                                    "(Unrecognized ioctl flags)",
                                    "a newer host kernel (6.1 has every feature Firecracker's handler uses)"))
        else:
            findings.append(Finding("host.userfaultfd", "ok", f"{detail}, features {features:#x} "
                                    "(MISSING_HUGETLBFS, EVENT_REMOVE "
                                    f"{'yes' if features & UFFD_FEATURE_EVENT_REMOVE else 'no'})"))
    else:
        findings.append(Finding("host.userfaultfd", "ok", f"kernel has userfaultfd ({where}); the syscall is "
                                                           "probed only on the real root"))
    uid = view.passwd_uid(view.user)
    if sysctl is not None and sysctl.strip() == "0" and uid != 0:
        findings.append(Finding("host.userfaultfd.user", "FAIL", f"vm.unprivileged_userfaultfd=0 and the orchestrator "
                                f"runs as {view.user}: userfaultfd() is refused without CAP_SYS_PTRACE",
                                "sysctl -w vm.unprivileged_userfaultfd=1 (persist in /etc/sysctl.d), "
                                "or run it as root"))
    return findings


def check_hugepages(view: HostView) -> list[Finding]:
    info = view.meminfo()
    sysfs = view.read(f"/sys/kernel/mm/hugepages/hugepages-{HUGEPAGE_KB}kB/nr_hugepages")
    if "HugePages_Total" not in info and sysfs is None:
        return [Finding("host.hugepages", "warn", "no hugepage information (/proc/meminfo, /sys/kernel/mm/hugepages)",
                        "a host kernel with CONFIG_HUGETLBFS for hugepage-backed sandboxes")]
    total = int(sysfs.strip()) if sysfs and sysfs.strip().isdigit() else info.get("HugePages_Total", 0)
    free = info.get("HugePages_Free", 0)
    size = info.get("Hugepagesize", HUGEPAGE_KB)
    fix = (f"sysctl -w vm.nr_hugepages=N (N x {size // 1024} MiB: the RAM of the hugepage-backed sandboxes "
           "to run; persist in /etc/sysctl.d)")
    if total == 0:
        return [Finding("host.hugepages", "warn", f"no {size // 1024} MiB hugepages reserved: hugepage-backed "
                                                   "templates (upstream's default for new builds) cannot start", fix)]
    line = f"{total} x {size // 1024} MiB hugepages reserved, {free} free ({free * size // 1024} MiB)"
    if free == 0:
        return [Finding("host.hugepages", "warn", line + ": none free", fix)]
    return [Finding("host.hugepages", "ok", line)]
