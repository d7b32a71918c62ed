"""Create ``rootfs.ext4`` from a directory, a tarball or an existing ext4 image, rootless.

Sizing follows upstream E2B: populate a generously sized (sparse) image, then
resize it to the space the content uses plus the requested free space.
Tar input goes straight to ``mke2fs -d`` when e2fsprogs can read tarballs
(>= 1.47.1), so owners, device nodes and xattrs land exactly as the tar says
without root. Older e2fsprogs: extract what an unprivileged user can, then
fix owners, modes, times, special files and xattrs with one debugfs script.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tarfile
import tempfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO

from . import e2fsprogs, symlinks, tarmember
from .errors import ArtifactError, ExitCode
from .fsutil import copy_sparse
from .stages import StageTimes
from .tarmember import member_xattrs, safe_member_name

MIB = 1 << 20
DEFAULT_FREE_MB = 512  # like upstream's default template disk tier; see README
_SLACK = 64 * MIB  # journal, group descriptors, bitmaps of the generous first image


@dataclass(frozen=True)
class Content:
    """What a source holds, for sizing: bytes rounded to blocks, and entry count."""

    blocks_bytes: int
    entries: int
    # path in the image -> xattr name -> value, from PAX ``SCHILY.xattr.*`` records
    xattrs: dict[str, dict[str, bytes]] = field(default_factory=dict)

    def generous_size(self, free_mb: int) -> int:
        inode_tables = self.entries * 256 * 2
        return int(self.blocks_bytes * 1.25) + self.entries * e2fsprogs.BLOCK_SIZE + inode_tables \
            + _SLACK * 2 + free_mb * MIB


def _round_block(n: int) -> int:
    bs = e2fsprogs.BLOCK_SIZE
    return -(-n // bs) * bs


def scan_dir(root: Path) -> Content:
    """Size the tree; refuse (exit 3, naming them) files and directories this user cannot read,
    which mke2fs would otherwise report only as "Permission denied while populating file system"."""
    total = entries = 0
    unreadable: list[str] = []

    def note_unreadable(exc: OSError) -> None:
        unreadable.append(str(exc.filename))

    for dirpath, dirnames, filenames in os.walk(root, onerror=note_unreadable):
        entries += len(dirnames) + len(filenames)
        total += e2fsprogs.BLOCK_SIZE * len(dirnames)
        for name in dirnames:
            full = os.path.join(dirpath, name)
            if not os.path.islink(full) and not os.access(full, os.R_OK | os.X_OK):
                unreadable.append(full)
        for name in filenames:
            full = os.path.join(dirpath, name)
            try:
                st = os.lstat(full)
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                total += _round_block(st.st_size)
                if not os.access(full, os.R_OK):
                    unreadable.append(full)
    if unreadable:
        _refuse_unreadable(root, sorted(set(unreadable)))
    return Content(total, entries)


def _refuse_unreadable(root: Path, paths: list[str]) -> None:
    first = "/" + os.path.relpath(paths[0], root)
    more = f" and {len(paths) - 1} more" if len(paths) > 1 else ""
    raise ArtifactError(f"--rootfs-dir {root}: {first}{more} cannot be read by uid {os.geteuid()}, "
                        f"so mke2fs cannot copy {'it' if len(paths) == 1 else 'them'}",
                        hint=f"make a tar as root and build from it (sudo tar -C {root} --xattrs -cpf rootfs.tar . "
                             f"then --rootfs-tar rootfs.tar), or run this build as root",
                        code=ExitCode.BAD_INPUT)


@contextlib.contextmanager
def open_tar(path: Path) -> Iterator[tarfile.TarFile]:
    """A tar, tar.gz/bz2/xz or tar.zst open for streaming reads, closed (with the file under a zstd stream:
    ``TarFile.close`` leaves a ``fileobj`` it was given open) when the ``with`` block ends."""
    with path.open("rb") as probe:
        magic = probe.read(4)
    with contextlib.ExitStack() as opened:
        try:
            if magic == b"\x28\xb5\x2f\xfd":
                import zstandard

                stream: IO[bytes] = opened.enter_context(
                    zstandard.ZstdDecompressor().stream_reader(opened.enter_context(path.open("rb")), closefd=True))
                tar = opened.enter_context(tarfile.open(fileobj=stream, mode="r|"))
            else:
                tar = opened.enter_context(tarfile.open(path, mode="r|*"))
        except (tarfile.TarError, OSError, EOFError, zlib.error, TypeError) as exc:
            # TypeError: CPython's streaming gzip reader calls ord() on the empty read of a gzip header cut
            # short (b"\x1f\x8b\x08", found by tests/test_parser_properties.py); only tarfile.open is inside
            detail = "its gzip header is cut short" if isinstance(exc, TypeError) else str(exc)
            raise ArtifactError(f"{path} is not a readable tar archive: {detail}",
                                hint="pass a .tar, .tar.gz or .tar.zst (e.g. from docker export or tar -C DIR -c .)",
                                code=ExitCode.BAD_INPUT) from exc
        yield tar


PATH_MAX = 4095  # longest path the kernel opens in one call (bytes, without the NUL)
NAME_MAX = 255  # longest name of one directory entry in ext4


class MemberCheck:
    """Refuses, before anything is written, tar members that mke2fs or an extraction cannot place as the
    archive says: writes through a symlink of the archive, hard links to names the archive has not yet
    created (or outside it), members whose parent directory the archive never created, a directory
    replacing a non-directory or the other way round, and names too long for the filesystem.

    A later member of the same kind (file, symlink, ...) replaces an earlier one, as GNU tar does.
    """

    def __init__(self) -> None:
        self.entries: dict[str, symlinks.Entry] = {}  # absolute path -> what it is now

    def add(self, member: tarfile.TarInfo) -> str:
        """Check ``member`` against the members before it; its normalised name ("" for the root)."""
        name = safe_member_name(member.name)
        if not name:
            return name
        encoded = name.encode("utf-8", "surrogateescape")
        if len(encoded) > PATH_MAX or any(len(p) > NAME_MAX for p in encoded.split(b"/")):
            raise _refuse(name, f"has a name longer than the filesystem allows ({len(encoded)} bytes; "
                                f"at most {NAME_MAX} per component, {PATH_MAX} in all)")
        path = "/" + name
        self._check_parents(name, path)
        earlier = self.entries.get(path)
        if member.islnk():
            entry = self._link_target(name, member.linkname)
        elif member.isdir():
            entry = symlinks.Entry("dir")
        elif member.issym():
            entry = symlinks.Entry("symlink", member.linkname)
        else:
            entry = symlinks.Entry("file" if member.isreg() else "special", executable=bool(member.mode & 0o111))
        if earlier is not None and (earlier.kind == "dir") != (entry.kind == "dir"):
            raise _refuse(name, f"is a {'directory' if entry.kind == 'dir' else 'non-directory'} but an earlier "
                                f"member of that name is a {'directory' if earlier.kind == 'dir' else earlier.kind}")
        self.entries[path] = entry
        return name

    def _check_parents(self, name: str, path: str) -> None:
        parts = path.split("/")[1:-1]
        for i in range(1, len(parts) + 1):
            parent = "/" + "/".join(parts[:i])
            found = self.entries.get(parent)
            if found is None:
                raise _refuse(name, f"comes before (or without) its parent directory {parent[1:]!r}",
                              hint="list every directory before its contents (tar -C DIR -cpf rootfs.tar . does); "
                                   "mke2fs does not create missing parents")
            if found.kind == "symlink":
                raise _refuse(name, f"is written through the symlink {parent[1:]!r}",
                              hint="the archive is malformed or malicious; nothing outside the image was written")
            if found.kind != "dir":
                raise _refuse(name, f"is inside {parent[1:]!r}, which is not a directory")

    def _link_target(self, name: str, linkname: str) -> symlinks.Entry:
        pure = PurePosixPath(linkname)
        if pure.is_absolute() or ".." in pure.parts:
            raise _refuse(name, f"is a hard link to {linkname!r}, outside the archive",
                          hint="hard links must name a file the archive itself holds (relative, without ..)")
        target = safe_member_name(linkname)
        found = self.entries.get("/" + target)
        if found is None or found.kind in ("dir", "symlink"):
            problem = "which no earlier member created" if found is None else f"which is a {found.kind}"
            raise _refuse(name, f"is a hard link to {target!r}, {problem}",
                          hint="a hard link must follow the file it links to; recreate the archive with tar")
        self._check_parents(name, "/" + target)
        return found


def _refuse(name: str, problem: str, hint: str = "recreate the archive (e.g. tar -C DIR -cpf rootfs.tar .)"
            ) -> ArtifactError:
    shown = name if len(name) <= 200 else f"{name[:120]}...{name[-60:]}"
    return ArtifactError(f"tar member {shown!r} {problem}", hint=hint, code=ExitCode.BAD_INPUT)


def scan_tar(path: Path, members: MemberCheck | None = None) -> Content:
    """Size the tar's content and check every member (see :class:`MemberCheck`)."""
    total = entries = 0
    xattrs: dict[str, dict[str, bytes]] = {}
    check = members if members is not None else MemberCheck()
    try:
        with open_tar(path) as tar:
            for member in tar:
                name = check.add(member)
                entries += 1
                if found := member_xattrs(member):
                    xattrs["/" + name] = found
                if member.isreg():
                    total += _round_block(member.size)
                elif member.isdir():
                    total += e2fsprogs.BLOCK_SIZE
    except tarfile.TarError as exc:
        raise ArtifactError(f"{path}: damaged tar archive: {exc}", hint="recreate the archive",
                            code=ExitCode.BAD_INPUT) from exc
    return Content(total, entries, xattrs)


