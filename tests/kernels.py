"""Real guest kernels for the tests: small Linux 6.1 builds and Debian's cloud kernel, both cached.

* :func:`test_kernel` returns one of the variants built by ``scripts/build-test-kernels.sh`` (tinyconfig
  plus a Firecracker-like fragment, from Debian's ``linux-source-6.1``). The script owns the cache
  layout and key; this module asks it for the directory (``--print-dir``) and builds only when that
  directory is incomplete (a couple of minutes per variant on 2 cores).
* :func:`debian_cloud_kernel` returns Debian's ``linux-image-<ver>-cloud-amd64`` unpacked into the cache
  with ``apt-get download`` + ``dpkg-deb -x``: never installed into the host's ``/boot``.

Cache: ``$E2B_ARTIFACT_TEST_KERNELS`` (default ``~/.cache/e2b-artifact/test-kernels``), outside the repo.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BUILD_SCRIPT = REPO / "scripts" / "build-test-kernels.sh"

# The names are an API (tests and benchmarks use them); the script documents what each one is.
VARIANTS: tuple[str, ...] = ("cmdline-ikconfig", "cmdline-noikconfig", "nocmdline-noacpi", "acpi-nocmdline")

CLOUD_METAPACKAGE = "linux-image-cloud-amd64"
APT = ("apt-get", "-o", "DPkg::Lock::Timeout=900")


def cache_dir() -> Path:
    base = os.environ.get("E2B_ARTIFACT_TEST_KERNELS")
    return Path(base) if base else Path.home() / ".cache" / "e2b-artifact" / "test-kernels"


@dataclass(frozen=True)
class BuiltKernel:
    variant: str
    dir: Path
    vmlinux: Path  # the ELF (PVH note, .symtab kept): what Firecracker and QEMU's -kernel boot
    bzimage: Path  # arch/x86/boot/bzImage of the same build
    config: Path  # the build's final .config, byte for byte


@dataclass(frozen=True)
class DebianKernel:
    vmlinuz: Path  # a bzImage (LZ4-compressed payload)
    config: Path  # boot/config-<version>
    version: str  # e.g. 6.1.0-28-cloud-amd64
    package: str  # e.g. linux-image-6.1.0-28-cloud-amd64
    package_version: str  # the Debian version of that package


def _built(variant: str, directory: Path) -> BuiltKernel:
    return BuiltKernel(variant=variant, dir=directory, vmlinux=directory / "vmlinux",
                       bzimage=directory / "bzImage", config=directory / "config")


def _complete(kernel: BuiltKernel) -> bool:
    return all(p.is_file() and p.stat().st_size > 0 for p in (kernel.vmlinux, kernel.bzimage, kernel.config))


def test_kernel(variant: str) -> BuiltKernel:
    """The cached build of ``variant``; builds it first (slow, progress on stderr) when missing."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown test kernel variant {variant!r} (known: {', '.join(VARIANTS)})")
    env = {**os.environ, "E2B_ARTIFACT_TEST_KERNELS": str(cache_dir())}
    printed = subprocess.run(["bash", str(BUILD_SCRIPT), "--print-dir", variant], capture_output=True, text=True,
                             env=env, check=False)
    if printed.returncode != 0:
        raise RuntimeError(f"{BUILD_SCRIPT.name} --print-dir {variant} failed: {printed.stderr.strip()}")
    kernel = _built(variant, Path(printed.stdout.strip()))
    if _complete(kernel):
        return kernel
    print(f"tests/kernels.py: building test kernel {variant} (a few minutes) into {kernel.dir}", file=sys.stderr,
          flush=True)
    built = subprocess.run(["bash", str(BUILD_SCRIPT), variant], stdout=subprocess.PIPE, text=True, env=env,
                           check=False)  # stderr (progress) goes straight through
    if built.returncode != 0:
        raise RuntimeError(f"{BUILD_SCRIPT.name} {variant} failed (exit {built.returncode}); see its stderr")
    made = _built(variant, Path(built.stdout.strip().splitlines()[-1]))
    if made.dir != kernel.dir or not _complete(made):
        raise RuntimeError(f"{BUILD_SCRIPT.name} {variant} reported {made.dir}, expected a complete {kernel.dir}")
    return made


