"""Guest kernel file formats: x86-64 ELF vmlinux, bzImage (and its compressed payload), arm64 Image.

Only the header fields Firecracker's loader looks at are read, through the shared ELF reader
(:mod:`e2b_artifacts.elf`): the identification, the program headers (PT_LOAD, the Xen PVH note)
and, for config evidence, the section headers and ``.symtab``.
"""

from __future__ import annotations

import bz2
import lzma
import re
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from .. import elf as elf_reader
from .. import limits
from ..elf import MAGIC as ELF_MAGIC
from ..elf import PT_LOAD, SHT_SYMTAB, Elf, c_string
from ..errors import ArtifactError, ExitCode, missing_dependency

Kind = Literal["elf", "bzimage", "arm64-image", "gzip", "unknown"]
ARCHES = ("x86_64", "aarch64")

ARM64_MAGIC = 0x644D5241  # "ARM\x64", u32 LE at 0x38 of an arm64 Image
ARM64_MAGIC_OFFSET = 0x38
BZIMAGE_MAGIC = b"HdrS"
BZIMAGE_MAGIC_OFFSET = 0x202
BZIMAGE_SETUP_END = 0x250  # the setup header through payload_offset/payload_length (boot protocol 2.08)
GZIP_MAGIC = b"\x1f\x8b"
MIN_ENTRY = 0x100000  # Firecracker's HIMEM_START: a kernel entry below it is refused

_SYM = struct.Struct("<IBBHQQ")
_BANNER = re.compile(rb"Linux version (\d[^\n\x00]{0,300})")


@dataclass(frozen=True)
class KernelFormat:
    """What a kernel file is, and what Firecracker's loader would say about it."""

    kind: Kind
    arch: str | None  # x86_64, aarch64, another ELF machine's name, or None
    problems: tuple[str, ...] = ()  # loader errors Firecracker would raise for this arch's format
    elf: Elf | None = None
    detail: str = ""
    notes: tuple[str, ...] = field(default=())


def identify(data: bytes) -> KernelFormat:
    """Identify ``data`` (a whole kernel file) from its magic numbers and headers."""
    if data[:4] == ELF_MAGIC:
        return _identify_elf(data)
    if len(data) >= ARM64_MAGIC_OFFSET + 4 and struct.unpack_from("<I", data, ARM64_MAGIC_OFFSET)[0] == ARM64_MAGIC:
        return KernelFormat("arm64-image", "aarch64", detail="arm64 Image")
    # "MZ" at 0 only with CONFIG_EFI_STUB; the setup header ("HdrS", boot flag 0xAA55) is always there.
    if data[BZIMAGE_MAGIC_OFFSET:BZIMAGE_MAGIC_OFFSET + 4] == BZIMAGE_MAGIC and data[0x1FE:0x200] == b"\x55\xaa":
        version = struct.unpack_from("<H", data, 0x206)[0] if len(data) >= 0x208 else 0
        return KernelFormat("bzimage", "x86_64", detail=f"bzImage (boot protocol {version >> 8}.{version & 0xff:02d})")
    if data[:2] == GZIP_MAGIC:
        return KernelFormat("gzip", None, detail="a gzip file (a compressed vmlinuz or Image.gz)")
    return KernelFormat("unknown", None, detail="not a kernel (no ELF, bzImage or arm64 Image magic)")


def parse_elf(data: bytes) -> Elf:
    """The ELF header, program headers (with the PVH note) and section headers of a kernel."""
    found = elf_reader.parse(data)
    if found is None:
        raise ArtifactError("truncated ELF header", hint="the file is cut short; fetch the kernel again",
                            code=ExitCode.BAD_INPUT)
    return found


