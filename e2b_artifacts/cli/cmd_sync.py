"""``e2b-artifact sync push|pull|ls``: move builds between local storage, S3 and GCS."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, TypeVar

import click

from ..errors import ArtifactError, ExitCode
from .common import AppState, ProgressLine, emit, json_option, progress

F = TypeVar("F", bound=Callable[..., Any])


def parse_rate(text: str | None) -> float | None:
    if not text:
        return None
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    factor = units.get(text[-1].upper(), 1)
    number = text[:-1] if text[-1].upper() in units else text
    try:
        return float(number) * factor
    except ValueError as exc:
        raise ArtifactError(f"--limit-rate: cannot read {text!r}", hint="e.g. --limit-rate 50M (bytes/s)",
                            code=ExitCode.USAGE) from exc


def store_options(func: F) -> F:
    func = click.option("--timeout", type=click.FloatRange(1, 3600), default=60, show_default=True,
                        metavar="SECONDS", help="Give up on a request the server has not answered for this long "
                        "(connect and each read; not retried).")(func)
    func = click.option("--endpoint-url", default=None, metavar="URL",
                        help="S3-compatible endpoint (MinIO, Ceph RGW, ...); implies path-style addressing.")(func)
    return json_option(func)


def transfer_options(func: F) -> F:
    for option in reversed([
        click.option("--with-parents", is_flag=True, help="Also sync the parent builds the headers reference."),
        click.option("--dry-run", is_flag=True, help="Show what would be sent; change nothing."),
        click.option("--part-size", type=click.IntRange(1, 5120), default=16, show_default=True,
                     metavar="MiB", help="Multipart upload part size (S3 minimum 5)."),
        click.option("--range-size", type=click.IntRange(1, 5120), default=16, show_default=True,
                     metavar="MiB", help="Download range size."),
        click.option("-j", "--jobs", type=click.IntRange(1, 64), default=None,
                     help="Parallel parts per file (default 8); with --all / --builds: builds at a time "
                     "(default 2; each file then uses 8 parts)."),
        click.option("--limit-rate", default=None, metavar="BYTES/S", help="Cap the throughput, e.g. 50M."),
        click.option("--sql", default=None, metavar="FILE", help="Also write the SQL that registers the synced "
                     "builds in the destination's E2B database (envs, env_builds, env_build_assignments; "
                     "needs --team-id)."),
        click.option("--team-id", default=None, metavar="UUID", help="With --sql: the team owning the templates."),
        click.option("--envd-version", default=None, help="With --sql: envd version for builds whose "
                     "metadata.json has none (wins over metadata.json, as in register)."),
    ]):
        func = option(func)
    return store_options(func)


def _run(direction: Literal["push", "pull"], app: AppState, build_id: str, location: str, endpoint_url: str | None,
         with_parents: bool, dry_run: bool, part_size: int, range_size: int, jobs: int | None,
         limit_rate: str | None, as_json: bool, timeout: float, sql: str | None = None, team_id: str | None = None,
         envd_version: str | None = None, compress: str | None = None, decompress: bool = False) -> ExitCode:
    from .. import sync
    from ..header import chain_text
    from ..storage import TransferOptions, open_storage
    from .sync_many import check_sql_options, write_registration_sql

    check_sql_options(sql, team_id)
    jobs = jobs or 8

    store = open_storage(location, endpoint_url=endpoint_url, max_connections=jobs + 4, timeout=timeout)
    store.watch.notice = progress
    bar = ProgressLine(f"{direction} {build_id}", 0)
    opts = TransferOptions(part_size=part_size << 20, range_size=range_size << 20, concurrency=jobs,
                           max_rate=parse_rate(limit_rate), on_bytes=bar.add)
    form: dict[str, Any] = {"compress": compress} if direction == "push" else {"decompress": decompress}
    run = sync.push if direction == "push" else sync.pull
    # the bar's total is the plan's; a plan is cheap (no data read), so make it first
    preview = run(app.settings.storage, build_id, store, with_parents=with_parents, dry_run=True, **form)
    bar.total = sum(b.bytes_to_send for b in preview.builds)
    try:
        report = preview if dry_run else run(app.settings.storage, build_id, store, with_parents=with_parents,
                                             opts=opts, log=progress, **form)
    finally:
        bar.close()
    lines = []
    for plan in report.builds:
        sent = sum(1 for f in plan.files if f.action == "send")
        verb = "would send" if dry_run else "sent"
        if plan.state == "up-to-date":
            lines.append(f"{plan.build_id}: up to date ({plan.bytes_total} bytes, nothing sent)")
        else:
            moved = plan.bytes_to_send if dry_run else plan.bytes_sent
            lines.append(f"{plan.build_id}: {verb} {sent} of {len(plan.files)} files, "
                         f"{moved} of {plan.bytes_total} bytes")
            if dry_run:
                lines += [f"  {f.action:4}  {f.name}  ({f.reason})" for f in plan.files]
        lines += [f"  chain of {chain_text(view)}" for view in plan.chain]
    lines.append(f"{direction} {'planned' if dry_run else 'done'}: {report.location} "
                 f"({report.bytes_sent} bytes in {report.seconds:.2f} s, {report.mb_per_s:.1f} MB/s)")
    doc = report.to_json()
    if sql and not dry_run:
        assert team_id is not None
        synced = [plan.build_id for plan in report.builds]
        doc["sql"] = write_registration_sql(app, Path(sql), team_id, envd_version, synced)
        lines.append(f"wrote {sql}: the rows that register {len(synced)} build(s) for team {team_id}")
    emit(as_json, doc, lines)
    return ExitCode.OK


@click.group("sync")
def command() -> None:
    """Push and pull template builds between local storage, S3 and GCS.

    Every byte is checked against the build's integrity manifest; metadata.json
    is published last, so an interrupted push never looks like a complete build.
    Locations: a directory (path or file:///path), s3://BUCKET/PREFIX
    (botocore; --endpoint-url for S3-compatible stores) or gs://BUCKET/PREFIX
    (google-cloud-storage; STORAGE_EMULATOR_HOST honored).
    """


def _transfer_command(direction: Literal["push", "pull"], location: str, doc: str) -> None:
    """Add ``sync push`` or ``sync pull``: BUILD_ID, then the other side (``location``: DEST or SRC)."""

    form = click.option("--compress", type=click.Choice(["zstd", "lz4"]), default=None,
                        help="Send the builds in upstream's compressed form (2 MiB frames, V4 headers with frame "
                        "tables; zero blocks not sent).") if direction == "push" else click.option(
        "--decompress", is_flag=True, help="Put a build stored compressed in place in its plain form (the very "
        "files it was compressed from, when this tool compressed it).")

    @command.command(direction, help=doc)
    @click.argument("build_id", required=False)
    @click.argument(location, required=False)
    @click.option("--all", "everything", is_flag=True,
                  help="Every build " + ("in local storage" if direction == "push" else f"at {location.upper()}")
                  + ", parents before children (then give only " + location.upper() + ").")
    @click.option("--builds", "builds", default=None, metavar="FILE",
                  help="The build ids in FILE, one a line ('-': stdin; # comments); with --with-parents their "
                  "ancestors too.")
    @transfer_options
    @form
    @click.pass_obj
    def run(app: AppState, /, build_id: str | None, everything: bool, builds: str | None,
            **kwargs: Any) -> ExitCode:
        from .sync_many import check_positionals, run_many

        if everything and builds:
            raise ArtifactError("--all and --builds exclude each other", hint="give one of them",
                                code=ExitCode.USAGE)
        many = everything or builds is not None
        bid, where = check_positionals(build_id, kwargs.pop(location), many, direction)
        if bid is None:
            return run_many(direction, app, where, everything=everything, builds=builds, **kwargs)
        return _run(direction, app, bid, where, **kwargs)


_transfer_command("push", "dest", "Send BUILD_ID from local storage to DEST: data files, then the manifest, "
                  "then metadata.json.")
_transfer_command("pull", "src", "Fetch BUILD_ID from SRC into local storage (staged, verified, then renamed "
                  "into place).")


@command.command("ls")
@click.argument("location")
@store_options
def ls_command(location: str, endpoint_url: str | None, as_json: bool, timeout: float) -> ExitCode:
    """List the builds at LOCATION and whether each is complete (metadata.json present)."""
    from ..storage import open_storage
    from ..storage.local import LocalStorage
    from ..sync import list_builds

    store = open_storage(location, endpoint_url=endpoint_url, timeout=timeout)
    store.watch.notice = progress
    if isinstance(store, LocalStorage) and not store.root.is_dir():
        raise ArtifactError(f"{store.root} is not a directory", hint="check the path (a typo, or a mount that is "
                            "not there: e2b-artifact paths)", code=ExitCode.BAD_INPUT)
    builds = list_builds(store)
    lines = [f"{b.build_id}  {'complete' if b.complete else 'INCOMPLETE'}"
             f"{'' if b.has_manifest else ' (no manifest)'}  {b.files} files  {b.bytes} bytes" for b in builds]
    if not builds:
        lines = [f"no builds at {location}"]
    emit(as_json, {"ok": True, "location": location, "builds": [b.to_json() for b in builds]}, lines)
    return ExitCode.OK
