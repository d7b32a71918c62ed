"""``sync push --compress`` and ``sync pull --decompress`` through a directory, the S3 server (radosgw) and the GCS
emulator: a plain 3-build chain sent in upstream's compressed form, the compressed objects and their sidecars
moved, no-op re-runs, and the plain form given back byte for byte."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from e2b_artifacts import layout, verify_data
from e2b_artifacts.manifest import write_manifest
from tests import test_sync
from tests.storage.builds import make_build, tree_digest
from tests.test_sync import Remote, sync_json

remote = test_sync.remote  # the same fixture (its servers are the session's, tests/conftest.py)

MIB = 1 << 20


def _chain(root: Path) -> list[str]:
    base = make_build(root, rootfs_blocks=1024, extra={"memfile": 8 * MIB})
    with (root / base / layout.MEMFILE).open("r+b") as fh:  # half the guest memory never touched: a hole
        fh.truncate(4 * MIB)
        fh.truncate(8 * MIB)
    write_manifest(root / base, base)
    child = make_build(root, parents=[base], rootfs_blocks=512)
    leaf = make_build(root, parents=[base, child], rootfs_blocks=256)
    return [base, child, leaf]


@pytest.mark.parametrize("codec", ["zstd"])
def test_compressed_push_then_decompressed_pull(remote: Remote, tmp_path: Path, codec: str) -> None:
    src, packed, plain = tmp_path / "src", tmp_path / "packed", tmp_path / "plain"
    ids = _chain(src)
    pushed = sync_json(src, remote, "push", "--compress", codec, "--with-parents", "--part-size", "5", ids[2],
                       remote.url)
    plain_bytes = sum(p.stat().st_size for bid in ids for p in (src / bid).iterdir())
    print(f"\ncompressed push: {pushed['bytes_sent']} bytes sent for {plain_bytes} bytes of plain files")
    # random data does not compress; the 4 MiB hole is not sent (frame headers, sidecars, record: a few KiB)
    assert 0 < pushed["bytes_sent"] < plain_bytes - 4 * MIB + 64 * 1024
    keys = remote.object_keys()
    for bid in ids:
        for name in (f"rootfs.ext4.{codec}", f"rootfs.ext4.{codec}.uncompressed-size", layout.PLAIN_RECORD):
            assert f"{remote.prefix}{bid}/{name}" in keys
        assert f"{remote.prefix}{bid}/rootfs.ext4" not in keys
    assert f"{remote.prefix}{ids[0]}/memfile.{codec}" in keys
    assert not list(src.glob(".*compressed-*")), "the compressed staging is removed once sent"

    again = sync_json(src, remote, "push", "--compress", codec, "--with-parents", ids[2], remote.url)
    assert again["bytes_sent"] == 0 and {b["state"] for b in again["builds"]} == {"up-to-date"}

    as_stored = sync_json(packed, remote, "pull", "--with-parents", ids[2], remote.url)
    assert as_stored["bytes_sent"] == pushed["bytes_sent"]
    for bid in ids:
        findings = verify_data.check_data_objects(packed / bid)
        assert findings and {f.status for f in findings} == {"ok"}, [f.line() for f in findings]

    pulled = sync_json(plain, remote, "pull", "--decompress", "--with-parents", ids[2], remote.url)
    assert [b["build_id"] for b in pulled["builds"]] == ids
    for bid in ids:
        assert tree_digest(plain / bid) == tree_digest(src / bid)
    assert sorted(p.name for p in plain.iterdir()) == sorted(ids)  # no staging left behind
    noop = sync_json(plain, remote, "pull", "--decompress", "--with-parents", ids[2], remote.url)
    assert noop["bytes_sent"] == 0 and {b["state"] for b in noop["builds"]} == {"up-to-date"}


def test_compressed_push_over_a_parent_already_there(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """The child's mappings into its parent follow the parent's packed data, read from the destination."""
    from tests.test_sync import _remote

    target = _remote("local", tmp_path, request)
    src, plain = tmp_path / "src", tmp_path / "plain"
    ids = _chain(src)
    sync_json(src, target, "push", "--compress", "lz4", ids[0], target.url)
    sync_json(src, target, "push", "--compress", "lz4", "--with-parents", ids[2], target.url)
    stored = Path(target.url)
    assert {f.status for f in verify_data.check_data_objects(stored / ids[2])} == {"ok"}
    sync_json(plain, target, "pull", "--decompress", "--with-parents", ids[2], target.url)
    for bid in ids:
        assert tree_digest(plain / bid) == tree_digest(src / bid)


def test_dry_run_compresses_nothing(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    from tests.test_sync import _remote

    target = _remote("local", tmp_path, request)
    src = tmp_path / "src"
    ids = _chain(src)
    planned = sync_json(src, target, "push", "--compress", "zstd", "--with-parents", "--dry-run", ids[2], target.url)
    assert planned["bytes_sent"] == 0 and not list(src.glob(".*"))
    steps = [f for b in planned["builds"] for f in b["files"] if f["name"] == "rootfs.ext4"]
    assert steps and all("compressed on the way" in f["reason"] for f in steps)
    proc = subprocess.run(["ls", target.url], capture_output=True, check=False)
    assert proc.returncode != 0 or not proc.stdout.strip()


def test_a_build_without_blocks_of_its_own_round_trips(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """A diff layer whose rootfs blocks all come from its ancestors packs to an empty object; its header then
    records no frames and codec none (as upstream serializes an empty table): verify must not look for a plain
    rootfs.ext4, and --decompress must give the original files back."""
    from tests.storage.fleet import make_fleet, tiny_sample
    from tests.test_sync import _remote

    target = _remote("local", tmp_path, request)
    src, plain = tmp_path / "src", tmp_path / "plain"
    [ids] = make_fleet(tiny_sample(tmp_path / "sample"), src, [3])
    sync_json(src, target, "push", "--compress", "zstd", "--with-parents", ids[-1], target.url)
    stored = Path(target.url)
    findings = verify_data.check_data_objects(stored / ids[-1])
    assert {f.status for f in findings} == {"ok"}, [f.line() for f in findings]
    assert any("no rootfs.ext4 data of its own" in f.message for f in findings)
    sync_json(plain, target, "pull", "--decompress", "--with-parents", ids[-1], target.url)
    for bid in ids:
        assert tree_digest(plain / bid) == tree_digest(src / bid)
