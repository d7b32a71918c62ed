"""The one ELF reader (kernels and envd) against binutils' readelf on real files and crafted ones."""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from e2b_artifacts import elf
from e2b_artifacts.kernel import image as kernel_image
from tests import kernels
from tests.conftest import FIXTURES

ENVD = FIXTURES / "envd-standin" / "envd"
SEGMENT_TYPES = {"NULL": 0, "LOAD": 1, "DYNAMIC": 2, "INTERP": 3, "NOTE": 4, "PHDR": 6, "TLS": 7,
                 "GNU_EH_FRAME": 0x6474E550, "GNU_STACK": 0x6474E551, "GNU_RELRO": 0x6474E552,
                 "GNU_PROPERTY": 0x6474E553}


def readelf(path: Path, *options: str) -> str:
    return subprocess.run(["readelf", "-W", *options, str(path)], check=True, capture_output=True,
                          text=True).stdout


def readelf_segments(path: Path) -> list[tuple[int, int, int, int, int]]:
    """(type, offset, paddr, filesz, memsz) of every program header, as readelf -l prints them."""
    rows = []
    for line in readelf(path, "-l").splitlines():
        words = line.split()
        if len(words) >= 6 and words[0] in SEGMENT_TYPES and words[1].startswith("0x"):
            offset, paddr, filesz, memsz = (int(w, 16) for w in (words[1], words[3], words[4], words[5]))
            rows.append((SEGMENT_TYPES[words[0]], offset, paddr, filesz, memsz))
    return rows


def readelf_section_names(path: Path) -> list[str]:
    names = []
    for line in readelf(path, "-S").splitlines():
        m = re.match(r"\s*\[\s*(\d+)\]\s+(.*)", line)
        if m:
            names.append("" if m.group(1) == "0" else m.group(2).split()[0])
    return names


def readelf_header(path: Path) -> dict[str, str]:
    fields = {}
    for line in readelf(path, "-h").splitlines():
        key, sep, value = line.strip().partition(":")
        if sep:
            fields[key] = value.strip()
    return fields


def assert_matches_readelf(path: Path, parsed: elf.Elf) -> None:
    header = readelf_header(path)
    assert parsed.entry == int(header["Entry point address"], 16)
    assert parsed.phoff == int(header["Start of program headers"].split()[0])
    assert [(s.type, s.offset, s.paddr, s.filesz, s.memsz) for s in parsed.segments
            if s.type in SEGMENT_TYPES.values()] == readelf_segments(path)
    assert [s.name for s in parsed.sections] == readelf_section_names(path)


def test_envd_standin_is_a_static_x86_64_elf() -> None:
    parsed = elf.parse(ENVD.read_bytes())
    assert parsed is not None
    assert (parsed.elf_class, parsed.little_endian, parsed.arch, parsed.interpreter) == (2, True, "x86_64", None)
    assert readelf_header(ENVD)["Machine"] == "Advanced Micro Devices X86-64"
    assert_matches_readelf(ENVD, parsed)


def test_a_dynamic_host_binary_names_its_interpreter() -> None:
    binary = Path(shutil.which("true") or "/bin/true")
    parsed = elf.parse(binary.read_bytes())
    assert parsed is not None
    wanted = re.search(r"Requesting program interpreter: ([^\]]+)\]", readelf(binary, "-l"))
    assert wanted is not None and parsed.interpreter == wanted.group(1)
    assert_matches_readelf(binary, parsed)


def test_a_test_kernel_vmlinux() -> None:
    vmlinux = kernels.test_kernel("cmdline-ikconfig").vmlinux
    data = vmlinux.read_bytes()
    parsed = elf.parse(data)
    assert parsed is not None and parsed.arch == "x86_64" and parsed.interpreter is None
    assert_matches_readelf(vmlinux, parsed)
    assert "Unknown note type: (0x00000012)" in readelf(vmlinux, "-n") and parsed.pvh  # Xen PHYS32_ENTRY
    assert (b"GNU", 3) in parsed.notes  # NT_GNU_BUILD_ID
    assert kernel_image.parse_elf(data) == parsed  # the kernel check reads it through the same reader
    symbols = kernel_image.elf_symbol_names(data, parsed)
    assert symbols is not None and "start_kernel" in symbols