def elf_symbol_names(data: bytes, elf: Elf) -> frozenset[str] | None:
    """Names in ``.symtab`` of an ELF64 LE; None when it has none (stripped, as a bzImage payload always is)."""
    if elf.elf_class != elf_reader.ELFCLASS64 or not elf.little_endian:
        return None
    for sec in elf.sections:
        if sec.type != SHT_SYMTAB or sec.link >= len(elf.sections):
            continue
        strtab = elf.sections[sec.link]
        strings = data[strtab.offset:strtab.offset + strtab.size]
        names = set()
        table = data[sec.offset:sec.offset + sec.size]  # shorter than sec.size when the file is cut
        for name_off, *_ in _SYM.iter_unpack(table[:len(table) - len(table) % _SYM.size]):
            if name_off:
                end = strings.find(b"\0", name_off)
                names.add(strings[name_off:end].decode("latin-1"))
        return frozenset(names)
    return None


def linux_banner(data: bytes) -> str | None:
    """``Linux version 6.1.102 (user@host) ...`` from an uncompressed kernel."""
    # linux_proc_banner ("... #%s ...") can come first; the full uts banner has the build number after '#'.
    found = [m.group(1).decode("latin-1").strip() for m in _BANNER.finditer(data)]
    full = [b for b in found if re.search(r"#\d", b)]
    return "Linux version " + (full or found)[0] if found else None


def bzimage_version(data: bytes) -> str | None:
    """The setup header's kernel_version string (what `file` prints for a bzImage)."""
    if len(data) < 0x210:
        return None
    pointer = struct.unpack_from("<H", data, 0x20E)[0]
    if not pointer:
        return None
    text = c_string(data, pointer + 0x200)
    return f"Linux version {text}" if text[:1].isdigit() else None


# ------------------------------------------------------------------------------------------- bzImage

HIMEM_START = MIN_ENTRY
LOADED_HIGH = 0x01  # loadflags bit 0: the protected-mode kernel loads at 0x100000 (a bzImage, not a zImage)
XLF_KERNEL_64 = 0x01  # xloadflags bit 0 (boot protocol 2.12+): a 64-bit entry point at code32_start + 0x200


def bzimage_loader_problems(data: bytes) -> tuple[str, ...]:
    """What Firecracker 1.17+'s bzImage path would refuse, in its loader's terms.

    linux-loader ``BzImage::load`` (src/loader/x86_64/bzimage/mod.rs) wants boot protocol >= 2.00 with
    LOADED_HIGH and ``code32_start`` at or above HIMEM_START; Firecracker then enters at
    ``code32_start + 0x200`` with the 64-bit boot protocol (PR #6037), which needs XLF_KERNEL_64.
    """
    if len(data) < 0x238:
        return ("Kernel Loader: Unable to read bzImage header (the file ends inside its setup header)",)
    protocol = struct.unpack_from("<H", data, 0x206)[0]
    loadflags = data[0x211]
    code32_start = struct.unpack_from("<I", data, 0x214)[0]
    problems = []
    if protocol < 0x200 or not loadflags & LOADED_HIGH:
        problems.append(f"Kernel Loader: Invalid bzImage (boot protocol {protocol >> 8}.{protocol & 0xff:02d}, "
                        f"loadflags {loadflags:#04x}: needs 2.00+ with LOADED_HIGH)")
    if code32_start < HIMEM_START:
        problems.append(f"Kernel Loader: Invalid kernel start address (code32_start {code32_start:#x} below "
                        f"{HIMEM_START:#x})")
    xloadflags = struct.unpack_from("<H", data, 0x236)[0] if protocol >= 0x20C else 0
    if not xloadflags & XLF_KERNEL_64:
        problems.append("no 64-bit entry point (XLF_KERNEL_64 not set; boot protocol "
                        f"{protocol >> 8}.{protocol & 0xff:02d}): Firecracker enters a bzImage at "
                        "code32_start + 0x200 with the 64-bit boot protocol")
    return tuple(problems)



Decompressor = Callable[[bytes], bytes]


