"""scripts/setup.sh, the README's first step: one line per step on the terminal, the tools' output in a log."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.conftest import REPO


def run_setup(venv: Path, log: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "E2B_ARTIFACT_VENV": str(venv), "E2B_ARTIFACT_SETUP_LOG": str(log)}
    return subprocess.run(["bash", str(REPO / "scripts" / "setup.sh")], capture_output=True, text=True, env=env,
                          check=False, timeout=600)


def fake_venv(tmp_path: Path, exit_code: int) -> Path:
    """A venv whose "python" prints 200 lines, as pip does on a fresh machine, then exits ``exit_code``."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    fake = venv / "bin" / "python"
    fake.write_text("#!/bin/sh\nfor i in $(seq 200); do echo \"noise line $i\"; done\n"
                    "echo 'ERROR: no such package' >&2\n" f"exit {exit_code}\n")
    fake.chmod(0o755)
    return venv


def test_setup_prints_one_line_per_step_and_logs_the_tools_output(tmp_path: Path) -> None:
    log = tmp_path / "setup.log"
    proc = run_setup(fake_venv(tmp_path, 0), log)
    assert proc.returncode == 0, proc.stderr
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    assert lines and all(ln.startswith("setup: ") for ln in lines), lines
    assert any("pip install e2b-artifact" in ln for ln in lines)
    assert len(lines) <= 6, lines
    assert "noise line 200" in log.read_text()


def test_setup_failure_names_the_step_and_the_log(tmp_path: Path) -> None:
    venv = fake_venv(tmp_path, 3)
    log = tmp_path / "setup.log"
    proc = run_setup(venv, log)
    assert proc.returncode == 4, proc.stderr
    assert "noise line 1\n" not in proc.stderr and "noise line 100" not in proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
    assert errors == ["error: setup step failed: pip install e2b-artifact into " + str(venv) + " (exit 3)"]
    assert f"hint: the full output is in {log}" in proc.stderr
    assert "ERROR: no such package" in proc.stderr  # the last lines of the log are shown
    assert "noise line 200" in log.read_text()
