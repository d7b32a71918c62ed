"""deploy/nomad/: the job files parse (python-hcl2), carry the orchestrator's environment and the node pool as
a variable, every command line in them goes through the CLI's own click parser, and the ones that can run
here run for real: the dispatch script's three actions and both groups of the sharded job on a test
storage, host check on this host. (No Nomad agent runs here: Nomad's own runtime interpolation of
``${NOMAD_ALLOC_INDEX}`` and ``${node.unique.name}`` is done by tests/nomad.py.)
"""

from __future__ import annotations

import json
import os
import shlex
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest

from e2b_artifacts.cli import cli
from e2b_artifacts.cli.common import AppState
from tests.nomad import JOBS_DIR, REPO, Job, Task, load, parsed, variables_of
from tests.storage.fleet import break_snapfile_crc, make_fleet, tiny_sample

JOB_FILES = sorted(JOBS_DIR.glob("*.nomad.hcl"))
REQUIRED = {"run": "20260830T000000Z", "results": "/srv/e2b-artifact-results",
            "postgres_connection_string": "postgresql://postgres:pw@db:5432/postgres"}
RUNTIME = {"node.unique.name": "client-1", "NOMAD_ALLOC_INDEX": "0"}
# the orchestrator job's storage and path variables (iac/modules/job-orchestrator/jobs/orchestrator.hcl,
# packages/orchestrator/pkg/cfg/storage.go) that e2b-artifact reads
ORCHESTRATOR_ENV = {"NODE_ID", "STORAGE_PROVIDER", "TEMPLATE_BUCKET_NAME", "TEMPLATE_STORAGE_URL",
                    "LOCAL_TEMPLATE_STORAGE_BASE_PATH", "AWS_REGION", "SHARED_CHUNK_CACHE_PATH", "HOST_KERNELS_DIR",
                    "FIRECRACKER_VERSIONS_DIR", "ORCHESTRATOR_BASE_PATH"}


def job(name: str, runtime: dict[str, str] | None = None, **variables: Any) -> Job:
    wanted = {k: v for k, v in REQUIRED.items() if k in _declared(name)}
    return load(JOBS_DIR / name, variables={**wanted, **variables}, runtime={**RUNTIME, **(runtime or {})})


def _declared(name: str) -> set[str]:
    return set(variables_of(parsed(JOBS_DIR / name)))


def parse_command_line(argv: list[str]) -> click.Context:
    """``argv`` (without the program) through the CLI's click parser, down to the leaf command; runs nothing."""
    ctx = cli.make_context("e2b-artifact", list(argv), obj=AppState())
    command: click.Command = cli
    while isinstance(command, click.Group):
        rest = [*getattr(ctx, "_protected_args", []), *ctx.args]
        name, sub, rest = command.resolve_command(ctx, rest)
        assert name is not None and sub is not None
        ctx = sub.make_context(name, rest, parent=ctx)
        command = sub
    return ctx


def test_the_four_jobs_are_there() -> None:
    assert [p.name for p in JOB_FILES] == ["e2b-artifact-audit.nomad.hcl", "e2b-artifact-host-check.nomad.hcl",
                                           "e2b-artifact-verify-all.nomad.hcl", "e2b-artifact.nomad.hcl"]


@pytest.mark.parametrize("path", JOB_FILES, ids=lambda p: p.name)
def test_job_carries_the_node_pool_variable_and_the_orchestrator_environment(path: Path) -> None:
    submitted = job(path.name, node_pool="builders", template_bucket_name="tpl-bucket", storage_provider="AWSBucket")
    assert submitted.node_pool == "builders"
    assert job(path.name).node_pool == "default"
    for task in submitted.tasks:
        assert task.driver == "raw_exec"  # as root, like the orchestrator: host check sees what it sees
        assert task.env.keys() >= ORCHESTRATOR_ENV, ORCHESTRATOR_ENV - task.env.keys()
        assert task.env["STORAGE_PROVIDER"] == "AWSBucket" and task.env["TEMPLATE_BUCKET_NAME"] == "tpl-bucket"
        assert task.env["NODE_ID"] == "client-1"
        group = next(b for g in submitted.body["group"] for label, b in g.items() if label.strip('"') == task.group)
        assert group["restart"][0]["attempts"] == 0 and group["reschedule"][0]["attempts"] == 0  # a verdict, no retry
    with pytest.raises(KeyError):
        job(path.name, no_such_variable="x")


