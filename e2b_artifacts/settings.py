"""E2B's own path and storage settings, resolved like the orchestrator does.

Order of precedence: a CLI flag, the environment, ``--env-file`` (KEY=VALUE
as in E2B's ``.env.local``), then the documented default below.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from .errors import ArtifactError, ExitCode

Kind = Literal["dir", "file", "value"]


@dataclass(frozen=True)
class Setting:
    name: str
    kind: Kind
    default: str | None  # may reference ${ORCHESTRATOR_BASE_PATH}
    about: str


SETTINGS: tuple[Setting, ...] = (
    Setting("LOCAL_TEMPLATE_STORAGE_BASE_PATH", "dir", "/tmp/templates",
            "template builds: <path>/<build-id>/rootfs.ext4, metadata.json, ..."),
    Setting("ORCHESTRATOR_BASE_PATH", "dir", "/orchestrator", "parent of the orchestrator's caches"),
    Setting("TEMPLATE_CACHE_DIR", "dir", "${ORCHESTRATOR_BASE_PATH}/template",
            "orchestrator template cache: <path>/<build-id>/cache/<uuid>/"),
    Setting("SHARED_CHUNK_CACHE_PATH", "dir", None, "persistent chunk cache (NFS); unset = off"),
    Setting("SANDBOX_CACHE_DIR", "dir", "${ORCHESTRATOR_BASE_PATH}/sandbox", "per-sandbox rootfs overlays"),
    Setting("SNAPSHOT_CACHE_DIR", "dir", "/mnt/snapshot-cache", "Firecracker memfile dump target (tmpfs)"),
    Setting("SANDBOX_DIR", "dir", "/fc-vm", "path inside Firecracker's mount namespace; must match across hosts"),
    Setting("HOST_KERNELS_DIR", "dir", "/fc-kernels", "guest kernels: <path>/<kernel_version>/vmlinux.bin"),
    Setting("FIRECRACKER_VERSIONS_DIR", "dir", "/fc-versions",
            "Firecracker binaries: <path>/<firecracker_version>/firecracker"),
    Setting("HOST_ENVD_PATH", "file", "/fc-envd/envd", "the envd binary injected into templates"),
    Setting("BUILD_CACHE_BUCKET_NAME", "value", None, "build-cache bucket (cloud providers)"),
    Setting("STORAGE_PROVIDER", "value", "GCPBucket", "GCPBucket, AWSBucket or Local"),
    Setting("TEMPLATE_BUCKET_NAME", "value", None, "template bucket (STORAGE_PROVIDER GCPBucket or AWSBucket)"),
    Setting("TEMPLATE_STORAGE_URL", "value", None,
            "template storage as a URL, gs:// s3:// file:// (upstream HEAD; wins over STORAGE_PROVIDER and "
            "TEMPLATE_BUCKET_NAME)"),
)
BY_NAME = {s.name: s for s in SETTINGS}

CACHE_ENV = "E2B_ARTIFACT_CACHE"

# Conventional roots under which a path usually lives on its own disk.
MOUNT_ROOTS = ("/mnt", "/media", "/run/media", "/Volumes")


@dataclass(frozen=True)
class Resolved:
    name: str
    value: str | None
    source: str  # "flag", "env", "env-file:<path>", "default", "unset"

    @property
    def path(self) -> Path:
        if self.value is None:
            raise ArtifactError(
                f"{self.name} is not set",
                hint=f"set it in the environment, an --env-file, or with --set {self.name}=PATH",
                code=ExitCode.BAD_INPUT,
            )
        return Path(self.value)


# Upstream HEAD keeps host binaries per arch (<dir>/<version>/amd64/<file>), 2025 releases flat.
HOST_ARCH_DIRS = {"x86_64": "amd64", "aarch64": "arm64"}


def host_file_candidates(base: Path, version: str, file_name: str, arch: str = "x86_64") -> tuple[Path, Path]:
    """Where the orchestrator looks for a kernel or Firecracker binary: the per-arch path first, then the flat one."""
    return base / version / HOST_ARCH_DIRS[arch] / file_name, base / version / file_name


def cache_dir(env: Mapping[str, str] | None = None) -> Path:
    """This tool's own cache (image blobs, the KVM probe, console logs): ``$E2B_ARTIFACT_CACHE``, else
    ``~/.cache/e2b-artifact``. Everything in it can be fetched or computed again."""
    value = (os.environ if env is None else env).get(CACHE_ENV)
    return Path(value) if value else Path.home() / ".cache" / "e2b-artifact"


def parse_env_file(path: Path) -> dict[str, str]:
    """Read KEY=VALUE lines (``#`` comments, optional ``export``, shell quoting)."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ArtifactError(f"cannot read env file {path}: {exc.strerror}",
                            hint="pass an existing file to --env-file", code=ExitCode.BAD_INPUT) from exc
    values: dict[str, str] = {}
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export "):].lstrip()
        key, sep, value = line.partition("=")
        if not sep or not key.strip().replace("_", "").isalnum():
            raise ArtifactError(f"{path}:{lineno}: expected KEY=VALUE, got {raw!r}",
                                hint="fix or remove that line", code=ExitCode.BAD_INPUT)
        try:
            words = shlex.split(value, comments=True)
        except ValueError as exc:
            raise ArtifactError(f"{path}:{lineno}: {exc}", hint="check the quoting",
                                code=ExitCode.BAD_INPUT) from exc
        values[key.strip()] = " ".join(words)
    return values


