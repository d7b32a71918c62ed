"""Artifacts assembled byte by byte from the documented layouts, for the verify tests."""

from __future__ import annotations

import random
import struct
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

X86 = 0x0710_1984_8664_0000
ARM = 0x0710_1984_AAAA_0000
_POLY_REFLECTED = 0x95AC9329AC4BC9B5


def _table() -> list[int]:
    table = []
    for n in range(256):
        crc = n
        for _ in range(8):
            crc = (crc >> 1) ^ _POLY_REFLECTED if crc & 1 else crc >> 1
        table.append(crc)
    return table


_TABLE = _table()


def crc64_reference(data: bytes) -> int:
    """CRC-64/Jones (reflected) computed byte by byte, independent of crcmod: init 0, xorout 0."""
    crc = 0
    for b in data:
        crc = _TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc


def state_bytes(n: int, seed: int = 7) -> bytes:
    return random.Random(seed).randbytes(n)


def snapfile(era: str, *, arch: str = "x86_64", version: int | str | None = None, mem_mib: int = 64,
             state_len: int = 3000, crc: Callable[[bytes], int] | None = None) -> bytes:
    """A snapfile of ``era`` (versionize, bincode, bitcode) with a correct CRC (``crc``: a faster
    implementation for files of megabytes; the byte-by-byte reference by default)."""
    base = X86 if arch == "x86_64" else ARM
    if era == "versionize":
        body = struct.pack("<QHQ", base | 1, int(version if version is not None else 10), mem_mib)
    elif era == "bincode":
        text = str(version or "6.0.0").encode()
        body = struct.pack("<QQ", base, len(text)) + text + struct.pack("<Q", mem_mib)
    elif era == "bitcode":  # magic, then packed data; the version may show up as ASCII
        body = struct.pack("<Q", base) + b"\x01\x06" + (str(version).encode() if version else b"\x9a\x17")
    else:
        raise ValueError(era)
    body += state_bytes(state_len)
    return body + struct.pack("<Q", (crc or crc64_reference)(body))


def with_crc(body: bytes) -> bytes:
    return body + struct.pack("<Q", crc64_reference(body))


def header_v1_3(*, version: int = 3, block_size: int = 4096, size: int, generation: int = 0,
                build_id: str, base_build_id: str | None = None,
                mappings: Sequence[tuple[int, int, str, int]] = ()) -> bytes:
    out = struct.pack("<QQQQ16s16s", version, block_size, size, generation, uuid.UUID(build_id).bytes,
                      uuid.UUID(base_build_id or build_id).bytes)
    for offset, length, bid, storage in mappings:
        out += struct.pack("<QQ16sQ", offset, length, uuid.UUID(bid).bytes, storage)
    return out


def header_v4(*, size: int, build_id: str, mappings: Sequence[tuple[int, int, str, int]], generation: int = 1,
              flags: int | None = 0, v5: bool = False) -> bytes:
    """HEAD framing: [metadata][u8 flags][u32 length][LZ4 frame(builds + mappings)]."""
    import lz4.frame

    meta = struct.pack("<QQQQ16s16s", 5 if v5 else 4, 4096, size, generation, uuid.UUID(build_id).bytes,
                       uuid.UUID(build_id).bytes)
    builds = sorted({bid for _, _, bid, _ in mappings})
    block = struct.pack("<I", len(builds))
    for bid in builds:
        block += struct.pack("<16sq32s", uuid.UUID(bid).bytes, 1 << 20, bytes(32)) + struct.pack("<II", 0, 0)
    if not v5:
        block += struct.pack("<I", len(mappings))
        for offset, length, bid, storage in mappings:
            block += struct.pack("<QQ16sQ", offset, length, uuid.UUID(bid).bytes, storage)
    else:
        table = builds
        block += struct.pack("<I", len(table)) + b"".join(uuid.UUID(b).bytes for b in table)
        block += struct.pack("<I", len(mappings))
        prev = 0
        for offset, _, _, _ in mappings:
            block += _uvarint(offset // 4096 - prev)
            prev = offset // 4096
        block += b"".join(_uvarint(length // 4096) for _, length, _, _ in mappings)
        prev = 0
        for _, _, _, storage in mappings:
            delta = storage // 4096 - prev
            block += _uvarint((delta << 1) ^ (delta >> 63) if delta >= 0 else ((-delta) << 1) - 1)
            prev = storage // 4096
        block += b"".join(_uvarint(table.index(bid)) for _, _, bid, _ in mappings)
    prefix = (bytes([flags]) if flags is not None else b"") + struct.pack("<I", len(block))
    return meta + prefix + bytes(lz4.frame.compress(block))


def _uvarint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def add_snapshot(build_dir: Path, *, era: str = "bincode", version: str | int | None = "6.0.0",
                 mem_mib: int = 64) -> None:
    """snapfile + a random memfile of the right size + the memfile.header E2B writes beside every memfile
    (a v3 header mapping all of it to this build) in an existing build."""
    (build_dir / "snapfile").write_bytes(snapfile(era, version=version, mem_mib=mem_mib))
    (build_dir / "memfile").write_bytes(random.Random(3).randbytes(mem_mib << 20))
    (build_dir / "memfile.header").write_bytes(memfile_header(build_dir.name, mem_mib << 20))


NIL = "00000000-0000-0000-0000-000000000000"


def memfile_header(build_id: str, size: int, *, block_size: int = 4096, data_bytes: int | None = None) -> bytes:
    """The v3 header of a base-layer memfile: its first ``data_bytes`` (default: all) from this build's
    memfile, the rest mapped to the nil build (zeros)."""
    held = size if data_bytes is None else data_bytes
    mappings = [(0, held, build_id, 0)] + ([(held, size - held, NIL, 0)] if held < size else [])
    return header_v1_3(size=size, block_size=block_size, generation=0, build_id=build_id, mappings=mappings)
