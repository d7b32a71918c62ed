"""Following a path through symlinks inside a tree that is not mounted: an ext4 image, the members of a
tar, a source directory. Absolute targets are relative to the tree's root, as for a process chrooted there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

MAX_LINKS = 40  # like the kernel's limit on symlinks followed in one lookup


@dataclass(frozen=True)
class Entry:
    """What one path of a tree is, as far as resolving a path needs."""

    kind: str  # file, dir, symlink, or another inode kind
    target: str = ""  # symlink target
    executable: bool = False  # a file with any x bit


Lookup = Callable[[str], Entry | None]  # absolute path in the tree -> its entry (not following it)


@dataclass(frozen=True)
class Walk:
    """Where following a path ended."""

    path: str  # the resolved path, or the one the walk stopped at
    entry: Entry | None  # what is at ``path`` (None: nothing)
    stop: Literal["", "missing", "loop", "not a directory"] = ""  # why the walk stopped short, if it did


def follow(lookup: Lookup, path: str, max_links: int = MAX_LINKS) -> Walk:
    """Follow ``path`` (and every symlink on the way) through the tree ``lookup`` describes."""
    pending = [p for p in path.split("/") if p]
    current: list[str] = []
    links = 0
    while pending:
        part = pending.pop(0)
        if part == ".":
            continue
        if part == "..":
            if current:
                current.pop()
            continue
        candidate = "/" + "/".join([*current, part])
        entry = lookup(candidate)
        if entry is None:
            return Walk(candidate, None, "missing")
        if entry.kind == "symlink":
            links += 1
            if links > max_links:
                return Walk(candidate, entry, "loop")
            if entry.target.startswith("/"):
                current = []
            pending = [p for p in entry.target.split("/") if p] + pending
            continue
        if pending and entry.kind != "dir":
            return Walk(candidate, entry, "not a directory")
        current.append(part)
    final = "/" + "/".join(current)
    return Walk(final, lookup(final) if current else Entry("dir"))
