"""E2B header files: v1-3 parsed, v4/v5 decoded, layout problems named."""

from __future__ import annotations

import re
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
    assert any("overlaps" in str(p) for p in overlap.problems())
    gap = header.parse_header(header_v1_3(size=12288, build_id=A, mappings=[(0, 4096, A, 0), (8192, 4096, A, 4096)]))
    assert any("gap [0x1000, 0x2000)" in str(p) for p in gap.problems())
    short = header.parse_header(header_v1_3(size=12288, build_id=A, mappings=[(0, 4096, A, 0)]))
    assert any("short of the size" in str(p) for p in short.problems())
    # An unaligned storage offset is refused on load (header.go NewHeader -> compact.go NewMapping), not listed.
    with pytest.raises(header.HeaderRejected, match="storage offset 0x64 is not a multiple of 4096"):
        header.parse_header(header_v1_3(size=8192, build_id=A, mappings=[(0, 8192, A, 100)]))
    odd_block = header.parse_header(header_v1_3(block_size=8192, size=8192, build_id=A))
    assert any("block size 8192" in str(p) and p.severity == "warn" for p in odd_block.problems())


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
    # No fallback for the flagless early v4 layout: HEAD's deserializeV4 reads byte 0 as the flags and fails.
    with pytest.raises(header.HeaderRejected, match=r"no flags byte.*\[flags-byte: "):
        header.parse_header(header_v4(size=4096, build_id=A, mappings=[(0, 4096, A, 0)], flags=None))
    with pytest.raises(ArtifactError, match="cannot decode the v4 block"):
        header.parse_header(header_v4(size=4096, build_id=A, mappings=[(0, 4096, A, 0)])[:-6])


def test_v4_block_that_fits_no_layout_is_refused() -> None:
    """Upstream has no 'layout unknown': readV4BuildsSection refuses a count the block cannot hold."""
    meta = header_v1_3(version=4, size=4096, build_id=A)
    block = b"\x01\x00\x00\x00" + b"\xee" * 13  # one build, then 13 bytes
    with pytest.raises(header.HeaderRejected, match=r"1 builds in the 13 bytes left .*\[builds-count: "):
        header.parse_header(meta + b"\x00" + len(block).to_bytes(4, "little") + lz4.frame.compress(block))


def _v4_with_tables(tables: list[tuple[str, int, list[tuple[int, int, int, int]]]],
                    mappings: list[tuple[int, int, str, int]], size: int = 8192) -> bytes:
    """A v4 header whose builds table holds ``(build, codec, frames)``, byte by byte as upstream's
    ``writeV4BuildsSection`` (serialization_v4.go) and ``FrameTable.Serialize`` (compress_frame_table.go) lay it out."""
    meta = header_v1_3(version=4, size=size, build_id=A)
    block = struct.pack("<I", len(tables))
    for bid, codec, frames in tables:
        block += uuid.UUID(bid).bytes + struct.pack("<q", 8192) + bytes(range(32))
        block += struct.pack("<II", codec, len(frames)) + b"".join(struct.pack("<qqii", *f) for f in frames)
    block += struct.pack("<I", len(mappings))
    block += b"".join(struct.pack("<QQ16sQ", o, n, uuid.UUID(b).bytes, s) for o, n, b, s in mappings)
    return meta + b"\x00" + struct.pack("<I", len(block)) + bytes(lz4.frame.compress(block))


def test_v4_frame_table_parsed_as_upstream_lays_it_out() -> None:
    data = _v4_with_tables([(A, 2, [(0, 0, 4096, 100), (4096, 100, 4096, 90)]), (B, 0, [])],
                           [(0, 4096, A, 0), (4096, 4096, B, 0)])
    hdr = header.parse_header(data)
    a, b = hdr.builds[A], hdr.builds[B]
    assert (a.size, a.sha256, a.codec, a.compressed) == (8192, bytes(range(32)).hex(), header.Codec.LZ4, True)
    assert a.frames == (header.Frame(0, 0, 4096, 100), header.Frame(4096, 100, 4096, 90))
    assert a.frames[1].end_u == 8192 and a.frames[1].end_c == 190
    assert (a.frame_at(0), a.frame_at(4096), a.frame_at(8191), a.frame_at(8192)) == (0, 1, 1, None)
    assert (b.codec, b.frames, b.compressed) == (header.Codec.NONE, (), False)
    assert header.Codec.ZSTD.suffix == ".zstd" and header.Codec.LZ4.suffix == ".lz4" and header.Codec.NONE.suffix == ""


