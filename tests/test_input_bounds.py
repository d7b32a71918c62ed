"""Hostile inputs end in a clean error with bounded memory: wrong JSON types, deep nesting, huge numbers,
LZ4 frames that lie about their size, truncated bzImages, over-long version names, FIFOs and devices in
place of files, and inputs past their size limit."""

from __future__ import annotations

import contextlib
import json
import os
import struct
import subprocess
import sys
import tracemalloc
import uuid
from collections.abc import Iterator
from pathlib import Path

import lz4.frame
import pytest

from e2b_artifacts import fsutil, header, limits, manifest, metadata
from e2b_artifacts.errors import ArtifactError, ExitCode
from e2b_artifacts.kernel import image
from tests.conftest import cli
from tests.verify.craft import header_v1_3, header_v4
from tests.verify.lz4frame import frame_claiming

BUILD_ID = "3f1c9a52-7d0e-4b6a-9c44-0e5d2b8f1a77"
MIB = 1 << 20
GOOD = {"version": 2, "template": {"build_id": BUILD_ID, "kernel_version": "vmlinux-6.1.102",
                                   "firecracker_version": "v1.12.1_d990331"}}


@contextlib.contextmanager
def peak() -> Iterator[list[int]]:
    """The peak of Python allocations inside the block, in bytes (appended on exit)."""
    out: list[int] = []
    tracemalloc.start()
    try:
        yield out
    finally:
        out.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()


def build_dir(tmp_path: Path, doc: object = GOOD) -> Path:
    d = tmp_path / "storage" / BUILD_ID
    d.mkdir(parents=True)
    (d / "metadata.json").write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return d


def verify(d: Path, timeout: float = 60, **env: str) -> tuple[int, str]:
    """``verify`` as a user runs it; a run that blocks fails the test through the timeout."""
    base = {"LOCAL_TEMPLATE_STORAGE_BASE_PATH": str(d.parent), "HOST_KERNELS_DIR": str(d.parent / "kernels"),
            "FIRECRACKER_VERSIONS_DIR": str(d.parent / "fc")}
    proc = subprocess.run([sys.executable, "-m", "e2b_artifacts", "verify", d.name], capture_output=True, text=True,
                          env={**os.environ, **base, **env}, timeout=timeout, check=False)
    out = proc.stdout + proc.stderr
    assert "Traceback" not in out and "internal error" not in out, out
    return proc.returncode, out


def line(out: str, check: str) -> str:
    found = [x for x in out.splitlines() if x.split(":", 1)[0].split()[-1:] == [check]]
    assert found, f"no {check} line in:\n{out}"
    return found[0]


# ------------------------------------------------------------------ metadata: types, nesting, numbers, names

@pytest.mark.parametrize("value", [5, [], "x", True, None])
def test_extension_field_that_is_not_an_object_is_refused(value: object) -> None:
    doc = {**GOOD, "e2b_artifact": value}
    with pytest.raises(ArtifactError, match="field e2b_artifact: expected an object") as info:
        metadata.parse(json.dumps(doc).encode())
    assert info.value.code == ExitCode.BAD_INPUT


@pytest.mark.parametrize("value", [5, [], "ab"])
def test_verify_reports_a_bad_extension_field(tmp_path: Path, value: object) -> None:
    rc, out = verify(build_dir(tmp_path, {**GOOD, "e2b_artifact": value}))
    assert rc == 1
    assert "FAIL metadata" in out and "field e2b_artifact: expected an object" in line(out, "metadata")


def test_camel_case_with_a_template_that_is_not_an_object() -> None:
    doc = {"buildID": BUILD_ID, "kernelVersion": "vmlinux-6.1.102", "firecrackerVersion": "v1.12.1",
           "template": "ab"}
    with pytest.raises(ArtifactError, match="field template: expected an object"):
        metadata.parse(json.dumps(doc).encode())


@pytest.mark.parametrize("raw", [b"[" * 100_000 + b"]" * 100_000, b'{"a":' * 70 + b"1" + b"}" * 70,
                                 json.dumps({**GOOD, "n": 1}).replace('"n": 1', '"n": 1' + "0" * 5000).encode(),
                                 json.dumps({**GOOD, "n": 1}).replace('"n": 1', '"n": NaN').encode()])
