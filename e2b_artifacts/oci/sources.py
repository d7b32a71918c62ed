"""Resolve an image source to a manifest, a config and verified layer blobs.

Three sources: a registry (blobs land in the :class:`BlobCache`), an OCI image
layout directory, and a ``docker save`` archive (both read in place). Every
manifest and config is checked against its digest here; compressed layers
from a layout are checked while they are decompressed (``layers.py``); every
layer is checked against its ``diff_id`` in the config.
"""

from __future__ import annotations

import hashlib
import json
import tarfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, cast

from ..errors import ArtifactError, ExitCode
from .cache import BlobCache
from .reference import DockerArchiveRef, ImageRef, OciLayoutRef, Platform, RegistryRef, check_digest
from .registry import RegistryClient

INDEX_TYPES = {"application/vnd.oci.image.index.v1+json",
               "application/vnd.docker.distribution.manifest.list.v2+json"}
PARALLEL_DOWNLOADS = 4
Progress = Callable[[str], None]


@dataclass
class Layer:
    diff_id: str  # sha256 of the uncompressed tar, from the config
    digest: str | None  # of the blob as stored (compressed); None for docker-archive
    size: int | None
    open: Callable[[], IO[bytes]]  # the blob's bytes
    verified: bool  # the blob's digest was already checked (cache)


@dataclass
class ResolvedImage:
    reference: str
    manifest_digest: str | None
    config_digest: str
    config: dict[str, Any]
    layers: list[Layer]
    downloaded_bytes: int = 0
    cached_blobs: int = 0
    platform: str | None = None
    notes: list[str] = field(default_factory=list)


def _file_opener(path: Path) -> Callable[[], IO[bytes]]:
    return lambda: path.open("rb")


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def verify_bytes(data: bytes, digest: str, what: str) -> bytes:
    actual = sha256_digest(data)
    if actual != digest:
        raise ArtifactError(f"{what} digest mismatch: expected {digest}, got {actual}",
                            hint="the source is corrupt or was tampered with", code=ExitCode.INTEGRITY)
    return data