def fit(image: Path, free_mb: int, entries: int) -> None:
    """Resize ``image`` to the space in use plus ``free_mb`` (and room for the inodes in use)."""
    geo = e2fsprogs.geometry(image)
    used = geo.size_bytes - geo.free_bytes
    inodes_used = geo.inode_count - geo.free_inodes
    target = max(used + free_mb * MIB, int(max(inodes_used, entries) * e2fsprogs.INODE_RATIO * 1.1))
    target = _round_block(target + e2fsprogs.BLOCK_SIZE * 16)
    if target < geo.size_bytes:
        # resize2fs keeps room for the metadata of the groups the content spans; its own minimum
        # exceeds "used + free" for large trees (about 1 GiB and up), and it refuses anything less.
        target = max(target, _round_block(int(e2fsprogs.minimum_size(image) * 1.02)))
    if abs(target - geo.size_bytes) > MIB:
        e2fsprogs.resize(image, target)
        os.truncate(image, target)


def create_from_dir(source: Path, image: Path, *, free_mb: int = DEFAULT_FREE_MB,
                    times: StageTimes | None = None) -> None:
    if not source.is_dir():
        raise ArtifactError(f"--rootfs-dir {source}: not a directory", hint="pass the root of the tree",
                            code=ExitCode.BAD_INPUT)
    times = times if times is not None else StageTimes()
    with times.stage("scan"):
        content = scan_dir(source)
    with times.stage("mke2fs"):
        e2fsprogs.mke2fs(image, content.generous_size(free_mb), source=source)
    with times.stage("resize"):
        fit(image, free_mb, content.entries)


