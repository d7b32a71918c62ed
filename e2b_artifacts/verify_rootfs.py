"""Static checks of a template's ``rootfs.ext4``, read through debugfs (no mount, no root).

e2fsck -fn clean; ``/sbin/init`` resolves inside the image to an executable file;
``/proc``, ``/sys``, ``/dev`` exist; envd is executable and can run on the guest
(ELF of the kernel's arch, static or with its interpreter in the image; a script's
``#!`` interpreter present); in systemd mode ``envd.service`` exists and is enabled.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import tempfile
from pathlib import Path

from . import compressed, e2fsprogs, elf
from . import header as header_mod
from .e2fsprogs import Ext4Image, Inode
from .errors import ArtifactError
from .findings import Finding, Fix, Status
from .fsutil import copy_range
from .layout import ROOTFS, ROOTFS_HEADER

ENVD_PATH = "/usr/bin/envd"
INIT_PATH = "/sbin/init"
UNIT_PATH = "/etc/systemd/system/envd.service"
WANTS_DIRS = ("/etc/systemd/system/multi-user.target.wants", "/etc/systemd/system/default.target.wants",
              "/etc/systemd/system/sysinit.target.wants", "/lib/systemd/system/multi-user.target.wants",
              "/usr/lib/systemd/system/multi-user.target.wants")
MOUNT_POINTS = ("/proc", "/sys", "/dev")


def check_build_rootfs(build_dir: Path, *, init_mode: str | None, arch: str) -> list[Finding]:
    """Rootfs checks of a build: on ``rootfs.ext4`` itself, or, when its header says the file is a
    packed diff layer (upstream drops zero blocks and maps the rest, possibly to parent builds),
    on the device assembled from the header chain in a private temp file."""
    rootfs = build_dir / ROOTFS
    try:
        hdr = header_mod.read_header(build_dir / ROOTFS_HEADER) if (build_dir / ROOTFS_HEADER).is_file() else None
    except ArtifactError:
        hdr = None  # reported by the header check; look at the file as it is
    if not rootfs.is_file() and hdr is None:
        return []  # stored compressed without a header that says how: the data check reports it
    if hdr is None or (rootfs.is_file() and _maps_itself(hdr, build_dir.name, rootfs.stat().st_size)):
        return check_rootfs(rootfs, init_mode=init_mode, arch=arch)
    with tempfile.TemporaryDirectory(prefix="e2b-artifact-rootfs-") as tmp:
        image = Path(tmp) / ROOTFS
        try:
            sources = assemble(hdr, build_dir, ROOTFS, image)
        except (ArtifactError, OSError) as exc:
            return [Finding("rootfs", "warn", f"{ROOTFS} is a diff layer and the device cannot be assembled from "
                                              f"its header chain ({exc}): filesystem not checked",
                            "see the header.rootfs.ext4 finding")]
        what = "stored compressed" if not rootfs.is_file() else "a diff layer"
        note = Finding("rootfs", "ok", f"{ROOTFS} is {what}: checked the device assembled from "
                                       f"{len(hdr.mappings)} mappings over {sources} build(s)")
        return [note, *check_rootfs(image, init_mode=init_mode, arch=arch)]


def _maps_itself(hdr: header_mod.Header, build_id: str, file_size: int) -> bool:
    own = {build_id, hdr.build_id}
    return file_size >= hdr.size and all(m.build_id == header_mod.NIL_BUILD or (
        m.build_id in own and m.storage_offset == m.offset) for m in hdr.mappings)


def assemble(hdr: header_mod.Header, build_dir: Path, data_name: str, out: Path) -> int:
    """Write the device ``hdr`` describes to ``out`` (sparse: nil ranges stay holes); returns the build count."""
    used: set[str] = set()
    with out.open("wb") as fout, contextlib.ExitStack() as readers:
        os.ftruncate(fout.fileno(), hdr.size)
        opened: dict[str, compressed.FrameReader] = {}
        for m in hdr.mappings:
            end = min(m.end, hdr.size)
            if m.build_id == header_mod.NIL_BUILD or end <= m.offset:
                continue
            own = m.build_id in (build_dir.name, hdr.build_id)
            obj = compressed.resolve(build_dir.parent, m.build_id, data_name, hdr)
            if own:  # the build being checked may lie in a directory named otherwise (a stand-in, a staging dir)
                obj = dataclasses.replace(obj, path=build_dir / obj.name)
            if obj.compressed:  # frame by frame, each build's last frame kept for the next mapping
                if m.build_id not in opened:
                    opened[m.build_id] = readers.enter_context(compressed.FrameReader(obj))
                opened[m.build_id].copy_to(fout.fileno(), m.storage_offset, end - m.offset, m.offset)
            else:
                with obj.path.open("rb") as fin:
                    need = m.storage_offset + (end - m.offset)
                    if os.fstat(fin.fileno()).st_size < need:
                        raise ArtifactError(f"{obj.path} is shorter than its mappings need ({need} bytes)")
                    copy_range(fin.fileno(), fout.fileno(), m.storage_offset, need, m.offset)
            used.add(m.build_id)
    return len(used)


def check_rootfs(image: Path, *, init_mode: str | None, arch: str, image_label: str = ROOTFS) -> list[Finding]:
    """Every rootfs check; ``init_mode`` None = infer from where ``/sbin/init`` points."""
    findings: list[Finding] = []
    inject_hint = f"e2b-artifact inject {image} --envd PATH" + (" --init systemd" if init_mode == "systemd" else "")
    try:
        fsck = e2fsprogs.fsck(image)
    except ArtifactError as exc:
        return [Finding("rootfs.fsck", "FAIL", f"{image_label}: {exc.message}",
                        "rebuild it: e2b-artifact build ...", fix=Fix.BUILD_REBUILD)]
    if fsck.clean:
        findings.append(Finding("rootfs.fsck", "ok", "e2fsck -fn: clean"))
    else:
        lines = [ln.strip() for ln in fsck.output.splitlines()
                 if ln.strip() and not ln.startswith(("e2fsck ", "Pass "))]
        findings.append(Finding("rootfs.fsck", "FAIL", f"e2fsck -fn found problems: {'; '.join(lines[:3])}",
                                "repair a copy with e2fsck -fy, or rebuild: e2b-artifact build ...",
                                fix=Fix.BUILD_REBUILD))
    view = Ext4Image(image)
    stats = view.stat_many([INIT_PATH, ENVD_PATH, UNIT_PATH, *MOUNT_POINTS,
                            *(f"{d}/envd.service" for d in WANTS_DIRS)])
    init_target = _check_init(view, findings, inject_hint)
    mode = init_mode or ("envd" if init_target == ENVD_PATH else "systemd")
    _check_mount_points(stats, findings, inject_hint)
    _check_envd(view, stats.get(ENVD_PATH), arch, mode, findings, inject_hint)
    if mode == "systemd":
        _check_unit(view, stats, findings, inject_hint)
        if init_target == ENVD_PATH:
            findings.append(Finding("rootfs.init", "warn", f"init mode systemd, but /sbin/init resolves to "
                                                           f"{ENVD_PATH}: envd.service never runs", inject_hint,
                                    fix=Fix.ROOTFS_INJECT))
    elif init_target is not None and init_target != ENVD_PATH:
        findings.append(Finding("rootfs.init", "warn", f"init mode envd, but /sbin/init resolves to {init_target}, "
                                                       f"not {ENVD_PATH}", inject_hint, fix=Fix.ROOTFS_INJECT))
    return findings


def _check_init(view: Ext4Image, findings: list[Finding], hint: str) -> str | None:
    try:
        target = view.resolve(INIT_PATH)
    except ArtifactError as exc:
        findings.append(Finding("rootfs.init", "FAIL", f"/sbin/init: {exc.message}", hint, fix=Fix.ROOTFS_INJECT))
        return None
    node = view.stat(target)
    if node is None or node.kind != "file":
        findings.append(Finding("rootfs.init", "FAIL", f"/sbin/init resolves to {target}, which is a "
                                                       f"{node.kind if node else 'missing file'}, not a file", hint,
                                fix=Fix.ROOTFS_INJECT))
        return target
    if not node.executable:
        findings.append(Finding("rootfs.init", "FAIL", f"/sbin/init resolves to {target}, mode {node.mode:04o}: "
                                                       "not executable", hint, fix=Fix.ROOTFS_INJECT))
        return target
    via = "" if target == INIT_PATH else f" (-> {target})"
    findings.append(Finding("rootfs.init", "ok", f"/sbin/init{via} is an executable file, mode {node.mode:04o}"))
    return target


def _check_mount_points(stats: dict[str, Inode | None], findings: list[Finding], hint: str) -> None:
    missing = [p for p in MOUNT_POINTS if (n := stats.get(p)) is None or n.kind != "dir"]
    if missing:
        findings.append(Finding("rootfs.mountpoints", "FAIL",
                                f"{', '.join(missing)} missing or not a directory (the guest mounts proc, sysfs, "
                                "devtmpfs there)", hint.replace(" --envd PATH", " --envd PATH (creates them)"),
                                fix=Fix.ROOTFS_INJECT))
    else:
        findings.append(Finding("rootfs.mountpoints", "ok", "/proc, /sys, /dev exist"))


def _check_envd(view: Ext4Image, node: Inode | None, arch: str, mode: str, findings: list[Finding],
                hint: str) -> None:
    if node is None:
        findings.append(Finding("rootfs.envd", "FAIL", f"{ENVD_PATH} missing", hint, fix=Fix.ROOTFS_INJECT))
        return
    if node.kind != "file" or not node.executable:
        findings.append(Finding("rootfs.envd", "FAIL", f"{ENVD_PATH} is a {node.kind}, mode {node.mode:04o}: "
                                                       "not an executable file", hint, fix=Fix.ROOTFS_INJECT))
        return
    data = view.read(ENVD_PATH)
    executable = elf.parse(data)
    if executable is not None:
        machine = executable.arch or f"machine {executable.machine}"
        if machine != arch:
            findings.append(Finding("rootfs.envd", "FAIL", f"{ENVD_PATH} is an {machine} ELF; the kernel is "
                                                           f"{arch}", f"build envd for {arch}, then {hint}",
                                    fix=Fix.ENVD_REPLACE))
        elif executable.interpreter is None:
            findings.append(Finding("rootfs.envd", "ok", f"{ENVD_PATH}: static {machine} ELF ({mode} mode)"))
        else:
            _check_interpreter(view, executable.interpreter, "ELF interpreter", findings, hint, ok_status="ok")
        return
    if data.startswith(b"#!"):
        line = data[2:].split(b"\n", 1)[0].decode(errors="replace").strip()
        interpreter = line.split()[0] if line else ""
        _check_interpreter(view, interpreter, "script interpreter", findings, hint, ok_status="warn",
                           note="; upstream envd is a static ELF")
        return
    findings.append(Finding("rootfs.envd", "FAIL", f"{ENVD_PATH} is neither an ELF executable nor a #! script",
                            hint, fix=Fix.ENVD_REPLACE))


def _check_interpreter(view: Ext4Image, interpreter: str, what: str, findings: list[Finding], hint: str, *,
                       ok_status: Status, note: str = "") -> None:
    if not interpreter.startswith("/"):
        findings.append(Finding("rootfs.envd", "FAIL", f"{ENVD_PATH}: {what} {interpreter!r} is not an absolute path",
                                hint, fix=Fix.ENVD_REPLACE))
        return
    try:
        target = view.resolve(interpreter)
        node = view.stat(target)
    except ArtifactError as exc:
        findings.append(Finding("rootfs.envd", "FAIL", f"{ENVD_PATH}: {what} {interpreter}: {exc.message}",
                                f"install it in the image, or use a static envd; then {hint}", fix=Fix.ENVD_REPLACE))
        return
    if node is None or node.kind != "file":
        findings.append(Finding("rootfs.envd", "FAIL", f"{ENVD_PATH}: {what} {interpreter} is not a file in the image",
                                f"install it in the image, or use a static envd; then {hint}", fix=Fix.ENVD_REPLACE))
        return
    status = ok_status
    findings.append(Finding("rootfs.envd", status, f"{ENVD_PATH}: {what} {interpreter} present in the image{note}",
                            "" if status == "ok" else "use upstream's static envd build",
                            fix=Fix.NONE if status == "ok" else Fix.ENVD_REPLACE))


def _check_unit(view: Ext4Image, stats: dict[str, Inode | None], findings: list[Finding], hint: str) -> None:
    unit = stats.get(UNIT_PATH)
    if unit is None:
        findings.append(Finding("rootfs.systemd", "FAIL", f"systemd mode: {UNIT_PATH} missing", hint,
                                fix=Fix.ROOTFS_INJECT))
        return
    enabled = []
    for directory in WANTS_DIRS:
        link = f"{directory}/envd.service"
        if stats.get(link) is None:
            continue
        try:
            target = view.resolve(link)
        except ArtifactError:
            continue  # dangling: not enabled
        node = view.stat(target)
        if node is not None and node.kind == "file":
            enabled.append(directory.rsplit("/", 1)[1])
    if enabled:
        findings.append(Finding("rootfs.systemd", "ok", f"envd.service present, enabled ({', '.join(enabled)})"))
    else:
        findings.append(Finding("rootfs.systemd", "FAIL", "envd.service present but not enabled "
                                                          "(no valid link in a *.target.wants directory)", hint,
                                fix=Fix.ROOTFS_INJECT))