def bzimage_payload(data: bytes) -> tuple[str, bytes]:
    """The compression name and the compressed payload of a bzImage (boot protocol >= 2.08)."""
    if len(data) < BZIMAGE_SETUP_END:
        raise ArtifactError(f"bzImage truncated: {len(data)} bytes, shorter than its {BZIMAGE_SETUP_END}-byte setup "
                            "header", hint="the file is cut short; fetch the kernel again", code=ExitCode.BAD_INPUT)
    protocol = struct.unpack_from("<H", data, 0x206)[0]
    if protocol < 0x208:
        raise ArtifactError(f"bzImage boot protocol {protocol >> 8}.{protocol & 0xff:02d} has no payload fields "
                            "(needs 2.08+, Linux 2.6.26+)", hint="use the vmlinux from that kernel's build tree",
                            code=ExitCode.BAD_INPUT)
    setup_sects = data[0x1F1] or 4
    payload_offset, payload_length = struct.unpack_from("<II", data, 0x248)
    start = (setup_sects + 1) * 512 + payload_offset
    payload = data[start:start + payload_length]
    for magic, name in _PAYLOAD_MAGICS:
        if payload.startswith(magic):
            return name, payload
    raise ArtifactError(f"unknown bzImage payload compression (starts {payload[:6].hex(' ')})",
                        hint="supported: gzip, xz, lzma, lz4, zstd, bzip2; the kernel's scripts/extract-vmlinux "
                             "may know it", code=ExitCode.BAD_INPUT)


def decompress_bzimage(data: bytes) -> tuple[str, bytes]:
    """The ELF vmlinux inside a bzImage, and the compression it used."""
    method, payload = bzimage_payload(data)
    try:
        vmlinux = _DECOMPRESSORS[method](payload)
    except ArtifactError:
        raise
    except Exception as exc:  # each codec raises its own error type on corrupt input
        raise ArtifactError(f"cannot decompress the {method} payload: {exc}",
                            hint="the bzImage is damaged or truncated; fetch it again",
                            code=ExitCode.BAD_INPUT) from exc
    if vmlinux[:4] != ELF_MAGIC:
        raise ArtifactError(f"the {method} payload is not an ELF (starts {vmlinux[:4].hex(' ')})",
                            hint="the bzImage is damaged", code=ExitCode.BAD_INPUT)
    return method, vmlinux


def gunzip(data: bytes, limit: limits.InputLimit = limits.KERNEL) -> bytes:
    """The first gzip member of ``data``; bytes after it (a bzImage's tail, IKCFG_ED) are ignored."""
    return _bounded(zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data, limit.bytes() + 1), limit)


def _bounded(out: bytes, limit: limits.InputLimit) -> bytes:
    """Decompressors get ``limit + 1`` as their output cap: reaching it means the data expands past the limit."""
    if len(out) > limit.bytes():
        raise _expands(limit)
    return out


def _expands(limit: limits.InputLimit) -> ArtifactError:
    return ArtifactError(f"the compressed data expands past the {limit.bytes()}-byte limit for {limit.kind} files",
                         hint=f"check that it is a real kernel; to allow more, set {limit.env}=BYTES",
                         code=ExitCode.BAD_INPUT)


def _xz(payload: bytes) -> bytes:
    return _whole(lzma.LZMADecompressor(lzma.FORMAT_XZ), payload, "xz")


def _lzma(payload: bytes) -> bytes:
    return _whole(lzma.LZMADecompressor(lzma.FORMAT_ALONE), payload, "lzma")


def _bzip2(payload: bytes) -> bytes:
    return _whole(bz2.BZ2Decompressor(), payload, "bzip2")


def _whole(decompressor: lzma.LZMADecompressor | bz2.BZ2Decompressor, payload: bytes, name: str) -> bytes:
    """The whole stream, bounded; a stream that ends early is an error, not a shorter kernel."""
    out = _bounded(decompressor.decompress(payload, limits.KERNEL.bytes() + 1), limits.KERNEL)
    if not decompressor.eof:
        raise ArtifactError(f"the {name} payload ends before its stream does (the bzImage is truncated)",
                            hint="the file is cut short; fetch the kernel again", code=ExitCode.BAD_INPUT)
    return out


