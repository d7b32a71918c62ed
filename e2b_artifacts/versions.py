"""Firecracker release names as E2B writes them: ``v1.12.1_d990331``, ``v1.7.0``, ``1.10``."""

from __future__ import annotations

import re

_FC_VERSION = re.compile(r"^v?(\d+)\.(\d+)(?:\.(\d+))?")


def parse_firecracker_version(text: str | None) -> tuple[int, int, int] | None:
    """``v1.12.1_d990331`` -> (1, 12, 1); ``None`` when absent or not a release.

    Compare with a (major, minor) pair directly: ``parse(...) >= (1, 8)``.
    """
    m = _FC_VERSION.match((text or "").strip())
    if not m:
        return None
    return int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)