def test_metadata_json_that_python_cannot_hold_is_a_clean_error(raw: bytes) -> None:
    with pytest.raises(ArtifactError, match="not valid JSON") as info:
        metadata.parse(raw)
    assert info.value.code == ExitCode.BAD_INPUT


def test_verify_on_deep_and_huge_json(tmp_path: Path) -> None:
    d = build_dir(tmp_path, "[" * 100_000 + "]" * 100_000)
    rc, out = verify(d)
    assert rc == 1 and "nested deeper than 64 levels" in line(out, "metadata")
    (d / "metadata.json").write_text(json.dumps(GOOD))
    (d / manifest.FILE_NAME).write_text('{"format": 1, "files": {"metadata.json": {"size": 1' + "0" * 5000 + "}}}")
    rc, out = verify(d)
    assert rc == 1 and "a number of more than 4300 digits" in line(out, "manifest")
    (d / manifest.FILE_NAME).write_text('{"format": 1, "files": ' + "[" * 100_000 + "]" * 100_000 + "}")
    rc, out = verify(d)
    assert rc == 1 and "malformed integrity manifest: not valid JSON: nested deeper" in line(out, "manifest")


@pytest.mark.parametrize(("field", "value", "why"), [
    ("kernel_version", "v" * 5000, "longer than the 128"),
    ("kernel_version", "../../etc", "not a single directory name"),
    ("firecracker_version", "v1/x", "not a single directory name"),
    ("kernel_version", "6.1\n", "control characters"),
])
def test_version_names_are_directory_names(field: str, value: str, why: str) -> None:
    doc = json.loads(json.dumps(GOOD))
    doc["template"][field] = value
    with pytest.raises(ArtifactError, match=why):
        metadata.parse(json.dumps(doc).encode())


def test_verify_with_a_kernel_version_past_path_max(tmp_path: Path) -> None:
    doc = json.loads(json.dumps(GOOD))
    doc["template"]["kernel_version"] = "v" * 5000
    d = build_dir(tmp_path, doc)
    (d.parent / "kernels").mkdir()
    rc, out = verify(d)
    assert rc == 1 and "field template.kernel_version: 5000 characters" in line(out, "metadata")


# ------------------------------------------------------------------ headers: LZ4 frames that lie, size bounds

def _bomb_header(version: int, length: int, frame: bytes) -> bytes:
    b = uuid.UUID(BUILD_ID).bytes
    return struct.pack("<QQQQ16s16s", version, 4096, MIB, 0, b, b) + b"\0" + struct.pack("<I", length) + frame


@pytest.mark.parametrize("version", [4, 5])
def test_frame_claiming_a_huge_content_size(version: int) -> None:
    data = _bomb_header(version, 100, frame_claiming(1 << 46))
    assert len(data) < 140
    with peak() as used, pytest.raises(ArtifactError, match="malformed header: cannot decode"):
        header.parse_header(data)
    assert used[0] < MIB


@pytest.mark.parametrize("version", [4, 5])
def test_frame_that_expands_past_its_length_prefix_stops_there(version: int) -> None:
    frame = lz4.frame.compress(bytes(256 * MIB))  # about 1 MB
    data = _bomb_header(version, 100, frame)
    with peak() as used, pytest.raises(ArtifactError, match="block is more than 100 bytes, prefix says 100"):
        header.parse_header(data)
    assert used[0] < 4 * len(data)


def test_verify_on_a_header_bomb(tmp_path: Path) -> None:
    d = build_dir(tmp_path)
    (d / "memfile.header").write_bytes(_bomb_header(4, 100, frame_claiming(1 << 46)))
    rc, out = verify(d)
    assert rc == 1 and "malformed header" in line(out, "header.memfile")