def test_job_types_and_schedules() -> None:
    dispatch = job("e2b-artifact.nomad.hcl")
    assert dispatch.type == "batch"
    parameterized = dispatch.block("parameterized")
    assert parameterized is not None
    assert [m.strip('"') for m in parameterized["meta_required"]] == ["action"]
    assert sorted(m.strip('"') for m in parameterized["meta_optional"]) == ["builds", "location"]
    sharded = job("e2b-artifact-verify-all.nomad.hcl", shards=6)
    assert sharded.type == "batch" and sharded.task("verify").count == 6 and sharded.task("merge").count == 1
    assert job("e2b-artifact-host-check.nomad.hcl").type == "sysbatch"  # once on every node of the pool
    audit = job("e2b-artifact-audit.nomad.hcl")
    periodic = audit.block("periodic")
    assert periodic is not None and periodic["prohibit_overlap"] is True
    with pytest.raises(KeyError, match=r"var\.run"):  # each run must name itself
        load(JOBS_DIR / "e2b-artifact-verify-all.nomad.hcl", variables={"results": "/r"}, runtime=RUNTIME)


def test_sharded_job_command_lines_parse() -> None:
    for index in range(3):
        verify = job("e2b-artifact-verify-all.nomad.hcl", {"NOMAD_ALLOC_INDEX": str(index)}, shards=3).task("verify")
        ctx = parse_command_line(verify.args)
        assert ctx.command.name == "verify"
        assert ctx.params["all_builds"] and ctx.params["shard"] == f"{index}/3"
        assert ctx.params["results"] == "/srv/e2b-artifact-results/20260830T000000Z"
    merge = parse_command_line(job("e2b-artifact-verify-all.nomad.hcl").task("merge").args)
    assert merge.params["merge"] == "/srv/e2b-artifact-results/20260830T000000Z" and merge.params["wait"] == 21600


def test_host_check_command_line_parses() -> None:
    ctx = parse_command_line(job("e2b-artifact-host-check.nomad.hcl").task("host-check").args)
    assert ctx.info_name == "check" and ctx.params["as_json"]


def test_audit_command_line_parses() -> None:
    task = job("e2b-artifact-audit.nomad.hcl").task("audit")
    assert task.args == ["audit", "--db", REQUIRED["postgres_connection_string"], "--json"]
    ctx = parse_command_line(task.args)
    assert ctx.command.name == "audit" and ctx.params["url"] == REQUIRED["postgres_connection_string"]
    assert ctx.params["as_json"] and not ctx.params["fix"] and ctx.params["location"] is None  # storage: the env


# ---- the dispatch script, recorded and for real ---------------------------------------------------------

def _script_dir(task: Task, tmp: Path) -> Path:
    task_dir = tmp / f"task-{len(list(tmp.glob('task-*')))}"
    (task_dir / "local").mkdir(parents=True)
    for dest, data in task.templates.items():
        (task_dir / dest).write_text(data)
    return task_dir


