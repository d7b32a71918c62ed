#!/usr/bin/env python3
"""Benchmark: OCI image -> rootfs.ext4 (build --from-image's core) against bare ``mke2fs -d`` of the extracted tree.

Makes a 3-layer gzip OCI image with umoci from real host files (default: /usr/include and
/usr/lib/python3.11 plus busybox; ~185 MB, ~10 000 files), extracts it once with ``umoci unpack``
(the baseline's input, not timed), then times in one run:

* baseline: ``mke2fs -t ext4 -b 4096 -d <extracted tree>`` (same size, same features);
* ours, cold cache: resolve + decompress + verify + flatten + mke2fs from the flattened tar (+ resize);
* ours, warm cache: the same with the layers already decompressed in the blob cache;
* each of ours again including the fidelity check (debugfs stat + dump + hash of every file);
* the alternative build does not use: the flattened tar streamed into ``mke2fs -d -`` through
  a pipe (1 MiB pipe buffer) instead of written to a temporary tar file (warm cache).

The variants run in turns (one of each per round), so a change of load on the host hits all alike.

Prints every time and the ratios against the baseline. Needs root only for umoci unpack of the
baseline tree (owners); run: python3 scripts/bench_image.py [--tree DIR ...] [--repeat N]

``--debian`` (the issue's image): a Debian bookworm minbase made into a two-layer OCI layout by
scripts/make-debian-oci.sh (debootstrap from deb.debian.org, cached under ~/.cache/e2b-artifact/), then
in interleaved rounds: bare ``mke2fs -d`` of the extracted tree (same features and size as ours), what a
user would script instead (``umoci unpack --rootless`` + ``mke2fs -d``), and ours, the real
``e2b-artifact build --from-image oci-layout:...`` (warm blob cache, fidelity check on, envd injected,
manifest written). Prints medians, both ratios and ours' stage profile (from ``build --json``).
Without network for the first debootstrap it says so and runs the 3-layer image instead.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from e2b_artifacts import e2fsprogs, rootfs, runner
from e2b_artifacts.fidelity import compare
from e2b_artifacts.image import ImageOptions, rootfs_tar_from_image
from e2b_artifacts.oci import flatten, layers, reference, sources
from e2b_artifacts.oci.cache import BlobCache


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


def timed_in_turns(variants: dict[str, Callable[[], object]], repeat: int) -> dict[str, float]:
    """Median seconds of each variant, running one of each per round."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeat):
        for name, fn in variants.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(values) for name, values in times.items()}


# --- --debian: the Debian image, the real CLI against what a user would script instead -------------

DEBIAN_TAG = "bookworm"


def debian_layout() -> Path | None:
    """The cached two-layer Debian bookworm minbase layout (scripts/make-debian-oci.sh); None without network."""
    proc = subprocess.run(["bash", str(Path(__file__).with_name("make-debian-oci.sh"))], capture_output=True,
                          text=True)
    if proc.returncode != 0:
        print(f"make-debian-oci.sh failed (exit {proc.returncode}): {proc.stderr.strip()}", file=sys.stderr)
        return None
    return Path(proc.stdout.strip().splitlines()[-1])


