"""Every parser, on generated and mutated inputs: a result or an ArtifactError, never another exception,
and bounded memory (scripts/fuzz.py runs the same targets for minutes)."""

from __future__ import annotations

import tracemalloc
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from e2b_artifacts.errors import ArtifactError
from tests.fuzz_targets import MEMORY_CAP, TARGETS

EXAMPLES = 150


def _check(name: str, data: Any) -> None:
    tracemalloc.start()
    try:
        TARGETS[name].run(data)
    except ArtifactError:
        pass
    finally:
        used = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert used < MEMORY_CAP, f"{name}: {used} bytes for one input"


def _property(name: str) -> Any:
    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(TARGETS[name].inputs)
    def run(data: Any) -> None:
        _check(name, data)
    return run


@pytest.mark.parametrize("name", list(TARGETS))
def test_parser_contract(name: str) -> None:
    _property(name)()
