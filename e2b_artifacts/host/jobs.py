"""Nomad job files (HCL2) of E2B's services, checked against this host."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ArtifactError, ExitCode
from ..findings import Finding
from ..settings import BY_NAME, MOUNT_ROOTS, Setting, inspect_path
from .view import HostView

ORCHESTRATOR_CAPS = ("cap_net_admin", "cap_net_raw", "cap_sys_admin")
SERVICES = ("template-manager", "client-proxy", "orchestrator", "api")  # the first that a job names wins
# Service discovery providers upstream's client-proxy accepts (releases compare exactly; newer ones
# upper-case the value first).
SD_PROVIDERS = ("DNS", "STATIC", "NOMAD", "K8S-PODS", "NOMAD+K8S-PODS", "EC2-INSTANCES")
SD_PREFIXES = ("SERVICE_DISCOVERY_ORCHESTRATOR", "SERVICE_DISCOVERY_EDGE")
STORAGE_PROVIDERS = ("GCPBucket", "AWSBucket", "Local")
REQUIRED = {"client-proxy": ("LOKI_URL",)}


@dataclass
class Task:
    job: str
    group: str
    name: str
    driver: str
    command: str | None
    args: list[str]
    user: str | None
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class Job:
    file: Path
    name: str
    node_pool: str
    tasks: list[Task]

    @property
    def service(self) -> str:
        words = " ".join([self.name] + [t.name for t in self.tasks] + [" ".join(t.args) for t in self.tasks])
        return next((s for s in SERVICES if s in words), self.name)


def unquote(value: Any) -> str:
    text = str(value)
    return text[1:-1] if len(text) >= 2 and text[0] == text[-1] == '"' else text


def parse_hcl(text: str) -> dict[str, Any]:
    import hcl2

    parsed = hcl2.loads(text)
    assert isinstance(parsed, dict)
    return parsed


def labelled_blocks(body: dict[str, Any], kind: str) -> list[tuple[str, dict[str, Any]]]:
    """Labelled blocks (``group "x" { ... }``) of one kind: [(label, body)]."""
    found = []
    for item in body.get(kind, []):
        if isinstance(item, dict):
            for label, inner in item.items():
                if isinstance(inner, dict):
                    found.append((unquote(label), inner))
    return found


def merged_blocks(body: dict[str, Any], kind: str) -> dict[str, Any]:
    """Unlabelled blocks (``env { ... }``, ``config { ... }``) merged into one dict."""
    merged: dict[str, Any] = {}
    for item in body.get(kind, []):
        if isinstance(item, dict):
            merged.update({k: v for k, v in item.items() if k != "__is_block__"})
    return merged


def load_job(path: Path) -> Job:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ArtifactError(f"cannot read job file {path}: {exc.strerror}", hint="pass an existing Nomad job file",
                            code=ExitCode.BAD_INPUT) from exc
    try:
        parsed = parse_hcl(text)
    except Exception as exc:  # the parser raises lark's errors, whose types are not stable
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ArtifactError(f"{path} is not valid HCL2: {first}",
                            hint="nomad job validate FILE shows the error in Nomad's words",
                            code=ExitCode.BAD_INPUT) from exc
    jobs = labelled_blocks(parsed, "job")
    if not jobs:
        raise ArtifactError(f"{path} has no job block", hint="pass a Nomad job file (job \"name\" { ... })",
                            code=ExitCode.BAD_INPUT)
    name, body = jobs[0]
    tasks = []
    for group, gbody in labelled_blocks(body, "group"):
        for task, tbody in labelled_blocks(gbody, "task"):
            config = merged_blocks(tbody, "config")
            env = {k: unquote(v) for k, v in merged_blocks(tbody, "env").items()}
            args = config.get("args", [])
            tasks.append(Task(name, group, task, unquote(tbody.get("driver", "")),
                              unquote(config["command"]) if "command" in config else None,
                              [unquote(a) for a in args] if isinstance(args, list) else [],
                              unquote(tbody["user"]) if "user" in tbody else None, env))
    return Job(path, name, unquote(body.get("node_pool", "default")), tasks)


def check_job(view: HostView, job: Job) -> list[Finding]:
    findings = [_node_pool(view, job)]
    for task in job.tasks:
        where = f"{job.file.name}: {job.name}/{task.group}/{task.name}"
        findings += _env_paths(view, where, task)
        findings += _command(view, where, job, task)
        findings += _variables(where, job, task)
    return findings


def _node_pool(view: HostView, job: Job) -> Finding:
    pools = view.nomad_client_pools()
    name = f"{job.file.name}: {job.name}"
    if not pools:
        return Finding("job.node_pool", "warn", f"{name}: node_pool = \"{job.node_pool}\"; no local Nomad client "
                                                "config found (/etc/nomad.d, agent on 127.0.0.1:4646)",
                       "run this on a Nomad client node to compare")
    if any(pool == job.node_pool for _where, pool in pools):
        return Finding("job.node_pool", "ok", f"{name}: node_pool \"{job.node_pool}\" matches the local client")
    client = ", ".join(f'"{pool}" ({where})' for where, pool in pools)
    return Finding("job.node_pool", "FAIL", f"{name}: node_pool = \"{job.node_pool}\" but the local client is in "
                                            f"{client}: Placement Failure: no nodes were eligible",
                   f'set node_pool = "{pools[0][1]}" in the job (or the client\'s node_pool to "{job.node_pool}")')


def _env_paths(view: HostView, where: str, task: Task) -> list[Finding]:
    findings = []
    for key, value in sorted(task.env.items()):
        if not value.startswith("/") or "${" in value or "{{" in value:
            continue
        setting = BY_NAME.get(key) or Setting(key, "dir" if not Path(value).suffix else "file", None, "")
        status = inspect_path(setting, value, None if view.is_real else view.root)
        if status.state in ("absent-mount", "not-mounted"):
            mounts = "/".join(r.strip("/") for r in MOUNT_ROOTS[:2])
            findings.append(Finding("job.env", "FAIL", f"{where}: {key}={value}: {status.detail} (object does not "
                                                       "exist / failed to open metadata file)",
                                    f"set {key} in the job's env to a path of this host (not another host's "
                                    f"/{mounts} mounts), or mount that disk here"))
        elif status.state == "missing":
            known = key in BY_NAME
            findings.append(Finding("job.env", "FAIL" if known else "warn", f"{where}: {key}={value} does not exist",
                                    f"mkdir -p {value}" if setting.kind == "dir" else f"put the file at {value}"))
        elif status.state == "wrong-type" and key in BY_NAME:
            findings.append(Finding("job.env", "FAIL", f"{where}: {key}={value}: {status.detail}",
                                    f"point {key} at a {setting.kind}"))
        else:
            findings.append(Finding("job.env", "ok", f"{where}: {key}={value} exists"))
    return findings


def _command(view: HostView, where: str, job: Job, task: Task) -> list[Finding]:
    if task.command is None or task.driver not in ("raw_exec", "exec"):
        return []
    command = task.command
    if not command.startswith("/") or "${" in command:
        return [Finding("job.command", "warn", f"{where}: command {command} is relative or templated; not checked")]
    binary = view.path(command)
    if not binary.is_file():
        return [Finding("job.command", "FAIL", f"{where}: command {command} does not exist on this host",
                        f"install the {job.service} binary at {command}")]
    findings = [Finding("job.command", "ok", f"{where}: command {command} exists")]
    if job.service in ("orchestrator", "template-manager"):
        findings.append(_capabilities(view, where, task, command, binary))
    return findings


def _capabilities(view: HostView, where: str, task: Task, command: str, binary: Path) -> Finding:
    fix = f"setcap {','.join(ORCHESTRATOR_CAPS)}+ep {command}"
    rc, out = view.run(["getcap", str(binary)])
    if rc == 127:
        return Finding("job.caps", "warn", f"{where}: getcap is not installed: capabilities of {command} not checked",
                       "apt-get install libcap2-bin")
    have = set(re.findall(r"cap_[a-z_]+", out))
    missing = [c for c in ORCHESTRATOR_CAPS if c not in have]
    if not missing:
        return Finding("job.caps", "ok", f"{where}: {command} has {','.join(ORCHESTRATOR_CAPS)}")
    as_root = task.user in (None, "root", "0") and task.driver == "raw_exec"
    message = f"{where}: {command} lacks {','.join(missing)}"
    if as_root:
        return Finding("job.caps", "warn", message + " (raw_exec as root has them; a non-root user would not)", fix)
    return Finding("job.caps", "FAIL", message + f" and runs as {task.user or 'a non-root user'} (exec driver or "
                                                 "user set): netns and tap setup fail", fix)


def _variables(where: str, job: Job, task: Task) -> list[Finding]:
    env = task.env
    findings = []
    for name in REQUIRED.get(job.service, ()):
        if not env.get(name):
            findings.append(Finding("job.vars", "FAIL", f"{where}: {name} is not set: required environment variable "
                                                        f"\"{name}\" is not set",
                                    f"add {name} to the task's env (e.g. {name} = \"http://loki.service.consul:3100\")"
                                    if name == "LOKI_URL" else f"add {name} to the task's env"))
        else:
            findings.append(Finding("job.vars", "ok", f"{where}: {name} is set"))
    if job.service == "client-proxy":
        for prefix in SD_PREFIXES:
            findings.append(_sd_provider(where, env, prefix))
    provider = env.get("STORAGE_PROVIDER")
    if provider is not None:
        findings += _storage(where, env, provider)
    return findings


def _sd_provider(where: str, env: dict[str, str], prefix: str) -> Finding:
    key = f"{prefix}_PROVIDER"
    value = env.get(key)
    accepted = ", ".join(SD_PROVIDERS)
    if not value:
        return Finding("job.vars", "FAIL", f"{where}: {key} is not set (missing {key} environment variable)",
                       f"set {key} to one of {accepted} (STATIC with {prefix}_STATIC=host:port,...)")
    if "${" in value:
        return Finding("job.vars", "warn", f"{where}: {key}={value} is templated; not checked")
    if value in SD_PROVIDERS:
        return Finding("job.vars", "ok", f"{where}: {key}={value}")
    if value.upper() in SD_PROVIDERS:
        return Finding("job.vars", "warn", f"{where}: {key}={value}: releases that compare exactly reject it",
                       f"write it as {value.upper()}")
    return Finding("job.vars", "FAIL", f"{where}: {key}={value}: unsupported service discovery provider",
                   f"set {key} to one of {accepted}")


def _storage(where: str, env: dict[str, str], provider: str) -> list[Finding]:
    if provider not in STORAGE_PROVIDERS:
        return [Finding("job.storage", "FAIL", f"{where}: STORAGE_PROVIDER={provider} is not one upstream knows",
                        f"one of {', '.join(STORAGE_PROVIDERS)}")]
    findings = []
    if provider == "Local":
        if not env.get("LOCAL_TEMPLATE_STORAGE_BASE_PATH"):
            findings.append(Finding("job.storage", "FAIL", f"{where}: STORAGE_PROVIDER=Local without "
                                                           "LOCAL_TEMPLATE_STORAGE_BASE_PATH (upstream falls back "
                                                           "to /tmp/templates)",
                                    "set LOCAL_TEMPLATE_STORAGE_BASE_PATH in the task's env"))
        registry = env.get("ARTIFACTS_REGISTRY_PROVIDER")
        if registry != "Local":
            findings.append(Finding("job.storage", "FAIL", f"{where}: STORAGE_PROVIDER=Local but "
                                    f"ARTIFACTS_REGISTRY_PROVIDER={registry or '(unset: GCP_ARTIFACTS)'}: the GCP code "
                                    "path runs (could not find default credentials)",
                                    "set ARTIFACTS_REGISTRY_PROVIDER=Local as well"))
    elif provider == "GCPBucket" and not env.get("TEMPLATE_BUCKET_NAME"):
        findings.append(Finding("job.storage", "FAIL", f"{where}: STORAGE_PROVIDER=GCPBucket without "
                                                       "TEMPLATE_BUCKET_NAME",
                                "set TEMPLATE_BUCKET_NAME, or STORAGE_PROVIDER=Local for a single host"))
    if not findings:
        findings.append(Finding("job.storage", "ok", f"{where}: STORAGE_PROVIDER={provider} and its variables agree"))
    return findings
