"""Known guest kernels (``kernels/catalog.json``), the ones installed, and a verified, resumable fetch.

A fetch downloads into ``$HOST_KERNELS_DIR/.e2b-artifact-fetch/<name>.part`` (resumed with HTTP
Range, also by the next run after a failure), checks the sha256, then renames into
``$HOST_KERNELS_DIR/<name>/vmlinux.bin``. Until that rename nothing under a kernel's name changes.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from ..errors import ArtifactError, ExitCode
from ..fsutil import exclusive_lock, unused_path
from ..settings import HOST_ARCH_DIRS
from .image import ARCHES, decompress_bzimage, identify
from .rules import data_path

KERNEL_FILE = "vmlinux.bin"
CONFIG_FILE = "vmlinux.bin.config"  # a sidecar config.sidecar_configs() finds
FETCH_DIR = ".e2b-artifact-fetch"
REPLACED_DIR = ".replaced"
CHUNK = 1 << 20
MAX_STALLED_ATTEMPTS = 5  # consecutive attempts that added no byte
RETRY_PAUSE_S = 0.3
TIMEOUT_S = (15, 60)  # connect, read

Progress = Callable[[int, int | None], None]  # bytes so far, total (None when unknown)


@dataclass(frozen=True)
class CatalogKernel:
    name: str
    arch: str
    source: str
    url: str
    config_url: str | None
    sha256: str | None
    sha256_source: str | None
    notes: str = ""
    layout: str | None = None  # the bucket layout the URLs come from (catalog "layouts"), None for a plain URL
    legacy_url: str | None = None  # the layout's flat <name>/vmlinux.bin, tried when ``url`` answers 404


@dataclass(frozen=True)
class Layout:
    """A bucket layout for kernels: ``base_url`` + ``path`` (``{name}``, ``{arch_dir}``), and a flat legacy path."""

    name: str
    base_url: str
    path: str
    legacy_path: str
    legacy_arch: str  # the arch the flat file holds

    def url(self, name: str, arch: str) -> str:
        return self.base_url + self.path.format(name=name, arch_dir=HOST_ARCH_DIRS[arch])

    def legacy_url(self, name: str, arch: str) -> str | None:
        return self.base_url + self.legacy_path.format(name=name) if arch == self.legacy_arch else None


class NotFound(ArtifactError):
    """The server answered 404: the object is not there (another path of the same layout may be)."""


@dataclass(frozen=True)
class InstalledKernel:
    name: str
    path: Path
    size: int
    arch: str | None
    kind: str


@dataclass
class FetchResult:
    name: str
    url: str
    path: Path
    sha256: str
    verified: bool  # the digest was compared with a known one
    state: str  # "installed", "already-installed", "replaced"
    resumed_from: int = 0
    restarts: int = 0
    replaced_to: Path | None = None
    config: Path | None = None
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}


def load_catalog() -> list[CatalogKernel]:
    doc = json.loads(data_path("catalog.json").read_text())
    layouts = load_layouts(doc)
    kernels = []
    for entry in doc["kernels"]:
        entry = dict(entry)
        flat = entry.pop("legacy_flat", False)
        if (layout := layouts.get(entry.get("layout") or "")) is not None:
            entry.setdefault("url", layout.url(entry["name"], entry["arch"]))
            entry.setdefault("config_url", None)
            entry["legacy_url"] = layout.legacy_url(entry["name"], entry["arch"]) if flat else None
        kernels.append(CatalogKernel(**entry))
    return kernels


def load_layouts(doc: dict[str, Any] | None = None) -> dict[str, Layout]:
    """The bucket layouts the catalog names (``e2b-artifact-binaries``)."""
    doc = doc if doc is not None else json.loads(data_path("catalog.json").read_text())
    return {name: Layout(name, d["base_url"], d["path"], d["legacy_path"], d["legacy_arch"])
            for name, d in doc.get("layouts", {}).items()}


def installed_kernels(root: Path) -> list[InstalledKernel]:
    """``<root>/<name>/vmlinux.bin`` and the ``<name>/<amd64|arm64>/vmlinux.bin`` layout, sorted by name."""
    found = []
    with contextlib.suppress(OSError):
        for entry in sorted(root.iterdir()):
            if entry.name.startswith(".") or not entry.is_dir():
                continue
            for candidate in (entry / KERNEL_FILE, *(entry / d / KERNEL_FILE for d in HOST_ARCH_DIRS.values())):
                if candidate.is_file():
                    with candidate.open("rb") as fh:
                        fmt = identify(fh.read(4096))
                    found.append(InstalledKernel(entry.name, candidate, candidate.stat().st_size, fmt.arch, fmt.kind))
    return found


def resolve(name_or_url: str, arch: str, name: str | None, sha256: str | None) -> CatalogKernel:
    """A catalog entry for NAME (and arch), or an ad-hoc entry for a URL."""
    if sha256 is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", sha256):
        raise ArtifactError(f"--sha256 {sha256!r} is not 64 hex digits", hint="e.g. --sha256 $(sha256sum FILE)",
                            code=ExitCode.USAGE)
    if re.match(r"https?://", name_or_url):
        install_name = name or _name_from_url(name_or_url)
        return CatalogKernel(_valid_name(install_name), arch, "URL", name_or_url, None,
                             sha256.lower() if sha256 else None, "--sha256" if sha256 else None)
    entries = [k for k in load_catalog() if k.name == name_or_url]
    if not entries:
        raise ArtifactError(f"{name_or_url!r} is not in the kernel catalog", hint="e2b-artifact kernel list shows the "
                            "names; or pass a URL", code=ExitCode.USAGE)
    entry = next((k for k in entries if k.arch == arch), None)
    if entry is None:
        raise ArtifactError(f"{name_or_url} is in the catalog for {', '.join(k.arch for k in entries)} only, "
                            f"not {arch}", hint=f"--arch {entries[0].arch}", code=ExitCode.USAGE)
    if name is not None or sha256 is not None:
        entry = CatalogKernel(**{**asdict(entry), "name": _valid_name(name or entry.name),
                                 "sha256": sha256.lower() if sha256 else entry.sha256,
                                 "sha256_source": "--sha256" if sha256 else entry.sha256_source})
    return entry


def fetch(entry: CatalogKernel, root: Path, *, force: bool = False, progress: Progress | None = None,
          note: Callable[[str], None] | None = None, extract: bool = True, keep_bzimage: bool = False) -> FetchResult:
    """Download ``entry`` into ``root/<name>/vmlinux.bin``: resumable, verified, renamed into place.

    A bzImage is replaced by the ELF vmlinux inside it (``extract``), installed as it is when
    ``keep_bzimage`` (the target Firecracker is 1.17+, whose x86_64 loader boots it), or refused
    before anything is installed: earlier Firecrackers read ``vmlinux.bin`` as an ELF only."""
    say = note or (lambda _msg: None)
    if not root.is_dir():
        raise ArtifactError(f"HOST_KERNELS_DIR {root} does not exist", hint="e2b-artifact paths --create, or "
                            "--set HOST_KERNELS_DIR=DIR", code=ExitCode.BAD_INPUT)
    staging = root / FETCH_DIR
    staging.mkdir(exist_ok=True)
    lock = staging / f"{entry.name}.lock"
    try:
        with exclusive_lock(lock, f"fetch of {entry.name}"):
            return _fetch_locked(entry, root, staging, force, progress, say, extract, keep_bzimage)
    finally:
        with contextlib.suppress(OSError):
            staging.rmdir()  # only when empty: a kept .part is resumed by the next run


def _fetch_locked(entry: CatalogKernel, root: Path, staging: Path, force: bool, progress: Progress | None,
                  say: Callable[[str], None], extract: bool, keep_bzimage: bool) -> FetchResult:
    part = staging / f"{entry.name}.part"
    try:
        resumed_from, restarts = download(entry.url, part, progress, say)
    except NotFound:
        if entry.legacy_url is None:
            raise
        # The orchestrator's own order (Config.HostKernelPath): <name>/<arch>/vmlinux.bin, else the flat file.
        say(f"{entry.url} not found: trying the legacy flat path {entry.legacy_url}")
        pin_kept = entry.sha256_source == "--sha256"  # a catalog pin names the arch path's object, not this one
        entry = replace(entry, url=entry.legacy_url, legacy_url=None, sha256=entry.sha256 if pin_kept else None,
                        sha256_source=entry.sha256_source if pin_kept else None)
        resumed_from, restarts = download(entry.url, part, progress, say)
    digest = _sha256(part)
    if entry.sha256 is not None and digest != entry.sha256:
        part.unlink()
        raise ArtifactError(f"sha256 mismatch for {entry.url}: got {digest}, expected {entry.sha256} "
                            f"({entry.sha256_source}); nothing installed",
                            hint="check the URL and --sha256; the download was discarded", code=ExitCode.INTEGRITY)
    notes = [] if entry.sha256 else [f"no known sha256 for {entry.name}: got {digest} (not verified)"]
    if (loadable := _loadable(part, entry, extract, keep_bzimage)) is not None:
        notes.append(f"downloaded a bzImage (sha256 {digest}); installed the ELF vmlinux inside it "
                     f"({loadable[0]} payload, {loadable[1]} bytes)")
        digest = _sha256(part)
    target_dir = root / entry.name
    target = target_dir / KERNEL_FILE
    config_part = _fetch_config(entry, staging, say)
    if target.is_file():
        existing = _sha256(target)
        if existing == digest:
            _discard(part, config_part)
            return FetchResult(entry.name, entry.url, target, digest, entry.sha256 is not None, "already-installed",
                               resumed_from, restarts, notes=tuple(notes))
        if not force:
            _discard(part, config_part)
            raise ArtifactError(f"{target} is already installed with other content (sha256 {existing})",
                                hint="--force moves the old one to $HOST_KERNELS_DIR/.replaced/ and installs this one",
                                code=ExitCode.CONFLICT)
        aside = unused_path(root / REPLACED_DIR / f"{entry.name}.{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%SZ}")
        aside.mkdir(parents=True)
        old_config = target_dir / CONFIG_FILE
        for old in (target, old_config):
            if old.is_file():
                os.link(old, aside / old.name)  # a second name first: the old kernel is never without one
        os.chmod(part, 0o644)
        os.replace(part, target)
        if config_part is None and old_config.is_file():
            old_config.unlink()  # kept in the aside directory; it describes the old kernel, not this one
        installed_config = _place_config(config_part, target_dir)
        return FetchResult(entry.name, entry.url, target, digest, entry.sha256 is not None, "replaced",
                           resumed_from, restarts, aside, installed_config, tuple(notes))
    os.chmod(part, 0o644)
    if target_dir.is_dir():  # an empty <name>/ (e.g. made by hand)
        os.replace(part, target)
        installed_config = _place_config(config_part, target_dir)
    else:
        # A fresh name appears in one rename, complete with its config, or not at all.
        fresh = staging / f"{entry.name}.new"
        shutil.rmtree(fresh, ignore_errors=True)
        fresh.mkdir()
        os.rename(part, fresh / KERNEL_FILE)
        _place_config(config_part, fresh)
        os.rename(fresh, target_dir)
        installed_config = target_dir / CONFIG_FILE if config_part is not None else None
    return FetchResult(entry.name, entry.url, target, digest, entry.sha256 is not None, "installed",
                       resumed_from, restarts, config=installed_config, notes=tuple(notes))


def _loadable(part: Path, entry: CatalogKernel, extract: bool, keep_bzimage: bool) -> tuple[str, int] | None:
    """Make the download a file Firecracker can load as ``vmlinux.bin``, or refuse it (the part is
    discarded). Returns (compression, size) when a bzImage was replaced by its ELF vmlinux."""
    data = part.read_bytes()
    fmt = identify(data)
    if fmt.kind == "elf" or (fmt.kind == "arm64-image" and entry.arch == "aarch64"):
        return None
    if fmt.kind == "bzimage" and not extract and keep_bzimage:
        return None
    if fmt.kind == "bzimage" and extract:
        method, vmlinux = decompress_bzimage(data)  # an ArtifactError here leaves the part for inspection
        part.write_bytes(vmlinux)
        return method, len(vmlinux)
    part.unlink()
    why = ("it is a bzImage, --no-extract was given and the Firecracker version is not 1.17+ (the first to boot "
           "a bzImage)" if fmt.kind == "bzimage"
           else f"it is {fmt.detail}, not a kernel Firecracker loads")
    raise ArtifactError(f"{entry.url}: not installed: {why}",
                        hint="fetch the uncompressed vmlinux (x86_64) or arch/arm64/boot/Image (aarch64); a bzImage "
                             "is extracted unless --no-extract is given", code=ExitCode.BAD_INPUT)


def download(url: str, part: Path, progress: Progress | None = None,
             say: Callable[[str], None] = lambda _msg: None) -> tuple[int, int]:
    """Download ``url`` to ``part``, resuming what is there; (bytes resumed from, restarts from zero)."""
    import requests

    resumed_from = part.stat().st_size if part.exists() else 0
    restarts = stalled = 0
    while True:
        have = part.stat().st_size if part.exists() else 0
        headers = {"Range": f"bytes={have}-"} if have else {}
        before = have
        try:
            with requests.get(url, headers=headers, stream=True, timeout=TIMEOUT_S) as resp:
                if resp.status_code == 416 and have:
                    say(f"server refused the range from {have} bytes: starting again from 0")
                    part.unlink()
                    restarts += 1
                    continue
                if resp.status_code == 404:
                    raise NotFound(f"{url}: HTTP 404 {resp.reason}",
                                   hint="check the URL (e2b-artifact kernel list shows the catalog)",
                                   code=ExitCode.REMOTE)
                if resp.status_code >= 400:
                    raise ArtifactError(f"{url}: HTTP {resp.status_code} {resp.reason}",
                                        hint="check the URL (e2b-artifact kernel list shows the catalog)",
                                        code=ExitCode.REMOTE)
                start = _range_start(resp.status_code, resp.headers.get("Content-Range"))
                if have and start != have:
                    say(f"server ignored the range request: starting again from 0 (had {have} bytes)")
                    have, restarts = 0, restarts + 1
                length = resp.headers.get("Content-Length")
                total = have + int(length) if length and length.isdigit() else None
                with part.open("r+b" if have else "wb") as fh:
                    fh.seek(have)
                    fh.truncate()
                    for chunk in resp.iter_content(CHUNK):
                        fh.write(chunk)
                        have += len(chunk)
                        if progress:
                            progress(have, total)
                if total is not None and have < total:
                    raise ConnectionError(f"connection closed at {have} of {total} bytes")
                return resumed_from, restarts
        except ArtifactError:
            raise
        except requests.ConnectionError as exc:
            have = part.stat().st_size if part.exists() else 0
            if _never_connected(exc):  # nothing to resume from the server: retrying would say the same 4 times
                raise ArtifactError(f"cannot reach {urlparse(url).netloc}: {_reason(exc)}",
                                    hint="check the URL and that this host can reach it (DNS, firewall, proxy); "
                                         + (f"the {have} bytes kept are resumed next time" if have else
                                            "nothing was downloaded"), code=ExitCode.REMOTE) from exc
            stalled = _retry_or_raise(url, exc, have, before, stalled, say)
        except (requests.RequestException, ConnectionError, OSError) as exc:
            have = part.stat().st_size if part.exists() else 0
            stalled = _retry_or_raise(url, exc, have, before, stalled, say)


def _never_connected(exc: BaseException) -> bool:
    """Whether the connection was never established (DNS, refused, connect timeout), not cut later."""
    import socket

    import urllib3.exceptions as u3

    never = (u3.NewConnectionError, u3.NameResolutionError, u3.ConnectTimeoutError, ConnectionRefusedError,
             socket.gaierror)
    stack, seen = [exc], set()
    while stack:
        e = stack.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, never):
            return True
        if isinstance(e, u3.MaxRetryError) and e.reason is not None:
            stack.append(e.reason)
        stack += [x for x in (e.__cause__, e.__context__) if x is not None]
        stack += [a for a in e.args if isinstance(a, BaseException)]
    return False


def _retry_or_raise(url: str, exc: BaseException, have: int, before: int, stalled: int,
                    say: Callable[[str], None]) -> int:
    """Count a failed attempt; raise after MAX_STALLED_ATTEMPTS in a row without progress."""
    stalled = 0 if have > before else stalled + 1
    if stalled >= MAX_STALLED_ATTEMPTS:
        keep = f"it resumes from the {have} bytes kept" if have else "nothing was kept"
        raise ArtifactError(f"{url}: {_reason(exc)} ({MAX_STALLED_ATTEMPTS} attempts made no progress)",
                            hint=f"run the same command again: {keep}", code=ExitCode.REMOTE) from exc
    say(f"download interrupted at {have} bytes ({_reason(exc)}): resuming")
    time.sleep(RETRY_PAUSE_S * stalled)
    return stalled


def _range_start(status: int, content_range: str | None) -> int:
    if status != 206 or not content_range:
        return 0
    m = re.match(r"bytes (\d+)-", content_range)
    return int(m.group(1)) if m else 0


def _fetch_config(entry: CatalogKernel, staging: Path, say: Callable[[str], None]) -> Path | None:
    """The catalog's sibling .config, best effort: a kernel without one is still installed."""
    if not entry.config_url:
        return None
    part = staging / f"{entry.name}.config.part"
    with contextlib.suppress(FileNotFoundError):
        part.unlink()
    try:
        download(entry.config_url, part)
    except ArtifactError as exc:
        say(f"config not fetched ({exc.message}): the check decides from the kernel itself")
        with contextlib.suppress(FileNotFoundError):
            part.unlink()
        return None
    return part


