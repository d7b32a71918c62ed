#!/usr/bin/env python3
"""Run the parser properties of tests/test_parser_properties.py longer, on demand.

    scripts/fuzz.py --minutes 2                 # every parser, 2 minutes each
    scripts/fuzz.py --examples 20000 header     # one parser, a number of inputs

Prints, per parser, the inputs tried and the failures: any exception other than ArtifactError, or an
input whose peak Python allocation passed the memory cap. Exits 1 when something failed. The process
runs under a 4 GiB address-space limit so a decompression bomb ends as a MemoryError, not an OOM kill.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
import traceback
import tracemalloc
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO)]

from hypothesis import HealthCheck, given, settings  # noqa: E402

from e2b_artifacts.errors import ArtifactError  # noqa: E402
from tests.fuzz_targets import MEMORY_CAP, TARGETS  # noqa: E402

BATCH = 500


def fuzz(name: str, *, seconds: float | None, examples: int | None, failures: list[str]) -> tuple[int, int]:
    """Run one target until the time or the count is used up; returns (inputs tried, clean errors)."""
    tried = refused = 0
    deadline = time.monotonic() + seconds if seconds is not None else None

    @settings(max_examples=BATCH, deadline=None, database=None, derandomize=False,
              suppress_health_check=list(HealthCheck))
    @given(TARGETS[name].inputs)
    def batch(data: Any) -> None:
        nonlocal tried, refused
        if (deadline is not None and time.monotonic() > deadline) or (examples is not None and tried >= examples):
            return
        tried += 1
        tracemalloc.start()
        try:
            TARGETS[name].run(data)
        except ArtifactError:
            refused += 1
        except Exception as exc:
            failures.append(f"{name}: {type(exc).__name__}: {exc}\n  input: {data!r:.300}\n"
                            + "".join(traceback.format_exception(exc)[-3:]))
        finally:
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
        if peak >= MEMORY_CAP:
            failures.append(f"{name}: {peak} bytes allocated for one input\n  input: {data!r:.300}")

    while True:
        before = tried
        batch()
        done_time = deadline is not None and time.monotonic() > deadline
        done_count = examples is not None and tried >= examples
        if done_time or done_count or tried == before:
            return tried, refused


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("parsers", nargs="*", choices=[[], *TARGETS], help="default: all")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--minutes", type=float, help="per parser (default 1)")
    group.add_argument("--examples", type=int, help="inputs per parser")
    args = parser.parse_args()
    resource.setrlimit(resource.RLIMIT_AS, (4 << 30, resource.RLIM_INFINITY))
    names = args.parsers or list(TARGETS)
    seconds = None if args.examples else (args.minutes or 1.0) * 60
    failures: list[str] = []
    print(f"{'parser':<16} {'inputs':>9} {'ArtifactError':>14} {'other':>6} {'seconds':>8}")
    for name in names:
        start, before = time.monotonic(), len(failures)
        tried, refused = fuzz(name, seconds=seconds, examples=args.examples, failures=failures)
        print(f"{name:<16} {tried:>9} {refused:>14} {len(failures) - before:>6} {time.monotonic() - start:>8.1f}",
              flush=True)
    for failure in dict.fromkeys(failures):
        print("\nFAIL " + failure)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
