#!/usr/bin/env python3
"""Benchmark: OCI image -> rootfs.ext4 (build --from-image's core) against bare ``mke2fs -d`` of the extracted tree.

Makes a 3-layer gzip OCI image with umoci from real host files (default: /usr/include and
/usr/lib/python3.11 plus busybox; ~185 MB, ~10 000 files), extracts it once with ``umoci unpack``
(the baseline's input, not timed), then times in one run:

* baseline: ``mke2fs -t ext4 -b 4096 -d <extracted tree>`` (same size, same features);
* ours, cold cache: resolve + decompress + verify + flatten + mke2fs from the flattened tar (+ resize);
* ours, warm cache: the same with the layers already decompressed in the blob cache;
* each of ours again including the fidelity check (debugfs stat + dump + hash of every file).

Prints every time and the ratios against the baseline. Needs root only for umoci unpack of the
baseline tree (owners); run: python3 scripts/bench_image.py [--tree DIR ...] [--repeat N]
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
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from e2b_artifacts import e2fsprogs, rootfs
from e2b_artifacts.fidelity import compare
from e2b_artifacts.image import ImageOptions, rootfs_tar_from_image


def sh(*cmd: str | Path) -> None:
    subprocess.run([str(c) for c in cmd], check=True, capture_output=True)


def make_image(work: Path, trees: list[Path]) -> Path:
    layout = work / "layout"
    sh("umoci", "init", "--layout", layout)
    sh("umoci", "new", "--image", f"{layout}:b")
    bundle = work / "bundle"
    sh("umoci", "unpack", "--image", f"{layout}:b", bundle)
    (bundle / "rootfs/bin").mkdir()
    shutil.copy2("/bin/busybox", bundle / "rootfs/bin/busybox")
    sh("umoci", "repack", "--refresh-bundle", "--image", f"{layout}:b", bundle)
    for tree in trees:
        dest = bundle / "rootfs" / tree.relative_to("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        sh("cp", "-a", tree, dest)
        sh("umoci", "repack", "--refresh-bundle", "--image", f"{layout}:b", bundle)
    shutil.rmtree(bundle)
    return layout


def timed(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tree", action="append", type=Path, help="host directory to put in a layer (repeatable)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    trees = args.tree or [Path("/usr/include"), Path("/usr/lib/python3.11")]
    with tempfile.TemporaryDirectory(prefix="bench-image-", dir="/var/tmp") as tmp:
        work = Path(tmp)
        layout = make_image(work, trees)
        tree = work / "extracted"
        sh("umoci", "unpack", "--image", f"{layout}:b", tree)
        content = rootfs.scan_dir(tree / "rootfs")
        size = content.generous_size(64)
        print(f"image: {len(trees) + 1} gzip layers, {content.blocks_bytes / 1e6:.0f} MB in {content.entries} entries")
        cache = work / "cache"
        out = work / "out"
        out.mkdir()
        image = out / "rootfs.ext4"

        def baseline() -> None:
            image.unlink(missing_ok=True)
            e2fsprogs.mke2fs(image, size, source=tree / "rootfs")

        def ours(cold: bool, check: bool) -> Callable[[], None]:
            def run() -> None:
                if cold:
                    shutil.rmtree(cache, ignore_errors=True)
                image.unlink(missing_ok=True)
                flat = rootfs_tar_from_image(ImageOptions(f"oci-layout:{layout}:b", cache_dir=cache), out)
                try:
                    rootfs.create_from_tar(flat.tar_path, image, free_mb=64, content_bytes=flat.content_bytes,
                                           inodes=flat.inodes, xattrs=flat.xattrs)
                finally:
                    flat.tar_path.unlink()
                if check:
                    report = compare(flat.entries, image)
                    assert report.ok, report.mismatches[:5]
            return run

        base = timed(baseline, args.repeat)
        results = {
            "ours, cold cache (gunzip+verify+flatten+mke2fs)": timed(ours(True, False), args.repeat),
            "ours, warm cache (flatten+mke2fs)": timed(ours(False, False), args.repeat),
            "ours, cold cache + fidelity check": timed(ours(True, True), args.repeat),
            "ours, warm cache + fidelity check": timed(ours(False, True), args.repeat),
        }
        print(f"baseline: bare mke2fs -d of the extracted tree: {base:.3f} s (median of {args.repeat})")
        for name, value in results.items():
            print(f"{name}: {value:.3f} s  ratio {value / base:.2f}x")
        print("target: <= 1.2x (warm cache, without the fidelity check, is the like-for-like figure)")
        os.sync()


if __name__ == "__main__":
    main()
