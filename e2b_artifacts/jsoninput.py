"""JSON documents read from input files: every way ``json.loads`` can fail becomes an :class:`ArtifactError`."""

from __future__ import annotations

import json
import sys
from typing import Any

from .errors import ArtifactError, ExitCode

MAX_DEPTH = 64  # nesting of objects and arrays; far beyond any real document, well inside the recursion limit


def load_json(raw: bytes, where: str, hint: str, code: ExitCode = ExitCode.BAD_INPUT) -> Any:
    """``json.loads`` whose every failure is an :class:`ArtifactError`: bad syntax or encoding, NaN,
    integers past Python's digit limit, nesting deeper than :data:`MAX_DEPTH`."""
    try:
        doc = json.loads(raw, parse_constant=_no_constant)
    except RecursionError as exc:
        raise ArtifactError(f"{where}: not valid JSON: nested deeper than {MAX_DEPTH} levels", hint=hint,
                            code=code) from exc
    except (UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError, and int() past the digit limit
        detail = (f"a number of more than {sys.get_int_max_str_digits()} digits" if "integer string conversion"
                  in str(exc) else str(exc))
        raise ArtifactError(f"{where}: not valid JSON: {detail}", hint=hint, code=code) from exc
    if _depth_over(doc, MAX_DEPTH):
        raise ArtifactError(f"{where}: not valid JSON: nested deeper than {MAX_DEPTH} levels", hint=hint, code=code)
    return doc


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def _depth_over(doc: Any, limit: int) -> bool:
    stack = [(doc, 1)]
    while stack:
        value, depth = stack.pop()
        children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else None
        if children is None:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False
