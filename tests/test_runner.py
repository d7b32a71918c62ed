"""runner: spawn kills the tool's whole process group however its block ends; run on top of it."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from e2b_artifacts import runner
from e2b_artifacts.errors import ArtifactError, ExitCode

# A child that starts a grandchild in its own group, says the grandchild's pid and waits for it.
PARENT_OF_SLEEPER = ["sh", "-c", "sleep 300 & echo $!; wait"]


def _gone(pid: int, within: float = 10.0) -> bool:
    """True once ``pid`` no longer runs (gone, or a zombie waiting for its new parent to reap it)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.02)
    return False


def _read_pid(child: runner.Child) -> int:
    assert child.stdout is not None
    return int(child.stdout.readline())


def test_spawn_kills_child_and_grandchild_on_exit() -> None:
    with runner.spawn(PARENT_OF_SLEEPER) as child:
        grandchild = _read_pid(child)
        assert child.poll() is None and not _gone(grandchild, within=0.2)
        assert os.getpgid(grandchild) == child.pid, "the child leads its own process group"
    assert _gone(child.pid) and _gone(grandchild)


def test_spawn_kills_the_group_on_an_exception() -> None:
    with pytest.raises(RuntimeError, match="boom"), runner.spawn(PARENT_OF_SLEEPER) as child:
        grandchild = _read_pid(child)
        raise RuntimeError("boom")
    assert _gone(child.pid) and _gone(grandchild)


def test_spawn_kills_what_an_exited_child_left_behind() -> None:
    """The child exits at once; the grandchild it left in its group dies with the block."""
    with runner.spawn(["sh", "-c", "sleep 300 >/dev/null 2>&1 & echo $!"]) as child:
        grandchild = _read_pid(child)
        assert child.wait(timeout=10) == 0
        assert child.poll() == 0 and not _gone(grandchild, within=0.2)
    assert _gone(grandchild)


def test_wait_reports_signals_and_times_out() -> None:
    with runner.spawn(["sh", "-c", "kill -TERM $$"]) as child:
        assert child.wait(timeout=10) == -15
    with runner.spawn(["sleep", "30"]) as child:
        t0 = time.monotonic()
        with pytest.raises(subprocess.TimeoutExpired):
            child.wait(timeout=0.2)
        assert time.monotonic() - t0 < 5


def test_run_leaves_no_grandchild() -> None:
    proc = runner.run(["sh", "-c", "sleep 300 >/dev/null 2>&1 & echo $!"])
    assert proc.returncode == 0
    assert _gone(int(proc.stdout))


def test_run_timeout_kills_the_group_and_says_so() -> None:
    """The grandchild keeps the output pipe open: only killing the whole group ends the run."""
    t0 = time.monotonic()
    with pytest.raises(ArtifactError) as caught:
        runner.run(PARENT_OF_SLEEPER, timeout=0.5)
    assert time.monotonic() - t0 < 10
    assert caught.value.message == "sh did not finish within 0.5 s"
    assert caught.value.code == ExitCode.TOOL and "--debug" in caught.value.hint
    with pytest.raises(ArtifactError) as caught:
        runner.run(["sleep", "30"], timeout=0.2, hint="the tool hung")
    assert caught.value.hint == "the tool hung"


def test_missing_tool_gives_the_install_hint() -> None:
    for start in (lambda: runner.run(["no-such-tool-e2b"]), lambda: runner.spawn(["no-such-tool-e2b"]).__enter__()):
        with pytest.raises(ArtifactError) as caught:
            start()
        assert caught.value.message == "no-such-tool-e2b is not installed"
        assert caught.value.hint == "install it: apt-get install no-such-tool-e2b (or run scripts/setup.sh)"
        assert caught.value.code == ExitCode.TOOL


def test_run_captures_feeds_input_and_checks_codes() -> None:
    proc = runner.run(["sh", "-c", "cat; echo err >&2"], input=b"x" * 300_000)
    assert proc.stdout == b"x" * 300_000 and proc.stderr == b"err\n"
    merged = runner.run(["sh", "-c", "echo one; echo two >&2; echo three"], merge_stderr=True)
    assert merged.stdout == b"one\ntwo\nthree\n" and merged.stderr is None
    assert runner.run(["sh", "-c", "exit 3"], ok_codes=(0, 3)).returncode == 3
    assert runner.run(["sh", "-c", "exit 5"], check=False).returncode == 5
    with pytest.raises(ArtifactError) as caught:
        runner.run(["sh", "-c", "echo first >&2; echo last words >&2; exit 4"])
    assert caught.value.message == "sh failed (exit 4): last words"
    assert caught.value.code == ExitCode.TOOL
    # a tool that ignores its input and exits: no BrokenPipeError escapes
    assert runner.run(["true"], input=b"y" * 1_000_000).returncode == 0
