"""Parse an image source: ``REGISTRY/REPO[:TAG][@DIGEST]``, ``oci-layout:PATH[:TAG]``, ``docker-archive:FILE``."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import ArtifactError, ExitCode

DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"
_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
_REPO_RE = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$")
_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


@dataclass(frozen=True)
class RegistryRef:
    registry: str  # host[:port] as written (docker.io for Docker Hub)
    repository: str
    tag: str | None
    digest: str | None

    @property
    def api_host(self) -> str:
        return DOCKER_HUB_API if self.registry == DOCKER_HUB else self.registry

    @property
    def reference(self) -> str:
        """What to ask the manifests endpoint for: the digest if pinned, else the tag."""
        return self.digest or self.tag or "latest"

    def __str__(self) -> str:
        text = f"{self.registry}/{self.repository}"
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


@dataclass(frozen=True)
class OciLayoutRef:
    path: Path
    tag: str | None

    def __str__(self) -> str:
        return f"oci-layout:{self.path}" + (f":{self.tag}" if self.tag else "")


@dataclass(frozen=True)
class DockerArchiveRef:
    path: Path

    def __str__(self) -> str:
        return f"docker-archive:{self.path}"


ImageRef = RegistryRef | OciLayoutRef | DockerArchiveRef


def check_digest(digest: str) -> str:
    if not _DIGEST_RE.match(digest):
        raise ArtifactError(f"unsupported or malformed digest {digest!r}",
                            hint="digests look like sha256:<64 hex digits>", code=ExitCode.BAD_INPUT)
    return digest


def parse(source: str) -> ImageRef:
    """Parse ``source`` as given to ``--from-image``."""
    if source.startswith("oci-layout:"):
        rest = source[len("oci-layout:"):]
        path, tag = rest, None
        # PATH may itself contain ':'; a trailing ':TAG' only counts if PATH then exists as a layout
        head, sep, tail = rest.rpartition(":")
        if sep and "/" not in tail and not Path(rest, "index.json").exists() and _TAG_RE.match(tail):
            path, tag = head, tail
        return OciLayoutRef(Path(path), tag)
    if source.startswith("docker-archive:"):
        return DockerArchiveRef(Path(source[len("docker-archive:"):]))
    if source.startswith("docker://"):
        source = source[len("docker://"):]
    return parse_registry(source)


def parse_registry(text: str) -> RegistryRef:
    name, digest = text, None
    if "@" in text:
        name, digest = text.split("@", 1)
        check_digest(digest)
    tag = None
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        name, tag = name.rsplit(":", 1)
        if not _TAG_RE.match(tag):
            raise _bad(text, f"invalid tag {tag!r}")
    first, sep, rest = name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        registry, repository = first, rest
    else:
        registry, repository = DOCKER_HUB, name
    if registry == DOCKER_HUB and "/" not in repository:
        repository = f"library/{repository}"
    if not _REPO_RE.match(repository):
        raise _bad(text, f"invalid repository name {repository!r}")
    if tag is None and digest is None:
        tag = "latest"
    return RegistryRef(registry, repository, tag, digest)


def _bad(text: str, why: str) -> ArtifactError:
    return ArtifactError(f"cannot parse image reference {text!r}: {why}",
                         hint="use REGISTRY/REPO:TAG, REGISTRY/REPO@sha256:..., oci-layout:DIR[:TAG] "
                              "or docker-archive:FILE", code=ExitCode.USAGE)


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str | None = None

    @classmethod
    def parse(cls, text: str) -> Platform:
        parts = text.split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise ArtifactError(f"invalid --platform {text!r}", hint="use OS/ARCH[/VARIANT], e.g. linux/amd64",
                                code=ExitCode.USAGE)
        return cls(parts[0], parts[1], parts[2] if len(parts) == 3 else None)

    def matches(self, spec: dict[str, object]) -> bool:
        if spec.get("os") != self.os or spec.get("architecture") != self.architecture:
            return False
        return self.variant is None or spec.get("variant") == self.variant

    def __str__(self) -> str:
        return f"{self.os}/{self.architecture}" + (f"/{self.variant}" if self.variant else "")
