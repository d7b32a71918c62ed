"""verify on a local stand-in of a remote build (the seam ``verify --all s3://...`` uses): data files are
sparse placeholders, their BLAKE3 comes from the caller that streamed them."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from e2b_artifacts.errors import ArtifactError, ExitCode
from e2b_artifacts.manifest import hash_file
from e2b_artifacts.settings import Settings
from e2b_artifacts.verify import StandIn, verify
from tests.conftest import sample_build

BUILD_ID = "5d1c7a10-0000-4000-8000-00000000a001"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return sample_build(tmp_path_factory.mktemp("standin-src"), BUILD_ID)


def _placeholder_copy(build: Path, dest_root: Path) -> tuple[Path, str]:
    """The build with its rootfs replaced by a hole of the same size; returns the dir and the real digest."""
    copy = dest_root / BUILD_ID
    shutil.copytree(build, copy)
    digest = hash_file(copy / "rootfs.ext4")
    size = (copy / "rootfs.ext4").stat().st_size
    (copy / "rootfs.ext4").unlink()
    with (copy / "rootfs.ext4").open("wb") as fh:
        os.ftruncate(fh.fileno(), size)
    return copy, digest


def test_streamed_digest_is_compared_instead_of_the_placeholder(built: Path, tmp_path: Path) -> None:
    copy, digest = _placeholder_copy(built, tmp_path)
    report = verify(copy, Settings(env={}), stand_in=StandIn("s3://bkt/t/" + BUILD_ID, {"rootfs.ext4": digest},
                                                             rootfs_read=False))
    by_check = {f.check: f for f in report.findings}
    assert not report.failed(), [f.line() for f in report.findings]
    assert "sizes and BLAKE3" in by_check["manifest"].message
    assert by_check["rootfs"].status == "warn" and "s3://bkt/t/" in by_check["rootfs"].message
    assert not [f for f in report.findings if f.check.startswith("rootfs.")]  # the placeholder is never fsck'd


def test_a_wrong_streamed_digest_fails_the_manifest(built: Path, tmp_path: Path) -> None:
    copy, _ = _placeholder_copy(built, tmp_path)
    report = verify(copy, Settings(env={}), stand_in=StandIn("gs://b/" + BUILD_ID, {"rootfs.ext4": "0" * 64},
                                                             rootfs_read=False))
    fails = [f for f in report.findings if f.status == "FAIL"]
    assert [f.check for f in fails] == ["manifest"] and "rootfs.ext4: hash differs" in fails[0].message


def test_a_stand_in_is_never_repaired(built: Path, tmp_path: Path) -> None:
    copy, _ = _placeholder_copy(built, tmp_path)
    with pytest.raises(ArtifactError) as caught:
        verify(copy, Settings(env={}), fix=True, stand_in=StandIn("s3://b/x"))
    assert caught.value.code == ExitCode.USAGE
