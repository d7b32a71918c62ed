"""E2B header files: v1-3 parsed, v4/v5 decoded, layout problems named."""

from __future__ import annotations

import struct
import uuid
from pathlib import Path

import lz4.frame
import pytest

from e2b_artifacts import header
from e2b_artifacts.errors import ArtifactError
from tests.verify.craft import header_v1_3, header_v4

A, B, C = (str(uuid.UUID(int=n)) for n in (0xA1, 0xB2, 0xC3))
MIB = 1 << 20


@pytest.mark.parametrize("version", [1, 2, 3])
def test_v1_to_v3(tmp_path: Path, version: int) -> None:
    path = tmp_path / "memfile.header"
    path.write_bytes(header_v1_3(version=version, block_size=2 * MIB, size=8 * MIB, generation=2, build_id=B,
                                 base_build_id=A,
                                 mappings=[(0, 2 * MIB, A, 0), (2 * MIB, 4 * MIB, B, 0),
                                           (6 * MIB, 2 * MIB, header.NIL_BUILD, 0)]))
    hdr = header.read_header(path)
    assert (hdr.version, hdr.block_size, hdr.size, hdr.generation, hdr.build_id, hdr.base_build_id) == (
        version, 2 * MIB, 8 * MIB, 2, B, A)
    assert hdr.mappings is not None and [m.build_id for m in hdr.mappings] == [A, B, header.NIL_BUILD]
    assert hdr.mappings[1].offset == 2 * MIB and hdr.mappings[1].length == 4 * MIB
    assert hdr.mappings[1].storage_offset == 0
    assert hdr.referenced_build_ids() == [A, B]
    assert hdr.required_lengths() == {A: 2 * MIB, B: 4 * MIB}
    assert hdr.problems() == []


def test_empty_mapping_list_means_the_whole_device() -> None:
    hdr = header.parse_header(header_v1_3(size=16 * 4096, build_id=A))
    assert hdr.mappings == [header.Mapping(0, 16 * 4096, A, 0)]
    assert hdr.problems() == []


def test_overlap_gap_short_and_alignment() -> None:
    overlap = header.parse_header(header_v1_3(size=12288, build_id=A, mappings=[
        (0, 8192, A, 0), (4096, 8192, B, 0)]))
    assert any("overlaps" in p for p in overlap.problems())
    gap = header.parse_header(header_v1_3(size=12288, build_id=A, mappings=[(0, 4096, A, 0), (8192, 4096, A, 4096)]))
    assert any("gap [0x1000, 0x2000)" in p for p in gap.problems())
    short = header.parse_header(header_v1_3(size=12288, build_id=A, mappings=[(0, 4096, A, 0)]))
    assert any("short of the size" in p for p in short.problems())
    unaligned = header.parse_header(header_v1_3(size=8192, build_id=A, mappings=[(0, 8192, A, 100)]))
    assert any("not 4 KiB aligned" in p for p in unaligned.problems())
    odd_block = header.parse_header(header_v1_3(block_size=8192, size=8192, build_id=A))
    assert any("block size 8192" in p for p in odd_block.problems())


def test_malformed() -> None:
    with pytest.raises(ArtifactError, match="shorter than the 64-byte metadata"):
        header.parse_header(b"\x03" + bytes(10))
    with pytest.raises(ArtifactError, match="not a multiple of 40"):
        header.parse_header(header_v1_3(size=4096, build_id=A, mappings=[(0, 4096, A, 0)])[:-3])
    with pytest.raises(ArtifactError, match="unknown header version 9"):
        header.parse_header(header_v1_3(version=9, size=4096, build_id=A))


@pytest.mark.parametrize("v5", [False, True])
def test_v4_and_v5(v5: bool) -> None:
    mappings = [(0, 8192, A, 0), (8192, 4096, B, 12288), (12288, 4096, B, 0)]
    data = header_v4(size=4 * 4096, build_id=B, mappings=mappings, flags=1, v5=v5)
    hdr = header.parse_header(data)
    assert hdr.version == (5 if v5 else 4) and hdr.incomplete
    assert hdr.mappings is not None
    assert [(m.offset, m.length, m.build_id, m.storage_offset) for m in hdr.mappings] == mappings
    assert set(hdr.builds) == {A, B} and hdr.problems() == []


def test_v5_fills_nil_gaps_and_v4_without_flags_byte() -> None:
    v5 = header.parse_header(header_v4(size=4 * 4096, build_id=A, mappings=[(4096, 4096, A, 0)], v5=True))
    assert v5.mappings is not None
    assert [(m.offset, m.build_id) for m in v5.mappings] == [(0, header.NIL_BUILD), (4096, A),
                                                             (8192, header.NIL_BUILD)]
    old_v4 = header.parse_header(header_v4(size=4096, build_id=A, mappings=[(0, 4096, A, 0)], flags=None))
    assert old_v4.mappings is not None and old_v4.mappings[0].build_id == A and not old_v4.incomplete
    with pytest.raises(ArtifactError, match="cannot decode the v4 block"):
        header.parse_header(header_v4(size=4096, build_id=A, mappings=[(0, 4096, A, 0)])[:-6])


def test_v4_block_layout_unknown_is_reported_not_guessed() -> None:
    meta = header_v1_3(version=4, size=4096, build_id=A)
    block = b"\x01\x00\x00\x00" + b"\xee" * 13  # one build, then bytes that fit no known layout
    hdr = header.parse_header(meta + b"\x00" + len(block).to_bytes(4, "little") + lz4.frame.compress(block))
    assert hdr.version == 4 and hdr.mappings is None and "layout is not one this tool knows" in hdr.note
    assert hdr.problems() == []  # nothing claimed about mappings it could not read


def test_v4_with_frame_table() -> None:
    meta = header_v1_3(version=4, size=8192, build_id=A)
    block = struct.pack("<I", 1) + uuid.UUID(A).bytes + struct.pack("<q", 8192) + bytes(32)
    block += struct.pack("<II", 1, 2) + struct.pack("<qqii", 0, 0, 4096, 100)
    block += struct.pack("<qqii", 4096, 100, 4096, 90)
    block += struct.pack("<I", 1) + struct.pack("<QQ16sQ", 0, 8192, uuid.UUID(A).bytes, 0)
    hdr = header.parse_header(meta + b"\x00" + struct.pack("<I", len(block)) + lz4.frame.compress(block))
    assert hdr.mappings == [header.Mapping(0, 8192, A, 0)] and hdr.builds[A].size == 8192


def test_parent_build_ids_from_bytes() -> None:
    chained = header_v1_3(size=4 * 4096, build_id=C, base_build_id=A,
                          mappings=[(0, 4096, A, 0), (4096, 4096, header.NIL_BUILD, 0), (8192, 4096, C, 0),
                                    (12288, 4096, B, 4096)])
    assert header.parent_build_ids(chained, C) == [A, B]  # first-use order; nil and the build itself left out
    assert header.parent_build_ids(chained, A) == [C, B]  # the build id of the directory it is read for
    v5 = header_v4(size=2 * 4096, build_id=B, mappings=[(0, 4096, A, 0), (4096, 4096, B, 0)], v5=True)
    assert header.parent_build_ids(v5, B) == [A]
    with pytest.raises(ArtifactError) as caught:
        header.parent_build_ids(chained[:70], C, "gs://bucket/x/rootfs.ext4.header")
    assert caught.value.message.startswith("gs://bucket/x/rootfs.ext4.header: ")
