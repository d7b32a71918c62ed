"""Prove an ext4 image holds exactly what a flattened image tar says.

Compares, per path: type, permission bits (incl. setuid/setgid/sticky), owner,
size, content hash (blake3), symlink target, xattrs, device numbers and
hard-link groups (same tar inode <=> same ext4 inode). Paths missing from the
image, extra paths (``/lost+found`` aside) and leftover ``.wh.`` whiteout files
are mismatches too. Reads the image only through debugfs: one ``ls`` batch per
tree level, one ``stat`` batch, and ``cat <inode>`` batches streamed through a
pipe for hashing (nothing extracted, never a mount).
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import blake3

from . import e2fsprogs
from .e2fsprogs import Ext4Image, Inode
from .errors import ArtifactError
from .fsutil import atomic_write_bytes
from .oci.flatten import WHITEOUT, FlatEntry

IGNORED = {"/lost+found"}  # mke2fs always creates it
_DUMP_BATCH_BYTES = 256 << 20
_BIG_FILE = 64 << 20  # hashed from a temp file instead of held in memory


@dataclass
class PathMismatch:
    """One field of one path where the image differs from the tar."""

    path: str
    field: str
    expected: Any
    actual: Any


@dataclass
class FidelityReport:
    image: str
    entries: int
    mismatches: list[PathMismatch] = field(default_factory=list)
    checked: list[str] = field(default_factory=lambda: ["type", "mode", "uid", "gid", "size", "content",
                                                         "symlink target", "xattrs", "device numbers",
                                                         "hard-link groups", "missing/extra paths",
                                                         "leftover whiteouts"])

    @property
    def ok(self) -> bool:
        return not self.mismatches

    def summary(self) -> str:
        return f"fidelity: {self.entries} entries, {len(self.mismatches)} mismatches"

    def to_json(self) -> dict[str, Any]:
        return {"image": self.image, "entries": self.entries, "mismatch_count": len(self.mismatches),
                "checked": self.checked, "mismatches": [asdict(m) for m in self.mismatches]}

    def write(self, path: Path) -> None:
        atomic_write_bytes(path, (json.dumps(self.to_json(), indent=2, default=_printable) + "\n").encode())


def _printable(value: object) -> object:
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


def compare(expected: Sequence[FlatEntry], image: Path) -> FidelityReport:
    view = Ext4Image(image)
    actual_paths = {path: entry.ino for path, entry in view.walk() if not _ignored(path)}
    report = FidelityReport(str(image), len(expected))
    add = report.mismatches.append
    wanted = {e.path: e for e in expected}
    for path in sorted(actual_paths.keys() - wanted.keys()):
        name = path.rsplit("/", 1)[-1]
        add(PathMismatch(path, "leftover whiteout" if name.startswith(WHITEOUT) else "extra path", None, "present"))
    present = [e for e in expected if e.path in actual_paths]
    for e in expected:
        if e.path not in actual_paths:
            add(PathMismatch(e.path, "missing path", e.kind, None))
    # stat by inode number: no path lookups, and hard links are read once
    by_ino = view.stat_many([f"<{ino}>" for ino in dict.fromkeys(actual_paths[e.path] for e in present)])
    stats = {e.path: by_ino[f"<{actual_paths[e.path]}>"] for e in present}
    hashes = _content_hashes(image, [(e.path, node) for e in present if (node := stats[e.path]) is not None
                                     and node.kind == "file" and e.kind == "file"])
    for e in present:
        node = stats[e.path]
        if node is None:
            add(PathMismatch(e.path, "missing path", e.kind, None))
            continue
        _compare_one(e, node, hashes.get(node.ino), add)
    _compare_link_groups(present, stats, add)
    return report


def _ignored(path: str) -> bool:
    return any(path == p or path.startswith(p + "/") for p in IGNORED)


def _compare_one(e: FlatEntry, node: Inode, content_hash: str | None, add: Any) -> None:
    checks: list[tuple[str, object, object]] = [("type", e.kind, node.kind), ("mode", oct(e.mode), oct(node.mode)),
                                                ("uid", e.uid, node.uid), ("gid", e.gid, node.gid)]
    if e.kind == "file" and node.kind == "file":
        checks += [("size", e.size, node.size), ("content", e.content_hash, content_hash)]
    if e.kind == "symlink":
        checks.append(("symlink target", e.target, node.target))
    if e.kind in ("chardev", "blockdev"):
        checks.append(("device numbers", e.rdev, node.rdev))
    checks.append(("xattrs", _xattr_view(e.xattrs), _xattr_view(node.xattrs)))
    for name, want, got in checks:
        if want != got:
            add(PathMismatch(e.path, name, want, got))


def _xattr_view(values: dict[str, bytes]) -> dict[str, str]:
    return {k: v.hex() for k, v in sorted(values.items())}


def _compare_link_groups(present: Iterable[FlatEntry], stats: dict[str, Inode | None], add: Any) -> None:
    by_tar: dict[int, set[str]] = defaultdict(set)
    by_ext4: dict[int, set[str]] = defaultdict(set)
    files = [e for e in present if e.kind != "dir"]
    for e in files:
        by_tar[e.inode].add(e.path)
        node = stats.get(e.path)
        if node is not None:
            by_ext4[node.ino].add(e.path)
    for e in files:
        node = stats.get(e.path)
        if node is None:
            continue
        want, got = by_tar[e.inode], by_ext4[node.ino]
        if want != got:
            add(PathMismatch(e.path, "hard-link group", sorted(want), sorted(got)))


def _content_hashes(image: Path, files: Sequence[tuple[str, Inode]]) -> dict[int, str]:
    """blake3 of each regular file's content, by inode: ``cat <ino>`` batches of up to 256 MiB on one pipe."""
    unique: dict[int, Inode] = {}
    for _, node in files:
        unique.setdefault(node.ino, node)
    result: dict[int, str] = {}
    batch: list[Inode] = []
    batch_bytes = 0
    big = [node for node in unique.values() if node.size > _BIG_FILE]
    if big:
        result.update(_dump_and_hash(image, big))
    for node in unique.values():
        if node.size > _BIG_FILE:
            continue
        batch.append(node)
        batch_bytes += node.size
        if batch_bytes >= _DUMP_BATCH_BYTES:
            result.update(_cat_and_hash(image, batch))
            batch, batch_bytes = [], 0
    if batch:
        result.update(_cat_and_hash(image, batch))
    return result


def _cat_and_hash(image: Path, batch: Sequence[Inode]) -> dict[int, str]:
    with _as_fidelity_error():
        return {ino: blake3.blake3(data).hexdigest() for ino, data in e2fsprogs.cat_inodes(image, batch)}


def _dump_and_hash(image: Path, inodes: Sequence[Inode]) -> dict[int, str]:
    """Big files: ``dump <ino>`` one at a time into a private temp dir beside the image, hash, delete."""
    hashes = {}
    with tempfile.TemporaryDirectory(prefix=".e2b-artifact-fidelity-", dir=image.parent) as tmp:
        dest = Path(tmp) / "file"
        for node in inodes:
            with _as_fidelity_error():
                e2fsprogs.dump_inode(image, node, dest)
            h = blake3.blake3()
            with dest.open("rb") as fh:
                while chunk := fh.read(1 << 20):
                    h.update(chunk)
            hashes[node.ino] = h.hexdigest()
            dest.unlink()
    return hashes


@contextlib.contextmanager
def _as_fidelity_error() -> Iterator[None]:
    try:
        yield
    except ArtifactError as exc:
        raise ArtifactError(f"fidelity check {exc.message}", hint=exc.hint, code=exc.code) from exc
