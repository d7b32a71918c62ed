#!/usr/bin/env python3
"""Benchmark: `e2b-artifact sync` vs `aws s3 sync` pushing and pulling a 1 GiB build to moto's S3 server.

Both run as CLI subprocesses against the same moto_server on 127.0.0.1, in the same
run, with the same data. Prints wall times, the ratio aws/ours (target: >= 1.5 for
push and pull) and the no-op re-run times. Ours also verifies every byte (BLAKE3) on
the way; aws checks per-request MD5/CRC only.

    python3 scripts/bench_sync.py [--size-mib 1024] [--jobs 8] [--part-size 64]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from storage.builds import header_v3  # noqa: E402
from storage.servers import S3_ENV, s3_client, start_moto  # noqa: E402

from e2b_artifacts.manifest import write_manifest  # noqa: E402
from e2b_artifacts.metadata import Metadata  # noqa: E402


def make_1gib_build(root: Path, size_mib: int) -> str:
    """rootfs.ext4 (5/8) + memfile (3/8) of random data, headers, snapfile, metadata, manifest."""
    build_id = str(uuid.uuid4())
    d = root / build_id
    d.mkdir(parents=True)
    chunk = 16 << 20
    for name, mib in (("rootfs.ext4", size_mib * 5 // 8), ("memfile", size_mib - size_mib * 5 // 8)):
        with (d / name).open("wb") as fh:
            for _ in range((mib << 20) // chunk):
                fh.write(os.urandom(chunk))
            fh.write(os.urandom((mib << 20) % chunk))
        size = (d / name).stat().st_size
        (d / f"{name}.header").write_bytes(header_v3(build_id, size, [(0, size, build_id, 0)]))
    (d / "snapfile").write_bytes(os.urandom(600 << 10))
    Metadata(build_id=build_id, kernel_version="vmlinux-6.1.102", firecracker_version="v1.12.1_d990331").write(
        d / "metadata.json")
    write_manifest(d, build_id)
    return build_id


def timed(label: str, argv: list[str], env: dict[str, str]) -> float:
    started = time.monotonic()
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    seconds = time.monotonic() - started
    if proc.returncode != 0:
        sys.exit(f"{label} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    print(f"  {label:<34} {seconds:7.2f} s", flush=True)
    return seconds


def same_tree(a: Path, b: Path) -> bool:
    return subprocess.run(["diff", "-rq", str(a), str(b)], capture_output=True, check=False).returncode == 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--jobs", type=int, default=8)
    parser.add_argument("--part-size", type=int, default=64, help="MiB")
    args = parser.parse_args()
    aws = shutil.which("aws")
    if aws is None:
        sys.exit("aws CLI not found: pip install awscli")

    work = Path(tempfile.mkdtemp(prefix="bench-sync-", dir="/var/tmp"))
    server = start_moto(work)
    try:
        env = {**os.environ, **S3_ENV}
        client = s3_client(server.endpoint)
        for bucket in ("bench-ours", "bench-aws"):
            client.create_bucket(Bucket=bucket)  # type: ignore[attr-defined]
        src = work / "src"
        print(f"making a {args.size_mib} MiB build ...", flush=True)
        build_id = make_1gib_build(src, args.size_mib)
        total = sum(p.stat().st_size for p in (src / build_id).iterdir())
        print(f"build {build_id}: {total / 2**20:.0f} MiB, moto_server at {server.endpoint}", flush=True)

        ours = [sys.executable, "-m", "e2b_artifacts"]
        tune = ["--endpoint-url", server.endpoint, "--jobs", str(args.jobs), "--part-size", str(args.part_size)]
        aws_ep = ["--endpoint-url", server.endpoint, "--only-show-errors"]
        remote_aws = f"s3://bench-aws/templates/{build_id}"

        print("push (local -> S3):")
        ours_push = timed("e2b-artifact sync push", [*ours, "--storage", str(src), "sync", "push", build_id,
                                                   "s3://bench-ours/templates", *tune], env)
        aws_push = timed("aws s3 sync (upload)", [aws, "s3", "sync", str(src / build_id), remote_aws, *aws_ep], env)
        print("pull (S3 -> local):")
        pulled = work / "pulled"
        ours_pull = timed("e2b-artifact sync pull", [*ours, "--storage", str(pulled), "sync", "pull", build_id,
                                                   "s3://bench-ours/templates", *tune], env)
        aws_dir = work / "aws-pulled" / build_id
        aws_pull = timed("aws s3 sync (download)", [aws, "s3", "sync", remote_aws, str(aws_dir), *aws_ep], env)
        print("no-op re-runs (nothing changed):")
        ours_noop = timed("e2b-artifact sync push (again)", [*ours, "--storage", str(src), "sync", "push",
                                                           build_id, "s3://bench-ours/templates", *tune], env)
        ours_noop_pull = timed("e2b-artifact sync pull (again)", [*ours, "--storage", str(pulled), "sync", "pull",
                                                                build_id, "s3://bench-ours/templates", *tune], env)
        aws_noop = timed("aws s3 sync (upload again)",
                         [aws, "s3", "sync", str(src / build_id), remote_aws, *aws_ep], env)

        identical = same_tree(src / build_id, pulled / build_id) and same_tree(src / build_id, aws_dir)
        print(f"\nbyte-identical after both pulls: {identical}")
        print(f"{'':<8}{'ours':>10}{'aws s3 sync':>14}{'aws/ours':>10}")
        for label, a, b in (("push", ours_push, aws_push), ("pull", ours_pull, aws_pull),
                            ("no-op", ours_noop, aws_noop)):
            print(f"{label:<8}{a:>9.2f}s{b:>13.2f}s{b / a:>9.2f}x")
        print(f"no-op pull (ours): {ours_noop_pull:.2f} s")
        for label, a, b in (("push", ours_push, aws_push), ("pull", ours_pull, aws_pull)):
            verdict = "meets" if b / a >= 1.5 else "MISSES"
            print(f"{label}: ours is {b / a:.2f}x faster than aws s3 sync ({verdict} the 1.5x target; "
                  f"{total / a / 1e6:.0f} vs {total / b / 1e6:.0f} MB/s)")
        if not identical:
            sys.exit("pulled trees differ from the source")
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
