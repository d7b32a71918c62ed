"""The one wrapper through which every external tool is run.

It logs the command line, captures output, and turns a missing tool or a
failure into an :class:`ArtifactError` whose hint names the fix.
"""

from __future__ import annotations

import logging
import shlex
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

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
    """Run ``cmd`` with captured output; raise :class:`ArtifactError` on failure.

    ``cmd[0]`` is resolved with :func:`which`, so a missing tool gives an
    install hint instead of ``FileNotFoundError``. ``merge_stderr`` sends stderr
    into stdout, keeping the two in order.
    """
    argv = [which(str(cmd[0]))] + [str(a) for a in cmd[1:]]
    log.debug("run: %s", shlex.join(argv))
    try:
        proc = subprocess.run(
            argv, input=input, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT if merge_stderr else subprocess.PIPE,
            env=env, cwd=cwd, timeout=timeout, check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise ArtifactError(
            f"{Path(argv[0]).name} did not finish within {timeout:g} s",
            hint=hint or "retry; run with --debug to see the command line",
            code=ExitCode.TOOL,
        ) from exc
    if check and proc.returncode not in ok_codes:
        raise ArtifactError(
            f"{Path(argv[0]).name} failed (exit {proc.returncode}): {last_line(proc.stderr or proc.stdout)}",
            hint=hint or f"run with --debug to see the command line: {shlex.join(argv)}",
            code=ExitCode.TOOL,
        )
    return proc


def last_line(output: bytes) -> str:
    """The last non-empty line of a tool's output, for one-line error messages."""
    lines = [ln.strip() for ln in output.decode(errors="replace").splitlines() if ln.strip()]
    return lines[-1] if lines else "(no output)"
