#!/usr/bin/env python3
"""Benchmark: ``sync push --compress`` / ``sync pull --decompress`` against the plain ``sync push`` / ``pull``
of the same build to the same moto S3 server, in the same run (the baseline), plus ``zstd -3 -T0`` on the
build's data files as the codec's own speed.

The build is 1 GiB of device (``--size-mib``) holding ``--data-mib`` MiB of data (sparse files, as a real
build's rootfs and memfile are): half random, half text-like (compressible), the rest holes. Prints wall
times (median of ``--repeat`` rounds), bytes sent, the stored/plain ratio and time ratios against the
plain transfer, and the peak RSS of the compressing push (memory stays bounded: frames are 2 MiB).

    python3 scripts/bench_compress.py [--size-mib 1024] [--data-mib 300] [--repeat 1]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from e2b_artifacts.manifest import write_manifest  # noqa: E402
from e2b_artifacts.metadata import Metadata  # noqa: E402
from tests.storage.servers import S3_ENV, s3_client, start_moto  # noqa: E402

CHUNK = 4 << 20
_TEXT = ("the quick brown fox jumps over lazy dogs while sandboxes boot from snapshots of firecracker microvms "
         "and envd answers on port 49983 lib usr bin share locale")
WORDS = [w.encode() for w in _TEXT.split(" ")]


def _fill(path: Path, apparent: int, data: int, rng: random.Random) -> None:
    """``data`` bytes in 4 MiB extents spread over an ``apparent``-byte sparse file."""
    extents = max(1, data // CHUNK)
    stride = apparent // extents
    with path.open("wb") as fh:
        fh.truncate(apparent)
        for n in range(extents):
            fh.seek(n * stride)
            if n % 2:
                fh.write(rng.randbytes(CHUNK))
            else:
                text = b" ".join(rng.choice(WORDS) for _ in range(CHUNK // 5))
                fh.write(text[:CHUNK].ljust(CHUNK, b"\n"))


def make_build(root: Path, size_mib: int, data_mib: int) -> str:
    build_id = str(uuid.uuid4())
    d = root / build_id
    d.mkdir(parents=True)
    rng = random.Random(1)
    _fill(d / "rootfs.ext4", (size_mib * 3 // 4) << 20, (data_mib * 2 // 3) << 20, rng)
    _fill(d / "memfile", (size_mib // 4) << 20, (data_mib // 3) << 20, rng)
    (d / "snapfile").write_bytes(rng.randbytes(600 << 10))
    Metadata(build_id=build_id, kernel_version="vmlinux-6.1.102", firecracker_version="v1.12.1_d990331").write(
        d / "metadata.json")
    write_manifest(d, build_id)
    return build_id


def run(argv: list[str | Path], env: dict[str, str]) -> tuple[float, dict[str, object], int]:
    started = time.monotonic()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen([str(a) for a in argv], env=env, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own peak RSS (KiB)
        proc.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.monotonic() - started
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, argv))} failed: {stderr[-2000:]}")
    return seconds, json.loads(stdout) if stdout.strip().startswith("{") else {}, usage.ru_maxrss


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--data-mib", type=int, default=300)
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-compress-"))
    storage = work / "templates"
    bid = make_build(storage, args.size_mib, args.data_mib)
    files = list((storage / bid).iterdir())
    apparent = sum(p.stat().st_size for p in files)
    allocated = sum(p.stat().st_blocks * 512 for p in files)
    print(f"build {bid}: {apparent >> 20} MiB of files, {allocated >> 20} MiB allocated")
    (work / "moto").mkdir()
    moto = start_moto(work / "moto")
    client = s3_client(moto.endpoint)
    env = {**os.environ, **S3_ENV}
    tool = [sys.executable, "-m", "e2b_artifacts"]
    results: dict[str, list[float]] = {}
    sent: dict[str, int] = {}
    peaks: dict[str, int] = {}
    try:
        for round_no in range(args.repeat):
            for case in ("plain", "zstd", "lz4"):
                bucket = f"b{round_no}-{case}-{uuid.uuid4().hex[:6]}"
                client.create_bucket(Bucket=bucket)  # type: ignore[attr-defined]
                url = f"s3://{bucket}/t"
                form = [] if case == "plain" else ["--compress", case]
                seconds, report, peak = run([*tool, "--storage", storage, "sync", "push", *form, bid, url,
                                             "--endpoint-url", moto.endpoint, "--json"], env)
                results.setdefault(f"push {case}", []).append(seconds)
                sent[f"push {case}"] = int(report.get("bytes_sent", 0))  # type: ignore[call-overload]
                peaks[f"push {case}"] = peak
                again, report, _ = run([*tool, "--storage", storage, "sync", "push", *form, bid, url,
                                        "--endpoint-url", moto.endpoint, "--json"], env)
                results.setdefault(f"re-push {case}", []).append(again)
                back = work / f"pulled-{round_no}-{case}"
                pull_form = [] if case == "plain" else ["--decompress"]
                seconds, report, _ = run([*tool, "--storage", back, "sync", "pull", *pull_form, bid, url,
                                          "--endpoint-url", moto.endpoint, "--json"], env)
                results.setdefault(f"pull {case}", []).append(seconds)
                sent[f"pull {case}"] = int(report.get("bytes_sent", 0))  # type: ignore[call-overload]
                shutil.rmtree(back)
        if shutil.which("zstd"):
            for name in ("rootfs.ext4", "memfile"):
                started = time.monotonic()
                subprocess.run(["zstd", "-3", "-T0", "-q", "-f", "-o", str(work / f"{name}.zst"),
                                str(storage / bid / name)], check=True)
                results.setdefault("zstd -3 -T0 (CLI, the data files)", [0.0])[0] += time.monotonic() - started
    finally:
        moto.stop()
    med = {k: statistics.median(v) for k, v in results.items()}
    print(f"{'case':36} {'median s':>9} {'bytes sent':>13} {'vs plain':>9}")
    for key, seconds in med.items():
        kind = key.split()[0]
        base = med.get(f"{kind} plain") if kind in ("push", "pull", "re-push") else None
        ratio = f"{base / seconds:.2f}x" if base and seconds else ""
        print(f"{key:36} {seconds:9.2f} {sent.get(key, 0):13} {ratio:>9}")
    for case in ("zstd", "lz4"):
        print(f"stored/plain ({case}): {sent[f'push {case}'] / sent['push plain']:.1%} of the plain push's bytes, "
              f"{sent[f'push {case}'] / allocated:.1%} of the allocated bytes")
    print("peak RSS of the push: " + ", ".join(f"{k.split()[1]} {v // 1024} MiB" for k, v in peaks.items())
          + " (the uploads' parts in flight, -j 8 x 16 MiB, dominate; a frame is 2 MiB)")
    print(f"work dir: {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
