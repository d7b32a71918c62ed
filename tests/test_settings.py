"""E2B path variables: precedence, env files, absent mounts, `paths`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from e2b_artifacts.oci.cache import BlobCache
from e2b_artifacts.settings import SETTINGS, Settings, cache_dir, parse_env_file
from e2b_artifacts.vm import boot
from tests.conftest import assert_clean_error, cli


def test_precedence_flag_env_file_default(tmp_path: Path) -> None:
    env_file = tmp_path / ".env.local"
    env_file.write_text("# E2B style\nexport HOST_KERNELS_DIR=/from/file\nFIRECRACKER_VERSIONS_DIR='/file fc'\n"
                        "TEMPLATE_CACHE_DIR=/file/cache # trailing comment\nSTORAGE_PROVIDER=Local\n")
    s = Settings(flags={"HOST_KERNELS_DIR": "/from/flag"},
                 env={"HOST_KERNELS_DIR": "/from/env", "FIRECRACKER_VERSIONS_DIR": "/env/fc",
                      "ORCHESTRATOR_BASE_PATH": "/orch"},
                 env_file=env_file)
    assert (s["HOST_KERNELS_DIR"].value, s["HOST_KERNELS_DIR"].source) == ("/from/flag", "flag")
    assert (s["FIRECRACKER_VERSIONS_DIR"].value, s["FIRECRACKER_VERSIONS_DIR"].source) == ("/env/fc", "env")
    assert (s["TEMPLATE_CACHE_DIR"].value, s["TEMPLATE_CACHE_DIR"].source) == ("/file/cache", f"env-file:{env_file}")
    assert (s["SANDBOX_CACHE_DIR"].value, s["SANDBOX_CACHE_DIR"].source) == ("/orch/sandbox", "default")
    assert s["SHARED_CHUNK_CACHE_PATH"].source == "unset"
    assert s["STORAGE_PROVIDER"].value == "Local"
    assert parse_env_file(env_file)["FIRECRACKER_VERSIONS_DIR"] == "/file fc"
    assert {r.name for r in s.all()} == {x.name for x in SETTINGS}


def test_paths_flags_absent_mount_and_creates(tmp_path: Path) -> None:
    env = {"LOCAL_TEMPLATE_STORAGE_BASE_PATH": "/mnt/e2b-artifact-no-such-disk/templates",
           "HOST_KERNELS_DIR": str(tmp_path / "kernels"), "FIRECRACKER_VERSIONS_DIR": str(tmp_path / "fc"),
           "ORCHESTRATOR_BASE_PATH": str(tmp_path / "orch")}
    proc = cli("paths", "--json", env=env)
    assert proc.returncode == 1, proc.stderr
    rows = {r["name"]: r for r in json.loads(proc.stdout)["paths"]}
    storage = rows["LOCAL_TEMPLATE_STORAGE_BASE_PATH"]
    assert storage["state"] == "absent-mount" and storage["source"] == "env"
    assert "/mnt/e2b-artifact-no-such-disk does not exist on this host" in storage["detail"]
    assert rows["HOST_KERNELS_DIR"]["state"] == "missing"
    assert rows["HOST_KERNELS_DIR"]["about"] == "guest kernels: <path>/<kernel_version>/vmlinux.bin"
    text = cli("paths", env=env).stdout
    assert "ABSENT MOUNT" in text and "warning: LOCAL_TEMPLATE_STORAGE_BASE_PATH" in text
    assert "guest kernels: <path>/<kernel_version>/vmlinux.bin" in text
    env["LOCAL_TEMPLATE_STORAGE_BASE_PATH"] = str(tmp_path / "templates")
    created = cli("paths", "--create", "--json", env=env)
    assert created.returncode == 0, created.stdout
    assert (tmp_path / "kernels").is_dir() and (tmp_path / "orch" / "template").is_dir()
    assert (tmp_path / "templates").is_dir()
    rows = {r["name"]: r for r in json.loads(created.stdout)["paths"]}
    assert rows["HOST_KERNELS_DIR"]["state"] == "exists"


def test_set_flag_and_env_file_option(tmp_path: Path) -> None:
    env_file = tmp_path / "e.env"
    env_file.write_text(f"HOST_KERNELS_DIR={tmp_path}\n")
    proc = cli("--env-file", env_file, "--set", f"SANDBOX_DIR={tmp_path}", "paths", "--json",
               env={"HOST_KERNELS_DIR": ""})
    rows = {r["name"]: r for r in json.loads(proc.stdout)["paths"]}
    assert rows["HOST_KERNELS_DIR"]["source"] == f"env-file:{env_file}"
    assert rows["SANDBOX_DIR"]["source"] == "flag" and rows["SANDBOX_DIR"]["state"] == "exists"
    assert_clean_error(cli("--set", "NOPE=1", "paths"), 2, "unknown setting NOPE")
    bad = tmp_path / "bad.env"
    bad.write_text("this line has no equals\n")
    assert_clean_error(cli("--env-file", bad, "paths"), 3, "bad.env:1: expected KEY=VALUE")


def test_one_cache_dir_for_blobs_probe_and_console_logs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("E2B_ARTIFACT_CACHE", raising=False)
    assert cache_dir() == tmp_path / "home/.cache/e2b-artifact"
    assert cache_dir({"E2B_ARTIFACT_CACHE": ""}) == tmp_path / "home/.cache/e2b-artifact"  # empty = unset
    assert cache_dir({"E2B_ARTIFACT_CACHE": "/elsewhere"}) == Path("/elsewhere")
    monkeypatch.setenv("E2B_ARTIFACT_CACHE", str(tmp_path / "cache"))
    assert cache_dir() == tmp_path / "cache"
    assert BlobCache().blobs == tmp_path / "cache/blobs/sha256"
    assert boot.default_console_log("b1").parent == tmp_path / "cache/boots"
