"""Tar members as image entries: kinds, safe names and PAX xattrs, on archives GNU tar and tarfile write."""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from e2b_artifacts import tarmember
from e2b_artifacts.errors import ArtifactError, ExitCode
from e2b_artifacts.oci.flatten import Source


def members(data: bytes) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:", encoding="utf-8", errors="surrogateescape") as tar:
        return {tarmember.safe_member_name(m.name): m for m in tar.getmembers()}


def test_kinds_of_a_gnu_tar_archive(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "dir").mkdir(parents=True)
    (tree / "dir/file").write_bytes(b"data")
    os.link(tree / "dir/file", tree / "dir/hard")
    os.symlink("file", tree / "dir/link")
    os.mkfifo(tree / "fifo")
    data = subprocess.run(["tar", "--format=pax", "-C", str(tree), "-cf", "-", "."], check=True,
                          capture_output=True).stdout
    found = {name: tarmember.kind(m) for name, m in members(data).items()}
    assert found == {"": "dir", "dir": "dir", "dir/file": "file", "dir/link": "symlink", "fifo": "fifo",
                     "dir/hard": None}  # GNU tar stores the second name as a hard link member


@pytest.mark.parametrize(("tar_type", "expected"), [
    (tarfile.REGTYPE, "file"), (tarfile.AREGTYPE, "file"), (tarfile.CONTTYPE, "file"),
    (tarfile.DIRTYPE, "dir"), (tarfile.SYMTYPE, "symlink"), (tarfile.CHRTYPE, "chardev"),
    (tarfile.BLKTYPE, "blockdev"), (tarfile.FIFOTYPE, "fifo"), (tarfile.LNKTYPE, None), (b"X", None),
])
def test_kind_of_every_tar_type(tar_type: bytes, expected: str | None) -> None:
    info = tarfile.TarInfo("x")
    info.type = tar_type
    assert tarmember.kind(info) == expected
    if expected is not None:  # the flattener names an image entry exactly as the rootfs builder does
        assert Source(0, 0, info, Path("layer.tar"), {}).kind == expected


def test_safe_member_names() -> None:
    assert tarmember.safe_member_name("./usr//bin/./env") == "usr/bin/env"
    assert tarmember.safe_member_name(".") == tarmember.safe_member_name("./") == ""
    for unsafe in ("/etc/passwd", "../escape", "usr/../../escape"):
        with pytest.raises(ArtifactError) as caught:
            tarmember.safe_member_name(unsafe)
        assert caught.value.code == ExitCode.BAD_INPUT and "unsafe tar member name" in caught.value.message


def test_xattrs_round_trip_through_pax_records(tmp_path: Path) -> None:
    xattrs = {"user.comment": b"hello", "security.capability": b"\x01\x00\x00\x02\xff\xfe", "user.odd": b"\xe9"}
    info = tarfile.TarInfo("bin/ping")
    info.size = 4
    info.pax_headers = tarmember.xattr_pax_headers(xattrs)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT, encoding="utf-8",
                      errors="surrogateescape") as tar:
        tar.addfile(info, io.BytesIO(b"ping"))
    read_back = members(buf.getvalue())["bin/ping"]
    assert tarmember.member_xattrs(read_back) == xattrs
    path = tmp_path / "x.tar"
    path.write_bytes(buf.getvalue())
    listing = subprocess.run(["tar", "--xattrs", "--xattrs-include=*", "-tvvf", str(path)], check=True,
                             capture_output=True, text=True).stdout
    assert "user.comment" in listing and "security.capability" in listing  # GNU tar reads the same records


def test_safe_member_name_splits_as_pathlib_does() -> None:
    """The string splitting gives PurePosixPath's answer (or its refusal) on every name built from these parts."""
    import itertools
    from pathlib import PurePosixPath

    def by_pathlib(name: str) -> str | None:
        pure = PurePosixPath(name)
        if pure.is_absolute() or ".." in pure.parts:
            return None
        return "/".join(p for p in pure.parts if p not in (".", ""))

    atoms = ["", ".", "..", "a", "b.", "..c", "/", "//", "./", "a/", " "]
    for count in range(1, 5):
        for combo in itertools.product(atoms, repeat=count):
            name = "".join(combo)
            try:
                got: str | None = tarmember.safe_member_name(name)
            except ArtifactError:
                got = None
            assert got == by_pathlib(name), name
