"""The GCS test server on loopback (gcp-storage-emulator), and clients for the test servers.

The emulator runs as a subprocess on a free 127.0.0.1 port and is stopped by the caller. The S3
server is a real one, radosgw of a one-node Ceph cluster: tests/storage/ceph.py.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def which_script(name: str) -> str | None:
    beside = Path(sys.executable).parent / name  # a venv's scripts, even when the venv is not activated
    return str(beside) if beside.is_file() else shutil.which(name)


def _tool(name: str, pip_name: str) -> str:
    found = which_script(name)
    if found is None:  # the test extra lists it; install on first use rather than skip
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", pip_name], check=True)
        found = which_script(name)
    if found is None:
        raise RuntimeError(f"{name} not found after pip install {pip_name}")
    return found


@dataclass
class Server:
    name: str
    endpoint: str
    proc: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _start(name: str, argv: list[str], port: int, log: Path, probe: str) -> Server:
    with log.open("wb") as out:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            urllib.request.urlopen(endpoint + probe, timeout=2).close()
            return Server(name, endpoint, proc, log)
        except urllib.error.HTTPError:
            return Server(name, endpoint, proc, log)  # answering, even if with an error status
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"{name} did not answer on {endpoint} within 60 s: {log.read_text()[-2000:]}")


def start_gcs_emulator(workdir: Path) -> Server:
    port = free_port()
    argv = [_tool("gcp-storage-emulator", "gcp-storage-emulator"), "start", "--host=127.0.0.1",
            f"--port={port}", "--in-memory"]
    return _start("gcp-storage-emulator", argv, port, workdir / "gcs.log", "/storage/v1/b")


def s3_client(endpoint: str, access_key: str, secret_key: str) -> object:
    import boto3
    from botocore.config import Config

    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id=access_key, aws_secret_access_key=secret_key,
                        config=Config(s3={"addressing_style": "path"}))


def gcs_client(endpoint: str) -> object:
    os.environ["STORAGE_EMULATOR_HOST"] = endpoint
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    return storage.Client(project="e2b-artifact-test", credentials=AnonymousCredentials())  # type: ignore[no-untyped-call]
