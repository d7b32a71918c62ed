"""``e2b-artifact sync``: round trips through a directory, a real S3 server and a GCS emulator.

The S3 server is radosgw of a one-node Ceph cluster (tests/storage/ceph.py), the GCS one
gcp-storage-emulator; both run on loopback, started once for the session; every test gets its own
bucket. Faults a server cannot make on demand (a missing API call, a stall) come from a proxy in
front of it (tests/storage/proxy.py). The CLI runs as a real subprocess.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import subprocess
import sys
import time
import uuid
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import blake3
import pytest

from tests.conftest import assert_clean_error, cli, stop
from tests.storage.builds import make_build, storage_snapshot, tree_digest
from tests.storage.ceph import Ceph
from tests.storage.proxy import Proxy, s3_error, wait_until
from tests.storage.servers import S3_ENV, Server, gcs_client, s3_client

CONFLICT, INTEGRITY = 6, 8


@dataclass
class Remote:
    """A fresh location of one backend, plus how to reach its objects directly."""

    url: str
    args: list[str]  # extra CLI args (--endpoint-url)
    env: dict[str, str]
    kind: str
    client: Any = None
    bucket: str = ""
    prefix: str = ""

    def object_keys(self) -> list[str]:
        if self.kind == "s3":
            resp = self.client.list_objects_v2(Bucket=self.bucket, Prefix=self.prefix)
            return [o["Key"] for o in resp.get("Contents", [])]
        if self.kind == "gs":
            return [b.name for b in self.client.list_blobs(self.bucket, prefix=self.prefix)]
        root = Path(self.url)
        return [p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()] if root.exists() else []

    def read_object(self, key: str) -> bytes:
        """An object's bytes, read with the backend's own client (not this tool's)."""
        if self.kind == "s3":
            body: bytes = self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
            return body
        if self.kind == "gs":
            blob: bytes = self.client.bucket(self.bucket).blob(key).download_as_bytes()
            return blob
        return (Path(self.url) / key).read_bytes()

    def flip_one_bit(self, key: str) -> None:
        """Damage an object in place: same size, same recorded metadata, one bit different."""
        data = bytearray(self.read_object(key))
        data[len(data) // 2] ^= 0x01
        if self.kind == "s3":
            head = self.client.head_object(Bucket=self.bucket, Key=key)
            self.client.put_object(Bucket=self.bucket, Key=key, Body=bytes(data), Metadata=head["Metadata"])
        elif self.kind == "gs":
            bucket = self.client.bucket(self.bucket)
            new = bucket.blob(key)
            new.metadata = bucket.get_blob(key).metadata
            new.upload_from_string(bytes(data))
        else:
            (Path(self.url) / key).write_bytes(bytes(data))  # in place: the xattr with the recorded hash stays


def _remote(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> Remote:
    bucket = f"bkt-{uuid.uuid4().hex[:12]}"
    if kind == "s3":
        ceph: Ceph = request.getfixturevalue("s3_server")
        client: Any = s3_client(ceph.endpoint, ceph.access_key, ceph.secret_key)
        client.create_bucket(Bucket=bucket)
        return Remote(f"s3://{bucket}/templates", ["--endpoint-url", ceph.endpoint], ceph.env, "s3",
                      client, bucket, "templates/")
    if kind == "gs":
        server: Server = request.getfixturevalue("gcs_server")
        client = gcs_client(server.endpoint)
        client.create_bucket(bucket)
        return Remote(f"gs://{bucket}/env/templates", [], {"STORAGE_EMULATOR_HOST": server.endpoint}, "gs",
                      client, bucket, "env/templates/")
    return Remote(str(tmp_path / "remote-dir"), [], {}, "local")


@pytest.fixture(params=["local", "s3", "gs"])
def remote(request: pytest.FixtureRequest, tmp_path: Path) -> Remote:
    return _remote(request.param, tmp_path, request)


@pytest.fixture
def s3_remote(request: pytest.FixtureRequest, tmp_path: Path) -> Remote:
    return _remote("s3", tmp_path, request)


def sync(storage: Path, remote: Remote, *args: str) -> subprocess.CompletedProcess[str]:
    verb, *rest = args
    return cli("--storage", storage, "sync", verb, *rest,
               *([remote.url] if verb == "ls" else []), *remote.args, env=remote.env)


def sync_json(storage: Path, remote: Remote, *args: str) -> dict[str, Any]:
    proc = sync(storage, remote, *args, "--json")
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def test_round_trip_with_parent_chain(remote: Remote, tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    base = make_build(src, extra={"memfile": 6 << 20})  # 6 MiB at 5 MiB parts: a multipart upload
    child = make_build(src, parents=[base])
    leaf = make_build(src, parents=[base, child], extra={"memfile": 1 << 20})

    refused = sync(src, remote, "push", leaf, remote.url)
    assert_clean_error(refused, CONFLICT, base, child, "--with-parents")
    assert remote.object_keys() == []

    planned = sync_json(src, remote, "push", "--with-parents", "--dry-run", leaf, remote.url)
    assert [b["build_id"] for b in planned["builds"]] == [base, child, leaf]
    assert planned["bytes_sent"] == 0 and remote.object_keys() == []

    pushed = sync_json(src, remote, "push", "--with-parents", "--part-size", "5", leaf, remote.url)
    assert pushed["bytes_sent"] == pushed["bytes_total"] > 6 << 20
    keys = remote.object_keys()
    for build_id in (base, child, leaf):  # upstream's key layout: PREFIX/<build-id>/<file>
        assert f"{remote.prefix}{build_id}/metadata.json" in keys
        assert f"{remote.prefix}{build_id}/artifact-manifest.json" in keys
    assert not [k for k in keys if "e2b-part" in k or "partial" in k]

    listed = sync_json(src, remote, "ls")
    assert {b["build_id"]: b["complete"] for b in listed["builds"]} == {base: True, child: True, leaf: True}

    again = sync_json(src, remote, "push", "--with-parents", leaf, remote.url)
    assert again["bytes_sent"] == 0
    assert {b["state"] for b in again["builds"]} == {"up-to-date"}

    refused = sync(dst, remote, "pull", leaf, remote.url)
    assert_clean_error(refused, CONFLICT, base, child)
    assert not dst.exists() or not any(dst.iterdir())

    pulled = sync_json(dst, remote, "pull", "--with-parents", "--part-size", "5", leaf, remote.url)
    assert [b["build_id"] for b in pulled["builds"]] == [base, child, leaf]
    for build_id in (base, child, leaf):
        assert tree_digest(dst / build_id) == tree_digest(src / build_id)
    assert sorted(p.name for p in dst.iterdir()) == sorted([base, child, leaf])

    noop = sync_json(dst, remote, "pull", "--with-parents", leaf, remote.url)
    assert noop["bytes_sent"] == 0 and {b["state"] for b in noop["builds"]} == {"up-to-date"}


def _s3_keys_for(remote: Remote, build_id: str) -> list[str]:
    keys: list[str] = remote.object_keys()
    return [k for k in keys if k.startswith(f"{remote.prefix}{build_id}/")]


def test_killed_push_leaves_no_complete_build_and_resumes(s3_remote: Remote, tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    build_id = make_build(src, extra={"memfile": 12 << 20, "memfile.extra": 10 << 20, "snapfile.big": 8 << 20})
    # --limit-rate keeps the upload slow enough to stop it mid-way; the kill itself is a real SIGKILL.
    _kill_when(lambda: bool(_s3_keys_for(s3_remote, build_id)), "the first object on the server",
               src, s3_remote, "push", build_id, s3_remote.url, "--part-size", "5", "--limit-rate", "6M")
    landed = _s3_keys_for(s3_remote, build_id)
    print(f"\nkilled push after {len(landed)} object(s) landed: {landed}")
    assert not [k for k in landed if k.endswith(("/metadata.json", "/artifact-manifest.json"))]

    listed = sync_json(src, s3_remote, "ls")
    assert [(b["build_id"], b["complete"]) for b in listed["builds"]] == [(build_id, False)]
    refused = sync(dst, s3_remote, "pull", build_id, s3_remote.url)
    assert_clean_error(refused, 3, "not a complete build")

    resumed = sync_json(src, s3_remote, "push", build_id, s3_remote.url, "--part-size", "5")
    print(f"re-run sent {resumed['bytes_sent']} of {resumed['bytes_total']} bytes")
    assert 0 < resumed["bytes_sent"] < resumed["bytes_total"]
    assert any(f["action"] == "skip" and f["reason"] == "already there" for f in resumed["builds"][0]["files"])
    uploads = s3_remote.client.list_multipart_uploads(Bucket=s3_remote.bucket).get("Uploads", [])
    assert uploads == []  # the killed run's unfinished multipart upload was aborted

    sync_json(dst, s3_remote, "pull", build_id, s3_remote.url)
    assert tree_digest(dst / build_id) == tree_digest(src / build_id)


def test_corrupt_object_fails_pull_and_leaves_storage_alone(remote: Remote, tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    keep = make_build(dst)  # something already in the local storage that must stay as it is
    build_id = make_build(src, extra={"memfile": 7 << 20})
    sync_json(src, remote, "push", build_id, remote.url, "--part-size", "5")
    remote.flip_one_bit(f"{remote.prefix}{build_id}/memfile")

    before = storage_snapshot(dst)
    failed = sync(dst, remote, "pull", build_id, remote.url, "--range-size", "2")
    assert_clean_error(failed, INTEGRITY, "memfile", "integrity manifest")
    assert storage_snapshot(dst) == before  # no staging dir, no partial build, no lock file left behind
    assert sorted(tree_digest(dst / keep)) == sorted(p.name for p in (dst / keep).iterdir())


def test_pull_reads_remote_manifest_and_headers_in_memory(remote: Remote, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import tempfile

    from e2b_artifacts import sync as sync_mod
    from e2b_artifacts.storage import open_storage

    src, dst = tmp_path / "src", tmp_path / "dst"
    base = make_build(src)
    child = make_build(src, parents=[base])
    sync_json(src, remote, "push", "--with-parents", child, remote.url)

    def no_temp_files(*_: object, **__: object) -> None:
        raise AssertionError("the remote build went through a temp file")

    for name, value in remote.env.items():
        monkeypatch.setenv(name, value)
    store = open_storage(remote.url, endpoint_url=remote.args[1] if remote.args else None)
    with monkeypatch.context() as patched:
        for name in ("mkdtemp", "mkstemp", "NamedTemporaryFile", "TemporaryFile", "TemporaryDirectory"):
            patched.setattr(tempfile, name, no_temp_files)
        planned = sync_mod.pull(dst, child, store, with_parents=True, dry_run=True)
    assert {b.build_id: b.parents for b in planned.builds} == {base: [], child: [base]}  # from the headers' bytes

    remote.flip_one_bit(f"{remote.prefix}{child}/rootfs.ext4.header")
    failed = sync(dst, remote, "pull", "--with-parents", child, remote.url)
    assert_clean_error(failed, INTEGRITY, "rootfs.ext4.header", "integrity manifest")
    assert not dst.exists() or not any(dst.iterdir())


def test_push_refuses_a_build_that_differs_from_its_manifest(tmp_path: Path) -> None:
    src = tmp_path / "src"
    remote = Remote(str(tmp_path / "remote"), [], {}, "local")
    build_id = make_build(src)
    rootfs = src / build_id / "rootfs.ext4"
    data = bytearray(rootfs.read_bytes())
    data[100] ^= 0xFF
    rootfs.write_bytes(bytes(data))  # same size: only the hash on the way out can notice
    failed = sync(src, remote, "push", build_id, remote.url)
    assert_clean_error(failed, INTEGRITY, "rootfs.ext4")
    assert not [k for k in remote.object_keys() if k.endswith("metadata.json")]


def test_pull_of_a_missing_build_and_bad_locations(tmp_path: Path) -> None:
    remote = Remote(str(tmp_path / "remote"), [], {}, "local")
    (tmp_path / "remote").mkdir()
    missing = sync(tmp_path / "dst", remote, "pull", str(uuid.uuid4()), remote.url)
    assert_clean_error(missing, 3, "not a complete build")
    assert_clean_error(cli("sync", "ls", str(tmp_path / "no-such-dir")), 3, "is not a directory")
    bad = cli("sync", "ls", "ftp://host/x")
    assert_clean_error(bad, 2, "unsupported location scheme")
    wrong_flag = cli("sync", "ls", "gs://bucket/x", "--endpoint-url", "http://127.0.0.1:1")
    assert_clean_error(wrong_flag, 2, "--endpoint-url")


def test_killed_pull_publishes_nothing_and_resumes(s3_remote: Remote, tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    build_id = make_build(src, extra={"memfile": 12 << 20, "memfile.extra": 10 << 20, "snapfile.big": 8 << 20})
    sync_json(src, s3_remote, "push", build_id, s3_remote.url, "--part-size", "5")
    staging = dst / f".{build_id}.sync-partial"
    _kill_when(lambda: staging.is_dir() and any(not p.name.startswith((".", "artifact")) for p in staging.iterdir()),
               "a fetched file in the staging directory",
               dst, s3_remote, "pull", build_id, s3_remote.url, "--range-size", "1", "--limit-rate", "6M")
    assert not (dst / build_id).exists()  # nothing published under the build's name

    resumed = sync_json(dst, s3_remote, "pull", build_id, s3_remote.url)
    print(f"\npull re-run fetched {resumed['bytes_sent']} of {resumed['bytes_total']} bytes")
    assert 0 < resumed["bytes_sent"] < resumed["bytes_total"]
    assert tree_digest(dst / build_id) == tree_digest(src / build_id)
    assert not staging.exists()


def test_pull_refuses_a_manifest_naming_paths_outside_the_build(tmp_path: Path) -> None:
    remote = Remote(str(tmp_path / "remote"), [], {}, "local")
    build_id = make_build(tmp_path / "remote")
    manifest_path = tmp_path / "remote" / build_id / "artifact-manifest.json"
    doc = json.loads(manifest_path.read_text())
    doc["files"]["../../escaped"] = doc["files"]["snapfile"]
    manifest_path.write_text(json.dumps(doc))
    failed = sync(tmp_path / "dst", remote, "pull", build_id, remote.url)
    assert_clean_error(failed, INTEGRITY, "../../escaped")
    assert not (tmp_path / "escaped").exists() and not (tmp_path / "dst" / build_id).exists()


def test_holes_stay_holes_through_local_push_and_pull(tmp_path: Path) -> None:
    from e2b_artifacts.manifest import write_manifest

    src, dst = tmp_path / "src", tmp_path / "dst"
    remote = Remote(str(tmp_path / "remote"), [], {}, "local")
    build_id = make_build(src)
    sparse = src / build_id / "memfile"
    with sparse.open("wb") as fh:  # 64 MiB with 1 MiB of data at each end: what a fresh rootfs looks like
        fh.write(os.urandom(1 << 20))
        fh.seek(63 << 20)
        fh.write(os.urandom(1 << 20))
    write_manifest(src / build_id, build_id)
    sync_json(src, remote, "push", build_id, remote.url, "--part-size", "5")
    sync_json(dst, remote, "pull", build_id, remote.url, "--range-size", "8")
    assert tree_digest(dst / build_id) == tree_digest(src / build_id)
    for copy in (tmp_path / "remote" / build_id / "memfile", dst / build_id / "memfile"):
        assert copy.stat().st_size == 64 << 20
        assert copy.stat().st_blocks * 512 <= 4 << 20, f"{copy} lost its holes"


# ---- servers that misbehave: a proxy in front of the real ones ----------------------------------

@pytest.fixture
def proxy_of(request: pytest.FixtureRequest) -> Iterator[Callable[..., Proxy]]:
    started: list[Proxy] = []

    def start(upstream: str, **kwargs: Any) -> Proxy:
        started.append(Proxy(upstream, **kwargs).start())
        return started[-1]

    yield start
    for proxy in started:
        proxy.stop()


def _through(remote: Remote, proxy: Proxy) -> Remote:
    """The same location, reached through ``proxy``."""
    if remote.kind == "s3":
        return dataclasses.replace(remote, args=["--endpoint-url", proxy.endpoint])
    return dataclasses.replace(remote, env={**remote.env, "STORAGE_EMULATOR_HOST": proxy.endpoint})


def _lists_uploads(method: str, path: str, query: dict[str, list[str]]) -> bool:
    return method == "GET" and "uploads" in query  # ListMultipartUploads: GET /bucket?uploads


@pytest.mark.parametrize("status,code", [(501, "NotImplemented"), (405, "MethodNotAllowed"), (403, "AccessDenied")])
def test_push_goes_on_when_the_server_cannot_list_unfinished_uploads(
        s3_remote: Remote, s3_server: Ceph, proxy_of: Callable[..., Proxy], tmp_path: Path,
        status: int, code: str) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    base = make_build(src, extra={"memfile": 6 << 20})
    leaf = make_build(src, parents=[base], extra={"memfile": 6 << 20})
    refusal = s3_error(status, code, "this server does not implement ListMultipartUploads")
    proxy = proxy_of(s3_server.endpoint, refuse=lambda m, p, q: refusal if _lists_uploads(m, p, q) else None)
    limited = _through(s3_remote, proxy)

    proc = sync(src, limited, "push", "--with-parents", "--part-size", "5", leaf, limited.url, "--json")
    assert proc.returncode == 0, proc.stderr
    assert proxy.count("GET", "uploads") >= 1  # it did ask, and was refused
    warnings = [ln for ln in proc.stderr.splitlines() if ln.startswith("warning: ")]
    assert len(warnings) == 1 and "does not list unfinished multipart uploads" in warnings[0], proc.stderr
    assert code in warnings[0]
    result = json.loads(proc.stdout)
    assert len(result["warnings"]) == 1 and code in result["warnings"][0]
    assert result["bytes_sent"] == result["bytes_total"]

    sync_json(dst, s3_remote, "pull", "--with-parents", leaf, s3_remote.url)
    for build_id in (base, leaf):
        assert tree_digest(dst / build_id) == tree_digest(src / build_id)


def _upload_parts(remote: Remote, key: str) -> list[dict[str, Any]]:
    uploads = remote.client.list_multipart_uploads(Bucket=remote.bucket, Prefix=key).get("Uploads", [])
    parts: list[dict[str, Any]] = []
    for upload in uploads:
        parts += remote.client.list_parts(Bucket=remote.bucket, Key=key, UploadId=upload["UploadId"]).get("Parts", [])
    return parts


def _start_cli(storage: Path, remote: Remote, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "e2b_artifacts", "--storage", str(storage), "sync", *args,
                             *remote.args], env={**os.environ, **remote.env},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _kill_when(reached: Callable[[], bool], what: str, storage: Path, remote: Remote, *args: str) -> None:
    """Run ``sync *args`` and SIGKILL it once ``reached()`` holds (within 60 s); it must not finish before."""
    proc = _start_cli(storage, remote, *args)
    wait_until(lambda: reached() or proc.poll() is not None, 60, what)
    assert proc.poll() is None, f"{args[0]} finished before it could be interrupted"
    stop(proc)


def _sync_counted(proxy_of: Callable[..., Proxy], endpoint: str, storage: Path, remote: Remote,
                  *args: str) -> tuple[dict[str, Any], Proxy]:
    """``sync_json`` reaching ``remote`` through a new proxy in front of ``endpoint``: the result, and the proxy."""
    proxy = proxy_of(endpoint)
    return sync_json(storage, _through(remote, proxy), *args), proxy


def test_push_sends_each_parts_crc32_in_a_header(s3_remote: Remote, s3_server: Ceph, proxy_of: Callable[..., Proxy],
                                                 tmp_path: Path) -> None:
    """Every part and every small object carries ``x-amz-checksum-crc32`` of exactly the bytes it sends (the
    value is ours, not botocore's), in a header: no aws-chunked body with a trailer."""
    src = tmp_path / "src"
    build_id = make_build(src, extra={"memfile": 22 << 20})  # 5 parts of 5 MiB (the last one 2 MiB)
    # two at a time: parts 3-5 are read into the buffers of parts 1-3, reused once those are sent
    _, proxy = _sync_counted(proxy_of, s3_server.endpoint, src, s3_remote, "push", build_id, s3_remote.url,
                             "--part-size", "5", "-j", "2")
    puts = [s for s in proxy.seen if s.method == "PUT"]
    memfile_parts = sorted((int(s.query["partNumber"][0]), s) for s in puts
                           if "partNumber" in s.query and s.path.endswith("/memfile"))
    assert [n for n, _ in memfile_parts] == [1, 2, 3, 4, 5]
    data = (src / build_id / "memfile").read_bytes()
    for number, seen in memfile_parts:
        part = data[(number - 1) * (5 << 20):number * (5 << 20)]
        assert seen.body_bytes == len(part) and seen.body_crc32 == zlib.crc32(part)
    for seen in puts:
        assert "aws-chunked" not in seen.headers.get("content-encoding", ""), seen.path
        assert "x-amz-trailer" not in seen.headers, seen.path
        want = base64.b64encode(seen.body_crc32.to_bytes(4, "big")).decode()
        assert seen.headers.get("x-amz-checksum-crc32") == want, seen.path
    assert any(s.path.endswith("/metadata.json") for s in puts)  # small objects (put_object) are covered too


def test_push_does_not_read_the_parts_that_lie_in_holes(remote: Remote, monkeypatch: pytest.MonkeyPatch,
                                                          tmp_path: Path) -> None:
    """A part wholly inside a hole of a sparse file is sent as zeros without reading it (the kernel would
    clear and copy a page per 4 KiB); parts with any data are read; the object is the file byte for byte."""
    from e2b_artifacts import fsutil, storage
    from e2b_artifacts.storage import base

    part = 5 << 20
    path = tmp_path / "memfile"
    with path.open("wb") as fh:  # 7 parts, the last one 1000 bytes
        fh.truncate(6 * part + 1000)
        fh.seek(part + 7)
        fh.write(b"a little data in part 2")
        fh.seek(3 * part + part // 2)
        fh.write(os.urandom(4096))  # part 4: a hole, then data
        fh.seek(6 * part + 10)
        fh.write(b"tail")
    with path.open("rb") as reader:  # the premise: this filesystem keeps holes and reports them
        assert os.lseek(reader.fileno(), 0, os.SEEK_DATA) == part
    reads: list[int] = []
    real_pread = fsutil.pread_full

    def recording_pread(fd: int, view: memoryview, offset: int) -> int:
        reads.append(offset)
        return real_pread(fd, view, offset)

    monkeypatch.setattr(base, "pread_full", recording_pread)
    for name, value in remote.env.items():
        monkeypatch.setenv(name, value)
    endpoint = remote.args[1] if remote.args else None
    dest = storage.open_storage(remote.url, endpoint_url=endpoint)
    data = path.read_bytes()
    sent = dest.upload_file("b/memfile", path, blake3.blake3(data).hexdigest(),
                            storage.TransferOptions(part_size=part, concurrency=2))
    assert sent == len(data)
    assert reads == [part, 3 * part, 6 * part]  # parts 2, 4 and 7; 1, 3, 5 and 6 are holes
    assert remote.read_object(f"{remote.prefix}b/memfile") == data


def test_killed_push_resumes_part_by_part_on_s3(s3_remote: Remote, s3_server: Ceph, proxy_of: Callable[..., Proxy],
                                                  tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    build_id = make_build(src, extra={"memfile": 40 << 20})  # 8 parts of 5 MiB
    key = f"{s3_remote.prefix}{build_id}/memfile"
    _kill_when(lambda: len(_upload_parts(s3_remote, key)) >= 4, "4 parts on the server",
               src, s3_remote, "push", build_id, s3_remote.url, "--part-size", "5", "-j", "1", "--limit-rate", "5M")
    kept = {p["PartNumber"] for p in _upload_parts(s3_remote, key)}
    assert 4 <= len(kept) < 8
    # One part on the server no longer matches the local bytes: the resume must notice and send it again.
    upload_id = s3_remote.client.list_multipart_uploads(Bucket=s3_remote.bucket, Prefix=key)["Uploads"][0]["UploadId"]
    s3_remote.client.upload_part(Bucket=s3_remote.bucket, Key=key, UploadId=upload_id, PartNumber=2,
                                 Body=os.urandom(5 << 20))

    resumed, proxy = _sync_counted(proxy_of, s3_server.endpoint, src, s3_remote, "push", build_id, s3_remote.url,
                                   "--part-size", "16")
    memfile_parts = [s for s in proxy.seen if s.method == "PUT" and "partNumber" in s.query and s.path.endswith(
        "/memfile")]
    sent = sorted(int(s.query["partNumber"][0]) for s in memfile_parts)
    print(f"\nkilled after parts {sorted(kept)}; the re-run sent parts {sent} "
          f"({resumed['bytes_sent']} of {resumed['bytes_total']} bytes)")
    assert sent == sorted({*range(1, 9)} - kept | {2})  # the missing ones and the damaged one, 5 MiB each
    assert sum(s.body_bytes for s in memfile_parts) >= len(sent) * (5 << 20)
    memfile_bytes = 40 << 20
    assert resumed["bytes_sent"] <= resumed["bytes_total"] - memfile_bytes + len(sent) * (5 << 20)
    assert s3_remote.client.list_multipart_uploads(Bucket=s3_remote.bucket).get("Uploads", []) == []
    assert not list(src.glob(".*.push-uploads.json"))  # the resume record is gone once complete

    sync_json(dst, s3_remote, "pull", build_id, s3_remote.url)
    assert tree_digest(dst / build_id) == tree_digest(src / build_id)


def test_killed_push_resumes_part_by_part_on_gcs(request: pytest.FixtureRequest, gcs_server: Server,
                                                   proxy_of: Callable[..., Proxy], tmp_path: Path) -> None:
    remote = _remote("gs", tmp_path, request)
    src, dst = tmp_path / "src", tmp_path / "dst"
    build_id = make_build(src, extra={"memfile": 24 << 20})  # 12 part objects of 2 MiB
    part_mark = f"{remote.prefix}{build_id}/memfile.e2b-part-"

    def part_objects() -> list[str]:
        return [k for k in remote.object_keys() if k.startswith(part_mark)]

    _kill_when(lambda: len(part_objects()) >= 5, "5 part objects on the server",
               src, remote, "push", build_id, remote.url, "--part-size", "2", "-j", "1", "--limit-rate", "3M")
    kept = len(part_objects())
    assert 5 <= kept < 12

    resumed, proxy = _sync_counted(proxy_of, gcs_server.endpoint, src, remote, "push", build_id, remote.url)
    received = sum(s.body_bytes for s in proxy.seen if s.method == "POST" and s.path.startswith("/upload/"))
    print(f"\nkilled after {kept} of 12 parts; the re-run sent {resumed['bytes_sent']} of {resumed['bytes_total']} "
          f"bytes, the server received {received} bytes of uploads")
    assert resumed["bytes_sent"] <= resumed["bytes_total"] - kept * (2 << 20)
    assert received < resumed["bytes_total"] - kept * (2 << 20) + (64 << 10)  # plus multipart envelopes
    assert not [k for k in remote.object_keys() if ".e2b-part-" in k]

    sync_json(dst, remote, "pull", build_id, remote.url)
    assert tree_digest(dst / build_id) == tree_digest(src / build_id)


def test_killed_pull_resumes_inside_a_file(s3_remote: Remote, s3_server: Ceph, proxy_of: Callable[..., Proxy],
                                           tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    build_id = make_build(src, extra={"memfile": 32 << 20})
    sync_json(src, s3_remote, "push", build_id, s3_remote.url)
    partial = dst / f".{build_id}.sync-partial" / ".memfile.e2b-partial"
    _kill_when(lambda: partial.is_file() and partial.stat().st_size >= 10 << 20, "10 MiB of memfile fetched",
               dst, s3_remote, "pull", build_id, s3_remote.url, "--range-size", "1", "-j", "1", "--limit-rate", "5M")
    kept = partial.stat().st_size
    assert not (dst / build_id).exists()

    resumed, proxy = _sync_counted(proxy_of, s3_server.endpoint, dst, s3_remote, "pull", build_id, s3_remote.url)
    fetched = sum(s.answer_bytes for s in proxy.seen if s.method == "GET" and s.path.endswith("/memfile"))
    print(f"\nkilled with {kept} bytes of memfile kept; the re-run fetched {fetched} bytes of it "
          f"({resumed['bytes_sent']} of {resumed['bytes_total']} bytes in all)")
    assert fetched == (32 << 20) - kept
    assert tree_digest(dst / build_id) == tree_digest(src / build_id)


def test_pull_resume_starts_over_when_the_kept_bytes_are_wrong(s3_remote: Remote, tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    build_id = make_build(src, extra={"memfile": 8 << 20})
    sync_json(src, s3_remote, "push", build_id, s3_remote.url)
    staging = dst / f".{build_id}.sync-partial"
    staging.mkdir(parents=True)
    (staging / "artifact-manifest.json").write_bytes((src / build_id / "artifact-manifest.json").read_bytes())
    (staging / ".memfile.e2b-partial").write_bytes(os.urandom(3 << 20))  # not what the server has
    resumed = sync_json(dst, s3_remote, "pull", build_id, s3_remote.url)
    assert resumed["bytes_sent"] >= 8 << 20
    assert tree_digest(dst / build_id) == tree_digest(src / build_id)


@pytest.mark.parametrize("kind", ["s3", "gs"])
def test_stuck_server_says_it_waits_and_times_out(kind: str, proxy_of: Callable[..., Proxy], tmp_path: Path) -> None:
    src = tmp_path / "src"
    build_id = make_build(src)
    stuck = proxy_of("http://127.0.0.1:9", stall=True, max_stall=60)  # accepts, reads, never answers
    if kind == "s3":
        remote = Remote("s3://bkt-stuck/templates", ["--endpoint-url", stuck.endpoint], dict(S3_ENV), "s3")
    else:
        remote = Remote("gs://bkt-stuck/templates", [], {"STORAGE_EMULATOR_HOST": stuck.endpoint}, "gs")
    started = time.monotonic()
    proc = sync(src, remote, "push", build_id, remote.url, "--timeout", "12")
    took = time.monotonic() - started
    print(f"\n{kind}: exit {proc.returncode} after {took:.1f} s\n{proc.stderr}")
    assert_clean_error(proc, 7, "no reply within 12 s", "--timeout")
    waiting = [ln for ln in proc.stderr.splitlines() if ln.startswith("waiting for ")]
    assert len(waiting) == 1 and "no reply for 5 s" in waiting[0], proc.stderr
    assert 12 <= took < 40
    # google-cloud-storage looks the bucket up in a background thread of its own (GET /storage/v1/b/NAME)
    ours = [s for s in stuck.seen if s.path != "/storage/v1/b/bkt-stuck"]
    assert len(ours) == 1, stuck.seen  # not sent again: a retry would only double the wait


def test_push_and_pull_count_the_same_files(remote: Remote, tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    build_id = make_build(src)
    pushed = sync(src, remote, "push", build_id, remote.url)
    pulled = sync(dst, remote, "pull", build_id, remote.url)
    assert pushed.returncode == pulled.returncode == 0, (pushed.stderr, pulled.stderr)
    files = len(list((src / build_id).iterdir()))  # rootfs.ext4, its header, snapfile, metadata.json, manifest
    assert f"{build_id}: sent {files} of {files} files" in pushed.stdout, pushed.stdout
    assert f"{build_id}: sent {files} of {files} files" in pulled.stdout, pulled.stdout
    push_plan = sync_json(src, remote, "push", build_id, remote.url)["builds"][0]
    pull_plan = sync_json(dst, remote, "pull", build_id, remote.url)["builds"][0]
    assert [f["name"] for f in push_plan["files"]] == [f["name"] for f in pull_plan["files"]]
    assert push_plan["bytes_total"] == pull_plan["bytes_total"]


def test_crc32_header_is_the_form_s3_checks() -> None:
    """``x-amz-checksum-crc32``: the CRC-32 (ISO-HDLC, zlib's) big-endian in base64; check value 0xCBF43926."""
    from e2b_artifacts.storage.s3 import crc32_header

    assert crc32_header(b"123456789") == base64.b64encode(bytes.fromhex("cbf43926")).decode() == "y/Q5Jg=="
    data = os.urandom(3 << 20)
    assert crc32_header(data) == base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()
    assert crc32_header(b"") == "AAAAAA=="


def test_crc32_header_without_isal_is_zlibs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where ``isal`` has no wheel the module falls back to zlib's crc32: the same header value."""
    import importlib

    import e2b_artifacts.storage.s3 as s3_module

    data = os.urandom(1 << 20)
    with_isal = s3_module.crc32_header(data)
    monkeypatch.setitem(sys.modules, "isal.isal_zlib", None)  # import of it raises ImportError
    try:
        fallback = importlib.reload(s3_module)
        assert fallback.CRC32_FROM == "zlib"
        assert fallback.crc32_header(data) == with_isal
    finally:
        monkeypatch.undo()
        importlib.reload(s3_module)
    assert s3_module.CRC32_FROM == "isal.isal_zlib"  # the test extra brings isal
