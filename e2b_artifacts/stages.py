"""Wall-clock time per stage of one run (``build --debug`` prints them, ``--json`` carries them).

A stage is named where the work happens (``with times.stage("mke2fs"): ...``); time spent in
a stage twice adds up. Stages nest exclusively: a stage entered inside another (``fsck`` inside
``inject``) is counted only as itself, not in the enclosing one too, so the stages add up to the
run. What no stage covers shows as ``other``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

# The stages of ``build --from-image``, in the order they run (the list plus resize and manifest).
IMAGE_STAGES = ("resolve", "decompress", "flatten", "mke2fs", "xattrs", "resize", "fidelity", "inject", "fsck",
                "manifest")


class StageTimes:
    """Seconds per stage, in the order the stages first ran, and the run's total."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.started = time.perf_counter()
        self.total: float | None = None
        self._nested: list[float] = []  # per open stage: seconds its inner stages took

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        self.seconds.setdefault(name, 0.0)
        self._nested.append(0.0)
        t0 = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - t0
            inner = self._nested.pop()
            self.seconds[name] += elapsed - inner
            if self._nested:
                self._nested[-1] += elapsed

    def finish(self) -> None:
        self.total = time.perf_counter() - self.started

    def to_json(self) -> dict[str, float]:
        doc = {name: round(value, 3) for name, value in self.seconds.items()}
        if self.total is not None:
            doc["other"] = round(max(self.total - sum(self.seconds.values()), 0.0), 3)
            doc["total"] = round(self.total, 3)
        return doc

    def table(self) -> list[str]:
        """``stage  seconds  share`` lines, the stages in the order they ran, then other and total."""
        total = self.total if self.total is not None else sum(self.seconds.values())
        rows = list(self.seconds.items())
        if self.total is not None:
            rows.append(("other", max(self.total - sum(self.seconds.values()), 0.0)))
        lines = [f"{'stage':<11} {'seconds':>8} {'share':>6}"]
        lines += [f"{name:<11} {value:8.3f} {value / total if total else 0.0:6.1%}" for name, value in rows]
        lines.append(f"{'total':<11} {total:8.3f}")
        return lines
