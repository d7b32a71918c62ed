"""Firecracker release names as E2B writes them.

Three forms, read as upstream's ``fcversion.New`` reads them (e2b-dev/infra
packages/shared/pkg/fcversion/version.go): legacy ``v1.14.1_431f1fc`` (a release and the commit
of E2B's build), bare ``v1.10.1`` (dev builds), and E2B's own fork ``v1.14-0.2.0`` (the upstream
line ``v1.14`` plus an E2B semver whose major is the snapshot compatibility contract). A name in
none of these forms is not a version. Like upstream: a name holding ``_`` is legacy or nothing;
the release parts are strict semver (Masterminds' ``StrictNewVersion``: no leading zeros, no
``v`` inside, ASCII digits only); nothing is trimmed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

# semver.org's grammar, which StrictNewVersion enforces; [0-9] because Python's \d also takes non-ASCII digits.
_NUM = r"(?:0|[1-9][0-9]*)"
_PRE_ID = r"(?:0|[1-9][0-9]*|[0-9]*[A-Za-z-][0-9A-Za-z-]*)"
_BUILD = r"(?:\+[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?"
_SEMVER = re.compile(rf"({_NUM})\.({_NUM})\.({_NUM})(?:-{_PRE_ID}(?:\.{_PRE_ID})*)?{_BUILD}")
_E2B = re.compile(r"v([0-9]+)\.([0-9]+)-([0-9]+\.[0-9]+\.[0-9]+)")  # upstream's e2bVersionRe
_LOOSE = re.compile(r"v?([0-9]+)\.([0-9]+)(?:\.([0-9]+))?")

VersionForm = Literal["legacy", "bare", "e2b"]
FORM_NAMES = {"legacy": "legacy release_commit form", "bare": "bare upstream release", "e2b": "E2B fork form"}


@dataclass(frozen=True)
class FirecrackerVersion:
    name: str
    form: VersionForm
    release: tuple[int, int, int]  # upstream Firecracker; for the e2b form only the line is known (patch 0)
    commit: str = ""  # legacy form
    e2b: tuple[int, int, int] | None = None  # e2b form

    @property
    def line_key(self) -> str | None:
        """The release line a version resolves through (upstream's ``LDKey``): ``v1.14`` (legacy),
        ``v1.14-0`` (e2b); bare versions have none."""
        if self.form == "legacy":
            return f"v{self.release[0]}.{self.release[1]}"
        if self.form == "e2b" and self.e2b is not None:
            return f"v{self.release[0]}.{self.release[1]}-{self.e2b[0]}"
        return None

    def describe(self) -> str:
        """One line for people: the form, the line and what it means."""
        upstream = f"upstream Firecracker v{self.release[0]}.{self.release[1]}"
        if self.form == "e2b" and self.e2b is not None:
            return (f"{FORM_NAMES['e2b']}: line {self.line_key} ({upstream}, E2B release "
                    f"{'.'.join(map(str, self.e2b))}, snapshot contract major {self.e2b[0]})")
        if self.form == "legacy":
            return (f"{FORM_NAMES['legacy']}: line {self.line_key} ({upstream}.{self.release[2]}, "
                    f"commit {self.commit!r})")
        return f"{FORM_NAMES['bare']}: {upstream}.{self.release[2]}, no release line"

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "form": self.form, "line": self.line_key,
                "release": ".".join(map(str, self.release)),
                "commit": self.commit if self.form == "legacy" else None,
                "e2b": ".".join(map(str, self.e2b)) if self.e2b is not None else None}


def _strict_release(text: str) -> tuple[int, int, int] | None:
    m = _SEMVER.fullmatch(text)
    return (int(m[1]), int(m[2]), int(m[3])) if m else None


def read_firecracker_version(text: str | None) -> FirecrackerVersion | None:
    """The version ``text`` names, in upstream's three forms; ``None`` when it is in none of them."""
    name = text or ""
    if "_" in name:  # upstream: split at "_", the first part is the release, the second the commit
        release_text, commit = name.split("_")[:2]
        release = _strict_release(release_text.removeprefix("v"))
        return FirecrackerVersion(name, "legacy", release, commit=commit) if release else None
    if m := _E2B.fullmatch(name):
        line = _strict_release(f"{m[1]}.{m[2]}.0")
        e2b = _strict_release(m[3])
        if line is None or e2b is None:
            return None
        return FirecrackerVersion(name, "e2b", line, e2b=e2b)
    release = _strict_release(name.removeprefix("v"))
    return FirecrackerVersion(name, "bare", release) if release else None


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
