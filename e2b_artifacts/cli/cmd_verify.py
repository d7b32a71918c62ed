"""``e2b-artifact verify``: every static check of a build, one line each, with the fixing command.

``verify --all [LOCATION]`` and ``verify --merge PREFIX`` run it over every build of a storage
(``cli/verify_all.py``, over ``e2b_artifacts.fleet``).
"""

from __future__ import annotations

from typing import NoReturn

import click

from ..errors import ArtifactError, ExitCode
from .common import AppState, emit, json_option, verdict


@click.command("verify")
@click.argument("build", required=False, metavar="BUILD | --all [LOCATION] | --merge PREFIX")
@click.option("--strict", is_flag=True, help="Warnings fail too (exit 1).")
@click.option("--quick", is_flag=True, help="Skip hashing file data for the integrity manifest (sizes only); "
                                            "with --all on s3:// or gs://, read no data at all.")
@click.option("--fix", is_flag=True,
              help="Repair what is safe: rewrite camelCase/v1 metadata as version 2 (original kept beside it), "
                   "record a missing manifest, cold-start a failing snapshot (undo with restore).")
@click.option("--all", "all_builds", is_flag=True,
              help="Verify every build of LOCATION (a directory, s3://BUCKET/PREFIX, gs://BUCKET/PREFIX; default: "
                   "the orchestrator's template storage, TEMPLATE_STORAGE_URL or STORAGE_PROVIDER).")
@click.option("-j", "--jobs", type=click.IntRange(1, 64), default=None, help="--all: builds verified at once "
                                                                              "[default: 1].")
@click.option("--shard", default=None, metavar="I/N", help="--all: only the builds of shard I of N (split by a hash "
                                                          "of the build id).")
@click.option("--builds", default=None, metavar="FILE", help="--all: only these build ids (one a line; - for stdin).")
@click.option("--results", default=None, metavar="PREFIX",
              help="--all: also write the JSON lines to PREFIX/shard-I-of-N.jsonl (a directory, s3://, gs://).")
@click.option("--merge", default=None, metavar="PREFIX", help="Combine the shards' results files at PREFIX into "
                                                              "one summary.")
@click.option("--wait", type=click.FloatRange(0, 7 * 86400), default=0, metavar="SECONDS",
              help="--merge: wait up to this long for every shard's results.")
@click.option("--endpoint-url", default=None, metavar="URL", help="S3-compatible endpoint (MinIO, Ceph RGW, ...).")
@click.option("--timeout", type=click.FloatRange(1, 3600), default=60, show_default=True, metavar="SECONDS",
              help="Give up on an object store request unanswered for this long.")
@json_option
@click.pass_obj
def command(app: AppState, build: str | None, strict: bool, quick: bool, fix: bool, all_builds: bool,
            jobs: int | None, shard: str | None, builds: str | None, results: str | None, merge: str | None,
            wait: float, endpoint_url: str | None, timeout: float, as_json: bool) -> ExitCode:
    """Verify BUILD (a build id under the template storage, or a directory path).

    Exit 0 when nothing failed, 1 when a check failed (--strict: or warned). With --all: 1 when a
    build failed or could not be verified; --json prints JSON lines (one per build, then a summary).
    """
    fleet = {"jobs": jobs, "shard": shard, "builds": builds, "results": results}
    if all_builds and merge is not None:
        _usage("--all and --merge are two different runs",
               "verify --all ... --results PREFIX, then verify --merge PREFIX")
    if all_builds or merge is not None:
        if fix:
            _usage("--fix repairs one build at a time", "verify --fix BUILD")
        from .verify_all import run_all, run_merge

        if merge is not None:
            given = [f"--{k}" for k, v in fleet.items() if v is not None] + (["BUILD"] if build else [])
            if given:
                _usage(f"--merge does not take {', '.join(given)}", "verify --merge PREFIX [--wait SECONDS]")
            return run_merge(merge, strict=strict, wait=wait, endpoint_url=endpoint_url, timeout=timeout,
                             as_json=as_json)
        return run_all(app, build, quick=quick, strict=strict, jobs=jobs or 1, shard=shard, builds=builds,
                       results=results, endpoint_url=endpoint_url, timeout=timeout, as_json=as_json)
    given = [f"--{k}" for k, v in fleet.items() if v is not None] + (["--wait"] if wait else []) + (
        ["--endpoint-url"] if endpoint_url else [])
    if given:
        _usage(f"{', '.join(given)} only go with --all or --merge", "verify --all LOCATION --jobs 4 ...")
    if build is None:
        _usage("missing BUILD", "verify BUILD, verify --all [LOCATION], or verify --merge PREFIX")
    from ..verify import verify

    report = verify(app.settings.build_dir(build), app.settings, quick=quick, fix=fix)
    failed = report.failed(strict)
    counts = report.counts()
    lines = [f"fixed: {line}" for line in report.fixed]
    lines += [f.line() for f in report.findings]
    lines.append(f"{report.build_dir}: {counts['ok']} ok, {counts['warn']} warn, {counts['FAIL']} FAIL"
                 f"{' (strict)' if strict else ''} -> {'FAILED' if failed else 'passed'}")
    emit(as_json, report.to_dict(strict), lines)
    return verdict(not failed)


def _usage(message: str, hint: str) -> NoReturn:
    raise ArtifactError(message, hint=f"e.g. e2b-artifact {hint}", code=ExitCode.USAGE)