def _zstd(payload: bytes) -> bytes:
    import io

    import zstandard

    with zstandard.ZstdDecompressor().stream_reader(io.BytesIO(payload), read_across_frames=False) as reader:
        return _bounded(reader.read(limits.KERNEL.bytes() + 1), limits.KERNEL)


LZ4_LEGACY_MAGIC = b"\x02\x21\x4c\x18"
LZ4_LEGACY_BLOCK = 8 << 20


def _lz4_legacy(payload: bytes) -> bytes:
    """The kernel's LZ4 legacy frame: magic, then (u32 LE size, block)*; a size word of the whole follows."""
    try:
        import lz4.block  # type: ignore[import-untyped,import-not-found,unused-ignore]
    except ImportError as exc:
        raise missing_dependency("lz4", "this bzImage's LZ4 payload") from exc
    out, pos, total = [], 4, 0
    while pos + 4 <= len(payload):
        if payload[pos:pos + 4] == LZ4_LEGACY_MAGIC:  # concatenated frames
            pos += 4
            continue
        size = struct.unpack_from("<I", payload, pos)[0]
        if size == 0 or pos + 4 + size > len(payload):  # the trailing uncompressed-size word
            break
        out.append(lz4.block.decompress(payload[pos + 4:pos + 4 + size], uncompressed_size=LZ4_LEGACY_BLOCK))
        total += len(out[-1])
        if total > limits.KERNEL.bytes():
            raise _expands(limits.KERNEL)
        pos += 4 + size
    return b"".join(out)


_PAYLOAD_MAGICS = (
    (b"\x1f\x8b", "gzip"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x5d\x00\x00", "lzma"),
    (LZ4_LEGACY_MAGIC, "lz4"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"BZh", "bzip2"),
)
_DECOMPRESSORS: dict[str, Decompressor] = {
    "gzip": gunzip, "xz": _xz, "lzma": _lzma, "lz4": _lz4_legacy, "zstd": _zstd, "bzip2": _bzip2,
}


# ------------------------------------------------------------------------------------------- helpers


def _identify_elf(data: bytes) -> KernelFormat:
    elf = parse_elf(data)
    if elf.elf_class != 2 or not elf.little_endian:
        what = f"{'32' if elf.elf_class == 1 else '64'}-bit {'little' if elf.little_endian else 'big'}-endian"
        return KernelFormat("elf", elf.arch, elf=elf, detail=f"ELF ({what})",
                            problems=("Kernel Loader: invalid ELF class or byte order (needs ELF64 little-endian)",))
    problems = []
    if elf.phentsize != elf_reader.PHDR_SIZE_64:
        problems.append(f"Kernel Loader: invalid program header size {elf.phentsize} "
                        f"(needs {elf_reader.PHDR_SIZE_64})")
    if elf.phoff < elf_reader.HEADER_SIZE_64:
        problems.append(f"Kernel Loader: program headers at {elf.phoff}, inside the ELF header")
    if elf.entry < MIN_ENTRY:
        problems.append(f"Kernel Loader: entry point {elf.entry:#x} below {MIN_ENTRY:#x} (HIMEM_START)")
    loads = [s for s in elf.segments if s.type == PT_LOAD]
    if not loads:
        problems.append("Kernel Loader: no PT_LOAD segment")
    notes = []
    if loads:
        low, high = min(s.paddr for s in loads), max(s.paddr + s.memsz for s in loads)
        notes.append(f"loads {(high - low) / (1 << 20):.1f} MiB at {low:#x}-{high:#x}")
    notes.append("PVH entry note present (Firecracker v1.12+ boots it via PVH)" if elf.pvh
                 else "no PVH entry note (Linux 64-bit boot protocol)")
    arch = elf.arch or f"ELF machine {elf.machine}"
    return KernelFormat("elf", arch, tuple(problems), elf, detail="ELF64 vmlinux", notes=tuple(notes))
