"""A one-node Ceph cluster with radosgw on loopback: a real S3 server for tests and benchmarks.

Debian bookworm's Ceph 16 (``ceph-mon``, ``ceph-osd``, ``radosgw``; ``scripts/setup.sh --test``
installs them). One monitor, one OSD and one radosgw, each a foreground process started through
``runner.spawn``: its own process group, killed when the ``with`` block ends however it ends, and
killed by the kernel if this process dies first (``die_with_parent``). Everything lives under one
directory: config, keyring, monitor store, OSD store, logs, sockets. Nothing is read from
/etc/ceph, no systemd unit is involved and nothing is left running.

Choices, measured on the 2-core test machine (Ceph 16.2.15, 1 GiB uploads and downloads with
boto3, 16 MiB parts, 8 threads):

* OSD object store ``memstore`` (objects in the OSD's memory) rather than ``bluestore`` on a sparse
  file: the cluster answers S3 in 2-4 s instead of 6-12 s (both slower when the machine is busy), a
  download costs the server 3.0-3.3 CPU seconds per GiB instead of 3.9-4.6 (uploads 8.3-10.4
  against 9.6-10.6), and nothing is written to disk. The price is memory, about 1.8x what is stored;
  the capacity is reported as ``store_bytes``, and a cluster past its full ratio stops answering
  writes, so size it for the data.
* ``paxos propose interval`` 0.01 s (default 1 s): every pool radosgw creates at start waits for
  a monitor proposal; with the default the start took 14-18 s, with this 2-4 s.
* cephx on, with one keyring for every entity (the monitor imports it at ``--mkfs``): radosgw 16
  does not start with ``auth ... required = none`` (its first monitor request fails, -13).
* 8 placement groups per pool, no autoscaler (no manager daemon is run: nothing here needs one).

    with start_ceph(workdir) as ceph:
        boto3.client("s3", endpoint_url=ceph.endpoint, aws_access_key_id=ceph.access_key, ...)
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from e2b_artifacts import runner
from e2b_artifacts.errors import ArtifactError

PACKAGES = "ceph-mon ceph-osd radosgw"
TOOLS = ("ceph-mon", "ceph-osd", "radosgw", "radosgw-admin", "monmaptool", "ceph-authtool", "ceph")
OBJECT_STORES = ("memstore", "bluestore")
START_TIMEOUT = 120.0  # seconds for the whole cluster to answer S3 requests
ACCESS_KEY = "e2b-artifact-test"
SECRET_KEY = "e2b-artifact-test-secret"  # a throwaway cluster on loopback
OSD_ID = "0"  # the first OSD of a new cluster
KEYS = (  # entity, capabilities
    ("mon.", ("mon", "allow *")),
    ("client.admin", ("mon", "allow *", "osd", "allow *", "mgr", "allow *")),
    ("client.rgw", ("mon", "allow rw", "osd", "allow rwx")),
    (f"osd.{OSD_ID}", ("mon", "allow profile osd", "osd", "allow *")),
)


class CephError(RuntimeError):
    """The cluster could not be started; the message names the step and carries the log's tail."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Ceph:
    root: Path
    endpoint: str  # radosgw's S3 API, http://127.0.0.1:PORT
    object_store: str
    access_key: str = ACCESS_KEY
    secret_key: str = SECRET_KEY
    started_in: float = 0.0  # seconds from nothing to a user with keys on an answering radosgw
    daemons: dict[str, runner.Child] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        """What an S3 client needs in its environment to act as the cluster's user."""
        return {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key,
                "AWS_DEFAULT_REGION": "us-east-1"}

    def log_tail(self, name: str, chars: int = 3000) -> str:
        parts = []
        for path in (self.root / "log" / f"{name}.log", self.root / "log" / f"{name}.stderr"):
            if path.is_file() and path.stat().st_size:
                parts.append(f"--- {path} ---\n{path.read_text(errors='replace')[-chars:]}")
        return "\n".join(parts) or "(no log)"

    def check_alive(self) -> None:
        for name, child in self.daemons.items():
            status = child.poll()
            if status is not None:
                raise CephError(f"ceph daemon {name} exited with status {status}\n{self.log_tail(name)}")