def test_v3_header_mappings_are_kept_packed(tmp_path: Path) -> None:
    count = 200_000
    path = tmp_path / "memfile.header"
    raw_id = uuid.UUID(BUILD_ID).bytes
    path.write_bytes(header_v1_3(size=count * 4096, build_id=BUILD_ID) + b"".join(
        struct.pack("<QQ16sQ", i * 4096, 4096, raw_id, i * 4096) for i in range(count)))
    with peak() as used:
        hdr = header.read_header(path)
        assert hdr.problems() == [] and hdr.required_lengths() == {BUILD_ID: count * 4096}
        assert hdr.mappings is not None and len(hdr.mappings) == count
        assert hdr.mappings[-1] == header.Mapping((count - 1) * 4096, 4096, BUILD_ID, (count - 1) * 4096)
    assert used[0] < 2 * path.stat().st_size  # one Python object per mapping took about 8 times the file


def test_v5_mappings_are_packed_and_round_trip() -> None:
    mappings = [(0, 8192, BUILD_ID, 0), (16384, 4096, BUILD_ID, 8192)]
    hdr = header.parse_header(header_v4(size=20480, build_id=BUILD_ID, mappings=mappings, v5=True))
    assert isinstance(hdr.mappings, header.Mappings)
    assert [(m.offset, m.length, m.build_id) for m in hdr.mappings] == [
        (0, 8192, BUILD_ID), (8192, 8192, header.NIL_BUILD), (16384, 4096, BUILD_ID)]


def test_many_problems_are_counted_not_listed() -> None:
    hdr = header.parse_header(header_v1_3(size=1000 * 4096, build_id=BUILD_ID,
                                          mappings=[(0, 0, BUILD_ID, 0)] * 1000))
    problems = hdr.problems()
    assert len(problems) <= header.MAX_PROBLEMS + 2 and "and 980 more problems" in str(problems[-2])


