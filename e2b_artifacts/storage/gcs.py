"""``gs://bucket/prefix`` through google-cloud-storage.

Credentials are Application Default Credentials; with ``STORAGE_EMULATOR_HOST``
set (a local emulator) the client is anonymous. Large objects are uploaded as
parallel temporary part objects (``<key>.e2b-part-<upload>-<n>``) joined with a
server-side compose; the parts are deleted afterwards. A killed run's parts are reused by
the next run of the same upload (their size and server MD5 checked against the local
bytes), other leftovers deleted.
"""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
import threading
from collections.abc import Collection, Iterator
from typing import Any

from ..errors import ArtifactError
from . import base
from .base import DEFAULT_TIMEOUT, HASH_META_KEY, BucketStorage, Cleanup, Multipart, ObjectInfo, StoredPart

PART_MARK = ".e2b-part-"
COMPOSE_MAX = 32  # GCS limit of source objects per compose


@contextlib.contextmanager
def _remote_errors(what: str, timeout: float) -> Iterator[None]:
    import requests
    from google.api_core.exceptions import GoogleAPIError
    from google.auth.exceptions import GoogleAuthError

    try:
        yield
    except GoogleAuthError as exc:
        raise base.remote_error(
            what, f"no usable Google credentials: {exc}",
            "run gcloud auth application-default login, or set GOOGLE_APPLICATION_CREDENTIALS") from exc
    except GoogleAPIError as exc:
        raise base.remote_error(what, exc, "check the bucket name and the credentials") from exc
    except requests.Timeout as exc:
        raise base.no_answer(what, timeout, connecting=isinstance(exc, requests.ConnectTimeout),
                             check="(and STORAGE_EMULATOR_HOST)") from exc
    except requests.RequestException as exc:
        raise base.remote_error(what, exc, "check the network (and STORAGE_EMULATOR_HOST)") from exc


def _retry_unless_timeout(timeout: float) -> Any:
    """The library's default retry (transient errors, 5xx), but not of a request that got no reply for the
    whole timeout: retrying a stuck server only multiplies the wait."""
    import requests
    from google.cloud.storage.retry import DEFAULT_RETRY, _should_retry  # type: ignore[import-untyped]

    def predicate(exc: Exception) -> bool:
        return not isinstance(exc, requests.Timeout) and bool(_should_retry(exc))

    return DEFAULT_RETRY.with_predicate(predicate).with_timeout(max(timeout * 2, 120.0))