def test_v4_sparse_frame_table_is_accepted() -> None:
    """A trimmed table has gaps in U-space (compress_frame_table.go: "Sparse tables ... are supported")."""
    hdr = header.parse_header(_v4_with_tables([(A, 1, [(0, 0, 4096, 10), (1 << 20, 500, 4096, 10)])],
                                              [(0, 8192, A, 0)]))
    assert hdr.builds[A].frame_at(8192) is None and hdr.builds[A].frame_at((1 << 20) + 1) == 1


@pytest.mark.parametrize(("codec", "frames", "rule"), [
    (0, [(0, 0, 4096, 10)], "codec 0 (none) with 1 frames"),
    (2, [(0, 0, 0, 10)], "zero or negative size"),
    (2, [(0, 0, 4096, -1)], "zero or negative size"),
    (2, [(4096, 0, 4096, 10), (0, 10, 4096, 10)], "starts at uncompressed 0, before the previous frame ends"),
    (2, [(0, 0, 4096, 10), (4096, 5, 4096, 10)], "starts at compressed 5, before the previous frame ends"),
    (7, [(0, 0, 4096, 10)], "unknown codec 7"),
])
def test_v4_frame_table_rules_of_deserialize_frame_table(codec: int, frames: list[tuple[int, int, int, int]],
                                                         rule: str) -> None:
    """Each refusal of upstream's DeserializeFrameTable (compress_frame_table.go) refuses the whole header."""
    with pytest.raises(ArtifactError, match=re.escape(rule)):
        header.parse_header(_v4_with_tables([(A, codec, frames)], [(0, 8192, A, 0)]))


def test_v4_frame_count_over_the_cap_or_the_block() -> None:
    meta = header_v1_3(version=4, size=8192, build_id=A)
    for count, rule in ((header.MAX_FRAMES + 1, "over upstream's maximum"), (3, "do not fit in the block")):
        block = struct.pack("<I", 1) + uuid.UUID(A).bytes + struct.pack("<q", 8192) + bytes(32)
        block += struct.pack("<II", 2, count) + struct.pack("<qqii", 0, 0, 4096, 10) + struct.pack("<I", 0)
        with pytest.raises(ArtifactError, match=rule):
            header.parse_header(meta + b"\x00" + struct.pack("<I", len(block)) + lz4.frame.compress(block))


def test_v4_writer_round_trip_and_upstream_framing() -> None:
    frames = (header.Frame(0, 0, 2 * MIB, 700), header.Frame(2 * MIB, 700, 2 * MIB, 800),
              header.Frame(4 * MIB, 1500, 2 * MIB, 900))
    hdr = header.Header(4, 4096, 8 * MIB, 2, C, A, header.Mappings.of([
        header.Mapping(0, 2 * MIB, A, 0), header.Mapping(2 * MIB, 2 * MIB, C, 0),
        header.Mapping(4 * MIB, 4 * MIB, header.NIL_BUILD, 0)]),
        builds={C: header.BuildFile(2 * MIB, "ab" * 32), A: header.BuildFile(6 * MIB, "cd" * 32, header.Codec.ZSTD,
                                                                                frames)})
    data = header.serialize(hdr)
    assert data[64] == 0 and struct.unpack_from("<I", data, 65)[0] == len(lz4.frame.decompress(data[69:]))
    # compressLZ4 (serialization_v4.go): 4 MiB blocks, block checksums, content checksum
    flg, bd = data[69 + 4], data[69 + 5]
    assert data[69:73] == b"\x04\x22\x4d\x18" and flg & 0x10 and flg & 0x04 and bd >> 4 == 7
    block = lz4.frame.decompress(data[69:])
    assert block[4:20] == uuid.UUID(A).bytes  # sorted by id bytes: A (0xA1) before C (0xC3)
    back = header.parse_header(data)
    assert back.mappings == hdr.mappings and back.builds[C] == hdr.builds[C]
    # TrimToRanges: only the frame overlapping A's one mapping [0, 2 MiB) is kept
    assert back.builds[A].frames == frames[:1] and back.builds[A].codec == header.Codec.ZSTD
    assert header.serialize(back) == data  # trimming again changes nothing
    hdr.incomplete = True
    assert header.serialize(hdr)[64] == 1
    hdr.version = 5
    with pytest.raises(ArtifactError, match="only 1 to 4"):
        header.serialize(hdr)


def test_trim_frames_as_trim_to_ranges() -> None:
    frames = tuple(header.Frame(n * 100, n * 10, 100, 10) for n in range(5))
    assert header.trim_frames(frames, []) == frames
    assert header.trim_frames(frames, [(150, 151), (399, 400)]) == (frames[1], frames[3])
    assert header.trim_frames(frames, [(100, 300)]) == frames[1:3]  # end is exclusive
    assert header.trim_frames(frames, [(600, 700)]) == ()


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