def _config(root: Path, fsid: str, mon_port: int, rgw_port: int, object_store: str, store_bytes: int) -> str:
    if object_store == "memstore":
        store = f"osd objectstore = memstore\nmemstore device bytes = {store_bytes}\n"
    else:  # a sparse file: only written blocks take disk space; a small cache, this is a test host
        store = (f"osd objectstore = bluestore\nbluestore block path = {root}/osd-block\n"
                 f"bluestore block create = true\nbluestore block size = {store_bytes}\n"
                 "bluestore fsck on mkfs = false\nosd memory target = 1073741824\n")
    return f"""[global]
fsid = {fsid}
mon host = v2:127.0.0.1:{mon_port}
mon initial members = a
public addr = 127.0.0.1
cluster addr = 127.0.0.1
ms bind ipv6 = false
auth allow insecure global id reclaim = false
keyring = {root}/keyring
run dir = {root}/run
admin socket = {root}/run/$name.asok
pid file = {root}/run/$name.pid
log file = {root}/log/$name.log
log to stderr = false
err to stderr = true
mon cluster log file = {root}/log/cluster.log
crash dir = {root}/crash
paxos propose interval = 0.01
paxos min wait = 0.001
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
mon allow pool size one = true
mon max pg per osd = 1000
mon data avail warn = 1
mon data avail crit = 0
osd crush chooseleaf type = 0
[mon]
mon data = {root}/mon/$cluster-$id
[osd]
osd data = {root}/osd
{store}
[client.rgw]
rgw frontends = beast endpoint=127.0.0.1:{rgw_port} tcp_nodelay=1
rgw data = {root}/rgw
rgw gc obj min wait = 0
rgw gc processor period = 10
"""


class _Starter:
    """Runs the setup tools and starts the daemons of one cluster, each tied to ``stack``."""

    def __init__(self, cluster: Ceph, stack: contextlib.ExitStack, deadline: float) -> None:
        self.cluster = cluster
        self.conf = cluster.root / "ceph.conf"
        self.stack = stack
        self.deadline = deadline

    def tool(self, what: str, *argv: str) -> str:
        """Run a ceph tool to completion; a failure names ``what`` and carries the tool's output."""
        remaining = max(self.deadline - time.monotonic(), 1.0)
        try:
            proc = runner.run([argv[0], "-c", str(self.conf), *argv[1:]], check=False, timeout=remaining,
                              merge_stderr=True)
        except ArtifactError as exc:
            raise CephError(f"ceph: {what}: {exc}") from exc
        out = proc.stdout.decode(errors="replace")
        if proc.returncode != 0:
            raise CephError(f"ceph: {what} failed (exit {proc.returncode}): {' '.join(argv)}\n{out[-3000:]}")
        return out

    def daemon(self, name: str, *argv: str) -> None:
        log = self.stack.enter_context((self.cluster.root / "log" / f"{name}.stderr").open("wb"))
        self.cluster.daemons[name] = self.stack.enter_context(
            runner.spawn([argv[0], "-f", "-c", str(self.conf), *argv[1:]], stdout=log, stderr=subprocess.STDOUT,
                         die_with_parent=True))

    def wait(self, what: str, ready: Callable[[], bool]) -> None:
        while not ready():
            self.cluster.check_alive()
            if time.monotonic() > self.deadline:
                raise CephError(f"ceph: {what} within {START_TIMEOUT:g} s\n{self.cluster.log_tail('client.rgw')}")
            time.sleep(0.05)


def _answers(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=2).close()
    except urllib.error.HTTPError:
        return True  # an S3 error document: it answers
    except OSError:
        return False
    return True


