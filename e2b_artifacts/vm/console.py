"""Following a VMM's serial console live: the init line, the marker, a panic, silence, the VMM's exit.

The VMM runs through :func:`runner.spawn` in its own process group, which is always
killed when watching ends; it also dies with this process (``die_with_parent``).
Everything it prints, also while dying, goes into the console log.
"""

from __future__ import annotations

import contextlib
import os
import re
import selectors
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

from .. import runner
from ..diagnose import clean
from ..errors import ArtifactError, ExitCode

Outcome = Literal["marker", "settled", "panic", "exited", "silent", "timeout", "vmm-error"]

INIT_RE = re.compile(r"Run (\S+) as init process")
# The kernel prints INIT_RE before execve; these say the exec failed, so init never ran.
INIT_FAILED_RE = re.compile(r"Requested init \S+ failed|\S+ exists but couldn't execute it|Failed to execute \S+ "
                            r"\(error|No working init found")
PANIC_RE = re.compile(r"Kernel panic - not syncing")
PANIC_TAIL_S = 1.0  # after a panic line, keep reading this long for the rest of the trace


@dataclass
class Watch:
    """What following one VMM run showed; times in seconds since the VMM started."""

    outcome: Outcome
    seconds: float
    detail: str
    init: str | None = None
    init_at: float | None = None
    init_failed: str | None = None  # the console line saying the kernel could not execute init
    marker_at: float | None = None


class VmmError(Exception):
    """The VMM refused the configuration (an API fault, a missing socket)."""


def compile_expect(expect: str | None) -> re.Pattern[str] | None:
    """The ``--expect`` marker as a regular expression; a bad one is a usage error."""
    if expect is None:
        return None
    try:
        return re.compile(expect)
    except re.error as exc:
        raise ArtifactError(f"--expect is not a valid regular expression: {exc}",
                            hint="e.g. --expect 'e2b-envd-standin: started'", code=ExitCode.USAGE) from exc


def watch_vm(argv: list[str], console_log: Path, *, timeout: float, hang_after: float, settle: float | None,
             expect: re.Pattern[str] | None, fail: re.Pattern[str] | None,
             configure: Callable[[], None] | None = None) -> Watch:
    """Run the VMM, follow its console into ``console_log`` until a verdict, always kill it.

    ``configure`` runs once the VMM has started (Firecracker's API calls); a
    :class:`VmmError` from it ends the run as ``vmm-error``.
    """
    started = time.monotonic()
    with console_log.open("ab") as log, \
            runner.spawn(argv, stdout=runner.PIPE, stderr=runner.STDOUT, die_with_parent=True) as child:
        assert child.stdout is not None
        try:
            if configure is not None:
                try:
                    configure()
                except VmmError as exc:
                    log.write(f"e2b-artifact: {exc}\n".encode())
                    return Watch("vmm-error", time.monotonic() - started, str(exc))
            return _follow(child, child.stdout, log, started, timeout=timeout, hang_after=hang_after,
                           settle=settle, expect=expect, fail=fail)
        finally:
            child.kill_group()
            # Whatever the VMM printed while dying still belongs in the log.
            with contextlib.suppress(OSError, ValueError):
                os.set_blocking(child.stdout.fileno(), False)
                log.write(child.stdout.read() or b"")


def _follow(child: runner.Child, stream: IO[bytes], log: IO[bytes], started: float, *, timeout: float,
            hang_after: float, settle: float | None, expect: re.Pattern[str] | None,
            fail: re.Pattern[str] | None) -> Watch:
    fd = stream.fileno()
    os.set_blocking(fd, False)
    deadline = started + timeout
    last_output = started
    pending = b""
    watch = Watch("timeout", 0.0, "")
    failed_at: float | None = None
    failed_line = ""
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while True:
            now = time.monotonic()
            watch.seconds = now - started
            if failed_at is not None and now - failed_at >= PANIC_TAIL_S:
                watch.outcome, watch.detail = "panic", failed_line
                return watch
            if settle is not None and watch.init_at is not None and failed_at is None \
                    and now - (started + watch.init_at) >= settle:
                watch.outcome, watch.detail = "settled", f"{watch.init} alive for {settle:g} s"
                return watch
            if now >= deadline:
                watch.outcome = "timeout"
                watch.detail = (f"no verdict within {timeout:g} s" if watch.init_at is not None
                                else f"init not reached within {timeout:g} s")
                return watch
            if watch.init_at is None and failed_at is None and now - last_output >= hang_after:
                watch.outcome, watch.detail = "silent", f"no console output for {hang_after:g} s before init"
                return watch
            if not sel.select(timeout=0.1):
                continue
            chunk = os.read(fd, 1 << 16)
            now = time.monotonic()
            if not chunk:
                lines = [pending] if pending else []
                pending = b""
                found = _scan(lines, watch, now - started, expect, fail)
                if found == "marker":
                    return watch
                code = child.wait()
                if failed_at is not None or found == "fail":
                    watch.outcome, watch.detail = "panic", failed_line or watch.detail
                else:
                    watch.outcome, watch.detail = "exited", f"the VMM exited (status {code})" + (
                        f" after init ({watch.init}) started" if watch.init_at is not None else " before init ran")
                return watch
            log.write(chunk)
            log.flush()
            last_output = now
            *lines, pending = (pending + chunk).split(b"\n")
            found = _scan(lines, watch, now - started, expect, fail)
            if found == "marker":
                return watch
            if found == "fail" and failed_at is None:
                failed_at, failed_line = now, watch.detail


def _scan(lines: list[bytes], watch: Watch, at: float, expect: re.Pattern[str] | None,
          fail: re.Pattern[str] | None) -> str | None:
    """Update ``watch`` from complete console lines; "marker" or "fail" when one shows."""
    found: str | None = None
    for raw in lines:
        line = clean(raw.decode(errors="replace"))
        if watch.init_at is None:
            m = INIT_RE.search(line)
            if m:
                watch.init, watch.init_at = m.group(1), at
        failed = INIT_FAILED_RE.search(line) if watch.init_failed is None else None
        if failed:
            watch.init_failed = line[failed.start():].strip()
        if expect is not None and expect.search(line):
            watch.outcome, watch.marker_at, watch.detail = "marker", at, line
            return "marker"
        if found is None and fail is not None and fail.search(line):
            found, watch.detail = "fail", line
    return found


def append_log(path: Path, text: str) -> None:
    with path.open("a") as fh:
        fh.write(text)
