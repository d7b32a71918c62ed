#!/usr/bin/env python3
"""Benchmark: `e2b-artifact sync` vs `aws s3 sync` pushing and pulling a 1 GiB build to moto's S3 server.

Both run as CLI subprocesses against the same moto_server on 127.0.0.1, in the same
run, with the same data. Prints wall times, the ratio aws/ours (target: >= 1.5 for
push and pull) and the no-op re-run times. Ours also verifies every byte (BLAKE3) on
the way; aws checks per-request MD5/CRC only.

    python3 scripts/bench_sync.py [--size-mib 1024] [--jobs 8] [--part-size 16] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from storage.builds import header_v3  # noqa: E402
from storage.servers import S3_ENV, s3_client, start_moto, which_script  # noqa: E402

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
    parser.add_argument("--part-size", type=int, default=16, help="upload part MiB (the CLI default)")
    parser.add_argument("--range-size", type=int, default=64, help="download range MiB (the CLI default)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds; medians are reported")
    args = parser.parse_args()
    aws = which_script("aws")
    if aws is None:
        sys.exit("aws CLI not found: pip install awscli")

    work = Path(tempfile.mkdtemp(prefix="bench-sync-", dir="/var/tmp"))
    server = start_moto(work)
    try:
        env = {**os.environ, **S3_ENV}
        client: Any = s3_client(server.endpoint)
        for bucket in ("bench-ours", "bench-aws"):
            client.create_bucket(Bucket=bucket)
        src = work / "src"
        print(f"making a {args.size_mib} MiB build ...", flush=True)
        build_id = make_1gib_build(src, args.size_mib)
        total = sum(p.stat().st_size for p in (src / build_id).iterdir())
        print(f"build {build_id}: {total / 2**20:.0f} MiB, moto_server at {server.endpoint}; "
              f"{args.repeat} round(s), medians reported", flush=True)

        ours = [sys.executable, "-m", "e2b_artifacts"]
        tune = ["--endpoint-url", server.endpoint, "--jobs", str(args.jobs), "--part-size", str(args.part_size),
                "--range-size", str(args.range_size)]
        aws_ep = ["--endpoint-url", server.endpoint, "--only-show-errors"]
        times: dict[str, list[float]] = {}
        identical = True
        for n in range(1, args.repeat + 1):
            print(f"round {n}:", flush=True)
            ours_url, aws_url = f"s3://bench-ours/round{n}", f"s3://bench-aws/round{n}/{build_id}"
            pulled, aws_dir = work / f"pulled{n}", work / f"aws-pulled{n}" / build_id
            steps = [
                ("ours push", [*ours, "--storage", str(src), "sync", "push", build_id, ours_url, *tune]),
                ("aws push", [aws, "s3", "sync", str(src / build_id), aws_url, *aws_ep]),
                ("ours pull", [*ours, "--storage", str(pulled), "sync", "pull", build_id, ours_url, *tune]),
                ("aws pull", [aws, "s3", "sync", aws_url, str(aws_dir), *aws_ep]),
            ]
            if n == args.repeat:  # nothing changed since the round's push/pull
                steps += [
                    ("ours no-op push", steps[0][1]),
                    ("ours no-op pull", steps[2][1]),
                    ("aws no-op push", steps[1][1]),
                    ("aws no-op pull", steps[3][1]),
                ]
            for label, argv in steps:
                times.setdefault(label, []).append(timed(label, argv, env))
            identical &= same_tree(src / build_id, pulled / build_id) and same_tree(src / build_id, aws_dir)
            for bucket, prefix in (("bench-ours", f"round{n}/"), ("bench-aws", f"round{n}/")):
                if n < args.repeat:  # keep the server's memory flat between rounds
                    for obj in client.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", []):
                        client.delete_object(Bucket=bucket, Key=obj["Key"])
            if n < args.repeat:
                shutil.rmtree(pulled)
                shutil.rmtree(aws_dir.parent)

        med = {label: statistics.median(values) for label, values in times.items()}
        print(f"\nbyte-identical after every pull (ours and aws): {identical}")
        print(f"{'':<8}{'ours':>10}{'aws s3 sync':>14}{'aws/ours':>10}")
        for what in ("push", "pull", "no-op push", "no-op pull"):
            a, b = med[f"ours {what}"], med[f"aws {what}"]
            print(f"{what:<12}{a:>8.2f}s{b:>12.2f}s{b / a:>9.2f}x")
        for what in ("push", "pull"):
            a, b = med[f"ours {what}"], med[f"aws {what}"]
            verdict = "meets" if b / a >= 1.5 else "MISSES"
            print(f"{what}: ours {b / a:.2f}x as fast as aws s3 sync ({verdict} the 1.5x target; "
                  f"{total / a / 1e6:.0f} vs {total / b / 1e6:.0f} MB/s)")
        print(f"no-op re-run (ours): push {med['ours no-op push']:.2f} s, pull {med['ours no-op pull']:.2f} s")
        if not identical:
            sys.exit("pulled trees differ from the source")
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