def _json(data: bytes, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(data)
    except ValueError as exc:
        raise ArtifactError(f"{what} is not valid JSON: {exc}", hint="check the image source",
                            code=ExitCode.BAD_INPUT) from exc
    if not isinstance(doc, dict):
        raise ArtifactError(f"{what} is not a JSON object", hint="check the image source", code=ExitCode.BAD_INPUT)
    return doc


def is_index(doc: dict[str, Any], media_type: str | None = None) -> bool:
    return (media_type or doc.get("mediaType")) in INDEX_TYPES or ("manifests" in doc and "layers" not in doc)


def select_platform(index: dict[str, Any], platform: Platform, where: str) -> str:
    found = []
    for entry in index.get("manifests") or []:
        spec = entry.get("platform") or {}
        found.append(f"{spec.get('os')}/{spec.get('architecture')}" + (f"/{spec['variant']}"
                                                                     if spec.get("variant") else ""))
        if platform.matches(spec):
            return check_digest(entry["digest"])
    raise ArtifactError(f"{where} has no image for platform {platform}",
                        hint=f"pass --platform with one of: {', '.join(found) or '(none listed)'}",
                        code=ExitCode.BAD_INPUT)


def _diff_ids(config: dict[str, Any], layer_count: int, where: str) -> list[str]:
    diff_ids = list((config.get("rootfs") or {}).get("diff_ids") or [])
    if len(diff_ids) != layer_count:
        raise ArtifactError(f"{where}: the config lists {len(diff_ids)} diff_ids for {layer_count} layers",
                            hint="the image is malformed; rebuild or re-push it", code=ExitCode.BAD_INPUT)
    return [check_digest(d) for d in diff_ids]


def resolve(ref: ImageRef, *, platform: Platform, insecure: bool, cache: BlobCache,
            progress: Progress) -> ResolvedImage:
    if isinstance(ref, RegistryRef):
        return _from_registry(ref, platform, insecure, cache, progress)
    if isinstance(ref, OciLayoutRef):
        return _from_layout(ref, platform)
    return _from_docker_archive(ref)


# --- registry --------------------------------------------------------------------------

def _from_registry(ref: RegistryRef, platform: Platform, insecure: bool, cache: BlobCache,
                   progress: Progress) -> ResolvedImage:
    client = RegistryClient(ref, insecure=insecure)
    counters = {"downloaded": 0, "cached": 0}

    def manifest(reference: str) -> tuple[dict[str, Any], str]:
        digest = reference if reference.startswith("sha256:") else client.head_manifest(reference)
        if digest and cache.has(digest):
            counters["cached"] += 1
            return _json(cache.read(digest), f"manifest {digest}"), digest
        data, media_type = client.get_manifest(reference)
        counters["downloaded"] += len(data)
        actual = sha256_digest(data)
        if digest:
            verify_bytes(data, digest, f"manifest {ref.repository}:{reference}")
        cache.put(actual, [data])
        doc = _json(data, f"manifest {ref.repository}:{reference}")
        if media_type and "mediaType" not in doc:
            doc["mediaType"] = media_type
        return doc, actual

    doc, digest = manifest(ref.reference)
    chosen_platform = None
    if is_index(doc):
        digest = select_platform(doc, platform, str(ref))
        chosen_platform = str(platform)
        doc, digest = manifest(digest)
    config_digest = check_digest(doc["config"]["digest"])
    blobs = [(config_digest, int(doc["config"].get("size") or 0))]
    blobs += [(check_digest(layer["digest"]), int(layer.get("size") or 0)) for layer in doc.get("layers") or []]
    missing = [(d, s) for d, s in dict(blobs).items() if not cache.has(d)]
    counters["cached"] += len(blobs) - len(missing)
    if missing:
        counters["downloaded"] += _download(client, cache, missing, progress)
    config = _json(cache.read(config_digest), f"config {config_digest}")
    diff_ids = _diff_ids(config, len(blobs) - 1, str(ref))
    layers = [Layer(diff_id, d, s, _file_opener(cache.path(d)), True)
              for diff_id, (d, s) in zip(diff_ids, blobs[1:], strict=True)]
    return ResolvedImage(str(ref), digest, config_digest, config, layers, counters["downloaded"],
                         counters["cached"], chosen_platform)


def _download(client: RegistryClient, cache: BlobCache, blobs: list[tuple[str, int]], progress: Progress) -> int:
    """Fetch ``blobs`` into the cache in parallel, verifying each; returns bytes downloaded."""
    total = sum(s for _, s in blobs)
    lock = threading.Lock()
    state = {"bytes": 0, "done": 0, "last": 0.0}

    def report(force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - state["last"] < 1.0:
            return
        state["last"] = now
        frac = state["bytes"] / total if total else 1.0
        bar = "#" * int(frac * 20)
        progress(f"pull: [{bar:<20}] {state['bytes'] / 1e6:.1f}/{total / 1e6:.1f} MB, "
                 f"{int(state['done'])}/{len(blobs)} blobs")

    def on_bytes(n: int) -> None:
        with lock:
            state["bytes"] += n
            report()

    def fetch(digest: str) -> None:
        cache.put(digest, client.blob_chunks(digest, on_bytes))
        with lock:
            state["done"] += 1
            report(force=True)

    with ThreadPoolExecutor(max_workers=PARALLEL_DOWNLOADS) as pool:
        for future in [pool.submit(fetch, d) for d, _ in blobs]:
            future.result()
    return int(state["bytes"])


# --- OCI image layout ------------------------------------------------------------------

def _from_layout(ref: OciLayoutRef, platform: Platform) -> ResolvedImage:
    root = ref.path
    try:
        index = _json((root / "index.json").read_bytes(), f"{root}/index.json")
    except OSError as exc:
        raise ArtifactError(f"{root} is not an OCI image layout (no readable index.json)",
                            hint="pass oci-layout:DIR[:TAG] with DIR made by skopeo/umoci/buildah",
                            code=ExitCode.BAD_INPUT) from exc

    def blob_path(digest: str) -> Path:
        return root / "blobs" / "sha256" / check_digest(digest).split(":", 1)[1]

    def read_json(digest: str, what: str) -> dict[str, Any]:
        try:
            data = blob_path(digest).read_bytes()
        except OSError as exc:
            raise ArtifactError(f"{what} {digest} missing from {root}", hint="the layout is incomplete",
                                code=ExitCode.BAD_INPUT) from exc
        return _json(verify_bytes(data, digest, what), f"{what} {digest}")

    entries = index.get("manifests") or []
    if ref.tag:
        entries = [e for e in entries if (e.get("annotations") or {}).get("org.opencontainers.image.ref.name")
                   == ref.tag]
        if not entries:
            raise ArtifactError(f"tag {ref.tag!r} not found in {root}/index.json",
                                hint="list tags with: umoci ls --layout DIR", code=ExitCode.BAD_INPUT)
    if len(entries) != 1 and not (entries and is_index({"manifests": entries})):
        raise ArtifactError(f"{root} holds {len(entries)} images; say which one",
                            hint="pass oci-layout:DIR:TAG", code=ExitCode.USAGE)
    if len(entries) > 1:  # several platform manifests at top level
        digest = select_platform({"manifests": entries}, platform, str(ref))
    else:
        digest = check_digest(entries[0]["digest"])
    doc = read_json(digest, "manifest")
    chosen_platform = None
    if is_index(doc):
        digest = select_platform(doc, platform, str(ref))
        chosen_platform = str(platform)
        doc = read_json(digest, "manifest")
    config_digest = check_digest(doc["config"]["digest"])
    config = read_json(config_digest, "config")
    layer_docs = doc.get("layers") or []
    diff_ids = _diff_ids(config, len(layer_docs), str(ref))
    layers = []
    for diff_id, layer in zip(diff_ids, layer_docs, strict=True):
        path = blob_path(layer["digest"])
        if not path.is_file():
            raise ArtifactError(f"layer {layer['digest']} missing from {root}", hint="the layout is incomplete",
                                code=ExitCode.BAD_INPUT)
        layers.append(Layer(diff_id, layer["digest"], layer.get("size"), _file_opener(path), False))
    return ResolvedImage(str(ref), digest, config_digest, config, layers, platform=chosen_platform)


# --- docker save archive ---------------------------------------------------------------

def _from_docker_archive(ref: DockerArchiveRef) -> ResolvedImage:
    path = ref.path
    try:
        # stays open while the layers are read (the lifetime of the build)
        outer = tarfile.open(path, "r:*")  # noqa: SIM115
    except (OSError, tarfile.TarError) as exc:
        raise ArtifactError(f"{path} is not a readable docker-archive (docker save) tarball: {exc}",
                            hint="create one with: docker save IMAGE -o FILE.tar (or skopeo copy ... "
                                 "docker-archive:FILE.tar)", code=ExitCode.BAD_INPUT) from exc
    members = {m.name.lstrip("./") if m.name.startswith("./") else m.name: m for m in outer.getmembers()}

    def member_bytes(name: str) -> bytes:
        member = members.get(name)
        fh = outer.extractfile(member) if member is not None else None
        if fh is None:
            raise ArtifactError(f"{path}: {name} missing from the archive", hint="the archive is incomplete",
                                code=ExitCode.BAD_INPUT)
        return fh.read()

    manifest = json.loads(member_bytes("manifest.json"))
    if not isinstance(manifest, list) or len(manifest) != 1:
        raise ArtifactError(f"{path} holds {len(manifest) if isinstance(manifest, list) else 0} images",
                            hint="save exactly one image per archive", code=ExitCode.BAD_INPUT)
    entry = manifest[0]
    config_bytes = member_bytes(entry["Config"])
    config = _json(config_bytes, f"{path}:{entry['Config']}")
    config_digest = sha256_digest(config_bytes)
    diff_ids = _diff_ids(config, len(entry["Layers"]), str(ref))

    def opener(name: str) -> Callable[[], IO[bytes]]:
        member = members.get(name)
        if member is None:
            raise ArtifactError(f"{path}: layer {name} missing from the archive", hint="the archive is incomplete",
                                code=ExitCode.BAD_INPUT)
        # every layer gets its own handle: layers are unpacked in parallel threads
        return lambda: _archive_member(path, member)

    layers = [Layer(diff_id, None, None, opener(name), False)
              for diff_id, name in zip(diff_ids, entry["Layers"], strict=True)]
    tags = entry.get("RepoTags") or []
    reference = f"{ref}" + (f" ({tags[0]})" if tags else "")
    return ResolvedImage(reference, None, config_digest, config, layers)


class _MemberReader:
    """One member of a tar archive through a private file handle (plain or compressed archive)."""

    def __init__(self, archive: Path, member: tarfile.TarInfo) -> None:
        self.tar = tarfile.open(archive, "r:*")  # noqa: SIM115 (closed in close())
        fh = self.tar.extractfile(member.name)
        if fh is None:
            raise ArtifactError(f"{archive}: {member.name} is not a file", hint="the archive is malformed",
                                code=ExitCode.BAD_INPUT)
        self.fh = fh

    def read(self, n: int = -1) -> bytes:
        return self.fh.read(n)

    def close(self) -> None:
        self.fh.close()
        self.tar.close()

    def __enter__(self) -> _MemberReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _archive_member(archive: Path, member: tarfile.TarInfo) -> IO[bytes]:
    return cast(IO[bytes], _MemberReader(archive, member))