def _run_dispatch(task: Task, tmp: Path, e2b_artifact: Path, meta: dict[str, str], payload: str | None = None,
                  extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    task_dir = _script_dir(task, tmp)
    if payload is not None:
        (task_dir / "local" / "payload-builds.txt").write_text(payload)
    env = {**os.environ, **task.env, **(extra_env or {}), "E2B_ARTIFACT": str(e2b_artifact),
           **{f"NOMAD_META_{k}": v for k, v in meta.items()}}
    return subprocess.run([task.command, *task.args], cwd=task_dir, env=env, capture_output=True, text=True,
                          check=False)


def _executable(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.fixture
def recorder(tmp_path: Path) -> tuple[Path, Path]:
    """An E2B_ARTIFACT that only writes down its arguments (one JSON list a line)."""
    log = tmp_path / "calls.jsonl"
    script = _executable(tmp_path / "record", f"#!{sys.executable}\nimport json, sys\n"
                                              f"open({str(log)!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n")
    return script, log


@pytest.fixture
def real_cli(tmp_path: Path) -> Path:
    """An E2B_ARTIFACT that is this checkout's CLI."""
    return _executable(tmp_path / "e2b-artifact", f"#!/bin/sh\nPYTHONPATH={shlex.quote(str(REPO))} exec "
                                                  f"{shlex.quote(sys.executable)} -m e2b_artifacts \"$@\"\n")


def test_every_dispatch_action_parses(recorder: tuple[Path, Path], tmp_path: Path) -> None:
    script, log = recorder
    task = job("e2b-artifact.nomad.hcl").task("e2b-artifact")
    assert task.command == "/bin/sh" and task.args == ["local/run.sh"]
    ids = ["3f1c9a52-0000-4000-8000-000000000001", "3f1c9a52-0000-4000-8000-000000000002"]
    for meta in ({"action": "verify", "builds": ",".join(ids)},
                 {"action": "verify", "builds": ids[0], "location": "gs://tpl/prod"},
                 {"action": "sync-push", "builds": " ".join(ids), "location": "s3://other/templates"},
                 {"action": "sync-pull", "location": "gs://tpl/prod"}):
        proc = _run_dispatch(task, tmp_path, script, meta, payload=None if meta.get("builds") else ids[1] + "\n")
        assert proc.returncode == 0, proc.stderr
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    contexts = [parse_command_line(c) for c in calls]
    assert [(c.command.name, c.params.get("build"), c.params.get("build_id"),
             c.params.get("dest") or c.params.get("src")) for c in contexts] == [
        ("verify", None, None, None), ("verify", "gs://tpl/prod", None, None),
        ("push", None, ids[0], "s3://other/templates"), ("push", None, ids[1], "s3://other/templates"),
        ("pull", None, ids[1], "gs://tpl/prod")]
    assert all(c.params["with_parents"] for c in contexts[2:])
    assert all(c.params["all_builds"] and c.params["builds"] == "local/builds.txt" for c in contexts[:2])


@pytest.mark.parametrize(("meta", "needle"), [
    ({"action": "verify"}, "error: no build ids"),
    ({"action": "sync-push", "builds": "x"}, "needs -meta location"),
    ({"action": "delete", "builds": "x"}, "unknown action 'delete'"),
])
def test_dispatch_refuses_what_it_cannot_do(meta: dict[str, str], needle: str, recorder: tuple[Path, Path],
                                            tmp_path: Path) -> None:
    script, log = recorder
    proc = _run_dispatch(job("e2b-artifact.nomad.hcl").task("e2b-artifact"), tmp_path, script, meta)
    assert proc.returncode == 2 and needle in proc.stderr
    assert not log.exists()


@pytest.fixture(scope="module")
def storage(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[list[str]]]:
    sample = tiny_sample(tmp_path_factory.mktemp("sample"))
    root = tmp_path_factory.mktemp("nomad") / "templates"
    chains = make_fleet(sample, root, [3, 1, 1], seed=4)
    break_snapfile_crc(root / chains[1][0])
    return root, chains


def test_dispatch_runs_verify_push_and_pull_for_real(storage: tuple[Path, list[list[str]]], real_cli: Path,
                                                     tmp_path: Path) -> None:
    root, chains = storage
    task = job("e2b-artifact.nomad.hcl", storage_provider="Local", local_template_storage_base_path=str(root)
               ).task("e2b-artifact")
    broken, good_leaf = chains[1][0], chains[0][-1]
    verified = _run_dispatch(task, tmp_path, real_cli, {"action": "verify", "builds": f"{broken},{good_leaf}"})
    print(verified.stdout)
    assert verified.returncode == 1 and f"FAIL  {broken}: snapshot.crc" in verified.stdout
    assert f"{root}: 2 builds" in verified.stdout

    remote = tmp_path / "other-cluster"
    pushed = _run_dispatch(task, tmp_path, real_cli, {"action": "sync-push", "location": str(remote)},
                           payload=good_leaf + "\n")
    assert pushed.returncode == 0, pushed.stderr
    assert sorted(p.name for p in remote.iterdir()) == sorted(chains[0])  # the leaf with its parents

    pulled_into = tmp_path / "pulled"
    pull_task = job("e2b-artifact.nomad.hcl", storage_provider="Local",
                    local_template_storage_base_path=str(pulled_into)).task("e2b-artifact")
    pulled = _run_dispatch(pull_task, tmp_path, real_cli, {"action": "sync-pull", "location": str(remote),
                                                           "builds": good_leaf})
    assert pulled.returncode == 0, pulled.stderr
    again = _run_dispatch(pull_task, tmp_path, real_cli, {"action": "verify", "builds": " ".join(chains[0])})
    assert again.returncode == 0 and f"{pulled_into}: 3 builds" in again.stdout, again.stdout


def test_sharded_job_runs_for_real(storage: tuple[Path, list[list[str]]], tmp_path: Path) -> None:
    root, chains = storage
    variables: dict[str, Any] = {"shards": 2, "results": str(tmp_path / "results"), "run": "r1",
                                 "storage_provider": "Local", "local_template_storage_base_path": str(root)}
    seen = []
    for index in range(2):
        task = job("e2b-artifact-verify-all.nomad.hcl", {"NOMAD_ALLOC_INDEX": str(index)}, **variables).task("verify")
        proc = subprocess.run([sys.executable, "-m", "e2b_artifacts", *task.args], capture_output=True, text=True,
                              env={**os.environ, **task.env}, check=False)
        assert proc.returncode in (0, 1) and "Traceback" not in proc.stderr, proc.stderr
        lines = (tmp_path / "results" / "r1" / f"shard-{index}-of-2.jsonl").read_text().splitlines()
        seen += [json.loads(line)["build_id"] for line in lines[:-1]]
    assert sorted(seen) == sorted(b for chain in chains for b in chain)
    merge = job("e2b-artifact-verify-all.nomad.hcl", **variables).task("merge")
    proc = subprocess.run([sys.executable, "-m", "e2b_artifacts", *merge.args], capture_output=True, text=True,
                          env={**os.environ, **merge.env}, check=False)
    print(proc.stdout)
    assert proc.returncode == 1 and f"FAIL  {chains[1][0]}: snapshot.crc" in proc.stdout
    assert f"{root}: 5 builds" in proc.stdout


def test_host_check_job_runs_for_real() -> None:
    task = job("e2b-artifact-host-check.nomad.hcl").task("host-check")
    proc = subprocess.run([sys.executable, "-m", "e2b_artifacts", *task.args], capture_output=True, text=True,
                          env={**os.environ, **task.env}, check=False)
    assert proc.returncode in (0, 1), proc.stderr  # 1: this host fails a check (no usable KVM here, ...)
    report = json.loads(proc.stdout)
    assert report["ok"] == (proc.returncode == 0) and {c["check"] for c in report["checks"]} >= {"host.kvm"}


def _walk(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for v in value.values():
            yield from _walk(v)
    elif isinstance(value, list):
        for v in value:
            yield from _walk(v)
    elif isinstance(value, str):
        yield value


@pytest.mark.parametrize("path", JOB_FILES, ids=lambda p: p.name)
def test_no_terraform_template_syntax(path: Path) -> None:
    """Plain Nomad files (submitted as they are), not upstream's Terraform templatefile() sources."""
    text = path.read_text()
    assert "%{" not in text and "{{" not in text
