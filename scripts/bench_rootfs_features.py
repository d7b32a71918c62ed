#!/usr/bin/env python3
"""Benchmark: upstream's mke2fs set with inline_data against the same set without it (the baseline).

For a source (the bundled sample tar by default, or ``--tar FILE`` / ``--dir DIR``), each variant in the
same run, interleaved: populate rootfs.ext4 (mke2fs -d + resize to content + free space, as ``build``
does), inject envd, run the rootfs checks of ``verify`` (e2fsck -fn, /sbin/init, envd ELF), and the
``--from-image``-style content read of every regular file (cat batches). Prints medians and the ratio of
each against the baseline, and the blocks in use, the image's apparent and allocated size, and how many
files went inline.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from e2b_artifacts import e2fsprogs, rootfs  # noqa: E402
from e2b_artifacts.inject import inject  # noqa: E402
from e2b_artifacts.verify_rootfs import check_rootfs  # noqa: E402

ENVD = REPO / "fixtures" / "envd-standin" / "envd"
WITH = e2fsprogs.MKE2FS_FEATURES
WITHOUT = ",".join(f for f in WITH.split(",") if f != "inline_data")


def timed(step: Callable[[], object]) -> float:
    start = time.perf_counter()
    step()
    return time.perf_counter() - start


def build(source: Path, image: Path, free_mb: int) -> None:
    if source.is_dir():
        rootfs.create_from_dir(source, image, free_mb=free_mb)
    else:
        rootfs.create_from_tar(source, image, free_mb=free_mb)


def read_all(image: Path) -> int:
    """Every regular file's bytes through ``cat <ino>`` batches of up to 256 MiB (as the fidelity check)."""
    view = e2fsprogs.Ext4Image(image)
    files = dict.fromkeys(e.ino for _, e in view.walk() if e.mode & 0o170000 == 0o100000)
    nodes = [n for n in view.stat_many([f"<{ino}>" for ino in files]).values() if n is not None]
    total = 0
    start = 0
    while start < len(nodes):
        end, size = start, 0
        while end < len(nodes) and (end == start or size + nodes[end].size <= 256 << 20):
            size += nodes[end].size
            end += 1
        total += sum(len(data) for _, data in e2fsprogs.cat_inodes(image, nodes[start:end]))
        start = end
    return total


def inline_count(image: Path) -> int:
    view = e2fsprogs.Ext4Image(image)
    stats = view.stat_many([f"<{e.ino}>" for _, e in view.walk()])
    return sum(1 for n in stats.values() if n is not None and n.inline_size is not None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tar", type=Path, help="a rootfs tar (default: fixtures/sample-rootfs.tar)")
    parser.add_argument("--dir", type=Path, help="a rootfs directory instead of a tar")
    parser.add_argument("-n", "--runs", type=int, default=5)
    parser.add_argument("--free-mb", type=int, default=512)
    parser.add_argument("--no-read", action="store_true", help="skip the read of every file")
    args = parser.parse_args()
    source = args.dir or args.tar or REPO / "fixtures" / "sample-rootfs.tar"
    variants = {"without inline_data (baseline)": WITHOUT, "with inline_data (upstream)": WITH}
    steps = ("mke2fs+fit", "inject", "verify rootfs", *(() if args.no_read else ("read every file",)))
    times: dict[str, dict[str, list[float]]] = {v: {s: [] for s in steps} for v in variants}
    sizes: dict[str, tuple[int, int, int, int]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-rootfs-", dir=os.environ.get("TMPDIR", "/var/tmp")) as tmp:
        image = Path(tmp) / "rootfs.ext4"
        for run in range(args.runs):
            for label, features in variants.items():  # interleaved, so drift hits both alike
                e2fsprogs.MKE2FS_FEATURES = features
                image.unlink(missing_ok=True)
                t = times[label]
                t["mke2fs+fit"].append(timed(lambda: build(source, image, args.free_mb)))
                t["inject"].append(timed(lambda: inject(image, ENVD)))
                t["verify rootfs"].append(timed(lambda: check_rootfs(image, init_mode="envd", arch="x86_64")))
                if not args.no_read:
                    t["read every file"].append(timed(lambda: read_all(image)))
                if run == 0:
                    geo = e2fsprogs.geometry(image)
                    sizes[label] = ((geo.block_count - geo.free_blocks) * geo.block_size, image.stat().st_size,
                                    image.stat().st_blocks * 512, inline_count(image))
        e2fsprogs.MKE2FS_FEATURES = WITH
    print(f"source: {source}, {args.runs} runs each, medians; free space {args.free_mb} MiB")
    base = next(iter(variants))
    for step in steps:
        ref = statistics.median(times[base][step])
        row = "  ".join(f"{label}: {statistics.median(times[label][step]) * 1000:8.1f} ms "
                        f"({statistics.median(times[label][step]) / ref:.2f}x)" for label in variants)
        print(f"  {step:<16} {row}")
    for label, (used, apparent, allocated, inline) in sizes.items():
        print(f"  {label}: blocks in use {used / 1e6:.1f} MB, image {apparent / 1e6:.1f} MB apparent, "
              f"{allocated / 1e6:.1f} MB allocated, {inline} inodes inline")
    (bu, ba, bal, _), (wu, wa, wal, _) = sizes.values()
    print(f"  ratio with/without: in use {wu / bu:.3f}, apparent {wa / ba:.3f}, allocated {wal / bal:.3f}")


if __name__ == "__main__":
    main()
