"""kernel check / extract / list / fetch: crafted headers for the formats, real kernels for the verdicts.

The real kernels come from tests/kernels.py (built once into ~/.cache/e2b-artifact/test-kernels/);
fetch runs against a real HTTP server on 127.0.0.1.
"""

from __future__ import annotations

import bz2
import datetime as dt
import gzip
import hashlib
import http.server
import json
import lzma
import re
import socket
import struct
import threading
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from e2b_artifacts.errors import ArtifactError
from e2b_artifacts.kernel import image as kernel_image
from e2b_artifacts.kernel.catalog import CatalogKernel, load_catalog
from e2b_artifacts.kernel.catalog import fetch as catalog_fetch
from e2b_artifacts.kernel.check import check_kernel, extract
from e2b_artifacts.kernel.config import ConfigFile, OptionReader, ikconfig, sidecar_configs
from e2b_artifacts.kernel.rules import load_rules
from e2b_artifacts.settings import HOST_ARCH_DIRS
from e2b_artifacts.versions import parse_firecracker_version
from e2b_artifacts.vm import boot
from tests import kernels
from tests.conftest import REPO, assert_clean_error, cli

FC_OLD, FC_NEW = "v1.7.0", "v1.12.1_d990331"
BANNER = b"Linux version 6.1.0-crafted (test@host) #1\n\0"


# ----------------------------------------------------------------------------------------- crafted files


def craft_elf(*, machine: int = 62, entry: int = 0x1000000, pvh: bool = True, elf_class: int = 2,
              body: bytes = BANNER) -> bytes:
    note = struct.pack("<III", 4, 4, 18) + b"Xen\0" + struct.pack("<I", 0x1000100)
    phnum = 2 if pvh else 1
    data_off = 64 + 56 * phnum
    total = data_off + len(note) + len(body)
    ident = b"\x7fELF" + bytes([elf_class, 1, 1]) + bytes(9)
    header = struct.pack("<16sHHIQQQIHHHHHH", ident, 2, machine, 1, entry, 64, 0, 0, 64, 56, phnum, 64, 0, 0)
    phdrs = struct.pack("<IIQQQQQQ", 1, 5, 0, 0xFFFFFFFF81000000, 0x1000000, total, total, 0x200000)
    if pvh:
        phdrs += struct.pack("<IIQQQQQQ", 4, 4, data_off, 0, 0, len(note), len(note), 4)
    return header + phdrs + note + body


