"""``e2b-artifact paths``: where every E2B path points, and why."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import ArtifactError, ExitCode
from ..settings import BY_NAME, inspect_path
from .common import AppState, emit, json_option


@click.command("paths")
@click.option("--create", is_flag=True, help="Create the missing directories.")
@json_option
@click.pass_obj
def command(app: AppState, create: bool, as_json: bool) -> None:
    """Show each E2B path, where its value came from, and whether it exists.

    Exit 1 when a path sits under a mount point absent on this host.
    """
    settings = app.settings
    rows = []
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
                     "state": status.state, "detail": status.detail})
    # Upstream's own defaults (e.g. the /mnt/snapshot-cache tmpfs) only warn; a configured path fails.
    bad = [r for r in rows if r["state"] in ("absent-mount", "not-mounted", "wrong-type") and r["source"] != "default"]
    warned = [r for r in rows if r["state"] in ("absent-mount", "not-mounted")]
    lines = []
    width = max(len(r["name"] or "") for r in rows)
    for r in rows:
        mark = {"exists": "ok", "missing": "missing", "unset": "-", "value": "",
                "absent-mount": "ABSENT MOUNT", "not-mounted": "NOT MOUNTED", "wrong-type": "WRONG TYPE"}[r["state"]]
        value = r["value"] if r["value"] is not None else "(unset)"
        line = f"{r['name']:<{width}}  {value}  [{r['source']}]  {mark}".rstrip()
        if r["detail"] and r["state"] not in ("exists", "value"):
            line += f": {r['detail']}"
        lines.append(line)
    lines += [f"created {c}" for c in created]
    for r in warned:
        if r["state"] in ("absent-mount", "not-mounted"):
            lines.append(f"warning: {r['name']}={r['value']} is under a mount point that is not here; "
                         "set it for this host (environment or --env-file)")
    emit(as_json, {"ok": not bad, "paths": rows, "created": created}, lines)
    if bad:
        raise click.exceptions.Exit(int(ExitCode.CHECK_FAILED))
