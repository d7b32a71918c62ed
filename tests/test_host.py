"""``host check`` against prepared host trees (one failure class each) and against this machine."""

from __future__ import annotations

import http.server
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from e2b_artifacts.findings import Finding
from e2b_artifacts.host import HostView, check_host, load_jobs
from e2b_artifacts.host.ports import check_ports
from e2b_artifacts.settings import Settings
from tests.conftest import cli
from tests.kernels import test_kernel

FC_VERSION = "v1.12.1_d990331"
FIRECRACKER_STANDIN = ("#!/bin/sh\necho 'Firecracker v1.12.1'\necho\n"
                       "echo 'Supported snapshot data format versions: 5.0.0'\n")


def write(path: Path, text: str, mode: int = 0o644) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)
    return path


@pytest.fixture
def healthy_root(tmp_path: Path, envd_standin: Path) -> Path:
    """A host tree on which every check passes (nothing but upstream's defaults)."""
    root = tmp_path / "root"
    write(root / "dev/kvm", "")
    write(root / "dev/userfaultfd", "")
    write(root / "proc/sys/kernel/osrelease", "6.1.0-28-amd64\n")
    write(root / "proc/sys/vm/unprivileged_userfaultfd", "0\n")
    write(root / "proc/meminfo", "MemTotal: 16000000 kB\nHugePages_Total: 2048\nHugePages_Free: 2048\n"
                                 "Hugepagesize: 2048 kB\n")
    write(root / "sys/module/nbd/parameters/nbds_max", "4096\n")
    for i in range(4):
        (root / f"sys/block/nbd{i}").mkdir(parents=True)
    (root / "run/netns").mkdir(parents=True)
    write(root / "etc/passwd", "root:x:0:0:root:/root:/bin/sh\ne2b:x:1000:1000::/home/e2b:/bin/sh\n")
    envd = root / "fc-envd/envd"
    envd.parent.mkdir(parents=True)
    shutil.copyfile(envd_standin, envd)  # not executable: host check reads it, never runs it
    kernel = root / "fc-kernels/vmlinux-6.1.102/vmlinux.bin"
    kernel.parent.mkdir(parents=True)
    shutil.copyfile(test_kernel("cmdline-ikconfig").vmlinux, kernel)
    write(root / f"fc-versions/{FC_VERSION}/firecracker", FIRECRACKER_STANDIN, 0o755)
    for d in ("tmp/templates", "orchestrator/template", "orchestrator/sandbox", "mnt/snapshot-cache", "fc-vm"):
        (root / d).mkdir(parents=True, exist_ok=True)
    write(root / "etc/nomad.d/client.hcl", 'client {\n  enabled = true\n  node_pool = "local-dev"\n}\n')
    return root


def run(root: Path, jobs: list[Path] | None = None, user: str = "root") -> list[Finding]:
    view = HostView(root=root, settings=Settings(env={}), user=user, nomad_api=None)
    return check_host(view, load_jobs(jobs or [])).findings


def fails(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.status == "FAIL"]


def test_healthy_root_passes(healthy_root: Path) -> None:
    findings = run(healthy_root)
    assert fails(findings) == []
    by_check = {f.check: f for f in findings}
    assert "nbds_max=4096" in by_check["host.nbd"].message
    assert by_check["host.firecracker"].message == f"/fc-versions/{FC_VERSION}/firecracker: Firecracker v1.12.1"
    assert by_check["host.kernels"].message.startswith("/fc-kernels/vmlinux-6.1.102/vmlinux.bin: elf")
    assert "static x86_64 ELF" in by_check["host.envd"].message


def test_nbd_with_16_devices(healthy_root: Path) -> None:
    write(healthy_root / "sys/module/nbd/parameters/nbds_max", "16\n")
    [fail] = fails(run(healthy_root))
    assert fail.check == "host.nbd" and "nbds_max=16" in fail.message
    assert "modprobe nbd nbds_max=4096" in fail.hint


def test_nbd_not_loaded(healthy_root: Path) -> None:
    shutil.rmtree(healthy_root / "sys/module/nbd")
    [fail] = fails(run(healthy_root))
    assert fail.check == "host.nbd" and "not loaded" in fail.message


