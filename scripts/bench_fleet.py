#!/usr/bin/env python3
"""Benchmark: `verify --all` over a synthetic storage of 1,000 builds in 20 diff-layer chains of 50.

The storage is made of real builds (tests/storage/fleet.py): one tiny ext4 image from the bundled
sample (`mke2fs -d`, once), cut into 50 slices; build k of a chain stores its own slices in a sparse
`rootfs.ext4` and maps the others to its ancestors through a real V3 `rootfs.ext4.header`, likewise a
sparse 4 MiB `memfile` with its header, a bincode snapfile with a correct CRC, metadata.json and the
integrity manifest. Storages of 100 and 300 builds are hard links to the first chains of the 1,000.

Each measured command runs as the CLI would in the Nomad job (a subprocess, `--results` into a
directory, text output); its results file is read back to check every build was verified. Figures:

* time per build at 100, 300 and 1,000 builds; baseline: the 100-build run of the same command
  (linear time: the ratio stays near 1.0);
* peak RSS of the command's process (its VmHWM, polled every 50 ms; `wait4`'s ru_maxrss, the
  largest of it and every child it forked, is printed beside it); baseline: the 100-build run (flat
  memory: the ratio stays near 1.0), and the growth per build between the smallest and the largest run;
* `--jobs 2` against `--jobs 1` at the largest size (wall time ratio);
* a full `verify --all` (data hashed, no `--quick`) of the first `--full` builds, `--jobs 1` and 2:
  builds per hour of the synthetic builds, and the fixed per-build cost docs/fleet.md combines with
  bench_verify's bytes per second for a node's builds per hour on real-sized builds.

* `audit` (issue 14 item 2) at the same sizes, against a PostgreSQL database per size with upstream's
  migrations (tests/db) holding a row for every build of that storage (status `uploaded`, each chain one
  template, every build on its default tag): every audit must come out clean (the chains' parents are found
  through their headers, nothing is an orphan). Baselines as above (`--no-audit` leaves it out).

The page cache is warm (the storage was just written). Adding a command is one `Measured(...)` entry in
`measured_commands`.

    python3 scripts/bench_fleet.py [--chains 20] [--depth 50] [--sizes 100,300,1000] [--full 100]
                                   [--repeat 1] [--work DIR] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.storage.fleet import FleetMaker, tiny_sample  # noqa: E402

CLI = [sys.executable, "-m", "e2b_artifacts"]


@dataclass(frozen=True)
class Run:
    seconds: float
    peak_rss_kib: int  # the command's own VmHWM (its e2fsprogs children not counted)
    cpu_seconds: float  # user + system of the process and the children it waited for
    peak_with_children_kib: int = 0  # wait4's ru_maxrss: the largest of the process and its children


@dataclass(frozen=True)
class Measured:
    """One command the benchmark times at every size."""

    label: str
    argv: Callable[[Path, int, Path], list[str]]  # (storage directory, jobs, results directory) -> command line
    check: Callable[[Path, int], str]  # (results directory, builds) -> "" when every build was covered
    ok_codes: tuple[int, ...] = (0,)
    has_jobs: bool = True  # takes --jobs (then also timed with --jobs 2)


def verify_all_argv(*extra: str) -> Callable[[Path, int, Path], list[str]]:
    def argv(storage: Path, jobs: int, results: Path) -> list[str]:
        return [*CLI, "verify", "--all", str(storage), *extra, "--jobs", str(jobs), "--results", str(results)]
    return argv


def verify_all_check(results: Path, builds: int) -> str:
    """The shard file holds one result per build, none failing, and the summary line."""
    lines = [json.loads(line) for line in (results / "shard-0-of-1.jsonl").read_text().splitlines()]
    summary = lines[-1]
    verified = {d["build_id"] for d in lines if d["type"] == "build"}
    if summary.get("type") != "summary" or len(verified) != builds or summary["builds"] != builds:
        return f"expected {builds} builds in the results, found {len(verified)}"
    if summary["counts"]["FAIL"] or summary["counts"]["error"]:
        return f"builds failed: {summary['failing'][:3]}"
    return ""


def audit_argv(databases: dict[Path, str], caches: Path) -> Callable[[Path, int, Path], list[str]]:
    """``audit --json`` of a storage against its own database, its JSON lines into ``results/audit.jsonl``
    (``sh`` execs the CLI, so the process measured is the CLI's own)."""
    def argv(storage: Path, jobs: int, results: Path) -> list[str]:
        return ["/bin/sh", "-c", 'mkdir -p "$0" && exec "$@" > "$0/audit.jsonl"', str(results), *CLI,
                "--set", f"TEMPLATE_CACHE_DIR={caches}", "--set", f"SNAPSHOT_CACHE_DIR={caches}",
                "audit", "--db", databases[storage], "--storage", str(storage), "--json"]
    return argv


def audit_check(results: Path, builds: int) -> str:
    """The audit's summary: clean, every build of the storage and every row seen."""
    summary = json.loads((results / "audit.jsonl").read_text().splitlines()[-1])
    if summary.get("type") != "summary" or summary["builds_in_storage"] != builds or summary["build_rows"] != builds:
        return f"expected {builds} builds and rows, the summary says {summary}"
    return "" if summary["ok"] else f"audit is not clean: {summary['counts']}"


def seed_rows(url: str, team_id: str, chains: list[list[str]]) -> None:
    """A row per build as upstream's API writes them: one template per chain, every build on its default tag
    (the chain's last build the newest)."""
    import psycopg

    with psycopg.connect(url) as conn, conn.cursor() as cur:
        templates = [f"bench{i:015d}" for i in range(len(chains))]
        cur.executemany("INSERT INTO envs (id, team_id, public, updated_at) VALUES (%s, %s, false, now())",
                        [(t, team_id) for t in templates])
        rows = [(bid, t, len(chain) - k) for t, chain in zip(templates, chains, strict=True)
                for k, bid in enumerate(chain)]
        cur.executemany("INSERT INTO env_builds (id, env_id, status, vcpu, ram_mb, free_disk_size_mb, kernel_version, "
                        "firecracker_version, envd_version, created_at, updated_at, finished_at) VALUES (%s, %s, "
                        "'uploaded', 2, 4, 4, 'vmlinux-6.1.102', 'v1.12.1_d990331', '0.2.4', "
                        "now() - %s * interval '1 minute', now(), now())", rows)
        cur.executemany("INSERT INTO env_build_assignments (env_id, build_id, tag, source, created_at) "
                        "VALUES (%s, %s, 'default', 'app', now() - %s * interval '1 minute')",
                        [(t, bid, age) for bid, t, age in rows])


def measured_commands(args: argparse.Namespace, databases: dict[Path, str] | None, caches: Path) -> list[Measured]:
    """What is timed at each size; ``databases``: the audit's database of each storage (None: no audit)."""
    commands = [] if args.audit_only else [Measured("verify --all --quick", verify_all_argv("--quick"),
                                                    verify_all_check)]
    if databases is not None:
        commands.append(Measured("audit", audit_argv(databases, caches), audit_check, has_jobs=False))
    return commands


def timed(argv: Sequence[str], *, env: dict[str, str]) -> tuple[Run, int, str]:
    """Wall time, peak RSS and CPU of one process; its exit code and the end of its stderr."""
    with tempfile.TemporaryFile() as err:
        started = time.monotonic()
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err, env=env)
        hwm = [0]
        watcher = threading.Thread(target=_watch_hwm, args=(proc.pid, hwm), daemon=True)
        watcher.start()
        _, status, usage = os.wait4(proc.pid, 0)
        watcher.join()
        seconds = time.monotonic() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        tail = err.read()[-3000:].decode(errors="replace")
    return Run(seconds, hwm[0] or usage.ru_maxrss, usage.ru_utime + usage.ru_stime, usage.ru_maxrss), \
        proc.returncode, tail


