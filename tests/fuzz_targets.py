"""One target per parser: an input strategy and a function that must return or raise ArtifactError.

Shared by tests/test_parser_properties.py (a few hundred examples each) and scripts/fuzz.py (minutes).
"""

from __future__ import annotations

import io
import json
import struct
import tarfile
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lz4.frame
from hypothesis import strategies as st

from e2b_artifacts import header, manifest, metadata, rootfs, snapshot
from e2b_artifacts.kernel import image
from tests.verify.craft import header_v1_3, header_v4, snapfile
from tests.verify.lz4frame import frame_claiming

MEMORY_CAP = 64 << 20  # peak Python allocation per input; every input here is under 1 MiB
IDS = [str(uuid.UUID(int=n)) for n in (0, 0xA1, 0xB2)]


@dataclass(frozen=True)
class Target:
    name: str
    inputs: st.SearchStrategy[Any]
    run: Callable[[Any], object]


def _mutated(base: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    """Valid inputs with bytes flipped, cut or spliced in."""
    def mutate(data: bytes, edits: list[tuple[int, int, int]], cut: int | None) -> bytes:
        out = bytearray(data)
        for kind, pos, value in edits:
            if not out:
                break
            pos %= len(out)
            if kind == 0:
                out[pos] = value
            elif kind == 1:
                out[pos:pos] = bytes([value]) * (value % 9)
            else:
                del out[pos:pos + value % 17]
        return bytes(out[:cut] if cut is not None else out)
    edits = st.lists(st.tuples(st.integers(0, 2), st.integers(0, 1 << 20), st.integers(0, 255)), max_size=8)
    return st.builds(mutate, base, edits, st.none() | st.integers(0, 4096))


U64 = st.one_of(st.integers(0, 1 << 64 - 1), st.sampled_from([0, 4096, 2 << 20, (1 << 64) - 1, 1 << 63]))
PAGES = st.integers(0, 64).map(lambda n: n * 4096)
MAPPING = st.tuples(PAGES, PAGES, st.sampled_from(IDS), PAGES)

# ------------------------------------------------------------------ snapfile

_snap_valid = st.builds(lambda era, arch, mem, n: snapfile(era, arch=arch, mem_mib=mem, state_len=n),
                        st.sampled_from(["versionize", "bincode", "bitcode"]), st.sampled_from(["x86_64", "aarch64"]),
                        st.integers(0, 1 << 20), st.integers(0, 256))
_snap_inputs = st.tuples(st.one_of(st.binary(max_size=512), _snap_valid, _mutated(_snap_valid)),
                         st.sampled_from([None, "v1.5.0", "v1.7.0", "v1.12.1_d990331", "v1.16.0", "v9.9", "junk"]),
                         st.sampled_from([None, "x86_64", "aarch64"]), st.none() | U64, st.none() | U64)


def _snap(args: tuple[bytes, str | None, str | None, int | None, int | None]) -> object:
    data, fc, arch, memfile_size, guest = args
    return snapshot.check_snapfile(data, firecracker_version=fc, arch=arch, memfile_size=memfile_size,
                                   guest_memory_bytes=guest)


# ------------------------------------------------------------------ headers

_hdr_v3 = st.builds(lambda v, b, s, g, ms: header_v1_3(version=v, block_size=b, size=s, generation=g,
                                                       build_id=IDS[1], mappings=ms),
                    st.integers(1, 3), st.sampled_from([4096, 2 << 20, 0, 8192]), PAGES, st.integers(0, 9),
                    st.lists(MAPPING, max_size=12))
_hdr_v45 = st.builds(lambda s, ms, v5, flags: header_v4(size=s, build_id=IDS[1], mappings=ms, v5=v5, flags=flags),
                     PAGES, st.lists(MAPPING, max_size=8, unique_by=lambda m: m[0]).map(sorted), st.booleans(),
                     st.sampled_from([0, 1, None]))


def _raw_block(version: int, length_delta: int, block: bytes, claimed: int | None) -> bytes:
    meta = struct.pack("<QQQQ16s16s", version, 4096, 1 << 20, 0, uuid.UUID(IDS[1]).bytes, uuid.UUID(IDS[1]).bytes)
    frame = frame_claiming(claimed, block) if claimed is not None else lz4.frame.compress(block)
    return meta + b"\0" + struct.pack("<I", max(0, len(block) + length_delta)) + frame


_hdr_block = st.builds(_raw_block, st.sampled_from([4, 5]), st.integers(-3, 3), st.binary(max_size=300),
                       st.none() | st.sampled_from([1 << 46, 1 << 31, 0]))
_hdr_inputs = st.one_of(st.binary(max_size=300), _hdr_v3, _hdr_v45, _hdr_block, _mutated(st.one_of(_hdr_v3, _hdr_v45)))


def _header(data: bytes) -> object:
    hdr = header.parse_header(data)
    hdr.problems()
    hdr.referenced_build_ids()
    hdr.required_lengths()
    if hdr.version in (1, 2, 3) and hdr.mappings is not None:
        assert header.parse_header(header.serialize(hdr)).mappings == hdr.mappings  # round trip
    return hdr


# ------------------------------------------------------------------ metadata and manifest JSON

_json_leaf = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20))
_json_value = st.recursive(_json_leaf, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)), max_leaves=20)
_md_keys = st.sampled_from(["version", "template", "context", "e2b_artifact", "metadata", "buildID", "kernelVersion",
                            "firecrackerVersion", "templateID", "envdVersion", "start", "x"])
