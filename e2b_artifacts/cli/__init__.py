"""The ``e2b-artifact`` command line: a thin layer over the library modules.

Each command lives in ``cli/cmd_<name>.py`` (dashes become underscores) and is
imported only when it runs, so start-up stays cheap.
"""

from __future__ import annotations

import gc
import importlib
import json
import logging
import os
import pkgutil
import sys
import traceback
from pathlib import Path

import click

from .. import __version__
from ..errors import ArtifactError, ExitCode
from .common import AppState

_PKG_DIR = Path(__file__).parent


class LazyGroup(click.Group):
    """Finds ``cmd_*.py`` modules on disk and imports one only when it is used."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        names = [m.name[4:].replace("_", "-") for m in pkgutil.iter_modules([str(_PKG_DIR)])
                 if m.name.startswith("cmd_")]
        return sorted(names)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.list_commands(ctx):
            return None
        module = importlib.import_module(f"{__name__}.cmd_{cmd_name.replace('-', '_')}")
        command = module.command
        assert isinstance(command, click.Command)
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="e2b-artifact")
@click.option("--env-file", type=click.Path(path_type=Path), default=None,
              help="KEY=VALUE file like E2B's .env.local (below flags and the environment).")
@click.option("--set", "overrides", multiple=True, metavar="VAR=VALUE",
              help="Set an E2B path variable, e.g. --set HOST_KERNELS_DIR=/fc-kernels (repeatable).")
@click.option("--storage", type=click.Path(path_type=Path), default=None,
              help="Shortcut for --set LOCAL_TEMPLATE_STORAGE_BASE_PATH=PATH.")
@click.option("--debug", is_flag=True, help="Log every external command and show tracebacks.")
@click.pass_context
def cli(ctx: click.Context, env_file: Path | None, overrides: tuple[str, ...], storage: Path | None,
        debug: bool) -> None:
    """Build, verify and repair E2B template artifacts (Firecracker microVMs).

    Paths follow E2B's own variables (see `e2b-artifact paths`). Every command
    takes --json; exit codes are listed in the README.
    """
    app = ctx.ensure_object(AppState)  # main() passes its own, to read --json and --debug after a failure
    app.debug = debug
    if debug:
        logging.basicConfig(level=logging.DEBUG, format="debug: %(message)s", stream=sys.stderr)
    flags: dict[str, str] = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise ArtifactError(f"--set expects VAR=VALUE, got {item!r}",
                                hint="e.g. --set LOCAL_TEMPLATE_STORAGE_BASE_PATH=/srv/templates",
                                code=ExitCode.USAGE)
        flags[key] = value
    if storage is not None:
        flags["LOCAL_TEMPLATE_STORAGE_BASE_PATH"] = str(storage)
    app.flags, app.env_file = flags, env_file


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point: one exit channel.

    A command returns its :class:`ExitCode`; an :class:`ArtifactError` (or any other failure)
    becomes one ``error:`` line, a ``hint:`` line and its code, plus a JSON document on stdout
    when the command was given ``--json``.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    app = AppState()
    try:
        rc = cli.main(args=args, prog_name="e2b-artifact", standalone_mode=False, obj=app)
    except ArtifactError as exc:
        return _fail(exc.message, exc.hint, exc.code, app)
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.exceptions.Abort:
        return _fail("aborted", "", ExitCode.USAGE, app)
    except click.ClickException as exc:
        hint = "see e2b-artifact --help, or COMMAND --help"
        return _fail(exc.format_message(), hint, ExitCode.USAGE, app)
    except KeyboardInterrupt:
        return _fail("interrupted", "nothing was replaced: outputs are written to temp names first",
                     ExitCode.USAGE, app)
    except Exception as exc:
        return _fail(f"internal error: {type(exc).__name__}: {exc}",
                     "rerun with --debug and report the traceback", ExitCode.INTERNAL, app)
    # click returns a command's value, or the code of the Exit it raised for --help and --version
    return int(rc) if isinstance(rc, int) else ExitCode.OK


def _fail(message: str, hint: str, code: ExitCode, app: AppState) -> int:
    if (app.debug or os.environ.get("E2B_ARTIFACT_DEBUG") == "1") and sys.exc_info()[0] is not None:
        traceback.print_exc()
    click.echo(f"error: {message}", err=True)
    if hint:
        click.echo(f"hint: {hint}", err=True)
    if app.json:
        click.echo(json.dumps({"ok": False, "error": message, "hint": hint, "exit_code": int(code)}))
    return int(code)


def entry() -> None:
    # The collector's default, a pass per 700 new container objects, ran ~130 times while an s3:// command
    # started (importing botocore, making its client), one full pass among them: 80-100 ms of a no-op push's
    # 580 ms (hyperfine). A run's few reference cycles are still collected, about 70 times less often.
    gc.set_threshold(50_000, 20, 10)
    sys.exit(main())