def create_from_tar(tar_path: Path, image: Path, *, free_mb: int = DEFAULT_FREE_MB,
                    content_bytes: int | None = None, inodes: int | None = None,
                    xattrs: dict[str, dict[str, bytes]] | None = None, times: StageTimes | None = None) -> None:
    """Populate ``image`` from a tarball (tar, tar.gz, tar.zst).

    With ``content_bytes`` and ``inodes`` (and the members' ``xattrs``) given, the tar
    is read only once, so it may come from a pipe. ``times`` gets the mke2fs, xattrs and resize stages.
    """
    times = times if times is not None else StageTimes()
    if not tar_path.exists():
        raise ArtifactError(f"--rootfs-tar {tar_path}: file not found", hint="check the path",
                            code=ExitCode.BAD_INPUT)
    if content_bytes is not None and inodes is not None:
        content = Content(content_bytes, inodes, xattrs or {})
    else:
        with times.stage("scan"):
            content = scan_tar(tar_path)
    size = content.generous_size(free_mb)
    if e2fsprogs.tar_input_supported():
        with times.stage("mke2fs"):
            e2fsprogs.mke2fs(image, size, source=tar_path)
        # mke2fs 1.47.2 keeps security.capability from a tar but drops other xattrs (user.*, trusted.*,
        # security.selinux): set them all again in one debugfs run.
        with times.stage("xattrs"):
            set_xattrs(image, content.xattrs)
    else:
        with times.stage("mke2fs"):
            _create_via_fixup(tar_path, image, size)
    with times.stage("resize"):
        fit(image, free_mb, content.entries)


