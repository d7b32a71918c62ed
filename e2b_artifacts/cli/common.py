"""Pieces shared by the commands: app state, --json, output, progress, the exit code of a verdict.

Every command returns an :class:`ExitCode` (``OK``, or ``CHECK_FAILED`` when its check found a
problem); every other failure is raised as :class:`ArtifactError`. ``cli.main`` maps both.
"""

from __future__ import annotations

import functools
import json
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import click

from ..errors import ExitCode
from ..settings import Settings

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class AppState:
    """What the top-level options resolved to; commands reach it via ``click.pass_obj``."""

    flags: dict[str, str] = field(default_factory=dict)
    env_file: Path | None = None
    debug: bool = False
    json: bool = False  # the running command was given --json (its errors are printed as JSON too)
    _settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = Settings(flags=self.flags, env_file=self.env_file)
        return self._settings


def _note_json(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
    app = ctx.find_object(AppState)
    if value and app is not None:
        app.json = True
    return value


def json_option(func: F) -> F:
    """Add ``--json``: print one JSON document on stdout instead of text."""
    return click.option("--json", "as_json", is_flag=True, callback=_note_json,
                        help="Print a machine-readable JSON result on stdout.")(func)


def build_command(name: str) -> Callable[[Callable[..., ExitCode]], click.Command]:
    """``@build_command("verify")``: a command on one BUILD (a build id under the template storage, or the path
    of a build directory), with ``--json`` as its last option.

    The function gets the app state, the build's directory, then its other parameters by name.
    """

    def decorate(func: Callable[..., ExitCode]) -> click.Command:
        @functools.wraps(func)
        def run(app: AppState, /, build: str, **kwargs: Any) -> ExitCode:
            return func(app, app.settings.build_dir(build), **kwargs)

        return json_option(click.command(name, params=[click.Argument(["build"])])(click.pass_obj(run)))

    return decorate


def emit(as_json: bool, result: dict[str, Any], lines: Iterable[str] = ()) -> None:
    """Print ``result`` as JSON, or ``lines`` as text."""
    if as_json:
        click.echo(json.dumps(result, indent=2, default=str))
    else:
        for line in lines:
            click.echo(line)


def verdict(ok: bool) -> ExitCode:
    """The exit code of a command whose check passed (``ok``) or found a problem."""
    return ExitCode.OK if ok else ExitCode.CHECK_FAILED


def progress(message: str) -> None:
    """A progress line on stderr (never on stdout, which pipelines parse)."""
    click.echo(message, err=True)


class ProgressLine:
    """Bytes moved so far, on stderr: redrawn in place on a terminal (at most twice a second),
    a plain line every 2 s otherwise.

    Feed it increments (:meth:`add`, from any thread) or the running total (:meth:`update`);
    :meth:`close` prints the final figure.
    """

    def __init__(self, label: str, total: int | None = None) -> None:
        self.label = label
        self.total = total
        self.done = 0
        self.started = time.monotonic()
        self.shown = 0.0
        self.tty = sys.stderr.isatty()
        self.lock = threading.Lock()

    def add(self, n: int) -> None:
        with self.lock:
            self._set(self.done + n, self.total)

    def update(self, done: int, total: int | None) -> None:
        with self.lock:
            self._set(done, total)

    def _set(self, done: int, total: int | None) -> None:
        self.done, self.total = done, total
        now = time.monotonic()
        if now - self.shown >= (0.5 if self.tty else 2.0):
            self.shown = now
            self._draw(now)

    def _draw(self, now: float) -> None:
        rate = self.done / max(now - self.started, 1e-6) / 1e6
        if self.total is None:
            text = f"{self.label}: {self.done / 2**20:.1f} MiB {rate:.0f} MB/s"
        else:
            pct = 100.0 * self.done / self.total if self.total else 100.0
            text = (f"{self.label}: {self.done / 2**20:.1f}/{self.total / 2**20:.1f} MiB {pct:3.0f}% "
                    f"{rate:.0f} MB/s")
        click.echo(("\r" + text) if self.tty else text, err=True, nl=not self.tty)

    def close(self) -> None:
        with self.lock:
            if self.done:
                self._draw(time.monotonic())
                if self.tty:
                    click.echo("", err=True)