def test_netns_not_writable_by_the_orchestrator_user(healthy_root: Path) -> None:
    (healthy_root / "run/netns").chmod(0o755)  # owned by the test's user, which is not uid 1000
    findings = run(healthy_root, user="e2b")
    failed = fails(findings)
    netns = [f for f in failed if f.check == "host.netns"]
    assert len(netns) == 1 and "not writable by e2b (uid 1000)" in netns[0].message
    assert "as root" in netns[0].hint
    # the same user also cannot open a userfaultfd with vm.unprivileged_userfaultfd=0: a second, separate class
    assert sorted(f.check for f in failed) == ["host.netns", "host.userfaultfd.user"]


def test_kernel_dir_holding_a_bzimage(healthy_root: Path) -> None:
    target = healthy_root / "fc-kernels/vmlinux-6.1.102/vmlinux.bin"
    shutil.copyfile(test_kernel("cmdline-ikconfig").bzimage, target)
    [fail] = fails(run(healthy_root))
    assert fail.check == "host.kernels" and "bzImage" in fail.message
    assert fail.hint == ("e2b-artifact kernel extract /fc-kernels/vmlinux-6.1.102/vmlinux.bin -o vmlinux, "
                         "then use vmlinux")


def test_firecracker_dir_without_its_binary(healthy_root: Path) -> None:
    (healthy_root / "fc-versions/v1.10.1_1fcdaec").mkdir()
    [fail] = fails(run(healthy_root))
    assert fail.check == "host.firecracker"
    assert fail.message.startswith("/fc-versions/v1.10.1_1fcdaec/firecracker is missing")
    assert "release v1.10.1" in fail.hint


def test_firecracker_version_differs_from_its_directory(healthy_root: Path) -> None:
    write(healthy_root / "fc-versions/v1.10.1_1fcdaec/firecracker", FIRECRACKER_STANDIN, 0o755)
    [fail] = fails(run(healthy_root))
    assert "is Firecracker v1.12.1, its directory says v1.10.1_1fcdaec" in fail.message


def test_firecracker_e2b_fork_name_compares_the_line(healthy_root: Path) -> None:
    write(healthy_root / "fc-versions/v1.12-0.2.0/firecracker", FIRECRACKER_STANDIN, 0o755)
    write(healthy_root / "fc-versions/v1.14-0.2.0/firecracker", FIRECRACKER_STANDIN, 0o755)
    [fail] = fails(run(healthy_root))
    assert fail.message == "/fc-versions/v1.14-0.2.0/firecracker is Firecracker v1.12.1, its directory says v1.14-0.2.0"


def test_envd_missing_but_staged(healthy_root: Path) -> None:
    (healthy_root / "fc-envd/envd").rename(healthy_root / "fc-envd/envd.0.2.4")
    [fail] = fails(run(healthy_root))
    assert fail.check == "host.envd" and "staged: /fc-envd/envd.0.2.4" in fail.message
    assert fail.hint.startswith("ln -s envd.0.2.4 /fc-envd/envd")


def test_port_held_by_a_listener_on_loopback() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        [finding] = check_ports(HostView(settings=Settings(env={})), {port: "test service"})
    assert finding.status == "FAIL"
    assert f"port {port} (test service) is in use (127.0.0.1: pid {os.getpid()} (" in finding.message
    assert finding.hint == f"if it is a leftover: kill {os.getpid()}"
    # once closed, the same port reads as free
    [again] = check_ports(HostView(settings=Settings(env={})), {port: "test service"})
    assert again.status == "ok"


