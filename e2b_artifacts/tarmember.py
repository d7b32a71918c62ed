"""Tar members as image entries: safe names, the kind of entry a member makes, PAX xattrs.

Shared by the rootfs builder (tarballs) and the OCI flattener (layer tars), so both read a
member the same way. Kinds are the names :mod:`e2b_artifacts.e2fsprogs` gives inodes.
"""

from __future__ import annotations

import tarfile
from typing import Literal

from .errors import ArtifactError, ExitCode

Kind = Literal["file", "dir", "symlink", "chardev", "blockdev", "fifo"]
XATTR_PREFIX = "SCHILY.xattr."  # PAX records of extended attributes (GNU tar, libarchive, Go's archive/tar)


def safe_member_name(name: str) -> str:
    """Normalise a member name (``./a//b/`` -> ``a/b``); refuse absolute names and ``..``.

    Plain string splitting, as ``PurePosixPath(name).parts`` splits (pathlib took 0.25 s of a 0.4 s
    flatten of the 5 000-entry Debian image)."""
    parts = [p for p in name.split("/") if p not in (".", "")]
    if name.startswith("/") or ".." in parts:
        raise ArtifactError(f"unsafe tar member name {name!r} (absolute or with ..)",
                            hint="the archive tries to write outside the image; rebuild it with relative names",
                            code=ExitCode.BAD_INPUT)
    return "/".join(parts)


_KIND_OF_TYPE: dict[bytes, Kind] = {
    **{t: "file" for t in tarfile.REGULAR_TYPES}, tarfile.DIRTYPE: "dir", tarfile.SYMTYPE: "symlink",
    tarfile.CHRTYPE: "chardev", tarfile.BLKTYPE: "blockdev", tarfile.FIFOTYPE: "fifo",
}


def kind(member: tarfile.TarInfo) -> Kind | None:
    """The entry ``member`` makes; None for a hard link (another name of an inode) or a type no image holds."""
    return _KIND_OF_TYPE.get(member.type)


def member_xattrs(member: tarfile.TarInfo) -> dict[str, bytes]:
    """Extended attributes from the member's PAX records, name -> value."""
    return {k[len(XATTR_PREFIX):]: v.encode("utf-8", errors="surrogateescape")
            for k, v in member.pax_headers.items() if k.startswith(XATTR_PREFIX)}


def xattr_pax_headers(xattrs: dict[str, bytes]) -> dict[str, str]:
    """The PAX records that carry ``xattrs`` (the inverse of :func:`member_xattrs`)."""
    return {XATTR_PREFIX + k: v.decode("utf-8", "surrogateescape") for k, v in xattrs.items()}