def craft_bzimage(payload: bytes, trailer: int, *, protocol: int = 0x020F, loadflags: int = 0x01,
                  code32_start: int = 0x100000, xloadflags: int = 0x01) -> bytes:
    """A bzImage as the kernel's arch/x86/boot/header.S lays it out (the fields Firecracker's loader reads)."""
    setup = bytearray(1024)
    setup[0:2] = b"MZ"
    setup[0x1F1] = 1  # setup_sects
    setup[0x1FE:0x200] = b"\x55\xaa"
    setup[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", setup, 0x206, protocol)
    setup[0x211] = loadflags
    struct.pack_into("<I", setup, 0x214, code32_start)
    struct.pack_into("<H", setup, 0x236, xloadflags)
    struct.pack_into("<II", setup, 0x248, 0x40, len(payload) + 4)
    return bytes(setup) + bytes(0x40) + payload + struct.pack("<I", trailer)


def lz4_legacy(data: bytes) -> bytes:
    import lz4.block  # type: ignore[import-untyped,import-not-found,unused-ignore]

    out = [kernel_image.LZ4_LEGACY_MAGIC]
    for i in range(0, len(data), kernel_image.LZ4_LEGACY_BLOCK):
        block = lz4.block.compress(data[i:i + kernel_image.LZ4_LEGACY_BLOCK], store_size=False)
        out.append(struct.pack("<I", len(block)) + block)
    return b"".join(out)


def zstd(data: bytes) -> bytes:
    import zstandard

    return zstandard.ZstdCompressor().compress(data)


COMPRESSORS = {
    "gzip": gzip.compress,
    "xz": lambda d: lzma.compress(d, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32),
    "lzma": lambda d: lzma.compress(d, format=lzma.FORMAT_ALONE),
    "bzip2": bz2.compress,
    "zstd": zstd,
    "lz4": lz4_legacy,
}


def config_text(**options: str) -> str:
    base = {"VIRTIO_MMIO": "y", "VIRTIO_BLK": "y", "EXT4_FS": "y", "DEVTMPFS": "y", "SERIAL_8250_CONSOLE": "y",
            "VIRTIO_NET": "y", "KVM_GUEST": "y", **options}
    return "".join(f"CONFIG_{k}={v}\n" if v != "n" else f"# CONFIG_{k} is not set\n" for k, v in base.items())


def statuses(report: Any) -> dict[str, str]:
    return {f.check: f.status for f in report.findings}


def one_line_error(proc: Any, code: int) -> None:
    assert proc.returncode == code, proc.stderr
    lines = proc.stderr.strip().splitlines()  # progress lines may come first
    assert lines[-2].startswith("error: ") and lines[-1].startswith("hint: "), proc.stderr
    assert sum(line.startswith("error: ") for line in lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr


# ----------------------------------------------------------------------------------------- formats


def test_x86_elf_vmlinux_with_pvh_note(tmp_path: Path) -> None:
    k = tmp_path / "vmlinux"
    k.write_bytes(craft_elf())
    fmt = kernel_image.identify(k.read_bytes())
    assert (fmt.kind, fmt.arch, fmt.problems) == ("elf", "x86_64", ())
    assert fmt.elf is not None and fmt.elf.pvh
    report = check_kernel(k)
    assert statuses(report)["kernel.format"] == "ok"
    assert "PVH entry note present" in report.findings[0].message
    assert report.version == "Linux version 6.1.0-crafted (test@host) #1"
    assert kernel_image.identify(craft_elf(pvh=False)).elf.pvh is False  # type: ignore[union-attr]


@pytest.mark.parametrize(("elf", "expected"), [
    (craft_elf(entry=0x1000), "Kernel Loader: entry point 0x1000 below 0x100000"),
    (craft_elf(elf_class=1), "Kernel Loader: invalid ELF class or byte order"),
])
def test_elf_the_loader_refuses(tmp_path: Path, elf: bytes, expected: str) -> None:
    k = tmp_path / "vmlinux"
    k.write_bytes(elf)
    report = check_kernel(k, arch="x86_64")
    assert any(f.check == "kernel.format" and f.status == "FAIL" and expected in f.message for f in report.findings)


def test_wrong_arch_and_arm64_image(tmp_path: Path) -> None:
    image = bytearray(4096)
    struct.pack_into("<I", image, 0x38, 0x644D5241)
    image[100:100 + len(BANNER)] = BANNER
    k = tmp_path / "Image"
    k.write_bytes(bytes(image))
    report = check_kernel(k, arch="x86_64")
    assert any(f.status == "FAIL" and "arm64 Image for aarch64; the guest is x86_64" in f.message
               for f in report.findings)
    on_arm = check_kernel(k, arch="aarch64", firecracker_version=FC_OLD)
    assert statuses(on_arm)["kernel.format"] == "ok"
    assert on_arm.discovery == "device-tree" and statuses(on_arm)["kernel.devices"] == "ok"
    arm_elf = tmp_path / "vmlinux-arm"
    arm_elf.write_bytes(craft_elf(machine=183))
    assert any("boots the arm64 Image" in f.message for f in check_kernel(arm_elf).findings if f.status == "FAIL")
    x86 = tmp_path / "vmlinux-x86"
    x86.write_bytes(craft_elf())
    assert any("for x86_64; the guest is aarch64" in f.message for f in check_kernel(x86, arch="aarch64").findings)


def test_not_a_kernel_and_gzip(tmp_path: Path) -> None:
    junk = tmp_path / "junk"
    junk.write_bytes(b"hello world\n" * 100)
    report = check_kernel(junk)
    assert report.kind == "unknown" and not report.ok and len(report.findings) == 1
    gz = tmp_path / "vmlinuz.gz"
    gz.write_bytes(gzip.compress(craft_elf()))
    report = check_kernel(gz)
    assert report.kind == "gzip" and statuses(report)["kernel.format"] == "FAIL"
    assert report.version == "Linux version 6.1.0-crafted (test@host) #1"  # read from the decompressed ELF


@pytest.mark.parametrize("method", sorted(COMPRESSORS))
def test_bzimage_payload_every_compression(tmp_path: Path, method: str) -> None:
    # lz4: 9 MiB, more than one 8 MiB block of the legacy frame
    elf = craft_elf(body=BANNER + bytes(range(256)) * ((9 << 20) // 256 if method == "lz4" else 256))
    bz = tmp_path / "bzImage"
    bz.write_bytes(craft_bzimage(COMPRESSORS[method](elf), len(elf)))
    report = check_kernel(bz)
    fmt = next(f for f in report.findings if f.check == "kernel.format")
    assert report.kind == "bzimage" and fmt.status == "FAIL" and "kernel extract" in fmt.hint
    assert report.version == "Linux version 6.1.0-crafted (test@host) #1"
    out = tmp_path / "vmlinux"
    assert extract(bz, out) == (method, len(elf))
    assert out.read_bytes() == elf
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp left


def test_extract_refuses_a_non_bzimage(tmp_path: Path) -> None:
    k = tmp_path / "vmlinux"
    k.write_bytes(craft_elf())
    proc = cli("kernel", "extract", k, "-o", tmp_path / "out")
    one_line_error(proc, 3)
    assert "is not a bzImage" in proc.stderr and not (tmp_path / "out").exists()


def test_missing_kernel_is_one_error_line(tmp_path: Path) -> None:
    proc = cli("kernel", "check", tmp_path / "nope", "--json")
    one_line_error(proc, 3)
    assert json.loads(proc.stdout)["exit_code"] == 3


# ----------------------------------------------------------------------------------------- config sources


def test_ikconfig_and_sidecar_order(tmp_path: Path) -> None:
    embedded = config_text(VIRTIO_MMIO_CMDLINE_DEVICES="y", ACPI="n").encode()
    k = tmp_path / "vmlinux-6.1.0-x"
    k.write_bytes(craft_elf(body=BANNER + b"\0IKCFG_ST" + gzip.compress(embedded) + b"IKCFG_ED\0"))
    assert ikconfig(k.read_bytes()) == embedded
    assert sidecar_configs(k) == [tmp_path / "vmlinux-6.1.0-x.config", tmp_path / "config-6.1.0-x",
                                  tmp_path / "config"]
    other = tmp_path / "other.config"
    other.write_text(config_text(VIRTIO_MMIO="m"))
    report = check_kernel(k, config=other)
    assert report.config is not None and report.config.origin == "IKCONFIG"
    assert any(f.status == "warn" and "differs from the config embedded" in f.message for f in report.findings)
    assert report.option("VIRTIO_MMIO").value == "y"

    plain = tmp_path / "vmlinuz-6.1.0-x"
    plain.write_bytes(craft_elf())
    for name in ("config", "config-6.1.0-x", "vmlinuz-6.1.0-x.config"):  # later ones win: tried first
        (tmp_path / name).write_text(config_text(ACPI="y", VIRTIO_MMIO_CMDLINE_DEVICES="n") + f"# {name}\n")
        got = check_kernel(plain, firecracker_version=FC_NEW)
        assert got.config is not None and got.config.origin == f"sidecar {tmp_path / name}"
        assert got.discovery == "acpi" and got.option("ACPI").how() == f"decided by config: sidecar {name}"
    assert check_kernel(plain, config=other).config.origin == f"--config {other}"  # type: ignore[union-attr]


@pytest.mark.parametrize(("cmdline", "acpi", "fc", "status", "path"), [
    ("y", "n", FC_OLD, "ok", "cmdline"),
    ("y", "n", FC_NEW, "ok", "cmdline"),
    ("y", "n", None, "ok", "cmdline"),
    ("n", "y", FC_OLD, "FAIL", None),
    ("n", "y", "v1.8.0", "ok", "acpi"),
    ("n", "y", FC_NEW, "ok", "acpi"),
    ("n", "y", None, "warn", "acpi"),
    ("y", "y", FC_OLD, "ok", "cmdline"),
    ("y", "y", FC_NEW, "ok", "acpi"),
    ("n", "n", FC_NEW, "FAIL", None),
])
def test_device_discovery_rule(tmp_path: Path, cmdline: str, acpi: str, fc: str | None, status: str,
                               path: str | None) -> None:
    k = tmp_path / "vmlinux"
    k.write_bytes(craft_elf())
    (tmp_path / "vmlinux.config").write_text(config_text(VIRTIO_MMIO_CMDLINE_DEVICES=cmdline, ACPI=acpi))
    report = check_kernel(k, firecracker_version=fc)
    found = next(f for f in report.findings if f.check == "kernel.devices")
    assert (found.status, report.discovery, found.decided_by) == (status, path, "config")
    if status == "FAIL":
        assert "virtio-mmio: probe of virtio-mmio.0 failed with error -22" in found.message and found.hint


@pytest.mark.parametrize(("cmdline", "pci", "warned"), [("n", "n", True), ("n", "y", False), ("y", "n", False)])
def test_acpi_only_kernel_without_pci_is_warned(tmp_path: Path, cmdline: str, pci: str, warned: bool) -> None:
    """Measured under QEMU microvm: Linux 6.1 with ACPI but no PCI cannot load the ACPI tables."""
    k = tmp_path / "vmlinux"
    k.write_bytes(craft_elf())
    (tmp_path / "vmlinux.config").write_text(config_text(VIRTIO_MMIO_CMDLINE_DEVICES=cmdline, ACPI="y", PCI=pci))
    report = check_kernel(k, firecracker_version=FC_NEW)
    caveats = [f for f in report.findings if f.check == "kernel.acpi-pci"]
    assert next(f for f in report.findings if f.check == "kernel.devices").status == "ok"
    if warned:
        assert [(f.status, f.decided_by) for f in caveats] == [("warn", "config")]
        assert "CONFIG_PCI is not set" in caveats[0].message and "CONFIG_PCI=y" in caveats[0].hint
    else:
        assert caveats == []


def test_module_is_not_enough_and_says_what_the_user_sees(tmp_path: Path) -> None:
    k = tmp_path / "vmlinux"
    k.write_bytes(craft_elf())
    config = config_text(VIRTIO_MMIO="m", EXT4_FS="n", VIRTIO_MMIO_CMDLINE_DEVICES="y")
    (tmp_path / "vmlinux.config").write_text(config)
    found = {f.check: f for f in check_kernel(k).findings}
    mmio = found["kernel.virtio-mmio"]
    assert mmio.status == "FAIL" and "CONFIG_VIRTIO_MMIO=m" in mmio.message
    # No ok line may contradict that FAIL: the command-line path finds nothing without the driver.
    assert found["kernel.devices"].status == "FAIL"
    assert found["kernel.devices"].message.startswith("no devices found: the virtio-mmio driver is not built in")
    assert "VFS: Unable to mount root fs" in found["kernel.rootfs-ext4"].message
    assert found["kernel.rootfs-ext4"].hint == "rebuild with CONFIG_EXT4_FS=y"


def test_firecracker_versions() -> None:
    assert parse_firecracker_version("v1.12.1_d990331") == (1, 12, 1)
    assert parse_firecracker_version("v1.7.0") == (1, 7, 0)
    assert parse_firecracker_version("1.10") == (1, 10, 0)
    for missing in ("latest", "", None):
        assert parse_firecracker_version(missing) is None
    assert parse_firecracker_version("v1.8.0") >= (1, 8) > parse_firecracker_version("v1.7.9")  # type: ignore[operator]


def test_packaging_lists_every_package_and_ships_kernels_data() -> None:
    tool = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    on_disk = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "e2b_artifacts").rglob("__init__.py")}
    assert set(tool["packages"]) == on_disk | {"e2b_artifacts.kernels"}
    assert tool["package-dir"]["e2b_artifacts.kernels"] == "kernels"
    assert tool["package-data"]["e2b_artifacts.kernels"] == ["*.json"]
    assert {r.option for r in load_rules().rules} <= set(load_rules().evidence)


# ----------------------------------------------------------------------------------------- bzImage boot (1.17+)
# Firecracker PR #6037 (first in 1.17): load_kernel (src/vmm/src/arch/x86_64) tries linux-loader's Elf::load and,
# on InvalidElfMagicNumber, BzImage::load (linux-loader src/loader/x86_64/bzimage/mod.rs), then enters at
# code32_start + 0x200 with the 64-bit boot protocol. Before 1.17 the x86_64 loader is ELF only.


@pytest.mark.parametrize(("fc", "status"), [
    ("v1.14.1_431f1fc", "FAIL"),  # infra's default: E2B's build of 1.14.1
    ("v1.14-0.2.0", "FAIL"),  # runtime's default: E2B's fork of the 1.14 line
    ("v1.16.1", "FAIL"),
    (None, "FAIL"),  # every released E2B Firecracker is older than 1.17: no version is read as older
    ("v1.17.0", "ok"),
    ("v1.17.0_abcdef1", "ok"),
    ("v1.17-0.1.0", "ok"),
    ("v1.18.2", "ok"),
])
def test_bzimage_boots_from_firecracker_1_17(tmp_path: Path, fc: str | None, status: str) -> None:
    elf = craft_elf()
    bz = tmp_path / "bzImage"
    bz.write_bytes(craft_bzimage(gzip.compress(elf), len(elf)))
    (tmp_path / "bzImage.config").write_text(config_text(VIRTIO_MMIO_CMDLINE_DEVICES="y"))
    report = check_kernel(bz, firecracker_version=fc)
    fmt = [f for f in report.findings if f.check == "kernel.format"]
    assert [f.status for f in fmt] == [status], fmt
    if status == "FAIL":
        assert "Invalid Elf magic number" in fmt[0].message and "bzImage boot arrived in v1.17" in fmt[0].message
        assert fmt[0].hint.startswith(f"e2b-artifact kernel extract {bz}") and fmt[0].fix.value == "kernel.extract"
        assert ("a Firecracker v1.17 or newer would boot it" in fmt[0].message) is (fc is None)
    else:
        assert f"Firecracker {fc} boots a bzImage directly" in fmt[0].message
    # Either way the options are read from the payload, as for every bzImage.
    assert statuses(report)["kernel.virtio-mmio"] == "ok"


@pytest.mark.parametrize(("fields", "expected"), [
    ({"protocol": 0x020B, "xloadflags": 0}, "no 64-bit entry point (XLF_KERNEL_64 not set; boot protocol 2.11)"),
    ({"xloadflags": 0}, "no 64-bit entry point"),
    ({"loadflags": 0}, "Kernel Loader: Invalid bzImage"),  # a zImage: BzImage::load wants LOADED_HIGH
    ({"code32_start": 0x10000}, "Kernel Loader: Invalid kernel start address"),  # below HIMEM_START
])
def test_bzimage_the_1_17_loader_refuses(tmp_path: Path, fields: dict[str, int], expected: str) -> None:
    elf = craft_elf()
    bz = tmp_path / "bzImage"
    bz.write_bytes(craft_bzimage(gzip.compress(elf), len(elf), **fields))
    fmt = [f for f in check_kernel(bz, firecracker_version="v1.17.0").findings if f.check == "kernel.format"]
    assert [f.status for f in fmt] == ["FAIL"] and expected in fmt[0].message, fmt


def test_kernel_check_firecracker_version_that_names_nothing_is_a_usage_error(tmp_path: Path) -> None:
    k = tmp_path / "vmlinux"
    k.write_bytes(craft_elf())
    proc = cli("kernel", "check", k, "--firecracker-version", "foo")
    one_line_error(proc, 2)
    assert "'foo' is not a Firecracker version" in proc.stderr


# ----------------------------------------------------------------------------------------- support window
# Firecracker docs/kernel-policy.md, table "Guest Kernel": 5.10 from v1.0.0 until at least 2024-01-31, 6.1 from
# v1.9.0 until at least 2026-09-02. Past the date Firecracker may stop validating the line: a warning, never a FAIL.


def _banner(version: str) -> bytes:
    return f"Linux version {version} (test@host) #1\n\0".encode()


@pytest.mark.parametrize(("version", "fc", "today", "status", "said"), [
    ("6.1.158", "v1.14.1_431f1fc", "2026-09-02", "ok", "6.1 guests are in Firecracker's support window "
                                                        "(until at least 2026-09-02, from v1.9.0)"),
    ("6.1.158", "v1.14.1_431f1fc", "2026-12-02", "warn", "past the minimum end of support in Firecracker's kernel "
                                                         "policy (2026-09-02; today is 2026-12-02)"),
    ("6.1.0-57-cloud-amd64", None, "2026-12-02", "warn", "6.1 guests are past the minimum end of support"),
    ("5.10.223", "v1.10.1", "2026-12-02", "warn", "5.10 guests are past the minimum end of support"),
    ("6.1.102", "v1.8.0", "2026-01-01", "warn", "predates its validation of 6.1 guests (from v1.9.0)"),
    ("6.18.39", "v1.16.1", "2026-12-02", "ok", "with no end date stated yet"),
    ("6.6.50", None, "2026-12-02", "warn", "Linux 6.6 is not a guest line Firecracker's kernel policy validates"),
])
def test_guest_support_window(tmp_path: Path, version: str, fc: str | None, today: str, status: str,
                              said: str) -> None:
    k = tmp_path / "vmlinux"
    k.write_bytes(craft_elf(body=_banner(version)))
    (tmp_path / "vmlinux.config").write_text(config_text(VIRTIO_MMIO_CMDLINE_DEVICES="y"))
    report = check_kernel(k, firecracker_version=fc, today=dt.date.fromisoformat(today))
    found = [f for f in report.findings if f.check == "kernel.support"]
    assert [f.status for f in found] == [status] and said in found[0].message, found
    if status == "warn" and "past" in said and version.startswith("6.1"):
        assert found[0].hint == "plan the move to 6.18 (validated from Firecracker v1.16.1)"
    assert report.ok  # a support warning never fails the check


# ----------------------------------------------------------------------------------------- payload unreadable


def _undecodable_bzimage(tmp_path: Path) -> Path:
    """A bzImage whose xz payload is cut short: nothing can be read from the kernel itself."""
    elf = craft_elf(body=BANNER + bytes(range(256)) * 64)
    payload = lzma.compress(elf, format=lzma.FORMAT_XZ)
    bz = tmp_path / "vmlinuz-6.1.0-x"
    bz.write_bytes(craft_bzimage(payload[:len(payload) // 2], len(elf)))
    with pytest.raises(ArtifactError, match="the xz payload ends before its stream does"):
        kernel_image.decompress_bzimage(bz.read_bytes())
    return bz


def test_config_decides_every_option_when_the_payload_cannot_be_read(tmp_path: Path) -> None:
    bz = _undecodable_bzimage(tmp_path)
    bare = check_kernel(bz, firecracker_version=FC_NEW)
    payload = [f for f in bare.findings if f.check == "kernel.payload"]
    assert [f.status for f in payload] == ["warn"] and "options not checked" in payload[0].message
    assert "--config FILE" in payload[0].hint
    assert not [f for f in bare.findings if f.decided_by]  # nothing guessed

    config = tmp_path / "kernel.config"
    config.write_text(config_text(VIRTIO_MMIO_CMDLINE_DEVICES="n", ACPI="y", PCI="y"))
    rules = load_rules()
    for given in (config, None):  # --config, then the same file as Debian's /boot sidecar config-<version>
        if given is None:
            (tmp_path / "config-6.1.0-x").write_text(config.read_text())
        report = check_kernel(bz, firecracker_version=FC_NEW, config=given)
        decided = {f.check: f for f in report.findings if f.decided_by}
        assert {f"kernel.{r.id}" for r in rules.rules if "x86_64" in r.arch} | {"kernel.devices"} <= set(decided)
        assert {f.decided_by for f in decided.values()} == {"config"}
        assert all(f.status == "ok" for f in decided.values()), decided
        assert report.discovery == "acpi"
        assert [f.check for f in report.findings if f.status == "FAIL"] == ["kernel.format"]  # a bzImage, FC < 1.17
        assert any(f.check == "kernel.payload" and "every option is decided by" in f.message
                   for f in report.findings)


# ----------------------------------------------------------------------------------------- real kernels

# variant -> {firecracker: (kernel.devices status, discovery path, decided by)}
VERDICTS: dict[str, dict[str, tuple[str, str | None, str]]] = {
    "cmdline-ikconfig": {FC_OLD: ("ok", "cmdline", "config"), FC_NEW: ("ok", "cmdline", "config")},
    "cmdline-noikconfig": {FC_OLD: ("ok", "cmdline", "symbol"), FC_NEW: ("ok", "cmdline", "symbol")},
    "nocmdline-noacpi": {FC_OLD: ("FAIL", None, "config"), FC_NEW: ("FAIL", None, "config")},
    "acpi-nocmdline": {FC_OLD: ("FAIL", None, "config"), FC_NEW: ("ok", "acpi", "config")},
}


def alone(kernel: Path, tmp_path: Path) -> Path:
    """``kernel`` seen from a directory without sidecar configs (the build dir has its ``config``)."""
    link = tmp_path / "alone" / "vmlinux"
    link.parent.mkdir(exist_ok=True)
    link.symlink_to(kernel)
    return link


class _Built(dict[str, kernels.BuiltKernel]):
    """variant -> BuiltKernel, looked up (or built) on first use only."""

    def __missing__(self, variant: str) -> kernels.BuiltKernel:
        self[variant] = kernels.test_kernel(variant)
        return self[variant]


_BUILT = _Built()


@pytest.fixture
def built() -> dict[str, kernels.BuiltKernel]:
    return _BUILT


@pytest.mark.parametrize("variant", sorted(VERDICTS))
@pytest.mark.parametrize("fc", [FC_OLD, FC_NEW])
def test_real_kernel_verdicts(built: dict[str, kernels.BuiltKernel], variant: str, fc: str, tmp_path: Path) -> None:
    proc = cli("kernel", "check", alone(built[variant].vmlinux, tmp_path), "--firecracker-version", fc, "--json")
    doc = json.loads(proc.stdout)
    devices = next(f for f in doc["findings"] if f["check"] == "kernel.devices")
    status, path, decided = VERDICTS[variant][fc]
    assert (devices["status"], doc["device_discovery"], devices["decided_by"]) == (status, path, decided), devices
    assert proc.returncode == (0 if status == "ok" else 1)
    assert doc["ok"] is (status == "ok")
    by_check = {f["check"]: f for f in doc["findings"]}
    assert by_check["kernel.format"]["status"] == "ok"
    assert "PVH entry note present" in by_check["kernel.format"]["message"]
    assert by_check["kernel.version"]["message"].startswith("Linux version 6.1.")
    for check in ("kernel.virtio-mmio", "kernel.virtio-blk", "kernel.rootfs-ext4", "kernel.devtmpfs"):
        assert by_check[check]["status"] == "ok" and by_check[check]["decided_by"] == decided
    if variant == "cmdline-noikconfig":
        assert "vm_cmdline_set in .symtab" in devices["message"]
        assert by_check["kernel.config"]["status"] == "warn"


@pytest.mark.parametrize("variant", [v for v in kernels.VARIANTS if v != "cmdline-noikconfig"])
def test_ikconfig_is_the_kernels_own_config_byte_for_byte(built: dict[str, kernels.BuiltKernel], variant: str) -> None:
    k = built[variant]
    assert ikconfig(k.vmlinux.read_bytes()) == k.config.read_bytes()
    report = check_kernel(k.vmlinux)
    assert report.config is not None and report.config.origin == "IKCONFIG"
    assert report.config.text == k.config.read_bytes()


def test_no_ikconfig_in_the_noikconfig_kernel(built: dict[str, kernels.BuiltKernel]) -> None:
    assert ikconfig(built["cmdline-noikconfig"].vmlinux.read_bytes()) is None


@pytest.mark.parametrize("variant", kernels.VARIANTS)
def test_extracted_bzimage_checks_like_the_vmlinux(built: dict[str, kernels.BuiltKernel], variant: str,
                                                   tmp_path: Path) -> None:
    k = built[variant]
    out = tmp_path / "vmlinux"
    proc = cli("kernel", "extract", k.bzimage, "-o", out, "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["compression"] in ("gzip", "xz", "zstd", "lz4")
    vmlinux = alone(k.vmlinux, tmp_path)
    for fc in (FC_OLD, FC_NEW):
        from_vmlinux = check_kernel(vmlinux, firecracker_version=fc)
        from_bzimage = check_kernel(out, firecracker_version=fc)
        if variant == "cmdline-noikconfig":
            # The bzImage payload is objcopy -S'd (no .symtab): decided by strings, same verdicts.
            assert statuses(from_bzimage) == statuses(from_vmlinux)
            assert {f.decided_by for f in from_bzimage.findings if f.check == "kernel.devices"} == {"string"}
        else:
            assert [f.to_dict() for f in from_bzimage.findings] == [f.to_dict() for f in from_vmlinux.findings]
        assert from_bzimage.discovery == from_vmlinux.discovery


@pytest.mark.parametrize("variant", [v for v in kernels.VARIANTS if v != "cmdline-noikconfig"])
def test_symbol_and_string_evidence_agree_with_the_config(built: dict[str, kernels.BuiltKernel], variant: str) -> None:
    k = built[variant]
    data = k.vmlinux.read_bytes()
    elf = kernel_image.parse_elf(data)
    rules = load_rules()
    by_config = OptionReader(data, ConfigFile("x", k.config.read_bytes()), None, rules.evidence)
    by_symbol = OptionReader(data, None, kernel_image.elf_symbol_names(data, elf), rules.evidence)
    by_string = OptionReader(data, None, None, rules.evidence)
    for name in rules.evidence:
        built_in = by_config(name).value == "y"
        assert by_symbol(name).decided_by == "symbol" and (by_symbol(name).value == "y") is built_in, name
        if by_string(name).decided_by == "string":
            assert (by_string(name).value == "y") is built_in, name


def test_boot_asks_the_checker_for_acpi(built: dict[str, kernels.BuiltKernel], tmp_path: Path) -> None:
    acpi, note = boot.kernel_has_acpi(built["acpi-nocmdline"].vmlinux)
    assert acpi is True and note == "kernel: CONFIG_ACPI=y (decided by config: IKCONFIG)"
    acpi, note = boot.kernel_has_acpi(alone(built["cmdline-noikconfig"].vmlinux, tmp_path))
    assert acpi is False and note is not None and "decided by symbol" in note


@pytest.mark.parametrize(("cmdline", "pci", "offered", "said"), [
    ("y", "y", True, None),
    ("y", "n", False, "acpi=off through the virtio_mmio.device= path"),  # QEMU's tables need PCI; cmdline works
    ("n", "n", True, "may fail where Firecracker's may not"),  # no other path: boot it as Firecracker would
])
def test_boot_offers_acpi_only_where_qemu_tables_can_load(tmp_path: Path, cmdline: str, pci: str, offered: bool,
                                                          said: str | None) -> None:
    k = tmp_path / "vmlinux"
    k.write_bytes(craft_elf())
    (tmp_path / "vmlinux.config").write_text(config_text(VIRTIO_MMIO_CMDLINE_DEVICES=cmdline, ACPI="y", PCI=pci))
    acpi, note = boot.kernel_has_acpi(k)
    assert acpi is offered and note is not None and note.startswith("kernel: CONFIG_ACPI=y (decided by config")
    if said is None:
        assert "CONFIG_PCI" not in note
    else:
        assert said in note and "CONFIG_PCI is not set" in note


def test_debian_cloud_kernel(tmp_path: Path) -> None:
    deb = kernels.debian_cloud_kernel()
    bz = check_kernel(deb.vmlinuz, firecracker_version=FC_NEW)
    assert bz.kind == "bzimage" and statuses(bz)["kernel.format"] == "FAIL"
    out = tmp_path / "vmlinux"
    assert extract(deb.vmlinuz, out)[0] in ("lz4", "xz")
    report = check_kernel(out, firecracker_version=FC_NEW, config=deb.config)
    mmio = next(f for f in report.findings if f.check == "kernel.virtio-mmio")
    assert mmio.status == "FAIL" and mmio.decided_by == "config"
    assert mmio.message.startswith("CONFIG_VIRTIO_MMIO=m (a module is not loaded")
    devices = next(f for f in report.findings if f.check == "kernel.devices")
    assert devices.status == "FAIL" and "through ACPI" in devices.message  # not "ok ... found through ACPI"
    assert report.config is not None and report.config.text == deb.config.read_bytes()
    # Without the config the stripped payload still tells: the driver is not built in.
    alone = next(f for f in check_kernel(out).findings if f.check == "kernel.virtio-mmio")
    assert alone.status == "FAIL" and alone.decided_by == "string"
    # The shipped /boot layout is found as a sidecar (config-<version> beside vmlinuz-<version>).
    assert bz.config is not None and bz.config.origin == f"sidecar {deb.config}"


# ----------------------------------------------------------------------------------------- fetch


class KernelServer(http.server.ThreadingHTTPServer):
    """Serves one file at /k/<name>; optionally cuts the first response, optionally without Range."""

    def __init__(self, payload: bytes, *, cut_at: int | None = None, ranges: bool = True) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.payload = payload
        self.cut_at = cut_at
        self.ranges = ranges
        self.requests: list[str | None] = []  # the Range header of each GET

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/k"


class _Handler(http.server.BaseHTTPRequestHandler):
    server: KernelServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        srv = self.server
        if not self.path.startswith("/k/vmlinux-test"):
            self.send_error(404)
            return
        wanted = self.headers.get("Range")
        srv.requests.append(wanted)
        start = 0
        m = re.fullmatch(r"bytes=(\d+)-", wanted or "")
        if m and srv.ranges:
            start = int(m.group(1))
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(srv.payload) - 1}/{len(srv.payload)}")
        else:
            self.send_response(200)
        body = srv.payload[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if srv.cut_at is not None:
            cut, srv.cut_at = srv.cut_at, None
            self.wfile.write(body[:cut])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        self.wfile.write(body)


@pytest.fixture(scope="module")
def payload() -> bytes:
    return _BUILT["cmdline-ikconfig"].vmlinux.read_bytes()


@pytest.fixture
def server_factory() -> Iterator[Any]:
    started: list[KernelServer] = []

    def start(payload: bytes, **kw: Any) -> KernelServer:
        srv = KernelServer(payload, **kw)
        threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        started.append(srv)
        return srv

    yield start
    for srv in started:
        srv.shutdown()
        srv.server_close()


def listing(root: Path) -> dict[str, int | None]:
    return {str(p.relative_to(root)): (p.stat().st_size if p.is_file() else None) for p in sorted(root.rglob("*"))}


def fetch(root: Path, *args: str) -> Any:
    return cli("--set", f"HOST_KERNELS_DIR={root}", "kernel", "fetch", *args, "--json",
               env={"NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"})


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "fc-kernels"
    (r / "vmlinux-other").mkdir(parents=True)
    (r / "vmlinux-other" / "vmlinux.bin").write_bytes(craft_elf())
    return r


def test_fetch_resumes_after_the_server_cuts_the_connection(root: Path, payload: bytes, server_factory: Any) -> None:
    srv = server_factory(payload, cut_at=3 << 20)
    digest = hashlib.sha256(payload).hexdigest()
    before = listing(root)
    proc = fetch(root, f"{srv.base}/vmlinux-test", "--sha256", digest)
    assert proc.returncode == 0, proc.stderr
    assert srv.requests == [None, f"bytes={3 << 20}-"]
    assert "download interrupted at 3145728 bytes" in proc.stderr and "fetch: " in proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["fetch"]["state"] == "installed" and doc["fetch"]["verified"] and doc["check"]["ok"]
    assert (root / "vmlinux-test" / "vmlinux.bin").read_bytes() == payload
    assert listing(root) == {**before, "vmlinux-test": None, "vmlinux-test/vmlinux.bin": len(payload)}  # complete

    again = fetch(root, f"{srv.base}/vmlinux-test", "--sha256", digest)
    assert again.returncode == 0 and json.loads(again.stdout)["fetch"]["state"] == "already-installed"


def test_fetch_server_without_range_restarts_from_zero(root: Path, payload: bytes, server_factory: Any) -> None:
    srv = server_factory(payload, cut_at=2 << 20, ranges=False)
    proc = fetch(root, f"{srv.base}/vmlinux-test")
    assert proc.returncode == 0, proc.stderr
    assert srv.requests == [None, f"bytes={2 << 20}-"]
    assert "server ignored the range request: starting again from 0" in proc.stderr
    doc = json.loads(proc.stdout)["fetch"]
    assert doc["restarts"] == 1 and not doc["verified"] and doc["sha256"] == hashlib.sha256(payload).hexdigest()
    assert (root / "vmlinux-test" / "vmlinux.bin").read_bytes() == payload


def test_fetch_wrong_checksum_installs_nothing(root: Path, payload: bytes, server_factory: Any) -> None:
    srv = server_factory(payload)
    before = listing(root)
    proc = fetch(root, f"{srv.base}/vmlinux-test", "--sha256", "0" * 64)
    one_line_error(proc, 8)
    assert "sha256 mismatch" in proc.stderr and listing(root) == before


def test_fetch_404_changes_nothing(root: Path, payload: bytes, server_factory: Any) -> None:
    srv = server_factory(payload)
    before = listing(root)
    proc = fetch(root, f"{srv.base}/missing-kernel")
    one_line_error(proc, 7)
    assert "HTTP 404" in proc.stderr and listing(root) == before


def test_fetch_conflict_then_force_moves_the_old_one_aside(root: Path, payload: bytes, server_factory: Any) -> None:
    srv = server_factory(payload)
    old = root / "vmlinux-other" / "vmlinux.bin"
    old_bytes = old.read_bytes()
    before = listing(root)
    proc = fetch(root, f"{srv.base}/vmlinux-test", "--name", "vmlinux-other")
    one_line_error(proc, 6)
    assert listing(root) == before
    proc = fetch(root, f"{srv.base}/vmlinux-test", "--name", "vmlinux-other", "--force")
    assert proc.returncode == 0, proc.stderr
    aside = Path(json.loads(proc.stdout)["fetch"]["replaced_to"])
    assert aside.parent == root / ".replaced" and (aside / "vmlinux.bin").read_bytes() == old_bytes
    assert old.read_bytes() == payload


def test_list_shows_catalog_and_installed(root: Path) -> None:
    proc = cli("--set", f"HOST_KERNELS_DIR={root}", "kernel", "list", "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    names = {k["name"] for k in doc["catalog"]}
    assert {"vmlinux-6.1.102", "vmlinux-5.10.223"} <= names
    assert all(k["url"].startswith("https://") for k in doc["catalog"])
    assert all(k["sha256"] is None or k["sha256_source"] for k in doc["catalog"])
    assert [(k["name"], k["arch"], k["kind"]) for k in doc["installed"]] == [("vmlinux-other", "x86_64", "elf")]


def test_fetch_bzimage_installs_the_elf_inside_or_refuses(root: Path, server_factory: Any, tmp_path: Path) -> None:
    bz = _BUILT["cmdline-ikconfig"].bzimage.read_bytes()
    extract(_BUILT["cmdline-ikconfig"].bzimage, tmp_path / "inside")
    srv = server_factory(bz)
    before = listing(root)
    refused = fetch(root, f"{srv.base}/vmlinux-test", "--no-extract")
    assert_clean_error(refused, 3, "not installed: it is a bzImage")
    assert listing(root) == before  # nothing left in HOST_KERNELS_DIR, not even the download
    proc = fetch(root, f"{srv.base}/vmlinux-test", "--sha256", hashlib.sha256(bz).hexdigest())
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    installed = root / "vmlinux-test" / "vmlinux.bin"
    assert installed.read_bytes() == (tmp_path / "inside").read_bytes()  # the payload's ELF (no .symtab)
    assert doc["check"]["format"] == "elf" and doc["check"]["ok"]
    assert any("installed the ELF vmlinux inside it" in n for n in doc["fetch"]["notes"])


def test_fetch_of_something_else_installs_nothing(root: Path, server_factory: Any) -> None:
    srv = server_factory(b"<html>not found, but with a 200</html>" * 100)
    before = listing(root)
    assert_clean_error(fetch(root, f"{srv.base}/vmlinux-test"), 3, "not a kernel Firecracker loads")
    assert listing(root) == before


def test_fetch_unreachable_host_says_so_once(root: Path) -> None:
    with socket.socket() as s:  # a port nobody listens on: connection refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = fetch(root, f"http://127.0.0.1:{port}/k/vmlinux-test")
    assert_clean_error(proc, 7, f"cannot reach 127.0.0.1:{port}")
    assert "resuming" not in proc.stderr and "bytes kept" not in proc.stderr
    assert "nothing was downloaded" in proc.stderr


def test_fetch_unknown_catalog_name(root: Path) -> None:
    one_line_error(fetch(root, "vmlinux-9.9.9"), 2)


# ----------------------------------------------------------------------------------------- 2026: real bzImage, catalog


@pytest.mark.parametrize(("fc", "code"), [("v1.14.1_431f1fc", 1), ("v1.16.1", 1), ("v1.17.0", 0), ("v1.17-0.1.0", 0)])
def test_real_bzimage_fails_before_firecracker_1_17_and_passes_from_it(fc: str, code: int) -> None:
    bz = _BUILT["cmdline-ikconfig"].bzimage
    proc = cli("kernel", "check", bz, "--firecracker-version", fc, "--json")
    assert proc.returncode == code, proc.stderr
    doc = json.loads(proc.stdout)
    fails = [f["check"] for f in doc["findings"] if f["status"] == "FAIL"]
    assert fails == ([] if code == 0 else ["kernel.format"]), doc["findings"]
    assert doc["format"] == "bzimage" and doc["config_source"] == "IKCONFIG" and doc["device_discovery"] == "cmdline"


E2B_BUCKET = "https://storage.googleapis.com/e2b-artifact-binaries/kernels/"


def test_catalog_names_the_e2b_artifact_binaries_layout_and_current_versions() -> None:
    catalog = load_catalog()
    assert len({(k.name, k.arch) for k in catalog}) == len(catalog)
    by_key = {(k.name, k.arch): k for k in catalog}
    # infra packages/orchestrator/pkg/sandbox/fc/config.go Config.HostKernelPath: <name>/<amd64|arm64>/vmlinux.bin,
    # else the flat <name>/vmlinux.bin; fc-kernels scripts/upload-release-to-gcs.sh writes no flat copy for the
    # commit-suffixed names.
    pinned = "vmlinux-6.1.177_5008931"
    for name, arch, flat in [("vmlinux-6.1.158", "x86_64", True), ("vmlinux-6.1.158", "aarch64", False),
                             (pinned, "x86_64", False), (pinned, "aarch64", False),
                             ("vmlinux-6.1.102", "x86_64", True)]:
        k = by_key[(name, arch)]
        assert k.layout == "e2b-artifact-binaries"
        assert k.url == f"{E2B_BUCKET}{name}/{HOST_ARCH_DIRS[arch]}/vmlinux.bin"
        assert k.legacy_url == (f"{E2B_BUCKET}{name}/vmlinux.bin" if flat else None)
    assert by_key[("vmlinux-6.1.182", "x86_64")].url.endswith("/x86_64/vmlinux-6.1.182")
    for k in catalog:
        # A digest only with the public pin it comes from; never one without.
        assert (k.sha256 is None) is (k.sha256_source is None), k
        assert k.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", k.sha256), k
    # E2B's own pins (e2b-dev/runtime embed/compose/scripts/fetch-artifacts.sh, table SHA256).
    assert by_key[("vmlinux-6.1.177_5008931", "x86_64")].sha256 == \
        "9191ced12d24e6e381753a7ab12ec850877524d453eae75c20aeb176f3b5ad05"
    assert by_key[("vmlinux-6.1.177_5008931", "aarch64")].sha256 == \
        "3e134b55a6e4feec481f6f3a2813d42860e28c273eeb91c02df0661322e61dab"


def test_fetch_falls_back_to_the_legacy_flat_path(root: Path, payload: bytes, server_factory: Any,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    srv = server_factory(payload)
    entry = CatalogKernel("vmlinux-test", "x86_64", "test", f"{srv.base}/missing/amd64/vmlinux.bin", None,
                          "0" * 64, "a pin of the arch path", layout="e2b-artifact-binaries",
                          legacy_url=f"{srv.base}/vmlinux-test/vmlinux.bin")
    said: list[str] = []
    result = catalog_fetch(entry, root, note=said.append)
    assert result.url == f"{srv.base}/vmlinux-test/vmlinux.bin" and result.state == "installed"
    assert not result.verified  # the arch path's pin does not name the flat object
    assert (root / "vmlinux-test" / "vmlinux.bin").read_bytes() == payload
    assert any("trying the legacy flat path" in s for s in said)
    no_flat = CatalogKernel("vmlinux-none", "x86_64", "test", f"{srv.base}/missing/amd64/vmlinux.bin", None,
                            None, None)
    with pytest.raises(ArtifactError, match="HTTP 404"):
        catalog_fetch(no_flat, root)


def test_fetch_no_extract_keeps_a_bzimage_for_firecracker_1_17(root: Path, server_factory: Any) -> None:
    bz = _BUILT["cmdline-ikconfig"].bzimage.read_bytes()
    srv = server_factory(bz)
    proc = fetch(root, f"{srv.base}/vmlinux-test", "--no-extract", "--firecracker-version", "v1.17.0")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert (root / "vmlinux-test" / "vmlinux.bin").read_bytes() == bz
    assert doc["check"]["format"] == "bzimage" and doc["check"]["ok"]


def test_codecs_are_core_dependencies() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    core = {re.split(r"[<>=\[ ]", d)[0] for d in project["dependencies"]}
    assert {"lz4", "zstandard"} <= core
    for extra, deps in project["optional-dependencies"].items():
        assert not {"lz4", "zstandard"} & {re.split(r"[<>=\[ ]", d)[0] for d in deps}, extra
