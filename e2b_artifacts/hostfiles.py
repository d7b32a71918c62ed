"""A build's host files: its kernel and Firecracker binary, found where the orchestrator looks for them.

``verify`` reports what :func:`locate` finds; ``boot`` boots what :func:`boot_target` resolves
with the same lookup, so the two cannot disagree on which kernel a build runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from . import layout, metadata
from .errors import ArtifactError, ExitCode
from .settings import HOST_ARCH_DIRS, Settings, host_file_candidates

KERNELS_VAR = "HOST_KERNELS_DIR"
KERNEL_FILE = "vmlinux.bin"
FIRECRACKER_VAR = "FIRECRACKER_VERSIONS_DIR"
FIRECRACKER_FILE = "firecracker"

AcpiMode = Literal["auto", "on", "off"]


@dataclass(frozen=True)
class HostFile:
    """One lookup of ``<$var>/<version>/[<arch dir>/]<name>``."""

    var: str  # HOST_KERNELS_DIR or FIRECRACKER_VERSIONS_DIR
    version: str
    name: str  # vmlinux.bin or firecracker
    root: Path | None  # the variable's value; None when it is unset
    source: str  # where that value came from: "flag", "env", "env-file:<path>", "default", "unset"
    found: Path | None  # the per-arch path when it is a file, else the flat one when it is; None when neither is

    @property
    def flat(self) -> Path | None:
        """``<$var>/<version>/<name>``: the path messages name when nothing is found (2025 releases' layout)."""
        return None if self.root is None else host_file_candidates(self.root, self.version, self.name)[1]


def locate(settings: Settings, var: str, version: str, name: str, arch: str = "x86_64") -> HostFile:
    """Find a host file the way the orchestrator does: the per-arch path first, then the flat one."""
    resolved = settings[var]
    if resolved.value is None:
        return HostFile(var, version, name, None, resolved.source, None)
    root = Path(resolved.value)
    found = next((c for c in host_file_candidates(root, version, name, arch) if c.is_file()), None)
    return HostFile(var, version, name, root, resolved.source, found)


def locate_kernel(settings: Settings, kernel_version: str, arch: str = "x86_64") -> HostFile:
    return locate(settings, KERNELS_VAR, kernel_version, KERNEL_FILE, arch)


def locate_firecracker(settings: Settings, firecracker_version: str, arch: str = "x86_64") -> HostFile:
    return locate(settings, FIRECRACKER_VAR, firecracker_version, FIRECRACKER_FILE, arch)


def build_arch(md: metadata.Metadata | None) -> str:
    """The guest arch a build records (this tool's metadata extension); x86_64 when it records none."""
    value = md.ext.get("arch") if md is not None else None
    return value if isinstance(value, str) and value in HOST_ARCH_DIRS else "x86_64"


@dataclass(frozen=True)
class BootTarget:
    """What ``boot`` starts: a kernel, a disk, and the Firecracker the build names."""

    kernel: Path
    rootfs: Path
    label: str  # names the console log: the build id, or the image's stem
    firecracker_version: str | None
    firecracker_bin: Path | None  # the binary when found, else where it would be; None without a version
    kernel_has_acpi: bool | None  # None: unknown (booted as without ACPI)
    acpi_note: str | None  # why ``kernel_has_acpi`` has its value
    assemble_from: Path | None = None  # the build whose rootfs is stored compressed: boot assembles its device


def boot_target(settings: Settings, build: str | None = None, *, rootfs: Path | None = None,
                kernel: Path | None = None, firecracker_version: str | None = None,
                acpi: AcpiMode = "auto") -> BootTarget:
    """Resolve a build id or directory (or a bare image with a kernel) to what a boot needs.

    Explicit paths and versions win; the rest comes from the build's metadata.json, then from
    :func:`locate`. ``acpi="auto"`` asks the kernel checker whether the kernel has ACPI.
    """
    kernel_version: str | None = None
    arch = "x86_64"
    assemble_from: Path | None = None
    if build is not None:
        build_dir = settings.build_dir(build)
        meta_file = build_dir / layout.METADATA
        if meta_file.exists():
            md = metadata.read(meta_file)
            kernel_version, arch = md.kernel_version, build_arch(md)
            firecracker_version = firecracker_version or md.firecracker_version
        elif kernel is None:
            raise ArtifactError(f"no {layout.METADATA} in {build_dir}",
                                hint="check the build id, or pass --kernel PATH", code=ExitCode.BAD_INPUT)
        disk, label = rootfs or build_dir / layout.ROOTFS, build_dir.name
        if rootfs is None and not disk.is_file() and any(
                (build_dir / n).is_file() for n in layout.compressed_names(layout.ROOTFS)):
            assemble_from = build_dir
    elif rootfs is not None:
        disk, label = rootfs, rootfs.stem
    else:
        raise ArtifactError("give a BUILD-ID (or build directory), or --rootfs IMAGE with --kernel PATH",
                            hint="e.g. e2b-artifact boot 3f2a... --expect 'envd'", code=ExitCode.USAGE)
    if kernel is None:
        if kernel_version is None:
            raise ArtifactError("no kernel given", hint="pass --kernel PATH", code=ExitCode.USAGE)
        kernel = _required_kernel(settings, kernel_version, arch)
    firecracker_bin = None
    if firecracker_version:
        fc = locate_firecracker(settings, firecracker_version, arch)
        firecracker_bin = fc.found or fc.flat
    if acpi == "auto":
        from .vm.boot import kernel_has_acpi

        has_acpi, acpi_note = kernel_has_acpi(kernel)
    else:
        has_acpi, acpi_note = acpi == "on", f"kernel ACPI support set to {acpi} by --kernel-acpi"
    return BootTarget(kernel=kernel, rootfs=disk, label=label, firecracker_version=firecracker_version,
                      firecracker_bin=firecracker_bin, kernel_has_acpi=has_acpi, acpi_note=acpi_note,
                      assemble_from=assemble_from)


def _required_kernel(settings: Settings, kernel_version: str, arch: str) -> Path:
    root = settings[KERNELS_VAR].path  # raises "HOST_KERNELS_DIR is not set" with its hint
    found = locate_kernel(settings, kernel_version, arch)
    if found.found is None:
        raise ArtifactError(f"{found.flat} does not exist", hint=f"put the kernel there, fix {KERNELS_VAR} "
                            f"(now {root}), or pass --kernel PATH", code=ExitCode.BAD_INPUT)
    return found.found
