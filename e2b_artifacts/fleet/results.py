"""Per-build results of ``verify --all``, their summary, the JSON lines files shards write, and the merge.

A results file holds one ``{"type": "build", ...}`` line per build, then one ``{"type": "summary", ...}``
line. A shard writes ``shard-<I>-of-<N>.jsonl`` under a results prefix only when it has finished, so a
file's presence means its shard is complete; ``verify --merge`` combines the files of all N shards.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from ..errors import ArtifactError, ExitCode
from ..jsoninput import load_json
from ..storage import Storage
from ..verify import VerifyReport
from .listing import Shard

Verdict = Literal["ok", "warn", "FAIL", "error"]
VERDICTS: tuple[Verdict, ...] = ("ok", "warn", "FAIL", "error")
RESULTS_RE = re.compile(r"shard-(\d+)-of-(\d+)\.jsonl")
MAX_LINE = 64 << 20  # one build's findings; far more than any report holds
READ_CHUNK = 4 << 20


@dataclass(frozen=True, slots=True)
class BuildResult:
    """One build's verdict: ``FAIL`` when a check failed, ``error`` when it could not be verified at all
    (unreadable objects, a store that stopped answering), else ``warn`` or ``ok``."""

    build_id: str
    location: str
    verdict: Verdict
    counts: dict[str, int] = field(default_factory=dict)
    first_fail: str = ""  # the first FAIL line ("check: message"), or the error
    first_warn: str = ""
    parents: tuple[str, ...] = ()  # builds its headers map data to
    seconds: float = 0.0
    findings: tuple[dict[str, str], ...] = ()
    error_code: int | None = None

    @classmethod
    def of_report(cls, report: VerifyReport, location: str, parents: list[str], seconds: float) -> BuildResult:
        counts = report.counts()
        verdict: Verdict = "FAIL" if counts["FAIL"] else "warn" if counts["warn"] else "ok"
        first = {status: next((f"{f.check}: {f.message}" for f in report.findings if f.status == status), "")
                 for status in ("FAIL", "warn")}
        return cls(sys.intern(report.build_id), location, verdict, counts, first["FAIL"], first["warn"],
                   tuple(sys.intern(p) for p in parents), round(seconds, 3),
                   tuple(f.to_dict() for f in report.findings))

    @classmethod
    def of_error(cls, build_id: str, location: str, exc: ArtifactError, seconds: float) -> BuildResult:
        return cls(build_id, location, "error", {}, exc.message + (f" (hint: {exc.hint})" if exc.hint else ""),
                   seconds=round(seconds, 3), error_code=int(exc.code))

    def failing(self, strict: bool) -> bool:
        return self.verdict in ("FAIL", "error") or (strict and self.verdict == "warn")

    def problem(self, strict: bool) -> str:
        return self.first_fail or (self.first_warn if strict else "")

    def compact(self, strict: bool) -> BuildResult:
        """What a summary keeps of each build, so that its memory grows by little more than a build id and
        its parents per build: a failing build without its findings, any other its id, verdict and parents."""
        if self.failing(strict):
            return replace(self, findings=())
        return BuildResult(self.build_id, "", self.verdict, parents=self.parents)

    def to_json(self) -> dict[str, Any]:
        return {"type": "build", "build_id": self.build_id, "location": self.location, "verdict": self.verdict,
                "counts": self.counts, "first_fail": self.first_fail, "first_warn": self.first_warn,
                "parents": list(self.parents), "seconds": self.seconds, "error_code": self.error_code,
                "findings": list(self.findings)}

    @classmethod
    def from_json(cls, doc: Any, where: str) -> BuildResult:
        try:
            verdict = doc["verdict"]
            if verdict not in VERDICTS or not isinstance(doc["build_id"], str):
                raise ValueError(verdict)
            return cls(sys.intern(doc["build_id"]), str(doc.get("location", "")), verdict,
                       dict(doc.get("counts") or {}),
                       str(doc.get("first_fail", "")), str(doc.get("first_warn", "")),
                       tuple(sys.intern(str(p)) for p in doc.get("parents") or ()), float(doc.get("seconds", 0)),
                       (), doc.get("error_code"))
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(f"{where}: not a verify --all build result ({exc})",
                                hint="results files are written by verify --all --results PREFIX",
                                code=ExitCode.BAD_INPUT) from exc


@dataclass(frozen=True)
class MergeStatus:
    """Which shards' files ``verify --merge`` found."""

    expected: int  # N, from the files' names
    found: tuple[int, ...]
    problems: tuple[str, ...] = ()

    @property
    def missing(self) -> list[int]:
        return sorted(set(range(self.expected)) - set(self.found))

    @property
    def complete(self) -> bool:
        return self.expected > 0 and not self.missing and not self.problems

    def to_json(self) -> dict[str, Any]:
        return {"expected": self.expected, "found": list(self.found), "missing": self.missing,
                "problems": list(self.problems), "complete": self.complete}


