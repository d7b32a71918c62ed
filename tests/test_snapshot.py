"""Snapfile parsing and checks in every format era (bytes crafted from the documented layouts)."""

from __future__ import annotations

import struct

import pytest

from e2b_artifacts import snapshot
from e2b_artifacts.versions import parse_firecracker_version
from tests.verify.craft import ARM, X86, crc64_reference, snapfile, with_crc

# (era, version written, Firecracker that loads it, Firecracker too old for it)
ERAS = [
    ("versionize", 10, "v1.6.0", "v1.5.0"),
    ("bincode", "6.0.0", "v1.12.1_d990331", "v1.11.0"),
    ("bitcode", "10.0.0", "v1.16.1", "v1.15.0"),
]
MIB = 1 << 20


def codes(report: snapshot.SnapshotReport, severity: str) -> set[str]:
    return {i.code for i in report.issues if i.severity == severity}


def message(report: snapshot.SnapshotReport, code: str) -> str:
    return next(i.message for i in report.issues if i.code == code)


def test_crc_vectors_from_the_reference() -> None:
    assert snapshot.crc64(b"123456789") == 0xE9C6D914C4B8D9CA
    assert snapshot.crc64(bytes([123] * 16)) == 0x29D5357216326566
    assert snapshot.crc64(bytes([1, 2, 3, 4, 5])) == 0xFB0460DE06383654
    data = bytes(range(256)) * 3
    assert snapshot.crc64(data) == crc64_reference(data)
    assert snapshot.crc64(data + struct.pack("<Q", snapshot.crc64(data))) == 0  # whole-file check


@pytest.mark.parametrize(("era", "version", "fc", "_old"), ERAS)
def test_correct_snapfile(era: str, version: int | str, fc: str, _old: str) -> None:
    data = snapfile(era, version=version, mem_mib=64)
    report = snapshot.check_snapfile(data, firecracker_version=fc, arch="x86_64", memfile_size=64 * MIB,
                                     guest_memory_bytes=64 * MIB)
    snap = report.snapfile
    assert snap.era == era and snap.arch == "x86_64" and snap.crc_ok
    assert not report.failed, report.issues
    assert "crc" in codes(report, "ok")
    if era == "versionize":
        assert (snap.format_version, snap.data_version, snap.mem_size_mib) == (1, 10, 64)
        assert codes(report, "ok") >= {"version", "memfile"}
    elif era == "bincode":
        assert (snap.snapshot_version, snap.mem_size_mib, snap.version_certain) == ("6.0.0", 64, True)
        assert codes(report, "ok") >= {"version", "memfile"}
    else:  # bit-packed: version guessed and said so; memory size from the metadata
        assert snap.mem_size_mib is None and not snap.version_certain
        assert "best-effort" in message(report, "version")
        assert "metadata's RAM size" in message(report, "memfile")