def create_from_tar_stream(write: Callable[[int], object], image: Path, *, content_bytes: int, inodes: int,
                           xattrs: dict[str, dict[str, bytes]], free_mb: int = DEFAULT_FREE_MB,
                           times: StageTimes | None = None) -> None:
    """Populate ``image`` from a tar that ``write`` writes into ``mke2fs -d -`` (e2fsprogs >= 1.47.1): no tar
    file on disk; what writes it runs beside mke2fs. ``content_bytes``/``inodes`` size the image up front."""
    times = times if times is not None else StageTimes()
    content = Content(content_bytes, inodes, xattrs)
    with times.stage("mke2fs"):
        e2fsprogs.mke2fs_from_stream(image, content.generous_size(free_mb), write)
    with times.stage("xattrs"):
        set_xattrs(image, content.xattrs)
    with times.stage("resize"):
        fit(image, free_mb, content.entries)


def create_from_ext4(source: Path, image: Path, *, free_mb: int = DEFAULT_FREE_MB) -> None:
    """Copy an existing ext4 image (sparse-aware; the source is never modified) and make room."""
    if not source.is_file():
        raise ArtifactError(f"--rootfs-ext4 {source}: file not found", hint="check the path",
                            code=ExitCode.BAD_INPUT)
    e2fsprogs.geometry(source)  # raises a clear error when it is not ext*
    copy_sparse(source, image, dig_holes=True, durable=False,
                hint="the copy needs as much free space beside the build as the image uses")
    check = e2fsprogs.fsck(image)
    if not check.clean:
        raise ArtifactError(f"{source} has filesystem errors (e2fsck -fn exit {check.exit_code})",
                            hint=f"repair a copy first: cp {source} fixed.ext4 && e2fsck -fy fixed.ext4",
                            code=ExitCode.BAD_INPUT)
    ensure_free(image, free_mb)


def ensure_free(image: Path, free_mb: int) -> None:
    """Grow ``image`` (never shrink) until it has at least ``free_mb`` MiB free."""
    geo = e2fsprogs.geometry(image)
    if geo.free_bytes < free_mb * MIB:
        e2fsprogs.resize(image, _round_block(geo.size_bytes + free_mb * MIB - geo.free_bytes))


def set_xattrs(image: Path, xattrs: dict[str, dict[str, bytes]]) -> None:
    if not xattrs:
        return
    with tempfile.TemporaryDirectory(prefix=".e2b-artifact-xattrs-", dir=image.parent) as tmp:
        commands = []
        for n, (path, values) in enumerate(xattrs.items()):
            commands += _xattr_commands(path, values, Path(tmp), n)
        problems = e2fsprogs.debugfs(image, commands, write=True).errors()
    if problems:
        raise ArtifactError(f"setting extended attributes failed: {problems[0]}",
                            hint="check the xattr names in the tar (user., trusted., security. namespaces)",
                            code=ExitCode.TOOL)


def _xattr_commands(path: str, values: dict[str, bytes], value_dir: Path, n: int) -> list[str]:
    commands = []
    for i, (name, value) in enumerate(values.items()):
        value_file = value_dir / f"{n}.{i}"
        value_file.write_bytes(value)
        commands.append(f"ea_set -f {e2fsprogs.quote(str(value_file))} {e2fsprogs.quote(path)} {name}")
    return commands


