"""Shared fixtures: sample inputs, tiny real images, and the CLI run as an unprivileged user."""

from __future__ import annotations

import gc
import hashlib
import os
import shutil
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.storage.ceph import Ceph, start_ceph
from tests.storage.servers import Server, start_gcs_emulator

if TYPE_CHECKING:
    from tests.db.pgserver import PgServer

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "fixtures"
NOBODY = 65534


_AT_END = pytest.StashKey[list[str]]()


def report_at_end(config: pytest.Config, line: str) -> None:
    """A line for the end of the run's output (e.g. how long a test server took to start)."""
    config.stash.setdefault(_AT_END, []).append(line)


_GC_SECONDS = pytest.StashKey[float]()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_teardown(item: pytest.Item) -> None:
    """Collect garbage after each test, before pytest looks for unraisable exceptions.

    A file or pipe left open in a reference cycle (an exception's traceback holding the frame that opened
    it) is otherwise finalized whenever the collector happens to run, inside whichever later test that
    is, and fails that test (pyproject makes ResourceWarning an error). Collecting here names the test that
    leaked it.
    """
    start = time.perf_counter()
    gc.collect()
    gc.freeze()  # what survived is not looked at again: the next collection scans only what the next test made
    stash = item.config.stash
    stash[_GC_SECONDS] = stash.get(_GC_SECONDS, 0.0) + time.perf_counter() - start


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    for line in config.stash.get(_AT_END, []):
        terminalreporter.write_line(line)
    terminalreporter.write_line(f"garbage collection after each test: {config.stash.get(_GC_SECONDS, 0.0):.1f} s")


@pytest.fixture(scope="session")
def envd_standin() -> Path:
    return FIXTURES / "envd-standin" / "envd"


@pytest.fixture(scope="session")
def sample_tar() -> Path:
    return FIXTURES / "sample-rootfs.tar"


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def cli(*args: str | Path, env: dict[str, str] | None = None, cwd: Path | None = None,
        input: bytes | None = None) -> subprocess.CompletedProcess[str]:
    """Run the real CLI in a subprocess (as the current user)."""
    return subprocess.run([sys.executable, "-m", "e2b_artifacts", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, cwd=cwd, input=input.decode() if input else None,
                          check=False)


def sample_build(storage: Path, build_id: str) -> Path:
    """One real build of the bundled sample (rootfs + envd + metadata + manifest) in ``storage``."""
    from e2b_artifacts import BuildRequest, build

    build(BuildRequest(source_kind="tar", source=FIXTURES / "sample-rootfs.tar",
                       envd=FIXTURES / "envd-standin" / "envd", storage=storage, build_id=build_id,
                       free_mb=4, ram_mb=64))
    return storage / build_id


def make_ext4(path: Path, tree: Path, size: str = "32M") -> Path:
    subprocess.run(["mke2fs", "-q", "-F", "-t", "ext4", "-b", "4096", "-d", str(tree), str(path), size],
                   check=True, capture_output=True)
    return path


@dataclass
class Unprivileged:
    """Runs ``python -m e2b_artifacts`` as uid/gid 65534 in a world-writable work dir."""

    python: str
    site: Path
    workdir: Path

    def run(self, *args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        base = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "PYTHONPATH": str(self.site), "HOME": str(self.workdir), "LANG": "C.UTF-8"}
        return subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                               self.python, "-m", "e2b_artifacts", *map(str, args)],
                              capture_output=True, text=True, env={**base, **(env or {})}, cwd=self.workdir,
                              check=False)

    def path(self, name: str) -> Path:
        p = self.workdir / name
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def share(self, *paths: Path) -> None:
        for p in paths:
            os.chmod(p, 0o777 if p.is_dir() else 0o666)


