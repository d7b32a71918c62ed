"""Image references, platforms, registry auth helpers (pure functions)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from e2b_artifacts.errors import ArtifactError
from e2b_artifacts.oci.reference import DockerArchiveRef, OciLayoutRef, Platform, RegistryRef, parse
from e2b_artifacts.oci.registry import docker_credentials, parse_challenge

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(("text", "expected"), [
    ("busybox", RegistryRef("docker.io", "library/busybox", "latest", None)),
    ("acme/app:1.2", RegistryRef("docker.io", "acme/app", "1.2", None)),
    ("ghcr.io/acme/app", RegistryRef("ghcr.io", "acme/app", "latest", None)),
    ("127.0.0.1:5000/busy:t", RegistryRef("127.0.0.1:5000", "busy", "t", None)),
    ("localhost/x/y:z", RegistryRef("localhost", "x/y", "z", None)),
    (f"reg.example:443/a/b@{DIGEST}", RegistryRef("reg.example:443", "a/b", None, DIGEST)),
    (f"docker://quay.io/a/b:t@{DIGEST}", RegistryRef("quay.io", "a/b", "t", DIGEST)),
])
def test_registry_references(text: str, expected: RegistryRef) -> None:
    assert parse(text) == expected
    assert expected.reference == (expected.digest or expected.tag)


def test_docker_hub_api_host() -> None:
    ref = parse("python:3.12-slim")
    assert isinstance(ref, RegistryRef) and ref.api_host == "registry-1.docker.io"


def test_file_sources(tmp_path: Path) -> None:
    assert parse(f"oci-layout:{tmp_path}/lay:v1") == OciLayoutRef(tmp_path / "lay", "v1")
    assert parse(f"oci-layout:{tmp_path}/lay") == OciLayoutRef(tmp_path / "lay", None)
    (tmp_path / "odd:name").mkdir()
    (tmp_path / "odd:name" / "index.json").write_text("{}")
    assert parse(f"oci-layout:{tmp_path}/odd:name") == OciLayoutRef(tmp_path / "odd:name", None)
    assert parse("docker-archive:img.tar") == DockerArchiveRef(Path("img.tar"))


@pytest.mark.parametrize("text", ["UPPER/case", "a/b@sha256:short", "a/b:bad tag", "a//b"])
def test_bad_references(text: str) -> None:
    with pytest.raises(ArtifactError):
        parse(text)


def test_platform() -> None:
    assert Platform.parse("linux/arm64/v8").matches({"os": "linux", "architecture": "arm64", "variant": "v8"})
    assert Platform.parse("linux/arm64").matches({"os": "linux", "architecture": "arm64", "variant": "v8"})
    assert not Platform.parse("linux/amd64").matches({"os": "linux", "architecture": "arm64"})
    with pytest.raises(ArtifactError):
        Platform.parse("linux")


def test_challenge_parsing() -> None:
    scheme, params = parse_challenge('Bearer realm="https://auth.example/token",service="reg",'
                                     'scope="repository:a/b:pull"')
    assert scheme == "bearer"
    assert params == {"realm": "https://auth.example/token", "service": "reg", "scope": "repository:a/b:pull"}


def test_docker_config_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    auth = base64.b64encode(b"me:pa:ss").decode()
    (tmp_path / "config.json").write_text(json.dumps({"auths": {
        "https://reg.example:5000": {"auth": auth},
        "https://index.docker.io/v1/": {"username": "hub", "password": "pw"}}}))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    assert docker_credentials("reg.example:5000") == ("me", "pa:ss")
    assert docker_credentials("docker.io") == ("hub", "pw")
    assert docker_credentials("other.example") is None
