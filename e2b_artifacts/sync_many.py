"""Many builds in one sync: ``sync push|pull --all`` or ``--builds FILE``.

The builds are put in order by their headers' ancestry (every parent before its children, each build
once), planned without reading data, then moved ``jobs`` at a time: a build starts once every parent of
it in this run is complete at the other side. Each build moves exactly as a single ``sync push|pull``
moves it (data files, the manifest, ``metadata.json`` last; verified; resumable part by part), so a
re-run skips the builds that are up to date and continues the others. A build that fails does not
stop the others; its descendants in the run are not started.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from . import sync
from .errors import ArtifactError, ExitCode
from .layout import METADATA, check_build_id
from .storage import Storage, TransferOptions

Direction = Literal["push", "pull"]
Outcome = Literal["planned", "up-to-date", "sent", "failed", "skipped"]


@dataclass(frozen=True)
class Selection:
    """Which builds: every one of the source side (``everything``), or ``ids`` (``--builds FILE``); with
    ``with_parents`` the listed builds' ancestors too."""

    everything: bool
    ids: tuple[str, ...] = ()
    with_parents: bool = False

    @property
    def mode(self) -> str:
        return "all" if self.everything else "builds"


@dataclass
class BuildOutcome:
    build_id: str
    parents: list[str]  # every build its headers map to
    plan: sync.BuildPlan | None = None
    outcome: Outcome = "planned"
    seconds: float = 0.0
    error: ArtifactError | None = None
    skipped_because: str = ""

    @property
    def bytes_sent(self) -> int:
        return self.plan.bytes_sent if self.plan else 0

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = self.plan.to_json() if self.plan else {"build_id": self.build_id,
                                                                      "parents": self.parents}
        doc.update(outcome=self.outcome, seconds=round(self.seconds, 3))
        if self.error is not None:
            doc.update(error=self.error.message, hint=self.error.hint, exit_code=int(self.error.code))
        if self.skipped_because:
            doc["skipped_because"] = self.skipped_because
        return doc


@dataclass
class ManyReport:
    direction: Direction
    location: str
    mode: str
    dry_run: bool
    jobs: int
    builds: list[BuildOutcome] = field(default_factory=list)  # parents before children
    incomplete: list[str] = field(default_factory=list)  # at the source without metadata.json: not synced
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def bytes_sent(self) -> int:
        return sum(b.bytes_sent for b in self.builds)

    @property
    def bytes_total(self) -> int:
        return sum(b.plan.bytes_total for b in self.builds if b.plan)

    @property
    def bytes_to_send(self) -> int:
        return sum(b.plan.bytes_to_send for b in self.builds if b.plan and b.outcome != "up-to-date")

    @property
    def mb_per_s(self) -> float:
        """Bytes moved per second of the whole run, in MB/s (10^6 bytes, as the progress line counts)."""
        return self.bytes_sent / self.seconds / 1e6 if self.seconds > 0 else 0.0

    def counts(self) -> dict[str, int]:
        found: dict[str, int] = {}
        for b in self.builds:
            found[b.outcome] = found.get(b.outcome, 0) + 1
        return found

    def failures(self) -> list[BuildOutcome]:
        return [b for b in self.builds if b.outcome == "failed"]

    def first_error(self) -> ArtifactError | None:
        """None when every build synced (or was up to date); else one error that sums up the failures."""
        failed = self.failures()
        if not failed:
            return None
        first = failed[0]
        assert first.error is not None
        skipped = self.counts().get("skipped", 0)
        others = f" ({len(failed) - 1} more failed)" if len(failed) > 1 else ""
        return ArtifactError(
            f"{len(failed)} of {len(self.builds)} builds failed{others}"
            + (f", {skipped} not started (a parent failed)" if skipped else "")
            + f"; {first.build_id}: {first.error.message}",
            hint=(first.error.hint + "; " if first.error.hint else "")
            + "a re-run of the same command skips what is complete and continues the rest",
            code=first.error.code)

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "ok": not self.failures(), "direction": self.direction, "location": self.location, "mode": self.mode,
            "dry_run": self.dry_run, "jobs": self.jobs, "counts": self.counts(),
            "bytes_total": self.bytes_total, "bytes_to_send": self.bytes_to_send, "bytes_sent": self.bytes_sent,
            "seconds": round(self.seconds, 3), "mb_per_s": round(self.mb_per_s, 2),
            "incomplete": self.incomplete, "warnings": self.warnings,
            "builds": [b.to_json() for b in self.builds]}
        error = self.first_error()
        if error is not None:
            doc.update(error=error.message, hint=error.hint, exit_code=int(error.code))
        return doc


