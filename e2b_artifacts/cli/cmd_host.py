"""``e2b-artifact host check``: can this host build and start templates?"""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import ExitCode
from .common import AppState, emit, json_option, verdict


@click.group("host")
def command() -> None:
    """Checks of the machine that runs E2B (not of a template)."""


@command.command("check")
@click.option("--job", "jobs", multiple=True, type=click.Path(path_type=Path), metavar="FILE",
              help="A Nomad job file (orchestrator.hcl, template-manager.hcl, client-proxy.hcl, api.hcl); repeatable.")
@click.option("--root", type=click.Path(path_type=Path, file_okay=False), default=Path("/"), show_default=True,
              help="Read the host's files under DIR (a copy of another host's tree); live probes run only for /.")
@click.option("--user", default="root", show_default=True, help="The user the orchestrator runs as.")
@click.option("--probe-kernel", type=click.Path(path_type=Path, dir_okay=False, exists=True), default=None,
              help="Guest kernel for the KVM probe boot (default: the first under HOST_KERNELS_DIR).")
@json_option
@click.pass_obj
def check(app: AppState, jobs: tuple[Path, ...], root: Path, user: str, probe_kernel: Path | None,
          as_json: bool) -> ExitCode:
    """One line per check: ok / warn / FAIL, why, and the command or setting that fixes it.

    Exit 0 when nothing failed, 1 when a check failed, 3 when a job file cannot be read.
    """
    from ..host import HostView, check_host, load_jobs

    parsed = load_jobs(jobs)
    view = HostView(root=root, settings=app.settings, user=user, probe_kernel=probe_kernel)
    if not view.is_real:
        view.nomad_api = None  # the agent on this machine says nothing about another host's tree
    report = check_host(view, parsed)
    counts = report.counts()
    lines = [f.line() for f in report.findings]
    lines.append(f"host {root}: {counts['ok']} ok, {counts['warn']} warn, {counts['FAIL']} FAIL -> "
                 f"{'FAILED' if report.failed() else 'passed'}")
    emit(as_json, report.to_dict(), lines)
    return verdict(not report.failed())
