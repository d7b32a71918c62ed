"""A throwaway PostgreSQL cluster on 127.0.0.1 for the tests (Debian's postgresql 15).

postgres refuses to run as root, so as root the cluster belongs to the ``postgres`` system
user (``runuser``); as any other user it runs as that user.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

PG_BIN_CANDIDATES = [Path("/usr/lib/postgresql") / v / "bin" for v in ("17", "16", "15")]


def pg_bin() -> Path:
    for candidate in PG_BIN_CANDIDATES:
        if (candidate / "initdb").exists():
            return candidate
    raise RuntimeError("PostgreSQL server binaries not found: apt-get install postgresql")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class PgServer:
    root: Path
    port: int
    bin: Path
    as_user: str | None  # run the server binaries as this user (when we are root)

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def _run(self, *args: str) -> None:
        cmd = list(args)
        if self.as_user:
            cmd = ["runuser", "-u", self.as_user, "--", *cmd]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            log = self.root / "server.log"
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(f"{' '.join(cmd)} failed: {proc.stderr}\n{tail}")

    def start(self) -> None:
        data = self.root / "data"
        self._run(str(self.bin / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                  "--no-sync", "--locale=C")
        options = (f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off")
        self._run(str(self.bin / "pg_ctl"), "-D", str(data), "-l", str(self.root / "server.log"), "-w",
                  "-t", "60", "-o", options, "start")

    def stop(self) -> None:
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.root / "data"), "-m", "fast", "-w", "stop")


def start_server(attempts: int = 3) -> PgServer:
    """initdb + start on a free port (another port if that one was taken meanwhile)."""
    as_user = "postgres" if os.geteuid() == 0 else None
    for attempt in range(attempts):
        # as root: under /tmp, which the postgres user can traverse whatever $TMPDIR is
        root = Path(tempfile.mkdtemp(prefix="e2b-artifact-pg-", dir="/tmp" if as_user else None))
        if as_user:
            entry = pwd.getpwnam(as_user)
            os.chown(root, entry.pw_uid, entry.pw_gid)
        server = PgServer(root=root, port=free_port(), bin=pg_bin(), as_user=as_user)
        try:
            server.start()
            return server
        except BaseException:
            shutil.rmtree(root, ignore_errors=True)
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


def remove(server: PgServer) -> None:
    try:
        server.stop()
    finally:
        shutil.rmtree(server.root, ignore_errors=True)