def _watch_hwm(pid: int, hwm: list[int]) -> None:
    """The process's peak resident set (VmHWM, KiB), read every 50 ms until it exits (a zombie has none)."""
    status = Path(f"/proc/{pid}/status")
    while True:
        try:
            text = status.read_text()
        except OSError:
            return
        line = next((x for x in text.splitlines() if x.startswith("VmHWM:")), None)
        if line is None:
            return
        hwm[0] = max(hwm[0], int(line.split()[1]))
        time.sleep(0.05)


def measure(command: Measured, storage: Path, builds: int, jobs: int, work: Path, repeat: int,
            env: dict[str, str]) -> Run:
    """The median run of ``repeat`` (by wall time); exits when the command fails or misses builds."""
    runs = []
    for n in range(repeat):
        results = work / f"results-{command.label.replace(' ', '_')}-{builds}-{jobs}-{n}"
        run, code, stderr = timed(command.argv(storage, jobs, results), env=env)
        if code not in command.ok_codes:
            sys.exit(f"{command.label} on {builds} builds failed ({code}):\n{stderr}")
        problem = command.check(results, builds)
        if problem:
            sys.exit(f"{command.label} on {builds} builds: {problem}")
        shutil.rmtree(results, ignore_errors=True)
        runs.append(run)
        print(f"  {command.label:<24} {builds:>5} builds  --jobs {jobs}  {run.seconds:7.2f} s  "
              f"{run.peak_rss_kib / 1024:6.1f} MiB (with children {run.peak_with_children_kib / 1024:.1f})", flush=True)
    return sorted(runs, key=lambda r: r.seconds)[len(runs) // 2]


def make_storage(work: Path, chains: int, depth: int) -> list[str]:
    """``chains`` chains of ``depth`` builds under ``work/all``; the build ids, each chain parents first."""
    sample = tiny_sample(work / "sample")
    maker = FleetMaker(sample, work / "all")
    return [bid for _ in range(chains) for bid in maker.chain(depth)]


def linked_subset(work: Path, ids: list[str], count: int) -> Path:
    """A storage of the first ``count // depth`` chains, as hard links."""
    if count == len(ids):
        return work / "all"
    root = work / f"first-{count}"
    for bid in ids[:count]:
        (root / bid).mkdir(parents=True)
        for f in (work / "all" / bid).iterdir():
            os.link(f, root / bid / f.name)
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chains", type=int, default=20)
    parser.add_argument("--depth", type=int, default=50, help="builds per diff-layer chain")
    parser.add_argument("--sizes", default="100,300,1000", help="storage sizes timed (builds)")
    parser.add_argument("--full", type=int, default=100, help="builds of the full (non --quick) verify")
    parser.add_argument("--repeat", type=int, default=1, help="runs per figure; the median is reported")
    parser.add_argument("--work", type=Path, default=Path("/var/tmp"), help="where the storage is made")
    parser.add_argument("--keep", action="store_true", help="leave the storage behind")
    parser.add_argument("--no-audit", action="store_true", help="do not time audit (it needs PostgreSQL's server)")
    parser.add_argument("--audit-only", action="store_true", help="time audit alone (no verify runs)")
    args = parser.parse_args()
    total = args.chains * args.depth
    sizes = sorted({int(s) for s in args.sizes.split(",")})
    if not sizes or sizes[0] < 1 or sizes[-1] > total or not 1 <= args.full <= total:
        sys.exit(f"--sizes and --full must be between 1 and {total} (--chains x --depth)")
    if args.audit_only and args.no_audit:
        sys.exit("--audit-only and --no-audit leave nothing to time")
    if any(n % args.depth for n in (*sizes, args.full)):
        sys.exit(f"--sizes and --full must be whole chains (multiples of --depth {args.depth}), so that every "
                 "size holds builds of every depth alike")

    work = Path(tempfile.mkdtemp(prefix="bench-fleet-", dir=args.work))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    pg = None
    try:
        started = time.monotonic()
        ids = make_storage(work, args.chains, args.depth)
        on_disk = int(subprocess.run(["du", "-sk", str(work / "all")], capture_output=True, text=True,
                                     check=True).stdout.split()[0])
        print(f"made {total} builds ({args.chains} chains of {args.depth}) in {time.monotonic() - started:.1f} s, "
              f"{on_disk / 1024:.0f} MiB on disk, under {work}", flush=True)
        storages = {n: linked_subset(work, ids, n) for n in sorted({*sizes, args.full})}

        (work / "empty").mkdir()
        databases = None
        if not args.no_audit:
            from tests.db import pgserver
            from tests.db.seed import make_db

            pg = pgserver.start_server()
            databases = {}
            for path, count in [(work / "empty", 0), *((storages[n], n) for n in sizes)]:
                db = make_db(pg)
                seed_rows(db.url, db.team_id, [ids[i:i + args.depth] for i in range(0, count, args.depth)])
                databases[path] = db.url
        (work / "caches").mkdir()
        commands = measured_commands(args, databases, work / "caches")
        by_size: dict[str, dict[int, Run]] = {}
        empty: dict[str, Run] = {}
        jobs2: dict[str, Run] = {}
        for command in commands:
            empty[command.label] = measure(command, work / "empty", 0, 1, work, args.repeat, env)
            by_size[command.label] = {n: measure(command, storages[n], n, 1, work, args.repeat, env)
                                      for n in sizes}
            if command.has_jobs:
                jobs2[command.label] = measure(command, storages[sizes[-1]], sizes[-1], 2, work, args.repeat, env)
        full_command = Measured("verify --all (full)", verify_all_argv(), verify_all_check)
        full = {} if args.audit_only else {
            jobs: measure(full_command, storages[args.full], args.full, jobs, work, args.repeat, env)
            for jobs in (1, 2)}

        print(f"\n--jobs 1, warm page cache. ms/build: (wall - the same command on an empty storage) / builds; "
              f"'x base': against the {sizes[0]}-build run of the same command")
        print(f"{'command':<24}{'builds':>7}{'wall s':>9}{'ms/build':>10}{'x base':>8}{'peak MiB':>10}{'x base':>8}"
              f"{'cpu ms/build':>14}")
        for command in commands:
            base, zero = by_size[command.label][sizes[0]], empty[command.label]
            print(f"{command.label:<24}{0:>7}{zero.seconds:>9.2f}{'':>18}{zero.peak_rss_kib / 1024:>10.1f}")
            for n, run in by_size[command.label].items():
                per, base_per = (run.seconds - zero.seconds) / n, (base.seconds - zero.seconds) / sizes[0]
                print(f"{command.label:<24}{n:>7}{run.seconds:>9.2f}{per * 1000:>10.1f}{per / base_per:>8.2f}"
                      f"{run.peak_rss_kib / 1024:>10.1f}{run.peak_rss_kib / base.peak_rss_kib:>8.2f}"
                      f"{(run.cpu_seconds - zero.cpu_seconds) / n * 1000:>14.1f}")
        print()
        for command in commands:
            runs = by_size[command.label]
            small, large, zero = runs[sizes[0]], runs[sizes[-1]], empty[command.label]
            time_ratio = ((large.seconds - zero.seconds) / sizes[-1]) / ((small.seconds - zero.seconds) / sizes[0])
            rss_ratio = large.peak_rss_kib / small.peak_rss_kib
            growth = (large.peak_rss_kib - small.peak_rss_kib) / max(1, sizes[-1] - sizes[0])
            cpu_ratio = ((large.cpu_seconds - zero.cpu_seconds) / sizes[-1]) / (
                (small.cpu_seconds - zero.cpu_seconds) / sizes[0])
            print(f"{command.label}: per build at {sizes[-1]} against {sizes[0]}: wall {time_ratio:.2f}x, CPU "
                  f"{cpu_ratio:.2f}x ({'linear' if cpu_ratio <= 1.2 else 'NOT linear'} by CPU: target <= 1.2x; "
                  f"wall follows the machine's load); peak RSS {rss_ratio:.2f}x "
                  f"({'flat' if rss_ratio <= 1.2 else 'NOT flat'}: target <= 1.2x), {growth:.2f} KiB per added build")
            if not command.has_jobs:
                continue
            one, two = runs[sizes[-1]], jobs2[command.label]
            print(f"{command.label}: --jobs 2 against --jobs 1 at {sizes[-1]} builds: {one.seconds / two.seconds:.2f}x "
                  f"as fast ({two.seconds:.2f} s vs {one.seconds:.2f} s; {os.cpu_count()} cores), peak "
                  f"{two.peak_rss_kib / 1024:.1f} MiB")
        zero = empty[commands[0].label]
        for jobs, run in full.items():
            per = (run.seconds - zero.seconds) / args.full
            print(f"verify --all (full), {args.full} builds, --jobs {jobs}: {run.seconds:.2f} s, "
                  f"{per * 1000:.1f} ms/build, {3600 / per:,.0f} builds/h, peak {run.peak_rss_kib / 1024:.1f} MiB")
        if full:
            line = f"full --jobs 2 against --jobs 1: {full[1].seconds / full[2].seconds:.2f}x"
            if args.full in sizes:
                quick = by_size[commands[0].label][args.full]
                line += (f"; full against --quick per build (--jobs 1, {args.full} builds): "
                         f"{(full[1].seconds - zero.seconds) / (quick.seconds - zero.seconds):.2f}x")
            print(line)
        print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    finally:
        if pg is not None:
            from tests.db import pgserver

            pgserver.remove(pg)
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
