"""The one wrapper through which every external tool is run.

:func:`spawn` starts a tool in its own process group and kills the whole group
when its ``with`` block ends, however it ends; :func:`run` is built on it for
tools that run to completion with captured output. Both log the command line
and turn a missing tool into an :class:`ArtifactError` whose hint names the fix.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import select
import selectors
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from .errors import ArtifactError, ExitCode

log = logging.getLogger("e2b_artifacts.run")

# Which Debian package provides a tool, for the "not installed" hint.
PACKAGE_OF = {
    "mke2fs": "e2fsprogs",
    "debugfs": "e2fsprogs",
    "e2fsck": "e2fsprogs",
    "resize2fs": "e2fsprogs",
    "e2undo": "e2fsprogs",
    "tune2fs": "e2fsprogs",
    "dumpe2fs": "e2fsprogs",
    "qemu-system-x86_64": "qemu-system-x86",
    "skopeo": "skopeo",
    "umoci": "umoci",
}

Cmd = Sequence[str | Path]
PIPE = subprocess.PIPE
DEVNULL = subprocess.DEVNULL
STDOUT = subprocess.STDOUT
# What a child's stdin/stdout/stderr is connected to: PIPE, DEVNULL, STDOUT (stderr only), a file, or inherited.
Stream = int | IO[Any] | None
_PR_SET_PDEATHSIG = 1


def which(tool: str) -> str:
    """Absolute path of ``tool`` (also searching the sbin directories), or raise."""
    found = shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin:/usr/local/sbin")
    if found is None:
        package = PACKAGE_OF.get(tool, tool)
        raise ArtifactError(
            f"{tool} is not installed",
            hint=f"install it: apt-get install {package} (or run scripts/setup.sh)",
            code=ExitCode.TOOL,
        )
    return found


def installed(tool: str) -> bool:
    """Whether :func:`which` finds ``tool``."""
    try:
        which(tool)
    except ArtifactError:
        return False
    return True


class Child:
    """A tool started by :func:`spawn`: its pipes, and its exit status.

    :meth:`poll` and :meth:`wait` leave the exited process unreaped (a zombie) until
    :func:`spawn` has killed its group: while the leader is unreaped its process id,
    which is also the group id, cannot be reused, so the kill cannot hit another group.
    """

    def __init__(self, proc: subprocess.Popen[bytes], argv: list[str]) -> None:
        self.proc = proc
        self.argv = argv
        self.name = Path(argv[0]).name

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def stdin(self) -> IO[bytes] | None:
        return self.proc.stdin

    @property
    def stdout(self) -> IO[bytes] | None:
        return self.proc.stdout

    @property
    def stderr(self) -> IO[bytes] | None:
        return self.proc.stderr

    def poll(self) -> int | None:
        """The exit status (negative: killed by that signal), or None while it runs."""
        if self.proc.returncode is not None:
            return self.proc.returncode
        try:
            info = os.waitid(os.P_PID, self.proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:  # reaped behind our back
            return self.proc.poll()
        if info is None:
            return None
        return info.si_status if info.si_code == os.CLD_EXITED else -info.si_status

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the exit status; ``subprocess.TimeoutExpired`` after ``timeout`` seconds."""
        if timeout is None and self.proc.returncode is None:
            with contextlib.suppress(ChildProcessError):
                os.waitid(os.P_PID, self.proc.pid, os.WEXITED | os.WNOWAIT)  # blocks until it exits
        deadline = time.monotonic() + (timeout or 0.0)
        delay = 0.0005
        while (status := self.poll()) is None:
            if time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(self.argv, timeout or 0.0)
            time.sleep(min(delay, max(deadline - time.monotonic(), 0.0)))
            delay = min(delay * 2, 0.05)
        return status

    def kill_group(self) -> None:
        """SIGKILL every process of the child's group, then reap the child."""
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)


