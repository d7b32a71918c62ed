"""Nomad job files as Nomad would run them: parsed with python-hcl2, variables and runtime values filled in.

Only what deploy/nomad/ uses: ``variable`` blocks with defaults (``-var`` values override them), quoted
strings with ``${var.x}`` (HCL2, at submit time) and ``${NOMAD_...}`` / ``${node...}`` (runtime
interpolation, from the values given), ``$${`` as a literal ``${``, heredocs (``<<-`` indentation
removed), and the job / group / task / env / config / template / parameterized / periodic blocks.
"""

from __future__ import annotations

import copy
import functools
import re
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from e2b_artifacts.host.jobs import labelled_blocks, merged_blocks, parse_hcl, unquote

REPO = Path(__file__).resolve().parent.parent
JOBS_DIR = REPO / "deploy" / "nomad"
INTERPOLATION = re.compile(r"\$\{([^}]*)\}")
ESCAPED = "\0dollar-brace\0"


class Unresolved(KeyError):
    """A ``${...}`` reference without a value."""


@dataclass
class Task:
    group: str
    name: str
    driver: str
    command: str
    args: list[str]
    env: dict[str, str]
    templates: dict[str, str]  # destination -> rendered data
    count: int
    raw: dict[str, Any] = field(repr=False, default_factory=dict)

    @property
    def argv(self) -> list[str]:
        return [self.command, *self.args]


@dataclass
class Job:
    path: Path
    name: str
    type: str
    node_pool: str
    tasks: list[Task]
    body: dict[str, Any]
    variables: dict[str, Any]

    def block(self, kind: str) -> dict[str, Any] | None:
        found = merged_blocks(self.body, kind)
        return found or None

    def task(self, name: str) -> Task:
        return next(t for t in self.tasks if t.name == name)


def _heredoc(text: str) -> str | None:
    match = re.fullmatch(r"<<(-?)(\w+)\n(.*)\n\s*\2", text, re.S)
    if match is None:
        return None
    body = match[3] + "\n"
    return textwrap.dedent(body) if match[1] else body


class Evaluator:
    def __init__(self, variables: dict[str, Any], runtime: dict[str, str]) -> None:
        self.variables = variables
        self.runtime = runtime

    def value(self, raw: Any) -> Any:
        if isinstance(raw, list):
            return [self.value(v) for v in raw]
        if isinstance(raw, dict):
            return {k: self.value(v) for k, v in raw.items() if k != "__is_block__"}
        if not isinstance(raw, str):
            return raw
        whole = re.fullmatch(r"\$\{var\.(\w+)\}", raw)
        if whole:  # an unquoted expression: the variable's value, whatever its type
            return self._var(whole[1])
        text = unquote(raw)
        doc = _heredoc(text)
        return self.string(doc if doc is not None else text)

    def string(self, text: str) -> str:
        text = text.replace("$${", ESCAPED)
        text = INTERPOLATION.sub(lambda m: str(self._ref(m[1])), text)
        return text.replace(ESCAPED, "${")

    def _ref(self, ref: str) -> Any:
        if ref.startswith("var."):
            return self._var(ref[4:])
        if ref not in self.runtime:
            raise Unresolved(ref)
        return self.runtime[ref]

    def _var(self, name: str) -> Any:
        if name not in self.variables or self.variables[name] is None:
            raise Unresolved(f"var.{name}")
        return self.variables[name]


def variables_of(parsed: dict[str, Any]) -> dict[str, Any]:
    """Each declared variable's default (None: required, no default)."""
    out: dict[str, Any] = {}
    for name, body in labelled_blocks(parsed, "variable"):
        default = body.get("default")
        out[name] = unquote(default) if isinstance(default, str) else default
    return out


@functools.cache
def _parsed(path: Path, text: str) -> dict[str, Any]:
    return parse_hcl(text)  # python-hcl2 takes ~0.3 s a file: parse each once


def parsed(path: Path) -> dict[str, Any]:
    return copy.deepcopy(_parsed(path, path.read_text()))


def load(path: Path, *, variables: dict[str, Any] | None = None, runtime: dict[str, str] | None = None) -> Job:
    """The job in ``path``; ``variables`` are ``-var`` values, ``runtime`` what Nomad interpolates on the node."""
    doc = parsed(path)
    declared = variables_of(doc)
    unknown = set(variables or {}) - declared.keys()
    if unknown:
        raise KeyError(f"{path.name} declares no variable {sorted(unknown)}")
    values = {**declared, **(variables or {})}
    ev = Evaluator(values, runtime or {})
    ((name, body),) = labelled_blocks(doc, "job")
    tasks = []
    for group, gbody in labelled_blocks(body, "group"):
        count = ev.value(gbody.get("count", 1))
        for task, tbody in labelled_blocks(gbody, "task"):
            config = merged_blocks(tbody, "config")
            env = {k: str(ev.value(v)) for k, v in merged_blocks(tbody, "env").items()}
            in_task = Evaluator(values, {**(runtime or {}), **env})  # Nomad interpolates the task's env in config
            templates = {}
            for item in tbody.get("template", []):
                templates[ev.value(item["destination"])] = ev.value(item["data"])
            tasks.append(Task(group, task, ev.value(tbody.get("driver", '""')),
                              in_task.value(config.get("command", '""')), in_task.value(config.get("args", [])),
                              env, templates, int(count), tbody))
    return Job(path, name, ev.value(body.get("type", '"service"')), ev.value(body.get("node_pool", '"default"')),
               tasks, body, values)
