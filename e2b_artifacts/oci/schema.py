"""The documents of an image, checked field by field: index, manifest, config, docker-archive ``manifest.json``.

Each parser takes the raw bytes and a ``where`` (the file or URL they came
from) and returns typed values, or raises one :class:`ArtifactError` (exit 3)
that names ``where`` and the field, e.g. ``.../blobs/sha256/ab12…: field
"layers[0].digest" is missing``. Nothing past this module indexes raw JSON.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from ..errors import ArtifactError, ExitCode

JSON_LIMIT = 8 << 20  # bytes: index, manifest, config and manifest.json (real ones are a few KiB)
INDEX_TYPES = {"application/vnd.oci.image.index.v1+json",
               "application/vnd.docker.distribution.manifest.list.v2+json"}
# the OCI image spec's digest grammar: algorithm ":" encoded
_DIGEST_GRAMMAR = re.compile(r"^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$")
_SHA256 = re.compile(r"^sha256:[0-9a-f]{64}$")
TOP = "(top level)"
_HINT = "the image is malformed; rebuild or re-push it"


def _fail(where: str, message: str) -> ArtifactError:
    return ArtifactError(f"{where}: {message}", hint=_HINT, code=ExitCode.BAD_INPUT)


def _type_name(value: object) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "an integer",
            float: "a number", type(None): "null"}.get(type(value), type(value).__name__)


def _wrong(where: str, path: str, expected: str, value: object) -> ArtifactError:
    if path == TOP:
        return _fail(where, f"the document must be {expected}, not {_type_name(value)}")
    return _fail(where, f'field "{path}" must be {expected}, not {_type_name(value)}')


def _get(doc: dict[str, Any], key: str, where: str, path: str, *, required: bool) -> Any:
    if key not in doc:
        if required:
            raise _fail(where, f'field "{path}" is missing')
        return None
    return doc[key]


def _object(value: Any, where: str, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _wrong(where, path, "an object", value)
    return value


def _string(value: Any, where: str, path: str) -> str:
    if not isinstance(value, str):
        raise _wrong(where, path, "a string", value)
    return value


def _optional_string(doc: dict[str, Any], key: str, where: str, path: str) -> str | None:
    value = doc.get(key)
    return None if value is None else _string(value, where, path)


def _strings(value: Any, where: str, path: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise _wrong(where, path, "a list of strings", value)
    return value


def _list(value: Any, where: str, path: str) -> list[Any]:
    if not isinstance(value, list):
        raise _wrong(where, path, "a list", value)
    return value


def check_digest(value: Any, where: str, path: str) -> str:
    """A sha256 digest as the spec writes it; other well-formed algorithms are named as unsupported."""
    text = _string(value, where, path)
    if _SHA256.match(text):
        return text
    if _DIGEST_GRAMMAR.match(text):
        algorithm = text.split(":", 1)[0]
        if algorithm == "sha256":
            raise _fail(where, f'field "{path}" is not a sha256 digest (64 lowercase hex digits): {text[:90]!r}')
        raise _fail(where, f'field "{path}" uses digest algorithm {algorithm}, which is not supported '
                           "(only sha256)")
    raise _fail(where, f'field "{path}" is not a digest of the form algorithm:hex: {text[:90]!r}')


def parse_json(data: bytes, where: str) -> Any:
    """JSON from bytes; malformed, too deep or absurd numbers are one clean error."""
    if len(data) > JSON_LIMIT:
        raise ArtifactError(f"{where} is {len(data)} bytes, more than the {JSON_LIMIT >> 20} MiB an image "
                            "document may have", hint=_HINT, code=ExitCode.BAD_INPUT)
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError and the int-digits limit are ValueErrors
        raise ArtifactError(f"{where} is not valid JSON: {str(exc)[:200]}", hint=_HINT,
                            code=ExitCode.BAD_INPUT) from exc


@dataclass(frozen=True)
class Descriptor:
    digest: str
    size: int
    media_type: str | None = None
    platform: dict[str, str] | None = None
    annotations: dict[str, str] = field(default_factory=dict)

    @property
    def ref_name(self) -> str | None:
        return self.annotations.get("org.opencontainers.image.ref.name")

    def platform_text(self) -> str:
        spec = self.platform or {}
        text = f"{spec.get('os')}/{spec.get('architecture')}"
        return text + (f"/{spec['variant']}" if spec.get("variant") else "")


def descriptor(value: Any, where: str, path: str) -> Descriptor:
    doc = _object(value, where, path)
    digest = check_digest(_get(doc, "digest", where, f"{path}.digest", required=True), where, f"{path}.digest")
    size = _get(doc, "size", where, f"{path}.size", required=True)
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise _fail(where, f'field "{path}.size" must be an integer >= 0, not {json.dumps(size)[:40]}')
    media_type = _optional_string(doc, "mediaType", where, f"{path}.mediaType")
    platform = None
    if doc.get("platform") is not None:
        spec = _object(doc["platform"], where, f"{path}.platform")
        platform = {key: _string(spec[key], where, f"{path}.platform.{key}")
                    for key in ("os", "architecture", "variant") if spec.get(key) is not None}
    annotations = {}
    if doc.get("annotations") is not None:
        raw = _object(doc["annotations"], where, f"{path}.annotations")
        annotations = {key: _string(item, where, f"{path}.annotations.{key}") for key, item in raw.items()}
    return Descriptor(digest, size, media_type, platform, annotations)


@dataclass(frozen=True)
class Index:
    manifests: list[Descriptor]
    media_type: str | None = None


@dataclass(frozen=True)
class Manifest:
    config: Descriptor
    layers: list[Descriptor]
    media_type: str | None = None


def parse_index(data: bytes, where: str) -> Index:
    """An image index (a layout's ``index.json`` or a registry's manifest list)."""
    return _index(_object(parse_json(data, where), where, TOP), where)


def _index(doc: dict[str, Any], where: str) -> Index:
    entries = _list(_get(doc, "manifests", where, "manifests", required=True), where, "manifests")
    return Index([descriptor(entry, where, f"manifests[{n}]") for n, entry in enumerate(entries)],
                 _optional_string(doc, "mediaType", where, "mediaType"))


def parse_manifest_or_index(data: bytes, where: str, media_type: str | None = None) -> Manifest | Index:
    """What a manifest reference resolves to; ``media_type`` is the transport's (Content-Type / descriptor)."""
    doc = _object(parse_json(data, where), where, TOP)
    declared = _optional_string(doc, "mediaType", where, "mediaType") or media_type
    if declared in INDEX_TYPES or ("manifests" in doc and "layers" not in doc and "config" not in doc):
        return _index(doc, where)
    config = descriptor(_get(doc, "config", where, "config", required=True), where, "config")
    layers = _list(_get(doc, "layers", where, "layers", required=True), where, "layers")
    return Manifest(config, [descriptor(layer, where, f"layers[{n}]") for n, layer in enumerate(layers)], declared)


