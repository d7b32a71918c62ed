"""``e2b-artifact inject``: put envd into an ext4 image, rootless, all or nothing."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import ExitCode
from .common import AppState, emit, json_option, progress


@click.command("inject")
@click.argument("image", type=click.Path(path_type=Path))
@click.option("--envd", type=click.Path(path_type=Path),
              help="envd binary [default: the --envd-version staged beside $HOST_ENVD_PATH, else $HOST_ENVD_PATH].")
@click.option("--envd-version", metavar="V",
              help="Without --envd: inject envd.V or V/envd from beside $HOST_ENVD_PATH, as upstream stages them.")
@click.option("--init", "init_mode", type=click.Choice(["envd", "systemd"]), default="envd", show_default=True,
              help="envd: /sbin/init -> /usr/bin/envd. systemd: enabled envd.service, /sbin/init kept.")
@click.option("--no-grow", is_flag=True, help="Fail instead of growing a full image with resize2fs.")
@click.option("--strict", is_flag=True, help="Refuse an envd that is not a static ELF (otherwise a warning).")
@json_option
@click.pass_obj
def command(app: AppState, image: Path, envd: Path | None, envd_version: str | None, init_mode: str, no_grow: bool,
            strict: bool, as_json: bool) -> ExitCode:
    """Install envd as /usr/bin/envd in IMAGE and make it start.

    Idempotent; on failure IMAGE is left byte-identical.
    """
    from ..envdpath import resolve as resolve_envd
    from ..inject import inject, read_envd
    from ..sourcecheck import check_envd

    host_envd = app.settings["HOST_ENVD_PATH"]
    choice = resolve_envd(envd, envd_version, host_envd.path, host_envd.source)
    if choice.looked_for:
        progress(f"envd: {choice.path} ({choice.chosen_by})")
    check_envd(choice.path, read_envd(choice.path), strict=strict, warn=progress)
    result = inject(image, choice.path, init="systemd" if init_mode == "systemd" else "envd", grow=not no_grow)
    lines = [f"{image}: {a}" for a in result.actions] or [f"{image}: already up to date, nothing written"]
    emit(as_json, {**result.to_json(), "envd": choice.to_json()}, lines)
    return ExitCode.OK
