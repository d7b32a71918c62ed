#!/usr/bin/env python3
"""Benchmark: whole `e2b-artifact inject` process time on a 64 MiB and a 4 GiB (sparse) image.

Baseline, measured in the same run: `python3 -c pass` (interpreter start-up, the floor).
Targets: each inject at most 150 ms above the floor; the 4 GiB one within 50 ms of the
64 MiB one. Prints medians of N runs; each run injects into a fresh copy of a freshly made image.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ENVD = REPO / "fixtures" / "envd-standin" / "envd"


def timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def make_image(path: Path, size: str, tree: Path) -> None:
    subprocess.run(["mke2fs", "-q", "-F", "-t", "ext4", "-b", "4096", "-d", str(tree), str(path), size],
                   check=True, capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--runs", type=int, default=9)
    args = parser.parse_args()
    tool = shutil.which("e2b-artifact", path=str(Path(sys.executable).parent)) or shutil.which("e2b-artifact")
    if tool is None:
        sys.exit("e2b-artifact is not installed (run scripts/setup.sh)")
    with tempfile.TemporaryDirectory(prefix="bench-inject-") as tmp:
        work = Path(tmp)
        tree = work / "tree"
        (tree / "sbin").mkdir(parents=True)
        (tree / "etc").mkdir()
        results: dict[str, list[float]] = {"python3 -c pass": [], "inject 64 MiB": [], "inject 4 GiB": []}
        sources = {"inject 64 MiB": work / "small.ext4", "inject 4 GiB": work / "large.ext4"}
        make_image(sources["inject 64 MiB"], "64M", tree)
        make_image(sources["inject 4 GiB"], "4G", tree)
        for _ in range(args.runs):  # interleaved, so drift hits every series alike
            results["python3 -c pass"].append(timed([sys.executable, "-c", "pass"]))
            for label, source in sources.items():
                target = work / "target.ext4"
                subprocess.run(["cp", "--sparse=always", str(source), str(target)], check=True)
                results[label].append(timed([tool, "inject", str(target), "--envd", str(ENVD)]))
                target.unlink()
        med = {k: statistics.median(v) * 1000 for k, v in results.items()}
        floor = med["python3 -c pass"]
        print(f"runs: {args.runs} each, medians, one run on this machine ({tool})")
        for label, ms in med.items():
            extra = "" if label.startswith("python") else f"  (+{ms - floor:.0f} ms over the floor)"
            print(f"  {label:<16} {ms:7.1f} ms{extra}")
        small, large = med["inject 64 MiB"] - floor, med["inject 4 GiB"] - floor
        gap = med["inject 4 GiB"] - med["inject 64 MiB"]
        print(f"target: <= 150 ms over the floor: 64 MiB {small:.0f} ms, 4 GiB {large:.0f} ms -> "
              f"{'met' if max(small, large) <= 150 else 'MISSED'}")
        print(f"target: 4 GiB within 50 ms of 64 MiB: {gap:+.0f} ms -> {'met' if abs(gap) <= 50 else 'MISSED'}")


if __name__ == "__main__":
    main()
