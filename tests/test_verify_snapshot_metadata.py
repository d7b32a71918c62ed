"""verify on the builds a 2026 cluster writes: the Local-storage missing header (e2b-dev/infra#3226, #3248),
filesystem-only builds, and the newer metadata fields, on real builds made by `build`."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from e2b_artifacts import manifest, verify
from e2b_artifacts.clone import clone
from e2b_artifacts.findings import Fix
from e2b_artifacts.settings import Settings
from tests.conftest import cli, sample_build
from tests.verify.craft import memfile_header, snapfile

BUILD_ID = "8a3c2f10-6b4e-4d7a-9e1f-2c3b4a5d6e7f"
MIB = 1 << 20
REPORTED_MEMFILE = 241_172_480  # e2b-dev/infra#3226: "mappingEnd: 241172480", the memfile of a 2 GiB VM


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return sample_build(tmp_path_factory.mktemp("built"), BUILD_ID)


@dataclass
class Build:
    dir: Path
    settings: Settings
    vars: dict[str, str]

    def metadata(self) -> dict[str, Any]:
        doc = json.loads((self.dir / "metadata.json").read_text())
        assert isinstance(doc, dict)
        return doc

    def set_metadata(self, doc: dict[str, Any]) -> None:
        (self.dir / "metadata.json").write_text(json.dumps(doc))
        manifest.write_manifest(self.dir, BUILD_ID)

    def findings(self) -> list[tuple[str, str, str, str]]:
        report = verify(self.dir, self.settings, quick=True)
        return [(f.check, f.status, f.message, f.hint) for f in report.findings]


@pytest.fixture
def fresh(tmp_path: Path, built: Path) -> Build:
    storage = tmp_path / "templates"
    storage.mkdir()
    subprocess.run(["cp", "-a", "--sparse=always", str(built), str(storage)], check=True)
    flags = {"LOCAL_TEMPLATE_STORAGE_BASE_PATH": str(storage), "TEMPLATE_CACHE_DIR": str(tmp_path / "tc"),
             "SHARED_CHUNK_CACHE_PATH": str(tmp_path / "chunks"), "HOST_KERNELS_DIR": str(tmp_path / "nk"),
             "FIRECRACKER_VERSIONS_DIR": str(tmp_path / "nf")}
    return Build(storage / BUILD_ID, Settings(flags=flags, env={}), flags)


def _e2b_2026(build: Build, **fields: Any) -> dict[str, Any]:
    """The build's metadata as a HEAD cluster writes it: Firecracker v1.14.1_431f1fc, a 2 GiB guest."""
    doc = build.metadata()
    doc["template"]["firecracker_version"] = "v1.14.1_431f1fc"
    doc["e2b_artifact"]["ram_mb"] = 2048
    doc.update(fields)
    return doc


def test_local_storage_build_without_memfile_header_fails_naming_the_cause(fresh: Build) -> None:
    """#3248: memfile written, memfile.header never, build marked uploaded. The memfile is the 241 MB diff
    of a 2048 MiB guest (sparse here); the v1.14 snapfile (8.0.0) says mem_size_mib 2048."""
    fresh.set_metadata(_e2b_2026(fresh))
    (fresh.dir / "snapfile").write_bytes(snapfile("bincode", version="8.0.0", mem_mib=2048))
    with (fresh.dir / "memfile").open("wb") as fh:
        fh.truncate(REPORTED_MEMFILE)
    manifest.write_manifest(fresh.dir, BUILD_ID)
    proc = cli("verify", fresh.dir, env=fresh.vars)
    print(proc.stdout)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("FAIL snapshot.memfile.header: "))
    assert "memfile.header missing: the build was marked uploaded before its memfile.header was written " \
           "(e2b-dev/infra#3226, #3248, STORAGE_PROVIDER=Local)" in line
    assert "memfile 241172480 bytes against 2147483648 bytes of guest memory (the snapfile's mem_size_mib 2048; " \
           "11% of it)" in line and "guest memory past it is missing" in line
    assert f"hint: the memfile is unusable without its header (where each block belongs is lost): e2b-artifact " \
           f"cold-start {BUILD_ID} --filesystem-only" in proc.stdout and "e2b-dev/infra#3248" in proc.stdout
    report = verify(fresh.dir, fresh.settings, quick=True)
    assert {f.fix for f in report.findings if f.check == "snapshot.memfile.header"} == {Fix.SNAPSHOT_QUARANTINE}

    # the same memfile with the header the upload should have written: the diff layer is complete
    (fresh.dir / "memfile.header").write_bytes(memfile_header(BUILD_ID, 2048 * MIB, data_bytes=REPORTED_MEMFILE))
    manifest.write_manifest(fresh.dir, BUILD_ID)
    found = fresh.findings()
    assert not [f for f in found if f[1] == "FAIL"], found
    assert ("snapshot.memfile", "ok", "memfile.header size 2147483648 bytes = the snapfile's mem_size_mib 2048",
            "") in found


