"""Object storage behind one interface: local directories, S3 and GCS.

``open_storage(url)`` accepts a plain path, ``file:///abs/path``,
``s3://bucket[/prefix]`` or ``gs://bucket[/prefix]``. Keys under the root are
laid out as upstream E2B does: ``<build-id>/<file name>``.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

from ..errors import ArtifactError, ExitCode
from .base import DEFAULT_TIMEOUT, Cleanup, IntegrityError, ObjectInfo, Storage, TransferOptions, UploadJournal

__all__ = ["DEFAULT_TIMEOUT", "Cleanup", "IntegrityError", "ObjectInfo", "Storage", "TransferOptions",
           "UploadJournal", "open_storage"]


def open_storage(url: str, *, endpoint_url: str | None = None, path_style: bool | None = None,
                 max_connections: int = 16, timeout: float = DEFAULT_TIMEOUT) -> Storage:
    """A :class:`Storage` for ``url``; the S3/GCS libraries are imported only when needed."""
    parsed = urlparse(url)
    scheme = parsed.scheme.lower()
    if scheme in ("s3", "gs"):
        if not parsed.netloc:
            raise ArtifactError(f"{url}: no bucket name", hint=f"use {scheme}://BUCKET/PREFIX",
                                code=ExitCode.USAGE)
        prefix = parsed.path.strip("/")
        if scheme == "s3":
            _need("botocore")
            from .s3 import S3Storage

            return S3Storage(parsed.netloc, prefix, endpoint_url=endpoint_url, path_style=path_style,
                             max_connections=max_connections, timeout=timeout)
        if endpoint_url:
            raise ArtifactError("--endpoint-url applies to s3:// locations only",
                                hint="for a GCS emulator set STORAGE_EMULATOR_HOST", code=ExitCode.USAGE)
        _need("google.cloud.storage")
        from .gcs import GCSStorage

        return GCSStorage(parsed.netloc, prefix, timeout=timeout)
    if endpoint_url:
        raise ArtifactError("--endpoint-url applies to s3:// locations only", code=ExitCode.USAGE)
    if scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise ArtifactError(f"{url}: file URLs must be absolute (file:///path)", code=ExitCode.USAGE)
        from .local import LocalStorage

        return LocalStorage(Path(parsed.path))
    if scheme and len(scheme) > 1:  # "C:" would be a drive letter, but this is a Linux tool
        raise ArtifactError(f"{url}: unsupported location scheme {scheme!r}",
                            hint="use a path, file:///path, s3://bucket/prefix or gs://bucket/prefix",
                            code=ExitCode.USAGE)
    from .local import LocalStorage

    return LocalStorage(Path(url).absolute())


def _need(module: str) -> None:
    import importlib.util

    if importlib.util.find_spec(module.split(".")[0]) is None or (
            "." in module and importlib.util.find_spec(module) is None):
        raise ArtifactError(f"{module} is not installed",
                            hint="pip install 'e2b-artifact[sync]' (adds botocore and google-cloud-storage)",
                            code=ExitCode.TOOL)
