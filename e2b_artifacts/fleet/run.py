"""``verify --all``: every build of a location (or one shard of them), ``jobs`` at a time.

Each build is verified once, by ``verify.verify``: in place for a directory, through a stand-in
(:mod:`.standin`) for an object store. A result is handed to ``on_result`` as soon as it is ready and
only its compact record (verdict, first FAIL line, parents) is kept for the summary, so memory does
not grow with the findings of a thousand builds.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, replace
from pathlib import Path

from ..errors import ArtifactError, ExitCode
from ..settings import Settings
from ..storage import Storage
from ..storage.local import LocalStorage
from ..sync import header_parents
from ..verify import VerifyReport, verify
from .listing import WHOLE, Shard, StoredBuild, list_builds
from .results import BuildResult, Summary
from .standin import StandIns

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FleetOptions:
    quick: bool = False
    strict: bool = False
    jobs: int = 1
    shard: Shard = WHOLE
    only: frozenset[str] | None = None  # verify just these build ids (``--builds FILE``)


def _ignore(_: BuildResult) -> None:
    pass


def verify_all(store: Storage, settings: Settings, opts: FleetOptions,
               on_result: Callable[[BuildResult], None] = _ignore, *, total: Callable[[int], None] | None = None,
               ) -> Summary:
    """Verify every build of ``store`` in ``opts.shard``; ``total`` (optional) hears how many there are."""
    started = time.monotonic()
    listing = list_builds(store)
    by_id = listing.by_id()
    chosen = [b for b in listing.builds if opts.shard.holds(b.build_id)
              and (opts.only is None or b.build_id in opts.only)]
    unknown = sorted(bid for bid in (opts.only or ()) if bid not in by_id and opts.shard.holds(bid))
    if total is not None:
        total(len(chosen) + len(unknown))
    records = []
    for bid in unknown:
        result = BuildResult.of_error(bid, f"{store.url}/{bid}", ArtifactError(
            f"no build {bid} at {store.url}", hint="check the id (e2b-artifact sync ls LOCATION lists the builds)",
            code=ExitCode.BAD_INPUT), 0.0)
        on_result(result)
        records.append(result)
    with tempfile.TemporaryDirectory(prefix="e2b-artifact-verify-all-") as workdir:
        stand_ins = None if isinstance(store, LocalStorage) else StandIns(store, by_id, Path(workdir),
                                                                           quick=opts.quick)
        for result in _run(chosen, opts.jobs,
                           lambda b: _verify_one(store, settings, opts, stand_ins, b, listing.staging)):
            on_result(result)
            records.append(result.compact(opts.strict))
    return Summary(store.url if not isinstance(store, LocalStorage) else str(store.root),
                   sorted(records, key=lambda r: r.build_id), strict=opts.strict, quick=opts.quick,
                   shard=opts.shard if opts.shard != WHOLE else None, jobs=opts.jobs,
                   seconds=time.monotonic() - started, skipped=listing.skipped)


def _run(builds: list[StoredBuild], jobs: int,
         work: Callable[[StoredBuild], BuildResult]) -> Iterator[BuildResult]:
    """Results in completion order, at most ``2 * jobs`` builds in flight (finished futures are dropped)."""
    pending = iter(builds)
    with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="verify") as pool:
        running: set[Future[BuildResult]] = set()
        while True:
            for build in pending:
                running.add(pool.submit(work, build))
                if len(running) >= 2 * jobs:
                    break
            if not running:
                return
            done, running = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                yield future.result()


def _verify_one(store: Storage, settings: Settings, opts: FleetOptions, stand_ins: StandIns | None,
                build: StoredBuild, staging: frozenset[str] = frozenset()) -> BuildResult:
    started = time.monotonic()
    bid = build.build_id
    location = f"{store.url}/{bid}"
    try:
        if stand_ins is None:
            assert isinstance(store, LocalStorage)
            build_dir = store.root / bid
            location = str(build_dir)
            # the listing saw every .<id>.staging-* of the storage: each build's sweep need not list it
            # again (N builds x N entries)
            report = verify(build_dir, settings, quick=opts.quick, staging_seen=bid in staging)
            parents = _parents(build_dir, bid)
        else:
            with stand_ins.prepare(build) as (build_dir, stand_in, parents):
                report = _relocated(verify(build_dir, settings, quick=opts.quick, stand_in=stand_in),
                                    build_dir.parent, store.url)
        return BuildResult.of_report(report, location, parents, time.monotonic() - started)
    except ArtifactError as exc:
        return BuildResult.of_error(bid, location, exc, time.monotonic() - started)
    except Exception as exc:  # a bug verifying one build must not end the run for the others
        log.debug("verifying %s failed", bid, exc_info=True)
        return BuildResult.of_error(bid, location, ArtifactError(
            f"internal error: {type(exc).__name__}: {exc}",
            hint=f"rerun with --debug, or e2b-artifact --debug verify on the build alone ({location})",
            code=ExitCode.INTERNAL), time.monotonic() - started)


def _parents(build_dir: Path, build_id: str) -> list[str]:
    try:
        return header_parents(build_dir, build_id)
    except ArtifactError:
        return []  # verify reported the header


def _relocated(report: VerifyReport, stand_in_root: Path, url: str) -> VerifyReport:
    """Findings that name the stand-in's temp paths name the objects instead."""
    prefix = f"{stand_in_root}/"
    report.findings = [replace(f, message=f.message.replace(prefix, f"{url}/"), hint=f.hint.replace(prefix, f"{url}/"))
                       for f in report.findings]
    return report
