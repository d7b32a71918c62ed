#!/usr/bin/env python3
"""Benchmark: ``sync push|pull --all`` of many builds against the baseline of one ``sync`` per build.

Starts a one-node Ceph with radosgw on loopback (tests/storage/ceph.py), writes ``--chains`` 3-deep
diff-layer chains plus as many unrelated builds (tests/storage/builds.py: random data, v3 headers,
``--mib`` MiB of memfile each), and moves them, every variant as a CLI subprocess to its own prefix
(push) or into its own empty storage (pull), in the same run, ``--repeat`` rounds (medians):

* baseline: what an operator scripts without ``--all``: one ``sync push|pull --with-parents BUILD`` per
  build, one after the other (``xargs -I{}``), each with its defaults;
* ``--all --jobs 1`` and ``--all --jobs N`` (``--jobs``, default 4).

Prints seconds, MB/s and the ratio against the baseline; every pull is compared with the source
(byte-identical files).

    python3 scripts/bench_sync_many.py [--chains 3] [--mib 24] [--jobs 4] [--repeat 3]
"""

from __future__ import annotations

import argparse
import filecmp
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.storage.builds import make_build  # noqa: E402
from tests.storage.ceph import Ceph, start_ceph  # noqa: E402

MiB = 1 << 20


def make_storage(root: Path, chains: int, mib: int) -> list[str]:
    ids: list[str] = []
    for _ in range(chains):
        base = make_build(root, extra={"memfile": mib * MiB})
        child = make_build(root, parents=[base], extra={"memfile": mib * MiB})
        leaf = make_build(root, parents=[base, child], extra={"memfile": mib * MiB})
        ids += [base, child, leaf]
    ids += [make_build(root, extra={"memfile": mib * MiB}) for _ in range(chains)]
    return ids


def cli(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "e2b_artifacts", *map(str, args)]


def timed(argv: list[str], env: dict[str, str], stdin: str | None = None) -> float:
    started = time.monotonic()
    proc = subprocess.run(argv, env=env, input=stdin, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        sys.exit(f"error: {' '.join(argv)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return time.monotonic() - started


def same(src: Path, dst: Path, ids: list[str]) -> bool:
    for bid in ids:
        names = sorted(p.name for p in (src / bid).iterdir())
        _, mismatch, errors = filecmp.cmpfiles(src / bid, dst / bid, names, shallow=False)
        if mismatch or errors:
            return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chains", type=int, default=3, help="3-deep chains (and as many unrelated builds)")
    parser.add_argument("--mib", type=int, default=24, help="MiB of memfile per build")
    parser.add_argument("--jobs", type=int, default=4, help="builds at a time of the parallel variant")
    parser.add_argument("--repeat", type=int, default=3, help="rounds; medians are reported")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-sync-many-", dir="/var/tmp"))
    try:
        src = work / "src"
        ids = make_storage(src, args.chains, args.mib)
        total = sum(p.stat().st_size for p in src.rglob("*") if p.is_file())
        print(f"{len(ids)} builds ({args.chains} chains of 3, {args.chains} unrelated), {total / 1e6:.1f} MB",
              flush=True)
        with start_ceph(work / "ceph", store_bytes=16 << 30) as ceph:
            bench(ceph, work, src, ids, total, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def bench(ceph: Ceph, work: Path, src: Path, ids: list[str], total: int, args: argparse.Namespace) -> None:
    import boto3  # type: ignore[import-untyped]

    boto3.client("s3", endpoint_url=ceph.endpoint, region_name="us-east-1", aws_access_key_id=ceph.access_key,
                 aws_secret_access_key=ceph.secret_key).create_bucket(Bucket="bench")
    env = {**os.environ, **ceph.env, "PYTHONPATH": str(REPO)}
    endpoint = ["--endpoint-url", ceph.endpoint]
    id_lines = "\n".join(ids) + "\n"
    variants = ["baseline", "--all --jobs 1", f"--all --jobs {args.jobs}"]
    times: dict[str, list[float]] = {f"{d} {v}": [] for d in ("push", "pull") for v in variants}
    identical = True
    for round_no in range(args.repeat):
        for n, variant in enumerate(variants):
            url = f"s3://bench/r{round_no}-v{n}"
            dst = work / f"dst-{round_no}-{n}"
            for direction, storage, loc in (("push", src, url), ("pull", dst, url)):
                if variant == "baseline":
                    argv = ["xargs", "-I{}", *cli("--storage", storage, "sync", direction, "--with-parents",
                                                  "{}", loc, *endpoint)]
                    seconds = timed(argv, env, id_lines)
                else:
                    seconds = timed(cli("--storage", storage, "sync", direction, *variant.split(), loc, *endpoint),
                                    env)
                times[f"{direction} {variant}"].append(seconds)
                print(f"round {round_no + 1}: {direction} {variant}: {seconds:.2f} s", flush=True)
            identical = identical and same(src, dst, ids)
            shutil.rmtree(dst, ignore_errors=True)
    print(f"\n{len(ids)} builds, {total / 1e6:.1f} MB, radosgw (memstore) on loopback, medians of {args.repeat}")
    print("| step | seconds | MB/s | baseline/this |\n|---|---|---|---|")
    for direction in ("push", "pull"):
        base = statistics.median(times[f"{direction} baseline"])
        for variant in variants:
            med = statistics.median(times[f"{direction} {variant}"])
            print(f"| {direction} {variant} | {med:.2f} | {total / med / 1e6:.1f} | {base / med:.2f}x |")
    print(f"every pull byte-identical to the source: {identical}")


if __name__ == "__main__":
    main()
