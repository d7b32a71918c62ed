#!/usr/bin/env python3
"""Compressed builds end to end, with real servers: prints what it runs and what it measured.

1. A plain 3-build chain as upstream layers it: a base ``build`` of the bundled sample (real ext4), then two
   children, each the 4 KiB blocks a debugfs edit of the previous image changed (V3 headers mapping the rest
   to the ancestors).
2. ``sync push --compress zstd --with-parents`` of the leaf to a directory, radosgw (a one-node Ceph,
   tests/storage/ceph.py) and the GCS emulator (bytes sent, seconds, ratios); ``verify`` of the compressed
   chain; one byte of one frame flipped, ``verify`` again.
3. ``sync pull --decompress --with-parents`` into an empty directory from each store: every file compared
   with the source, ``verify`` of the plain chain.

Run from the repository: ``python scripts/show_compressed.py`` (needs the test setup:
Ceph packages, gcp-storage-emulator).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from e2b_artifacts import header, layout  # noqa: E402
from e2b_artifacts.manifest import write_manifest  # noqa: E402
from tests.storage.ceph import start_ceph  # noqa: E402
from tests.storage.servers import gcs_client, s3_client, start_gcs_emulator  # noqa: E402

BLOCK = 4096
NIL = header.NIL_BUILD


def cli(*args: str | Path, env: dict[str, str] | None = None, show: bool = True) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "e2b_artifacts", *map(str, args)]
    if show:
        print("$ e2b-artifact " + " ".join(str(a) for a in args))
    return subprocess.run(argv, capture_output=True, text=True, env={**os.environ, **(env or {})}, check=False,
                          cwd=REPO)


def layer(storage: Path, parent_image: Path, parent_hdr: header.Header | None, parent_id: str, edits: list[str],
          work: Path) -> tuple[str, Path, header.Header]:
    """A child of ``parent_id``: ``edits`` applied with debugfs to a copy of the parent's full image; its data
    file holds the changed blocks only, its V3 header maps the rest where the parent's header does."""
    image = work / f"{uuid.uuid4()}.img"
    shutil.copyfile(parent_image, image)
    script = work / "edits"
    script.write_text("\n".join(edits) + "\n")
    subprocess.run(["debugfs", "-w", "-f", str(script), str(image)], check=True, capture_output=True)
    bid = str(uuid.uuid4())
    d = storage / bid
    d.mkdir()
    size = image.stat().st_size
    parent_map = parent_hdr.mappings if parent_hdr is not None else [header.Mapping(0, size, parent_id, 0)]
    changed: list[int] = []
    with parent_image.open("rb") as old, image.open("rb") as new:
        for n in range(size // BLOCK):
            a, b = old.read(BLOCK), new.read(BLOCK)
            if a != b:
                changed.append(n)
    with image.open("rb") as src, (d / layout.ROOTFS).open("wb") as out:
        for n in changed:
            src.seek(n * BLOCK)
            out.write(src.read(BLOCK))
    mappings: list[header.Mapping] = []
    own = {n: i for i, n in enumerate(changed)}

    def emit(m: header.Mapping) -> None:
        last = mappings[-1] if mappings else None
        if last and last.build_id == m.build_id and last.end == m.offset and (
                m.build_id == NIL or last.storage_offset + last.length == m.storage_offset):
            mappings[-1] = header.Mapping(last.offset, last.length + m.length, m.build_id, last.storage_offset)
        else:
            mappings.append(m)

    for pm in parent_map:
        for n in range(pm.offset // BLOCK, -(-pm.end // BLOCK)):
            if n in own:
                emit(header.Mapping(n * BLOCK, BLOCK, bid, own[n] * BLOCK))
            else:
                emit(header.Mapping(n * BLOCK, BLOCK, pm.build_id,
                                    0 if pm.build_id == NIL else pm.storage_offset + n * BLOCK - pm.offset))
    base = parent_hdr.base_build_id if parent_hdr is not None else parent_id
    generation = parent_hdr.generation + 1 if parent_hdr is not None else 1
    hdr = header.Header(3, BLOCK, size, generation, bid, base, header.Mappings.of(mappings))
    (d / layout.ROOTFS_HEADER).write_bytes(header.serialize(hdr))
    meta = json.loads((storage / parent_id / layout.METADATA).read_text())
    meta["template"]["build_id"] = bid
    (d / layout.METADATA).write_text(json.dumps(meta, indent=2) + "\n")
    write_manifest(d, bid)
    return bid, image, hdr


def digest_tree(build_dir: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(build_dir.iterdir()) if p.is_file()}


def verify_line(storage: Path, bid: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    proc = cli("--storage", storage, "verify", bid, env=env)
    lines = proc.stdout.strip().splitlines()
    keep = [ln for ln in lines if ln.startswith(("FAIL", "ok   data", "ok   rootfs", "ok   header"))]
    return proc.returncode, "\n".join([*keep, lines[-1] if lines else proc.stderr])


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="show-compressed-"))
    storage = work / "templates"
    storage.mkdir()
    base = str(uuid.uuid4())
    built = cli("--storage", storage, "build", "--rootfs-tar", REPO / "fixtures/sample-rootfs.tar",
                "--envd", REPO / "fixtures/envd-standin/envd", "--build-id", base, "--disk-size-mb", "64")
    assert built.returncode == 0, built.stderr
    (work / "payload1").write_bytes(os.urandom(3 << 20))
    (work / "payload2").write_bytes(bytes(range(256)) * 8192)
    child, child_image, child_hdr = layer(storage, storage / base / layout.ROOTFS, None, base,
                                          [f"write {work / 'payload1'} /payload1"], work)
    leaf, _, _ = layer(storage, child_image, child_hdr, child,
                       [f"write {work / 'payload2'} /payload2", "rm /payload1"], work)
    ids = [base, child, leaf]
    plain_bytes = {b: sum(p.stat().st_size for p in (storage / b).iterdir()) for b in ids}
    plain_alloc = {b: sum(p.stat().st_blocks * 512 for p in (storage / b).iterdir()) for b in ids}
    print(f"plain chain {ids}: file sizes {plain_bytes}, allocated {plain_alloc}")
    for b in ids:
        rc, text = verify_line(storage, b)
        print(f"verify plain {b}: exit {rc}\n{text}\n")

    (work / "ceph").mkdir()
    (work / "gcs").mkdir()
    with start_ceph(work / "ceph") as ceph:
        gcs = start_gcs_emulator(work / "gcs")
        try:
            bucket = f"show-{uuid.uuid4().hex[:8]}"
            s3_client(ceph.endpoint, ceph.access_key, ceph.secret_key).create_bucket(  # type: ignore[attr-defined]
                Bucket=bucket)
            gcs_client(gcs.endpoint).create_bucket(bucket)  # type: ignore[attr-defined]
            stores = [("dir", str(work / "remote-dir"), [], {}),
                      ("s3 (radosgw)", f"s3://{bucket}/templates", ["--endpoint-url", ceph.endpoint], ceph.env),
                      ("gcs (emulator)", f"gs://{bucket}/templates", [], {"STORAGE_EMULATOR_HOST": gcs.endpoint})]
            for label, url, args, env in stores:
                print(f"==== {label}: {url}")
                started = time.monotonic()
                proc = cli("--storage", storage, "sync", "push", "--compress", "zstd", "--with-parents", leaf,
                           url, *args, "--json", env=env)
                took = time.monotonic() - started
                assert proc.returncode == 0, proc.stderr
                report = json.loads(proc.stdout)
                total = sum(plain_bytes.values())
                print(f"compressed push: {report['bytes_sent']} bytes sent in {took:.2f} s "
                      f"(plain files {total} bytes: {report['bytes_sent'] / total:.1%})")
                again = json.loads(cli("--storage", storage, "sync", "push", "--compress", "zstd",
                                       "--with-parents", leaf, url, *args, "--json", env=env).stdout)
                states = sorted({b["state"] for b in again["builds"]})
                print(f"re-run: {again['bytes_sent']} bytes sent, states {states}")
                if label == "dir":
                    remote_dir = Path(url)
                    for b in ids:
                        rc, text = verify_line(remote_dir, b)
                        print(f"verify compressed {b}: exit {rc}\n{text}\n")
                    frames = header.read_header(remote_dir / base / layout.ROOTFS_HEADER).builds[base].frames
                    victim = remote_dir / base / "rootfs.ext4.zstd"
                    data = bytearray(victim.read_bytes())
                    pick = frames[len(frames) // 2]
                    data[pick.start_c + pick.size_c // 2] ^= 0x01
                    damaged = work / "damaged"
                    shutil.copytree(remote_dir, damaged)
                    (damaged / base / "rootfs.ext4.zstd").write_bytes(bytes(data))
                    print(f"flipped one byte at compressed offset {pick.start_c + pick.size_c // 2:#x} of "
                          f"{base}/rootfs.ext4.zstd (frame {frames.index(pick)})")
                    rc, text = verify_line(damaged, leaf)
                    print(f"verify damaged chain, leaf {leaf}: exit {rc}\n{text}\n")
                empty = work / f"pulled-{label.split()[0]}"
                started = time.monotonic()
                proc = cli("--storage", empty, "sync", "pull", "--decompress", "--with-parents", leaf, url, *args,
                           "--json", env=env)
                took = time.monotonic() - started
                assert proc.returncode == 0, proc.stderr
                pulled = json.loads(proc.stdout)
                same = {b: digest_tree(empty / b) == digest_tree(storage / b) for b in ids}
                print(f"pull --decompress into {empty}: {pulled['bytes_sent']} bytes fetched in {took:.2f} s; "
                      f"every file byte-identical to the source: {same}")
                for b in ids:
                    rc, text = verify_line(empty, b)
                    print(f"verify decompressed {b}: exit {rc} ({text.splitlines()[-1]})")
        finally:
            gcs.stop()
    print(f"work dir: {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
