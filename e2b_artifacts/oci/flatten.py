"""Flatten image layers into one tar, following the OCI image spec's whiteout rules.

Pass 1 reads every layer's headers (from the uncompressed layer tars in the
cache) into an in-memory tree: ``.wh.NAME`` removes NAME from lower layers,
``.wh..wh..opq`` empties a directory of lower-layer content, a non-directory
replaces a whole subtree, directories merge, later layers win. Whiteouts of a
layer apply before its additions (they only address lower layers). Hard links
share one inode object, so a link made in layer 2 to a layer-1 file stays one
inode even across layers; a link whose target was later replaced or deleted
keeps the content it was made with.

Nothing is written until the whole image was checked: absolute names, ``..``,
a member written through a symlink, or a hard link to a missing file fail
before the output tar exists. Pass 2 writes the result: all directories first
(parents before children), then every inode in layer order with its data
copied from the layer tar by offset (``copy_file_range``), its other names as
hard links right after it.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import blake3

from .. import tarmember
from ..errors import ArtifactError, ExitCode
from ..fsutil import ShortCopy, atomic_write_bytes, copy_range
from ..tarmember import XATTR_PREFIX, member_xattrs, safe_member_name, xattr_pax_headers

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
_BLOCK = 512


@dataclass(eq=False)
class Source:
    """One tar member that ends up (or may end up) in the image; for non-directories also the inode."""

    layer: int
    order: int
    info: tarfile.TarInfo
    tar_path: Path
    xattrs: dict[str, bytes]
    content_hash: str | None = None  # blake3 of a regular file's bytes

    @property
    def kind(self) -> str:
        return tarmember.kind(self.info) or "file"  # hard links never become a Source; _add refuses other types


@dataclass(eq=False)
class Node:
    source: Source | None  # None: a directory no layer declared (implied by a child)
    layer: int
    children: dict[str, Node] | None = None  # directories only

    @property
    def is_dir(self) -> bool:
        return self.children is not None


@dataclass
class FlatEntry:
    """One path of the flattened image, as the fidelity check sees it."""

    path: str  # absolute, e.g. /etc/passwd
    kind: str
    mode: int
    uid: int
    gid: int
    size: int
    content_hash: str | None
    target: str | None  # symlink target
    rdev: tuple[int, int] | None
    xattrs: dict[str, bytes]
    inode: int  # entries with the same number are hard links of one inode


@dataclass
class FlatImage:
    entries: list[FlatEntry] = field(default_factory=list)
    content_bytes: int = 0  # regular file bytes rounded to 4 KiB + a block per directory
    xattrs: dict[str, dict[str, bytes]] = field(default_factory=dict)
    whiteouts_applied: int = 0
    opaque_dirs: int = 0


def _unsafe(layer: int, message: str) -> ArtifactError:
    return ArtifactError(f"layer {layer + 1}: {message}",
                         hint="the image is malformed or malicious; nothing was written outside the image "
                              "(no rootfs was built)", code=ExitCode.BAD_INPUT)


class Flattener:
    def __init__(self) -> None:
        self.root = Node(None, -1, {})
        self.whiteouts = 0
        self.opaques = 0
        # the result, once the layers are in (add_layer after plan() is not supported)
        self.planned: tuple[list[tuple[str, Node]], list[tuple[Source, list[str]]]] | None = None
        self.described: FlatImage | None = None

    # -- pass 1 ---------------------------------------------------------------------------

    def add_layer(self, layer: int, tar_path: Path, index_dir: Path | None = None) -> None:
        """Apply one layer (an uncompressed tar); ``index_dir`` keeps its parsed headers for the next build."""
        members = read_layer(layer, tar_path, index_dir)
        self.planned = self.described = None
        additions = []
        for order, (name, info, content_hash) in enumerate(members):
            base = name.rsplit("/", 1)[-1]
            if base.startswith(WHITEOUT):
                parent = name.rpartition("/")[0]
                if base == OPAQUE:
                    self._opaque(parent, layer)
                elif not base.startswith(WHITEOUT + WHITEOUT):  # other .wh..wh.* is aufs metadata
                    self._whiteout(f"{parent}/{base[len(WHITEOUT):]}".lstrip("/"), layer)
            else:
                additions.append((order, name, info, content_hash))
        for order, name, info, content_hash in additions:
            self._add(layer, order, name, info, tar_path, content_hash)

    def _walk_to_parent(self, name: str, layer: int, *, create: bool) -> tuple[Node | None, str]:
        parts = name.split("/")
        node = self.root
        for i, part in enumerate(parts[:-1]):
            assert node.children is not None
            child = node.children.get(part)
            if child is None:
                if not create:
                    return None, parts[-1]
                child = Node(None, layer, {})
                node.children[part] = child
            elif not child.is_dir:
                if not create:
                    return None, parts[-1]
                where = "/".join(parts[: i + 1])
                if child.source is not None and child.source.kind == "symlink":
                    raise _unsafe(layer, f"member {name!r} is written through the symlink {where!r} "
                                         f"(-> {child.source.info.linkname!r})")
                raise _unsafe(layer, f"member {name!r}: {where!r} is not a directory")
            node = child
        return node, parts[-1]

    def _whiteout(self, name: str, layer: int) -> None:
        parent, base = self._walk_to_parent(name, layer, create=False)
        if parent is not None and parent.children is not None and parent.children.pop(base, None) is not None:
            self.whiteouts += 1

    def _opaque(self, name: str, layer: int) -> None:
        if not name:
            node: Node | None = self.root
        else:
            parent, base = self._walk_to_parent(name, layer, create=False)
            node = parent.children.get(base) if parent is not None and parent.children is not None else None
        if node is not None and node.children is not None:
            node.children.clear()  # whiteouts run before the layer's additions: everything here is lower
            self.opaques += 1

    def _add(self, layer: int, order: int, name: str, info: tarfile.TarInfo, tar_path: Path,
             content_hash: str | None) -> None:
        if not name:  # the root directory itself
            self.root.source = Source(layer, order, info, tar_path, member_xattrs(info))
            return
        parent, base = self._walk_to_parent(name, layer, create=True)
        assert parent is not None and parent.children is not None
        existing = parent.children.get(base)
        if info.islnk():
            target = self._hardlink_target(layer, name, info.linkname)
            parent.children[base] = Node(target, layer)
            return
        if info.issparse():
            raise _unsafe(layer, f"member {name!r} is a GNU sparse file, which is not supported")
        if tarmember.kind(info) is None:
            raise _unsafe(layer, f"member {name!r} has unsupported tar type {info.type!r}")
        source = Source(layer, order, info, tar_path, member_xattrs(info))
        source.content_hash = content_hash
        if info.isdir():
            if existing is not None and existing.is_dir:
                existing.source, existing.layer = source, layer  # directories merge
            else:
                parent.children[base] = Node(source, layer, {})
        else:
            parent.children[base] = Node(source, layer)

    def _hardlink_target(self, layer: int, name: str, linkname: str) -> Source:
        try:
            target_name = safe_member_name(linkname)
        except ArtifactError as exc:
            raise _unsafe(layer, f"hard link {name!r} -> {linkname!r}: {exc.message}") from exc
        parent, base = self._walk_to_parent(target_name, layer, create=False)
        node = parent.children.get(base) if parent is not None and parent.children is not None else None
        if node is None or node.source is None or node.is_dir:
            raise _unsafe(layer, f"hard link {name!r} points at {linkname!r}, which is "
                                 f"{'a directory' if node is not None and node.is_dir else 'not in the image'}")
        return node.source

    # -- result ---------------------------------------------------------------------------

    def walk(self) -> Iterator[tuple[str, Node]]:
        """Every path below the root, parents before children, names sorted."""
        stack: list[tuple[str, Node]] = [("", self.root)]
        while stack:
            prefix, node = stack.pop()
            assert node.children is not None
            names = sorted(node.children)
            for base in names:
                yield f"{prefix}/{base}", node.children[base]
            # subdirectories' contents follow, depth-first: parents always come before children
            stack.extend((f"{prefix}/{base}", node.children[base]) for base in reversed(names)
                         if node.children[base].is_dir)

    def plan(self) -> tuple[list[tuple[str, Node]], list[tuple[Source, list[str]]]]:
        """Directories (parents first) and inodes in layer order with their sorted names (made once)."""
        if self.planned is None:
            self.planned = self._make_plan()
        return self.planned

    def _make_plan(self) -> tuple[list[tuple[str, Node]], list[tuple[Source, list[str]]]]:
        dirs: list[tuple[str, Node]] = []
        names: dict[int, tuple[Source, list[str]]] = {}
        for path, node in self.walk():
            if node.is_dir:
                dirs.append((path, node))
            else:
                assert node.source is not None
                names.setdefault(id(node.source), (node.source, []))[1].append(path)
        inodes = sorted(names.values(), key=lambda item: (item[0].layer, item[0].order))
        for _, paths in inodes:
            paths.sort()
        return dirs, inodes


Member = tuple[str, tarfile.TarInfo, str | None]  # safe name, header, blake3 of a regular file's data
_INDEX_VERSION = 1


def read_layer(layer: int, tar_path: Path, index_dir: Path | None) -> list[Member]:
    """Every member of a layer tar with its content hash; from the saved index when there is one."""
    index_file = index_dir / f"{tar_path.name}.v{_INDEX_VERSION}.json" if index_dir is not None else None
    rows: list[list[Any]] | None = None
    if index_file is not None and index_file.is_file():
        with contextlib.suppress(OSError, ValueError):
            rows = json.loads(index_file.read_text())
    if rows is None:
        rows = _scan_layer(layer, tar_path)
        if index_file is not None:
            with contextlib.suppress(OSError):
                index_file.parent.mkdir(parents=True, exist_ok=True)
                atomic_write_bytes(index_file, json.dumps(rows).encode())
    members = []
    for row in rows:
        info = _info_from_row(row)
        try:
            name = safe_member_name(info.name)
        except ArtifactError as exc:
            raise _unsafe(layer, exc.message) from exc
        members.append((name, info, row[-1]))
    return members


def _scan_layer(layer: int, tar_path: Path) -> list[list[Any]]:
    rows = []
    raw = os.open(tar_path, os.O_RDONLY)
    try:
        with tarfile.open(tar_path, "r:", encoding="utf-8", errors="surrogateescape") as tar:
            for i in tar:
                content_hash = _hash_range(raw, i.offset_data, i.size) if i.isreg() and not i.issparse() else None
                rows.append([i.name, i.type.decode("latin-1"), i.mode, i.uid, i.gid, i.size, i.mtime, i.linkname,
                             i.devmajor, i.devminor, i.offset, i.offset_data, i.issparse(),
                             {k: v for k, v in i.pax_headers.items() if k.startswith(XATTR_PREFIX)},
                             content_hash])
    except tarfile.TarError as exc:
        raise ArtifactError(f"layer {layer + 1} is not a valid tar: {exc}", hint="the image is damaged",
                            code=ExitCode.BAD_INPUT) from exc
    finally:
        os.close(raw)
    return rows


def _info_from_row(row: list[Any]) -> tarfile.TarInfo:
    info = tarfile.TarInfo(row[0])
    (info.type, info.mode, info.uid, info.gid, info.size, info.mtime, info.linkname, info.devmajor,
     info.devminor, info.offset, info.offset_data) = (row[1].encode("latin-1"), *row[2:12])
    if row[12]:
        info.sparse = b""  # not None = sparse; only that matters: such members are refused
    info.pax_headers = row[13]
    return info


def _hash_range(fd: int, offset: int, size: int) -> str:
    h = blake3.blake3()
    end = offset + size
    while offset < end:
        chunk = os.pread(fd, min(1 << 20, end - offset), offset)
        if not chunk:
            raise ArtifactError("a layer tar ends inside a file", hint="the layer is truncated",
                                code=ExitCode.BAD_INPUT)
        h.update(chunk)
        offset += len(chunk)
    return h.hexdigest()


# -- pass 2 -------------------------------------------------------------------------------

def _header(path: str, source: Source | None, *, link_to: str | None = None) -> bytes:
    ti = tarfile.TarInfo(path.lstrip("/"))
    ti.uname = ti.gname = ""
    if source is None:  # implied directory
        ti.type, ti.mode, ti.uid, ti.gid, ti.mtime = tarfile.DIRTYPE, 0o755, 0, 0, 0
        return ti.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
    info = source.info
    ti.mode, ti.uid, ti.gid, ti.mtime = info.mode & 0o7777, info.uid, info.gid, info.mtime
    if link_to is not None:
        ti.type, ti.linkname = tarfile.LNKTYPE, link_to.lstrip("/")
        return ti.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
    ti.type = tarfile.REGTYPE if info.isreg() else info.type
    if info.isreg():
        ti.size = info.size
    ti.linkname = info.linkname if info.issym() else ""
    ti.devmajor, ti.devminor = info.devmajor, info.devminor
    ti.pax_headers = xattr_pax_headers(source.xattrs)
    return ti.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


class _TarWriter:
    """Appends to the output; adjacent ranges of the same layer tar become one ``copy_file_range``."""

    def __init__(self, out: Path | int) -> None:
        # a path is created (never overwritten) and closed at the end; a descriptor (a pipe) stays the caller's
        self.owns_out = not isinstance(out, int)
        self.out = out if isinstance(out, int) else os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        self.fds: dict[Path, int] = {}
        self.pending: tuple[int, int, int] | None = None  # fd, start, end
        self.is_pipe = stat.S_ISFIFO(os.fstat(self.out).st_mode)

    def copy(self, tar_path: Path, start: int, length: int) -> None:
        if tar_path not in self.fds:
            self.fds[tar_path] = os.open(tar_path, os.O_RDONLY)
        fd = self.fds[tar_path]
        if self.pending is not None and self.pending[0] == fd and self.pending[2] == start:
            self.pending = (fd, self.pending[1], start + length)
            return
        self.flush()
        self.pending = (fd, start, start + length)

    def write(self, data: bytes) -> None:
        self.flush()
        os.write(self.out, data)

    def flush(self) -> None:
        if self.pending is not None:
            fd, start, end = self.pending
            self.pending = None
            try:
                if self.is_pipe:
                    _splice_range(fd, self.out, start, end)
                else:
                    copy_range(fd, self.out, start, end)  # appends: the output's file position advances
            except ShortCopy as exc:
                raise ArtifactError("a layer tar ends inside a file", hint="the layer is truncated",
                                    code=ExitCode.BAD_INPUT) from exc

    def close(self) -> None:
        if self.owns_out:
            os.close(self.out)
        for fd in self.fds.values():
            os.close(fd)


def describe(flat: Flattener) -> FlatImage:
    """What the flattened tar holds (entries, sizes, xattrs), without writing it: known before mke2fs starts,
    so the tar can be streamed into it."""
    if flat.described is not None:
        return flat.described
    dirs, inodes = flat.plan()
    result = FlatImage(whiteouts_applied=flat.whiteouts, opaque_dirs=flat.opaques)
    for path, node in dirs:
        source = node.source
        result.entries.append(_entry(path, source, 0))
        result.content_bytes += 4096
        if source is not None and source.xattrs:
            result.xattrs[path] = source.xattrs
    for number, (source, paths) in enumerate(inodes, start=1):
        data_size = source.info.size if source.info.isreg() else 0
        result.content_bytes += -(-data_size // 4096) * 4096
        result.entries.extend(_entry(path, source, number) for path in paths)
        if source.xattrs:
            result.xattrs[paths[0]] = source.xattrs
    flat.described = result
    return result


def _splice_range(in_fd: int, pipe: int, start: int, end: int) -> None:
    """Bytes [start, end) of ``in_fd`` into a pipe without a copy through user space (copy_file_range
    refuses pipes)."""
    while start < end:
        moved = os.splice(in_fd, pipe, min(end - start, 1 << 30), offset_src=start)
        if moved == 0:
            raise ShortCopy(f"end of file at {start}")
        start += moved


def write_tar(flat: Flattener, out: Path | int) -> FlatImage:
    """Write the flattened tree to ``out`` (a new file, or an open descriptor); return what it holds."""
    dirs, inodes = flat.plan()
    writer = _TarWriter(out)
    try:
        for path, node in dirs:
            source = node.source
            if source is not None and source.info.name.rstrip("/") == path[1:]:
                writer.copy(source.tar_path, source.info.offset, source.info.offset_data - source.info.offset)
            else:
                writer.write(_header(path, source))
        for source, paths in inodes:
            info = source.info
            data_size = info.size if info.isreg() else 0
            padded = data_size + -data_size % _BLOCK
            if info.name.rstrip("/") == paths[0][1:]:
                # the member as the layer wrote it: extended headers, header, data, padding
                writer.copy(source.tar_path, info.offset, info.offset_data - info.offset + padded)
            else:
                writer.write(_header(paths[0], source))
                if data_size:
                    writer.copy(source.tar_path, info.offset_data, data_size)
                    writer.write(b"\0" * (padded - data_size))
            for other in paths[1:]:
                writer.write(_header(other, source, link_to=paths[0]))
        writer.write(b"\0" * (_BLOCK * 2))
    finally:
        writer.close()
    return describe(flat)


def _entry(path: str, source: Source | None, inode: int) -> FlatEntry:
    if source is None:
        return FlatEntry(path, "dir", 0o755, 0, 0, 0, None, None, None, {}, 0)
    info = source.info
    kind = source.kind
    return FlatEntry(path, kind, info.mode & 0o7777, info.uid, info.gid, info.size if kind == "file" else 0,
                     source.content_hash, info.linkname if kind == "symlink" else None,
                     (info.devmajor, info.devminor) if kind in ("chardev", "blockdev") else None,
                     dict(source.xattrs), inode)
