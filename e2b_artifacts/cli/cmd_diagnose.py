"""``e2b-artifact diagnose``: known failures in a log, with cause and fix."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ..errors import ExitCode
from .common import emit, json_option, verdict


@click.command("diagnose")
@click.argument("logfile", default="-", metavar="[LOGFILE|-]")
@click.option("--rules", "rules_path", type=click.Path(path_type=Path),
              help="Use this knowledge base instead of the bundled one (same JSON shape).")
@click.option("--list-rules", is_flag=True, help="List the known failures and exit.")
@json_option
def command(logfile: str, rules_path: Path | None, list_rules: bool, as_json: bool) -> ExitCode:
    """Match a log (guest console, orchestrator, API, Nomad) against known failures.

    Reads LOGFILE, or stdin with '-' (the default). Prints each matching line with
    its cause, the fix and the command that helps. Exit 1 when something matched,
    0 when nothing did.
    """
    from ..diagnose import diagnose_log, load_rules, open_log

    rules = load_rules(rules_path)
    if list_rules:
        emit(as_json, {"ok": True, "rules": [{"id": r.id, "title": r.title, "patterns": [p.pattern for p in r.patterns],
                                             "commands": list(r.commands)} for r in rules]},
             [f"{r.id}: {r.title}" for r in rules])
        return ExitCode.OK
    if logfile == "-":
        result = diagnose_log(sys.stdin, rules)
        source = "stdin"
    else:
        with open_log(Path(logfile)) as fh:
            result = diagnose_log(fh, rules)
        source = logfile
    emit(as_json, {"ok": not result.matches, "source": source, **result.to_json()}, result.text_lines(source))
    return verdict(not result.matches)