def _discard(*downloads: Path | None) -> None:
    for path in downloads:
        if path is not None:
            path.unlink()


def _place_config(config_part: Path | None, directory: Path) -> Path | None:
    if config_part is None:
        return None
    os.chmod(config_part, 0o644)
    os.replace(config_part, directory / CONFIG_FILE)
    return directory / CONFIG_FILE


def _name_from_url(url: str) -> str:
    parts = [p for p in urlparse(url).path.split("/") if p]
    if not parts:
        raise ArtifactError(f"cannot tell a kernel name from {url}", hint="pass --name NAME", code=ExitCode.USAGE)
    # E2B's bucket layout: .../kernels/<name>/vmlinux.bin (or .../<name>/<amd64|arm64>/vmlinux.bin)
    meaningful = [p for p in parts if p not in (KERNEL_FILE, *HOST_ARCH_DIRS.values())]
    return meaningful[-1] if parts[-1] == KERNEL_FILE and meaningful else parts[-1]


def _valid_name(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._+-]*", name):
        raise ArtifactError(f"{name!r} cannot be a kernel name (a directory under HOST_KERNELS_DIR)",
                            hint="pass --name with letters, digits, '.', '_', '+' or '-'", code=ExitCode.USAGE)
    return name


def _reason(exc: BaseException) -> str:
    text = str(exc)
    return text if len(text) < 200 else text[:200] + "..."


def _sha256(path: Path) -> str:
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def default_arch() -> str:
    machine = os.uname().machine
    return {"arm64": "aarch64"}.get(machine, machine) if machine in (*ARCHES, "arm64") else "x86_64"