_tpl_keys = st.sampled_from(["build_id", "kernel_version", "firecracker_version", "template_id", "x"])
_md_value = st.one_of(_json_value, st.sampled_from([2, "v1", 3, "2"]),
                      st.dictionaries(_tpl_keys, st.one_of(st.text(max_size=12), _json_value), max_size=5))
_md_doc = st.dictionaries(_md_keys, _md_value, max_size=8)
_md_valid = st.builds(lambda extra, tpl, form: {**extra, "version": 2, "template": {
    "build_id": IDS[1], "kernel_version": "vmlinux-6.1.102", "firecracker_version": "v1.12.1", **tpl}} if form == 2 else
    {**extra, "version": "v1", "template": {"build_id": IDS[1], "kernel_version": "6.1", "firecracker_version": "v1.7",
                                             **tpl}} if form == 1 else
    {**extra, "buildID": IDS[1], "kernelVersion": "6.1", "firecrackerVersion": "v1.7.0"},
    st.dictionaries(_md_keys.filter(lambda k: k not in ("version", "template")), _md_value, max_size=4),
    st.dictionaries(st.sampled_from(["template_id", "x", "kernel_version"]), _json_value, max_size=2),
    st.sampled_from([0, 1, 2]))
_md_inputs = st.one_of(_md_valid.map(lambda d: json.dumps(d).encode()), _md_doc.map(lambda d: json.dumps(d).encode()),
                       st.binary(max_size=200),
                       _mutated(_md_doc.map(lambda d: json.dumps(d).encode())),
                       st.integers(1, 3000).map(lambda n: b"[" * n + b"]" * n))


def _metadata(raw: bytes) -> object:
    md = metadata.parse(raw)
    again = metadata.parse(md.to_json())  # every accepted document can be written and read back
    assert (again.build_id, again.kernel_version, again.firecracker_version) == (
        md.build_id, md.kernel_version, md.firecracker_version)
    return md.ext


_mf_entry = st.one_of(_json_value, st.fixed_dictionaries({"size": st.integers(-2, 1 << 70),
                                                          "blake3": st.none() | st.text(max_size=8)}))
_mf_doc = st.fixed_dictionaries({"format": st.sampled_from([1, 2, "1"]),
                                 "files": st.one_of(_json_value, st.dictionaries(
                                     st.sampled_from(["rootfs.ext4", "memfile", "a/b", ".x", "m.tmp", "\0", ""]),
                                     _mf_entry, max_size=4))},
                                optional={"hash": st.sampled_from(["blake3", "sha256", 5]), "build_id": _json_value,
                                          "tool": _json_value})
_mf_inputs = st.one_of(_mf_doc.map(lambda d: json.dumps(d).encode()), st.binary(max_size=200),
                       _mutated(_mf_doc.map(lambda d: json.dumps(d).encode())))
_MANIFEST_DIR = Path(tempfile.mkdtemp(prefix="fuzz-manifest-"))


def _manifest(raw: bytes) -> object:
    (_MANIFEST_DIR / manifest.FILE_NAME).write_bytes(raw)
    return manifest.load_manifest(_MANIFEST_DIR)


# ------------------------------------------------------------------ kernel images

def _elf(phoff: int, phnum: int, shoff: int, shnum: int, shstrndx: int, tail: bytes) -> bytes:
    head = struct.pack("<16sHHIQQQIHHHHHH", b"\x7fELF\x02\x01\x01" + bytes(9), 2, 62, 1, 0x1000000, phoff, shoff,
                       0, 64, 56, phnum, 64, shnum, shstrndx)
    return head + tail


_offsets = st.integers(0, 600)
_elf_inputs = st.builds(_elf, _offsets, st.integers(0, 8), _offsets, st.integers(0, 8), st.integers(0, 9),
                        st.binary(max_size=600))


