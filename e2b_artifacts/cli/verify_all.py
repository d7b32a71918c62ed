"""``verify --all`` and ``verify --merge``: the fleet modes of ``cmd_verify``, over :mod:`e2b_artifacts.fleet`.

Text: a progress line on stderr, the summary on stdout. ``--json``: JSON lines on stdout, one
``{"type": "build"}`` per build as it finishes, then one ``{"type": "summary"}``.
"""

from __future__ import annotations

import json
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, Any

import blake3
import click

from ..errors import ArtifactError, ExitCode
from ..storage import Storage, TransferOptions, open_storage
from .common import AppState, progress, verdict


def open_location(location: str, endpoint_url: str | None, timeout: float, jobs: int) -> Storage:
    store = open_storage(location, endpoint_url=endpoint_url, max_connections=4 * jobs + 4, timeout=timeout)
    store.watch.notice = progress
    return store


class Progress:
    """``verify --all: 120/1000 builds, 2 FAIL, 0 error, 14.1 builds/s``: in place on a terminal (twice a
    second at most), a plain line every 5 s otherwise, and once at the end."""

    def __init__(self) -> None:
        self.total: int | None = None
        self.done = 0
        self.bad: dict[str, int] = {"FAIL": 0, "error": 0}
        self.started = time.monotonic()
        self.shown = 0.0
        self.tty = sys.stderr.isatty()
        self.lock = threading.Lock()

    def set_total(self, total: int) -> None:
        self.total = total

    def add(self, verdict_: str) -> None:
        with self.lock:
            self.done += 1
            if verdict_ in self.bad:
                self.bad[verdict_] += 1
            now = time.monotonic()
            if now - self.shown >= (0.5 if self.tty else 5.0):
                self.shown = now
                self._draw(now)

    def _draw(self, now: float) -> None:
        rate = self.done / max(now - self.started, 1e-6)
        text = (f"verify --all: {self.done}/{self.total if self.total is not None else '?'} builds, "
                f"{self.bad['FAIL']} FAIL, {self.bad['error']} error, {rate:.1f} builds/s")
        click.echo(("\r" + text) if self.tty else text, err=True, nl=not self.tty)

    def close(self) -> None:
        with self.lock:
            self._draw(time.monotonic())
            if self.tty:
                click.echo("", err=True)


def read_build_ids(source: str) -> frozenset[str]:
    """``--builds FILE``: build ids one a line (``-``: stdin); blank lines and ``#`` comments skipped."""
    return frozenset(read_build_id_list(source))


def read_build_id_list(source: str) -> list[str]:
    """The ids of ``--builds FILE`` in the file's order, each once."""
    from ..layout import check_build_id

    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text()
    except OSError as exc:
        raise ArtifactError(f"cannot read --builds {source}: {exc.strerror}", hint="a file of build ids, one a line",
                            code=ExitCode.BAD_INPUT) from exc
    ids = [line.split("#", 1)[0].strip() for line in text.splitlines()]
    return list(dict.fromkeys(check_build_id(i) for i in ids if i))


def run_all(app: AppState, location: str | None, *, quick: bool, strict: bool, jobs: int, shard: str | None,
            builds: str | None, results: str | None, endpoint_url: str | None, timeout: float,
            as_json: bool) -> ExitCode:
    from ..fleet import FleetOptions, parse_shard, results_name, template_location, verify_all
    from ..fleet.listing import WHOLE

    opts = FleetOptions(quick=quick, strict=strict, jobs=jobs, shard=parse_shard(shard) if shard else WHOLE,
                        only=read_build_ids(builds) if builds else None)
    where = location or template_location(app.settings)
    store = open_location(where, endpoint_url, timeout, jobs)
    results_store = open_location(results, endpoint_url, timeout, 1) if results else None
    bar = Progress()
    with tempfile.TemporaryDirectory(prefix="e2b-artifact-results-") as tmp:
        lines_path = Path(tmp) / results_name(opts.shard)
        hasher = blake3.blake3()  # of the lines as written: the upload checks it without reading the file twice
        with lines_path.open("wb") as lines_file:
            def on_result(result: Any) -> None:
                doc = result.to_json()
                _write_line(lines_file, hasher, doc)
                if as_json:
                    click.echo(json.dumps(doc, default=str))
                bar.add(result.verdict)

            try:
                summary = verify_all(store, app.settings, opts, on_result, total=bar.set_total)
            finally:
                bar.close()
            _write_line(lines_file, hasher, summary.to_json())
        if as_json:
            click.echo(json.dumps(summary.to_json(), default=str))
        else:
            for line in summary.lines():
                click.echo(line)
        if results_store is not None:
            results_store.upload_file(lines_path.name, lines_path, hasher.hexdigest(), TransferOptions())
            progress(f"results: {results_store.url}/{lines_path.name}")
    return verdict(summary.ok)


def _write_line(out: IO[bytes], hasher: Any, doc: dict[str, Any]) -> None:
    line = (json.dumps(doc, default=str) + "\n").encode()
    out.write(line)
    hasher.update(line)


def run_merge(prefix: str, *, strict: bool, wait: float, endpoint_url: str | None, timeout: float,
              as_json: bool) -> ExitCode:
    from ..fleet import merge_results
    from ..fleet.results import wait_for_results

    store = open_location(prefix, endpoint_url, timeout, 1)
    if wait > 0:
        wait_for_results(store, wait, log=progress)
    summary = merge_results(store, strict=strict)
    if as_json:
        click.echo(json.dumps(summary.to_json(), default=str))
    else:
        for line in summary.lines():
            click.echo(line)
    status = summary.merged
    if status is not None and not status.complete:
        missing = f"shard(s) {', '.join(map(str, status.missing))} of {status.expected} missing" \
            if status.missing else "; ".join(status.problems)
        raise ArtifactError(f"results at {store.url} are incomplete: {missing}",
                            hint="wait for the shards (verify --merge --wait SECONDS), or re-run the missing ones "
                                 "with verify --all --shard I/N --results PREFIX", code=ExitCode.BAD_INPUT)
    return verdict(summary.ok)
