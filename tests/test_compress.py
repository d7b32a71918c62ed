"""Plain builds into upstream's compressed form and back (e2b_artifacts.compress): packed diffs in 2 MiB frames,
V4 headers whose builds table the checks of cmd/inspect-build -validate accept, byte-identical round trips."""

from __future__ import annotations

import os
import subprocess
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from e2b_artifacts import compress, header, layout, verify_data, verify_rootfs
from e2b_artifacts.errors import ArtifactError
from e2b_artifacts.header import Codec
from e2b_artifacts.manifest import write_manifest
from tests.conftest import make_ext4
from tests.storage import compressed as upstream
from tests.storage.builds import make_build, tree_digest

MIB = 1 << 20


def plain_chain(root: Path) -> list[str]:
    """Three plain builds (v3 headers) with zero blocks, a hole and a memfile in the base."""
    base = make_build(root, rootfs_blocks=1200, extra={"memfile": 6 * MIB})
    rootfs = root / base / layout.ROOTFS
    data = bytearray(rootfs.read_bytes())
    data[40 * 4096:700 * 4096] = bytes(660 * 4096)  # zero blocks: dropped from the packed data
    rootfs.write_bytes(bytes(data))
    with (root / base / layout.MEMFILE).open("r+b") as fh:  # a hole of one 2 MiB block (headerless memfile)
        fh.seek(2 * MIB)
        fh.write(bytes(2 * MIB))
    subprocess.run(["fallocate", "--dig-holes", str(root / base / layout.MEMFILE)], check=True)
    write_manifest(root / base, base)
    child = make_build(root, parents=[base], rootfs_blocks=600)
    leaf = make_build(root, parents=[base, child], rootfs_blocks=300)
    return [base, child, leaf]


def compress_chain(src: Path, out: Path, ids: list[str], codec: Codec) -> dict[str, compress.CompressResult]:
    results = {}
    packed: dict[tuple[str, str], compress.Packed] = {}
    with ThreadPoolExecutor(2) as pool:
        for bid in ids:
            (out / bid).mkdir(parents=True)
            results[bid] = compress.compress_build(src / bid, out / bid, codec, packed, pool)
    return results


def device(root: Path, build_id: str, data_name: str, tmp: Path) -> bytes:
    hdr = header.read_header(root / build_id / layout.HEADER_OF[data_name])
    out = tmp / f"{build_id}-{root.name}.device"
    verify_rootfs.assemble(hdr, root / build_id, data_name, out)
    return out.read_bytes()


@pytest.mark.parametrize("codec", [Codec.ZSTD, Codec.LZ4])
def test_round_trip_is_byte_identical_and_devices_agree(tmp_path: Path, codec: Codec) -> None:
    src, out, back = tmp_path / "src", tmp_path / "out", tmp_path / "back"
    ids = plain_chain(src)
    results = compress_chain(src, out, ids, codec)
    for bid in ids:
        names = {p.name for p in (out / bid).iterdir()}
        assert layout.ROOTFS not in names and f"rootfs.ext4{codec.suffix}" in names
        assert f"rootfs.ext4{codec.suffix}.uncompressed-size" in names and layout.PLAIN_RECORD in names
        assert {f.status for f in verify_data.check_data_objects(out / bid)} == {"ok"}
        # the leaf's device reads the same bytes through the packed, compressed chain as through the plain one
        assert device(out, bid, layout.ROOTFS, tmp_path) == device(src, bid, layout.ROOTFS, tmp_path)
    base = results[ids[0]].files
    assert base[layout.ROOTFS]["packed"] == (1200 - 660) * 4096  # zero blocks cost nothing
    assert base[layout.MEMFILE]["packed"] == 4 * MIB  # nor does the hole
    for bid in ids:
        (back / bid).mkdir(parents=True)
        compress.decompress_build(out / bid, back / bid)
        assert tree_digest(back / bid) == tree_digest(src / bid)
    assert device(back, ids[2], layout.ROOTFS, tmp_path) == device(src, ids[2], layout.ROOTFS, tmp_path)