def test_filesystem_only_build_passes_with_no_snapshot_warning(fresh: Build) -> None:
    fresh.set_metadata(_e2b_2026(fresh, filesystem_only=True, fs_quiesced=True))
    proc = cli("verify", fresh.dir, env=fresh.vars)
    print(proc.stdout)
    assert proc.returncode == 0, proc.stdout
    assert "ok   snapshot: filesystem-only build (metadata filesystem_only: true): no memfile or snapfile needed, " \
           "sandboxes cold-boot from rootfs" in proc.stdout
    assert not [ln for ln in proc.stdout.splitlines() if ln.startswith(("warn snapshot", "FAIL snapshot"))]

    # without the flag the same build warns, as before
    doc = fresh.metadata()
    del doc["filesystem_only"], doc["fs_quiesced"]
    fresh.set_metadata(doc)
    assert ("snapshot", "warn", "no snapshot: sandboxes cold-boot from rootfs") in [f[:3] for f in fresh.findings()]


def test_filesystem_only_in_a_version_1_file_is_dropped_by_upstream(fresh: Build) -> None:
    doc = _e2b_2026(fresh, filesystem_only=True, version="v1")
    fresh.set_metadata(doc)
    fails = [f for f in fresh.findings() if f[1] == "FAIL"]
    assert [f[0] for f in fails] == ["metadata"]
    assert "filesystem_only: true, but upstream drops it with the rest of a version-1 file" in fails[0][2]
    assert "it drops filesystem_only too" in next(f[2] for f in fresh.findings() if f[1] == "warn"
                                                   and f[0] == "metadata")


def test_new_fields_checked_as_upstream_checks_them(fresh: Build) -> None:
    fresh.set_metadata(_e2b_2026(
        fresh, cmdline_args={"init": "/bin/sh", "mitigations": "off"}, fs_quiesced=True,
        cpu_template={"reg_modifiers": [{"addr": "0x1", "bitmap": "0b1"}], "x86_tsc_khz": 50},
        vcpu_count=4, balloon={"reporting": True, "hinting": False},
        prefetch={"memory": {"indices": [1, 2], "access_types": ["r"], "block_size": 4096}, "origin": "build"}))
    found = fresh.findings()
    by_check = {(c, s): m for c, s, m, _ in found}
    assert "reserved by the orchestrator: init (ValidateCmdlineArgs refuses the whole map, so none of its 2 " \
           "parameters is applied" in by_check["metadata.cmdline_args", "FAIL"]
    cpu = [m for c, s, m, _ in found if c == "metadata.cpu_template" and s == "FAIL"]
    assert any("sets reg_modifiers, which Firecracker supports only on aarch64 (the build is x86_64)" in m for m in cpu)
    assert any("x86_tsc_khz 50 is outside 100000-10000000 kHz" in m for m in cpu)
    warned = [m for c, s, m, _ in found if c == "metadata" and s == "warn"]
    assert any(m.startswith("vcpu_count 4 (the VM in the snapshot") and "e2b_artifact.vcpu 2" in m for m in warned)
    assert any(m.startswith("fs_quiesced: true without filesystem_only") for m in warned)
    assert "2 indices but 1 access types" in by_check["metadata.prefetch", "warn"]