class Settings:
    """The resolved value and source of every setting."""

    def __init__(self, flags: Mapping[str, str] | None = None, env: Mapping[str, str] | None = None,
                 env_file: Path | None = None) -> None:
        flags = dict(flags or {})
        for name in flags:
            if name not in BY_NAME:
                raise ArtifactError(f"unknown setting {name}",
                                    hint="known: " + ", ".join(BY_NAME), code=ExitCode.USAGE)
        environ = os.environ if env is None else env
        from_file = parse_env_file(env_file) if env_file else {}
        self._resolved: dict[str, Resolved] = {}
        for setting in SETTINGS:  # ORCHESTRATOR_BASE_PATH precedes the dirs derived from it
            if setting.name in flags:
                r = Resolved(setting.name, flags[setting.name], "flag")
            elif environ.get(setting.name):
                r = Resolved(setting.name, environ[setting.name], "env")
            elif from_file.get(setting.name):
                r = Resolved(setting.name, from_file[setting.name], f"env-file:{env_file}")
            elif setting.default is not None:
                base = self._resolved.get("ORCHESTRATOR_BASE_PATH")
                base_value = base.value if base and base.value else ""
                value = setting.default.replace("${ORCHESTRATOR_BASE_PATH}", base_value)
                r = Resolved(setting.name, value, "default")
            else:
                r = Resolved(setting.name, None, "unset")
            self._resolved[setting.name] = r

    def __getitem__(self, name: str) -> Resolved:
        return self._resolved[name]

    def all(self) -> list[Resolved]:
        return list(self._resolved.values())

    @property
    def storage(self) -> Path:
        return self["LOCAL_TEMPLATE_STORAGE_BASE_PATH"].path

    def build_dir(self, build_id_or_path: str) -> Path:
        """A build directory from a build id (under storage) or an explicit path."""
        candidate = Path(build_id_or_path)
        if os.sep in build_id_or_path or build_id_or_path in (".", ".."):
            return candidate
        return self.storage / build_id_or_path


@dataclass(frozen=True)
class PathStatus:
    state: str  # "exists", "missing", "absent-mount", "not-mounted", "wrong-type", "unset", "value"
    detail: str


def inspect_path(setting: Setting, value: str | None, root: Path | None = None) -> PathStatus:
    """Does this path exist, and if not, is it under a mount point absent on this host?

    ``root``: look at the path as it is under that directory (a prepared host tree) instead of ``/``.
    """
    if setting.kind == "value":
        return PathStatus("value", "")
    if value is None:
        return PathStatus("unset", "not set (feature off)")
    def here(host_path: str) -> Path:
        return Path(host_path) if root is None else root / host_path.lstrip("/")

    mount = _mount_root_of(Path(value))
    path = here(value)
    if mount is not None and not os.path.ismount(here(str(mount))):
        state = "absent-mount" if not here(str(mount)).exists() else "not-mounted"
        detail = (f"{mount} does not exist on this host (copied from another machine?)"
                  if state == "absent-mount" else f"{mount} exists but nothing is mounted there")
        if path.exists() and state == "not-mounted":
            detail += f"; data written to {path} lands on the root filesystem"
        return PathStatus(state, detail)
    if not path.exists():
        return PathStatus("missing", "does not exist (e2b-artifact paths --create makes it)"
                          if setting.kind == "dir" else "does not exist")
    if setting.kind == "dir" and not path.is_dir():
        return PathStatus("wrong-type", "exists but is not a directory")
    if setting.kind == "file" and not path.is_file():
        return PathStatus("wrong-type", "exists but is not a regular file")
    return PathStatus("exists", "")


def _mount_root_of(path: Path) -> Path | None:
    """For /mnt/sdb/x return /mnt/sdb (the directory that should be a mount point)."""
    parts = path.parts
    for root in MOUNT_ROOTS:
        rparts = Path(root).parts
        depth = len(rparts) + (1 if root == "/run/media" else 0)  # /run/media/<user>/<disk>
        if parts[: len(rparts)] == rparts and len(parts) > depth:
            return Path(*parts[: depth + 1])
    return None