def test_upstream_form_of_one_build(tmp_path: Path) -> None:
    src, out = tmp_path / "src", tmp_path / "out"
    ids = plain_chain(src)
    compress_chain(src, out, ids[:2], Codec.ZSTD)
    hdr = header.read_header(out / ids[0] / layout.MEMFILE_HEADER)
    assert hdr.version == 4 and hdr.raw_version == 4
    record = hdr.builds[ids[0]]
    assert record.codec == Codec.ZSTD and [f.size_u for f in record.frames] == [2 * MIB, 2 * MIB]
    assert (out / ids[0] / "memfile.zstd.uncompressed-size").read_text() == str(record.size)
    # no header: upstream's headerless fallback (2 MiB blocks); the hole became a nil mapping, the data after it
    # is read from packed offset 2 MiB
    assert hdr.block_size == 2 * MIB and hdr.size == 6 * MIB
    assert [(m.offset, m.build_id == header.NIL_BUILD, m.storage_offset) for m in hdr.mappings or []] == [
        (0, False, 0), (2 * MIB, True, 0), (4 * MIB, False, 2 * MIB)]
    child = header.read_header(out / ids[1] / layout.ROOTFS_HEADER)
    assert set(child.builds) == {ids[0], ids[1]}  # the ancestor's record travels with the child, as ToDiffHeader
    assert child.builds[ids[0]].sha256 == header.read_header(out / ids[0] / layout.ROOTFS_HEADER).builds[ids[0]].sha256


def test_headerless_ext4_rootfs_compresses_and_checks_as_a_filesystem(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    for d in ("proc", "sys", "dev", "sbin", "usr/bin"):
        (tree / d).mkdir(parents=True)
    (tree / "usr/bin/data").write_bytes(os.urandom(3 * MIB))
    bid = str(uuid.uuid4())
    plain = tmp_path / "plain" / bid
    plain.mkdir(parents=True)
    make_ext4(plain / layout.ROOTFS, tree, "24M")
    write_manifest(plain, bid)
    out = tmp_path / "out" / bid
    result = compress_chain(plain.parent, out.parent, [bid], Codec.LZ4)[bid]
    assert result.stored_bytes < 5 * MIB < result.plain_bytes  # 24 MiB image, 3 MiB of random file data
    fsck = [f for f in verify_rootfs.check_build_rootfs(out, init_mode="envd", arch="x86_64")
            if f.check == "rootfs.fsck"]
    assert [f.status for f in fsck] == ["ok"]
    back = tmp_path / "back" / bid
    back.mkdir(parents=True)
    compress.decompress_build(out, back)
    assert tree_digest(back) == tree_digest(plain) and not (back / layout.ROOTFS_HEADER).exists()


def test_upstream_compressed_build_decompresses_to_packed_data_and_v3(tmp_path: Path) -> None:
    ids = upstream.chain(tmp_path / "up", Codec.ZSTD)
    back = tmp_path / "back"
    for bid in ids:
        (back / bid).mkdir(parents=True)
        compress.decompress_build(tmp_path / "up" / bid, back / bid)
        assert header.read_header(back / bid / layout.ROOTFS_HEADER).version == 3
    assert device(back, ids[2], layout.MEMFILE, tmp_path) == upstream.device(tmp_path / "up", ids[2], layout.MEMFILE)


def test_refusals(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / make_build(src)).rename(src / "not-a-uuid")
    with ThreadPoolExecutor(1) as pool, pytest.raises(ArtifactError, match="not a UUID"):
        compress.compress_build(src / "not-a-uuid", tmp_path, Codec.ZSTD, {}, pool)
    ids = upstream.chain(tmp_path / "up", Codec.LZ4)
    (tmp_path / "o").mkdir()
    with ThreadPoolExecutor(1) as pool, pytest.raises(ArtifactError, match="already holds memfile compressed"):
        compress.compress_build(tmp_path / "up" / ids[0], tmp_path / "o", Codec.ZSTD, {}, pool)
    with pytest.raises(ArtifactError, match="unknown compression 'gzip'"):
        compress.codec_of("gzip")
