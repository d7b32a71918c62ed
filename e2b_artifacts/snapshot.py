"""Firecracker snapfiles (vmstate): parse every format era and check them offline. Pure: bytes in, records out.

Formats (Firecracker's snapshot code, every release since v0.23):

* magic u64 LE: x86_64 ``0x0710198486640000``, aarch64 ``0x07101984AAAA0000``;
* versionize era (Firecracker v0.23-v1.6): magic low 16 bits = 1 (format version),
  then a u16 data version, then the state (``mem_size_mib`` first, at offset 10);
* bincode era (v1.7-v1.14): exact magic, u64 length L, ASCII semver, state
  (``mem_size_mib`` at 16+L);
* bitcode era (v1.15+): exact magic, then a bit-packed value: version best-effort;
* all eras: CRC-64/Jones (reflected, init 0, xorout 0) of ``[0, len-8)`` in the
  last 8 bytes, little-endian.

What the state says about guest memory, per era: ``vm_info.mem_size_mib`` is the first field of the first
struct in every release up to v1.14 (``VmInfo`` in src/vmm/src/persist.rs; E2B's fork keeps it "unchanged
through all versions", e2b-dev/firecracker src/vmm/src/persist/v1_12/mod.rs), so it is read at a fixed
offset. The memory regions come later, behind variable-length fields (the boot source strings, and from
v1.12 ``kvm_state``): ``memory_state.regions`` after ``vm_info`` up to v1.10 ({base_address, size,
offset}), ``vm_state.memory.regions`` from v1.11 ({base_address, size}; v1.14 adds ``region_type`` and
``plugged`` for virtio-mem hotplug). They are not decoded here: no real snapfile of those releases is
at hand to check such a walk against. The vCPU count is the length of ``vcpu_states``, after the
architecture's KVM state: not read either. Bitcode (v1.15+) has no fixed offsets at all.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import crcmod  # type: ignore[import-untyped]

from .layout import MEMFILE, MEMFILE_HEADER
from .versions import FirecrackerVersion, parse_firecracker_version, read_firecracker_version

X86_64_MAGIC = 0x0710_1984_8664_0000
AARCH64_MAGIC = 0x0710_1984_AAAA_0000
ARCH_OF_MAGIC = {X86_64_MAGIC: "x86_64", AARCH64_MAGIC: "aarch64"}
CRC_BYTES = 8
# v1.15+ (bitcode): Snapshot::load reads at most 10,000,001 bytes of the file and refuses more than this
# (SNAPSHOT_DESERIALIZATION_BYTES_LIMIT, src/vmm/src/snapshot/mod.rs).
MAX_SNAPFILE_BYTES = 10_000_000
# v1.7-v1.14 (bincode 1 and 2): the decoder may read/allocate at most 10 MiB for one value, the state
# (VM_STATE_DESERIALIZE_LIMIT / DESERIALIZATION_BYTES_LIMIT = mib_to_bytes(10)); the file itself is read
# whole, without a limit.
MAX_DECODED_STATE_BYTES = 10 << 20

# CRC-64/Jones as Firecracker calls it: crc64(0, data). crcmod's predefined "crc-64-jones" differs.
_crc64 = crcmod.mkCrcFun(0x1AD93D23594C935A9, initCrc=0, rev=True, xorOut=0)


def crc64(data: bytes | memoryview) -> int:
    """CRC-64/Jones, reflected, init 0, xorout 0: ``crc64(b"123456789") == 0xE9C6D914C4B8D9CA``."""
    return int(_crc64(data))


Era = Literal["versionize", "bincode", "bitcode", "unknown"]
Severity = Literal["ok", "warn", "FAIL"]

# Versionize era: data version -> the Firecracker minor line that writes it (v1.6.0 version_map.rs).
# Each release loads every data version from 1 up to its own.
VERSIONIZE_DATA_VERSION = {
    (0, 23): 1, (0, 24): 2, (0, 25): 3, (1, 0): 4, (1, 1): 5, (1, 2): 6, (1, 3): 7, (1, 4): 8, (1, 5): 9, (1, 6): 10,
}
# Semver eras: Firecracker release -> SNAPSHOT_VERSION (src/vmm/src/persist.rs, per tag; (1, 17) is the main
# branch, 1.17.0-dev). Keys are (major, minor) or, where a patch release changed it, (major, minor, patch)
# for that patch and later. Every bump so far is a major one: each line loads only its own format.
SNAPSHOT_VERSION = {
    (1, 7): "1.0.0", (1, 8): "2.0.0", (1, 9): "3.0.0", (1, 10): "3.0.0", (1, 10, 1): "4.0.0", (1, 11): "5.0.0",
    (1, 12): "6.0.0", (1, 13): "8.0.0", (1, 14): "8.0.0", (1, 15): "9.0.0", (1, 16): "10.0.0", (1, 17): "11.0.0",
}
# E2B's fork of the v1.14 line converts older snapshots on load (e2b-dev/firecracker src/vmm/src/persist/v1_10,
# v1_12, v1_14: From<v1_10::MicrovmState>, From<v1_12::...>). Which fork releases ship that is not pinned.
E2B_FORK_UPGRADES = {(1, 14): ("4.0.0", "6.0.0")}
FIRST_BINCODE = (1, 7)
FIRST_BITCODE = (1, 15)
FIRST_CRC_WITHOUT_NUMBER = (1, 14)  # whole-file CRC == 0 check, `CRC64 validation failed` with no number
LAST_KNOWN = (1, 17)
_SEMVER = re.compile(rb"(\d{1,4})\.(\d{1,4})\.(\d{1,4})")


@dataclass(frozen=True)
class Issue:
    """One result of checking a snapfile: ``code`` is stable (crc, size, magic, arch, version, memfile)."""

    severity: Severity
    code: str
    message: str


AddIssue = Callable[[Issue], None]


@dataclass
class Snapfile:
    """What the bytes say; ``None`` fields could not be read in this era."""

    size: int
    stored_crc: int | None = None
    computed_crc: int | None = None  # of [0, len-8), as Firecracker up to v1.13 prints it
    magic: int | None = None
    arch: str | None = None
    era: Era = "unknown"
    format_version: int | None = None  # versionize: magic's low 16 bits
    data_version: int | None = None  # versionize: u16 after the magic
    snapshot_version: str | None = None  # bincode/bitcode: semver string
    version_certain: bool = True  # False: bitcode version guessed from the bytes
    mem_size_mib: int | None = None
    state_offset: int | None = None  # where the state starts (versionize, bincode)

    @property
    def crc_ok(self) -> bool:
        return self.stored_crc is not None and self.stored_crc == self.computed_crc

    @property
    def state_bytes(self) -> int | None:
        """Bytes of the serialized state (between the header and the CRC), where the era says where it starts."""
        return None if self.state_offset is None else max(0, self.size - CRC_BYTES - self.state_offset)

    @property
    def version_label(self) -> str:
        if self.data_version is not None:
            return f"data version {self.data_version}"
        if self.snapshot_version is not None:
            return f"snapshot version {self.snapshot_version}" + ("" if self.version_certain else " (best-effort)")
        return "version unknown"

    def to_dict(self) -> dict[str, object]:
        return {"size": self.size, "era": self.era, "arch": self.arch, "magic": _hex(self.magic),
                "format_version": self.format_version, "data_version": self.data_version,
                "snapshot_version": self.snapshot_version, "version_certain": self.version_certain,
                "mem_size_mib": self.mem_size_mib, "stored_crc": self.stored_crc,
                "computed_crc": self.computed_crc, "crc_ok": self.crc_ok}


@dataclass
class SnapshotReport:
    snapfile: Snapfile
    issues: list[Issue] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return any(i.severity == "FAIL" for i in self.issues)


def _hex(value: int | None) -> str | None:
    return None if value is None else f"{value:#018x}"


def parse_snapfile(data: bytes) -> Snapfile:
    """Read the header fields and CRC of a snapfile; never raises on malformed input."""
    snap = Snapfile(size=len(data))
    if len(data) < CRC_BYTES:
        return snap
    (snap.stored_crc,) = struct.unpack_from("<Q", data, len(data) - CRC_BYTES)
    snap.computed_crc = crc64(memoryview(data)[:-CRC_BYTES])
    if len(data) < 8 + CRC_BYTES:
        return snap
    (snap.magic,) = struct.unpack_from("<Q", data, 0)
    base, low = snap.magic & ~0xFFFF, snap.magic & 0xFFFF
    snap.arch = ARCH_OF_MAGIC.get(base)
    if snap.arch is None:
        return snap
    body_end = len(data) - CRC_BYTES
    if low == 1:
        snap.era, snap.format_version = "versionize", 1
        snap.state_offset = 10
        if body_end >= 10:
            (snap.data_version,) = struct.unpack_from("<H", data, 8)
        if body_end >= 18:
            (snap.mem_size_mib,) = struct.unpack_from("<Q", data, 10)
    elif low == 0:
        _parse_semver_eras(snap, data, body_end)
    else:
        snap.format_version = low
    return snap


def _parse_semver_eras(snap: Snapfile, data: bytes, body_end: int) -> None:
    if body_end >= 16:
        (length,) = struct.unpack_from("<Q", data, 8)
        if 5 <= length <= 64 and 16 + length <= body_end:
            text = data[16:16 + length]
            if _SEMVER.fullmatch(text):
                snap.era, snap.snapshot_version = "bincode", text.decode()
                snap.state_offset = 16 + length
                if body_end >= 24 + length:
                    (snap.mem_size_mib,) = struct.unpack_from("<Q", data, 16 + length)
                return
    snap.era = "bitcode"
    # Bitcode packs the rest; an unpacked ASCII semver near the start is a guess worth reporting as such.
    found = _SEMVER.search(data[8:min(body_end, 72)])
    if found:
        snap.snapshot_version, snap.version_certain = found.group().decode(), False
    else:
        snap.version_certain = False


def snapshot_version_of(fc: tuple[int, int, int]) -> str | None:
    """The SNAPSHOT_VERSION a Firecracker release writes and reads (v1.7+), or ``None``."""
    if fc[:2] == (1, 10) and fc[2] >= 1:
        return SNAPSHOT_VERSION[(1, 10, 1)]
    return SNAPSHOT_VERSION.get(fc[:2])


def writers_of(snapshot_version: str) -> str:
    """Which Firecracker lines write ``snapshot_version`` (for messages)."""
    lines = sorted({f"v{k[0]}.{k[1]}" + (f".{k[2]}+" if len(k) == 3 else "") for k, v in SNAPSHOT_VERSION.items()
                    if v == snapshot_version})
    return " / ".join(lines) if lines else "no known release"


def era_of(fc: tuple[int, int, int]) -> Era:
    """The snapfile format a Firecracker release reads and writes."""
    if fc[:2] < FIRST_BINCODE:
        return "versionize"
    return "bincode" if fc[:2] < FIRST_BITCODE else "bitcode"


def _semver(text: str) -> tuple[int, int, int]:
    major, minor, patch = (int(x) for x in text.split("."))
    return major, minor, patch


def crc_failure_text(snap: Snapfile, fc: tuple[int, int, int] | None) -> str:
    """The mismatch as the loading Firecracker words it (src/vmm/src/snapshot/mod.rs, SnapshotError::Crc64)."""
    detail = f"computed {snap.computed_crc}, stored {snap.stored_crc}; file corrupt or truncated"
    if fc is None:
        return (f"CRC64 validation failed: {snap.computed_crc} (stored {snap.stored_crc}; file corrupt or "
                "truncated; Firecracker up to v1.13 prints this number, v1.14+ prints no number)")
    if fc[:2] < (1, 0):
        return f"Cannot deserialize MicrovmState: Crc64({snap.computed_crc}) ({detail})"
    if fc[:2] < (1, 2):
        return f"Cannot deserialize the microVM state: Crc64({snap.computed_crc}) ({detail})"
    if fc[:2] < FIRST_CRC_WITHOUT_NUMBER:
        return f"CRC64 validation failed: {snap.computed_crc} (stored {snap.stored_crc}; file corrupt or truncated)"
    # v1.14+ read the whole file, decode it, then check crc64(0, file) == 0, and SnapshotError::Crc64 carries no
    # value: the log has no number to match, and a corruption may surface first as a decode error.
    return (f"CRC64 validation failed (Firecracker v1.14+ prints no number, so there is none to match in its "
            f"log; {detail}; it decodes the state before checking the CRC, so the load may fail on a decode "
            "error instead)")


def check_snapfile(data: bytes, *, firecracker_version: str | None = None, arch: str | None = "x86_64",
                   memfile_size: int | None = None, guest_memory_bytes: int | None = None) -> SnapshotReport:
    """Every offline check of a snapfile, in Firecracker's own order where it matters.

    ``memfile_size`` is the full guest-memory size the memfile provides (the memfile
    itself, or its header's size); ``guest_memory_bytes`` is the expected RAM when the
    snapfile does not say (bitcode era), e.g. from the metadata.
    """
    snap = parse_snapfile(data)
    report = SnapshotReport(snap)
    add = report.issues.append
    if snap.size < CRC_BYTES:
        add(Issue("FAIL", "size", f"{snap.size} bytes: Snapshot file is smaller than CRC length (truncated)"))
        return report
    named = read_firecracker_version(firecracker_version) if firecracker_version else None
    fc = parse_firecracker_version(firecracker_version) if firecracker_version else None
    _check_size(snap, fc, add)
    if snap.crc_ok:
        add(Issue("ok", "crc", f"CRC64 {snap.stored_crc} matches"))
    else:
        add(Issue("FAIL", "crc", crc_failure_text(snap, fc)))
    if snap.magic is None:
        add(Issue("FAIL", "magic", f"{snap.size} bytes: too short to hold a snapshot header"))
        return report
    if snap.arch is None:
        add(Issue("FAIL", "magic", f"not a Firecracker snapshot: magic {snap.magic:#018x}"))
        return report
    if arch is not None and snap.arch != arch:
        add(Issue("FAIL", "arch", f"Magic value does not match arch: {snap.magic} "
                                  f"(snapshot is {snap.arch}, metadata/host says {arch})"))
    if snap.format_version not in (None, 1):
        add(Issue("FAIL", "version", f"Invalid format version: {snap.format_version}"))
        return report
    _check_version(snap, firecracker_version, fc, named, add)
    if memfile_size is not None:
        report.issues.extend(check_memory(snap, guest_memory(snap, guest_memory_bytes), device_bytes=memfile_size,
                                          device=MEMFILE))
    return report


def _check_size(snap: Snapfile, fc: tuple[int, int, int] | None, add: AddIssue) -> None:
    """The size rule of the Firecracker that loads it (of the file's own era when that is not known)."""
    loader = era_of(fc) if fc is not None and fc[:2] >= (0, 23) else snap.era
    if loader == "bitcode" and snap.size > MAX_SNAPFILE_BYTES:
        add(Issue("FAIL", "size", f"{snap.size} bytes: Snapshot size exceeds limit of {MAX_SNAPFILE_BYTES} bytes "
                                  f"(Firecracker v1.15+ reads at most {MAX_SNAPFILE_BYTES + 1:,} bytes of a snapfile "
                                  f"and refuses more than {MAX_SNAPFILE_BYTES:,})"))
    elif loader == "bincode" and snap.era == "bincode" and (snap.state_bytes or 0) > MAX_DECODED_STATE_BYTES:
        add(Issue("FAIL", "size", f"the state is {snap.state_bytes} bytes, over the 10 MiB ({MAX_DECODED_STATE_BYTES} "
                                  "bytes) that Firecracker v1.7-v1.14 decode for it (the cap is bincode's limit on "
                                  "the decoded state, not on the file): the load fails with a decode error"))


def _check_version(snap: Snapfile, firecracker_version: str | None, fc: tuple[int, int, int] | None,
                   named: FirecrackerVersion | None, add: AddIssue) -> None:
    era_text = f"{snap.era} era, {snap.version_label}"
    if fc is None:
        add(Issue("warn", "version", f"{era_text}; Firecracker version "
                                     f"{firecracker_version or '(none)'} not understood, compatibility not checked"))
        return
    fc_name = f"Firecracker {named.name}" if named is not None and named.form == "e2b" else \
        f"Firecracker v{fc[0]}.{fc[1]}.{fc[2]}"
    if fc[:2] < (0, 23):
        add(Issue("FAIL", "version", f"{fc_name} predates snapshots (v0.23)"))
        return
    if fc[:2] > LAST_KNOWN:
        add(Issue("warn", "version", f"{era_text}; {fc_name} is newer than this tool knows "
                                     f"(v{LAST_KNOWN[0]}.{LAST_KNOWN[1]}): not checked"))
        return
    want = era_of(fc)
    if snap.era != want:
        add(Issue("FAIL", "version", f"{era_text}, but {fc_name} reads only {want}-era snapshots "
                                     "(cross-era loads always fail)"))
        return
    if snap.era == "versionize":
        own = VERSIONIZE_DATA_VERSION[fc[:2]]
        ok = snap.data_version is not None and 1 <= snap.data_version <= own
        add(Issue("ok" if ok else "FAIL", "version",
                  f"{era_text}; {fc_name} loads data versions 1-{own}" if ok else
                  f"Invalid data version: {snap.data_version}; {fc_name} loads data versions 1-{own}"))
        return
    fc_snap = snapshot_version_of(fc)
    if snap.snapshot_version is None or fc_snap is None:
        add(Issue("warn", "version", f"{era_text}; cannot tell whether {fc_name} loads it"))
        return
    have, can = _semver(snap.snapshot_version), _semver(fc_snap)
    loadable = have[0] == can[0] and have[1] <= can[1]
    guess = "" if snap.version_certain else " (version read best-effort from bit-packed data)"
    if loadable:
        add(Issue("ok", "version", f"{era_text}; {fc_name} reads {fc_snap}{guess}"))
    elif named is not None and named.form == "e2b" and snap.snapshot_version in E2B_FORK_UPGRADES.get(fc[:2], ()):
        add(Issue("warn", "version", f"{era_text} (written by {writers_of(snap.snapshot_version)}); {fc_name} writes "
                                     f"{fc_snap}: E2B's fork of this line converts {snap.snapshot_version} snapshots "
                                     "on load (e2b-dev/firecracker src/vmm/src/persist/), upstream Firecracker "
                                     "would refuse it; not known for every fork release"))
    else:
        add(Issue("FAIL" if snap.version_certain else "warn", "version",
                  f"Invalid data version: {snap.snapshot_version} (written by {writers_of(snap.snapshot_version)}); "
                  f"{fc_name} reads {fc_snap} (same major, minor not newer){guess}"))


@dataclass(frozen=True)
class GuestMemory:
    """The guest RAM a snapshot needs, and where that figure comes from (for messages)."""

    bytes: int
    source: str


def guest_memory(snap: Snapfile | None, metadata_bytes: int | None) -> GuestMemory | None:
    """The snapfile's ``mem_size_mib`` where its era has it at a fixed place, else the metadata's figure."""
    if snap is not None and snap.mem_size_mib is not None:
        return GuestMemory(snap.mem_size_mib << 20, f"the snapfile's mem_size_mib {snap.mem_size_mib}")
    if metadata_bytes is not None:
        return GuestMemory(metadata_bytes, f"the metadata's RAM size {metadata_bytes >> 20} MiB")
    return None


def check_memory(snap: Snapfile | None, memory: GuestMemory | None, *, device_bytes: int,
                 device: str) -> list[Issue]:
    """The guest memory a memfile provides (``device``: "memfile" or "memfile.header size") against the RAM."""
    if memory is None:
        era = snap.era if snap is not None else "no snapfile"
        return [Issue("warn", "memfile", f"{device} {device_bytes} bytes; guest memory size unknown ({era}: "
                                         "not in a readable place, and no RAM size in the metadata): size not checked")]
    expected, source = memory.bytes, memory.source
    if device_bytes == expected:
        return [Issue("ok", "memfile", f"{device} {device_bytes} bytes = {source}")]
    if device_bytes < expected:
        return [Issue("FAIL", "memfile", f"{device} {device_bytes} bytes is {expected - device_bytes} bytes shorter "
                                         f"than {source} ({expected} bytes): guest memory past the end is missing")]
    if snap is None or _may_hotplug(snap):
        return [Issue("warn", "memfile", f"{device} {device_bytes} bytes is {device_bytes - expected} bytes longer "
                                         f"than {source} ({expected} bytes): fine only if the VM had virtio-mem "
                                         "hotplug memory (Firecracker v1.14+), else it belongs to another snapshot")]
    return [Issue("FAIL", "memfile", f"{device} {device_bytes} bytes is {device_bytes - expected} bytes longer than "
                                     f"{source} ({expected} bytes): Firecracker writes it exactly; it probably "
                                     "belongs to another snapshot")]


LOCAL_STORAGE_CAUSE = ("the build was marked uploaded before its memfile.header was written (e2b-dev/infra#3226, "
                       "#3248, STORAGE_PROVIDER=Local)")


def check_headerless_memfile(snap: Snapfile | None, memory: GuestMemory | None, *,
                             memfile_bytes: int | None) -> Issue:
    """A memfile without memfile.header: always a failure here, with upstream's own verdict stated.

    Upstream (NewStorage, packages/orchestrator/pkg/sandbox/template/storage.go) falls back to a header of
    the memfile's own size with 2 MiB blocks, mapped 1:1. For a diff layer (the dirty blocks only, all
    E2B writes since 2025) guest memory past the file's end is then missing.
    """
    size = f"memfile {memfile_bytes} bytes" if memfile_bytes is not None else "memfile (stored compressed)"
    if memory is None:
        era = snap.era if snap is not None else "no snapfile"
        judged = (f"{size}; the guest memory size is unknown ({era}, no RAM size in the metadata), so whether "
                  "it holds all of it is not known either")
    elif memfile_bytes is not None and memfile_bytes < memory.bytes:
        share = memfile_bytes * 100 // memory.bytes if memory.bytes else 0
        judged = (f"{size} against {memory.bytes} bytes of guest memory ({memory.source}; {share}% of it): "
                  "it holds the dirty blocks of a diff layer, which only the header places; upstream maps the "
                  "file 1:1 as a device of its own size, so guest memory past it is missing and every create "
                  "fails once the orchestrator's cache entry expires (failed to get snapfile, object does not "
                  "exist, sandbox files not found)")
    else:
        judged = (f"{size} covers the {memory.bytes} bytes of guest memory ({memory.source}): upstream's "
                  "headerless fallback would load it as an old-style build with 2 MiB blocks, but E2B writes "
                  "memfile.header for every snapshot, so a missing one means the upload did not finish")
    return Issue("FAIL", MEMFILE_HEADER, f"{MEMFILE_HEADER} missing: {LOCAL_STORAGE_CAUSE}; {judged}")


def _may_hotplug(snap: Snapfile) -> bool:
    """Snapshots of Firecracker v1.14+ may add virtio-mem hotplug memory to the memfile (unverified upstream)."""
    if snap.era == "bitcode":
        return True
    return snap.snapshot_version is not None and _semver(snap.snapshot_version) >= (8, 0, 0)
