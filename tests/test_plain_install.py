"""A plain ``pip install .`` (no extras) into a fresh venv reads every codec the tool needs.

lz4 and zstandard are core dependencies: a V5 header's LZ4 block decodes, and Debian's cloud kernel (a
bzImage with an LZ4 payload, unpacked with ``apt-get download`` + ``dpkg-deb -x``) is extracted and every
option is checked. The venv is built once per run from this checkout, without the test extra and without
PYTHONPATH, and everything below runs from a directory outside the checkout.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from e2b_artifacts.kernel.rules import load_rules
from tests import kernels
from tests.conftest import REPO
from tests.verify.craft import header_v4

BUILD = str(uuid.UUID(int=0x5))
PARENT = str(uuid.UUID(int=0x3))


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}


@pytest.fixture(scope="module")
def plain_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    venv = tmp_path_factory.mktemp("plain") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True)
    proc = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(REPO)],
                          capture_output=True, text=True, env=_clean_env(), check=False, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return venv


def run_in(venv: Path, cwd: Path, *argv: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, cwd=cwd, env=_clean_env(),
                          check=False, timeout=600)


def test_plain_install_has_no_extras_and_the_codecs(plain_venv: Path, tmp_path: Path) -> None:
    proc = run_in(plain_venv, tmp_path, plain_venv / "bin" / "python", "-c",
                  "import importlib.metadata as m, e2b_artifacts, lz4.block, lz4.frame, zstandard; "
                  "print(e2b_artifacts.__file__); print(sorted(d.metadata['Name'].lower() for d in m.distributions()))")
    assert proc.returncode == 0, proc.stderr
    where, names = proc.stdout.splitlines()
    assert where.startswith(str(plain_venv)), where  # the installed copy, not this checkout
    assert not {"pytest", "boto3", "botocore"} & set(names)  # no extra came along


def test_plain_install_decodes_a_v5_header(plain_venv: Path, tmp_path: Path) -> None:
    # V5 (serialization_v5.go): V4 framing, mappings as columnar varints in the LZ4 block; a V3 parent mapped.
    size = 8 << 20
    data = header_v4(size=size, build_id=BUILD, v5=True,
                     mappings=[(0, 4 << 20, PARENT, 0), (4 << 20, 4 << 20, BUILD, 0)])
    (tmp_path / "memfile.header").write_bytes(data)
    script = ("import json, pathlib; from e2b_artifacts import header; "
              "h = header.parse_header(pathlib.Path('memfile.header').read_bytes()); "
              "print(json.dumps({'version': h.version, 'size': h.size, "
              "'mappings': [[m.offset, m.length, m.build_id] for m in h.mappings]}))")
    proc = run_in(plain_venv, tmp_path, plain_venv / "bin" / "python", "-c", script)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc == {"version": 5, "size": size,
                   "mappings": [[0, 4 << 20, PARENT], [4 << 20, 4 << 20, BUILD]]}


def test_plain_install_checks_every_option_of_debians_cloud_kernel(plain_venv: Path, tmp_path: Path) -> None:
    deb = kernels.debian_cloud_kernel()
    tool = plain_venv / "bin" / "e2b-artifact"
    out = tmp_path / "vmlinux"
    extracted = run_in(plain_venv, tmp_path, tool, "kernel", "extract", deb.vmlinuz, "-o", out, "--json")
    assert extracted.returncode == 0, extracted.stderr
    assert json.loads(extracted.stdout)["compression"] == "lz4"
    rules = {f"kernel.{r.id}" for r in load_rules().rules if "x86_64" in r.arch}
    for kernel in (deb.vmlinuz, out):  # the bzImage itself (its payload decompressed), then the extracted ELF
        proc = run_in(plain_venv, tmp_path, tool, "kernel", "check", kernel, "--config", deb.config,
                      "--firecracker-version", "v1.14-0.2.0", "--json")
        assert proc.returncode == 1, proc.stderr  # Debian builds virtio-mmio as a module: a real FAIL
        doc = json.loads(proc.stdout)
        by_check = {f["check"]: f for f in doc["findings"]}
        assert rules | {"kernel.devices"} <= set(by_check)
        assert {by_check[c]["decided_by"] for c in rules | {"kernel.devices"}} == {"config"}
        assert "kernel.payload" not in by_check  # the LZ4 payload was read
        assert by_check["kernel.version"]["message"].startswith("Linux version 6.1.")
        assert by_check["kernel.virtio-mmio"]["status"] == "FAIL"
        assert by_check["kernel.format"]["status"] == ("FAIL" if kernel == deb.vmlinuz else "ok")