def test_port_held_by_an_e2b_service_only_warns(tmp_path: Path) -> None:
    ready = tmp_path / "port"
    code = ("import socket, sys, time\ns = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen()\n"
            "open(sys.argv[1], 'w').write(str(s.getsockname()[1])); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(ready), "--service", "orchestrator"])
    try:
        deadline = time.monotonic() + 10
        while not (ready.exists() and ready.read_text()) and time.monotonic() < deadline:
            time.sleep(0.02)
        port = int(ready.read_text())
        [finding] = check_ports(HostView(settings=Settings(env={})), {port: "orchestrator gRPC"})
    finally:
        proc.kill()
        proc.wait()
    assert finding.status == "warn" and f"held by an E2B service (127.0.0.1: pid {proc.pid} (" in finding.message
    assert finding.hint == f"if it is a leftover: kill {proc.pid}"


ORCHESTRATOR_JOB = """
job "orchestrator" {
  type      = "system"
  node_pool = "default"
  group "client-orchestrator" {
    task "start" {
      driver = "raw_exec"
      config {
        command = "/opt/e2b/orchestrator"
      }
      env {
        LOCAL_TEMPLATE_STORAGE_BASE_PATH = "/mnt/sdb/e2b/templates"
        TEMPLATE_CACHE_DIR               = "/mnt/sdb/e2b/cache"
        HOST_KERNELS_DIR                 = "/fc-kernels"
        STORAGE_PROVIDER                 = "Local"
        ARTIFACTS_REGISTRY_PROVIDER      = "Local"
        NODE_ID                          = "${node.unique.id}"
      }
    }
  }
}
"""


def test_orchestrator_job_from_another_host(healthy_root: Path, tmp_path: Path) -> None:
    job = write(tmp_path / "orchestrator.hcl", ORCHESTRATOR_JOB)
    write(healthy_root / "opt/e2b/orchestrator", "#!/bin/sh\n", 0o755)
    findings = run(healthy_root, [job])
    failed = fails(findings)
    assert sorted(f.check for f in failed) == ["job.env", "job.env", "job.node_pool"]
    pool = next(f for f in failed if f.check == "job.node_pool")
    assert 'node_pool = "default" but the local client is in "local-dev" (/etc/nomad.d/client.hcl)' in pool.message
    assert pool.hint.startswith('set node_pool = "local-dev" in the job')
    envs = sorted(f.message for f in failed if f.check == "job.env")
    assert "LOCAL_TEMPLATE_STORAGE_BASE_PATH=/mnt/sdb/e2b/templates: /mnt/sdb does not exist" in envs[0]
    assert "TEMPLATE_CACHE_DIR=/mnt/sdb/e2b/cache: /mnt/sdb does not exist" in envs[1]
    ok = {f.message for f in findings if f.status == "ok"}
    assert "orchestrator.hcl: orchestrator/client-orchestrator/start: HOST_KERNELS_DIR=/fc-kernels exists" in ok
    # raw_exec as root has every capability: the missing file capabilities only warn
    caps = next(f for f in findings if f.check == "job.caps")
    assert caps.status == "warn" and caps.hint == ("setcap cap_net_admin,cap_net_raw,cap_sys_admin+ep "
                                                   "/opt/e2b/orchestrator")


def test_node_pool_from_the_agent_api(healthy_root: Path, tmp_path: Path) -> None:
    """No client config file: the agent on loopback answers /v1/agent/self."""
    (healthy_root / "etc/nomad.d/client.hcl").unlink()

    class Agent(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps({"config": {"Client": {"Enabled": True, "NodePool": "local-dev"}}}).encode()
            self.send_response(200 if self.path == "/v1/agent/self" else 404)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Agent)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        view = HostView(root=healthy_root, settings=Settings(env={}), nomad_api=f"http://127.0.0.1:{server.server_port}")
        job = write(tmp_path / "orchestrator.hcl", ORCHESTRATOR_JOB.replace("/mnt/sdb/e2b", "/orchestrator"))
        findings = check_host(view, load_jobs([job])).findings
    finally:
        server.shutdown()
        server.server_close()
    [pool] = [f for f in findings if f.check == "job.node_pool"]
    assert pool.status == "FAIL"
    assert f'"local-dev" (http://127.0.0.1:{server.server_port}/v1/agent/self)' in pool.message


CLIENT_PROXY_JOB = """
job "client-proxy" {
  node_pool = "local-dev"
  group "client-proxy" {
    task "start" {
      driver = "docker"
      config {
        image = "e2b-client-proxy:local"
      }
      env {
        SERVICE_DISCOVERY_ORCHESTRATOR_PROVIDER = "STATIC"
        SERVICE_DISCOVERY_ORCHESTRATOR_STATIC   = "127.0.0.1"
        SERVICE_DISCOVERY_EDGE_PROVIDER         = "STATIC"
        SERVICE_DISCOVERY_EDGE_STATIC           = "127.0.0.1"
      }
    }
  }
}
"""


def test_client_proxy_job_without_loki_url(healthy_root: Path, tmp_path: Path) -> None:
    job = write(tmp_path / "client-proxy.hcl", CLIENT_PROXY_JOB)
    [fail] = fails(run(healthy_root, [job]))
    assert fail.check == "job.vars" and 'required environment variable "LOKI_URL" is not set' in fail.message
    assert fail.hint.startswith("add LOKI_URL to the task's env")


def test_client_proxy_unsupported_discovery_provider(healthy_root: Path, tmp_path: Path) -> None:
    job = write(tmp_path / "client-proxy.hcl", CLIENT_PROXY_JOB.replace(
        'ORCHESTRATOR_PROVIDER = "STATIC"', 'ORCHESTRATOR_PROVIDER = "Consul"').replace(
        "env {", 'env {\n        LOKI_URL = "http://localhost:3100"'))
    [fail] = fails(run(healthy_root, [job]))
    assert "SERVICE_DISCOVERY_ORCHESTRATOR_PROVIDER=Consul: unsupported service discovery provider" in fail.message
    assert "DNS, STATIC, NOMAD" in fail.hint


def test_local_storage_needs_local_registry(healthy_root: Path, tmp_path: Path) -> None:
    job = write(tmp_path / "template-manager.hcl", ORCHESTRATOR_JOB.replace('"orchestrator"', '"template-manager"')
                .replace("/mnt/sdb/e2b/templates", "/tmp/templates").replace("/mnt/sdb/e2b/cache",
                                                                            "/orchestrator/template")
                .replace('node_pool = "default"', 'node_pool = "local-dev"')
                .replace('        ARTIFACTS_REGISTRY_PROVIDER      = "Local"\n', ""))
    write(healthy_root / "opt/e2b/orchestrator", "#!/bin/sh\n", 0o755)
    [fail] = fails(run(healthy_root, [job]))
    assert fail.check == "job.storage" and "could not find default credentials" in fail.message
    assert fail.hint == "set ARTIFACTS_REGISTRY_PROVIDER=Local as well"


def test_cli_json_and_exit_codes(healthy_root: Path, tmp_path: Path) -> None:
    env = {k: "" for k in ("LOCAL_TEMPLATE_STORAGE_BASE_PATH", "HOST_KERNELS_DIR", "FIRECRACKER_VERSIONS_DIR",
                           "HOST_ENVD_PATH", "ORCHESTRATOR_BASE_PATH")}
    passed = cli("host", "check", "--root", healthy_root, "--json", env=env)
    assert passed.returncode == 0, passed.stdout + passed.stderr
    doc = json.loads(passed.stdout)
    assert doc["ok"] is True and doc["root"] == str(healthy_root) and doc["counts"]["FAIL"] == 0
    assert {"check", "status", "message", "hint", "fix"} <= set(doc["checks"][0])

    write(healthy_root / "sys/module/nbd/parameters/nbds_max", "16\n")
    failed = cli("host", "check", "--root", healthy_root, env=env)
    assert failed.returncode == 1
    assert [ln for ln in failed.stdout.splitlines() if ln.startswith("FAIL")] == [
        "FAIL host.nbd: nbd loaded with nbds_max=16 (upstream loads 4096; one device per running sandbox and "
        "build, so the pool runs out: no free slots); 4 devices, 4 free"]
    assert failed.stdout.splitlines()[-1].endswith("FAIL -> FAILED")

    missing = cli("host", "check", "--root", healthy_root, "--job", tmp_path / "nope.hcl", "--json", env=env)
    assert missing.returncode == 3 and missing.stderr.startswith("error: cannot read job file")
    assert json.loads(missing.stdout)["exit_code"] == 3
    broken = write(tmp_path / "broken.hcl", 'job "x" {\n  group = \n')
    bad = cli("host", "check", "--root", healthy_root, "--job", broken, env=env)
    assert bad.returncode == 3 and "is not valid HCL2" in bad.stderr and "hint: " in bad.stderr
    usage = cli("host", "check", "--bogus", env=env)
    assert usage.returncode == 2


def test_this_machine(tmp_path: Path) -> None:
    """The real run: the KVM line agrees with boot's own (cached) probe of the same kernel."""
    from e2b_artifacts.settings import cache_dir
    from e2b_artifacts.vm.qemu import kvm_usable

    kernel = test_kernel("cmdline-ikconfig").vmlinux
    view = HostView(settings=Settings(env={}), probe_kernel=kernel)
    findings = check_host(view).findings
    kvm = next(f for f in findings if f.check == "host.kvm")
    if not Path("/dev/kvm").exists():
        assert kvm.status == "FAIL" and "missing" in kvm.message
    else:
        works, detail = kvm_usable(kernel, cache_dir())
        assert (kvm.status, detail in kvm.message) == ("ok" if works else "FAIL", True)
        if not works:
            assert kvm.message.startswith("/dev/kvm is present but unusable")
    release = Path("/proc/sys/kernel/osrelease").read_text().strip()
    assert any(f.check == "host.kernel" and release in f.message for f in findings)
    assert {f.check for f in findings} >= {"host.userfaultfd", "host.nbd", "host.hugepages", "host.netns",
                                          "host.envd", "host.kernels", "host.firecracker", "host.paths",
                                          "host.disk", "host.ports"}
