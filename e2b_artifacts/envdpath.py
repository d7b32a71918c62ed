"""Which envd binary a build or an inject uses: ``--envd``, a version staged beside ``HOST_ENVD_PATH``,
or ``HOST_ENVD_PATH`` itself.

Upstream's rule (e2b-dev/infra packages/orchestrator/pkg/template/build/core/envd/resolve.go,
``ResolveBuildBinary``): a version id resolves to a binary staged in the directory of
``HOST_ENVD_PATH`` (default ``/fc-envd``), first the flat sibling ``envd.<version>``, then the
release-bucket layout ``<version>/envd``; the id must match ``^[a-zA-Z0-9][a-zA-Z0-9.-]*$`` so it
cannot leave that directory. One deliberate difference: when neither is staged, upstream runs
``HOST_ENVD_PATH -version`` and accepts the promoted binary if it prints the same version. This tool
never executes envd on the host (it may be another arch, or a stand-in that serves forever); it says
how to pass that binary explicitly instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .errors import ArtifactError, ExitCode

VERSION_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9.-]*$")  # upstream's buildVersionRe


@dataclass(frozen=True)
class EnvdChoice:
    """The envd file chosen, and why."""

    path: Path
    chosen_by: str  # "--envd", "HOST_ENVD_PATH (<source>)", "--envd-version: envd.<V>" / "<V>/envd"
    version: str | None = None  # --envd-version, if given
    looked_for: tuple[Path, ...] = ()  # the staged names tried, in order

    def to_json(self) -> dict[str, object]:
        return {"path": str(self.path), "chosen_by": self.chosen_by, "version": self.version,
                "looked_for": [str(p) for p in self.looked_for]}


def staged_candidates(host_envd_path: Path, version: str) -> tuple[Path, Path]:
    """Where upstream looks for envd ``version``: ``<dir>/envd.<V>``, then ``<dir>/<V>/envd``."""
    base = host_envd_path.parent
    return base / f"envd.{version}", base / version / "envd"


def resolve(envd: Path | None, version: str | None, host_envd_path: Path, host_source: str = "default") -> EnvdChoice:
    """``--envd`` wins; else ``--envd-version`` picks a staged binary; else ``HOST_ENVD_PATH``."""
    if envd is not None:
        return EnvdChoice(envd, "--envd", version)
    if version is None:
        return EnvdChoice(host_envd_path, f"HOST_ENVD_PATH ({host_source})")
    if not VERSION_RE.match(version):
        raise ArtifactError(f"--envd-version {version!r} is not a version id (letters, digits, '.' and '-', "
                            "starting with a letter or digit)",
                            hint="e.g. --envd-version 0.6.13, v0.7.0 or a git sha; it names a file beside "
                                 "HOST_ENVD_PATH, so it cannot hold '/'", code=ExitCode.USAGE)
    candidates = staged_candidates(host_envd_path, version)
    for candidate, layout in zip(candidates, (f"envd.{version}", f"{version}/envd"), strict=True):
        if candidate.is_file():
            return EnvdChoice(candidate, f"--envd-version: {layout} beside HOST_ENVD_PATH", version, candidates)
    base = host_envd_path.parent
    promoted = (f"; if {host_envd_path} is envd {version} (upstream accepts it when `envd -version` prints "
                f"{version}), pass --envd {host_envd_path} --envd-version {version}"
                if host_envd_path.is_file() else "")
    raise ArtifactError(f"envd {version} is not staged under {base}: looked for "
                        f"{' and '.join(str(c) for c in candidates)}",
                        hint=f"put it at one of those paths (upstream's layouts), point HOST_ENVD_PATH into the "
                             f"directory that has it (--set HOST_ENVD_PATH=DIR/envd), or pass --envd PATH{promoted}",
                        code=ExitCode.BAD_INPUT)
