"""Pieces shared by the commands: app state, --json, output."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import click

from ..settings import Settings

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class AppState:
    """What the top-level options resolved to; commands reach it via ``click.pass_obj``."""

    flags: dict[str, str] = field(default_factory=dict)
    env_file: Path | None = None
    debug: bool = False
    _settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = Settings(flags=self.flags, env_file=self.env_file)
        return self._settings


def json_option(func: F) -> F:
    """Add ``--json``: print one JSON document on stdout instead of text."""
    return click.option("--json", "as_json", is_flag=True,
                        help="Print a machine-readable JSON result on stdout.")(func)


def emit(as_json: bool, result: dict[str, Any], lines: Iterable[str] = ()) -> None:
    """Print ``result`` as JSON, or ``lines`` as text."""
    if as_json:
        click.echo(json.dumps(result, indent=2, default=str))
    else:
        for line in lines:
            click.echo(line)


def progress(message: str) -> None:
    """A progress line on stderr (never on stdout, which pipelines parse)."""
    click.echo(message, err=True)
