"""LZ4 frames written by hand, for headers whose frame lies about its content size (lz4.frame never writes one)."""

from __future__ import annotations

import struct

_M = 0xFFFFFFFF
_P1, _P2, _P3, _P4, _P5 = 2654435761, 2246822519, 3266489917, 668265263, 374761393
MAGIC = b"\x04\x22\x4d\x18"


def _rotl(x: int, r: int) -> int:
    return ((x << r) | (x >> (32 - r))) & _M


def xxh32(data: bytes, seed: int = 0) -> int:
    """XXH32 (the frame descriptor's checksum is its second byte)."""
    n, i = len(data), 0
    if n >= 16:
        v = [(seed + _P1 + _P2) & _M, (seed + _P2) & _M, seed & _M, (seed - _P1) & _M]
        while i + 16 <= n:
            for j in range(4):
                (word,) = struct.unpack_from("<I", data, i + 4 * j)
                v[j] = (_rotl((v[j] + word * _P2) & _M, 13) * _P1) & _M
            i += 16
        h = (_rotl(v[0], 1) + _rotl(v[1], 7) + _rotl(v[2], 12) + _rotl(v[3], 18)) & _M
    else:
        h = (seed + _P5) & _M
    h = (h + n) & _M
    while i + 4 <= n:
        (word,) = struct.unpack_from("<I", data, i)
        h = (_rotl((h + word * _P3) & _M, 17) * _P4) & _M
        i += 4
    while i < n:
        h = (_rotl((h + data[i] * _P5) & _M, 11) * _P1) & _M
        i += 1
    h ^= h >> 15
    h = (h * _P2) & _M
    h ^= h >> 13
    h = (h * _P3) & _M
    return h ^ (h >> 16)


def frame_claiming(content_size: int, payload: bytes = bytes(8)) -> bytes:
    """A valid-looking frame whose header claims ``content_size`` bytes; it holds ``payload`` stored raw."""
    descriptor = bytes([0b0110_1000, 0x70]) + struct.pack("<Q", content_size)  # v01, independent, size; 4 MiB
    check = (xxh32(descriptor) >> 8) & 0xFF
    block = struct.pack("<I", len(payload) | 0x8000_0000) + payload  # high bit: stored uncompressed
    return MAGIC + descriptor + bytes([check]) + block + bytes(4)
