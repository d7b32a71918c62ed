"""Turn layer blobs into uncompressed, diff-id-verified tar files in the blob cache.

gzip, zstd or plain tar, told apart by magic bytes (media types lie in the
wild). A blob is read through its descriptor's size (never a byte more) and
decompressed in bounded steps (``max_length``), so memory stays flat however
well a layer compresses. Expansion is limited (:class:`Limits`): a layer may
not grow beyond ``max_ratio`` times its compressed size (past a floor), and all
layers of an image together not beyond ``max_image_size``; a refused layer
leaves nothing in the cache.

A layer whose uncompressed tar is already cached costs no decompression, but
is only taken from the cache when its source is known to be the one it was
made from: a registry blob the cache verified, or a layout/archive file whose
stamp (see ``cache.py``) still matches; a changed layout blob is hashed again,
so a warm cache gives the same answer as an empty one.
"""

from __future__ import annotations

import threading
import zlib
from collections.abc import Iterator
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import IO, cast

from ..errors import ArtifactError, ExitCode
from .blobio import CHUNK, BoundedReader, digest_mismatch
from .cache import BlobCache
from .sources import Layer

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
GIB = 1 << 30
DEFAULT_MAX_IMAGE_SIZE = 4 * GIB
DEFAULT_MAX_LAYER_RATIO = 100
RATIO_FLOOR = 64 << 20  # a layer may always expand to this much, whatever its ratio


@dataclass(frozen=True)
class Limits:
    max_image_size: int = DEFAULT_MAX_IMAGE_SIZE  # uncompressed bytes of all layers together
    max_layer_ratio: int = DEFAULT_MAX_LAYER_RATIO  # uncompressed / compressed per layer; 0: no ratio limit

    def layer_cap(self, compressed: int) -> int | None:
        return None if self.max_layer_ratio <= 0 else max(self.max_layer_ratio * compressed, RATIO_FLOOR)