def craft(*, elf_class: int, big_endian: bool, machine: int, interpreter: bytes) -> bytes:
    """A minimal executable with one PT_INTERP and one PT_LOAD, no sections."""
    e = ">" if big_endian else "<"
    ident = b"\x7fELF" + bytes([elf_class, 2 if big_endian else 1, 1]) + bytes(9)
    if elf_class == 1:
        ehsize, phsize = 52, 32
        data_off = ehsize + 2 * phsize
        header = struct.pack(e + "16sHHIIIIIHHHHHH", ident, 2, machine, 1, 0x400000, ehsize, 0, 0, ehsize, phsize,
                             2, 40, 0, 0)
        phdrs = struct.pack(e + "8I", 3, data_off, 0, 0, len(interpreter), len(interpreter), 4, 1)
        phdrs += struct.pack(e + "8I", 1, 0, 0x400000, 0x400000, 4096, 4096, 5, 4096)
    else:
        ehsize, phsize = 64, 56
        data_off = ehsize + 2 * phsize
        header = struct.pack(e + "16sHHIQQQIHHHHHH", ident, 2, machine, 1, 0x400000, ehsize, 0, 0, ehsize, phsize,
                             2, 64, 0, 0)
        phdrs = struct.pack(e + "IIQQQQQQ", 3, 4, data_off, 0, 0, len(interpreter), len(interpreter), 1)
        phdrs += struct.pack(e + "IIQQQQQQ", 1, 5, 0, 0x400000, 0x400000, 4096, 4096, 4096)
    body = header + phdrs + interpreter
    return body + bytes(4096 - len(body))


@pytest.mark.parametrize(("elf_class", "big_endian", "machine", "arch"), [
    (1, False, 3, "i386"), (1, True, 8, None), (2, True, 183, "aarch64"), (2, False, 243, "riscv64"),
])
def test_crafted_classes_and_byte_orders(tmp_path: Path, elf_class: int, big_endian: bool, machine: int,
                                         arch: str | None) -> None:
    data = craft(elf_class=elf_class, big_endian=big_endian, machine=machine, interpreter=b"/lib/ld.so.1\0")
    path = tmp_path / "exe"
    path.write_bytes(data)
    parsed = elf.parse(data)
    assert parsed is not None
    assert (parsed.elf_class, parsed.little_endian, parsed.machine, parsed.arch) == (
        elf_class, not big_endian, machine, arch)
    assert parsed.interpreter == "/lib/ld.so.1" and "[Requesting program interpreter: /lib/ld.so.1]" in readelf(
        path, "-l")
    assert_matches_readelf(path, parsed)


def test_not_elf_and_cut_short() -> None:
    data = ENVD.read_bytes()
    assert elf.parse(b"#!/bin/sh\n") is None
    assert elf.parse(data[:40]) is None  # the magic, but not a whole header
    assert elf.parse(b"\x7fELF\x03" + bytes(80)) is None  # no such class
    truncated = elf.parse(data[:200])  # header intact, program headers run past the end
    assert truncated is not None and truncated.segments == () and truncated.interpreter is None


def test_one_machine_table_for_kernels_and_envd() -> None:
    vmlinux = craft(elf_class=2, big_endian=False, machine=183, interpreter=b"\0")
    assert kernel_image.identify(vmlinux).arch == "aarch64" == elf.MACHINES[183]
    unknown = craft(elf_class=2, big_endian=False, machine=8, interpreter=b"\0")
    assert kernel_image.identify(unknown).arch == "ELF machine 8"
