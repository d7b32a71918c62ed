"""Turn layer blobs into uncompressed, diff-id-verified tar files in the blob cache.

gzip, zstd or plain tar, told apart by magic bytes (media types lie in the
wild). A layer whose uncompressed tar is already cached costs nothing; the
compressed blob's digest is checked on the way when it was not checked before.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, cast

from ..errors import ArtifactError, ExitCode
from .cache import BlobCache
from .sources import Layer

_CHUNK = 1 << 20
GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


class _HashingReader:
    """Reads ``raw`` and hashes what it returns."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.hash = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        self.hash.update(data)
        return data


def _decompressed(src: _HashingReader) -> Iterator[bytes]:
    head = src.read(4)
    if head.startswith(GZIP_MAGIC):
        decomp = zlib.decompressobj(wbits=31)
        data = head
        while True:
            if data:
                yield decomp.decompress(data)
                while decomp.unused_data:  # multi-member gzip
                    rest = decomp.unused_data
                    decomp = zlib.decompressobj(wbits=31)
                    yield decomp.decompress(rest)
            data = src.read(_CHUNK)
            if not data:
                break
        yield decomp.flush()
        if not decomp.eof:
            raise ArtifactError("a gzip layer is truncated", hint="the blob is damaged; pull it again",
                                code=ExitCode.INTEGRITY)
    elif head == ZSTD_MAGIC:
        import zstandard

        class _Replay:
            def __init__(self) -> None:
                self.pending = head

            def read(self, n: int = -1) -> bytes:
                if self.pending:
                    out, self.pending = self.pending, b""
                    return out
                return src.read(n if n > 0 else _CHUNK)

        with zstandard.ZstdDecompressor().stream_reader(cast(IO[bytes], _Replay()), read_across_frames=True) as reader:
            while chunk := reader.read(_CHUNK):
                yield chunk
    else:
        yield head
        while chunk := src.read(_CHUNK):
            yield chunk


def unpack_layer(layer: Layer, cache: BlobCache) -> Path:
    """The uncompressed tar of ``layer`` in the cache, creating it if needed."""
    if cache.has(layer.diff_id):
        return cache.path(layer.diff_id)
    with layer.open() as raw:
        src = _HashingReader(raw)
        with cache.writer(layer.diff_id) as out:
            out.what = f"layer (diff_id {layer.diff_id[:19]}…)"
            try:
                for chunk in _decompressed(src):
                    out.write(chunk)
            except (zlib.error, OSError) as exc:
                raise ArtifactError(f"cannot decompress layer {layer.digest or layer.diff_id}: {exc}",
                                    hint="the blob is damaged; pull it again", code=ExitCode.INTEGRITY) from exc
            if not layer.verified and layer.digest is not None:
                while src.read(_CHUNK):  # trailing bytes after the compressed stream still count
                    pass
                actual = "sha256:" + src.hash.hexdigest()
                if actual != layer.digest:
                    raise ArtifactError(f"layer digest mismatch: expected {layer.digest}, got {actual}",
                                        hint="the image source is corrupt or was tampered with",
                                        code=ExitCode.INTEGRITY)
            return out.commit()


def unpack_layers(layers: list[Layer], cache: BlobCache) -> list[Path]:
    with ThreadPoolExecutor(max_workers=2) as pool:
        return list(pool.map(lambda layer: unpack_layer(layer, cache), layers))
