"""The ELF reader for guest kernels and envd: header, program and section headers, notes, interpreter.

32- and 64-bit, either byte order; struct only, no ELF library. Tables that do not fit in the data
are read as empty, so a truncated file shows up as missing segments rather than as an exception.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

MAGIC = b"\x7fELF"
# e_machine -> the architecture name used everywhere else in the tool (kernel arch, envd arch)
MACHINES = {3: "i386", 40: "arm", 62: "x86_64", 183: "aarch64", 243: "riscv64"}
ELFCLASS32, ELFCLASS64 = 1, 2
PT_LOAD, PT_INTERP, PT_NOTE = 1, 3, 4
SHT_SYMTAB = 2
XEN_ELFNOTE_PHYS32_ENTRY = 18  # the PVH entry point note of a kernel built with CONFIG_PVH

# e_ident, e_type, e_machine, e_version, e_entry, e_phoff, e_shoff, e_flags, e_ehsize, e_phentsize,
# e_phnum, e_shentsize, e_shnum, e_shstrndx
_HEADER = {ELFCLASS32: "16sHHIIIIIHHHHHH", ELFCLASS64: "16sHHIQQQIHHHHHH"}
# p_type and then (64-bit) flags, offset, vaddr, paddr, filesz, memsz, align; 32-bit: flags after memsz
_PHDR = {ELFCLASS32: "IIIIIIII", ELFCLASS64: "IIQQQQQQ"}
_PHDR_FIELDS = {ELFCLASS32: (0, 1, 3, 4, 5), ELFCLASS64: (0, 2, 4, 5, 6)}  # type, offset, paddr, filesz, memsz
# name, type, flags, addr, offset, size, link, info, addralign, entsize
_SHDR = {ELFCLASS32: "IIIIIIIIII", ELFCLASS64: "IIQQQQIIQQ"}
HEADER_SIZE_64 = struct.calcsize("<" + _HEADER[ELFCLASS64])
PHDR_SIZE_64 = struct.calcsize("<" + _PHDR[ELFCLASS64])


@dataclass(frozen=True)
class Segment:
    type: int
    offset: int
    paddr: int
    filesz: int
    memsz: int


@dataclass(frozen=True)
class Section:
    name: str
    type: int
    offset: int
    size: int
    link: int


@dataclass(frozen=True)
class Elf:
    elf_class: int  # 1 = 32-bit, 2 = 64-bit
    little_endian: bool
    machine: int
    entry: int
    phoff: int
    phentsize: int
    segments: tuple[Segment, ...] = ()
    sections: tuple[Section, ...] = ()
    notes: tuple[tuple[bytes, int], ...] = ()  # (name, type) of every note in PT_NOTE segments
    interpreter: str | None = None  # PT_INTERP; None for a static executable

    @property
    def arch(self) -> str | None:
        """``x86_64``, ``aarch64``, ...; None for a machine the table does not name."""
        return MACHINES.get(self.machine)

    @property
    def pvh(self) -> bool:
        """A Xen PHYS32_ENTRY note: Firecracker v1.12+ boots such a kernel through PVH."""
        return (b"Xen", XEN_ELFNOTE_PHYS32_ENTRY) in self.notes


def parse(data: bytes) -> Elf | None:
    """The headers of the ELF file ``data``; None when it is not ELF or its header is cut short."""
    if data[:4] != MAGIC or len(data) < 6 or data[4] not in _HEADER:
        return None
    elf_class, little_endian = data[4], data[5] == 1
    endian = "<" if little_endian else ">"
    header = struct.Struct(endian + _HEADER[elf_class])
    if len(data) < header.size:
        return None
    (_ident, _type, machine, _version, entry, phoff, shoff, _flags, _ehsize, phentsize, phnum, shentsize, shnum,
     shstrndx) = header.unpack_from(data)
    fields = _PHDR_FIELDS[elf_class]
    segments = tuple(Segment(*(p[i] for i in fields))
                     for p in _table(data, struct.Struct(endian + _PHDR[elf_class]), phoff, phentsize, phnum))
    raw_sections = _table(data, struct.Struct(endian + _SHDR[elf_class]), shoff, shentsize, shnum)
    names = raw_sections[shstrndx] if shstrndx < len(raw_sections) else None
    sections = tuple(Section(c_string(data, names[4] + s[0]) if names else "", s[1], s[4], s[5], s[6])
                     for s in raw_sections)
    notes = tuple(note for s in segments if s.type == PT_NOTE for note in _notes(data, s, endian))
    interp = next((s for s in segments if s.type == PT_INTERP), None)
    interpreter = data[interp.offset:interp.offset + interp.filesz].split(b"\0", 1)[0].decode(errors="replace") \
        if interp is not None else None
    return Elf(elf_class, little_endian, machine, entry, phoff, phentsize, segments, sections, notes, interpreter)


def _table(data: bytes, entry: struct.Struct, offset: int, entsize: int, count: int) -> list[tuple[int, ...]]:
    if not offset or entsize < entry.size or offset + entsize * count > len(data):
        return []
    return [entry.unpack_from(data, offset + i * entsize) for i in range(count)]


def c_string(data: bytes, offset: int, limit: int = 512) -> str:
    """The NUL-terminated Latin-1 string at ``offset`` (at most ``limit`` bytes)."""
    end = data.find(b"\0", offset, offset + limit)
    return data[offset:end if end >= 0 else offset + limit].decode("latin-1")


def _notes(data: bytes, seg: Segment, endian: str) -> list[tuple[bytes, int]]:
    found = []
    pos, end = seg.offset, min(seg.offset + seg.filesz, len(data))
    while pos + 12 <= end:
        namesz, descsz, note_type = struct.unpack_from(endian + "III", data, pos)
        found.append((data[pos + 12:pos + 12 + namesz].rstrip(b"\0"), note_type))
        pos += 12 + _align4(namesz) + _align4(descsz)
    return found


def _align4(n: int) -> int:
    return (n + 3) & ~3
