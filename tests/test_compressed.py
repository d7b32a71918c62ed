"""Compressed builds read and checked as upstream writes them: object names from the builds table, frames that
decompress to their declared size and cover the file, the sidecar, the per-build SHA-256 of
cmd/inspect-build -validate (validate.go validateBuild: SHA-256 of the uncompressed data [0, size))."""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path

import pytest

from e2b_artifacts import compressed as co
from e2b_artifacts import header, layout, verify_data
from e2b_artifacts.errors import ArtifactError
from e2b_artifacts.findings import Finding
from e2b_artifacts.header import Codec
from e2b_artifacts.manifest import write_manifest
from tests.storage import compressed as upstream
from tests.storage.builds import make_build

MIB = 1 << 20


def _statuses(findings: list[Finding]) -> set[str]:
    return {f.status for f in findings}


@pytest.mark.parametrize("codec", [Codec.ZSTD, Codec.LZ4])
def test_frames_decompress_and_a_flipped_byte_names_the_frame(tmp_path: Path, codec: Codec) -> None:
    data = os.urandom(3 * MIB) + bytes(2 * MIB)
    blob, frames = upstream.frame(codec, data)
    path = tmp_path / ("memfile" + codec.suffix)
    path.write_bytes(blob)
    record = header.BuildFile(len(data), hashlib.sha256(data).hexdigest(), codec, frames)
    obj = co.DataObject(str(uuid.uuid4()), "memfile", path, record, "own header")
    with co.FrameReader(obj) as reader:
        assert b"".join(piece for _, piece in reader.frames()) == data
    assert co.coverage_problems(obj, len(blob)) == []
    broken = bytearray(blob)
    broken[frames[1].start_c + frames[1].size_c // 2] ^= 0x40
    path.write_bytes(bytes(broken))
    with co.FrameReader(obj) as reader, pytest.raises(co.FrameError) as caught:
        list(reader.frames())
    assert caught.value.index == 1 and f"{path.name} frame 1 " in caught.value.message
    assert obj.build_id in caught.value.message


def test_decompress_frame_refuses_wrong_sizes_and_trailing_bytes() -> None:
    data = os.urandom(5000)
    for codec in (Codec.ZSTD, Codec.LZ4):
        blob = upstream.compress_frame(codec, data)
        assert co.decompress_frame(codec, blob, len(data)) == data
        with pytest.raises(ValueError, match=r"table says 4999|declares 5000 bytes"):
            co.decompress_frame(codec, blob, 4999)
        with pytest.raises(ValueError, match="bytes after the"):
            co.decompress_frame(codec, blob + b"xx", len(data))
        with pytest.raises(ValueError):
            co.decompress_frame(codec, blob[:-9], len(data))


def test_object_names_from_the_builds_table_then_the_ancestors_own_header(tmp_path: Path) -> None:
    ids = upstream.chain(tmp_path, Codec.ZSTD)
    child = header.read_header(tmp_path / ids[2] / layout.MEMFILE_HEADER)
    own = co.resolve(tmp_path, ids[2], layout.MEMFILE, child)
    assert own.name == "memfile.zstd" and own.source == "own header" and own.compressed
    parent = co.resolve(tmp_path, ids[0], layout.MEMFILE, child)
    assert parent.source == "child's builds table" and parent.name == "memfile.zstd"
    # an ancestor left out of the child's builds table is resolved from its own header (#2994, #3447)
    trimmed = header.Header(4, child.block_size, child.size, 2, child.build_id, child.base_build_id,
                            child.mappings, builds={ids[2]: child.builds[ids[2]]})
    assert co.resolve(tmp_path, ids[0], layout.MEMFILE, trimmed).source == "ancestor's own header"
    # a V3 ancestor's data is the plain file
    plain = make_build(tmp_path)
    assert co.resolve(tmp_path, plain, layout.ROOTFS, trimmed).name == layout.ROOTFS


@pytest.mark.parametrize("codec", [Codec.ZSTD, Codec.LZ4])
def test_chain_checks_pass_then_fail_on_one_flipped_byte(tmp_path: Path, codec: Codec) -> None:
    ids = upstream.chain(tmp_path, codec)
    top = tmp_path / ids[2]
    findings = verify_data.check_data_objects(top)
    assert _statuses(findings) == {"ok"}, [f.line() for f in findings]
    checked = {f.message.split(":")[0] for f in findings}
    assert checked == {f"build {b}" for b in ids}  # the top build and both ancestors it draws on
    victim = tmp_path / ids[0] / ("rootfs.ext4" + codec.suffix)
    frames = header.read_header(tmp_path / ids[0] / layout.ROOTFS_HEADER).builds[ids[0]].frames
    blob = bytearray(victim.read_bytes())
    blob[frames[1].start_c + 100] ^= 1
    victim.write_bytes(bytes(blob))
    failed = [f for f in verify_data.check_data_objects(top) if f.status == "FAIL"]
    assert len(failed) == 1
    assert f"build {ids[0]}: rootfs.ext4{codec.suffix} frame 1 " in failed[0].message
    assert verify_data.check_data_objects(top, quick=True) and all(
        f.status == "ok" for f in verify_data.check_data_objects(top, quick=True))  # --quick reads no frames


def test_sidecar_checksum_and_coverage_failures(tmp_path: Path) -> None:
    ids = upstream.chain(tmp_path, Codec.LZ4)
    base = tmp_path / ids[0]
    sidecar = base / "memfile.lz4.uncompressed-size"
    sidecar.write_text("12")
    assert any("says 12, the builds entry" in f.message for f in verify_data.check_data_objects(base))
    sidecar.write_text("twelve")
    assert any("not a decimal size" in f.message for f in verify_data.check_data_objects(base))
    sidecar.unlink()
    warned = [f for f in verify_data.check_data_objects(base) if f.status == "warn"]
    assert len(warned) == 1 and "memfile.lz4.uncompressed-size" in warned[0].message
    # a record whose checksum is not the data's: Checksum MISMATCH, as inspect-build -validate says
    hdr = header.read_header(base / layout.ROOTFS_HEADER)
    record = hdr.builds[ids[0]]
    hdr.builds[ids[0]] = header.BuildFile(record.size, "ab" * 32, record.codec, record.frames)
    (base / layout.ROOTFS_HEADER).write_bytes(header.serialize(hdr))
    assert any("Checksum MISMATCH" in f.message for f in verify_data.check_data_objects(base))
    # a table that stops short of the recorded size
    hdr.builds[ids[0]] = header.BuildFile(record.size, record.sha256, record.codec, record.frames[:-1])
    (base / layout.ROOTFS_HEADER).write_bytes(header.serialize(hdr))
    found = " ".join(f.message for f in verify_data.check_data_objects(base) if f.status == "FAIL")
    assert "frames end at uncompressed" in found and "is in no frame" in found


def test_compressed_object_without_a_v4_header_fails(tmp_path: Path) -> None:
    ids = upstream.chain(tmp_path, Codec.ZSTD)
    (tmp_path / ids[0] / layout.MEMFILE_HEADER).unlink()
    failed = [f for f in verify_data.check_data_objects(tmp_path / ids[0]) if f.status == "FAIL"]
    assert len(failed) == 1 and "memfile.zstd without a v4+ memfile.header" in failed[0].message


def test_a_descendants_record_that_disagrees_with_the_ancestor(tmp_path: Path) -> None:
    ids = upstream.chain(tmp_path, Codec.ZSTD)
    top = tmp_path / ids[2]
    hdr = header.read_header(top / layout.MEMFILE_HEADER)
    record = hdr.builds[ids[0]]
    hdr.builds[ids[0]] = header.BuildFile(record.size + 4096, record.sha256, record.codec, record.frames)
    (top / layout.MEMFILE_HEADER).write_bytes(header.serialize(hdr))
    write_manifest(top, ids[2])
    failed = [f for f in verify_data.check_data_objects(top) if f.status == "FAIL"]
    assert len(failed) == 1 and f"ancestor {ids[0]}" in failed[0].message and "Size MISMATCH" in failed[0].message


def test_missing_ancestor_object(tmp_path: Path) -> None:
    ids = upstream.chain(tmp_path, Codec.ZSTD)
    (tmp_path / ids[1] / "rootfs.ext4.zstd").rename(tmp_path / "aside")
    failed = [f for f in verify_data.check_data_objects(tmp_path / ids[2]) if f.status == "FAIL"]
    assert len(failed) == 1 and f"build {ids[1]}: rootfs.ext4.zstd missing" in failed[0].message


def test_sidecar_reader_follows_fs_object_size(tmp_path: Path) -> None:
    path = tmp_path / "x.uncompressed-size"
    assert co.read_sidecar(path) is None
    path.write_text(" 4096\n")
    assert co.read_sidecar(path) == 4096  # strings.TrimSpace, then ParseInt
    path.write_text("4096" * 40)
    with pytest.raises(ArtifactError, match="not a decimal size"):
        co.read_sidecar(path)