@pytest.fixture(scope="session")
def unprivileged_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """The package and its dependencies where uid 65534 can read them (``/root`` is 0700)."""
    if os.geteuid() != 0:
        pytest.fail("the unprivileged tests switch to uid 65534 and need to start as root (as CI does)")
    python = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable
    base = Path("/var/tmp") / f"e2b-artifact-test-site-{os.getpid()}"
    site = base / "site"
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                    "--target", str(site), *deps], check=True, capture_output=True)
    shutil.copytree(REPO / "e2b_artifacts", site / "e2b_artifacts",
                    ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(["chmod", "-R", "a+rX", str(base)], check=True)
    yield python, site
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def nobody(unprivileged_site: tuple[str, Path], tmp_path: Path) -> Iterator[Unprivileged]:
    python, site = unprivileged_site
    workdir = Path("/var/tmp") / f"e2b-artifact-nobody-{os.getpid()}-{tmp_path.name}"
    workdir.mkdir(mode=0o777)
    os.chmod(workdir, 0o777)
    yield Unprivileged(python, site, workdir)
    shutil.rmtree(workdir, ignore_errors=True)


def stop(proc: subprocess.Popen[bytes] | subprocess.Popen[str]) -> None:
    """SIGKILL ``proc``, reap it and close its pipes (an unclosed pipe is a ResourceWarning: an error here)."""
    proc.kill()
    proc.wait()
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


def assert_clean_error(proc: subprocess.CompletedProcess[str], code: int, *needles: str) -> None:
    """One ``error:`` line, a ``hint:`` line, the documented exit code, and no traceback."""
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = proc.stderr.strip().splitlines()
    errors = [ln for ln in lines if ln.startswith("error: ")]
    assert len(errors) == 1, proc.stderr
    assert any(ln.startswith("hint: ") for ln in lines), proc.stderr
    for needle in needles:
        assert needle in errors[0] or needle in proc.stderr, (needle, proc.stderr)


def debugfs_lines(image: Path, *commands: str) -> str:
    out = subprocess.run(["debugfs", "-f", "-", str(image)], input="\n".join(commands) + "\n",
                         capture_output=True, text=True, check=True)
    return out.stdout


def run_checked(cmd: Sequence[str | Path]) -> str:
    return subprocess.run([str(c) for c in cmd], check=True, capture_output=True, text=True).stdout


def file_bytes(image: Path, path: str) -> bytes:
    """A file's (or symlink's) content as the kernel reads it: ``debugfs dump``, cut at the ``Size:`` its
    inode states. debugfs 1.47.2 pads an inline-data file shorter than its 60-byte i_block with NULs."""
    import re
    import tempfile

    size = re.search(r"Size: (\d+)", debugfs_lines(image, f"stat {path}"))
    assert size is not None, f"{path} not in {image}"
    with tempfile.TemporaryDirectory() as tmp:
        dest = Path(tmp) / "dumped"
        subprocess.run(["debugfs", "-R", f"dump {path} {dest}", str(image)], check=True, capture_output=True)
        return dest.read_bytes()[:int(size.group(1))]


# The object-store test servers, started once for the whole session (sync, compressed sync and verify --all share
# them; every test makes its own bucket).
@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config) -> Iterator[Ceph]:
    """radosgw on a one-node Ceph, started once; a cluster that cannot start fails the tests with the reason."""
    with start_ceph(tmp_path_factory.mktemp("ceph")) as cluster:
        report_at_end(pytestconfig, f"S3 tests: radosgw of a one-node Ceph 16 ({cluster.object_store}) "
                                    f"started in {cluster.started_in:.1f} s")
        yield cluster


@pytest.fixture(scope="session")
def gcs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_gcs_emulator(tmp_path_factory.mktemp("gcs"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def pg() -> Iterator[PgServer]:
    """One throwaway PostgreSQL server for the whole run (tests/db/pgserver.py); databases: tests/db/seed.py."""
    from tests.db import pgserver

    server = pgserver.start_server()
    try:
        yield server
    finally:
        pgserver.remove(server)