def test_header_past_its_limit_is_not_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "memfile.header"
    with path.open("wb") as fh:  # sparse: 300 MiB of zero mappings after the metadata
        fh.write(header_v1_3(size=4096, build_id=BUILD_ID))
        fh.truncate(64 + 40 * (300 * MIB // 40))
    with peak() as used, pytest.raises(ArtifactError, match=r"over the .*-byte limit for header files") as info:
        header.read_header(path)
    assert used[0] < MIB and limits.HEADER.env in info.value.hint
    monkeypatch.setenv(limits.HEADER.env, "512M")  # raised: now the size it describes bounds it
    with peak() as used, pytest.raises(ArtifactError, match="more than the 1 4 KiB pages of its 4096-byte device"):
        header.read_header(path)
    assert used[0] < MIB


def test_v3_header_bound_by_the_device_it_describes() -> None:
    data = header_v1_3(size=4096, build_id=BUILD_ID, mappings=[(0, 4096, BUILD_ID, 0), (0, 4096, BUILD_ID, 0)])
    with pytest.raises(ArtifactError, match="2 mappings: more than the 1 4 KiB pages"):
        header.parse_header(data)


# ------------------------------------------------------------------ kernels: truncated bzImage, bounded payloads

def _bzimage_setup(length: int) -> bytes:
    data = bytearray(1024)
    data[0x1F1] = 1
    data[0x1FE:0x200] = b"\x55\xaa"
    data[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", data, 0x206, 0x20F)
    struct.pack_into("<II", data, 0x248, 0, 64)
    return bytes(data[:length])


@pytest.mark.parametrize("length", [578, 519, 0x250])
def test_truncated_bzimage(tmp_path: Path, length: int) -> None:
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(_bzimage_setup(length))
    proc = cli("kernel", "check", kernel)
    assert proc.returncode == 1, proc.stderr
    assert "internal error" not in proc.stderr and "Traceback" not in proc.stderr
    expect = "bzImage truncated" if length < 0x250 else "unknown bzImage payload compression"
    assert expect in proc.stdout
    proc = cli("kernel", "extract", kernel, "-o", tmp_path / "vmlinux")
    assert proc.returncode == 3 and expect in proc.stderr, proc.stderr
    assert not (tmp_path / "vmlinux").exists()


def test_bzimage_payload_that_expands_past_the_kernel_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    import gzip

    monkeypatch.setenv(limits.KERNEL.env, "1M")
    payload = gzip.compress(bytes(8 * MIB))
    data = bytearray(_bzimage_setup(1024))
    struct.pack_into("<II", data, 0x248, 0, len(payload))
    with peak() as used, pytest.raises(ArtifactError, match="expands past the 1048576-byte limit for kernel"):
        image.decompress_bzimage(bytes(data[:1024]) + payload)
    assert used[0] < 4 * MIB


# ------------------------------------------------------------------ FIFOs, devices, size limits

@pytest.mark.parametrize("name", ["artifact-manifest.json", "metadata.json", "memfile.header", "snapfile"])
def test_fifo_in_place_of_an_input_does_not_block_verify(tmp_path: Path, name: str) -> None:
    d = build_dir(tmp_path)
    (d / name).unlink(missing_ok=True)
    os.mkfifo(d / name)
    if name == "snapfile":
        (d / "memfile").write_bytes(b"")
    rc, out = verify(d, timeout=30)
    assert rc == 1 and "is not a regular file (a FIFO)" in out, out


@pytest.mark.parametrize("name", ["artifact-manifest.json", "metadata.json", "rootfs.ext4.header"])
def test_symlink_to_dev_zero_is_refused(tmp_path: Path, name: str) -> None:
    d = build_dir(tmp_path)
    (d / name).unlink(missing_ok=True)
    (d / name).symlink_to("/dev/zero")
    rc, out = verify(d, timeout=30)
    assert rc == 1 and "is not a regular file (a character device)" in out, out


@pytest.mark.parametrize("args", [("{fifo}",), ("/dev/zero",), ("{kernel}", "--config", "{fifo}")])
def test_kernel_check_refuses_what_is_not_a_file(tmp_path: Path, args: tuple[str, ...]) -> None:
    os.mkfifo(tmp_path / "fifo")
    elf_header = b"\x7fELF\x02\x01\x01" + bytes(57)  # a kernel whose config would be read
    (tmp_path / "kernel").write_bytes(elf_header)
    argv = [a.format(fifo=tmp_path / "fifo", kernel=tmp_path / "kernel") for a in args]
    proc = subprocess.run([sys.executable, "-m", "e2b_artifacts", "kernel", "check", *argv], capture_output=True,
                          text=True, timeout=30, check=False)
    assert proc.returncode == 3 and "is not a regular file" in proc.stderr, proc.stderr


def test_read_input_limit_and_its_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "metadata.json"
    path.write_bytes(b" " * (MIB + 1))
    with peak() as used, pytest.raises(ArtifactError, match="1048577 bytes, over the 1048576-byte limit") as info:
        fsutil.read_input(path, "metadata file", limit=limits.METADATA, missing_hint="")
    assert used[0] < MIB // 4 and "E2B_ARTIFACT_MAX_METADATA_BYTES=BYTES" in info.value.hint
    monkeypatch.setenv("E2B_ARTIFACT_MAX_METADATA_BYTES", "2M")
    assert len(fsutil.read_input(path, "metadata file", limit=limits.METADATA, missing_hint="")) == MIB + 1
    monkeypatch.setenv("E2B_ARTIFACT_MAX_METADATA_BYTES", "lots")
    with pytest.raises(ArtifactError, match="expected a size in bytes") as info:
        fsutil.read_input(path, "metadata file", limit=limits.METADATA, missing_hint="")
    assert info.value.code == ExitCode.USAGE


def test_verify_on_an_oversized_metadata_file(tmp_path: Path) -> None:
    d = build_dir(tmp_path)
    with (d / "metadata.json").open("r+") as fh:
        fh.seek(0, 2)
        fh.write(" " * (2 * MIB))
    rc, out = verify(d)
    assert rc == 1 and "over the 1048576-byte limit for metadata files" in line(out, "metadata")
    rc, out = verify(d, E2B_ARTIFACT_MAX_METADATA_BYTES="4M")
    assert "ok   metadata" in out, out


def test_every_limit_is_documented() -> None:
    doc = (Path(__file__).resolve().parent.parent / "docs" / "verify.md").read_text()
    for limit in limits.ALL:
        assert f"`{limit.env}`" in doc, limit.env
