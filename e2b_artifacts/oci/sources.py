"""Resolve an image source to a manifest, a config and verified layer blobs.

Three sources: a registry (blobs land in the :class:`BlobCache`), an OCI image
layout directory, and a ``docker save`` archive (both read in place). Every
document is checked field by field (``schema.py``); every manifest and config
is read through its descriptor (regular files only, at most its size, then its
digest); compressed layers are checked while they are decompressed
(``layers.py``); every layer is checked against its ``diff_id`` in the config.
"""

from __future__ import annotations

import hashlib
import tarfile
import threading
import time
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, cast

from ..errors import ArtifactError, ExitCode
from . import schema
from .blobio import digest_mismatch, open_regular, read_bounded, read_verified, too_large
from .cache import BlobCache
from .reference import DockerArchiveRef, ImageRef, OciLayoutRef, Platform, RegistryRef
from .registry import RegistryClient

PARALLEL_DOWNLOADS = 4
Progress = Callable[[str], None]


@dataclass
class Layer:
    diff_id: str  # sha256 of the uncompressed tar, from the config
    digest: str | None  # of the blob as stored (compressed); None for docker-archive
    size: int  # of the blob as stored: from the descriptor (or the archive member's header)
    open: Callable[[], IO[bytes]]  # the blob's bytes
    verified: bool  # the blob's digest was already checked (cache)
    source: tuple[Path, str]  # the file the blob is read from, and the member name inside it (archives)


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


def _file_opener(path: Path, what: str) -> Callable[[], IO[bytes]]:
    return lambda: open_regular(path, what)


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def verify_bytes(data: bytes, digest: str, what: str) -> bytes:
    actual = sha256_digest(data)
    if actual != digest:
        raise digest_mismatch(what, digest, actual)
    return data


def select_platform(index: schema.Index, platform: Platform, where: str) -> schema.Descriptor:
    for entry in index.manifests:
        if platform.matches(dict(entry.platform or {})):
            return entry
    found = [entry.platform_text() for entry in index.manifests]
    raise ArtifactError(f"{where} has no image for platform {platform}",
                        hint=f"pass --platform with one of: {', '.join(found) or '(none listed)'}",
                        code=ExitCode.BAD_INPUT)


def _diff_ids(config: dict[str, Any], layer_count: int, where: str) -> list[str]:
    diff_ids = schema.diff_ids(config)
    if len(diff_ids) != layer_count:
        raise ArtifactError(f"{where}: the config lists {len(diff_ids)} diff_ids for {layer_count} layers",
                            hint="the image is malformed; rebuild or re-push it", code=ExitCode.BAD_INPUT)
    return diff_ids


def check_sizes(descriptors: list[schema.Descriptor], max_image_size: int, where: str) -> None:
    """Compressed sizes alone beyond the limit: refuse before reading or downloading anything."""
    total = sum(d.size for d in descriptors)
    if total > max_image_size:
        from .layers import too_big_image

        error = too_big_image(max_image_size)
        error.message = f"{where}: its layers are {total} bytes compressed, more than --max-image-size allows"
        raise error


def resolve(ref: ImageRef, *, platform: Platform, insecure: bool, cache: BlobCache,
            progress: Progress, max_image_size: int | None = None) -> ResolvedImage:
    if max_image_size is None:
        from .layers import DEFAULT_MAX_IMAGE_SIZE

        max_image_size = DEFAULT_MAX_IMAGE_SIZE
    if isinstance(ref, RegistryRef):
        return _from_registry(ref, platform, insecure, cache, progress, max_image_size)
    if isinstance(ref, OciLayoutRef):
        return _from_layout(ref, platform, max_image_size)
    return _from_docker_archive(ref)


# --- registry --------------------------------------------------------------------------

