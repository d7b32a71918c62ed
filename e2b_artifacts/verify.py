"""``verify``: every static check of a template build, as findings (ok / warn / FAIL + the fixing command).

Areas: completeness (files, metadata, kernel, Firecracker), rootfs (verify_rootfs),
snapshot (snapshot), headers (header), integrity manifest (manifest). This thread
hashes the data files for the manifest, largest first; once the rootfs image is
hashed (and so in the page cache) its e2fsprogs checks start in a worker thread,
so a full verify costs about one sequential read of the build.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import header as header_mod
from . import hostfiles, layout, limits, manifest, metadata, snapshot, verify_data, verify_metadata
from .errors import ArtifactError, ExitCode
from .findings import Checked, Finding, Fix, Status
from .fsutil import read_input, unused_path
from .layout import (
    COMPRESSED_SUFFIXES,
    HEADERS,
    MEMFILE,
    MEMFILE_HEADER,
    QUARANTINE_DIR,
    ROOTFS,
    SNAPFILE,
)
from .settings import HOST_ARCH_DIRS, Settings
from .verify_headers import check_headers
from .verify_rootfs import check_build_rootfs

SNAPSHOT_FILES = (MEMFILE, SNAPFILE, HEADERS[0])  # what a cold start moves aside
NO_SNAPSHOT = "no snapshot: sandboxes cold-boot from rootfs"
AREA_ORDER = ("files", "metadata", "kernel", "firecracker", "rootfs", "snapshot", "header", "data", "manifest")


@dataclass
class VerifyReport(Checked):
    """What verify found in one build; ``fixed`` says what ``--fix`` changed."""

    build_id: str
    build_dir: Path
    findings: list[Finding] = field(default_factory=list)
    fixed: list[str] = field(default_factory=list)

    def add(self, check: str, status: Status, message: str, hint: str = "", *, fix: Fix = Fix.NONE) -> None:
        self.findings.append(Finding(check, status, message, hint, fix=fix))

    def to_dict(self, strict: bool = False) -> dict[str, Any]:
        return {"ok": not self.failed(strict), "build_id": self.build_id, "build_dir": str(self.build_dir),
                "strict": strict, "counts": self.counts(), "fixed": self.fixed,
                "findings": [f.to_dict() for f in self.findings]}


@dataclass(frozen=True)
class StandIn:
    """``build_dir`` is a local stand-in for a build stored elsewhere (``verify --all s3://...``).

    Its small files are copies; its data files are sparse placeholders of the stored size, except what
    the caller streamed into them. ``digests`` holds the BLAKE3 the caller computed while streaming each
    file from ``location`` (the manifest check compares those instead of hashing the placeholder);
    ``rootfs_read`` False means ``rootfs.ext4`` was not fetched (``--quick``), so its contents are not checked.
    """

    location: str
    digests: Mapping[str, str] = field(default_factory=dict)
    rootfs_read: bool = True


def verify(build_dir: Path, settings: Settings, *, quick: bool = False, fix: bool = False,
           stand_in: StandIn | None = None, staging_seen: bool = True) -> VerifyReport:
    """Run every check on ``build_dir``; with ``fix``, repair what can be repaired safely, then check again.

    ``staging_seen=False``: the caller listed the storage and found no ``.<id>.staging-*`` of this build
    there, so the sweep of an interrupted run's leftovers does not list the storage again."""
    if stand_in is not None and fix:
        raise ArtifactError(f"cannot repair {stand_in.location} in place", hint="pull the build, then verify --fix it",
                            code=ExitCode.USAGE)
    if not build_dir.is_dir():
        raise ArtifactError(f"build directory {build_dir} not found",
                            hint="pass a build id under LOCAL_TEMPLATE_STORAGE_BASE_PATH or a directory path "
                                 "(see e2b-artifact paths)", code=ExitCode.BAD_INPUT)
    report = _run_checks(build_dir, settings, quick=quick, stand_in=stand_in, staging_seen=staging_seen)
    if not fix:
        return report
    fixed = _fix(build_dir, settings, report)
    if not fixed:
        report.fixed = []
        return report
    again = _run_checks(build_dir, settings, quick=quick)
    again.fixed = fixed
    return again


def _run_checks(build_dir: Path, settings: Settings, *, quick: bool, stand_in: StandIn | None = None,
                staging_seen: bool = True) -> VerifyReport:
    report = VerifyReport(build_dir.name, build_dir)
    _check_files(report, staging_seen)
    md = _check_metadata(report)
    arch = hostfiles.build_arch(md)
    if md is not None:
        verify_metadata.check_fields(report.add, md, arch=arch)
    guest_arch = _check_host_binaries(report, settings, md, arch) or arch
    rootfs = build_dir / ROOTFS
    init_mode = md.ext.get("init") if md is not None else None
    rootfs_read = stand_in is None or stand_in.rootfs_read
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:  # the hashing, the rootfs checks
        jobs: list[concurrent.futures.Future[list[Finding]]] = []

        def start_rootfs_checks(done: str = ROOTFS) -> None:
            # e2fsprogs subprocesses run beside the hashing; started once the image is hashed (it is then
            # in the page cache, so their reads do not make the disk seek away from the streaming read).
            if done in (ROOTFS, *layout.compressed_names(ROOTFS)) and not jobs and rootfs_read and (
                    rootfs.is_file() or _stored_compressed(build_dir, ROOTFS)):
                jobs.append(pool.submit(check_build_rootfs, build_dir, arch=guest_arch,
                                        init_mode=init_mode if isinstance(init_mode, str) else None))

        # The files are hashed from the start on a thread of their own (BLAKE3 releases the GIL), so the
        # snapshot, header and data-object checks run beside the hashing instead of before it; findings
        # are put in area order at the end, so the report reads the same.
        hashed = pool.submit(_check_manifest, report, quick, start_rootfs_checks,
                                stand_in.digests if stand_in else None)
        _check_snapshot(report, md, arch)
        report.findings.extend(check_headers(report.build_dir))
        # a stand-in's data files are placeholders: its frames are not read (only their table and sizes)
        report.findings.extend(verify_data.check_data_objects(build_dir, quick=quick or stand_in is not None))
        hashed.result()
        start_rootfs_checks()  # no manifest, --quick, or the image not listed
        if stand_in is not None and not stand_in.rootfs_read and rootfs.is_file():
            report.add("rootfs", "warn", f"{ROOTFS} contents not checked: --quick reads no data from "
                                         f"{stand_in.location}", "verify without --quick to check the filesystem")
        for job in jobs:
            try:
                report.findings.extend(job.result())
            except ArtifactError as exc:
                report.add("rootfs", "FAIL", exc.message, exc.hint)
    report.findings.sort(key=lambda f: AREA_ORDER.index(f.check.split(".")[0]) if f.check.split(".")[0]
                         in AREA_ORDER else len(AREA_ORDER))  # stable: keeps the order within an area
    return report


def _names(build_dir: Path) -> set[str]:
    return {e.name for e in os.scandir(build_dir)}


def _check_files(report: VerifyReport, staging_seen: bool = True) -> None:
    d, names = report.build_dir, _names(report.build_dir)
    bid = report.build_id
    if (d / ROOTFS).is_file():
        report.add("files", "ok", f"{ROOTFS} present ({(d / ROOTFS).stat().st_size} bytes)")
    elif ROOTFS in names:
        report.add("files", "FAIL", f"{ROOTFS} is not a regular file (a dangling link or a directory?)",
                   "put the image itself there: e2b-artifact build ...", fix=Fix.BUILD_REBUILD)
    elif (stored := _stored_compressed(d, ROOTFS)) is not None:
        report.add("files", "ok", f"{ROOTFS} stored compressed: {stored.name} ({stored.stat().st_size} bytes)")
    else:
        report.add("files", "FAIL", f"{ROOTFS} missing", "build it: e2b-artifact build ...", fix=Fix.BUILD_REBUILD)
    if metadata.FILE_NAME not in names:
        report.add("files", "FAIL", f"{metadata.FILE_NAME} missing (upstream then assumes the legacy v1 layout)",
                   f"write it: e2b-artifact build ..., or restore it from a backup of {bid}", fix=Fix.BUILD_REBUILD)
    for old, moved in _sweep_if_idle(d, staging_seen):
        report.add("files", "warn", f"moved {old.name}, left by an interrupted run, to {moved}",
                   f"nothing was deleted: look at it there, or move it back with: mv {moved} {old}")
        names.discard(old.name)
    leftovers = sorted(n for n in names if manifest.is_temp_name(n) or (
        n.startswith(".") and n != QUARANTINE_DIR and n not in (".", "..")))
    if leftovers:
        report.add("files", "warn", "leftover temp files: " + ", ".join(leftovers),
                   "an interrupted write or upload left them; move them out once nothing runs on this build")


def _stored_compressed(build_dir: Path, data_name: str) -> Path | None:
    """The compressed object of ``data_name`` in ``build_dir`` (``rootfs.ext4.zstd``), if there is one."""
    return next((build_dir / n for n in layout.compressed_names(data_name) if (build_dir / n).is_file()), None)


def _sweep_if_idle(build_dir: Path, staging: bool = True) -> list[tuple[Path, Path]]:
    """Stale leftovers of killed runs moved aside, when no writer holds the build's lock now."""
    try:
        with layout.lock(build_dir.parent, build_dir.name):
            return layout.sweep_stale(build_dir.parent, build_dir.name, staging=staging)
    except (ArtifactError, OSError):  # a writer is at work, or the storage is read-only: report only
        return []


def _check_metadata(report: VerifyReport) -> metadata.Metadata | None:
    path = report.build_dir / metadata.FILE_NAME
    if not _present(path):
        return None
    try:
        md = metadata.read(path)
    except ArtifactError as exc:
        report.add("metadata", "FAIL", exc.message, exc.hint)
        return None
    verify_metadata.check_reading(report.add, md, report.build_id, memory_snapshot=_has_memory_snapshot(report))
    if md.build_id != report.build_id:
        report.add("metadata", "FAIL", f"template.build_id {md.build_id!r} differs from the directory name "
                                       f"{report.build_id!r} (the orchestrator looks builds up by directory)",
                   f"e2b-artifact clone {report.build_id} --build-id NEW gives a consistent copy; or fix build_id",
                   fix=Fix.BUILD_CLONE)
    return md


def _has_memory_snapshot(report: VerifyReport) -> bool:
    names = _names(report.build_dir)
    return SNAPFILE in names or MEMFILE in names or any(MEMFILE + s in names for s in COMPRESSED_SUFFIXES)


def _present(path: Path) -> bool:
    """A name in the build directory, whatever it is (a FIFO or device is then refused when read)."""
    return path.exists() or path.is_symlink()


def _check_host_binaries(report: VerifyReport, settings: Settings, md: metadata.Metadata | None,
                         arch: str) -> str | None:
    """Locate the kernel and Firecracker; check the kernel. Returns the kernel's arch when it is known."""
    if md is None:
        return None
    kernel = _locate(report, hostfiles.locate_kernel(settings, md.kernel_version, arch),
                     f"e2b-artifact kernel check PATH, then copy it to $HOST_KERNELS_DIR/{md.kernel_version}/"
                     "vmlinux.bin")
    _locate(report, hostfiles.locate_firecracker(settings, md.firecracker_version, arch),
            f"install Firecracker {md.firecracker_version} at $FIRECRACKER_VERSIONS_DIR/"
            f"{md.firecracker_version}/firecracker")
    return _check_kernel(report, kernel, md.firecracker_version, arch) if kernel is not None else None


def _locate(report: VerifyReport, host_file: hostfiles.HostFile, hint: str) -> Path | None:
    var, root, flat = host_file.var, host_file.root, host_file.flat
    check = "kernel" if var == hostfiles.KERNELS_VAR else "firecracker"
    if root is None:
        report.add(check, "warn", f"{var} not set: {host_file.name} not checked", f"set {var} (e2b-artifact paths)")
        return None
    if host_file.found is not None:
        report.add(check, "ok", f"{host_file.found} present")
        return host_file.found
    if not root.is_dir():
        where = "not configured (default" if host_file.source == "default" else f"from {host_file.source} ("
        report.add(check, "warn", f"{var} {where} {root} does not exist on this host): {flat} not checked",
                   f"run verify on the orchestrator host, or set {var} as the orchestrator has it")
        return None
    report.add(check, "FAIL", f"{flat} missing ({var} from {host_file.source}); the orchestrator stats it before "
                              "every sandbox start", hint,
               fix=Fix.KERNEL_INSTALL if check == "kernel" else Fix.FIRECRACKER_INSTALL)
    return None


def _check_kernel(report: VerifyReport, kernel: Path, firecracker_version: str, arch: str) -> str | None:
    from .kernel.check import check_kernel

    try:
        result = check_kernel(kernel, firecracker_version=firecracker_version, arch=arch)
    except ArtifactError as exc:
        report.add("kernel", "FAIL", exc.message, exc.hint or f"e2b-artifact kernel check {kernel}")
        return None
    except Exception as exc:  # a bug in the kernel checker must not hide the rest of the report
        report.add("kernel", "warn", f"kernel contents not checked: the kernel check failed internally "
                                     f"({type(exc).__name__}: {exc})", f"e2b-artifact --debug kernel check {kernel}")
        return None
    for f in result.findings:
        hint = f.hint or (f"e2b-artifact kernel check {kernel} --firecracker-version {firecracker_version}"
                          if f.status != "ok" else "")
        report.add(f.check, f.status, f.message, hint, fix=f.fix)
    return result.arch if result.arch in HOST_ARCH_DIRS else None


def _check_snapshot(report: VerifyReport, md: metadata.Metadata | None, arch: str) -> None:
    _check_snapshot_presence(report, md)
    snap = _check_snapfile(report, md, arch)
    _check_memfile(report, md, snap)


def _check_snapshot_presence(report: VerifyReport, md: metadata.Metadata | None) -> None:
    names, bid = _names(report.build_dir), report.build_id
    has_mem = MEMFILE in names or any(MEMFILE + s in names for s in COMPRESSED_SUFFIXES)
    has_snap = SNAPFILE in names
    fs_only = md is not None and md.upstream_filesystem_only
    unused = ("filesystem_only: true: the orchestrator cold-boots this build from its rootfs and never loads "
              "{files} (template_metadata.go IsFilesystemOnly is the resume path's source of truth)")
    unused_hint = f"drop the flag to resume from the snapshot, or e2b-artifact cold-start {bid} to move them aside"
    if has_mem and has_snap:
        report.add("files", "ok", "memfile and snapfile present")
        if fs_only:
            report.add("snapshot", "warn", unused.format(files="memfile and snapfile"), unused_hint)
    elif not has_mem and not has_snap:
        if fs_only:
            report.add("snapshot", "ok", "filesystem-only build (metadata filesystem_only: true): no memfile or "
                                         "snapfile needed, sandboxes cold-boot from rootfs")
        else:
            report.add("snapshot", "warn", NO_SNAPSHOT, 'for a HEAD orchestrator set "filesystem_only": true in '
                                                        "metadata.json; a 2025 orchestrator needs a snapshot")
    else:
        lone, other = (SNAPFILE, MEMFILE) if has_snap else (MEMFILE, SNAPFILE)
        if fs_only:
            report.add("snapshot", "warn", unused.format(files=f"the lone {lone}"), unused_hint)
        else:
            report.add("files", "FAIL", f"{lone} without {other}: they come as a pair",
                       f"e2b-artifact cold-start {bid} (moves the lone file aside; restore undoes it)",
                       fix=Fix.SNAPSHOT_QUARANTINE)


def _check_snapfile(report: VerifyReport, md: metadata.Metadata | None, arch: str) -> snapshot.Snapfile | None:
    path = report.build_dir / SNAPFILE
    if not _present(path):
        return None
    bid = report.build_id
    size = path.stat().st_size if path.is_file() else 0
    if size > limits.SNAPFILE.bytes():
        report.add("snapshot.size", "FAIL", f"snapfile is {size} bytes, over the {limits.SNAPFILE.bytes()} this tool "
                                            f"reads; Firecracker v1.15+ refuse more than {snapshot.MAX_SNAPFILE_BYTES}"
                                            " bytes, v1.7-v1.14 decode at most 10 MiB of state",
                   f"e2b-artifact cold-start {bid}", fix=Fix.SNAPSHOT_QUARANTINE)
        return None
    try:
        data = read_input(path, SNAPFILE, limit=limits.SNAPFILE, missing_hint="check the build directory")
    except ArtifactError as exc:
        report.add("snapshot", "FAIL", exc.message, exc.hint)
        return None
    result = snapshot.check_snapfile(data, firecracker_version=md.firecracker_version if md else None, arch=arch)
    snap = result.snapfile
    report.add("snapshot", "ok", f"snapfile: {snap.era} era, {snap.arch or 'unknown arch'}, {snap.version_label}, "
                                 f"{snap.size} bytes")
    cold = f"e2b-artifact cold-start {bid} (quarantines memfile+snapfile; restore undoes it)"
    hints = {"crc": cold, "size": cold, "magic": cold,
             "arch": f"the snapshot is for {snap.arch}: use a matching host, or {cold}",
             "version": f"run the Firecracker that took the snapshot (template.firecracker_version), or {cold}"}
    for issue in result.issues:
        report.add(f"snapshot.{issue.code}", issue.severity, issue.message,
                   hints.get(issue.code, cold) if issue.severity != "ok" else "",
                   fix=Fix.SNAPSHOT_QUARANTINE if issue.severity == "FAIL" else Fix.NONE)
    return snap


def _check_memfile(report: VerifyReport, md: metadata.Metadata | None, snap: snapshot.Snapfile | None) -> None:
    """The guest memory the memfile provides (its header's size; no header: the Local-storage failure)."""
    d, bid = report.build_dir, report.build_id
    names = _names(d)
    ram_mb = md.ext.get("ram_mb") if md is not None else None
    memory = snapshot.guest_memory(snap, ram_mb << 20 if isinstance(ram_mb, int) and ram_mb > 0 else None)
    hdr: header_mod.Header | None = None
    if _present(d / MEMFILE_HEADER):
        with contextlib.suppress(ArtifactError):  # the header check reports it
            hdr = header_mod.read_header(d / MEMFILE_HEADER)
    has_mem = MEMFILE in names or any(MEMFILE + s in names for s in COMPRESSED_SUFFIXES)
    cold = f"e2b-artifact cold-start {bid} (quarantines memfile+snapfile; restore undoes it)"
    if has_mem and hdr is not None:
        issues = snapshot.check_memory(snap, memory, device_bytes=hdr.size, device="memfile.header size")
    elif has_mem and not _present(d / MEMFILE_HEADER):
        memfile_bytes = (d / MEMFILE).stat().st_size if (d / MEMFILE).is_file() else None
        issues = [snapshot.check_headerless_memfile(snap, memory, memfile_bytes=memfile_bytes)]
        cold = (f"the memfile is unusable without its header (where each block belongs is lost): e2b-artifact "
                f"cold-start {bid} --filesystem-only (moves memfile and snapfile aside, HEAD orchestrators then "
                "cold-boot from rootfs; restore undoes it) or rebuild the template, then restart the orchestrator "
                "(its cache still serves the old entry); upstream's fix: e2b-dev/infra#3248")
    else:
        issues = []
    for issue in issues:
        report.add(f"snapshot.{issue.code}", issue.severity, issue.message, cold if issue.severity != "ok" else "",
                   fix=Fix.SNAPSHOT_QUARANTINE if issue.severity == "FAIL" else Fix.NONE)
    if md is not None:
        verify_metadata.check_against_snapshot(report.add, md, memory=memory,
                                               snapfile_mib=snap.mem_size_mib if snap else None,
                                               memfile_block_size=hdr.block_size if hdr else None)


def _check_manifest(report: VerifyReport, quick: bool, checked: Callable[[str], None],
                    digests: Mapping[str, str] | None = None) -> None:
    try:
        found = manifest.load_manifest(report.build_dir)
    except ArtifactError as exc:
        report.add("manifest", "FAIL", exc.message, exc.hint)
        return
    if found is None:
        report.add("manifest", "warn", f"no {manifest.FILE_NAME}: file integrity not checked",
                   f"e2b-artifact verify --fix {report.build_id} records the current files", fix=Fix.MANIFEST_WRITE)
        return
    try:
        mismatches = manifest.check_manifest(report.build_dir, quick=quick, manifest=found, checked=checked,
                                             digests=digests)
    except ArtifactError as exc:  # an unreadable file: say so, keep the rest of the report
        report.add("manifest", "FAIL", exc.message, exc.hint)
        return
    bad = [m for m in mismatches if m.problem != "unlisted"]
    for m in bad:
        report.add("manifest", "FAIL", m.message,
                   "the file changed after it was built: restore it from a good copy or rebuild; "
                   "for snapshot files, e2b-artifact cold-start " + report.build_id,
                   fix=Fix.SNAPSHOT_QUARANTINE if layout.is_snapshot_name(m.name) else Fix.FILE_RESTORE)
    unlisted = [m.name for m in mismatches if m.problem == "unlisted"]
    if unlisted:
        report.add("manifest", "warn", f"not listed in {manifest.FILE_NAME} (added after the build?): "
                                       + ", ".join(unlisted),
                   f"if they are intended, e2b-artifact verify --fix {report.build_id} adds them",
                   fix=Fix.NONE if bad else Fix.MANIFEST_ADD)  # no new entries while listed files mismatch
    if not bad:
        what = "sizes" if quick else "sizes and BLAKE3"
        report.add("manifest", "ok", f"{len(found.files)} files match ({what}); upstream ignores this extra file")


def _fix(build_dir: Path, settings: Settings, report: VerifyReport) -> list[str]:
    """Safe repairs: metadata in the current form, manifest for new files, cold start on a bad snapshot.

    Decided by the findings' fix codes alone (set where each check is made), never by their messages."""
    fixed: list[str] = []
    codes = {f.fix for f in report.findings}
    md_path = build_dir / metadata.FILE_NAME
    if Fix.METADATA_REWRITE in codes:
        md = metadata.read(md_path)
        original = unused_path(build_dir / (metadata.FILE_NAME + ".orig"))
        shutil.copy2(md_path, original)
        md.write(md_path)
        manifest.update_manifest_entry(build_dir, metadata.FILE_NAME)
        fixed.append(f"rewrote {md_path} in the current form (version 2); original kept as {original}")
    if Fix.SNAPSHOT_QUARANTINE in codes:
        from .coldstart import cold_start

        result = cold_start(build_dir, settings)
        fixed.append(f"snapshot quarantined in {result.quarantine}; undo: {result.restore_command}")
        fixed.extend(f"moved {m.source} -> {m.dest}" for m in result.moves)
    if Fix.MANIFEST_WRITE in codes and manifest.load_manifest(build_dir) is None:
        manifest.write_manifest(build_dir, report.build_id)
        fixed.append(f"wrote {build_dir / manifest.FILE_NAME} from the current files")
    elif Fix.MANIFEST_ADD in codes:
        for m in manifest.check_manifest(build_dir, quick=True):
            if m.problem == "unlisted":
                manifest.update_manifest_entry(build_dir, m.name)
                fixed.append(f"added {m.name} to {manifest.FILE_NAME}")
    return fixed
