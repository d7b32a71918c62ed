"""Firecracker release names as E2B writes them.

Three forms, read as upstream's ``fcversion`` package reads them: legacy ``v1.14.1_431f1fc``
(a release and the commit of E2B's build), bare ``v1.10.1`` (dev builds), and E2B's own fork
``v1.14-0.2.0`` (the upstream line ``v1.14`` plus an E2B semver whose major is the snapshot
compatibility contract). A name in none of these forms is not a version.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

_SEMVER = r"(\d+)\.(\d+)\.(\d+)(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?"
_LEGACY = re.compile(rf"^v?{_SEMVER}_(.*)$")
_E2B = re.compile(r"^v(\d+)\.(\d+)-(\d+)\.(\d+)\.(\d+)$")
_BARE = re.compile(rf"^v?{_SEMVER}$")
_LOOSE = re.compile(r"^v?(\d+)\.(\d+)(?:\.(\d+))?")

VersionForm = Literal["legacy", "bare", "e2b"]


@dataclass(frozen=True)
class FirecrackerVersion:
    name: str
    form: VersionForm
    release: tuple[int, int, int]  # upstream Firecracker; for the e2b form only the line is known (patch 0)
    commit: str = ""  # legacy form
    e2b: tuple[int, int, int] | None = None  # e2b form

    @property
    def line_key(self) -> str | None:
        """The release line a version resolves through: ``v1.14`` (legacy), ``v1.14-0`` (e2b); bare: none."""
        if self.form == "legacy":
            return f"v{self.release[0]}.{self.release[1]}"
        if self.form == "e2b" and self.e2b is not None:
            return f"v{self.release[0]}.{self.release[1]}-{self.e2b[0]}"
        return None


def read_firecracker_version(text: str | None) -> FirecrackerVersion | None:
    """The version ``text`` names, in upstream's three forms; ``None`` when it is in none of them."""
    name = (text or "").strip()
    if "_" in name:
        m = _LEGACY.match(name)
        if m is None:
            return None
        return FirecrackerVersion(name, "legacy", (int(m[1]), int(m[2]), int(m[3])), commit=m[4])
    if m := _E2B.match(name):
        return FirecrackerVersion(name, "e2b", (int(m[1]), int(m[2]), 0), e2b=(int(m[3]), int(m[4]), int(m[5])))
    if m := _BARE.match(name):
        return FirecrackerVersion(name, "bare", (int(m[1]), int(m[2]), int(m[3])))
    return None


def parse_firecracker_version(text: str | None) -> tuple[int, int, int] | None:
    """The upstream release of ``text`` as (major, minor, patch), for rule comparisons; ``None`` when absent.

    Accepts every form of :func:`read_firecracker_version`, and leniently a bare ``1.10`` as rule data
    and hand-written metadata use it. Compare with a pair directly: ``parse(...) >= (1, 8)``.
    """
    strict = read_firecracker_version(text)
    if strict is not None:
        return strict.release
    m = _LOOSE.match((text or "").strip())
    if not m:
        return None
    return int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)
