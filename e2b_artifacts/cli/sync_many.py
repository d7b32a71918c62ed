"""``sync push|pull --all`` and ``--builds FILE``: the many-build mode of ``cmd_sync``, over :mod:`sync_many`."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from ..errors import ArtifactError, ExitCode
from .common import AppState, ProgressLine, emit, progress

DEFAULT_BUILD_JOBS = 2
PARTS_PER_FILE = 8  # the single-build default of --jobs


def run_many(direction: Literal["push", "pull"], app: AppState, location: str, *, everything: bool,
             builds: str | None, with_parents: bool, dry_run: bool, part_size: int, range_size: int,
             jobs: int | None, limit_rate: str | None, endpoint_url: str | None, timeout: float, as_json: bool,
             sql: str | None = None, team_id: str | None = None, envd_version: str | None = None,
             compress: str | None = None, decompress: bool = False) -> ExitCode:
    from ..storage import TransferOptions, open_storage
    from ..sync_many import Selection, sync_many
    from .cmd_sync import parse_rate
    from .verify_all import read_build_id_list

    check_sql_options(sql, team_id)
    build_jobs = jobs or DEFAULT_BUILD_JOBS
    sel = Selection(everything, tuple(read_build_id_list(builds)) if builds else (), with_parents)
    store = open_storage(location, endpoint_url=endpoint_url, timeout=timeout,
                         max_connections=build_jobs * 2 * PARTS_PER_FILE + 4)
    store.watch.notice = progress
    bar = ProgressLine(f"{direction} --{sel.mode}", 0)
    opts = TransferOptions(part_size=part_size << 20, range_size=range_size << 20, concurrency=PARTS_PER_FILE,
                           max_rate=parse_rate(limit_rate), on_bytes=bar.add)

    def set_total(n: int) -> None:
        bar.total = n

    try:
        report = sync_many(direction, app.settings.storage, store, sel, jobs=build_jobs, dry_run=dry_run, opts=opts,
                           compress=compress, decompress=decompress, log=progress, total=set_total)
    finally:
        bar.close()
    lines = []
    for b in report.builds:
        plan = b.plan
        if b.outcome == "failed":
            assert b.error is not None
            lines.append(f"{b.build_id}: FAILED: {b.error.message}")
        elif b.outcome == "skipped":
            lines.append(f"{b.build_id}: not started: {b.skipped_because}")
        elif plan is None:
            continue
        elif b.outcome == "up-to-date":
            lines.append(f"{b.build_id}: up to date ({plan.bytes_total} bytes, nothing sent)")
        else:
            files = sum(1 for f in plan.files if f.action == "send")
            moved = plan.bytes_to_send if dry_run else plan.bytes_sent
            lines.append(f"{b.build_id}: {'would send' if dry_run else 'sent'} {files} of {len(plan.files)} files, "
                         f"{moved} of {plan.bytes_total} bytes" + ("" if dry_run else f" in {b.seconds:.2f} s"))
    lines += [f"warning: {w}" for w in report.warnings]
    counts = report.counts()
    summary = ", ".join(f"{counts[k]} {k}" for k in ("sent", "planned", "up-to-date", "failed", "skipped")
                        if counts.get(k))
    lines.append(f"{direction} --{sel.mode} {'planned' if dry_run else 'done'}: {report.location}: "
                 f"{len(report.builds)} builds ({summary or 'none'}); "
                 + (f"{report.bytes_to_send} bytes to send" if dry_run else
                    f"{report.bytes_sent} bytes in {report.seconds:.2f} s ({report.mb_per_s:.1f} MB/s), "
                    f"{report.jobs} builds at a time"))
    doc = report.to_json()
    synced = [b.build_id for b in report.builds if b.outcome in ("sent", "up-to-date")]
    if sql and not dry_run and synced:
        assert team_id is not None
        doc["sql"] = write_registration_sql(app, Path(sql), team_id, envd_version, synced)
        lines.append(f"wrote {sql}: the rows that register {len(synced)} build(s) for team {team_id} "
                     "(apply: psql -v ON_ERROR_STOP=1 URL -f FILE, or e2b-artifact register --builds)")
    emit(as_json, doc, lines)
    error = report.first_error()
    if error is None:
        return ExitCode.OK
    progress(f"error: {error.message}")
    progress(f"hint: {error.hint}")
    return error.code


def check_positionals(first: str | None, second: str | None, many: bool, direction: str) -> tuple[str | None, str]:
    """(build id, location) from the positional arguments: ``BUILD_ID LOCATION``, or only ``LOCATION`` with
    ``--all`` / ``--builds``."""
    side = "DEST" if direction == "push" else "SRC"
    if many:
        if first is None or second is not None:
            raise ArtifactError(f"with --all or --builds, give only {side}"
                                + (f" (got {first!r} and {second!r})" if second is not None else ""),
                                hint=f"e.g. e2b-artifact sync {direction} --all s3://bucket/prefix",
                                code=ExitCode.USAGE)
        return None, first
    if first is None or second is None:
        raise ArtifactError(f"missing {'BUILD_ID and ' if first is None else ''}{side}",
                            hint=f"e2b-artifact sync {direction} BUILD_ID {side}, or --all / --builds FILE {side}",
                            code=ExitCode.USAGE)
    return first, second


def check_sql_options(sql: str | None, team_id: str | None) -> None:
    """``--sql FILE`` needs ``--team-id``; checked before anything moves."""
    if sql is None:
        if team_id is not None:
            raise ArtifactError("--team-id is only used with --sql FILE", hint="add --sql FILE, or drop --team-id",
                                code=ExitCode.USAGE)
        return
    if team_id is None:
        raise ArtifactError("--sql FILE needs --team-id UUID: the team the templates belong to in the destination "
                            "database", hint="SELECT id, name FROM public.teams; there", code=ExitCode.USAGE)
    from ..db.registration_sql import check_team_id  # only with --sql: 10 ms of imports otherwise spent

    check_team_id(team_id)
    if not Path(sql).absolute().parent.is_dir():
        raise ArtifactError(f"--sql {sql}: directory {Path(sql).absolute().parent} does not exist",
                            hint="create it, or write the file elsewhere", code=ExitCode.BAD_INPUT)


def write_registration_sql(app: AppState, path: Path, team_id: str, envd_version: str | None,
                           build_ids: list[str]) -> dict[str, Any]:
    """Write (temp name, then rename) the SQL registering ``build_ids`` (local builds, parents first)."""
    from ..db.register import build_info
    from ..db.registration_sql import registration_sql
    from ..fsutil import atomic_write_bytes

    infos = []
    for bid in build_ids:
        try:
            infos.append(build_info(app.settings.storage / bid, envd_version=envd_version))
        except ArtifactError as exc:
            if "--template-id" not in exc.message:
                raise ArtifactError(f"--sql: build {bid}: {exc.message}", hint=exc.hint, code=exc.code) from exc
            raise ArtifactError(f"--sql: build {bid}: its metadata.json records no template id",
                                hint="record it (e2b_artifact.template_id, as e2b-artifact build does) and re-run: "
                                "the sync itself is done, a re-run only writes the file", code=exc.code) from exc
    atomic_write_bytes(path, registration_sql(infos, team_id).encode())
    return {"path": str(path), "team_id": team_id, "builds": build_ids,
            "templates": sorted({i.template_id for i in infos})}