def size_text(n: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            value = n / (1 << shift)
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{n} bytes"


class Budget:
    """Uncompressed bytes of one image, shared by the layers unpacked in parallel."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.total = 0
        self.lock = threading.Lock()
        self.refused: ArtifactError | None = None  # set once: the other layers stop too

    def charge(self, n: int) -> None:
        with self.lock:
            if self.refused is not None:
                raise self.refused
            self.total += n
            if self.total > self.limits.max_image_size:
                self.refused = too_big_image(self.limits.max_image_size)
                raise self.refused


def too_big_image(limit: int) -> ArtifactError:
    return ArtifactError(f"the image's layers expand to more than --max-image-size {size_text(limit)}",
                         hint="if the image is meant to be that large, pass a larger --max-image-size "
                              "(e.g. --max-image-size 16G); nothing of it was kept in the cache",
                         code=ExitCode.BAD_INPUT)


def _gunzip(src: _Replay) -> Iterator[bytes]:
    """gzip members (several may follow each other) in output steps of at most CHUNK bytes."""
    decomp = zlib.decompressobj(wbits=31)
    data = src.read(CHUNK)
    while data:
        out = decomp.decompress(data, CHUNK)
        if out:
            yield out
        if decomp.unconsumed_tail:
            data = decomp.unconsumed_tail
            continue
        if decomp.eof:
            rest = decomp.unused_data
            decomp = zlib.decompressobj(wbits=31)  # multi-member gzip
            data = rest or src.read(CHUNK)
            if not data:
                return
            continue
        data = src.read(CHUNK)
    out = decomp.flush()
    if out:
        yield out
    if not decomp.eof:
        raise ArtifactError("a gzip layer is truncated", hint="the blob is damaged; pull it again",
                            code=ExitCode.INTEGRITY)


def _decompressed(src: BoundedReader) -> Iterator[bytes]:
    head = src.read(4)
    if head.startswith(GZIP_MAGIC):
        yield from _gunzip(_Replay(head, src))
    elif head == ZSTD_MAGIC:
        import zstandard

        with zstandard.ZstdDecompressor().stream_reader(cast(IO[bytes], _Replay(head, src)),
                                                        read_across_frames=True) as reader:
            while chunk := reader.read(CHUNK):
                yield chunk
    else:
        if head:
            yield head
        while chunk := src.read(CHUNK):
            yield chunk


class _Replay:
    """``src`` with the magic bytes already read put back in front."""

    def __init__(self, head: bytes, src: BoundedReader) -> None:
        self.pending = head
        self.src = src

    def read(self, n: int = -1) -> bytes:
        if self.pending:
            out, self.pending = self.pending, b""
            return out
        return self.src.read(n if n > 0 else CHUNK)


def _layer_name(number: int, layer: Layer) -> str:
    return f"layer {number} ({(layer.digest or layer.diff_id)[:19]}…)"


def _cached(layer: Layer, cache: BlobCache, number: int) -> Path | None:
    """The cached tar of ``layer`` if both it and the source it came from can be trusted."""
    path = cache.verified(layer.diff_id)
    if path is None:
        return None
    if layer.verified:
        return path
    source_path, member = layer.source
    if cache.source_trusted(source_path, member, layer.digest or layer.diff_id):
        return path
    if layer.digest is None:  # no digest of its own (docker-archive): unpack it again to check it
        return None
    with layer.open() as raw:  # a layout blob: its digest is enough, no need to decompress
        reader = BoundedReader(raw, layer.size, _layer_name(number, layer))
        reader.check(None)
        if reader.digest() != layer.digest:
            raise digest_mismatch("layer", layer.digest, reader.digest())
    cache.remember_source(source_path, member, layer.digest)
    return path


def unpack_layer(layer: Layer, cache: BlobCache, number: int = 1, budget: Budget | None = None) -> Path:
    """The uncompressed tar of ``layer`` (``number`` counts from 1) in the cache, creating it if needed."""
    budget = budget or Budget(Limits())
    cached = _cached(layer, cache, number)
    if cached is not None:
        budget.charge(cached.stat().st_size)
        return cached
    name = _layer_name(number, layer)
    cap = budget.limits.layer_cap(layer.size)
    with layer.open() as raw:
        src = BoundedReader(raw, layer.size, name)
        with cache.writer(layer.diff_id) as out:
            out.what = f"layer (diff_id {layer.diff_id[:19]}…)"
            try:
                for chunk in _decompressed(src):
                    out.write(chunk)
                    budget.charge(len(chunk))
                    if cap is not None and out.size > cap:
                        raise ArtifactError(
                            f"{name} expands to more than {budget.limits.max_layer_ratio} times its compressed "
                            f"size ({size_text(layer.size)} -> more than {size_text(cap)}): a decompression bomb?",
                            hint="if the image is trusted and really holds such data (e.g. large files of zeros), "
                                 "pass --max-layer-ratio N (0: no ratio limit); nothing of it was kept in the cache",
                            code=ExitCode.BAD_INPUT)
            except (zlib.error, OSError) as exc:
                _digest_first(src, layer)
                raise ArtifactError(f"cannot decompress {name}: {exc}",
                                    hint="the blob is damaged; pull it again", code=ExitCode.INTEGRITY) from exc
            except ArtifactError as exc:
                if exc.code == ExitCode.INTEGRITY:
                    _digest_first(src, layer)
                raise
            except Exception as exc:
                if type(exc).__name__ == "ZstdError":
                    _digest_first(src, layer)
                    raise ArtifactError(f"cannot decompress {name}: {exc}",
                                        hint="the blob is damaged; pull it again", code=ExitCode.INTEGRITY) from exc
                raise
            # trailing bytes after the compressed stream still count
            src.check(None if layer.verified else layer.digest)
            path = out.commit()
    if not layer.verified:
        cache.remember_source(*layer.source, layer.digest or layer.diff_id)
    return path


def _digest_first(src: BoundedReader, layer: Layer) -> None:
    """A blob that fails to decompress: if its bytes are not what the descriptor names, say that instead."""
    if layer.verified or layer.digest is None:
        return
    src.drain()  # raises itself when the blob is longer than its descriptor says
    if src.digest() != layer.digest:
        raise digest_mismatch("layer", layer.digest, src.digest())


def unpack_layers(layers: list[Layer], cache: BlobCache, limits: Limits | None = None) -> list[Path]:
    budget = Budget(limits or Limits())
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = [pool.submit(unpack_layer, layer, cache, n, budget) for n, layer in enumerate(layers, start=1)]
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        failed = next((f for f in futures if f in done and f.exception() is not None), None)
        if failed is None:
            return [future.result() for future in futures]
        for future in futures:
            future.cancel()
        with budget.lock:  # a layer still being unpacked stops at its next chunk (and removes its part file)
            budget.refused = budget.refused or ArtifactError("stopped: another layer failed", code=ExitCode.BAD_INPUT)
        wait(futures)
        error = failed.exception()
        assert error is not None
        raise error