@dataclass
class Summary:
    """What a run (or the merge of a run's shards) found, from the compact per-build records."""

    location: str
    records: list[BuildResult]
    strict: bool = False
    quick: bool = False
    shard: Shard | None = None  # None: every build (or a merge)
    jobs: int = 1
    seconds: float = 0.0
    skipped: list[str] = field(default_factory=list)
    merged: MergeStatus | None = None

    @property
    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = dict.fromkeys(VERDICTS, 0)
        for r in self.records:
            counts[r.verdict] += 1
        return counts

    def failing(self) -> list[BuildResult]:
        return sorted((r for r in self.records if r.failing(self.strict)), key=lambda r: r.build_id)

    def affected(self) -> list[tuple[str, list[str]]]:
        """Builds that map data to a failing build (they start only as well as that build does)."""
        bad = {r.build_id for r in self.records if r.verdict in ("FAIL", "error")}
        found = [(r.build_id, sorted(p for p in r.parents if p in bad)) for r in self.records]
        return sorted((bid, parents) for bid, parents in found if parents)

    @property
    def ok(self) -> bool:
        return not any(r.failing(self.strict) for r in self.records) and (
            self.merged is None or self.merged.complete)

    @property
    def builds_per_hour(self) -> float:
        return round(len(self.records) * 3600 / self.seconds, 1) if self.seconds > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "type": "summary", "ok": self.ok, "location": self.location,
            "shard": str(self.shard) if self.shard else None, "quick": self.quick, "strict": self.strict,
            "jobs": self.jobs, "builds": len(self.records), "counts": self.counts,
            "failing": [{"build_id": r.build_id, "verdict": r.verdict, "first_fail": r.problem(self.strict)}
                        for r in self.failing()],
            "affected": [{"build_id": bid, "failing_parents": parents} for bid, parents in self.affected()],
            "skipped": self.skipped, "seconds": round(self.seconds, 3), "builds_per_hour": self.builds_per_hour}
        if self.merged is not None:
            doc["shards"] = self.merged.to_json()
        return doc

    def lines(self) -> list[str]:
        counts = self.counts
        where = self.location + (f" (shard {self.shard})" if self.shard else "")
        lines = [f"{where}: {len(self.records)} builds in {self.seconds:.1f} s ({self.builds_per_hour:g} builds/h"
                 f"{f', {self.jobs} jobs' if self.jobs > 1 else ''}): "
                 + ", ".join(f"{counts[v]} {v}" for v in VERDICTS)]
        lines += [f"{r.verdict:<5} {r.build_id}: {r.problem(self.strict)}" for r in self.failing()]
        lines += [f"needs  {bid}: maps data to failing build(s) {', '.join(parents)}"
                  for bid, parents in self.affected()]
        if self.skipped:
            lines.append(f"skipped (no files of their own): {', '.join(self.skipped)}")
        if self.merged is not None and not self.merged.complete:
            lines += [f"incomplete: {p}" for p in self._merge_problems()]
        lines.append(("-> passed" if self.ok else "-> FAILED") + (" (strict)" if self.strict else ""))
        return lines

    def _merge_problems(self) -> list[str]:
        assert self.merged is not None
        found = list(self.merged.problems)
        if self.merged.missing:
            found.append(f"no results from shard(s) {', '.join(map(str, self.merged.missing))} of "
                         f"{self.merged.expected}")
        return found


def results_name(shard: Shard) -> str:
    """The name a shard's results file has under a results prefix."""
    return f"shard-{shard.index}-of-{shard.count}.jsonl"


def scan_results(store: Storage) -> dict[Shard, str]:
    """The results files directly under ``store``'s root: shard -> key."""
    found = {}
    for info in store.list(""):
        match = RESULTS_RE.fullmatch(info.key)
        if match:
            found[Shard(int(match[1]), int(match[2]))] = info.key
    return found


def _status(files: dict[Shard, str]) -> MergeStatus:
    counts = sorted({s.count for s in files})
    problems = []
    if len(counts) > 1:
        problems.append(f"results of runs with different shard counts ({', '.join(map(str, counts))}): "
                        "give each run its own prefix")
    expected = counts[-1] if counts else 0
    return MergeStatus(expected, tuple(sorted(s.index for s in files if s.count == expected)), tuple(problems))