def _bzimage(protocol: int, setup_sects: int, offset: int, length: int, payload: bytes, cut: int) -> bytes:
    data = bytearray(1024)
    data[0x1F1] = setup_sects
    data[0x1FE:0x200] = b"\x55\xaa"
    data[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", data, 0x206, protocol)
    struct.pack_into("<II", data, 0x248, offset, length)
    return (bytes(data) + payload)[:cut]


def _payload(kind: str, body: bytes) -> bytes:
    import bz2
    import gzip
    import lzma

    import zstandard
    compressors: dict[str, Callable[[bytes], bytes]] = {
            "gzip": gzip.compress, "xz": lambda b: lzma.compress(b, lzma.FORMAT_XZ),
            "lzma": lambda b: lzma.compress(b, lzma.FORMAT_ALONE), "bzip2": bz2.compress,
            "zstd": zstandard.ZstdCompressor().compress,
            "lz4": lambda b: image.LZ4_LEGACY_MAGIC + struct.pack("<I", len(b) + 1) + b"\x10" + b,
            "raw": lambda b: b}
    return compressors[kind](body)


_bz_inputs = st.builds(_bzimage, st.sampled_from([0x200, 0x208, 0x20F]), st.integers(0, 3), st.integers(0, 64),
                       st.integers(0, 2000), st.builds(_payload, st.sampled_from(
                           ["gzip", "xz", "lzma", "bzip2", "zstd", "lz4", "raw"]), st.binary(max_size=300)),
                       st.integers(0, 2000))
_kernel_inputs = st.one_of(st.binary(max_size=700), _elf_inputs, _bz_inputs, _mutated(_bz_inputs))


def _kernel(data: bytes) -> object:
    fmt = image.identify(data)
    image.linux_banner(data)
    if fmt.kind == "elf":
        elf = image.parse_elf(data)
        image.elf_symbol_names(data, elf)
    if fmt.kind == "bzimage":
        image.bzimage_version(data)
        _method, vmlinux = image.decompress_bzimage(data)
        image.identify(vmlinux)
    return fmt


# ------------------------------------------------------------------ OCI documents

_digest = st.one_of(st.just("sha256:" + "a" * 64), st.text(max_size=10), _json_value)
_oci_entry = st.one_of(_json_value, st.fixed_dictionaries({}, optional={
    "digest": _digest, "platform": st.one_of(_json_value, st.fixed_dictionaries({}, optional={
        "os": st.sampled_from(["linux", 5]), "architecture": st.sampled_from(["amd64", "arm64", []])}))}))
_oci_doc = st.fixed_dictionaries({}, optional={"manifests": st.one_of(_json_value, st.lists(_oci_entry, max_size=3)),
                                              "layers": st.one_of(_json_value, st.lists(_oci_entry, max_size=3)),
                                              "config": st.one_of(_json_value, _oci_entry),
                                              "rootfs": st.one_of(_json_value, st.fixed_dictionaries(
                                                  {"diff_ids": st.one_of(_json_value, st.lists(_digest, max_size=3))})),
                                              "mediaType": st.text(max_size=5)})
_oci_inputs = st.one_of(_oci_doc.map(lambda d: json.dumps(d).encode()), st.binary(max_size=100))


def _oci(raw: bytes) -> object:
    from e2b_artifacts.oci import schema, sources
    from e2b_artifacts.oci.reference import Platform

    doc = schema.parse_manifest_or_index(raw, "document")
    if isinstance(doc, schema.Index):
        sources.select_platform(doc, Platform("linux", "amd64"), "index")
    schema.parse_archive_manifest(raw, "manifest.json")
    config = schema.parse_config(raw, "config")
    return sources._diff_ids(config, 1, "config")


# ------------------------------------------------------------------ tar members

_member = st.tuples(st.one_of(st.text(max_size=30), st.sampled_from(["/etc/x", "../x", "a/../../b", "./a", "a//b"])),
                    st.sampled_from([tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE]),
                    st.text(max_size=20), st.binary(max_size=50),
                    st.dictionaries(st.sampled_from(["SCHILY.xattr.user.a", "path", "size"]),
                                    st.text(max_size=10), max_size=2))


def _tar_bytes(members: list[tuple[str, bytes, str, bytes, dict[str, str]]]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, link, body, pax in members:
            info = tarfile.TarInfo(name or "x")
            info.type, info.linkname = kind, link
            info.pax_headers = {k: v for k, v in pax.items() if k.startswith("SCHILY")}
            info.size = len(body) if kind == tarfile.REGTYPE else 0
            try:
                tar.addfile(info, io.BytesIO(body) if kind == tarfile.REGTYPE else None)
            except (ValueError, UnicodeError):
                continue
    return out.getvalue()


_tar_inputs = st.one_of(st.lists(_member, max_size=5).map(_tar_bytes), st.binary(max_size=1500),
                        _mutated(st.lists(_member, min_size=1, max_size=3).map(_tar_bytes)))
_TAR_DIR = Path(tempfile.mkdtemp(prefix="fuzz-tar-"))


def _tar(raw: bytes) -> object:
    path = _TAR_DIR / "layer.tar"
    path.write_bytes(raw)
    return rootfs.scan_tar(path)


TARGETS = {t.name: t for t in (
    Target("snapfile", _snap_inputs, _snap),
    Target("header", _hdr_inputs, _header),
    Target("metadata", _md_inputs, _metadata),
    Target("manifest", _mf_inputs, _manifest),
    Target("kernel-image", _kernel_inputs, _kernel),
    Target("oci-documents", _oci_inputs, _oci),
    Target("tar-members", _tar_inputs, _tar),
)}
