"""Turn a log (a guest console, an orchestrator or API log) into causes and fixes.

The knowledge lives in ``data/diagnose.json``: each rule has regular
expressions, a cause, a fix and the commands that help. Every log line is given
to the first rule that matches it, so specific rules sit before general ones.
A rule may name a decoder that reads a detail out of the line (the exit status
in ``exitcode=0x...``, the port in ``bind: address already in use``).
"""

from __future__ import annotations

import json
import re
import signal
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from .errors import ArtifactError, ExitCode

MAX_LINES_PER_FINDING = 3
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@dataclass(frozen=True)
class LogRule:
    """A known failure: the log lines that show it, its cause, its fix."""

    id: str
    title: str
    patterns: tuple[re.Pattern[str], ...]
    cause: str
    fix: str
    commands: tuple[str, ...]
    decoder: str | None = None

    def matches(self, line: str) -> bool:
        return any(p.search(line) for p in self.patterns)


@dataclass
class LogMatch:
    """A rule and the log lines that matched it."""

    rule: LogRule
    lines: list[tuple[int, str]] = field(default_factory=list)  # (1-based line number, text)
    count: int = 0
    detail: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"id": self.rule.id, "title": self.rule.title, "detail": self.detail,
                "lines": [{"line": n, "text": t} for n, t in self.lines], "count": self.count,
                "cause": self.rule.cause, "fix": self.rule.fix, "commands": list(self.rule.commands)}

    def text_lines(self) -> list[str]:
        out = [f"* {self.rule.title} [{self.rule.id}]"]
        for number, text in self.lines:
            out.append(f"  line {number}: {text}")
        if self.count > len(self.lines):
            out.append(f"  ... and {self.count - len(self.lines)} more matching lines")
        if self.detail:
            out.append(f"  detail: {self.detail}")
        out.append(f"  cause: {self.rule.cause}")
        out.append(f"  fix: {self.rule.fix}")
        for cmd in self.rule.commands:
            out.append(f"  run: {cmd}")
        return out


def _exit_status(line: str) -> str | None:
    m = re.search(r"exitcode=0x([0-9a-fA-F]+)", line)
    if not m:
        return None
    code = int(m.group(1), 16)
    sig = code & 0x7F
    if sig:
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"signal {sig}"
        return f"init was killed by signal {sig} ({name})"
    return f"init exited with status {(code >> 8) & 0xFF}"


def _port(line: str) -> str | None:
    m = re.search(r":(\d{1,5}):? bind: address already in use", line, re.IGNORECASE)
    return f"port {m.group(1)} is taken" if m else None


DECODERS: dict[str, Callable[[str], str | None]] = {"init-exit-status": _exit_status, "port": _port}


def _rule(raw: dict[str, Any], source: str) -> LogRule:
    try:
        decoder = raw.get("decoder")
        if decoder is not None and decoder not in DECODERS:
            raise ValueError(f"unknown decoder {decoder!r}")
        return LogRule(id=str(raw["id"]), title=str(raw["title"]),
                    patterns=tuple(re.compile(p) for p in raw["patterns"]),
                    cause=str(raw["cause"]), fix=str(raw["fix"]),
                    commands=tuple(str(c) for c in raw.get("commands", ())), decoder=decoder)
    except (KeyError, TypeError, ValueError, re.error) as exc:
        raise ArtifactError(f"bad rule {raw.get('id', '?')!r} in {source}: {exc}",
                            hint="every rule needs id, title, patterns (regexes), cause and fix",
                            code=ExitCode.BAD_INPUT) from exc


def load_rules(path: Path | None = None) -> tuple[LogRule, ...]:
    """The rules of the bundled knowledge base, or of ``path``."""
    if path is None:
        return _bundled_rules()
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"cannot read knowledge base {path}: {exc}",
                            hint="pass a JSON file shaped like e2b_artifacts/data/diagnose.json",
                            code=ExitCode.BAD_INPUT) from exc
    return tuple(_rule(r, str(path)) for r in doc["rules"])


@cache
def _bundled_rules() -> tuple[LogRule, ...]:
    text = resources.files("e2b_artifacts").joinpath("data/diagnose.json").read_text()
    return tuple(_rule(r, "data/diagnose.json") for r in json.loads(text)["rules"])


def clean(line: str) -> str:
    """A console line without colour codes, carriage returns or trailing blanks."""
    return _ANSI.sub("", line).replace("\r", "").rstrip()


def diagnose_lines(lines: Iterable[str], rules: tuple[LogRule, ...] | None = None) -> list[LogMatch]:
    """One match per rule that matched, in order of its first matching line."""
    rules = _bundled_rules() if rules is None else rules
    matches: dict[str, LogMatch] = {}
    for number, raw in enumerate(lines, 1):
        line = clean(raw)
        if not line:
            continue
        for rule in rules:
            if rule.matches(line):
                match = matches.setdefault(rule.id, LogMatch(rule))
                match.count += 1
                if len(match.lines) < MAX_LINES_PER_FINDING:
                    match.lines.append((number, line))
                if match.detail is None and rule.decoder is not None:
                    match.detail = DECODERS[rule.decoder](line)
                break
    return list(matches.values())


def diagnose_text(text: str, rules: tuple[LogRule, ...] | None = None) -> list[LogMatch]:
    return diagnose_lines(text.splitlines(), rules)


def diagnose_file(path: Path, rules: tuple[LogRule, ...] | None = None) -> list[LogMatch]:
    try:
        with path.open(encoding="utf-8", errors="replace") as fh:
            return diagnose_lines(fh, rules)
    except OSError as exc:
        raise ArtifactError(f"cannot read {path}: {exc.strerror}", hint="pass an existing log file, or - for stdin",
                            code=ExitCode.BAD_INPUT) from exc