@contextlib.contextmanager
def start_ceph(root: Path, *, object_store: str = "memstore", store_bytes: int = 4 << 30) -> Iterator[Ceph]:
    """A running cluster under ``root`` (created, or empty) for the ``with`` block, with an S3 user whose
    keys are :data:`ACCESS_KEY` / :data:`SECRET_KEY`; every daemon is killed when the block ends."""
    if object_store not in OBJECT_STORES:
        raise ValueError(f"object_store must be one of {OBJECT_STORES}")
    missing = [tool for tool in TOOLS if not runner.installed(tool)]
    if missing:
        raise CephError(f"ceph: {', '.join(missing)} not installed: apt-get install {PACKAGES} "
                        "(scripts/setup.sh --test does)")
    started = time.monotonic()
    for sub in ("mon", "osd", "rgw", "log", "run", "crash"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    fsid, mon_port, rgw_port = str(uuid.uuid4()), free_port(), free_port()
    (root / "ceph.conf").write_text(_config(root, fsid, mon_port, rgw_port, object_store, store_bytes))
    cluster = Ceph(root, f"http://127.0.0.1:{rgw_port}", object_store)
    keyring = str(root / "keyring")
    with contextlib.ExitStack() as stack:
        st = _Starter(cluster, stack, started + START_TIMEOUT)
        for entity, caps in KEYS:
            create = ["--create-keyring"] if entity == "mon." else []
            cap_args = [arg for i in range(0, len(caps), 2) for arg in ("--cap", caps[i], caps[i + 1])]
            st.tool(f"key of {entity}", "ceph-authtool", *create, keyring, "--gen-key", "-n", entity, *cap_args)
        st.tool("monitor map", "monmaptool", "--create", "--addv", "a", f"[v2:127.0.0.1:{mon_port}]",
                "--fsid", fsid, str(root / "monmap"))
        st.tool("monitor store", "ceph-mon", "--mkfs", "-i", "a", "--monmap", str(root / "monmap"),
                "--keyring", keyring)
        st.daemon("mon.a", "ceph-mon", "-i", "a")
        osd_uuid = str(uuid.uuid4())
        given = st.tool("OSD id", "ceph", "--connect-timeout", "30", "osd", "new", osd_uuid, OSD_ID).strip()
        if given != OSD_ID:
            raise CephError(f"ceph: the new cluster's OSD got id {given!r}, not {OSD_ID}")
        st.tool("OSD store", "ceph-osd", "-i", OSD_ID, "--mkfs", "--osd-uuid", osd_uuid)
        st.daemon(f"osd.{OSD_ID}", "ceph-osd", "-i", OSD_ID)
        st.daemon("client.rgw", "radosgw", "-n", "client.rgw")  # it waits for the OSD to create its pools
        st.wait(f"radosgw answering on {cluster.endpoint}", lambda: _answers(cluster.endpoint))
        st.tool("S3 user", "radosgw-admin", "-n", "client.rgw", "user", "create", "--uid", "e2b-artifact-test",
                "--display-name", "e2b-artifact tests", "--access-key", ACCESS_KEY, "--secret", SECRET_KEY)
        cluster.started_in = time.monotonic() - started
        yield cluster


if __name__ == "__main__":  # by hand: python -m tests.storage.ceph [memstore|bluestore [capacity GiB]]
    import sys
    import tempfile

    kind = sys.argv[1] if len(sys.argv) > 1 else "memstore"
    capacity = int(sys.argv[2]) << 30 if len(sys.argv) > 2 else 4 << 30
    with tempfile.TemporaryDirectory(prefix="ceph-", dir="/var/tmp") as tmp, \
            start_ceph(Path(tmp), object_store=kind, store_bytes=capacity) as running:
        print(f"{running.object_store}: S3 at {running.endpoint} after {running.started_in:.1f} s; "
              f"keys {running.access_key} / {running.secret_key}; SIGINT or SIGTERM stops it", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                running.check_alive()
                time.sleep(1)