def test_a_field_of_the_wrong_go_type_makes_the_file_undecodable(fresh: Build) -> None:
    fresh.set_metadata(_e2b_2026(fresh, vcpu_count="2", filesystem_only="yes", version=2.0))
    fails = [f for f in fresh.findings() if f[1] == "FAIL" and f[0] == "metadata"]
    assert len(fails) == 1 and "upstream's deserialize cannot decode it" in fails[0][2]
    for problem in ("cannot unmarshal number 2.0 into Template.version of type uint64",
                    "cannot unmarshal string into Template.vcpu_count of type int64",
                    "cannot unmarshal string into Template.filesystem_only of type bool"):
        assert problem in fails[0][2]


def test_ram_record_against_the_snapshot(fresh: Build) -> None:
    doc = _e2b_2026(fresh)
    doc["e2b_artifact"]["ram_mb"] = 512
    fresh.set_metadata(doc)
    (fresh.dir / "snapfile").write_bytes(snapfile("bincode", version="8.0.0", mem_mib=64))
    (fresh.dir / "memfile").write_bytes(b"")
    os.truncate(fresh.dir / "memfile", 64 * MIB)
    (fresh.dir / "memfile.header").write_bytes(memfile_header(BUILD_ID, 64 * MIB))
    manifest.write_manifest(fresh.dir, BUILD_ID)
    found = fresh.findings()
    assert ("snapshot.memory", "FAIL") in [f[:2] for f in found]
    assert "e2b_artifact.ram_mb 512 differs from the snapfile's mem_size_mib 64" in next(
        f[2] for f in found if f[0] == "snapshot.memory")
    assert ("snapshot.memfile", "ok") in [f[:2] for f in found]  # the memfile follows the snapfile, not the record


NEW_FIELDS = {"cmdline_args": {"mitigations": "off"}, "filesystem_only": True, "fs_quiesced": True,
              "prefetch": {"memory": {"indices": [3], "access_types": ["r"], "block_size": 4096}, "origin": "harvest"},
              "balloon": {"reporting": True, "hinting": True}, "cpu_template": {"kvm_capabilities": ["!56"]},
              "build_cpu_template": {"kvm_capabilities": ["!56"]}, "vcpu_count": 2}


def test_new_fields_survive_the_fix_rewrite_and_clone(fresh: Build, tmp_path: Path) -> None:
    doc = fresh.metadata()
    v1 = {"version": "v1", "template": doc["template"], "metadata": {"user": "user"}, **NEW_FIELDS}
    fresh.set_metadata(v1)
    fixed = verify(fresh.dir, fresh.settings, quick=True, fix=True)
    assert any(line.startswith("rewrote") for line in fixed.fixed), fixed.fixed
    rewritten = fresh.metadata()
    assert rewritten["version"] == 2 and {k: rewritten[k] for k in NEW_FIELDS} == NEW_FIELDS
    copy = clone(fresh.dir, fresh.dir.parent, build_id="c0ffee00-0000-4000-8000-000000000001")
    cloned = json.loads((copy.target / "metadata.json").read_text())
    assert {k: cloned[k] for k in NEW_FIELDS} == NEW_FIELDS and cloned["template"]["build_id"] == copy.build_id
    # an integer version above 2 is kept as it is on a rewrite, as SameVersionTemplate keeps it
    rewritten["version"] = 3
    fresh.set_metadata(rewritten)
    again = clone(fresh.dir, fresh.dir.parent, build_id="c0ffee00-0000-4000-8000-000000000002")
    assert json.loads((again.target / "metadata.json").read_text())["version"] == 3


def test_version_1_metadata_of_a_memory_snapshot_is_not_rewritten(fresh: Build) -> None:
    """The snapshot pins the rootfs path version 1 selects (runtime template_metadata.go, WithVcpuCount)."""
    doc = fresh.metadata()
    fresh.set_metadata({"version": "v1", "template": doc["template"]})
    (fresh.dir / "snapfile").write_bytes(snapfile("bincode", version="6.0.0", mem_mib=64))
    (fresh.dir / "memfile").write_bytes(b"")
    os.truncate(fresh.dir / "memfile", 64 * MIB)
    (fresh.dir / "memfile.header").write_bytes(memfile_header(BUILD_ID, 64 * MIB))
    manifest.write_manifest(fresh.dir, BUILD_ID)
    report = verify(fresh.dir, fresh.settings, quick=True)
    warn = next(f for f in report.findings if f.check == "metadata" and f.status == "warn")
    assert warn.fix == Fix.NONE and "pins the rootfs path that version 1 selects" in warn.hint