def _from_registry(ref: RegistryRef, platform: Platform, insecure: bool, cache: BlobCache,
                   progress: Progress, max_image_size: int) -> ResolvedImage:
    client = RegistryClient(ref, insecure=insecure)
    counters = {"downloaded": 0, "cached": 0}

    def manifest(reference: str) -> tuple[schema.Manifest | schema.Index, str]:
        digest = reference if reference.startswith("sha256:") else client.head_manifest(reference)
        if digest:
            digest = schema.check_digest(digest, f"registry {ref.api_host}", "Docker-Content-Digest")
        where = f"manifest {ref.registry}/{ref.repository}@{digest or reference}"
        cached = cache.read_verified(digest, schema.JSON_LIMIT) if digest else None
        if cached is not None:
            counters["cached"] += 1
            return schema.parse_manifest_or_index(cached, where), digest or ""
        data, media_type = client.get_manifest(reference, schema.JSON_LIMIT)
        counters["downloaded"] += len(data)
        actual = sha256_digest(data)
        if digest:
            verify_bytes(data, digest, f"manifest {ref.repository}:{reference}")
        doc = schema.parse_manifest_or_index(data, f"manifest {ref.registry}/{ref.repository}@{actual}", media_type)
        cache.put(actual, [data])
        return doc, actual

    doc, digest = manifest(ref.reference)
    chosen_platform = None
    if isinstance(doc, schema.Index):
        digest = select_platform(doc, platform, str(ref)).digest
        chosen_platform = str(platform)
        doc, digest = manifest(digest)
        if isinstance(doc, schema.Index):
            raise ArtifactError(f"{ref}: the index entry for {platform} is itself an index",
                                hint="the image is malformed; rebuild or re-push it", code=ExitCode.BAD_INPUT)
    check_sizes(doc.layers, max_image_size, str(ref))
    if doc.config.size > schema.JSON_LIMIT:
        raise too_large(f"config {doc.config.digest}", schema.JSON_LIMIT)
    blobs = [doc.config, *doc.layers]
    missing = {d.digest: d.size for d in blobs if cache.verified(d.digest, d.size) is None}
    counters["cached"] += len(blobs) - len(missing)
    if missing:
        counters["downloaded"] += _download(client, cache, list(missing.items()), progress)
    config_bytes = cache.read_verified(doc.config.digest, schema.JSON_LIMIT)
    if config_bytes is None:
        raise ArtifactError(f"config {doc.config.digest} vanished from the cache {cache.blobs}",
                            hint="another process removed it; run the build again", code=ExitCode.CONFLICT)
    config = schema.parse_config(config_bytes, f"config {ref.registry}/{ref.repository}@{doc.config.digest}")
    diff_ids = _diff_ids(config, len(doc.layers), str(ref))
    layers = [Layer(diff_id, d.digest, d.size, _file_opener(cache.path(d.digest), "cached blob"), True,
                    (cache.path(d.digest), ""))
              for diff_id, d in zip(diff_ids, doc.layers, strict=True)]
    return ResolvedImage(str(ref), digest, doc.config.digest, config, layers, counters["downloaded"],
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

    def fetch(digest: str, size: int) -> None:
        cache.put(digest, client.blob_chunks(digest, on_bytes, size))
        with lock:
            state["done"] += 1
            report(force=True)

    with ThreadPoolExecutor(max_workers=PARALLEL_DOWNLOADS) as pool:
        for future in [pool.submit(fetch, d, s) for d, s in blobs]:
            future.result()
    return int(state["bytes"])


# --- OCI image layout ------------------------------------------------------------------

def _from_layout(ref: OciLayoutRef, platform: Platform, max_image_size: int) -> ResolvedImage:
    root = ref.path
    index_path = root / "index.json"
    index_bytes = read_bounded(index_path, schema.JSON_LIMIT, "index", missing_hint=(
        "pass oci-layout:DIR[:TAG] with DIR made by skopeo/umoci/buildah"))
    index = schema.parse_index(index_bytes, str(index_path))

    def blob_path(digest: str) -> Path:
        return root / "blobs" / "sha256" / digest.split(":", 1)[1]

    def read_doc(desc: schema.Descriptor, what: str) -> tuple[bytes, str]:
        if desc.size > schema.JSON_LIMIT:
            raise too_large(f"{what} {desc.digest}", schema.JSON_LIMIT)
        path = blob_path(desc.digest)
        return read_verified(path, desc.size, desc.digest, what), str(path)

    entries = index.manifests
    if ref.tag:
        entries = [e for e in entries if e.ref_name == ref.tag]
        if not entries:
            raise ArtifactError(f"tag {ref.tag!r} not found in {index_path}",
                                hint="list tags with: umoci ls --layout DIR", code=ExitCode.BAD_INPUT)
    if not entries or (len(entries) > 1 and not all(e.platform for e in entries)):
        raise ArtifactError(f"{root} holds {len(entries)} images; say which one",
                            hint="pass oci-layout:DIR:TAG", code=ExitCode.USAGE)
    entry = select_platform(schema.Index(entries), platform, str(ref)) if len(entries) > 1 else entries[0]
    data, where = read_doc(entry, "manifest")
    doc = schema.parse_manifest_or_index(data, where, entry.media_type)
    digest = entry.digest
    chosen_platform = None
    if isinstance(doc, schema.Index):
        entry = select_platform(doc, platform, str(ref))
        chosen_platform = str(platform)
        data, where = read_doc(entry, "manifest")
        doc = schema.parse_manifest_or_index(data, where, entry.media_type)
        digest = entry.digest
        if isinstance(doc, schema.Index):
            raise ArtifactError(f"{where}: the index entry for {platform} is itself an index",
                                hint="the image is malformed; rebuild it", code=ExitCode.BAD_INPUT)
    check_sizes(doc.layers, max_image_size, str(ref))
    config_data, config_where = read_doc(doc.config, "config")
    config = schema.parse_config(config_data, config_where)
    diff_ids = _diff_ids(config, len(doc.layers), str(ref))
    layers = []
    for diff_id, layer in zip(diff_ids, doc.layers, strict=True):
        path = blob_path(layer.digest)
        open_regular(path, "layer").close()  # missing or not a regular file: say so before any work
        layers.append(Layer(diff_id, layer.digest, layer.size, _file_opener(path, "layer"), False, (path, "")))
    return ResolvedImage(str(ref), digest, doc.config.digest, config, layers, platform=chosen_platform)


# --- docker save archive ---------------------------------------------------------------

def _from_docker_archive(ref: DockerArchiveRef) -> ResolvedImage:
    path = ref.path
    open_regular(path, "docker-archive", missing_hint="check the path").close()
    try:
        # stays open while the layers are read (the lifetime of the build)
        outer = tarfile.open(path, "r:*")  # noqa: SIM115
        listed = outer.getmembers()
    except (OSError, tarfile.TarError, EOFError, zlib.error) as exc:
        raise ArtifactError(f"{path} is not a readable docker-archive (docker save) tarball: {exc}",
                            hint="create one with: docker save IMAGE -o FILE.tar (or skopeo copy ... "
                                 "docker-archive:FILE.tar)", code=ExitCode.BAD_INPUT) from exc
    members = {m.name.lstrip("./") if m.name.startswith("./") else m.name: m for m in listed}

    def member(name: str, what: str) -> tarfile.TarInfo:
        found = members.get(name)
        if found is None or not found.isfile():
            raise ArtifactError(f"{path}: {what} {name} {'missing from' if found is None else 'is not a file in'} "
                                "the archive", hint="the archive is incomplete or malformed", code=ExitCode.BAD_INPUT)
        return found

    def member_bytes(name: str, what: str) -> bytes:
        info = member(name, what)
        if info.size > schema.JSON_LIMIT:
            raise ArtifactError(f"{path}: {name} is {info.size} bytes, more than the {schema.JSON_LIMIT >> 20} MiB "
                                "an image document may have", hint="check the archive", code=ExitCode.BAD_INPUT)
        fh = outer.extractfile(info)
        assert fh is not None  # a regular member
        return fh.read(schema.JSON_LIMIT + 1)

    entries = schema.parse_archive_manifest(member_bytes("manifest.json", "manifest"), f"{path}:manifest.json")
    if len(entries) != 1:
        raise ArtifactError(f"{path} holds {len(entries)} images",
                            hint="save exactly one image per archive", code=ExitCode.BAD_INPUT)
    entry = entries[0]
    config_bytes = member_bytes(entry.config, "config")
    config = schema.parse_config(config_bytes, f"{path}:{entry.config}")
    config_digest = sha256_digest(config_bytes)
    diff_ids = _diff_ids(config, len(entry.layers), str(ref))

    def layer(diff_id: str, name: str) -> Layer:
        info = member(name, "layer")
        # every layer gets its own handle: layers are unpacked in parallel threads
        return Layer(diff_id, None, info.size, lambda: _archive_member(path, info), False, (path, name))

    layers = [layer(diff_id, name) for diff_id, name in zip(diff_ids, entry.layers, strict=True)]
    reference = f"{ref}" + (f" ({entry.repo_tags[0]})" if entry.repo_tags else "")
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
