"""A build's kernel and Firecracker: verify and boot find them through one lookup, so they agree."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from e2b_artifacts import ArtifactError, ExitCode, Settings, verify
from e2b_artifacts.hostfiles import boot_target, locate_firecracker, locate_kernel
from e2b_artifacts.metadata import EXT_KEY, Metadata

BUILD_ID = "5d0c1f1e-8a55-4a4e-9a8c-2f3b1d7e6c01"
KERNEL = "vmlinux-6.1.158"
FIRECRACKER = "v1.12.1_d990331"


def make_build(storage: Path, arch: str | None = None) -> Path:
    build_dir = storage / BUILD_ID
    build_dir.mkdir(parents=True)
    extra = {EXT_KEY: {"arch": arch}} if arch else {}
    Metadata(build_id=BUILD_ID, kernel_version=KERNEL, firecracker_version=FIRECRACKER, extra=extra).write(
        build_dir / "metadata.json")
    return build_dir


def settings_for(tmp_path: Path) -> Settings:
    return Settings(env={"LOCAL_TEMPLATE_STORAGE_BASE_PATH": str(tmp_path / "templates"),
                         "HOST_KERNELS_DIR": str(tmp_path / "kernels"),
                         "FIRECRACKER_VERSIONS_DIR": str(tmp_path / "fc")})


def put(path: Path, data: bytes = b"\x7fELF") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def verified(settings: Settings, build_dir: Path, check: str) -> list[tuple[str, str]]:
    return [(f.status, f.message) for f in verify(build_dir, settings, quick=True).findings if f.check == check]


@pytest.mark.parametrize(("arch", "arch_dir"), [("aarch64", "arm64"), (None, "amd64")])
def test_per_arch_layout_wins_for_verify_and_boot_alike(tmp_path: Path, arch: str | None, arch_dir: str) -> None:
    settings = settings_for(tmp_path)
    build_dir = make_build(settings.storage, arch)
    put(tmp_path / "kernels" / KERNEL / "vmlinux.bin")  # the flat (2025) layout is there too
    kernel = put(tmp_path / "kernels" / KERNEL / arch_dir / "vmlinux.bin")
    firecracker = put(tmp_path / "fc" / FIRECRACKER / arch_dir / "firecracker")

    target = boot_target(settings, BUILD_ID, acpi="on")
    assert (target.kernel, target.firecracker_bin, target.firecracker_version) == (kernel, firecracker, FIRECRACKER)
    assert (target.rootfs, target.label) == (build_dir / "rootfs.ext4", BUILD_ID)
    assert (target.kernel_has_acpi, target.acpi_note) == (True, "kernel ACPI support set to on by --kernel-acpi")
    assert ("ok", f"{kernel} present") in verified(settings, build_dir, "kernel")
    assert ("ok", f"{firecracker} present") in verified(settings, build_dir, "firecracker")


def test_flat_layout_and_what_is_missing(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    build_dir = make_build(settings.storage)
    flat_kernel = tmp_path / "kernels" / KERNEL / "vmlinux.bin"
    flat_fc = tmp_path / "fc" / FIRECRACKER / "firecracker"
    (tmp_path / "kernels").mkdir()
    (tmp_path / "fc").mkdir()

    assert locate_kernel(settings, KERNEL).found is None and locate_kernel(settings, KERNEL).flat == flat_kernel
    with pytest.raises(ArtifactError, match=re.escape(f"{flat_kernel} does not exist")) as missing:
        boot_target(settings, BUILD_ID, acpi="off")
    assert missing.value.code == ExitCode.BAD_INPUT and "HOST_KERNELS_DIR" in missing.value.hint
    kernel_findings = verified(settings, build_dir, "kernel")
    assert any(s == "FAIL" and m.startswith(f"{flat_kernel} missing") for s, m in kernel_findings), kernel_findings

    put(flat_kernel)
    target = boot_target(settings, BUILD_ID, acpi="off")
    assert target.kernel == flat_kernel and target.kernel_has_acpi is False
    assert target.firecracker_bin == flat_fc and not flat_fc.exists()  # where it would be: QEMU boots without it
    assert ("ok", f"{flat_kernel} present") in verified(settings, build_dir, "kernel")
    assert locate_firecracker(settings, FIRECRACKER).found is None
    put(flat_fc)
    assert locate_firecracker(settings, FIRECRACKER, "aarch64").found == flat_fc


def test_explicit_paths_win_and_bad_requests_are_clean_errors(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    make_build(settings.storage)
    mine = put(tmp_path / "my-vmlinux")
    image = put(tmp_path / "disk.ext4", b"")
    target = boot_target(settings, BUILD_ID, rootfs=image, kernel=mine, firecracker_version="v1.7.0", acpi="off")
    assert (target.kernel, target.rootfs, target.label) == (mine, image, BUILD_ID)
    assert target.firecracker_version == "v1.7.0"
    assert target.firecracker_bin == tmp_path / "fc" / "v1.7.0" / "firecracker"
    bare = boot_target(settings, rootfs=image, kernel=mine, acpi="off")
    assert (bare.label, bare.firecracker_version, bare.firecracker_bin) == ("disk", None, None)
    unknown = boot_target(settings, rootfs=image, kernel=mine)  # acpi auto: the checker cannot read a non-kernel
    assert unknown.kernel_has_acpi is None and unknown.acpi_note and "unknown" in unknown.acpi_note

    with pytest.raises(ArtifactError, match=r"no metadata\.json in") as no_metadata:
        boot_target(settings, "no-such-build")
    assert no_metadata.value.code == ExitCode.BAD_INPUT
    with pytest.raises(ArtifactError, match="give a BUILD-ID") as nothing:
        boot_target(settings)
    assert nothing.value.code == ExitCode.USAGE
    with pytest.raises(ArtifactError, match="no kernel given") as no_kernel:
        boot_target(settings, rootfs=image)
    assert no_kernel.value.code == ExitCode.USAGE
