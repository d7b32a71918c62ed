"""Checks of a build's source made before the image is written: envd itself, and /sbin/init for systemd mode.

``build --init systemd`` needs ``/sbin/init`` to resolve to an executable file inside the source. The
source is looked at where it is (a tree, the members of a tar, the entries of a flattened OCI image) so a
missing systemd fails at once, not after mke2fs has written the whole image.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from . import elf
from .errors import ArtifactError, ExitCode

INIT_PATH = "/sbin/init"
_MAX_LINKS = 40  # like the kernel's limit on symlinks followed in one lookup


@dataclass(frozen=True)
class Entry:
    """What one path of a source is, as far as resolving a path needs."""

    kind: str  # file, dir, symlink, or another inode kind
    target: str = ""  # symlink target
    executable: bool = False  # a file with any x bit


Lookup = Callable[[str], Entry | None]  # absolute path in the source -> its entry (not following it)


def resolve(lookup: Lookup, path: str) -> tuple[str, Entry | None]:
    """Follow ``path`` inside the source (absolute targets are relative to the source's root)."""
    pending = [p for p in PurePosixPath(path).parts if p != "/"]
    current: list[str] = []
    links = 0
    while pending:
        part = pending.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            if current:
                current.pop()
            continue
        candidate = "/" + "/".join([*current, part])
        entry = lookup(candidate)
        if entry is None:
            return candidate, None
        if entry.kind == "symlink":
            links += 1
            if links > _MAX_LINKS:
                return candidate, Entry("symlink loop")
            target = PurePosixPath(entry.target)
            if target.is_absolute():
                current = []
            pending = [p for p in target.parts if p != "/"] + pending
            continue
        if pending and entry.kind != "dir":
            return candidate, entry
        current.append(part)
    final = "/" + "/".join(current)
    return final, lookup(final) if current else Entry("dir")


def require_init(lookup: Lookup, source: str) -> None:
    """Refuse (exit 3) unless ``/sbin/init`` resolves to an executable file in the source."""
    real, entry = resolve(lookup, INIT_PATH)
    if entry is None:
        missing_itself = real == INIT_PATH or INIT_PATH.startswith(real + "/")
        problem = f"{INIT_PATH} does not exist" if missing_itself else f"{INIT_PATH} leads to {real}, which is missing"
    elif entry.kind != "file" or not entry.executable:
        problem = f"{INIT_PATH} resolves to {real}, which is not an executable file ({entry.kind})"
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