test_kernel.__test__ = False  # type: ignore[attr-defined]  # a helper, not a pytest test


def _run(argv: list[str], cwd: Path | None = None) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=cwd, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed (exit {proc.returncode}): {proc.stderr.strip()[-500:]}")
    return proc.stdout


def _resolve_cloud_package() -> tuple[str, str]:
    """(package, version) the cloud metapackage depends on, e.g. ('linux-image-6.1.0-28-cloud-amd64', '6.1.119-1')."""
    for attempt in (1, 2):
        proc = subprocess.run(["apt-cache", "depends", CLOUD_METAPACKAGE], capture_output=True, text=True,
                              check=False)
        deps = [line.split(":", 1)[1].strip() for line in proc.stdout.splitlines()
                if line.strip().startswith("Depends:")]
        images = [d for d in deps if d.startswith("linux-image-") and d.endswith("-cloud-amd64")
                  and not d.endswith("-unsigned")]
        if proc.returncode == 0 and images:
            package = images[0]
            shown = _run(["apt-cache", "show", "--no-all-versions", package])
            versions = [ln.split(":", 1)[1].strip() for ln in shown.splitlines() if ln.startswith("Version:")]
            if not versions:
                raise RuntimeError(f"apt-cache show {package} gave no Version")
            return package, versions[0]
        if attempt == 1:
            _run([*APT, "update", "-q"])
    raise RuntimeError(f"apt knows no {CLOUD_METAPACKAGE} with a linux-image-*-cloud-amd64 dependency")


def _unpacked(directory: Path) -> DebianKernel | None:
    vmlinuz = sorted((directory / "root" / "boot").glob("vmlinuz-*"))
    if len(vmlinuz) != 1:
        return None
    version = vmlinuz[0].name.removeprefix("vmlinuz-")
    config = directory / "root" / "boot" / f"config-{version}"
    package, _, package_version = directory.name.partition("_")
    if not config.is_file():
        return None
    return DebianKernel(vmlinuz=vmlinuz[0], config=config, version=version, package=package,
                        package_version=package_version.replace("%3a", ":"))


@functools.cache
def debian_cloud_kernel() -> DebianKernel:
    """Debian's cloud-amd64 kernel image, downloaded and unpacked into the cache once (never installed).

    A complete unpacked copy in the cache is used as it is, without asking apt (delete
    ``<cache>/debian-cloud/`` to fetch the current one).
    """
    base = cache_dir() / "debian-cloud"
    if base.is_dir():
        for directory in sorted(base.iterdir(), reverse=True):
            if not directory.name.startswith(".") and (found := _unpacked(directory)) is not None:
                return found
    package, version = _resolve_cloud_package()
    base.mkdir(parents=True, exist_ok=True)
    target = base / f"{package}_{version.replace(':', '%3a')}"
    with tempfile.TemporaryDirectory(prefix=".download-", dir=base) as tmp:
        work = Path(tmp)
        # apt-get download as root warns that _apt cannot write here and downloads unsandboxed: fine.
        _run([*APT, "download", "-q", f"{package}={version}"], cwd=work)
        debs = sorted(work.glob("*.deb"))
        if len(debs) != 1:
            raise RuntimeError(f"apt-get download {package}={version} left {[d.name for d in debs]}")
        staged = work / "staged"
        (staged / "root").mkdir(parents=True)
        _run(["dpkg-deb", "-x", str(debs[0]), str(staged / "root")])
        if target.exists():
            shutil.rmtree(target)
        staged.rename(target)
    found = _unpacked(target)
    if found is None:
        raise RuntimeError(f"{package} {version} holds no boot/vmlinuz-* with its boot/config-*")
    return found