def _quiet(_: str) -> None:
    pass


def _ignore_total(_: int) -> None:
    pass


# ---- which builds, in which order --------------------------------------------------------------

@dataclass
class _Node:
    build_id: str
    parents: list[str]
    remote: Any = None  # pull: what the source holds (sync._Remote)
    error: ArtifactError | None = None


def _unknown(ids: list[str], where: str, listed: str) -> ArtifactError:
    shown = ", ".join(ids[:5]) + (f" and {len(ids) - 5} more" if len(ids) > 5 else "")
    return ArtifactError(f"--builds: no complete build {shown} {where}",
                         hint=f"check the ids in the file ({listed} lists the builds there)",
                         code=ExitCode.BAD_INPUT)


def local_builds(root: Path, sel: Selection) -> list[str]:
    """The ids of the local builds ``sel`` names (complete ones: with ``metadata.json``), parents first."""
    return [node.build_id for node in _local_nodes(root, sel, None)[0]]


def _local_nodes(root: Path, sel: Selection, _: Storage | None) -> tuple[list[_Node], list[str]]:
    """Push: the chosen builds of local storage (and with ``with_parents`` their local ancestors)."""
    from .fleet.listing import list_builds
    from .storage.local import LocalStorage

    if sel.everything:
        listing = list_builds(LocalStorage(root))
        wanted = [b.build_id for b in listing.builds if METADATA in b.files]
        incomplete = [b.build_id for b in listing.builds if METADATA not in b.files]
    else:
        missing = [bid for bid in sel.ids if not (root / bid / METADATA).is_file()]
        if missing:
            raise _unknown(missing, f"in local storage {root}", f"ls {root}")
        wanted, incomplete = list(sel.ids), []

    def read(bid: str) -> _Node:
        try:
            return _Node(bid, sync.header_parents(root / bid, bid))
        except ArtifactError as exc:
            return _Node(bid, [], error=exc)

    return _close(wanted, read, lambda p: (root / p).is_dir(), sel.with_parents), incomplete


def _remote_nodes(root: Path, sel: Selection, src: Storage) -> tuple[list[_Node], list[str]]:
    """Pull: the chosen complete builds at ``src`` (and with ``with_parents`` their ancestors there)."""
    from .fleet.listing import list_builds

    listing = list_builds(src)
    complete = {b.build_id for b in listing.builds if METADATA in b.files}
    if sel.everything:
        wanted = sorted(complete)
        incomplete = [b.build_id for b in listing.builds if b.build_id not in complete]
    else:
        missing = [bid for bid in sel.ids if bid not in complete]
        if missing:
            raise _unknown(missing, f"at {src.url}", f"e2b-artifact sync ls {src.url}")
        wanted, incomplete = list(sel.ids), []

    def read(bid: str) -> _Node:
        try:
            remote = sync._read_remote(src, bid)
            return _Node(bid, remote.parents, remote=remote)
        except ArtifactError as exc:
            return _Node(bid, [], error=exc)

    return _close(wanted, read, lambda p: p in complete, sel.with_parents), incomplete


def _close(wanted: list[str], read: Callable[[str], _Node], available: Callable[[str], bool],
           with_parents: bool) -> list[_Node]:
    """``wanted`` (and with ``with_parents`` every available ancestor), parents before children, each once."""
    nodes: dict[str, _Node] = {}
    queue = list(wanted)
    while queue:
        bid = queue.pop(0)
        if bid in nodes:
            continue
        nodes[bid] = node = read(bid)
        if with_parents:
            queue += [p for p in node.parents if p not in nodes and available(p)]
    return _topological(nodes, wanted)


def _topological(nodes: dict[str, _Node], wanted: list[str]) -> list[_Node]:
    order: list[_Node] = []
    placed: set[str] = set()

    def visit(bid: str, chain: tuple[str, ...]) -> None:
        if bid in placed:
            return
        node = nodes[bid]
        for parent in node.parents:
            if parent in chain or parent == bid:
                raise ArtifactError(f"headers form a cycle: {' -> '.join((*chain, bid, parent))}",
                                    hint="the headers are corrupt; run e2b-artifact verify on these builds",
                                    code=ExitCode.BAD_INPUT)
            if parent in nodes:
                visit(parent, (*chain, bid))
        placed.add(bid)
        order.append(node)

    for bid in [*wanted, *sorted(nodes)]:
        visit(bid, ())
    return order