# --- e2fsprogs < 1.47.1: extract what we can, then one debugfs fix-up script -------------

def _create_via_fixup(tar_path: Path, image: Path, size: int) -> None:
    with tempfile.TemporaryDirectory(prefix=".e2b-artifact-extract-", dir=image.parent) as tmp:
        tree = Path(tmp) / "tree"
        tree.mkdir()
        xattr_dir = Path(tmp) / "xattrs"
        xattr_dir.mkdir()
        script = list(_extract_for_fixup(tar_path, tree, xattr_dir))
        e2fsprogs.mke2fs(image, size, source=tree)
        out = e2fsprogs.debugfs(image, script, write=True)
        problems = out.errors()
        if problems:
            raise ArtifactError(f"fixing owners and special files failed: {problems[0]}",
                                hint="install e2fsprogs >= 1.47.1 (scripts/setup.sh) to build from tar directly",
                                code=ExitCode.TOOL)


def _extract_for_fixup(tar_path: Path, tree: Path, xattr_dir: Path) -> Iterator[str]:
    """Extract regular files, dirs, symlinks and hard links as the current user; yield debugfs fix-ups."""
    q = e2fsprogs.quote
    with open_tar(tar_path) as tar:
        for n, member in enumerate(tar):
            name = safe_member_name(member.name)
            if not name:
                continue
            dest = tree / name
            _refuse_links_in_parents(tree, name)
            path = "/" + name
            kind = tarmember.kind(member)
            if member.isdir():
                dest.mkdir(parents=True, exist_ok=True)
                dest.chmod(0o755)
            elif member.isreg():
                dest.parent.mkdir(parents=True, exist_ok=True)
                _remove_existing(dest)
                src = tar.extractfile(member)
                assert src is not None
                fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
                with os.fdopen(fd, "wb") as out:
                    while chunk := src.read(1 << 20):
                        out.write(chunk)
            elif member.issym():
                dest.parent.mkdir(parents=True, exist_ok=True)
                _remove_existing(dest)
                os.symlink(member.linkname, dest)
            elif member.islnk():
                target = tree / safe_member_name(member.linkname)
                _refuse_links_in_parents(tree, safe_member_name(member.linkname))
                _remove_existing(dest)
                os.link(target, dest, follow_symlinks=False)
                continue  # the inode's attributes come with the first name
            elif member.ischr() or member.isblk() or member.isfifo():
                dest.parent.mkdir(parents=True, exist_ok=True)
                _remove_existing(dest)
                dev = f"{member.devmajor} {member.devminor}"
                spec = "p" if member.isfifo() else f"{'c' if member.ischr() else 'b'} {dev}"
                # debugfs mknod links an absolute name wrongly: create it relative to its directory
                parent = str(PurePosixPath(path).parent)
                yield from (f"cd {q(parent)}", f"mknod {q(PurePosixPath(path).name)} {spec}", "cd /")
            else:
                continue
            assert kind is not None  # hard links and other types went on above
            mode = e2fsprogs.KIND_BITS[kind] | (member.mode & 0o7777)
            yield f"sif {q(path)} mode 0{mode:o}"
            yield f"sif {q(path)} uid {member.uid}"
            yield f"sif {q(path)} gid {member.gid}"
            yield f"sif {q(path)} mtime @{int(member.mtime)}"
            yield from _xattr_commands(path, member_xattrs(member), xattr_dir, n)


def _refuse_links_in_parents(tree: Path, name: str) -> None:
    """Never write through a symlink the archive itself created (it could point at the host)."""
    current = tree
    for part in PurePosixPath(name).parts[:-1]:
        current = current / part
        if current.is_symlink():
            raise ArtifactError(f"tar member {name!r} is written through the symlink {part!r}",
                                hint="the archive is malformed or malicious; nothing outside the image was written",
                                code=ExitCode.BAD_INPUT)


def _remove_existing(dest: Path) -> None:
    """A later member with the same name replaces the earlier one (inside our private temp tree)."""
    if dest.is_symlink() or dest.is_file():
        dest.unlink()
