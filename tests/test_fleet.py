"""``verify --all`` / ``--shard`` / ``--merge`` on a directory, real S3 (radosgw) and a GCS emulator.

The storage is 20 real builds (three 5-deep diff-layer chains and five single builds, tests/storage/fleet.py)
of which three are broken in different ways: a missing memfile header, a snapfile whose CRC64 no longer
matches, an ext4 superblock overwritten. The CLI runs as a real subprocess with its own TMPDIR, so the
tests also see that verifying remote builds leaves no local copy behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from e2b_artifacts.fleet import Shard, parse_shard, shard_of
from e2b_artifacts.manifest import hash_file
from e2b_artifacts.storage import TransferOptions, open_storage
from tests.conftest import assert_clean_error, cli
from tests.storage.ceph import Ceph
from tests.storage.fleet import (
    break_missing_header,
    break_rootfs,
    break_snapfile_crc,
    copy_storage,
    make_fleet,
    tiny_sample,
)
from tests.storage.servers import Server, gcs_client, s3_client


@dataclass
class Fleet:
    root: Path
    chains: list[list[str]]
    broken: dict[str, str]  # build id -> the check its first FAIL line names

    @property
    def ids(self) -> list[str]:
        return sorted(b for chain in self.chains for b in chain)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Fleet:
    sample = tiny_sample(tmp_path_factory.mktemp("sample"))
    root = tmp_path_factory.mktemp("fleet") / "templates"
    chains = make_fleet(sample, root, [5, 5, 5, 1, 1, 1, 1, 1])
    no_header, bad_crc, bad_rootfs = chains[0][-1], chains[1][-1], chains[3][0]
    break_missing_header(root / no_header)
    break_snapfile_crc(root / bad_crc)
    break_rootfs(root / bad_rootfs)
    return Fleet(root, chains, {no_header: "snapshot.memfile.header", bad_crc: "snapshot.crc",
                                bad_rootfs: "rootfs.fsck"})


@dataclass
class Location:
    url: str
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)

    def results(self, name: str) -> str:
        """A results prefix inside the storage itself: verify --all must not take it for a build."""
        return f"{self.url}/verify-results/{name}"


@pytest.fixture(scope="module", params=["local", "s3", "gs"])
def location(request: pytest.FixtureRequest, fleet: Fleet, tmp_path_factory: pytest.TempPathFactory) -> Location:
    """The broken fleet at one backend (uploaded as it is: sync would refuse the damaged builds)."""
    if request.param == "local":
        return Location(str(copy_storage(fleet.root, tmp_path_factory.mktemp("local") / "templates")))
    bucket = f"fleet-{uuid.uuid4().hex[:10]}"
    server: Ceph | Server
    if request.param == "s3":
        ceph: Ceph = request.getfixturevalue("s3_server")
        s3_client(ceph.endpoint, ceph.access_key, ceph.secret_key).create_bucket(Bucket=bucket)  # type: ignore[attr-defined]
        loc, server = Location(f"s3://{bucket}/templates", ["--endpoint-url", ceph.endpoint], ceph.env), ceph
    else:
        server = request.getfixturevalue("gcs_server")
        gcs_client(server.endpoint).create_bucket(bucket)  # type: ignore[attr-defined]
        loc = Location(f"gs://{bucket}/templates", [], {"STORAGE_EMULATOR_HOST": server.endpoint})
    saved = dict(os.environ)
    os.environ.update(loc.env)
    try:
        store = open_storage(loc.url, endpoint_url=server.endpoint if request.param == "s3" else None)
        for build in sorted(fleet.root.iterdir()):
            for f in sorted(build.iterdir()):
                store.upload_file(f"{build.name}/{f.name}", f, hash_file(f), TransferOptions())
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return loc


def run(loc: Location, tmp: Path, *args: str) -> tuple[int, list[dict[str, Any]], str]:
    """``verify`` with --json through the real CLI; the JSON lines, and stderr. TMPDIR is checked empty after."""
    tmpdir = tmp / f"tmpdir-{uuid.uuid4().hex[:6]}"
    tmpdir.mkdir()
    proc = cli("verify", *args, "--json", *loc.args, env={**loc.env, "TMPDIR": str(tmpdir)})
    assert "Traceback" not in proc.stderr, proc.stderr
    assert list(tmpdir.iterdir()) == [], "verify left local files behind"
    return proc.returncode, [json.loads(line) for line in proc.stdout.splitlines() if line.strip()], proc.stderr


def builds_of(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in docs if d["type"] == "build"]


def summary_of(docs: list[dict[str, Any]]) -> dict[str, Any]:
    assert docs[-1]["type"] == "summary" and [d["type"] for d in docs].count("summary") == 1
    return docs[-1]


def test_verify_all_lists_exactly_the_three_broken_builds(location: Location, fleet: Fleet, tmp_path: Path) -> None:
    rc, docs, stderr = run(location, tmp_path, "--all", location.url, "--jobs", "2")
    assert rc == 1
    results = builds_of(docs)
    assert sorted(r["build_id"] for r in results) == fleet.ids  # every build, each once
    summary = summary_of(docs)
    failing = {f["build_id"]: f["first_fail"] for f in summary["failing"]}
    print(f"\n{location.url}: " + json.dumps({k: v for k, v in summary.items() if k != "failing"}))
    for build_id, first in failing.items():
        print(f"  FAIL {build_id}: {first}")
    assert set(failing) == set(fleet.broken)
    for build_id, check in fleet.broken.items():
        assert failing[build_id].startswith(check + ":"), failing[build_id]
    assert summary["counts"]["FAIL"] == 3 and summary["counts"]["error"] == 0
    assert summary["affected"] == []  # the broken builds are nobody's parent
    assert "20/20 builds, 3 FAIL" in stderr  # the progress line
    remote = not location.url.startswith("/")
    if remote:  # paths in findings name the objects, not the stand-in's temp files
        assert location.url in failing[next(b for b, c in fleet.broken.items() if c == "rootfs.fsck")]
        assert not [r for r in results if "e2b-artifact-verify-all-" in json.dumps(r)]


def test_quick_reads_no_data_of_remote_builds(location: Location, fleet: Fleet, tmp_path: Path) -> None:
    rc, docs, _ = run(location, tmp_path, "--all", location.url, "--quick")
    assert rc == 1
    failing = {f["build_id"] for f in summary_of(docs)["failing"]}
    rootfs_broken = next(b for b, c in fleet.broken.items() if c == "rootfs.fsck")
    if location.url.startswith("/"):
        assert failing == set(fleet.broken)  # a directory: e2fsck still reads the image
        return
    assert failing == set(fleet.broken) - {rootfs_broken}  # no data read: the superblock is not seen
    result = next(r for r in builds_of(docs) if r["build_id"] == rootfs_broken)
    rootfs = [f for f in result["findings"] if f["check"].startswith("rootfs")]
    assert [(f["check"], f["status"]) for f in rootfs] == [("rootfs", "warn")]
    assert "--quick reads no data" in rootfs[0]["message"]


def test_two_shards_cover_every_build_once_and_merge(location: Location, fleet: Fleet, tmp_path: Path) -> None:
    prefix = location.results(uuid.uuid4().hex[:8])
    seen: list[str] = []
    for index in (0, 1):
        rc, docs, stderr = run(location, tmp_path, "--all", location.url, "--shard", f"{index}/2",
                               "--results", prefix)
        ids = [r["build_id"] for r in builds_of(docs)]
        assert summary_of(docs)["shard"] == f"{index}/2"
        assert summary_of(docs)["skipped"] == (["verify-results"] if index else [])  # results are not builds
        assert all(shard_of(b, 2) == index for b in ids)
        assert rc == (1 if set(ids) & set(fleet.broken) else 0)
        assert f"shard-{index}-of-2.jsonl" in stderr
        seen += ids
    print(f"\nshard 0/2 + shard 1/2 at {location.url}: {len(seen)} results, {len(set(seen))} distinct builds")
    assert sorted(seen) == fleet.ids  # all 20, each exactly once

    rc, docs, _ = run(location, tmp_path, "--merge", prefix)
    merged = summary_of(docs)
    assert rc == 1
    assert merged["builds"] == 20 and merged["counts"]["FAIL"] == 3
    assert {f["build_id"] for f in merged["failing"]} == set(fleet.broken)
    assert merged["shards"] == {"expected": 2, "found": [0, 1], "missing": [], "problems": [], "complete": True}
    assert merged["location"] == location.url


def test_merge_of_an_unfinished_run_says_which_shard_is_missing(fleet: Fleet, tmp_path: Path) -> None:
    loc = Location(str(fleet.root))
    prefix = str(tmp_path / "results")
    run(loc, tmp_path, "--all", loc.url, "--shard", "1/3", "--results", prefix, "--quick")
    proc = cli("verify", "--merge", prefix, "--wait", "0.2")
    assert_clean_error(proc, 3, "shard(s) 0, 2 of 3 missing")
    assert "incomplete: no results from shard(s) 0, 2 of 3" in proc.stdout


def test_a_failing_parent_is_named_for_its_children(tmp_path: Path) -> None:
    sample = tiny_sample(tmp_path / "sample")
    (chain,) = make_fleet(sample, tmp_path / "t", [3])
    break_rootfs(tmp_path / "t" / chain[0])  # the base stores the whole image; its children read from it
    rc, docs, _ = run(Location(str(tmp_path / "t")), tmp_path, "--all", str(tmp_path / "t"), "--quick")
    summary = summary_of(docs)
    assert rc == 1
    # the children's devices hold the base's blocks, superblock included: they fail too, and say on whom
    assert {f["build_id"]: f["first_fail"].split(":")[0] for f in summary["failing"]} == dict.fromkeys(
        chain, "rootfs.fsck")
    assert {a["build_id"]: a["failing_parents"] for a in summary["affected"]} == {
        chain[1]: [chain[0]], chain[2]: sorted(chain[:2])}
    text = cli("verify", "--all", str(tmp_path / "t"), "--quick").stdout
    assert f"needs  {chain[2]}: maps data to failing build(s) {', '.join(sorted(chain[:2]))}" in text


def test_builds_file_picks_builds_and_names_unknown_ones(fleet: Fleet, tmp_path: Path) -> None:
    unknown = str(uuid.uuid4())
    wanted = [fleet.chains[2][0], *fleet.broken, unknown]
    listing = tmp_path / "builds.txt"
    listing.write_text("# ids to check\n" + "\n".join(wanted) + "\n\n")
    rc, docs, _ = run(Location(str(fleet.root)), tmp_path, "--all", str(fleet.root), "--builds", str(listing),
                      "--quick")
    results = {r["build_id"]: r for r in builds_of(docs)}
    assert rc == 1 and sorted(results) == sorted(wanted)
    assert results[unknown]["verdict"] == "error" and results[unknown]["error_code"] == 3
    assert results[fleet.chains[2][0]]["verdict"] == "warn"


def test_location_comes_from_the_orchestrator_settings(fleet: Fleet, tmp_path: Path) -> None:
    local = cli("verify", "--all", "--quick", env={"STORAGE_PROVIDER": "Local",
                                                   "LOCAL_TEMPLATE_STORAGE_BASE_PATH": str(fleet.root)})
    assert local.returncode == 1 and f"{fleet.root}: 20 builds" in local.stdout
    by_url = cli("verify", "--all", "--quick", env={"TEMPLATE_STORAGE_URL": f"file://{fleet.root}",
                                                    "STORAGE_PROVIDER": "GCPBucket"})
    assert by_url.returncode == 1 and f"{fleet.root}: 20 builds" in by_url.stdout
    no_bucket = cli("verify", "--all", env={"STORAGE_PROVIDER": "AWSBucket", "TEMPLATE_BUCKET_NAME": ""})
    assert_clean_error(no_bucket, 2, "TEMPLATE_BUCKET_NAME is not set")


@pytest.mark.parametrize(("args", "needle"), [
    (["--all", "--fix"], "--fix repairs one build at a time"),
    (["--all", "--merge", "x"], "two different runs"),
    (["--all", "--shard", "2/2"], "expected I/N with 0 <= I < N"),
    (["--all", "--shard", "a/b"], "expected I/N"),
    (["--merge", "x", "--jobs", "2"], "--merge does not take --jobs"),
    (["some-build", "--shard", "0/2"], "only go with --all or --merge"),
    ([], "missing BUILD"),
])
def test_bad_combinations_are_usage_errors(args: list[str], needle: str, tmp_path: Path) -> None:
    assert_clean_error(cli("--storage", tmp_path, "verify", *args), 2, needle)


def test_a_missing_directory_and_an_empty_results_prefix(tmp_path: Path) -> None:
    assert_clean_error(cli("verify", "--all", str(tmp_path / "nope")), 3, "storage directory")
    (tmp_path / "empty").mkdir()
    assert_clean_error(cli("verify", "--merge", str(tmp_path / "empty")), 3, "no results files")


def test_shards_are_a_stable_hash_split() -> None:
    ids = [str(uuid.UUID(int=n * 7919 + 1, version=4)) for n in range(200)]
    for count in (1, 2, 3, 7):
        owners = {b: [i for i in range(count) if Shard(i, count).holds(b)] for b in ids}
        assert all(len(v) == 1 for v in owners.values())  # each build in exactly one shard
        assert all(owners[b][0] == int(hashlib.sha256(b.encode()).hexdigest()[:16], 16) % count for b in ids)
    sizes = [sum(shard_of(b, 4) == i for b in ids) for i in range(4)]
    assert min(sizes) > 30, sizes  # a hash split, not everything in one shard
    assert parse_shard("3/4") == Shard(3, 4)


def test_the_summary_keeps_little_of_a_passing_build() -> None:
    from e2b_artifacts.fleet import BuildResult

    parent = str(uuid.uuid4())
    record = BuildResult(str(uuid.uuid4()), "/srv/templates/x", "warn", {"ok": 9, "warn": 1, "FAIL": 0}, "",
                         "kernel: not checked", (parent,), 0.2, ({"check": "kernel", "status": "warn"},))
    kept = record.compact(strict=False)
    assert (kept.build_id, kept.verdict, kept.parents) == (record.build_id, "warn", (parent,))
    assert (kept.location, kept.counts, kept.first_warn, kept.findings) == ("", {}, "", ())
    strict = record.compact(strict=True)  # a failing build under --strict: its warning is the summary's line
    assert strict.first_warn == "kernel: not checked" and strict.findings == () and strict.location == record.location


def test_verify_all_still_moves_an_interrupted_runs_staging_aside(tmp_path: Path) -> None:
    """verify --all lists the storage once and tells each build's sweep whether it has a staging dir, instead
    of every build listing the whole storage again."""
    sample = tiny_sample(tmp_path / "sample")
    (chain,) = make_fleet(sample, tmp_path / "t", [2])
    stale = tmp_path / "t" / f".{chain[1]}.staging-x1y2"
    stale.mkdir()
    (stale / "rootfs.ext4").write_bytes(b"half")
    rc, docs, _ = run(Location(str(tmp_path / "t")), tmp_path, "--all", str(tmp_path / "t"), "--quick")
    moved = {r["build_id"]: [f["message"] for f in r["findings"] if "left by an interrupted run" in f["message"]]
             for r in builds_of(docs)}
    assert rc == 0 and moved[chain[0]] == [] and len(moved[chain[1]]) == 1
    assert stale.name in moved[chain[1]][0] and not stale.exists()
    assert [p.name for p in (tmp_path / "t" / ".leftovers").glob("*/*")] == [stale.name]