def parse_config(data: bytes, where: str) -> dict[str, Any]:
    """An image config; returns the document with the fields the build reads checked."""
    doc = _object(parse_json(data, where), where, TOP)
    rootfs = _object(_get(doc, "rootfs", where, "rootfs", required=True), where, "rootfs")
    diff_ids = _list(_get(rootfs, "diff_ids", where, "rootfs.diff_ids", required=True), where, "rootfs.diff_ids")
    for n, diff_id in enumerate(diff_ids):
        check_digest(diff_id, where, f"rootfs.diff_ids[{n}]")
    if doc.get("config") is not None:
        cfg = _object(doc["config"], where, "config")
        for key in ("User", "WorkingDir"):
            if cfg.get(key) is not None:
                _string(cfg[key], where, f"config.{key}")
        for key in ("Env", "Entrypoint", "Cmd"):
            if cfg.get(key) is not None:
                _strings(cfg[key], where, f"config.{key}")
    return doc


def diff_ids(config: dict[str, Any]) -> list[str]:
    """The layer diff ids of a config that :func:`parse_config` accepted."""
    return list(config["rootfs"]["diff_ids"])


@dataclass(frozen=True)
class ArchiveEntry:
    """One image of a ``docker save`` archive's ``manifest.json``."""

    config: str  # member name of the config
    layers: list[str]  # member names of the layer tars, bottom first
    repo_tags: list[str]


def parse_archive_manifest(data: bytes, where: str) -> list[ArchiveEntry]:
    entries = _list(parse_json(data, where), where, TOP)
    result = []
    for n, value in enumerate(entries):
        entry = _object(value, where, f"[{n}]")
        config = _string(_get(entry, "Config", where, f"[{n}].Config", required=True), where, f"[{n}].Config")
        layers = _strings(_get(entry, "Layers", where, f"[{n}].Layers", required=True), where, f"[{n}].Layers")
        tags = _strings(entry.get("RepoTags") or [], where, f"[{n}].RepoTags")
        result.append(ArchiveEntry(config, layers, tags))
    return result
