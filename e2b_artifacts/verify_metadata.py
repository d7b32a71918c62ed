"""``verify``'s metadata checks: how upstream reads metadata.json, and each newer field where it can be judged.

Upstream's own reading (metadata_fields.upstream_reading) decides: version 1 drops every field, one value
of the wrong Go type makes the whole file undecodable. The fields are then checked as upstream checks them
(cmdline_args: ValidateCmdlineArgs; cpu templates: cputemplate.validateFor) and against the snapshot where
its state holds the figure (guest memory: the snapfile's mem_size_mib). The vCPU count is not in a place
of the snapfile this tool reads (``vcpu_states`` comes after the KVM state), so ``vcpu_count`` is only
compared with this tool's own record of it.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from . import metadata_fields as fields
from .findings import Fix, Status
from .metadata import Metadata
from .snapshot import GuestMemory

Add = Callable[..., None]  # VerifyReport.add(check, status, message, hint="", *, fix=Fix.NONE)
CHECK = "metadata"
REWRITE_HINT = "e2b-artifact verify --fix {bid} (rewrites it as version 2, keeps the original)"
# A memory snapshot pins the rootfs drive path, and upstream picks it by the metadata version (V1: the legacy
# per-template path, V2: /fc-vm/rootfs.ext4); the runtime's WithVcpuCount keeps a V1 lineage at V1 for this.
PINNED_PATH = ("a memory snapshot is present and pins the rootfs path that version 1 selects, so rewriting the "
               "file as version 2 would break its resume")


def check_reading(add: Add, md: Metadata, build_id: str, *, memory_snapshot: bool) -> None:
    """The form and upstream's version rule; FAIL where upstream's decoder fails."""
    rewrite = Fix.NONE if memory_snapshot else Fix.METADATA_REWRITE
    hint = REWRITE_HINT.format(bid=build_id)
    if memory_snapshot:
        hint = (f"{PINNED_PATH}: e2b-artifact cold-start {build_id} first (or rebuild), then "
                f"e2b-artifact verify --fix {build_id}")
    dropped = [k for k in fields.NEW_FIELDS if k in md.extra]
    lost = f"; it drops {', '.join(dropped)} too" if dropped else ""
    if md.form == "camel":
        add(CHECK, "FAIL", "hand-written camelCase keys (buildID, kernelVersion, ...): upstream's orchestrator does "
                           f"not read them and treats the build as legacy v1{lost}", hint, fix=rewrite)
    elif md.form == "v1":
        add(CHECK, "warn", f"version {_shown(md.version_as_read)}: upstream reads anything but a number > 1 as legacy "
                           f"version 1 with every other field dropped (old rootfs path, not usable as a FROM "
                           f"base){lost}", hint, fix=rewrite)
    elif md.upstream.problems:
        add(CHECK, "FAIL", "upstream's deserialize cannot decode it (json.Unmarshal into metadata.Template), so "
                           "every start of this build fails: " + "; ".join(md.upstream.problems[:5]),
            "give each field its type (template_metadata.go): numbers without a fraction, booleans as true/false, "
            "string maps of strings")
    else:
        add(CHECK, "ok", f"version {md.upstream.version}; kernel {md.kernel_version}, "
                         f"Firecracker {md.firecracker_version}")
    if md.filesystem_only and md.upstream.dropped and not memory_snapshot:
        add(CHECK, "FAIL", "filesystem_only: true, but upstream drops it with the rest of a version-1 file and "
                           "memory-resumes the build, which has no memory snapshot (MarkFilesystemOnly lifts the "
                           "version to 2 for this reason)", hint, fix=rewrite)


def _shown(version: object) -> str:
    return "missing" if version is None else json.dumps(version)[:40]


def check_fields(add: Add, md: Metadata, *, arch: str) -> None:
    """The newer fields on their own, as upstream judges them when it reads them."""
    if md.upstream.dropped or md.upstream.problems:
        return  # upstream never sees them; said above
    for issue in fields.cmdline_args_issues(md.cmdline_args):
        add(f"{CHECK}.cmdline_args", issue.severity, issue.message,
            "remove the reserved parameters (the orchestrator sets them itself); upstream refuses the whole map")
    for name, tmpl in (("cpu_template", md.cpu_template), ("build_cpu_template", md.build_cpu_template)):
        for issue in fields.cpu_template_issues(name, tmpl, arch):
            add(f"{CHECK}.{name}", issue.severity, issue.message, "a CPU template for the build's architecture")
    if md.fs_quiesced and not md.filesystem_only:
        add(CHECK, "warn", "fs_quiesced: true without filesystem_only: it is only meaningful for a filesystem-only "
                           "snapshot", "")
    vcpu, ours = md.vcpu_count, md.ext.get("vcpu")
    if vcpu is not None and vcpu < 0:
        add(CHECK, "FAIL", f"vcpu_count {vcpu}: a VM has at least one vCPU", "set it to the snapshot's vCPU count")
    elif vcpu is not None and isinstance(ours, int) and not isinstance(ours, bool) and ours != vcpu:
        add(CHECK, "warn", f"vcpu_count {vcpu} (the VM in the snapshot, as the orchestrator recorded it) differs "
                           f"from {fields_ext('vcpu')} {ours}: e2b-artifact register would write {ours} to "
                           "env_builds.vcpu", "register with --vcpu set to the snapshot's count")


def fields_ext(key: str) -> str:
    return f"e2b_artifact.{key}"


def check_against_snapshot(add: Add, md: Metadata, *, memory: GuestMemory | None, snapfile_mib: int | None,
                           memfile_block_size: int | None) -> None:
    """Metadata figures against the snapshot: this tool's RAM record, the prefetch mapping."""
    ram_mb = md.ext.get("ram_mb")
    if snapfile_mib is not None and isinstance(ram_mb, int) and not isinstance(ram_mb, bool) and ram_mb != snapfile_mib:
        status: Status = "FAIL"
        add("snapshot.memory", status, f"{fields_ext('ram_mb')} {ram_mb} differs from the snapfile's mem_size_mib "
                                       f"{snapfile_mib}: env_builds.ram_mb must equal the snapshot's, and "
                                       f"e2b-artifact register would write {ram_mb}",
            f"set {fields_ext('ram_mb')} to {snapfile_mib}, or register with --ram-mb {snapfile_mib}")
    if md.upstream.dropped or md.upstream.problems:
        return
    for issue in fields.prefetch_issues(md.prefetch, memfile_block_size=memfile_block_size,
                                        memory_bytes=memory.bytes if memory else None):
        add(f"{CHECK}.prefetch", issue.severity, issue.message,
            "the orchestrator rewrites the mapping on the next pause or build; nothing breaks without it")
