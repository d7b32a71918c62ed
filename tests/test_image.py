"""build --from-image against real tools: umoci/skopeo-made images, Debian's docker-registry, uid 65534."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from e2b_artifacts.stages import IMAGE_STAGES
from tests.conftest import Unprivileged, assert_clean_error, debugfs_lines
from tests.oci import images
from tests.oci.registry import PASSWORD, USER, Registry, TokenIssuer, registry, token_server

ENTRIES = 18  # what the 3-layer test image flattens to (see tests/oci/images.py)


@pytest.fixture(scope="session")
def fixture_dir() -> Iterator[Path]:
    """Images where uid 65534 can read them (pytest's tmp dirs are 0700)."""
    base = Path("/var/tmp") / f"e2b-artifact-oci-{os.getpid()}"
    base.mkdir(mode=0o755)
    yield base
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def layout(fixture_dir: Path) -> Path:
    made = images.make_layout(fixture_dir / "made")
    subprocess.run(["chmod", "-R", "a+rX", str(fixture_dir)], check=True)
    return made


@pytest.fixture(scope="session")
def plain_registry(fixture_dir: Path, layout: Path) -> Iterator[Registry]:
    with registry(fixture_dir / "registry") as reg:
        reg.push(f"oci:{layout}:t", "busy:t")
        reg.push(f"oci:{layout}:t", "busy:v2s2", "--format", "v2s2")
        reg.push(f"oci:{layout}:multi", "busy:multi", "--all")
        yield reg


@pytest.fixture
def envd(nobody: Unprivileged, envd_standin: Path) -> Path:
    path = nobody.path("envd")
    path.write_bytes(envd_standin.read_bytes())
    path.chmod(0o755)
    return path


def build(nobody: Unprivileged, envd: Path, source: str, build_id: str, *extra: str | Path,
          env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return nobody.run("--storage", nobody.workdir / "templates", "build", "--from-image", source, "--envd", envd,
                      "--build-id", build_id, "--disk-size-mb", "8", *extra, env=env)


def downloaded(stderr: str) -> int:
    match = re.search(r"image: downloaded (\d+) bytes", stderr)
    assert match, stderr
    return int(match.group(1))


def check_layers(image: Path) -> None:
    """The Must-show facts of the 3-layer image, read straight from the ext4."""
    out = debugfs_lines(image, "ls /opq", "stat /etc/doomed", "stat /data/keep", "stat /data/link",
                        "stat /usr/bin/suid", "stat /usr/bin/ping", "stat /dev/console")
    sections = dict(re.findall(r"debugfs: (.+?)\n(.*?)(?=debugfs: |\Z)", out, re.S))
    opq_names = set(re.findall(r"\d+\s+\(\d+\)\s+(\S+)", sections["ls /opq"])) - {".", ".."}
    assert opq_names == {"new2", "new3"}  # layer-1 old1 and sub/ hidden by the opaque marker of layer 2
    assert "Inode:" not in sections["stat /etc/doomed"]  # deleted in layer 3
    keep = re.search(r"Inode: (\d+)", sections["stat /data/keep"])
    link = re.search(r"Inode: (\d+)", sections["stat /data/link"])
    assert keep and link and keep.group(1) == link.group(1)  # layer-2 hard link to a layer-1 file: one inode
    assert "Links: 2" in sections["stat /data/keep"]
    assert "Mode:  04755" in sections["stat /usr/bin/suid"]
    assert "security.capability (20)" in sections["stat /usr/bin/ping"]
    assert "Device major/minor number: 05:01" in sections["stat /dev/console"]


def test_registry_pull_unprivileged_then_cached(nobody: Unprivileged, envd: Path, plain_registry: Registry) -> None:
    ref = f"{plain_registry.host}/busy:t"
    first = build(nobody, envd, ref, "first", "--insecure", "--report", nobody.workdir / "report.json")
    assert first.returncode == 0, first.stderr
    assert f"fidelity: {ENTRIES} entries, 0 mismatches" in first.stderr
    assert downloaded(first.stderr) > 0
    image = nobody.workdir / "templates/first/rootfs.ext4"
    assert image.stat().st_uid == 65534
    check_layers(image)
    report = json.loads((nobody.workdir / "report.json").read_text())
    assert report["entries"] == ENTRIES and report["mismatches"] == []
    metadata = json.loads((nobody.workdir / "templates/first/metadata.json").read_text())
    assert metadata["from_image"] == ref
    assert metadata["context"] == {"user": "1000:1000", "workdir": "/data", "env_vars": {"LANG": "C.UTF-8"}}
    assert metadata["start"]["start_command"] == "/bin/sh"
    assert metadata["e2b_artifact"]["image"]["manifest_digest"].startswith("sha256:")
    blobs = list((nobody.workdir / ".cache/e2b-artifact/blobs/sha256").iterdir())
    assert blobs and all(p.stat().st_uid == 65534 for p in blobs)

    second = build(nobody, envd, ref, "second", "--insecure", "--json")
    assert second.returncode == 0, second.stderr
    assert downloaded(second.stderr) == 0
    assert json.loads(second.stdout)["image"]["downloaded_bytes"] == 0
    assert f"fidelity: {ENTRIES} entries, 0 mismatches" in second.stderr


@pytest.mark.parametrize("kind", ["v2s2-registry", "oci-layout", "docker-archive", "zstd-layout",
                                  "index-amd64", "index-arm64"])
def test_every_source_unprivileged(nobody: Unprivileged, envd: Path, plain_registry: Registry, layout: Path,
                                   fixture_dir: Path, kind: str) -> None:
    extra: list[str] = []
    entries = ENTRIES
    if kind == "v2s2-registry":
        source = f"{plain_registry.host}/busy:v2s2"
        extra = ["--insecure"]
    elif kind == "oci-layout":
        source = f"oci-layout:{layout}:t"
    elif kind == "docker-archive":
        archive = fixture_dir / "busy-docker.tar"
        if not archive.exists():
            images.docker_archive(layout, archive)
            archive.chmod(0o644)
        source = f"docker-archive:{archive}"
    elif kind == "zstd-layout":
        zstd = fixture_dir / "zstd"
        if not zstd.exists():
            images.zstd_layout(layout, zstd)
            subprocess.run(["chmod", "-R", "a+rX", str(zstd)], check=True)
        digest = json.loads((zstd / "index.json").read_text())["manifests"][0]["digest"].split(":")[1]
        manifest = json.loads((zstd / "blobs/sha256" / digest).read_text())
        assert all(layer["mediaType"].endswith("+zstd") for layer in manifest["layers"])
        source = f"oci-layout:{zstd}:t"
    else:
        source = f"{plain_registry.host}/busy:multi"
        extra = ["--insecure", "--platform", "linux/" + kind.split("-")[1]]
        entries = ENTRIES if kind == "index-amd64" else 17  # arm64 entry: layer 1 only
    proc = build(nobody, envd, source, kind, *extra)
    assert proc.returncode == 0, proc.stderr
    assert f"fidelity: {entries} entries, 0 mismatches" in proc.stderr
    if entries == ENTRIES:
        check_layers(nobody.workdir / "templates" / kind / "rootfs.ext4")


def test_debug_prints_every_stage(nobody: Unprivileged, envd: Path, layout: Path) -> None:
    """build --debug prints the stage profile (one ``stage:`` line per stage), --json carries it as ``stages``."""
    proc = nobody.run("--debug", "--storage", nobody.workdir / "templates", "build", "--from-image",
                      f"oci-layout:{layout}:t", "--envd", envd, "--build-id", "stages", "--disk-size-mb", "8", "--json")
    assert proc.returncode == 0, proc.stderr
    printed = [line.split()[1] for line in proc.stderr.splitlines() if line.startswith("stage: ")]
    assert printed[0] == "stage" and printed[-2:] == ["other", "total"]  # the header row, then the stages
    assert set(IMAGE_STAGES) <= set(printed)
    stages = json.loads(proc.stdout)["stages"]
    assert set(IMAGE_STAGES) | {"other", "total"} <= set(stages)
    assert all(isinstance(v, float) and v >= 0 for v in stages.values())
    assert [s for s in printed[1:-2] if s in IMAGE_STAGES] == [s for s in IMAGE_STAGES if s in printed]


def test_platform_not_in_index(nobody: Unprivileged, envd: Path, plain_registry: Registry) -> None:
    proc = build(nobody, envd, f"{plain_registry.host}/busy:multi", "x", "--insecure", "--platform", "linux/s390x")
    assert_clean_error(proc, 3, "no image for platform linux/s390x", "linux/amd64, linux/arm64")


def test_token_auth_with_docker_config(nobody: Unprivileged, envd: Path, layout: Path, fixture_dir: Path) -> None:
    issuer = TokenIssuer(fixture_dir)
    with token_server(issuer) as (realm, log), registry(fixture_dir / "token-registry", realm, issuer.bundle) as reg:
        ref = reg.push(f"oci:{layout}:t", "private/busy:t")
        denied = build(nobody, envd, ref, "denied", "--insecure")
        assert_clean_error(denied, 7, "refused access")
        config_dir = nobody.path("docker/config.json").parent
        import base64
        auth = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        (config_dir / "config.json").write_text(json.dumps({"auths": {reg.host: {"auth": auth}}}))
        nobody.share(config_dir, config_dir / "config.json")
        proc = build(nobody, envd, ref, "authed", "--insecure", env={"DOCKER_CONFIG": str(config_dir)})
        assert proc.returncode == 0, proc.stderr
        assert f"fidelity: {ENTRIES} entries, 0 mismatches" in proc.stderr
        assert any(line.startswith("auth ") and "private/busy:pull" in line for line in log)


def test_basic_auth_with_docker_config(nobody: Unprivileged, envd: Path, layout: Path, fixture_dir: Path) -> None:
    with registry(fixture_dir / "basic-registry", basic_auth=True) as reg:
        ref = reg.push(f"oci:{layout}:t", "busy:t")
        denied = build(nobody, envd, ref, "denied", "--insecure")
        assert_clean_error(denied, 7, "unauthorized")
        config_dir = nobody.path("docker/config.json").parent
        (config_dir / "config.json").write_text(json.dumps({"auths": {reg.host: {"username": USER,
                                                                                 "password": PASSWORD}}}))
        nobody.share(config_dir, config_dir / "config.json")
        proc = build(nobody, envd, ref, "authed", "--insecure", env={"DOCKER_CONFIG": str(config_dir)})
        assert proc.returncode == 0, proc.stderr
        assert f"fidelity: {ENTRIES} entries, 0 mismatches" in proc.stderr


def evil_layers(case: str, outside: Path) -> list[bytes]:
    return {
        "dotdot": [images.tar_bytes(("../escape", tarfile.REGTYPE, b"evil"))],
        "absolute": [images.tar_bytes(("/abs", tarfile.REGTYPE, b"evil"))],
        "through-symlink": [images.tar_bytes(("out", tarfile.SYMTYPE, str(outside))),
                            images.tar_bytes(("out/planted", tarfile.REGTYPE, b"evil"))],
        "symlink-same-layer": [images.tar_bytes(("out", tarfile.SYMTYPE, str(outside)),
                                                ("out/planted", tarfile.REGTYPE, b"evil"))],
        "hardlink-outside": [images.tar_bytes(("h", tarfile.LNKTYPE, "../../etc/passwd"))],
    }[case]


@pytest.mark.parametrize("case", ["dotdot", "absolute", "through-symlink", "symlink-same-layer",
                                  "hardlink-outside"])
def test_malicious_layers_write_nothing(nobody: Unprivileged, envd: Path, case: str) -> None:
    outside = nobody.path("outside")
    outside.mkdir()
    nobody.share(outside)
    evil = images.craft_layout(nobody.path("evil"), evil_layers(case, outside))
    subprocess.run(["chmod", "-R", "a+rwX", str(evil)], check=True)
    before = sorted(p.name for p in nobody.workdir.iterdir())
    proc = build(nobody, envd, f"oci-layout:{evil}:t", "evil")
    assert_clean_error(proc, 3, "nothing was written outside the image")
    assert list(outside.iterdir()) == []
    assert not (nobody.workdir / "escape").exists() and not Path("/abs").exists()
    new = {p.name for p in nobody.workdir.iterdir()} - set(before)
    assert new <= {".cache", "templates"}  # the blob cache and the (empty) storage dir only
    assert [p.name for p in (nobody.workdir / "templates").iterdir()] == []  # no build, no staging, no lock


def test_corrupt_blob_is_refused(tmp_path: Path, layout: Path, envd_standin: Path) -> None:
    from tests.conftest import cli

    copy = tmp_path / "layout"
    shutil.copytree(layout, copy)
    manifest = json.loads((copy / "index.json").read_text())["manifests"][0]["digest"].split(":")[1]
    layer = json.loads((copy / "blobs/sha256" / manifest).read_text())["layers"][-1]["digest"].split(":")[1]
    blob = copy / "blobs/sha256" / layer
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0xFF  # in the gzip trailer: decompresses fine, digest differs
    blob.write_bytes(bytes(data))
    proc = cli("--storage", tmp_path / "t", "build", "--from-image", f"oci-layout:{copy}:t", "--envd", envd_standin,
               env={"E2B_ARTIFACT_CACHE": str(tmp_path / "cache")})
    assert_clean_error(proc, 8, "layer")
