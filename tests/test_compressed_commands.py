"""The commands on compressed builds: build --compress then verify (a flipped byte FAILs naming build, object
and frame), clone, cold-start/restore."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from e2b_artifacts import coldstart, header, layout, verify_data
from e2b_artifacts.clone import clone
from e2b_artifacts.header import Codec
from e2b_artifacts.settings import Settings
from tests.conftest import cli
from tests.storage import compressed as upstream


def test_build_compress_verify_and_a_flipped_frame(tmp_path: Path, sample_tar: Path, envd_standin: Path) -> None:
    bid = str(uuid.uuid4())
    built = cli("--storage", tmp_path, "build", "--rootfs-tar", sample_tar, "--envd", envd_standin, "--build-id", bid,
                "--disk-size-mb", "8", "--compress", "lz4")
    assert built.returncode == 0, built.stderr
    names = {p.name for p in (tmp_path / bid).iterdir()}
    assert {"rootfs.ext4.lz4", "rootfs.ext4.lz4.uncompressed-size", layout.ROOTFS_HEADER} <= names
    assert layout.ROOTFS not in names
    checked = cli("--storage", tmp_path, "verify", bid, "--json")
    assert checked.returncode == 0, checked.stdout
    report = json.loads(checked.stdout)
    by_check = {f["check"]: f for f in report["findings"]}
    assert by_check["rootfs.fsck"]["status"] == "ok" and by_check["data.rootfs.ext4"]["status"] == "ok"
    record = header.read_header(tmp_path / bid / layout.ROOTFS_HEADER).builds[bid]
    target = record.frames[-1]
    obj = tmp_path / bid / "rootfs.ext4.lz4"
    blob = bytearray(obj.read_bytes())
    blob[target.start_c + target.size_c // 2] ^= 0x10
    obj.write_bytes(bytes(blob))
    failed = cli("--storage", tmp_path, "verify", bid)
    assert failed.returncode == 1
    line = next(x for x in failed.stdout.splitlines() if x.startswith("FAIL data.rootfs.ext4"))
    assert f"build {bid}: rootfs.ext4.lz4 frame {len(record.frames) - 1} " in line, failed.stdout


def test_clone_of_a_compressed_child(tmp_path: Path) -> None:
    ids = upstream.chain(tmp_path, Codec.ZSTD)
    result = clone(tmp_path / ids[2], tmp_path)
    copy = tmp_path / result.build_id
    hdr = header.read_header(copy / layout.MEMFILE_HEADER)
    assert hdr.build_id == result.build_id and set(hdr.builds) == {ids[0], ids[1], result.build_id}
    assert (copy / "memfile.zstd").read_bytes() == (tmp_path / ids[2] / "memfile.zstd").read_bytes()
    assert (copy / "memfile.zstd.uncompressed-size").is_file()
    findings = verify_data.check_data_objects(copy)
    assert findings and {f.status for f in findings} == {"ok"}, [f.line() for f in findings]


def test_cold_start_and_restore_move_the_compressed_snapshot(tmp_path: Path) -> None:
    ids = upstream.chain(tmp_path, Codec.LZ4)
    build = tmp_path / ids[1]
    settings = Settings(flags={"LOCAL_TEMPLATE_STORAGE_BASE_PATH": str(tmp_path),
                               "TEMPLATE_CACHE_DIR": str(tmp_path / "tc")}, env={})
    result = coldstart.cold_start(build, settings)
    moved = {m.source.name for m in result.moves}
    assert {"memfile.lz4", "memfile.lz4.uncompressed-size", "memfile.header", "snapfile"} <= moved
    assert not (build / "memfile.lz4").exists() and (build / "rootfs.ext4.lz4").exists()
    coldstart.restore(build, result.timestamp)
    assert {f.status for f in verify_data.check_data_objects(build)} == {"ok"}