# ---- planning and moving -----------------------------------------------------------------------

def _plan(direction: Direction, root: Path, store: Storage, node: _Node, compress: str | None,
          decompress: bool) -> sync.BuildPlan:
    """What moving ``node`` would do; reads no file data. Parents are not checked here: in the run they go
    first, and the build's own sync checks them when it starts."""
    if node.error is not None:
        raise node.error
    if direction == "pull":
        return sync.plan_pull(root, node.remote, decompress=decompress)
    if compress is None:
        return sync.plan_push(root / node.build_id, node.build_id, store)
    from . import sync_compress

    up_to_date = sync_compress._up_to_date(root / node.build_id, node.build_id, store, {})
    return up_to_date if up_to_date is not None and up_to_date.state == "up-to-date" else \
        sync_compress._plain_preview(root / node.build_id, node.build_id, store)


def sync_many(direction: Direction, root: Path, store: Storage, sel: Selection, *, jobs: int = 1,
              dry_run: bool = False, opts: TransferOptions | None = None, compress: str | None = None,
              decompress: bool = False, log: sync.Log = _quiet,
              total: Callable[[int], None] = _ignore_total) -> ManyReport:
    """Push (local storage ``root`` -> ``store``) or pull (``store`` -> ``root``) the builds ``sel`` names.

    ``total`` hears the bytes the plan will send before any is sent (for a progress bar)."""
    started = time.monotonic()
    for bid in sel.ids:
        check_build_id(bid)
    report = ManyReport(direction, store.url, sel.mode, dry_run, jobs)
    nodes, report.incomplete = (_local_nodes if direction == "push" else _remote_nodes)(root, sel, store)
    for bid in report.incomplete:
        report.warnings.append(f"{bid}: no {METADATA} at the source (an unfinished build or push): not synced")
    by_id: dict[str, BuildOutcome] = {}
    for node in nodes:
        outcome = BuildOutcome(node.build_id, node.parents)
        try:
            outcome.plan = _plan(direction, root, store, node, compress, decompress)
            if outcome.plan.state == "up-to-date":
                outcome.outcome = "up-to-date"
        except ArtifactError as exc:
            outcome.outcome, outcome.error = "failed", exc
        report.builds.append(outcome)
        by_id[node.build_id] = outcome
    total(report.bytes_to_send)
    if not dry_run:
        transfer = opts or TransferOptions()

        def move(outcome: BuildOutcome) -> None:
            at = time.monotonic()
            try:
                if direction == "push":
                    done = sync.push(root, outcome.build_id, store, opts=transfer, log=log, compress=compress)
                else:
                    done = sync.pull(root, outcome.build_id, store, opts=transfer, log=log, decompress=decompress)
                outcome.plan = done.builds[-1]
                outcome.outcome = "up-to-date" if outcome.plan.state == "up-to-date" else "sent"
                report.warnings += done.warnings
            except ArtifactError as exc:
                outcome.outcome, outcome.error = "failed", exc
                log(f"{outcome.build_id}: failed: {exc.message}")
            outcome.seconds = time.monotonic() - at

        _in_dependency_order(report.builds, by_id, jobs, move)
    report.seconds = time.monotonic() - started
    return report


def _in_dependency_order(builds: list[BuildOutcome], by_id: dict[str, BuildOutcome], jobs: int,
                         move: Callable[[BuildOutcome], None]) -> None:
    """``move`` every build still to move, ``jobs`` at a time, each once all its parents in the run are done;
    a build whose parent failed (or was not started) is marked skipped."""
    pending = [b for b in builds if b.outcome == "planned"]
    finished = {b.build_id for b in builds if b.outcome == "up-to-date"}
    broken = {b.build_id for b in builds if b.outcome == "failed"}
    with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="sync") as pool:
        running: dict[Future[None], BuildOutcome] = {}
        while pending or running:
            for build in list(pending):
                in_run = [p for p in build.parents if p in by_id]
                bad = next((p for p in in_run if p in broken), None)
                if bad is not None:
                    build.outcome = "skipped"
                    build.skipped_because = f"parent {bad} " + ("failed" if by_id[bad].outcome == "failed"
                                                                else "was not synced")
                    broken.add(build.build_id)
                    pending.remove(build)
                elif len(running) < jobs and all(p in finished for p in in_run):
                    pending.remove(build)
                    running[pool.submit(move, build)] = build
            if not running:
                break
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                build = running.pop(future)
                future.result()
                (broken if build.outcome == "failed" else finished).add(build.build_id)
