"""cold-start / restore edge cases: dry run, caches on another filesystem, conflicts, unknown timestamps."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from e2b_artifacts import coldstart, manifest
from e2b_artifacts.errors import ArtifactError
from e2b_artifacts.settings import Settings

BID = "b-cold"


@pytest.fixture
def shm_dir() -> Iterator[Path]:
    """A directory on tmpfs, i.e. another filesystem than the build."""
    path = Path("/dev/shm") / f"e2b-artifact-test-{os.getpid()}"
    path.mkdir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


def make(tmp_path: Path, template_cache: Path, chunk_cache: Path | None) -> tuple[Path, Settings]:
    storage = tmp_path / "templates"
    bdir = storage / BID
    bdir.mkdir(parents=True)
    for name, data in (("rootfs.ext4", b"r" * 100), ("metadata.json", b"{}"), ("memfile", b"m" * 8192),
                       ("snapfile", b"s" * 300), ("memfile.header", b"h" * 64)):
        (bdir / name).write_bytes(data)
    manifest.write_manifest(bdir, BID)
    (template_cache / BID / "cache" / "u1").mkdir(parents=True)
    (template_cache / BID / "cache" / "u1" / "snapfile").write_bytes(b"cached")
    flags = {"LOCAL_TEMPLATE_STORAGE_BASE_PATH": str(storage), "TEMPLATE_CACHE_DIR": str(template_cache)}
    if chunk_cache is not None:
        (chunk_cache / BID / "memfile").mkdir(parents=True)
        (chunk_cache / BID / "memfile" / "size.txt").write_text("8192")
        flags["SHARED_CHUNK_CACHE_PATH"] = str(chunk_cache)
    return bdir, Settings(flags=flags, env={})


def snapshot_of(*roots: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for r in roots for p in sorted(r.rglob("*")) if p.is_file()
            and ".quarantine" not in p.parts and coldstart.CACHE_SIDE_DIR not in p.parts}


def test_dry_run_moves_nothing(tmp_path: Path) -> None:
    bdir, settings = make(tmp_path, tmp_path / "tc", None)
    before = snapshot_of(bdir, tmp_path / "tc")
    result = coldstart.cold_start(bdir, settings, dry_run=True)
    assert {m.source.name for m in result.moves} == {"memfile", "snapfile", "memfile.header", BID}
    assert snapshot_of(bdir, tmp_path / "tc") == before and not (bdir / ".quarantine").exists()


def test_cache_on_another_filesystem_is_renamed_beside_itself(tmp_path: Path, shm_dir: Path) -> None:
    bdir, settings = make(tmp_path, tmp_path / "tc", shm_dir)
    before = snapshot_of(bdir, tmp_path / "tc", shm_dir)
    result = coldstart.cold_start(bdir, settings)
    chunk_move = next(m for m in result.moves if m.what == "SHARED_CHUNK_CACHE_PATH")
    assert chunk_move.dest == shm_dir / coldstart.CACHE_SIDE_DIR / result.timestamp / BID
    template_move = next(m for m in result.moves if m.what == "TEMPLATE_CACHE_DIR")
    assert template_move.dest.is_relative_to(result.quarantine)
    assert (result.quarantine / coldstart.RECORD_NAME).is_file()
    # the manifest no longer lists the quarantined files, so verify does not miss them
    listed = manifest.load_manifest(bdir)
    assert listed is not None and set(listed.files) == {"rootfs.ext4", "metadata.json"}
    assert coldstart.list_quarantines(bdir) == [result.timestamp]

    restored = coldstart.restore(bdir, result.timestamp)
    assert restored.manifest_restored and len(restored.moves) == 5
    assert snapshot_of(bdir, tmp_path / "tc", shm_dir) == before
    assert not (shm_dir / coldstart.CACHE_SIDE_DIR).exists() and not (bdir / ".quarantine").exists()


def test_restore_refuses_to_overwrite_and_moves_nothing(tmp_path: Path) -> None:
    bdir, settings = make(tmp_path, tmp_path / "tc", None)
    result = coldstart.cold_start(bdir, settings)
    (bdir / "snapfile").write_bytes(b"a newer snapshot")
    with pytest.raises(ArtifactError, match="exist again") as err:
        coldstart.restore(bdir, result.timestamp)
    assert err.value.code == 6
    assert (bdir / "snapfile").read_bytes() == b"a newer snapshot" and not (bdir / "memfile").exists()
    (bdir / "snapfile").rename(tmp_path / "newer")
    coldstart.restore(bdir, result.timestamp)
    assert (bdir / "snapfile").read_bytes() == b"s" * 300


def test_unknown_timestamp_and_nothing_to_move(tmp_path: Path) -> None:
    bdir, settings = make(tmp_path, tmp_path / "tc", None)
    first = coldstart.cold_start(bdir, settings)
    with pytest.raises(ArtifactError, match="no quarantine '20990101T000000Z'") as err:
        coldstart.restore(bdir, "20990101T000000Z")
    assert first.timestamp in err.value.hint
    with pytest.raises(ArtifactError, match=r"no snapshot files and no cache entries"):
        coldstart.cold_start(bdir, settings)


def test_filesystem_only_mark_and_restore(tmp_path: Path) -> None:
    bdir, settings = make(tmp_path, tmp_path / "tc", None)
    (bdir / "metadata.json").write_bytes(b'{"version": 2, "template": {"build_id": "b-cold"}}')
    manifest.write_manifest(bdir, BID)
    before = snapshot_of(bdir, tmp_path / "tc")
    result = coldstart.cold_start(bdir, settings, filesystem_only=True)
    assert result.metadata_marked
    doc = json.loads((bdir / "metadata.json").read_text())
    assert doc["filesystem_only"] is True and doc["template"] == {"build_id": "b-cold"}
    assert manifest.check_manifest(bdir, quick=False) == []
    restored = coldstart.restore(bdir, result.timestamp)
    assert restored.metadata_restored and snapshot_of(bdir, tmp_path / "tc") == before


def test_metadata_changed_after_cold_start_is_kept(tmp_path: Path) -> None:
    bdir, settings = make(tmp_path, tmp_path / "tc", None)
    original = (bdir / "metadata.json").read_bytes()
    result = coldstart.cold_start(bdir, settings, filesystem_only=True)
    (bdir / "metadata.json").write_text('{"edited": true}')
    restored = coldstart.restore(bdir, result.timestamp)
    assert not restored.metadata_restored and restored.metadata_kept_at is not None
    assert restored.metadata_kept_at.read_bytes() == original
    assert json.loads((bdir / "metadata.json").read_text()) == {"edited": True}


def test_restore_completes_a_cold_start_killed_between_two_renames(tmp_path: Path) -> None:
    """The state a kill inside the renames leaves: the record lists every planned move, state "moving",
    the manifest already without the snapshot files, memfile moved, the rest still in place."""
    bdir, settings = make(tmp_path, tmp_path / "tc", None)
    before = snapshot_of(bdir, tmp_path / "tc")
    plan = coldstart.plan_cold_start(bdir, settings)
    plan.quarantine.mkdir(parents=True)
    record = {"build_id": BID, "timestamp": plan.timestamp, "build_dir": str(bdir), "state": "moving",
              "moves": [m.to_dict() for m in plan.moves], "manifest": (bdir / "artifact-manifest.json").read_text(),
              "metadata": None}
    (plan.quarantine / coldstart.RECORD_NAME).write_text(json.dumps(record))
    manifest.drop_manifest_entries(bdir, ["memfile", "snapfile", "memfile.header"])
    first = next(m for m in plan.moves if m.source.name == "memfile")
    first.dest.parent.mkdir(parents=True, exist_ok=True)
    os.rename(first.source, first.dest)
    result = coldstart.restore(bdir, plan.timestamp)
    assert [m.dest.name for m in result.moves] == ["memfile"]  # only what had moved comes back
    assert snapshot_of(bdir, tmp_path / "tc") == before
    assert manifest.check_manifest(bdir, quick=False) == []
    assert not (bdir / ".quarantine").exists()


def test_restore_reads_its_record_only_as_a_bounded_regular_file(tmp_path: Path) -> None:
    bdir, settings = make(tmp_path, tmp_path / "tc", None)
    result = coldstart.cold_start(bdir, settings)
    record = result.quarantine / coldstart.RECORD_NAME
    record.unlink()
    os.mkfifo(record)  # a FIFO would block a plain read forever
    with pytest.raises(ArtifactError) as err:  # refused at once, not read
        coldstart.restore(bdir, result.timestamp)
    assert "no quarantine" in err.value.message
    record.unlink()
    record.write_text("[1, 2]")
    with pytest.raises(ArtifactError) as err:
        coldstart.restore(bdir, result.timestamp)
    assert "is not a quarantine record" in err.value.message
