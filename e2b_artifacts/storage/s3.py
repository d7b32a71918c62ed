"""``s3://bucket/prefix`` through boto3 (credentials and region the usual AWS way).

``endpoint_url`` points at an S3-compatible store (MinIO, Ceph RGW, moto); with
one, path-style addressing is used. Every part carries a CRC32 checksum the
server checks on arrival; content identity is our BLAKE3 in the object metadata
(``x-amz-meta-blake3``), never the ETag (a multipart ETag is not an MD5).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from ..errors import ArtifactError, ExitCode
from .base import HASH_META_KEY, Multipart, ObjectInfo, Storage, join_key

T = TypeVar("T")


@contextlib.contextmanager
def _remote_errors(what: str) -> Iterator[None]:
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError  # type: ignore[import-untyped]

    try:
        yield
    except NoCredentialsError as exc:
        raise ArtifactError(f"{what}: no AWS credentials found",
                            hint="set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE, or run aws configure",
                            code=ExitCode.REMOTE) from exc
    except ClientError as exc:
        err = exc.response.get("Error", {})
        raise ArtifactError(f"{what}: {err.get('Code', '?')}: {err.get('Message', exc)}",
                            hint="check the bucket name, the credentials and --endpoint-url",
                            code=ExitCode.REMOTE) from exc
    except BotoCoreError as exc:
        raise ArtifactError(f"{what}: {exc}", hint="check --endpoint-url and the network",
                            code=ExitCode.REMOTE) from exc


class S3Storage(Storage):
    def __init__(self, bucket: str, prefix: str, *, endpoint_url: str | None = None,
                 region: str | None = None, path_style: bool | None = None, max_connections: int = 16) -> None:
        import boto3  # type: ignore[import-untyped]
        from botocore.config import Config  # type: ignore[import-untyped]

        # botocore reads these too, but only an explicit endpoint switches to path-style addressing
        endpoint_url = endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.url = f"s3://{bucket}/{self.prefix}".rstrip("/")
        style = "path" if (path_style if path_style is not None else endpoint_url is not None) else "auto"
        # Parts carry a CRC32 the server checks; SHA-256 payload signing on top (botocore does it on
        # plain-http endpoints) would only add a second full pass over the data on this host.
        config = Config(s3={"addressing_style": style, "payload_signing_enabled": False},
                        max_pool_connections=max_connections,
                        retries={"max_attempts": 5, "mode": "standard"})
        with _remote_errors(self.url):
            self.client: Any = boto3.session.Session().client(
                "s3", endpoint_url=endpoint_url, region_name=region, config=config)

    def _key(self, key: str) -> str:
        return join_key(self.prefix, key)

    def _rel(self, full: str) -> str:
        return full[len(self.prefix) + 1:] if self.prefix else full

    def _call(self, what: str, fn: Callable[..., T], **kwargs: Any) -> T:
        with _remote_errors(f"{self.url}/{what}"):
            return fn(Bucket=self.bucket, **kwargs)

    def list(self, prefix: str) -> list[ObjectInfo]:
        found = []
        full = join_key(self.prefix, prefix)
        if full and (prefix.endswith("/") or not prefix):
            full += "/"
        with _remote_errors(self.url):
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=full)
            for page in pages:
                for obj in page.get("Contents", []):
                    found.append(ObjectInfo(self._rel(obj["Key"]), int(obj["Size"]), None))
        return found

    def stat(self, key: str) -> ObjectInfo | None:
        from botocore.exceptions import ClientError

        with _remote_errors(f"{self.url}/{key}"):
            try:
                head = self.client.head_object(Bucket=self.bucket, Key=self._key(key))
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                    return None
                raise
        return ObjectInfo(key, int(head["ContentLength"]), head.get("Metadata", {}).get(HASH_META_KEY))

    def read_range(self, key: str, start: int, length: int) -> bytes:
        if length == 0:
            return b""
        resp = self._call(key, self.client.get_object, Key=self._key(key), Range=f"bytes={start}-{start + length - 1}")
        with _remote_errors(f"{self.url}/{key}"):
            data: bytes = resp["Body"].read()
        return data

    def put_bytes(self, key: str, data: bytes, blake3_hex: str) -> None:
        self._call(key, self.client.put_object, Key=self._key(key), Body=data,
                   Metadata={HASH_META_KEY: blake3_hex}, ChecksumAlgorithm="CRC32")

    def start_multipart(self, key: str, blake3_hex: str, size: int) -> Multipart:
        resp = self._call(key, self.client.create_multipart_upload, Key=self._key(key),
                          Metadata={HASH_META_KEY: blake3_hex}, ChecksumAlgorithm="CRC32")
        return _S3Upload(self, key, resp["UploadId"])

    def clean_temporaries(self, prefix: str) -> int:
        count = 0
        with _remote_errors(self.url):
            pages = self.client.get_paginator("list_multipart_uploads").paginate(
                Bucket=self.bucket, Prefix=self._key(prefix))
            for page in pages:
                for upload in page.get("Uploads", []):
                    self.client.abort_multipart_upload(Bucket=self.bucket, Key=upload["Key"],
                                                       UploadId=upload["UploadId"])
                    count += 1
        return count


class _S3Upload(Multipart):
    def __init__(self, storage: S3Storage, key: str, upload_id: str) -> None:
        self.storage = storage
        self.key = key
        self.upload_id = upload_id
        self.parts: dict[int, dict[str, Any]] = {}
        self.lock = threading.Lock()

    def upload_part(self, number: int, offset: int, data: bytes) -> None:
        s = self.storage
        resp = s._call(self.key, s.client.upload_part, Key=s._key(self.key), UploadId=self.upload_id,
                       PartNumber=number, Body=data, ChecksumAlgorithm="CRC32")
        part = {"PartNumber": number, "ETag": resp["ETag"]}
        if resp.get("ChecksumCRC32"):
            part["ChecksumCRC32"] = resp["ChecksumCRC32"]
        with self.lock:
            self.parts[number] = part

    def complete(self) -> None:
        s = self.storage
        parts = [self.parts[n] for n in sorted(self.parts)]
        s._call(self.key, s.client.complete_multipart_upload, Key=s._key(self.key), UploadId=self.upload_id,
                MultipartUpload={"Parts": parts})

    def abort(self) -> None:
        s = self.storage
        with contextlib.suppress(ArtifactError):
            s._call(self.key, s.client.abort_multipart_upload, Key=s._key(self.key), UploadId=self.upload_id)
