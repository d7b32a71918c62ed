"""Checks of a build's source made before the image is written: envd itself, and /sbin/init for systemd mode.

``build --init systemd`` needs ``/sbin/init`` to resolve to an executable file inside the source. The
source is looked at where it is (a tree, the members of a tar, the entries of a flattened OCI image) so a
missing systemd fails at once, not after mke2fs has written the whole image.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterable
from pathlib import Path

from . import elf
from .errors import ArtifactError, ExitCode
from .symlinks import Entry, Lookup, follow

INIT_PATH = "/sbin/init"


def require_init(lookup: Lookup, source: str) -> None:
    """Refuse (exit 3) unless ``/sbin/init`` resolves to an executable file in the source."""
    walk = follow(lookup, INIT_PATH)
    real, entry = walk.path, walk.entry
    if entry is None:
        missing_itself = real == INIT_PATH or INIT_PATH.startswith(real + "/")
        problem = f"{INIT_PATH} does not exist" if missing_itself else f"{INIT_PATH} leads to {real}, which is missing"
    elif walk.stop == "loop" or entry.kind != "file" or not entry.executable:
        kind = "symlink loop" if walk.stop == "loop" else entry.kind
        problem = f"{INIT_PATH} resolves to {real}, which is not an executable file ({kind})"
    else:
        return
    raise ArtifactError(f"--init systemd needs /sbin/init in {source}, but {problem}",
                        hint="install systemd in the source (upstream links /sbin/init to systemd), "
                             "or build with --init envd", code=ExitCode.BAD_INPUT)


def dir_lookup(root: Path) -> Lookup:
    def lookup(path: str) -> Entry | None:
        try:
            st = os.lstat(root / path.lstrip("/"))
        except OSError:
            return None
        if stat.S_ISLNK(st.st_mode):
            return Entry("symlink", os.readlink(root / path.lstrip("/")))
        if stat.S_ISDIR(st.st_mode):
            return Entry("dir")
        if stat.S_ISREG(st.st_mode):
            return Entry("file", executable=bool(st.st_mode & 0o111))
        return Entry("special")
    return lookup


def mapping_lookup(entries: dict[str, Entry]) -> Lookup:
    """A lookup over absolute paths, e.g. the members of a tar."""
    return lambda path: Entry("dir") if path == "/" else entries.get(path)


def flat_lookup(flat: Iterable[tuple[str, str, int, str | None]]) -> Lookup:
    """A lookup over ``(path, kind, mode, symlink target)`` rows (a flattened OCI image)."""
    return mapping_lookup({path: Entry(kind, target or "", bool(mode & 0o111)) for path, kind, mode, target in flat})


def envd_problem(data: bytes) -> str | None:
    """Why ``data`` is not what upstream ships as envd (a static ELF executable); None when it is."""
    executable = elf.parse(data)
    if executable is None:
        return "is a script" if data[:2] == b"#!" else "is not an ELF executable"
    if executable.interpreter is not None:
        return (f"is dynamically linked (interpreter {executable.interpreter}), so the image must hold its loader "
                "and libraries")
    return None


def check_envd(envd: Path, data: bytes, *, strict: bool, warn: Callable[[str], None]) -> None:
    """Warn about an envd that is not a static ELF; with ``strict``, refuse it (exit 3)."""
    problem = envd_problem(data)
    if problem is None:
        return
    message = f"envd {envd} {problem}; upstream's envd is a static ELF"
    if strict:
        raise ArtifactError(message, hint="use upstream's static envd build (CGO_ENABLED=0), or drop --strict",
                            code=ExitCode.BAD_INPUT)
    warn(f"warning: {message} (--strict refuses this)")
