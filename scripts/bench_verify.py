#!/usr/bin/env python3
"""Benchmark: full `e2b-artifact verify` of a build with a 2 GiB rootfs and a 1 GiB memfile (random data).

Baseline, measured in the same run: `cat` of the same files to /dev/null. Figure: throughput of
verify (bytes of the build / wall time of the whole CLI process) divided by cat's. Target >= 0.7.

Two conditions, interleaved, medians of N runs each:
* cold: the files' page cache is dropped (posix_fadvise DONTNEED) before every run of either tool,
  so both read from disk;
* warm: everything is in the page cache, so cat runs at memory speed and verify is bound by
  BLAKE3 on the available cores.
Also printed: `verify --quick` (no data hashing), warm.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import random
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from e2b_artifacts import header, layout, manifest, metadata, snapshot  # noqa: E402
from e2b_artifacts.compress import identity_header  # noqa: E402

ENVD = REPO / "fixtures" / "envd-standin" / "envd"
GIB = 1 << 30
CHUNK = 64 << 20


def random_file(path: Path, size: int, seed: int) -> None:
    rng = random.Random(seed)
    with path.open("wb") as fh:
        left = size
        while left:
            n = min(CHUNK, left)
            fh.write(rng.randbytes(n))
            left -= n


def make_build(work: Path, build_id: str) -> Path:
    """A real ext4 (mke2fs -d from a tree of random files) + memfile + bincode snapfile + metadata + manifest."""
    bdir = work / "templates" / build_id
    bdir.mkdir(parents=True)
    tree = work / "tree"
    for d in ("sbin", "usr/bin", "proc", "sys", "dev", "data"):
        (tree / d).mkdir(parents=True)
    shutil.copy2(ENVD, tree / "usr/bin/envd")
    os.symlink("../usr/bin/envd", tree / "sbin/init")
    for i in range(29):  # 29 x 64 MiB = 1.81 GiB of data in a 2 GiB filesystem
        random_file(tree / "data" / f"blob{i:02d}", CHUNK, i)
    subprocess.run(["mke2fs", "-q", "-F", "-t", "ext4", "-b", "4096", "-m", "0", "-d", str(tree),
                    str(bdir / "rootfs.ext4"), "2G"], check=True, capture_output=True)
    shutil.rmtree(tree)
    random_file(bdir / "memfile", GIB, 99)
    # a memory snapshot needs its header (verify FAILs without one: the Local-storage failure, snapshot.memfile.header)
    v3 = dataclasses.replace(identity_header(build_id, 4096, GIB), version=3, raw_version=3)
    (bdir / layout.MEMFILE_HEADER).write_bytes(header.serialize(v3))
    version = b"6.0.0"
    body = struct.pack("<QQ", snapshot.X86_64_MAGIC, len(version)) + version + struct.pack("<Q", 1024)
    body += random.Random(5).randbytes(20000)
    (bdir / "snapfile").write_bytes(body + struct.pack("<Q", snapshot.crc64(body)))
    md = metadata.Metadata(build_id=build_id, kernel_version="vmlinux-6.1.102",
                           firecracker_version="v1.12.1_d990331")
    md.ext.update(init="envd", ram_mb=1024)
    md.write(bdir / metadata.FILE_NAME)
    manifest.write_manifest(bdir, build_id)
    return bdir


def drop_cache(files: list[Path]) -> None:
    for path in files:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def timed(cmd: list[str], env: dict[str, str], expect_rc: int = 0) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
    elapsed = time.perf_counter() - start
    if proc.returncode != expect_rc:
        sys.exit(f"{' '.join(cmd[:5])} ... exited {proc.returncode}:\n{proc.stderr.decode()}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--runs", type=int, default=5)
    parser.add_argument("--dir", type=Path, default=Path("/var/tmp"), help="where to create the build (a real disk)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-verify-", dir=args.dir) as tmp:
        work = Path(tmp)
        print("creating the build (2 GiB ext4 of random files, 1 GiB random memfile) ...", flush=True)
        bdir = make_build(work, "0b5e0c4e-7d1f-4c55-9a2b-6b1d0c0ffee1")
        files = [p for p in sorted(bdir.iterdir()) if p.is_file()]
        total = sum(p.stat().st_size for p in files)
        env = {**os.environ, "LOCAL_TEMPLATE_STORAGE_BASE_PATH": str(bdir.parent),
               "HOST_KERNELS_DIR": str(work / "none"), "FIRECRACKER_VERSIONS_DIR": str(work / "none"),
               "TEMPLATE_CACHE_DIR": str(work / "none"), "PYTHONPATH": str(REPO)}
        verify_cmd = [sys.executable, "-m", "e2b_artifacts", "verify", str(bdir)]
        cat_cmd = ["cat", *map(str, files)]
        series: dict[str, list[float]] = {k: [] for k in ("cat cold", "verify cold", "cat warm", "verify warm",
                                                            "verify --quick warm")}
        timed(verify_cmd, env)  # warm-up: imports compiled, files cached
        for _ in range(args.runs):  # interleaved, so load changes hit every series alike
            for label, cmd in (("cat cold", cat_cmd), ("verify cold", verify_cmd)):
                drop_cache(files)
                series[label].append(timed(cmd, env))
            subprocess.run(cat_cmd, stdout=subprocess.DEVNULL, check=True)
            series["cat warm"].append(timed(cat_cmd, env))
            series["verify warm"].append(timed(verify_cmd, env))
            series["verify --quick warm"].append(timed([*verify_cmd, "--quick"], env))
        med = {k: statistics.median(v) for k, v in series.items()}
        print(f"build: {len(files)} files, {total / GIB:.2f} GiB; {args.runs} runs each, medians; "
              f"{os.cpu_count()} CPUs; baseline: cat FILES > /dev/null")
        for label, seconds in med.items():
            spread = f"(runs {min(series[label]):.2f}-{max(series[label]):.2f} s)"
            print(f"  {label:<22} {seconds:7.3f} s  {total / seconds / GIB:6.2f} GiB/s  {spread}")
        print(f"load average during the run: {os.getloadavg()[0]:.1f} (other jobs share the CPUs and the disk)")
        for cond in ("cold", "warm"):
            ratio = med[f"cat {cond}"] / med[f"verify {cond}"]
            verdict = "meets" if ratio >= 0.7 else "below"
            print(f"ratio verify/cat, {cond}: {ratio:.2f} ({verdict} the 0.7 target)")
        print(f"ratio verify --quick/cat, warm: {med['cat warm'] / med['verify --quick warm']:.2f}")


if __name__ == "__main__":
    main()