def rounds(variants: Mapping[str, tuple[Callable[[], object], Callable[[], object]]], repeat: int
           ) -> dict[str, list[float]]:
    """Seconds of each variant's run (its setup untimed), one of each per round, in turns."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeat):
        for name, (setup, run) in variants.items():
            setup()
            t0 = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - t0)
    return times


def debian_main(layout: Path, repeat: int, free_mb: int, compare: list[str] | None = None) -> None:
    repo = Path(__file__).resolve().parent.parent
    envd = repo / "fixtures/envd-standin/envd"
    source = f"oci-layout:{layout}:{DEBIAN_TAG}"
    with tempfile.TemporaryDirectory(prefix="bench-image-debian-", dir="/var/tmp") as tmp:
        work = Path(tmp)
        tree = work / "extracted"
        sh("umoci", "unpack", "--image", f"{layout}:{DEBIAN_TAG}", tree)  # as root: the owners as the image says
        content = rootfs.scan_dir(tree / "rootfs")
        size = content.generous_size(free_mb)
        print(f"image: Debian bookworm minbase, 2 gzip layers, {content.blocks_bytes / 1e6:.0f} MB "
              f"in {content.entries} entries; rootfs {size >> 20} MiB before resize")
        base_image = work / "bare.ext4"
        env = {**os.environ, "E2B_ARTIFACT_CACHE": str(work / "cache"), "PYTHONPATH": str(repo)}
        storage = work / "templates"
        cli = [sys.executable, "-m", "e2b_artifacts", "--debug", "--storage", str(storage), "build",
               "--from-image", source, "--envd", str(envd), "--build-id", "bench", "--disk-size-mb", str(free_mb),
               "--json"]
        stage_runs: dict[str, list[dict[str, float]]] = {}

        def cli_of(name: str, tree_of_code: Path) -> Callable[[], None]:
            """The CLI of the checkout ``tree_of_code`` (this one, or a --compare one: same image, same cache)."""
            code_env = {**env, "PYTHONPATH": str(tree_of_code)}

            def run() -> None:
                # cwd: python -m puts the working directory first on sys.path, ahead of PYTHONPATH
                proc = subprocess.run(cli, env=code_env, capture_output=True, text=True, cwd=tree_of_code)
                assert proc.returncode == 0, proc.stderr
                doc = json.loads(proc.stdout)
                assert doc["image"]["fidelity_mismatches"] == 0
                if doc.get("stages"):
                    stage_runs.setdefault(name, []).append(doc["stages"])
            return run

        ours = cli_of("ours", repo)

        def clear_build() -> None:
            shutil.rmtree(storage / "bench", ignore_errors=True)

        def clear_bare() -> None:
            base_image.unlink(missing_ok=True)

        def bare() -> None:
            e2fsprogs.mke2fs(base_image, size, source=tree / "rootfs")

        bundle = work / "bundle"

        def clear_umoci() -> None:
            shutil.rmtree(bundle, ignore_errors=True)
            base_image.unlink(missing_ok=True)

        def umoci_then_mke2fs() -> None:
            sh("umoci", "unpack", "--rootless", "--image", f"{layout}:{DEBIAN_TAG}", bundle)
            e2fsprogs.mke2fs(base_image, size, source=bundle / "rootfs")

        ours_name = "e2b-artifact build --from-image (warm cache, fidelity on)"
        variants = {"bare mke2fs -d of the extracted tree": (clear_bare, bare),
                    "umoci unpack --rootless + mke2fs -d": (clear_umoci, umoci_then_mke2fs),
                    ours_name: (clear_build, ours)}
        for item in compare or []:  # NAME=CHECKOUT: another version of this repository, in the same rounds
            name, _, checkout = item.partition("=")
            variants[f"{ours_name}, {name}"] = (clear_build, cli_of(name, Path(checkout).resolve()))
        clear_build()
        ours()  # fills the blob cache: the runs below are warm
        stage_runs.clear()
        times = rounds(variants, repeat)
        clear_umoci()
        medians = {name: statistics.median(values) for name, values in times.items()}
        base, umoci_s, ours_s = list(medians.values())[:3]
        print(f"rounds: {repeat} (interleaved), medians; every run in seconds")
        for name, values in times.items():
            print(f"{name}: {medians[name]:.3f} s  [{' '.join(f'{v:.3f}' for v in values)}]")
        print(f"ours / bare mke2fs -d: {ours_s / base:.2f}x  (target <= 1.5x)")
        print(f"umoci + mke2fs / ours: {umoci_s / ours_s:.2f}x faster  (target >= 3x)")
        for name, value in list(medians.items())[3:]:
            print(f"{name.rsplit(', ', 1)[1]} / bare mke2fs -d: {value / base:.2f}x; umoci + mke2fs / it: "
                  f"{umoci_s / value:.2f}x")
        names = list(stage_runs)
        print("stage profile (median seconds over the timed runs, from build --json 'stages'):")
        print(f"  {'stage':<11}" + "".join(f" {n:>12}" for n in names))
        stages = list(dict.fromkeys(k for runs in stage_runs.values() for run in runs for k in run))
        for stage in stages:
            print(f"  {stage:<11}" + "".join(
                f" {statistics.median(run.get(stage, 0.0) for run in stage_runs[n]):12.3f}" for n in names))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tree", action="append", type=Path, help="host directory to put in a layer (repeatable)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--debian", action="store_true", help="the Debian bookworm minbase image, the real CLI")
    parser.add_argument("--free-mb", type=int, default=512, help="--disk-size-mb of the --debian builds")
    parser.add_argument("--compare", action="append", metavar="NAME=CHECKOUT",
                        help="--debian: also time the CLI of another checkout of this repository (repeatable)")
    args = parser.parse_args()
    if args.debian:
        layout = debian_layout()
        if layout is not None:
            debian_main(layout, args.repeat, args.free_mb, args.compare)
            return
        print("no Debian image (see above): falling back to the 3-layer image", file=sys.stderr)
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

        opts = ImageOptions(f"oci-layout:{layout}:b", cache_dir=cache)

        def ours(cold: bool, check: bool) -> Callable[[], None]:
            def run() -> None:
                if cold:
                    shutil.rmtree(cache, ignore_errors=True)
                image.unlink(missing_ok=True)
                flat = rootfs_tar_from_image(opts, out)
                try:
                    rootfs.create_from_tar(flat.tar_path, image, free_mb=64, content_bytes=flat.content_bytes,
                                           inodes=flat.inodes, xattrs=flat.xattrs)
                finally:
                    flat.tar_path.unlink()
                if check:
                    report = compare(flat.entries, image)
                    assert report.ok, report.mismatches[:5]
            return run

        ours(True, True)()  # fills the cache, and proves the image right
        sizing = rootfs_tar_from_image(opts, out)
        sizing.tar_path.unlink()
        stream_size = rootfs.Content(sizing.content_bytes, sizing.inodes).generous_size(64)

        def streamed() -> None:
            """Warm cache: the same flattening written into mke2fs's stdin, then the same xattrs and resize."""
            image.unlink(missing_ok=True)
            blobs = BlobCache(cache)
            resolved = sources.resolve(reference.parse(opts.source), platform=reference.Platform.parse(opts.platform),
                                       insecure=False, cache=blobs, progress=lambda _: None)
            flat = flatten.Flattener()
            for n, tar_path in enumerate(layers.unpack_layers(resolved.layers, blobs)):
                flat.add_layer(n, tar_path, blobs.root / "index")
            argv = e2fsprogs.mke2fs_args(image, stream_size, source="-")
            with runner.spawn(argv, stdin=runner.PIPE, stdout=runner.DEVNULL, stderr=runner.DEVNULL) as child:
                assert child.stdin is not None
                fcntl.fcntl(child.stdin.fileno(), fcntl.F_SETPIPE_SZ, 1 << 20)
                written = flatten.write_tar(flat, child.stdin.fileno())
                child.stdin.close()
                assert child.wait() == 0, "mke2fs -d - failed"
            rootfs.set_xattrs(image, written.xattrs)
            rootfs.fit(image, 64, len(written.entries) + 1)

        times = timed_in_turns({
            "baseline": baseline,
            "ours, cold cache (gunzip+verify+flatten+mke2fs)": ours(True, False),
            "ours, warm cache (flatten+mke2fs)": ours(False, False),
            "ours, cold cache + fidelity check": ours(True, True),
            "ours, warm cache + fidelity check": ours(False, True),
            "alternative, warm cache, tar streamed into mke2fs -d -": streamed,
        }, args.repeat)
        base = times.pop("baseline")
        results = times
        print(f"baseline: bare mke2fs -d of the extracted tree: {base:.3f} s (median of {args.repeat})")
        for name, value in results.items():
            print(f"{name}: {value:.3f} s  ratio {value / base:.2f}x")
        print("target: <= 1.2x (warm cache, without the fidelity check, is the like-for-like figure)")
        os.sync()


if __name__ == "__main__":
    main()
