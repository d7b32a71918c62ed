#!/usr/bin/env python3
"""Benchmark: `e2b-artifact sync` against `aws s3 sync` and `rclone sync` on a real S3 server (radosgw).

Starts a one-node Ceph with radosgw on loopback (tests/storage/ceph.py), makes a sparse 1 GiB build
(rootfs.ext4 and memfile with ~300 MB of data between holes, headers, snapfile, metadata, manifest)
and pushes and pulls it with each client as a CLI subprocess, the same build, in the same run,
``--repeat`` rounds (medians reported). Every client runs with its defaults. After the last round
each push and pull runs once more with nothing to do: its time, and the bytes it read from the
build's data files, counted from the read/pread/mmap/sendfile calls of the whole process tree under
strace (a no-op must read none). Prints the table, the ratios against aws s3 sync, and the CPU
seconds of the client and of the server (ceph-osd + radosgw) per step.

    python3 scripts/bench_sync.py [--size-mib 1024] [--data-mb 300] [--repeat 3] [--object-store memstore]
    python3 scripts/bench_sync.py --build DIR   # an existing build instead, e.g. one build --from-image made
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from e2b_artifacts.fsutil import copy_sparse, data_extents  # noqa: E402
from e2b_artifacts.manifest import write_manifest  # noqa: E402
from e2b_artifacts.metadata import Metadata  # noqa: E402
from tests.storage.builds import header_v3  # noqa: E402
from tests.storage.ceph import Ceph, start_ceph  # noqa: E402
from tests.storage.servers import which_script  # noqa: E402

MiB = 1 << 20
DATA_FILES = ("rootfs.ext4", "memfile", "snapfile")  # what a no-op must not read
CLIENTS = ("ours", "aws", "rclone")
BUCKET = "bench"


# ---- the build ---------------------------------------------------------------------------------

def _corpus(limit: int) -> bytes:
    """Real file content (the host's libraries and data files): compresses like a root file system."""
    chunks: list[bytes] = []
    total = 0
    for top in ("/usr/lib", "/usr/share"):
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames.sort()
            for name in sorted(filenames):
                path = os.path.join(dirpath, name)
                if os.path.islink(path) or not os.path.isfile(path):
                    continue
                try:
                    with open(path, "rb") as fh:
                        data = fh.read(limit - total)
                except OSError:
                    continue
                chunks.append(data)
                total += len(data)
                if total >= limit:
                    return b"".join(chunks)
    return b"".join(chunks) + os.urandom(limit - total)


def _write_sparse(path: Path, apparent: int, runs: list[tuple[int, int]], corpus: memoryview) -> int:
    """``path`` of ``apparent`` bytes holding data only in ``runs`` (offset, length): 3/4 real file content,
    1/4 random, the rest holes. Returns the data bytes written."""
    written = 0
    with path.open("wb") as fh:
        for offset, length in runs:
            fh.seek(offset)
            done = 0
            while done < length:
                n = min(MiB, length - done)
                if (offset + done) // MiB % 4 == 3:
                    fh.write(os.urandom(n))
                else:
                    start = (offset + done) % (len(corpus) - n)
                    fh.write(corpus[start:start + n])
                done += n
            written += length
        fh.truncate(apparent)
    return written


def _runs(apparent: int, data: int, run: int, seed: int) -> list[tuple[int, int]]:
    """Data runs of ``run`` bytes, spread evenly (with a jitter) over ``apparent`` bytes, ``data`` in all."""
    import random

    rng = random.Random(seed)
    count = max(1, data // run)
    stride = apparent // count
    runs = []
    for i in range(count):
        jitter = rng.randrange(0, max(1, stride - run) // MiB + 1) * MiB
        runs.append((i * stride + jitter, run))
    runs[0] = (0, run)  # a file system's first blocks are always there
    return runs


def make_build(root: Path, size_mib: int, data_mb: int) -> tuple[str, int, int]:
    """A sparse build: rootfs.ext4 (5/8 of the size) and memfile (3/8), each with half the data.
    Returns (build id, apparent bytes, data bytes)."""
    build_id = str(uuid.uuid4())
    d = root / build_id
    d.mkdir(parents=True)
    corpus = memoryview(_corpus(64 * MiB))
    data_each = data_mb * 1_000_000 // 2
    total_data = 0
    for name, apparent, run, seed in (("rootfs.ext4", size_mib * 5 // 8 * MiB, 4 * MiB, 1),
                                      ("memfile", (size_mib - size_mib * 5 // 8) * MiB, 2 * MiB, 2)):
        total_data += _write_sparse(d / name, apparent, _runs(apparent, data_each, run, seed), corpus)
        (d / f"{name}.header").write_bytes(header_v3(build_id, apparent, [(0, apparent, build_id, 0)]))
    (d / "snapfile").write_bytes(os.urandom(600 << 10))
    Metadata(build_id=build_id, kernel_version="vmlinux-6.1.102", firecracker_version="v1.12.1_d990331").write(
        d / "metadata.json")
    write_manifest(d, build_id)
    apparent_total = sum(p.stat().st_size for p in d.iterdir())
    return build_id, apparent_total, total_data


def copy_build(root: Path, build_dir: Path) -> tuple[str, int, int]:
    """An existing build (``--build DIR``, e.g. one ``build --from-image`` made), copied with its holes.
    Returns (build id, apparent bytes, data bytes of rootfs.ext4 + memfile)."""
    if not (build_dir / "artifact-manifest.json").is_file():
        sys.exit(f"error: {build_dir} has no artifact-manifest.json\nhint: e2b-artifact verify --fix {build_dir}")
    build_id = build_dir.name
    dest = root / build_id
    dest.mkdir(parents=True)
    for path in sorted(build_dir.iterdir()):
        if path.is_file():
            copy_sparse(path, dest / path.name, durable=False)
    data = 0
    for name in ("rootfs.ext4", "memfile"):
        if (dest / name).is_file():
            with (dest / name).open("rb") as fh:
                data += sum(end - start for start, end in data_extents(fh.fileno(), os.fstat(fh.fileno()).st_size))
    return build_id, sum(p.stat().st_size for p in dest.iterdir()), data


# ---- measuring ---------------------------------------------------------------------------------

def _daemon_cpu(ceph: Ceph) -> float:
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for name, child in ceph.daemons.items():
        if name.startswith("mon."):
            continue
        fields = Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


@dataclass
class Step:
    wall: float
    client_cpu: float
    server_cpu: float


def run_step(label: str, argv: list[str], env: dict[str, str], ceph: Ceph) -> Step:
    before_children = resource.getrusage(resource.RUSAGE_CHILDREN)
    server_before = _daemon_cpu(ceph)
    started = time.monotonic()
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    wall = time.monotonic() - started
    after_children = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        sys.exit(f"{label} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    step = Step(wall, after_children.ru_utime + after_children.ru_stime
                - before_children.ru_utime - before_children.ru_stime, _daemon_cpu(ceph) - server_before)
    print(f"  {label:<18} {wall:7.2f} s   cpu: client {step.client_cpu:5.2f} s, server {step.server_cpu:5.2f} s",
          flush=True)
    return step


READ_CALL = re.compile(r"^\d+\s+(read|pread64|readv|preadv|preadv2|sendfile|sendfile64|copy_file_range|splice|mmap)"
                       r"\((?P<args>.*)\)\s+=\s+(?P<ret>-?\d+|0x[0-9a-f]+)")
FD_PATH = re.compile(r"<(?P<path>/[^>]*)>")


def data_bytes_read(argv: list[str], env: dict[str, str], build_dir: Path, work: Path) -> dict[str, int]:
    """Run ``argv`` under strace and add up, per file of ``build_dir``, the bytes its processes read from it
    (read/pread/readv/sendfile/copy_file_range/splice results; an mmap of such a file counts its length)."""
    trace = work / "strace.out"
    proc = subprocess.run(["strace", "-f", "-qq", "-y", "-s", "0", "-o", str(trace), "-e",
                           "trace=read,pread64,readv,preadv,preadv2,sendfile,copy_file_range,splice,mmap",
                           *argv], env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        sys.exit(f"traced run failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    prefix = str(build_dir.resolve()) + "/"
    counted: dict[str, int] = {}
    for line in trace.read_text(errors="replace").splitlines():
        match = READ_CALL.match(line)
        if not match:
            continue
        paths = [p for p in FD_PATH.findall(match["args"]) if p.startswith(prefix)]
        if not paths:
            continue
        name = paths[0][len(prefix):]
        if match[1] == "mmap":
            length = int(match["args"].split(",")[1].strip(), 0)
            counted[name] = counted.get(name, 0) + length
        elif not match["ret"].startswith("-"):
            counted[name] = counted.get(name, 0) + int(match["ret"], 0)
    trace.unlink()
    return counted


# ---- the clients ---------------------------------------------------------------------------------

@dataclass
class Clients:
    ceph: Ceph
    work: Path
    src: Path
    build_id: str
    extra_ours: list[str] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        ep = self.ceph.endpoint
        # A CA bundle is of no use on plain http, and rclone 1.60 fails on AWS_CA_BUNDLE with its own transport.
        inherited = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
        return {**inherited, **self.ceph.env,
                "RCLONE_CONFIG_CEPH_TYPE": "s3", "RCLONE_CONFIG_CEPH_PROVIDER": "Ceph",
                "RCLONE_CONFIG_CEPH_ENDPOINT": ep, "RCLONE_CONFIG_CEPH_ACCESS_KEY_ID": self.ceph.access_key,
                "RCLONE_CONFIG_CEPH_SECRET_ACCESS_KEY": self.ceph.secret_key}

    def prefix(self, client: str, round_no: int) -> str:
        return f"{client}-r{round_no}"

    def pulled(self, client: str, round_no: int) -> Path:
        return self.work / f"pulled-{client}-r{round_no}"

    def push(self, client: str, round_no: int, *extra: str) -> list[str]:
        prefix, local = self.prefix(client, round_no), self.src / self.build_id
        if client == "ours":
            return [sys.executable, "-m", "e2b_artifacts", "--storage", str(self.src), "sync", "push",
                    self.build_id, f"s3://{BUCKET}/{prefix}", "--endpoint-url", self.ceph.endpoint,
                    *self.extra_ours, *extra]
        if client == "aws":
            return [_need("aws"), "s3", "sync", str(local), f"s3://{BUCKET}/{prefix}/{self.build_id}",
                    "--endpoint-url", self.ceph.endpoint, "--only-show-errors"]
        return [_need("rclone"), "sync", str(local), f"ceph:{BUCKET}/{prefix}/{self.build_id}"]

    def pull(self, client: str, round_no: int, *extra: str) -> list[str]:
        prefix, into = self.prefix(client, round_no), self.pulled(client, round_no)
        if client == "ours":
            return [sys.executable, "-m", "e2b_artifacts", "--storage", str(into), "sync", "pull",
                    self.build_id, f"s3://{BUCKET}/{prefix}", "--endpoint-url", self.ceph.endpoint,
                    *self.extra_ours, *extra]
        if client == "aws":
            return [_need("aws"), "s3", "sync", f"s3://{BUCKET}/{prefix}/{self.build_id}",
                    str(into / self.build_id), "--endpoint-url", self.ceph.endpoint, "--only-show-errors"]
        return [_need("rclone"), "sync", f"ceph:{BUCKET}/{prefix}/{self.build_id}", str(into / self.build_id)]


def _need(tool: str) -> str:
    found = which_script(tool) or shutil.which(tool)
    if found is None:
        hint = "pip install awscli (the test extra has it)" if tool == "aws" else "apt-get install rclone"
        sys.exit(f"error: {tool} not found\nhint: {hint}; scripts/setup.sh --test installs both")
    return found


def same_tree(a: Path, b: Path) -> bool:
    return subprocess.run(["diff", "-rq", str(a), str(b)], capture_output=True, check=False).returncode == 0


def delete_prefix(client: Any, prefix: str) -> None:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix + "/")
    for page in pages:
        keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        if keys:
            client.delete_objects(Bucket=BUCKET, Delete={"Objects": keys})


def compress_supported(env: dict[str, str]) -> bool:
    proc = subprocess.run([sys.executable, "-m", "e2b_artifacts", "sync", "push", "--help"], capture_output=True,
                          text=True, check=False, env=env)
    return "--compress" in proc.stdout


# ---- main ----------------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=1024, help="apparent size of rootfs.ext4 + memfile")
    parser.add_argument("--data-mb", type=int, default=300, help="data in them (the rest are holes)")
    parser.add_argument("--build", type=Path, default=None, metavar="DIR",
                        help="push and pull this existing build (copied, holes kept) instead of making one")
    parser.add_argument("--repeat", type=int, default=3, help="rounds; medians are reported")
    parser.add_argument("--object-store", default="memstore", choices=("memstore", "bluestore"))
    parser.add_argument("--clients", default=",".join(CLIENTS), help="which of ours,aws,rclone to run")
    parser.add_argument("--ours", default="", help="extra options for our sync push/pull, e.g. '--jobs 4'")
    parser.add_argument("--ours-from", type=Path, default=REPO,
                        help="source tree whose e2b_artifacts runs as ours (a checkout of an older commit gives "
                             "the before of a before/after table)")
    args = parser.parse_args()
    clients = [c for c in args.clients.split(",") if c]
    for tool in {"aws": "aws", "rclone": "rclone"}.values():
        if tool in clients:
            _need(tool)
    if shutil.which("strace") is None:
        sys.exit("error: strace not found\nhint: apt-get install strace (it counts the no-op runs' reads)")

    work = Path(tempfile.mkdtemp(prefix="bench-sync-", dir="/var/tmp"))
    try:
        src = work / "src"
        if args.build is not None:
            print(f"copying the build {args.build} ...", flush=True)
            build_id, apparent, data = copy_build(src, args.build.resolve())
        else:
            print(f"making a {args.size_mib} MiB build with {args.data_mb} MB of data ...", flush=True)
            build_id, apparent, data = make_build(src, args.size_mib, args.data_mb)
        with start_ceph(work / "ceph", object_store=args.object_store, store_bytes=64 << 30) as ceph:
            bench(ceph, work, src, build_id, apparent, data, clients, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def bench(ceph: Ceph, work: Path, src: Path, build_id: str, apparent: int, data: int, clients: list[str],
          args: argparse.Namespace) -> None:
    import boto3  # type: ignore[import-untyped]

    s3: Any = boto3.client("s3", endpoint_url=ceph.endpoint, region_name="us-east-1",
                           aws_access_key_id=ceph.access_key, aws_secret_access_key=ceph.secret_key)
    s3.create_bucket(Bucket=BUCKET)
    disk = sum(p.stat().st_blocks * 512 for p in (src / build_id).iterdir())
    print(f"build {build_id}: {apparent / MiB:.0f} MiB of files, {disk / 1e6:.0f} MB on disk "
          f"({data / 1e6:.0f} MB data in rootfs.ext4 + memfile); radosgw ({ceph.object_store}) at {ceph.endpoint}, "
          f"started in {ceph.started_in:.1f} s; {args.repeat} round(s), medians reported", flush=True)
    runs = Clients(ceph, work, src, build_id, args.ours.split())
    # PYTHONSAFEPATH: python -m would otherwise put the working directory ahead of PYTHONPATH, and run this
    # checkout's code as --ours-from's when started from here
    env = {**runs.env, "PYTHONPATH": str(args.ours_from.resolve()), "PYTHONSAFEPATH": "1"}
    print(f"ours: e2b_artifacts from {args.ours_from.resolve()}", flush=True)
    steps: dict[str, list[Step]] = {}
    identical = True
    for n in range(1, args.repeat + 1):
        print(f"round {n}:", flush=True)
        for client in clients:
            steps.setdefault(f"{client} push", []).append(run_step(f"{client} push", runs.push(client, n), env, ceph))
        for client in clients:
            steps.setdefault(f"{client} pull", []).append(run_step(f"{client} pull", runs.pull(client, n), env, ceph))
            identical &= same_tree(src / build_id, runs.pulled(client, n) / build_id)
        if n < args.repeat:  # the server's memory stays flat between rounds
            for client in clients:
                delete_prefix(s3, runs.prefix(client, n))
                shutil.rmtree(runs.pulled(client, n))
    last = args.repeat
    reads: dict[str, dict[str, int]] = {}
    print("no-op re-runs (nothing changed since the last round):", flush=True)
    for client in clients:
        for verb, argv, local in (("push", runs.push(client, last), src / build_id),
                                  ("pull", runs.pull(client, last), runs.pulled(client, last) / build_id)):
            label = f"{client} no-op {verb}"
            steps[label] = [run_step(label, argv, env, ceph)]
            reads[label] = data_bytes_read(argv, env, local, work)
    compressed = compress_supported(env)
    if compressed and "ours" in clients:
        label = "ours push zstd"
        steps[label] = []
        for n in range(1, args.repeat + 1):
            prefix = f"zstd-r{n}"
            argv = [sys.executable, "-m", "e2b_artifacts", "--storage", str(src), "sync", "push", build_id,
                    f"s3://{BUCKET}/{prefix}", "--endpoint-url", ceph.endpoint, "--compress", "zstd", *runs.extra_ours]
            steps[label].append(run_step(label, argv, env, ceph))
            delete_prefix(s3, prefix)
    report(steps, reads, clients, identical, compressed, apparent)
    if not identical:
        sys.exit("pulled trees differ from the source")


def report(steps: dict[str, list[Step]], reads: dict[str, dict[str, int]], clients: list[str], identical: bool,
           compressed: bool, apparent: int) -> None:
    med = {label: statistics.median(s.wall for s in values) for label, values in steps.items()}
    cpu = {label: (statistics.median(s.client_cpu for s in values), statistics.median(s.server_cpu for s in values))
           for label, values in steps.items()}
    names = {"ours": "ours", "aws": "aws s3 sync", "rclone": "rclone sync"}
    print(f"\nbyte-identical after every pull: {identical}")
    head = f"| {'':<12} |" + "".join(f" {names[c]:>12} |" for c in clients)
    ratios = [c for c in clients if c != "ours"] if "ours" in clients else []
    head += "".join(f" {names[c].split()[0]}/ours |" for c in ratios)
    print(head)
    print("|" + "---|" * (1 + len(clients) + len(ratios)))
    for what in ("push", "pull", "no-op push", "no-op pull"):
        row = f"| {what:<12} |" + "".join(f" {med[f'{c} {what}']:>10.2f} s |" for c in clients)
        row += "".join(f" {med[f'{c} {what}'] / med[f'ours {what}']:>8.2f}x |" for c in ratios)
        print(row)
    print("\nCPU seconds (median; client = the CLI and its children, server = ceph-osd + radosgw):")
    for what in ("push", "pull"):
        print(f"  {what}: " + ", ".join(f"{names[c]} {cpu[f'{c} {what}'][0]:.2f} + {cpu[f'{c} {what}'][1]:.2f}"
                                        for c in clients))
    print("\nbytes read from the build's data files (rootfs.ext4, memfile, snapfile) by the no-op re-runs, "
          "counted under strace:")
    for label, counted in reads.items():
        data = sum(v for k, v in counted.items() if k in DATA_FILES)
        other = sum(v for k, v in counted.items() if k not in DATA_FILES)
        print(f"  {label:<18} {data:>10} bytes of data; {other} bytes of other build files "
              f"({', '.join(sorted(k for k in counted if k not in DATA_FILES)) or 'none'})")
    if "ours" in clients and "aws" in clients:
        for what, target in (("push", 1.5), ("pull", 1.0)):
            ratio = med[f"aws {what}"] / med[f"ours {what}"]
            verdict = "meets" if ratio >= target else "MISSES"
            print(f"{what}: ours {ratio:.2f}x as fast as aws s3 sync ({verdict} the {target}x target; "
                  f"{apparent / med[f'ours {what}'] / 1e6:.0f} vs {apparent / med[f'aws {what}'] / 1e6:.0f} MB/s "
                  "of build)")
        if compressed:
            ratio = med["aws push"] / med["ours push zstd"]
            verdict = "meets" if ratio >= 3 else "MISSES"
            print(f"push --compress zstd: {med['ours push zstd']:.2f} s, {ratio:.2f}x as fast as aws s3 sync plain "
                  f"({verdict} the 3x target)")
        else:
            print("push --compress zstd: NOT MEASURED: this main has no `sync push --compress` yet "
                  "(helper comp's work); the bench runs it once it has")
    no_op_data = {label: sum(v for k, v in counted.items() if k in DATA_FILES) for label, counted in reads.items()}
    ours_clean = all(v == 0 for label, v in no_op_data.items() if label.startswith("ours"))
    print(f"no-op re-runs of ours read no data bytes: {ours_clean}")


if __name__ == "__main__":
    main()
