"""The integrity manifest: what it lists, and how changes show up."""

from __future__ import annotations

import json
from pathlib import Path

import blake3
import pytest

from e2b_artifacts import manifest
from e2b_artifacts.errors import ArtifactError


def _build(tmp_path: Path) -> Path:
    d = tmp_path / "b1"
    d.mkdir()
    (d / "rootfs.ext4").write_bytes(b"r" * 5000)
    (d / "metadata.json").write_text('{"version": 2}')
    (d / "memfile").write_bytes(bytes(range(256)) * 64)
    (d / ".quarantine").mkdir()
    (d / ".hidden").write_text("x")
    (d / "snapfile.tmp").write_text("partial")
    (d / "metadata.json.orig").write_text("{}")
    (d / "memfile.backup").write_text("kept by hand")
    return d


def test_hash_file_matches_blake3_of_content(tmp_path: Path) -> None:
    p = tmp_path / "f"
    data = bytes(range(256)) * 40000  # crosses several read chunks
    p.write_bytes(data)
    assert manifest.hash_file(p) == blake3.blake3(data).hexdigest()


def test_write_lists_artifacts_only(tmp_path: Path) -> None:
    d = _build(tmp_path)
    m = manifest.write_manifest(d, "b1")
    doc = json.loads((d / manifest.FILE_NAME).read_text())
    assert doc["format"] == 1 and doc["hash"] == "blake3" and doc["build_id"] == "b1"
    assert doc["tool"].startswith("e2b-artifact ")
    assert sorted(doc["files"]) == ["memfile", "metadata.json", "rootfs.ext4"]
    assert doc["files"]["rootfs.ext4"] == {"size": 5000, "blake3": blake3.blake3(b"r" * 5000).hexdigest()}
    assert manifest.load_manifest(d) == m
    assert manifest.check_manifest(d, quick=False) == []


def test_changes_are_named(tmp_path: Path) -> None:
    d = _build(tmp_path)
    manifest.write_manifest(d, "b1")
    with (d / "memfile").open("r+b") as fh:  # same size, one byte flipped
        fh.seek(100)
        fh.write(b"\xff")
    (d / "rootfs.ext4").write_bytes(b"short")
    (d / "metadata.json").unlink()
    (d / "snapfile").write_bytes(b"new")
    found = {(m.name, m.problem) for m in manifest.check_manifest(d, quick=False)}
    assert found == {("memfile", "hash"), ("rootfs.ext4", "size"), ("metadata.json", "missing"),
                     ("snapfile", "unlisted")}
    quick = {(m.name, m.problem) for m in manifest.check_manifest(d, quick=True)}
    assert ("memfile", "hash") not in quick and ("rootfs.ext4", "size") in quick


def test_update_entry_and_missing_manifest(tmp_path: Path) -> None:
    d = _build(tmp_path)
    assert manifest.load_manifest(d) is None
    assert manifest.check_manifest(d, quick=False) == []
    assert manifest.update_manifest_entry(d, "metadata.json") is None
    manifest.write_manifest(d, "b1")
    (d / "metadata.json").write_text('{"version": 2, "template": {}}')
    assert [m.name for m in manifest.check_manifest(d, quick=False)] == ["metadata.json"]
    manifest.update_manifest_entry(d, "metadata.json")
    assert manifest.check_manifest(d, quick=False) == []


def test_size_only_entries_and_malformed(tmp_path: Path) -> None:
    d = _build(tmp_path)
    manifest.write_manifest(d, "b1", hash_data=False)
    with (d / "memfile").open("r+b") as fh:
        fh.write(b"\xff")
    assert manifest.check_manifest(d, quick=False) == []  # nothing to compare but sizes
    (d / manifest.FILE_NAME).write_text("{not json")
    with pytest.raises(ArtifactError, match="malformed integrity manifest"):
        manifest.load_manifest(d)


def test_hash_file_errors_and_early_stop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ArtifactError, match="cannot read"):
        manifest.hash_file(tmp_path)  # a directory
    big = tmp_path / "big"
    monkeypatch.setattr(manifest, "HASH_WINDOW", 1 << 16)  # several windows without a large file
    big.write_bytes(bytes(3 * manifest.HASH_WINDOW + 5))
    seen: list[int] = []

    def stop_after_one(n: int) -> None:
        seen.append(n)
        raise RuntimeError("consumer gave up")

    with pytest.raises(RuntimeError, match="gave up"):
        manifest.hash_file(big, stop_after_one)  # the caller's exception stops the hashing
    assert seen == [manifest.HASH_WINDOW]
    sizes: list[int] = []
    assert manifest.hash_file(big, sizes.append) == blake3.blake3(bytes(3 * manifest.HASH_WINDOW + 5)).hexdigest()
    assert sizes == [manifest.HASH_WINDOW] * 3 + [5]
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert manifest.hash_file(empty) == blake3.blake3(b"").hexdigest()
    assert manifest.hash_file(tmp_path / "big") == manifest.hash_file(big)


def test_manifest_naming_paths_outside_the_build_is_refused(tmp_path: Path) -> None:
    d = _build(tmp_path)
    manifest.write_manifest(d, "b1")
    doc = json.loads((d / manifest.FILE_NAME).read_text())
    doc["files"]["../../etc/shadow"] = {"size": 1, "blake3": None}
    (d / manifest.FILE_NAME).write_text(json.dumps(doc))
    with pytest.raises(ArtifactError, match=r"'\.\./\.\./etc/shadow', not a file name") as err:
        manifest.check_manifest(d, quick=False)
    assert err.value.code == 8


def test_parse_reads_the_bytes_of_a_manifest(tmp_path: Path) -> None:
    d = _build(tmp_path)
    written = manifest.write_manifest(d, "b1")
    assert manifest.parse((d / manifest.FILE_NAME).read_bytes()) == written == manifest.load_manifest(d)
    for bad, detail in ((b"{not json", "Expecting property name"), (b"[]", '"format": 1'),
                        (b'{"format": 1, "files": {"../x": {"size": 1, "blake3": null}}}', "'../x'"),
                        (b'{"format": 1, "files": {"memfile": {"size": -1}}}', "files.memfile"),
                        (b'\xff\xfe', "malformed")):
        with pytest.raises(ArtifactError) as caught:
            manifest.parse(bad, "s3://bucket/b1/artifact-manifest.json")
        message = caught.value.message
        assert message.startswith("s3://bucket/b1/artifact-manifest.json: malformed integrity manifest"), message
        assert detail in message


def test_hash_file_of_a_sparse_file(tmp_path: Path) -> None:
    """Holes are hashed as zeros from memory, data regions mapped: the same BLAKE3 as the whole content."""
    sparse = tmp_path / "sparse"
    with sparse.open("wb") as fh:
        fh.truncate(9 << 20)
        fh.seek((3 << 20) + 100)  # data in the middle, not page aligned
        fh.write(b"x" * 5000)
        fh.seek((9 << 20) - 7)  # and at the very end
        fh.write(b"tail")
    content = sparse.read_bytes()
    sizes: list[int] = []
    assert manifest.hash_file(sparse, sizes.append) == blake3.blake3(content).hexdigest()
    assert sum(sizes) == len(content)
    hole_only = tmp_path / "hole"
    with hole_only.open("wb") as fh:
        fh.truncate(5 << 20)
    assert manifest.hash_file(hole_only) == blake3.blake3(bytes(5 << 20)).hexdigest()
