"""Turn a log (a guest console, an orchestrator or API log) into causes and fixes.

The knowledge lives in ``data/diagnose.json``: each rule has regular
expressions, a cause, a fix and the commands that help. Every log line is given
to the first rule that matches it, so specific rules sit before general ones.
A rule may name a decoder that reads a detail out of the line (the exit status
in ``exitcode=0x...``, the port in ``bind: address already in use``).
"""

from __future__ import annotations

import contextlib
import json
import re
import signal
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, TextIO

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
    details: list[Decoded] = field(default_factory=list)  # what the decoder read, once per distinct value

    @property
    def detail(self) -> str | None:
        return "; ".join(d.text for d in self.details) or None

    def commands(self) -> list[str]:
        """The rule's commands with the decoded values put in (one command per value)."""
        out: list[str] = []
        for cmd in self.rule.commands:
            filled = [cmd.replace(f"<{k}>", v) for d in self.details for k, v in d.fills.items() if f"<{k}>" in cmd]
            out += filled or [cmd]
        return list(dict.fromkeys(out))

    def to_json(self) -> dict[str, Any]:
        return {"id": self.rule.id, "title": self.rule.title, "detail": self.detail,
                "lines": [{"line": n, "text": t} for n, t in self.lines], "count": self.count,
                "cause": self.rule.cause, "fix": self.rule.fix, "commands": self.commands()}

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
        for cmd in self.commands():
            out.append(f"  run: {cmd}")
        return out


@dataclass(frozen=True)
class Decoded:
    """A detail read out of one log line, and the values it puts into the rule's commands."""

    text: str
    fills: dict[str, str] = field(default_factory=dict)


@dataclass
class Diagnosis:
    matches: list[LogMatch]
    unmatched: list[tuple[int, str]]  # error-looking lines no rule explains (the first MAX_UNMATCHED)
    unmatched_count: int = 0

    def text_lines(self, source: str) -> list[str]:
        lines = [ln for m in self.matches for ln in m.text_lines()]
        if self.unmatched:
            lines.append(f"* {self.unmatched_count} error line(s) matched no known failure:")
            lines += [f"  line {n}: {t}" for n, t in self.unmatched]
            if self.unmatched_count > len(self.unmatched):
                lines.append(f"  ... and {self.unmatched_count - len(self.unmatched)} more")
        lines.append(f"{source}: {len(self.matches)} known problem(s) found" if self.matches
                     else f"{source}: no known problem found")
        return lines

    def to_json(self) -> dict[str, Any]:
        return {"findings": [m.to_json() for m in self.matches], "unmatched_count": self.unmatched_count,
                "unmatched": [{"line": n, "text": t} for n, t in self.unmatched]}


MAX_UNMATCHED = 10
_ERRORISH = re.compile(r"\b(error|failed|failure|fatal|panic|cannot|can't|unable|denied|refused|not found|"
                       r"no such file|timed? ?out)\b", re.IGNORECASE)


def _exit_status(line: str) -> Decoded | None:
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
        return Decoded(f"init was killed by signal {sig} ({name})")
    return Decoded(f"init exited with status {(code >> 8) & 0xFF}")


_PORT_FORMS = (r"listen tcp [^\s]*:(\d{1,5})", r":(\d{1,5}):? bind: address already in use",
               r"\bport (\d{1,5})\b")


def _port(line: str) -> Decoded | None:
    for form in _PORT_FORMS:
        if m := re.search(form, line, re.IGNORECASE):
            return Decoded(f"port {m.group(1)} is taken", {"port": m.group(1)})
    return None


def _crc(line: str) -> Decoded | None:
    m = re.search(r"CRC64 validation failed:? (\d+)", line)
    if not m:
        return Decoded("Firecracker printed no CRC value (from v1.14 its message carries none, so there is no "
                       "number to match): e2b-artifact verify <build-id> computes it")
    return Decoded(f"Firecracker computed CRC64 {m.group(1)}: e2b-artifact verify <build-id> prints "
                   f"'snapshot.crc: CRC64 validation failed: {m.group(1)}' for the same snapfile (the same number "
                   "means it checks the file that was loaded)", {"crc": m.group(1)})


def _env_var(line: str) -> Decoded | None:
    m = re.search(r'required environment variable "?([A-Z0-9_]+)"? is not set', line)
    return Decoded(f"{m.group(1)} is not set", {"var": m.group(1)}) if m else None


DECODERS: dict[str, Callable[[str], Decoded | None]] = {"init-exit-status": _exit_status, "port": _port,
                                                        "crc": _crc, "env-var": _env_var}


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
    return diagnose_log(lines, rules).matches


def diagnose_log(lines: Iterable[str], rules: tuple[LogRule, ...] | None = None) -> Diagnosis:
    """The matches, and the error-looking lines that no rule explains."""
    rules = _bundled_rules() if rules is None else rules
    matches: dict[str, LogMatch] = {}
    unmatched: list[tuple[int, str]] = []
    unmatched_count = 0
    for number, raw in enumerate(lines, 1):
        line = clean(raw)
        if not line:
            continue
        rule = next((r for r in rules if r.matches(line)), None)
        if rule is None:
            if _ERRORISH.search(line):
                unmatched_count += 1
                if len(unmatched) < MAX_UNMATCHED:
                    unmatched.append((number, line))
            continue
        match = matches.setdefault(rule.id, LogMatch(rule))
        match.count += 1
        if len(match.lines) < MAX_LINES_PER_FINDING:
            match.lines.append((number, line))
        if rule.decoder is not None and (decoded := DECODERS[rule.decoder](line)) is not None \
                and decoded not in match.details:
            match.details.append(decoded)
    return Diagnosis(list(matches.values()), unmatched, unmatched_count)


def diagnose_text(text: str, rules: tuple[LogRule, ...] | None = None) -> list[LogMatch]:
    return diagnose_lines(text.splitlines(), rules)


def diagnose_file(path: Path, rules: tuple[LogRule, ...] | None = None) -> list[LogMatch]:
    with open_log(path) as fh:
        return diagnose_lines(fh, rules)


@contextlib.contextmanager
def open_log(path: Path) -> Iterator[TextIO]:
    try:
        fh = path.open(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise ArtifactError(f"cannot read {path}: {exc.strerror}", hint="pass an existing log file, or - for stdin",
                            code=ExitCode.BAD_INPUT) from exc
    with fh:
        try:
            yield fh
        except OSError as exc:
            raise ArtifactError(f"cannot read {path}: {exc.strerror}", hint="pass a readable log file",
                                code=ExitCode.BAD_INPUT) from exc
