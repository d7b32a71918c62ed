"""``e2b-artifact paths``: where every E2B path points, and why."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import ArtifactError, ExitCode
from ..settings import BY_NAME, inspect_path
from .common import AppState, emit, json_option, verdict

MARKS = {"exists": "ok", "missing": "missing", "unset": "-", "value": "",
         "absent-mount": "ABSENT MOUNT", "not-mounted": "NOT MOUNTED", "wrong-type": "WRONG TYPE"}


@click.command("paths")
@click.option("--create", is_flag=True, help="Create the missing directories.")
@json_option
@click.pass_obj
def command(app: AppState, create: bool, as_json: bool) -> ExitCode:
    """Show each E2B path, where its value came from, and whether it exists.

    Exit 1 when a path sits under a mount point absent on this host.
    """
    settings = app.settings
    rows: list[dict[str, str | None]] = []
    created: list[str] = []
    for resolved in settings.all():
        setting = BY_NAME[resolved.name]
        status = inspect_path(setting, resolved.value)
        if create and status.state == "missing" and setting.kind == "dir" and resolved.value:
            try:
                Path(resolved.value).mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ArtifactError(f"cannot create {resolved.value}: {exc.strerror}",
                                    hint="check permissions, or point the variable elsewhere",
                                    code=ExitCode.BAD_INPUT) from exc
            created.append(resolved.value)
            status = inspect_path(setting, resolved.value)
        rows.append({"name": resolved.name, "value": resolved.value, "source": resolved.source,
                     "state": status.state, "detail": status.detail, "about": setting.about})
    # Upstream's own defaults (e.g. the /mnt/snapshot-cache tmpfs) only warn; a configured path fails.
    bad = [r for r in rows if r["state"] in ("absent-mount", "not-mounted", "wrong-type") and r["source"] != "default"]
    lines = []
    width = max(len(str(r["name"])) for r in rows)
    for r in rows:
        state = str(r["state"])
        value = r["value"] if r["value"] is not None else "(unset)"
        line = f"{r['name']:<{width}}  {value}  [{r['source']}]  {MARKS[state]}".rstrip()
        if r["detail"] and state not in ("exists", "value"):
            line += f": {r['detail']}"
        lines += [line, f"{'':<{width}}  {r['about']}"]
    lines += [f"created {c}" for c in created]
    lines += [f"warning: {r['name']}={r['value']} is under a mount point that is not here; "
              "set it for this host (environment or --env-file)"
              for r in rows if r["state"] in ("absent-mount", "not-mounted")]
    emit(as_json, {"ok": not bad, "paths": rows, "created": created}, lines)
    return verdict(not bad)