@pytest.mark.parametrize(("fc", "text"), [
    ("v0.23.0", "Cannot deserialize MicrovmState: Crc64({computed})"),
    ("v1.1.0", "Cannot deserialize the microVM state: Crc64({computed})"),
    ("v1.6.0", "CRC64 validation failed: {computed} (stored {stored}"),
    ("v1.13.0", "CRC64 validation failed: {computed} (stored {stored}"),
    # v1.14+: SnapshotError::Crc64 has no value (e2b-dev/firecracker src/vmm/src/snapshot/mod.rs, the v1.14 fork;
    # bitcode-era src/vmm/src/snapshot/mod.rs upstream): there is no number in the log to match
    ("v1.14.1_431f1fc", "CRC64 validation failed (Firecracker v1.14+ prints no number"),
    ("v1.14-0.2.0", "CRC64 validation failed (Firecracker v1.14+ prints no number"),
    ("v1.16.1", "CRC64 validation failed (Firecracker v1.14+ prints no number"),
    (None, "CRC64 validation failed: {computed} (stored {stored}; file corrupt or truncated; Firecracker up to "
           "v1.13 prints this number, v1.14+ prints no number)"),
])
def test_flipped_byte_reports_the_message_of_the_loading_firecracker(fc: str | None, text: str) -> None:
    release = parse_firecracker_version(fc)
    era = snapshot.era_of(release) if release is not None else "bincode"
    versions: dict[str, int | str] = {"versionize": 4, "bincode": "8.0.0", "bitcode": "10.0.0"}
    data = bytearray(snapfile(era, version=versions[era]))
    data[len(data) // 2] ^= 0x01
    report = snapshot.check_snapfile(bytes(data), firecracker_version=fc)
    computed, stored = crc64_reference(bytes(data[:-8])), struct.unpack("<Q", data[-8:])[0]
    assert "crc" in codes(report, "FAIL")
    assert text.format(computed=computed, stored=stored) in message(report, "crc")
    if fc is not None and "no number" in text:
        assert f"validation failed: {computed}" not in message(report, "crc")


@pytest.mark.parametrize(("era", "version", "fc", "_old"), ERAS)
def test_wrong_stored_crc(era: str, version: int | str, fc: str, _old: str) -> None:
    data = bytearray(snapfile(era, version=version))
    data[-8:] = struct.pack("<Q", 14172926256603030733)
    report = snapshot.check_snapfile(bytes(data), firecracker_version=fc)
    assert "crc" in codes(report, "FAIL")
    assert "stored 14172926256603030733" in message(report, "crc")


@pytest.mark.parametrize(("era", "version", "fc", "_old"), ERAS)
def test_aarch64_snapshot_against_x86_64_metadata(era: str, version: int | str, fc: str, _old: str) -> None:
    report = snapshot.check_snapfile(snapfile(era, arch="aarch64", version=version), firecracker_version=fc,
                                     arch="x86_64")
    assert report.snapfile.arch == "aarch64" and report.snapfile.crc_ok
    assert codes(report, "FAIL") == {"arch"}
    magic = (ARM | 1) if era == "versionize" else ARM
    assert f"Magic value does not match arch: {magic}" in message(report, "arch")


@pytest.mark.parametrize(("era", "version", "fc", "_old"), ERAS)
def test_truncated(era: str, version: int | str, fc: str, _old: str) -> None:
    data = snapfile(era, version=version)
    assert "crc" in codes(snapshot.check_snapfile(data[:-100], firecracker_version=fc), "FAIL")
    tiny = snapshot.check_snapfile(data[:5], firecracker_version=fc)
    assert codes(tiny, "FAIL") == {"size"} and "smaller than CRC length" in message(tiny, "size")
    header_only = snapshot.check_snapfile(data[:12], firecracker_version=fc)
    assert header_only.failed


def test_size_rule_per_era() -> None:
    """v1.15+ refuse a file over 10,000,000 bytes (Snapshot::load takes at most 10,000,001); v1.7-v1.14 cap the
    decoded state at 10 MiB and read any file; the versionize era has no cap."""
    def sized(era: str, version: int | str, total: int) -> bytes:
        overhead = len(snapfile(era, version=version, state_len=0))
        return snapfile(era, version=version, state_len=total - overhead, crc=snapshot.crc64)

    def size_issue(data: bytes, fc: str) -> str | None:
        report = snapshot.check_snapfile(data, firecracker_version=fc)
        assert report.snapfile.crc_ok
        return next((i.message for i in report.issues if i.code == "size" and i.severity == "FAIL"), None)

    assert size_issue(sized("bitcode", "10.0.0", 10_000_000), "v1.16.1") is None
    over = size_issue(sized("bitcode", "10.0.0", 10_000_001), "v1.16.1")
    assert over is not None and "Snapshot size exceeds limit of 10000000 bytes" in over
    bincode_file = sized("bincode", "8.0.0", 10_400_000)  # a bigger file than v1.15 takes, a state under 10 MiB
    assert size_issue(bincode_file, "v1.14.1_431f1fc") is None
    state_over = sized("bincode", "8.0.0", 16 + 5 + (10 << 20) + 1 + 8)
    assert snapshot.parse_snapfile(state_over).state_bytes == (10 << 20) + 1
    text = size_issue(state_over, "v1.14.1_431f1fc")
    assert text is not None and "over the 10 MiB (10485760 bytes)" in text and "not on the file" in text
    assert size_issue(sized("bincode", "8.0.0", 16 + 5 + (10 << 20) + 8), "v1.14.1_431f1fc") is None
    assert size_issue(sized("versionize", 10, 12_000_000), "v1.6.0") is None


@pytest.mark.parametrize(("era", "version", "fc", "old"), ERAS)
def test_version_newer_than_the_metadatas_firecracker(era: str, version: int | str, fc: str, old: str) -> None:
    report = snapshot.check_snapfile(snapfile(era, version=version), firecracker_version=old)
    if era == "bitcode":  # the version is a best-effort reading: a warning, never a hard failure
        assert "version" in codes(report, "warn") and not report.failed
        assert "best-effort" in message(report, "version")
    else:
        assert codes(report, "FAIL") == {"version"}
        assert "Invalid data version" in message(report, "version")


def test_cross_era_and_unknown_versions() -> None:
    bincode = snapfile("bincode", version="6.0.0")
    report = snapshot.check_snapfile(bincode, firecracker_version="v1.6.0")
    assert "cross-era" in message(report, "version") and report.failed
    assert "version" in codes(snapshot.check_snapfile(bincode, firecracker_version="nightly"), "warn")
    older = snapshot.check_snapfile(snapfile("versionize", version=4), firecracker_version="v1.6.0")
    assert "version" in codes(older, "ok")  # versionize reads every lower data version
    bitcode_unknown = snapshot.check_snapfile(snapfile("bitcode", version=None), firecracker_version="v1.15.0")
    assert bitcode_unknown.snapfile.snapshot_version is None and "version unknown" in message(bitcode_unknown,
                                                                                              "version")


def test_snapshot_version_table() -> None:
    assert snapshot.snapshot_version_of((1, 10, 0)) == "3.0.0"
    assert snapshot.snapshot_version_of((1, 10, 1)) == "4.0.0"
    assert snapshot.snapshot_version_of((1, 14, 1)) == "8.0.0"
    # persist.rs SNAPSHOT_VERSION per tag: v1.15 9.0.0, v1.16 10.0.0, main (1.17.0-dev) 11.0.0
    assert [snapshot.snapshot_version_of((1, m, 0)) for m in (15, 16, 17)] == ["9.0.0", "10.0.0", "11.0.0"]
    assert snapshot.era_of((1, 17, 0)) == "bitcode"
    v11 = with_crc(struct.pack("<Q", X86) + b"\x01\x06" + b"11.0.0" + b"\xff" * 100)  # packed data after it
    main = snapshot.check_snapfile(v11, firecracker_version="v1.17.0")
    assert "version" in codes(main, "ok") and "reads 11.0.0" in message(main, "version")
    v116 = snapshot.check_snapfile(v11, firecracker_version="v1.16.1")
    assert "version" in codes(v116, "warn") and "11.0.0 (written by v1.17)" in message(v116, "version")
    assert "newer than this tool knows (v1.17)" in message(
        snapshot.check_snapfile(snapfile("bitcode", version="12.0.0"), firecracker_version="v1.18.0"), "version")
    # 8.0.0 from v1.13 loads on v1.14 (same format), 6.0.0 does not
    assert not snapshot.check_snapfile(snapfile("bincode", version="8.0.0"), firecracker_version="v1.14.1").failed
    assert snapshot.check_snapfile(snapfile("bincode", version="6.0.0"), firecracker_version="v1.14.1").failed


@pytest.mark.parametrize("era", ["versionize", "bincode"])
def test_memfile_too_short_and_too_long(era: str) -> None:
    data = snapfile(era, version=10 if era == "versionize" else "6.0.0", mem_mib=64)
    fc = "v1.6.0" if era == "versionize" else "v1.12.1"
    short = snapshot.check_snapfile(data, firecracker_version=fc, memfile_size=64 * MIB - 4096)
    long = snapshot.check_snapfile(data, firecracker_version=fc, memfile_size=65 * MIB)
    assert codes(short, "FAIL") == {"memfile"} and "4096 bytes shorter" in message(short, "memfile")
    assert codes(long, "FAIL") == {"memfile"} and "longer" in message(long, "memfile")


def test_not_a_snapshot() -> None:
    report = snapshot.check_snapfile(with_crc(b"\x7fELF" + bytes(100)))
    assert codes(report, "FAIL") == {"magic"}
    weird_format = snapshot.check_snapfile(with_crc(struct.pack("<QH", X86 | 2, 1) + bytes(40)))
    assert "Invalid format version: 2" in message(weird_format, "version")


def test_longer_memfile_only_warns_where_hotplug_memory_exists() -> None:
    v114 = snapshot.check_snapfile(snapfile("bincode", version="8.0.0", mem_mib=64), firecracker_version="v1.14.1",
                                   memfile_size=80 * MIB)
    assert codes(v114, "warn") == {"memfile"} and "virtio-mem" in message(v114, "memfile")
    v114_short = snapshot.check_snapfile(snapfile("bincode", version="8.0.0", mem_mib=64),
                                         firecracker_version="v1.14.1", memfile_size=32 * MIB)
    assert codes(v114_short, "FAIL") == {"memfile"}


def test_e2b_fork_line_converts_older_snapshots_upstream_refuses_them() -> None:
    """e2b-dev/firecracker src/vmm/src/persist/v1_12, v1_14: From<v1_10/v1_12 MicrovmState> for the v1.14 state."""
    v112 = snapfile("bincode", version="6.0.0")
    fork = snapshot.check_snapfile(v112, firecracker_version="v1.14-0.2.0")
    assert codes(fork, "warn") == {"version"} and "E2B's fork of this line converts 6.0.0" in message(fork, "version")
    assert "Firecracker v1.14-0.2.0" in message(fork, "version")
    assert snapshot.check_snapfile(v112, firecracker_version="v1.14.1_431f1fc").failed  # upstream rule
    assert snapshot.check_snapfile(snapfile("bincode", version="5.0.0"), firecracker_version="v1.14-0.2.0").failed


def test_guest_memory_sources_and_the_headerless_memfile() -> None:
    bincode = snapshot.parse_snapfile(snapfile("bincode", version="8.0.0", mem_mib=2048))
    bitcode = snapshot.parse_snapfile(snapfile("bitcode", version="10.0.0"))
    from_snap = snapshot.guest_memory(bincode, 512 * MIB)
    assert from_snap == snapshot.GuestMemory(2048 * MIB, "the snapfile's mem_size_mib 2048")  # the snapfile wins
    assert snapshot.guest_memory(bitcode, 512 * MIB) == snapshot.GuestMemory(512 * MIB,
                                                                             "the metadata's RAM size 512 MiB")
    assert snapshot.guest_memory(bitcode, None) is None
    short = snapshot.check_headerless_memfile(bincode, from_snap, memfile_bytes=241_172_480)
    assert short.severity == "FAIL" and short.code == "memfile.header"
    assert "marked uploaded before its memfile.header was written (e2b-dev/infra#3226, #3248" in short.message
    assert "241172480 bytes against 2147483648 bytes of guest memory" in short.message and "11%" in short.message
    full = snapshot.check_headerless_memfile(bincode, from_snap, memfile_bytes=2048 * MIB)
    assert full.severity == "FAIL" and "headerless fallback would load it" in full.message
    unknown = snapshot.check_headerless_memfile(bitcode, None, memfile_bytes=MIB)
    assert unknown.severity == "FAIL" and "guest memory size is unknown (bitcode" in unknown.message
    header_short = snapshot.check_memory(bincode, from_snap, device_bytes=1024 * MIB, device="memfile.header size")
    assert [(i.severity, i.code) for i in header_short] == [("FAIL", "memfile")]
