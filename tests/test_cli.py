"""The CLI's shared machinery: one exit channel, --json as an option of the command, one progress line."""

from __future__ import annotations

import json
import threading
import typing
from pathlib import Path

import click
import pytest

from e2b_artifacts.cli import cli as root_group
from e2b_artifacts.cli.common import ProgressLine
from e2b_artifacts.errors import ExitCode
from tests.conftest import cli


def leaf_commands(group: click.Group, ctx: click.Context, prefix: str = "") -> dict[str, click.Command]:
    found: dict[str, click.Command] = {}
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        assert command is not None, name
        if isinstance(command, click.Group):
            found.update(leaf_commands(command, ctx, f"{prefix}{name} "))
        else:
            found[prefix + name] = command
    return found


def test_every_command_returns_an_exit_code() -> None:
    commands = leaf_commands(root_group, click.Context(root_group))
    assert {"verify", "boot", "kernel check", "db check", "sync push", "paths"} <= set(commands)
    for name, command in commands.items():
        assert command.callback is not None, name
        assert typing.get_type_hints(command.callback)["return"] is ExitCode, name
        assert any(p.name == "as_json" for p in command.params), f"{name} takes no --json"


def test_json_is_read_from_the_command_options_only(tmp_path: Path) -> None:
    as_option = cli("--storage", tmp_path, "verify", "no-such-build", "--json")
    doc = json.loads(as_option.stdout)
    assert as_option.returncode == 3 and doc["hint"]
    assert (doc["ok"], doc["exit_code"], doc["error"]) == (False, 3, f"build directory {tmp_path / 'no-such-build'} "
                                                                      "not found")
    as_argument = cli("--storage", tmp_path, "verify", "--", "--json")  # a build id that reads like the flag
    assert as_argument.returncode == 3 and as_argument.stdout == ""
    assert f"error: build directory {tmp_path / '--json'} not found" in as_argument.stderr
    as_value = cli("--env-file", "--json", "paths")  # the value of another option
    assert as_value.returncode == 3 and as_value.stdout == ""
    assert "error: cannot read env file --json" in as_value.stderr


def test_verdicts_and_usage_errors_share_the_exit_channel(tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    log.write_text("Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)\n")
    assert cli("diagnose", log).returncode == ExitCode.CHECK_FAILED
    log.write_text("all quiet\n")
    assert cli("diagnose", log).returncode == ExitCode.OK
    usage = cli("diagnose", "--no-such-flag", "--json")
    assert usage.returncode == ExitCode.USAGE and "No such option" in usage.stderr


def test_progress_line_counts_parallel_adds_and_running_totals(capsys: pytest.CaptureFixture[str]) -> None:
    bar = ProgressLine("push b1", total=4 << 20)

    def send() -> None:
        for _ in range(1024):
            bar.add(1024)

    workers = [threading.Thread(target=send) for _ in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    bar.close()
    assert capsys.readouterr().err.splitlines()[-1].startswith("push b1: 4.0/4.0 MiB 100% ")
    download = ProgressLine("fetch")
    download.update(3 << 20, None)
    download.close()
    assert capsys.readouterr().err.splitlines()[-1].startswith("fetch: 3.0 MiB ")
    ProgressLine("nothing").close()
    assert capsys.readouterr().err == ""