def wait_for_results(store: Storage, timeout: float, *, poll: float = 10.0,
                     log: Callable[[str], None] | None = None) -> None:
    """Return once the results of every shard are at ``store`` (or ``timeout`` seconds have passed)."""
    deadline = time.monotonic() + timeout
    said = ""
    while True:
        status = _status(scan_results(store))
        if status.complete or status.problems or time.monotonic() >= deadline:
            return
        note = (f"waiting for results at {store.url}: {len(status.found)} of {status.expected or '?'} shards"
                f"{' (missing ' + ', '.join(map(str, status.missing)) + ')' if status.expected else ''}")
        if log is not None and note != said:
            log(note)
            said = note
        time.sleep(min(poll, max(0.0, deadline - time.monotonic())))


def merge_results(store: Storage, *, strict: bool = False) -> Summary:
    """The fleet summary of every results file at ``store`` (a results prefix)."""
    files = scan_results(store)
    if not files:
        raise ArtifactError(f"no results files (shard-I-of-N.jsonl) at {store.url}",
                            hint="pass the prefix given to verify --all --results; the shards may not have "
                                 "finished yet (verify --merge --wait SECONDS waits for them)",
                            code=ExitCode.BAD_INPUT)
    status = _status(files)
    problems = list(status.problems)
    records: dict[str, BuildResult] = {}
    summary = Summary(store.url, [], strict=strict)
    locations, seconds = set(), 0.0
    for shard, key in sorted(files.items(), key=lambda item: (item[0].count, item[0].index)):
        if shard.count != status.expected:
            continue
        ended = False
        for doc in read_results(store, key):
            if doc.get("type") == "summary":
                ended = True
                locations.add(str(doc.get("location", "")))
                summary.quick = summary.quick or bool(doc.get("quick"))
                summary.skipped += [str(s) for s in doc.get("skipped") or []]
                seconds = max(seconds, float(doc.get("seconds") or 0))
                continue
            record = BuildResult.from_json(doc, f"{store.url}/{key}")
            if record.build_id in records:
                problems.append(f"{record.build_id} appears in more than one shard's results")
            elif not shard.holds(record.build_id):
                problems.append(f"{record.build_id} is in the results of shard {shard}, not its own")
            records[record.build_id] = record.compact(strict)
        if not ended:
            problems.append(f"{store.url}/{key} has no summary line (cut short?)")
    if len(locations) > 1:
        problems.append(f"the shards verified different locations: {', '.join(sorted(locations))}")
    summary.records = sorted(records.values(), key=lambda r: r.build_id)
    summary.location = next(iter(locations)) if len(locations) == 1 else store.url
    summary.seconds = seconds  # the slowest shard: the shards run side by side
    summary.skipped = sorted(set(summary.skipped))
    summary.merged = MergeStatus(status.expected, status.found, tuple(dict.fromkeys(problems)))
    return summary


def read_results(store: Storage, key: str) -> Iterator[dict[str, Any]]:
    """The JSON documents of a results file, one per line, read in chunks (never the whole file at once)."""
    info = store.stat(key)
    if info is None:
        raise ArtifactError(f"{store.url}/{key}: no such object", hint="list the results prefix",
                            code=ExitCode.BAD_INPUT)
    where = f"{store.url}/{key}"
    pending = b""
    offset = 0
    lineno = 0
    while offset < info.size or pending:
        chunk = b""
        if offset < info.size:
            chunk = store.read_range(key, offset, min(READ_CHUNK, info.size - offset))
            if not chunk:
                raise ArtifactError(f"{where}: shorter than listed ({offset} of {info.size} bytes)",
                                    hint="the file changed while it was read; run the merge again",
                                    code=ExitCode.REMOTE)
        offset += len(chunk)
        if not chunk:
            lines, pending = [pending], b""
        else:
            *lines, pending = (pending + chunk).split(b"\n")
            if len(pending) > MAX_LINE:
                raise ArtifactError(f"{where}: a line longer than {MAX_LINE} bytes", hint="is this a results file?",
                                    code=ExitCode.BAD_INPUT)
        for line in lines:
            lineno += 1
            if line.strip():
                doc = load_json(line, f"{where}:{lineno}", "results files are JSON lines from verify --all")
                if not isinstance(doc, dict):
                    raise ArtifactError(f"{where}:{lineno}: expected a JSON object", code=ExitCode.BAD_INPUT)
                yield doc
