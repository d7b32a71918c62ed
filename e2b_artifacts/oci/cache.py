"""A content-addressed blob cache: ``${E2B_ARTIFACT_CACHE:-~/.cache/e2b-artifact}/blobs/sha256/<hex>``.

Compressed layers, configs and manifests are stored under their digest; an
uncompressed layer is stored under its diff id (the sha256 of the tar), which
is the same kind of address. Files appear only complete and verified
(temp name + rename), so a crashed pull leaves no half blob behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

from ..errors import ArtifactError, ExitCode
from .reference import check_digest


def default_root() -> Path:
    env = os.environ.get("E2B_ARTIFACT_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "e2b-artifact"


class BlobCache:
    def __init__(self, root: Path | None = None) -> None:
        self.root = root or default_root()
        self.blobs = self.root / "blobs" / "sha256"

    def path(self, digest: str) -> Path:
        return self.blobs / check_digest(digest).split(":", 1)[1]

    def has(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def read(self, digest: str) -> bytes:
        return self.path(digest).read_bytes()

    def writer(self, digest: str) -> VerifiedWriter:
        """A file object for a blob's bytes; ``commit()`` checks the digest and publishes it."""
        try:
            self.blobs.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ArtifactError(f"cannot create the blob cache {self.blobs}: {exc}",
                                hint="set E2B_ARTIFACT_CACHE to a writable directory", code=ExitCode.BAD_INPUT) from exc
        return VerifiedWriter(self.path(digest), digest)

    def put(self, digest: str, chunks: Iterable[bytes]) -> int:
        with self.writer(digest) as out:
            for chunk in chunks:
                out.write(chunk)
            out.commit()
            return out.size


class VerifiedWriter:
    """Write to a temp file beside ``dest`` while hashing; rename only if the digest matches."""

    def __init__(self, dest: Path, digest: str | None, what: str = "blob") -> None:
        self.dest = dest
        self.digest = digest
        self.what = what
        self.hash = hashlib.sha256()
        self.size = 0
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name[:16]}.", suffix=".part", dir=dest.parent)
        self.tmp = Path(tmp)
        self.file: BinaryIO = os.fdopen(fd, "wb")
        self.committed = False

    def write(self, data: bytes) -> None:
        self.hash.update(data)
        self.size += len(data)
        self.file.write(data)

    def actual_digest(self) -> str:
        return "sha256:" + self.hash.hexdigest()

    def commit(self, dest: Path | None = None) -> Path:
        """Verify against the expected digest (or accept the computed one) and rename into place."""
        self.file.close()
        actual = self.actual_digest()
        if self.digest is not None and actual != self.digest:
            self.tmp.unlink(missing_ok=True)
            raise ArtifactError(f"{self.what} digest mismatch: expected {self.digest}, got {actual}",
                                hint="the registry or file served corrupt or tampered data; retry, or check the source",
                                code=ExitCode.INTEGRITY)
        final = dest or self.dest
        os.chmod(self.tmp, 0o644)
        os.replace(self.tmp, final)
        self.committed = True
        return final

    def __enter__(self) -> VerifiedWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        if not self.committed:
            self.file.close()
            with contextlib.suppress(FileNotFoundError):
                self.tmp.unlink()