class GCSStorage(BucketStorage):
    min_part_size = 1 << 20

    def __init__(self, bucket: str, prefix: str, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        from google.cloud import storage  # type: ignore[import-untyped]

        super().__init__("gs", bucket, prefix, timeout)
        self.io: dict[str, Any] = {"timeout": (timeout, timeout), "retry": _retry_unless_timeout(timeout)}
        with self._errors(self.url):
            if os.environ.get("STORAGE_EMULATOR_HOST"):
                from google.auth.credentials import AnonymousCredentials

                project = os.environ.get("GOOGLE_CLOUD_PROJECT", "e2b-artifact")
                client = storage.Client(project=project, credentials=AnonymousCredentials())  # type: ignore[no-untyped-call]
            else:
                client = storage.Client()
            self.bucket: Any = client.bucket(bucket)
        self.client: Any = client

    def _errors(self, what: str) -> contextlib.AbstractContextManager[None]:
        return _remote_errors(what, self.timeout)

    def _list_raw(self, prefix: str) -> list[Any]:
        with self._remote(self.url):
            return list(self.client.list_blobs(self.bucket, prefix=self._list_prefix(prefix), **self.io))

    def list(self, prefix: str) -> list[ObjectInfo]:
        return [ObjectInfo(self._rel(b.name), int(b.size or 0), (b.metadata or {}).get(HASH_META_KEY))
                for b in self._list_raw(prefix) if PART_MARK not in b.name]

    def stat(self, key: str) -> ObjectInfo | None:
        with self._remote(f"{self.url}/{key}"):
            blob = self.bucket.get_blob(self._key(key), **self.io)
        if blob is None:
            return None
        return ObjectInfo(key, int(blob.size or 0), (blob.metadata or {}).get(HASH_META_KEY))

    def read_range(self, key: str, start: int, length: int) -> bytes:
        if length == 0:
            return b""
        with self._remote(f"{self.url}/{key}"):
            data: bytes = self.bucket.blob(self._key(key)).download_as_bytes(
                start=start, end=start + length - 1, checksum=None, **self.io)
        return data

    def put_bytes(self, key: str, data: bytes, blake3_hex: str) -> None:
        self._upload(self._key(key), data, {HASH_META_KEY: blake3_hex})

    def _upload(self, name: str, data: bytes, metadata: dict[str, str] | None = None) -> None:
        with self._remote(f"{self.url}/{self._rel(name)}"):
            blob = self.bucket.blob(name)
            if metadata:
                blob.metadata = metadata
            blob.upload_from_string(data, content_type="application/octet-stream", checksum="crc32c", **self.io)

    def start_multipart(self, key: str, blake3_hex: str, size: int, part_size: int) -> Multipart:
        return _ComposedUpload(self, key, blake3_hex, secrets.token_hex(4), part_size)

    def resume_multipart(self, key: str, blake3_hex: str, size: int, part_size: int,
                         upload_id: str) -> Multipart | None:
        upload = _ComposedUpload(self, key, blake3_hex, upload_id, part_size)
        mark = f"{PART_MARK}{upload_id}-"
        for blob in self._list_raw(f"{key}{mark}"):
            label = blob.name.rpartition(mark)[2]
            upload.temps.append(blob.name)  # deleted once the object is complete, reused or not
            if label.isdigit() and blob.md5_hash:  # a part; "r<round>-..." are merges of an unfinished compose
                md5 = base64.b64decode(blob.md5_hash).hex()
                upload.stored[int(label)] = StoredPart(int(label), int(blob.size or 0), md5)
        return upload if upload.stored else None

    def _delete_full(self, name: str) -> None:
        from google.api_core.exceptions import NotFound

        with self._remote(f"{self.url}/{self._rel(name)}"), contextlib.suppress(NotFound):
            self.bucket.blob(name).delete(**self.io)

    def clean_temporaries(self, prefix: str, keep: Collection[str] = ()) -> Cleanup:
        stale = [b.name for b in self._list_raw(prefix)
                 if PART_MARK in b.name and b.name.rpartition(PART_MARK)[2].partition("-")[0] not in keep]
        for name in stale:
            self._delete_full(name)
        return Cleanup(len(stale))


class _ComposedUpload(Multipart):
    def __init__(self, storage: GCSStorage, key: str, blake3_hex: str, token: str, part_size: int) -> None:
        self.storage = storage
        self.key = key
        self.blake3_hex = blake3_hex
        self.token = self.upload_id = token
        self.part_size = part_size
        self.stored: dict[int, StoredPart] = {}
        self.parts: dict[int, str] = {}
        self.temps: list[str] = []
        self.lock = threading.Lock()

    def stored_parts(self) -> dict[int, StoredPart]:
        return self.stored

    def keep_part(self, number: int, data: bytes | bytearray) -> None:
        with self.lock:
            self.parts[number] = self.storage._key(f"{self.key}{PART_MARK}{self.token}-{number:05d}")

    def _temp_name(self, label: str) -> str:
        name = self.storage._key(f"{self.key}{PART_MARK}{self.token}-{label}")
        with self.lock:
            self.temps.append(name)
        return name

    def upload_part(self, number: int, offset: int, data: bytes | bytearray) -> None:
        name = self._temp_name(f"{number:05d}")
        self.storage._upload(name, bytes(data))  # the client takes bytes only, not the reused part buffer
        with self.lock:
            self.parts[number] = name

    def complete(self) -> None:
        s = self.storage
        sources = [self.parts[n] for n in sorted(self.parts)]
        round_no = 0
        with s._remote(f"{s.url}/{self.key}"):
            while len(sources) > COMPOSE_MAX:  # compose in rounds of 32
                round_no += 1
                merged = []
                for i in range(0, len(sources), COMPOSE_MAX):
                    name = self._temp_name(f"r{round_no}-{i // COMPOSE_MAX:05d}")
                    s.bucket.blob(name).compose([s.bucket.blob(n) for n in sources[i:i + COMPOSE_MAX]], **s.io)
                    merged.append(name)
                sources = merged
            target = s.bucket.blob(s._key(self.key))
            target.metadata = {HASH_META_KEY: self.blake3_hex}
            target.content_type = "application/octet-stream"
            target.compose([s.bucket.blob(n) for n in sources], **s.io)
        self.abort()  # drop the part objects

    def abort(self) -> None:
        for name in self.temps:
            with contextlib.suppress(ArtifactError):
                self.storage._delete_full(name)
        self.temps = []