@contextlib.contextmanager
def spawn(
    cmd: Cmd,
    *,
    stdin: Stream = DEVNULL,
    stdout: Stream = PIPE,
    stderr: Stream = PIPE,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    die_with_parent: bool = False,
) -> Iterator[Child]:
    """Start ``cmd`` in its own process group for the ``with`` block; the whole group is killed at its end.

    For children that run long or whose output is followed while they run. ``cmd[0]``
    is resolved with :func:`which`. The group is killed (SIGKILL) when the block ends,
    also on an exception, so nothing the tool started outlives it. ``die_with_parent``
    also has the kernel kill the child if this process dies without unwinding (SIGKILL).
    """
    argv = [which(str(cmd[0]))] + [str(a) for a in cmd[1:]]
    log.debug("run: %s", shlex.join(argv))
    proc = subprocess.Popen(argv, stdin=stdin, stdout=stdout, stderr=stderr, env=env, cwd=cwd, process_group=0,
                            preexec_fn=_die_with_parent if die_with_parent else None)
    child = Child(proc, argv)
    try:
        yield child
    finally:
        child.kill_group()
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()


@functools.cache
def _libc() -> Any:
    import ctypes

    return ctypes.CDLL(None, use_errno=True)


def _die_with_parent() -> None:
    """In the child before exec: get SIGKILL when this process dies."""
    _libc().prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def run(
    cmd: Cmd,
    *,
    input: bytes | None = None,
    check: bool = True,
    ok_codes: Sequence[int] = (0,),
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    hint: str = "",
    timeout: float | None = None,
    merge_stderr: bool = False,
) -> subprocess.CompletedProcess[bytes]:
    """Run ``cmd`` to completion with captured output; raise :class:`ArtifactError` on failure.

    ``cmd[0]`` is resolved with :func:`which`, so a missing tool gives an
    install hint instead of ``FileNotFoundError``. ``merge_stderr`` sends stderr
    into stdout, keeping the two in order. After ``timeout`` seconds the tool's
    process group is killed.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    with spawn(cmd, stdin=DEVNULL if input is None else PIPE, stderr=STDOUT if merge_stderr else PIPE,
               env=env, cwd=cwd) as child:
        try:
            out, err = _exchange(child, input, deadline)
            code = child.wait(None if deadline is None else max(deadline - time.monotonic(), 0.0))
        except subprocess.TimeoutExpired as exc:
            raise ArtifactError(
                f"{child.name} did not finish within {timeout:g} s",
                hint=hint or "retry; run with --debug to see the command line",
                code=ExitCode.TOOL,
            ) from exc
    proc = subprocess.CompletedProcess(child.argv, code, out, None if merge_stderr else err)
    if check and code not in ok_codes:
        raise ArtifactError(
            f"{child.name} failed (exit {code}): {last_line(proc.stderr or proc.stdout)}",
            hint=hint or f"run with --debug to see the command line: {shlex.join(child.argv)}",
            code=ExitCode.TOOL,
        )
    return proc


def _exchange(child: Child, input: bytes | None, deadline: float | None) -> tuple[bytes, bytes]:
    """Feed ``input`` to the child's stdin while reading its stdout and stderr to their ends."""
    to_write = memoryview(input or b"")
    written = 0
    stdin = child.stdin
    readers = [s for s in (child.stdout, child.stderr) if s is not None]
    chunks: dict[int, list[bytes]] = {s.fileno(): [] for s in readers}
    with selectors.DefaultSelector() as sel:
        if stdin is not None:
            if to_write:
                sel.register(stdin.fileno(), selectors.EVENT_WRITE)
            else:
                stdin.close()
        for fd in chunks:
            sel.register(fd, selectors.EVENT_READ)
        while sel.get_map():
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise subprocess.TimeoutExpired(child.argv, 0.0)
            for key, _ in sel.select(remaining):
                if key.fd not in chunks:  # stdin
                    assert stdin is not None
                    try:
                        written += os.write(key.fd, to_write[written:written + select.PIPE_BUF])
                    except BrokenPipeError:
                        written = len(to_write)
                    if written >= len(to_write):
                        sel.unregister(key.fd)
                        stdin.close()
                    continue
                data = os.read(key.fd, 1 << 16)
                if data:
                    chunks[key.fd].append(data)
                else:
                    sel.unregister(key.fd)
    out = b"".join(chunks[child.stdout.fileno()]) if child.stdout is not None else b""
    err = b"".join(chunks[child.stderr.fileno()]) if child.stderr is not None else b""
    return out, err


def last_line(output: bytes) -> str:
    """The last non-empty line of a tool's output, for one-line error messages."""
    lines = [ln.strip() for ln in output.decode(errors="replace").splitlines() if ln.strip()]
    return lines[-1] if lines else "(no output)"
