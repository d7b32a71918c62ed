"""``--envd-version V`` without ``--envd``: the binary upstream stages beside HOST_ENVD_PATH.

Upstream: e2b-dev/infra packages/orchestrator/pkg/template/build/core/envd/resolve.go, ResolveBuildBinary():
``<dir of HOST_ENVD_PATH>/envd.<V>`` first, then ``<dir>/<V>/envd``; V must match ^[a-zA-Z0-9][a-zA-Z0-9.-]*$.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from e2b_artifacts.envdpath import resolve
from e2b_artifacts.errors import ArtifactError, ExitCode
from e2b_artifacts.settings import BY_NAME
from tests.conftest import assert_clean_error, cli, file_bytes


def stage(base: Path, envd: Path, *names: str) -> Path:
    """Copies of ``envd`` under ``base`` at ``names``; the HOST_ENVD_PATH whose directory is ``base``."""
    for name in names:
        (base / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(envd, base / name)
        (base / name).chmod(0o755)
    return base / "envd"


def test_flat_name_first_then_release_layout(tmp_path: Path, envd_standin: Path) -> None:
    host = stage(tmp_path / "fc-envd", envd_standin, "envd.0.6.13", "0.6.13/envd", "v0.9.1/envd")
    both = resolve(None, "0.6.13", host)
    assert both.path == tmp_path / "fc-envd/envd.0.6.13" and both.version == "0.6.13"
    assert both.looked_for == (tmp_path / "fc-envd/envd.0.6.13", tmp_path / "fc-envd/0.6.13/envd")
    release = resolve(None, "v0.9.1", host)
    assert release.path == tmp_path / "fc-envd/v0.9.1/envd" and "v0.9.1/envd" in release.chosen_by
    explicit = resolve(envd_standin, "0.6.13", host)  # --envd wins; the version is only recorded
    assert explicit.path == envd_standin and explicit.chosen_by == "--envd" and explicit.looked_for == ()
    assert resolve(None, None, host, "env").chosen_by == "HOST_ENVD_PATH (env)"


@pytest.mark.parametrize("bad", ["../envd", "a/b", ".hidden", "-rc1", "", "1.0 x"])
def test_a_version_that_could_leave_the_directory_is_a_usage_error(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ArtifactError) as err:
        resolve(None, bad, tmp_path / "envd")
    assert err.value.code == ExitCode.USAGE


def test_default_base_is_upstreams(tmp_path: Path) -> None:
    assert BY_NAME["HOST_ENVD_PATH"].default == "/fc-envd/envd"
    with pytest.raises(ArtifactError) as err:
        resolve(None, "0.0.0-never", Path("/fc-envd/envd"))
    assert "/fc-envd/envd.0.0.0-never and /fc-envd/0.0.0-never/envd" in err.value.message


def test_build_with_a_staged_version(tmp_path: Path, sample_tar: Path, envd_standin: Path) -> None:
    host = stage(tmp_path / "fc-envd", envd_standin, "0.6.13/envd")
    proc = cli("--storage", tmp_path / "t", "--set", f"HOST_ENVD_PATH={host}", "build", "--rootfs-tar", sample_tar,
               "--envd-version", "0.6.13", "--build-id", "b", "--disk-size-mb", "4", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["envd"] == {"path": str(tmp_path / "fc-envd/0.6.13/envd"),
                              "chosen_by": "--envd-version: 0.6.13/envd beside HOST_ENVD_PATH", "version": "0.6.13",
                              "looked_for": [str(tmp_path / "fc-envd/envd.0.6.13"),
                                             str(tmp_path / "fc-envd/0.6.13/envd")]}
    assert file_bytes(Path(result["rootfs"]), "/usr/bin/envd") == envd_standin.read_bytes()
    metadata = json.loads((tmp_path / "t/b/metadata.json").read_text())
    assert "0.6.13" in json.dumps(metadata)
    assert f"envd: {tmp_path / 'fc-envd/0.6.13/envd'}" in proc.stderr


def test_inject_with_a_staged_version(tmp_path: Path, envd_standin: Path) -> None:
    from tests.conftest import make_ext4

    tree = tmp_path / "tree"
    (tree / "sbin").mkdir(parents=True)
    image = make_ext4(tmp_path / "rootfs.ext4", tree, "16M")
    host = stage(tmp_path / "fc-envd", envd_standin, "envd.abc123")
    proc = cli("--set", f"HOST_ENVD_PATH={host}", "inject", image, "--envd-version", "abc123", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["envd"]["path"] == str(tmp_path / "fc-envd/envd.abc123")
    assert file_bytes(image, "/usr/bin/envd") == envd_standin.read_bytes()


@pytest.mark.parametrize("command", ["build", "inject"])
def test_nothing_staged_is_a_clean_error_naming_what_was_looked_for(tmp_path: Path, sample_tar: Path,
                                                                   envd_standin: Path, command: str) -> None:
    host = stage(tmp_path / "fc-envd", envd_standin, "envd", "envd.0.6.12")
    args: list[str | Path] = ["build", "--rootfs-tar", sample_tar] if command == "build" else ["inject",
                                                                                              tmp_path / "x.ext4"]
    proc = cli("--storage", tmp_path / "t", "--set", f"HOST_ENVD_PATH={host}", *args, "--envd-version", "0.6.13")
    assert_clean_error(proc, 3, f"envd 0.6.13 is not staged under {tmp_path / 'fc-envd'}",
                       f"{tmp_path / 'fc-envd/envd.0.6.13'} and {tmp_path / 'fc-envd/0.6.13/envd'}",
                       f"--envd {host} --envd-version 0.6.13")
    assert not (tmp_path / "t").exists()
    proc = cli("--set", f"HOST_ENVD_PATH={host}", *args, "--envd-version", "../envd")
    assert_clean_error(proc, 2, "--envd-version '../envd' is not a version id")
