"""verify on real builds (made by `build`): round trip, --fix, header chains, clone."""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from e2b_artifacts import header, manifest
from tests.conftest import cli, sample_build
from tests.kernels import test_kernel
from tests.verify.craft import add_snapshot, header_v1_3

BUILD_ID = "3f1c9a52-7d0e-4b6a-9c44-0e5d2b8f1a77"


@dataclass
class Env:
    storage: Path
    template_cache: Path
    chunk_cache: Path
    kernels: Path
    firecrackers: Path

    def vars(self) -> dict[str, str]:
        return {"LOCAL_TEMPLATE_STORAGE_BASE_PATH": str(self.storage), "TEMPLATE_CACHE_DIR": str(self.template_cache),
                "SHARED_CHUNK_CACHE_PATH": str(self.chunk_cache), "HOST_KERNELS_DIR": str(self.kernels),
                "FIRECRACKER_VERSIONS_DIR": str(self.firecrackers)}

    def run(self, *args: str | Path) -> tuple[int, str, dict[str, object] | None]:
        proc = cli(*args, env=self.vars())
        assert "Traceback" not in proc.stderr, proc.stderr
        doc = json.loads(proc.stdout) if "--json" in args and proc.stdout.strip() else None
        return proc.returncode, proc.stdout + proc.stderr, doc


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real build (rootfs + envd + metadata + manifest), copied per test."""
    storage = tmp_path_factory.mktemp("built")
    return sample_build(storage, BUILD_ID)


@pytest.fixture
def env(tmp_path: Path, built: Path) -> Iterator[Env]:
    e = Env(tmp_path / "templates", tmp_path / "orchestrator" / "template", tmp_path / "chunks",
            tmp_path / "no-kernels-here", tmp_path / "no-fc-here")
    e.storage.mkdir()
    subprocess.run(["cp", "-a", "--sparse=always", str(built), str(e.storage)], check=True)
    yield e


def tree_digest(*roots: Path) -> dict[str, str]:
    out = {}
    for root in roots:
        for p in sorted(root.rglob("*")):
            if p.is_file() and ".quarantine" not in p.parts:
                out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def statuses(doc: dict[str, object] | None) -> list[tuple[str, str, str]]:
    assert doc is not None
    findings = doc["findings"]
    assert isinstance(findings, list)
    return [(f["check"], f["status"], f["message"]) for f in findings]


def test_fresh_build_passes_with_warnings_only(env: Env) -> None:
    rc, out, doc = env.run("verify", BUILD_ID, "--json")
    assert rc == 0, out
    found = statuses(doc)
    assert not [f for f in found if f[1] == "FAIL"]
    checks = {c for c, s, _ in found if s == "ok"}
    assert {"rootfs.fsck", "rootfs.init", "rootfs.envd", "rootfs.mountpoints", "metadata", "manifest"} <= checks
    assert ("snapshot", "warn", "no snapshot: sandboxes cold-boot from rootfs") in found
    rc, out, _ = env.run("verify", BUILD_ID, "--strict")
    assert rc == 1 and "(strict) -> FAILED" in out


def test_corrupt_snapshot_round_trip(env: Env) -> None:
    bdir = env.storage / BUILD_ID
    add_snapshot(bdir, mem_mib=64)
    manifest.write_manifest(bdir, BUILD_ID)
    cache_entry = env.template_cache / BUILD_ID / "cache" / "0c9e" / "snapfile"
    chunk_entry = env.chunk_cache / BUILD_ID / "memfile" / "content.bin"
    for p in (cache_entry, chunk_entry):
        p.parent.mkdir(parents=True)
        p.write_bytes(b"cached " + p.name.encode())
    rc, out, _ = env.run("verify", BUILD_ID)
    assert rc == 0, out
    assert "ok   snapshot.memfile" in out and "ok   snapshot.crc" in out

    data = bytearray((bdir / "snapfile").read_bytes())
    data[100] ^= 0xFF
    (bdir / "snapfile").write_bytes(bytes(data))
    before = tree_digest(bdir, env.template_cache, env.chunk_cache)

    rc, out, _ = env.run("verify", BUILD_ID)
    assert rc == 1
    assert "FAIL snapshot.crc: CRC64 validation failed: " in out
    assert f"e2b-artifact cold-start {BUILD_ID}" in out
    assert "FAIL manifest: snapfile: hash differs" in out

    rc, out, doc = env.run("cold-start", BUILD_ID, "--dry-run", "--json")
    assert rc == 0 and doc is not None and doc["dry_run"] is True
    assert (bdir / "snapfile").exists() and cache_entry.exists()

    rc, out, _ = env.run("cold-start", BUILD_ID)
    assert rc == 0, out
    for moved in ("snapfile", "memfile"):
        assert f"{bdir / moved} -> " in out
    assert str(env.template_cache / BUILD_ID) in out and str(env.chunk_cache / BUILD_ID) in out
    assert "restart" in out
    restore_line = next(ln for ln in out.splitlines() if ln.startswith("undo: "))
    restore_cmd = restore_line.removeprefix("undo: ").split()
    assert restore_cmd[:3] == ["e2b-artifact", "restore", BUILD_ID]
    assert not (bdir / "snapfile").exists() and not (env.template_cache / BUILD_ID).exists()
    assert not (env.chunk_cache / BUILD_ID).exists()

    rc, out, _ = env.run("verify", BUILD_ID)
    assert rc == 0, out
    assert "warn snapshot: no snapshot: sandboxes cold-boot from rootfs" in out

    rc, out, _ = env.run(*restore_cmd[1:])
    assert rc == 0, out
    assert tree_digest(bdir, env.template_cache, env.chunk_cache) == before
    assert not (bdir / ".quarantine").exists()
    rc, out, _ = env.run("verify", BUILD_ID)
    assert rc == 1 and "CRC64 validation failed" in out  # the same corrupt file is back, as it was


def test_verify_fix_cold_starts_a_bad_snapshot(env: Env) -> None:
    bdir = env.storage / BUILD_ID
    add_snapshot(bdir, era="bincode", version="8.0.0", mem_mib=64)  # v1.13 format, metadata says v1.12
    manifest.write_manifest(bdir, BUILD_ID)
    rc, out, _ = env.run("verify", BUILD_ID)
    assert rc == 1 and "FAIL snapshot.version: Invalid data version: 8.0.0" in out
    rc, out, _ = env.run("verify", BUILD_ID, "--fix")
    assert rc == 0, out
    assert "fixed: snapshot quarantined in" in out and "e2b-artifact restore" in out
    assert not (bdir / "snapfile").exists() and not (bdir / "memfile").exists()


def test_camel_case_metadata_fix_keeps_the_original(env: Env) -> None:
    bdir = env.storage / BUILD_ID
    camel = {"buildID": BUILD_ID, "templateID": "tpl1", "kernelVersion": "vmlinux-6.1.102",
             "firecrackerVersion": "v1.12.1_d990331", "envdVersion": "0.2.0"}
    (bdir / "metadata.json").write_text(json.dumps(camel))
    manifest.update_manifest_entry(bdir, "metadata.json")
    rc, out, _ = env.run("verify", BUILD_ID)
    assert rc == 1 and "FAIL metadata: hand-written camelCase" in out and "verify --fix" in out
    rc, out, _ = env.run("verify", BUILD_ID, "--fix")
    assert rc == 0, out
    assert json.loads((bdir / "metadata.json.orig").read_text()) == camel
    doc = json.loads((bdir / "metadata.json").read_text())
    assert doc["version"] == 2 and doc["template"]["build_id"] == BUILD_ID
    assert doc["e2b_artifact"]["template_id"] == "tpl1"
    assert "ok   manifest" in out and "not listed" not in out  # the .orig backup is not an artifact


def test_completeness_problems(env: Env) -> None:
    bdir = env.storage / BUILD_ID
    (bdir / "memfile").write_bytes(b"\0" * 4096)  # without snapfile
    (bdir / ".metadata.json.x1y2.tmp").write_text("{")
    meta = json.loads((bdir / "metadata.json").read_text())
    meta["template"]["build_id"] = "other-id"
    (bdir / "metadata.json").write_text(json.dumps(meta))
    env.kernels.joinpath(meta["template"]["kernel_version"]).mkdir(parents=True)  # dir exists, vmlinux.bin not
    rc, _, doc = env.run("verify", BUILD_ID, "--json")
    assert rc == 1
    found = statuses(doc)
    fails = {(c, m.split(":")[0]) for c, s, m in found if s == "FAIL"}
    assert ("files", "memfile without snapfile") in fails
    assert any(c == "metadata" and "differs from the directory name" in m for c, s, m in found if s == "FAIL")
    assert any(c == "kernel" and "vmlinux.bin missing" in m for c, s, m in found if s == "FAIL")
    assert any(c == "files" and s == "warn" and ".metadata.json.x1y2.tmp" in m for c, s, m in found)  # moved aside
    assert any(c == "manifest" and m.startswith("metadata.json: ") and "differs" in m
               for c, s, m in found if s == "FAIL")
    assert any(c == "firecracker" and s == "warn" for c, s, _ in found)


def test_missing_directory_is_a_clean_error(env: Env) -> None:
    rc, out, _ = env.run("verify", "no-such-build")
    assert rc == 3 and "error: build directory" in out and "hint:" in out


PARENT = str(uuid.UUID(int=0xFEED))
V3_READ = "uncompressed per LoadHeader's backfill"  # serialization.go backfillMissingV3UncompressedBuilds
MIB = 1 << 20


def test_chain_with_missing_then_short_parent(env: Env) -> None:
    bdir = env.storage / BUILD_ID
    add_snapshot(bdir, mem_mib=64)
    (bdir / "memfile.header").write_bytes(header_v1_3(
        size=64 * MIB, generation=1, build_id=BUILD_ID, base_build_id=PARENT,
        mappings=[(0, 32 * MIB, PARENT, 0), (32 * MIB, 32 * MIB, BUILD_ID, 0)]))
    manifest.write_manifest(bdir, BUILD_ID)
    rc, out, _ = env.run("verify", BUILD_ID)
    assert rc == 1
    # The chain view names each link's header version and how upstream reads it (a v3 header: all uncompressed).
    assert f"FAIL header.memfile: chain of memfile: v3 generation 1 {BUILD_ID} <- {PARENT} ({V3_READ}): MISSING" in out
    assert f"parent {PARENT}: upstream opens {env.storage / PARENT / 'memfile'} ({V3_READ}): missing" in out

    parent = env.storage / PARENT
    parent.mkdir()
    (parent / "memfile").write_bytes(b"\1" * (16 * MIB))  # mappings need 32 MiB
    (parent / "memfile.header").write_bytes(header_v1_3(size=64 * MIB, build_id=PARENT))
    rc, out, _ = env.run("verify", BUILD_ID)
    assert rc == 1 and f"{PARENT} (v3 generation 0, {V3_READ}): short" in out and "mappings need 33554432" in out

    os.truncate(parent / "memfile", 32 * MIB)
    rc, out, _ = env.run("verify", BUILD_ID)
    assert rc == 0, out
    assert f"ok   header.memfile: chain of memfile: v3 generation 1 {BUILD_ID} <- {PARENT} (v3 generation 0, " \
           f"{V3_READ}): ok, this build (v3 generation 1, {V3_READ}): ok" in out
    assert "ok   snapshot.memfile: memfile.header size 67108864 bytes" in out  # header size used for guest memory


def test_overlapping_mappings_in_a_build(env: Env) -> None:
    bdir = env.storage / BUILD_ID
    (bdir / "rootfs.ext4.header").write_bytes(header_v1_3(
        size=8 * 4096, build_id=BUILD_ID, mappings=[(0, 6 * 4096, BUILD_ID, 0), (4 * 4096, 4 * 4096, BUILD_ID, 0)]))
    rc, out, _ = env.run("verify", BUILD_ID)
    assert rc == 1 and "FAIL header.rootfs.ext4: v3" in out and "overlaps the previous mapping" in out


def test_clone_rewrites_ids_and_verifies(env: Env) -> None:
    bdir = env.storage / BUILD_ID
    add_snapshot(bdir, mem_mib=64)
    (bdir / "memfile.header").write_bytes(header_v1_3(size=64 * MIB, build_id=BUILD_ID,
                                                      mappings=[(0, 64 * MIB, BUILD_ID, 0)]))
    manifest.write_manifest(bdir, BUILD_ID)
    new_id = str(uuid.UUID(int=0xC10E))
    rc, out, doc = env.run("clone", BUILD_ID, "--build-id", new_id, "--template-id", "tpl-copy", "--json")
    assert rc == 0, out
    assert doc is not None and doc["verify"]["ok"] is True  # type: ignore[index]
    copy = env.storage / new_id
    meta = json.loads((copy / "metadata.json").read_text())
    assert meta["template"]["build_id"] == new_id and meta["e2b_artifact"]["template_id"] == "tpl-copy"
    hdr = header.read_header(copy / "memfile.header")
    assert hdr.build_id == new_id and hdr.base_build_id == new_id and hdr.referenced_build_ids() == [new_id]
    for name in ("rootfs.ext4", "memfile", "snapfile"):
        assert (copy / name).read_bytes() == (bdir / name).read_bytes()
    src, dst = (bdir / "rootfs.ext4").stat(), (copy / "rootfs.ext4").stat()
    assert src.st_blocks * 512 < src.st_size // 4  # the source is sparse ...
    assert dst.st_blocks * 512 <= src.st_blocks * 512 + (64 << 10)  # ... and its holes stayed holes
    assert manifest.load_manifest(copy) is not None and manifest.check_manifest(copy, quick=False) == []
    rc, out, _ = env.run("clone", BUILD_ID, "--build-id", new_id)
    assert rc == 6 and "already exists" in out


def test_kernel_and_firecracker_present_and_kernel_arch_used_for_envd(env: Env) -> None:
    meta = json.loads((env.storage / BUILD_ID / "metadata.json").read_text())["template"]
    kernel = env.kernels / meta["kernel_version"] / "vmlinux.bin"
    firecracker = env.firecrackers / meta["firecracker_version"] / "firecracker"
    for p in (kernel, firecracker):
        p.parent.mkdir(parents=True)
    image = bytearray(64)
    image[0x38:0x3C] = b"ARM\x64"  # an arm64 Image header
    kernel.write_bytes(bytes(image))
    firecracker.write_bytes(b"\x7fELF")
    rc, _, doc = env.run("verify", BUILD_ID, "--json")
    assert rc == 1
    found = statuses(doc)
    assert ("kernel", "ok", f"{kernel} present") in found
    assert ("firecracker", "ok", f"{firecracker} present") in found
    assert ("kernel.format", "FAIL", "arm64 Image for aarch64; the guest is x86_64") in found
    assert any(c == "rootfs.envd" and s == "FAIL" and "x86_64 ELF; the kernel is aarch64" in m for c, s, m in found)


@pytest.mark.parametrize(("firecracker", "status"), [("v1.14.1_431f1fc", "FAIL"), ("v1.17.0", "ok")])
def test_verify_judges_a_bzimage_kernel_by_the_builds_firecracker(env: Env, firecracker: str, status: str) -> None:
    """Firecracker boots a bzImage on x86_64 from 1.17 (PR #6037); verify reads the version from metadata.json."""
    bdir = env.storage / BUILD_ID
    doc = json.loads((bdir / "metadata.json").read_text())
    doc["template"]["firecracker_version"] = firecracker
    (bdir / "metadata.json").write_text(json.dumps(doc))
    manifest.write_manifest(bdir, BUILD_ID)
    kernel = env.kernels / doc["template"]["kernel_version"] / "amd64" / "vmlinux.bin"  # the arch layout
    kernel.parent.mkdir(parents=True)
    shutil.copyfile(test_kernel("cmdline-ikconfig").bzimage, kernel)
    rc, out, report = env.run("verify", BUILD_ID, "--json")
    found = statuses(report)
    formats = [(s, m) for c, s, m in found if c == "kernel.format"]
    assert [s for s, _ in formats] == [status], out
    assert rc == (1 if status == "FAIL" else 0), out
    assert ("bzImage boot arrived in v1.17" if status == "FAIL" else f"Firecracker {firecracker} boots a bzImage") \
        in formats[0][1]
    assert any(c == "kernel.support" and s == "warn" for c, s, _ in found)  # 6.1: past 2026-09-02, a warning only
    assert not [c for c, s, _ in found if s == "FAIL" and c.startswith("kernel") and c != "kernel.format"], out


def test_packed_rootfs_diff_is_checked_as_the_assembled_device(env: Env) -> None:
    """An upstream-style layer: rootfs.ext4 holds only this layer's blocks, the rest maps to a parent or to zeros."""
    bdir = env.storage / BUILD_ID
    image = (bdir / "rootfs.ext4").read_bytes()
    blocks = len(image) // 4096
    last_used = max(i for i in range(blocks) if image[i * 4096:(i + 1) * 4096].strip(b"\0"))
    half = (last_used // 2) * 4096
    end_used = (last_used + 1) * 4096
    parent = env.storage / PARENT
    parent.mkdir()
    (parent / "rootfs.ext4").write_bytes(image[:half])
    (bdir / "rootfs.ext4").write_bytes(image[half:end_used])  # packed: no zero tail
    (bdir / "rootfs.ext4.header").write_bytes(header_v1_3(
        size=len(image), generation=1, build_id=BUILD_ID, base_build_id=PARENT,
        mappings=[(0, half, PARENT, 0), (half, end_used - half, BUILD_ID, 0),
                  (end_used, len(image) - end_used, header.NIL_BUILD, 0)]))
    manifest.write_manifest(bdir, BUILD_ID)
    rc, out, _ = env.run("verify", BUILD_ID)
    assert rc == 0, out
    assert "ok   rootfs: rootfs.ext4 is a diff layer: checked the device assembled from 3 mappings over 2 build(s)" \
        in out
    assert "ok   rootfs.fsck: e2fsck -fn: clean" in out and "ok   rootfs.envd" in out

    (parent / "rootfs.ext4").unlink()
    rc, out, _ = env.run("verify", BUILD_ID)
    assert rc == 1 and "warn rootfs: rootfs.ext4 is a diff layer and the device cannot be assembled" in out
    assert f"FAIL header.rootfs.ext4: chain of rootfs.ext4: v3 generation 1 {BUILD_ID} <- {PARENT} ({V3_READ}): " \
           "MISSING" in out


def test_v1_metadata_warns_and_fix_rewrites_it(env: Env) -> None:
    bdir = env.storage / BUILD_ID
    v1 = {"version": "v1", "template": {"template_id": "tpl9", "build_id": BUILD_ID,
                                        "kernel_version": "vmlinux-6.1.102", "firecracker_version": "v1.12.1_d990331"},
          "metadata": {"user": "user", "workdir": "/home/user"}}
    (bdir / "metadata.json").write_text(json.dumps(v1))
    manifest.update_manifest_entry(bdir, "metadata.json")
    rc, out, _ = env.run("verify", BUILD_ID)
    assert rc == 0 and 'warn metadata: version "v1"' in out
    rc, out, _ = env.run("verify", BUILD_ID, "--fix", "--strict")
    assert "fixed: rewrote" in out and 'version "v1"' not in out
    doc = json.loads((bdir / "metadata.json").read_text())
    assert doc["version"] == 2 and doc["context"] == {"user": "user", "workdir": "/home/user"}
    assert json.loads((bdir / "metadata.json.orig").read_text()) == v1


def test_dangling_rootfs_link_is_reported_not_a_crash(env: Env) -> None:
    bdir = env.storage / BUILD_ID
    (bdir / "rootfs.ext4").unlink()
    (bdir / "rootfs.ext4").symlink_to("/nonexistent/rootfs.ext4")
    rc, out, _ = env.run("verify", BUILD_ID)
    assert rc == 1
    assert "FAIL files: rootfs.ext4 is not a regular file" in out
    assert "FAIL manifest: rootfs.ext4: listed in artifact-manifest.json but is not a regular file" in out


def test_cold_start_killed_at_random_points_verifies_or_restores(env: Env, tmp_path: Path) -> None:
    """30 SIGKILLs of a real cold-start: afterwards verify passes, or restore completes and then it passes;
    the snapshot's bytes are never lost (in the build or in the quarantine)."""
    bdir = env.storage / BUILD_ID
    add_snapshot(bdir, mem_mib=64)
    manifest.write_manifest(bdir, BUILD_ID)
    pristine = tmp_path / "pristine"
    subprocess.run(["cp", "-a", "--sparse=always", str(bdir), str(pristine)], check=True)
    originals = {n: hashlib.sha256((pristine / n).read_bytes()).hexdigest() for n in ("memfile", "snapfile")}
    argv = [sys.executable, "-m", "e2b_artifacts", "cold-start", BUILD_ID]
    environ = {**os.environ, **env.vars()}
    started = time.monotonic()
    subprocess.run(argv, env=environ, check=True, capture_output=True)
    full_run = time.monotonic() - started
    rng = random.Random(1234)
    restored = interrupted = 0
    for i in range(30):
        shutil.rmtree(bdir)
        subprocess.run(["cp", "-a", "--sparse=always", str(pristine), str(bdir)], check=True)
        child = subprocess.Popen(argv, env=environ, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if i % 2:  # anywhere in the run
            time.sleep(rng.uniform(0.3, 1.05) * full_run)
        else:  # inside the moves: from the moment the record appears, 0-4 ms later
            deadline = time.monotonic() + 10
            while not list(bdir.glob(".quarantine/*/quarantine.json")) and child.poll() is None \
                    and time.monotonic() < deadline:
                time.sleep(0.0005)
            time.sleep(rng.uniform(0, 0.004))
        child.send_signal(signal.SIGKILL)
        child.wait()
        found: dict[str, set[str]] = {}
        for name in originals:
            for p in [q for q in [bdir / name, *bdir.glob(f".quarantine/*/{name}")] if q.is_file()]:
                found.setdefault(name, set()).add(hashlib.sha256(p.read_bytes()).hexdigest())
        assert found == {n: {h} for n, h in originals.items()}, i  # nothing lost
        states = [json.loads(r.read_text()).get("state") for r in bdir.glob(".quarantine/*/quarantine.json")]
        interrupted += states == ["moving"]
        rc, out, _ = env.run("verify", BUILD_ID)
        if rc != 0:
            records = list(bdir.glob(".quarantine/*/quarantine.json"))
            assert len(records) == 1, (i, out)
            rrc, rout, _ = env.run("restore", BUILD_ID, records[0].parent.name)
            assert rrc == 0, (i, rout)
            restored += 1
            rc, out, _ = env.run("verify", BUILD_ID)
            assert rc == 0, (i, out)
    print(f"30 kills: {interrupted} inside the cold start, {restored} left a build that needed restore, "
          f"{30 - restored} verified as left")
    assert interrupted > 0  # the kills did land between the steps, not only before or after


def _flip_a_data_byte(image: Path) -> None:
    """One byte inside a file's data in the image (the first data extent past the first 1 MiB)."""
    with image.open("r+b") as fh:
        offset = os.lseek(fh.fileno(), 1 << 20, os.SEEK_DATA)
        fh.seek(offset + 100)
        byte = fh.read(1)
        fh.seek(offset + 100)
        fh.write(bytes([byte[0] ^ 0xFF]))


def test_clone_never_blesses_a_source_its_manifest_rejects(env: Env) -> None:
    bdir = env.storage / BUILD_ID
    _flip_a_data_byte(bdir / "rootfs.ext4")
    rc, out, _ = env.run("verify", BUILD_ID)
    assert rc == 1 and "rootfs.ext4: hash differs" in out, out
    new_id = str(uuid.UUID(int=0xBAD))
    before = sorted(p.name for p in env.storage.iterdir())
    rc, out, _ = env.run("clone", BUILD_ID, "--build-id", new_id)
    assert rc == 8 and "does not match its artifact-manifest.json" in out and "nothing copied" in out, out
    assert sorted(p.name for p in env.storage.iterdir() if not p.name.endswith(".lock")) == \
        [p for p in before if not p.endswith(".lock")]  # no copy, no staging left
    rc, out, doc = env.run("clone", BUILD_ID, "--build-id", new_id, "--force", "--json")
    assert rc == 1, out  # copied, and the copy fails verify the way its source does
    assert doc is not None and doc["warnings"], doc
    findings = doc["verify"]["findings"]  # type: ignore[index]
    assert any(f["check"] == "clone" and f["status"] == "warn" for f in findings)
    assert any(f["check"] == "manifest" and f["status"] == "FAIL" and "rootfs.ext4" in f["message"]
               for f in findings)  # the source's recorded hash was carried, not recomputed from the bad bytes
    src_entry = manifest.load_manifest(bdir).files["rootfs.ext4"]  # type: ignore[union-attr]
    assert manifest.load_manifest(env.storage / new_id).files["rootfs.ext4"] == src_entry  # type: ignore[union-attr]


def test_clone_refuses_a_layer_whose_manifest_records_another_size(env: Env) -> None:
    bdir = env.storage / BUILD_ID
    add_snapshot(bdir, mem_mib=64)
    manifest.write_manifest(bdir, BUILD_ID)
    with (bdir / "memfile").open("ab") as fh:
        fh.write(b"\0" * 4096)  # the layer grew after its manifest was written
    rc, out, _ = env.run("clone", BUILD_ID, "--build-id", str(uuid.UUID(int=0xB16)))
    assert rc == 8 and "memfile" in out, out


def test_v3_ancestors_under_a_v5_child_pass(env: Env) -> None:
    """Issue 13's must-show: a real build whose v5 memfile.header maps to two v3 ancestors it does not list in
    its builds section; upstream resolves them from their own headers (storage_diff.go createDiff, #2994/#3447)."""
    from tests import header_corpus as corpus

    bdir = env.storage / BUILD_ID
    add_snapshot(bdir, mem_mib=64)
    a_id, b_id = str(uuid.UUID(int=0xA3)), str(uuid.UUID(int=0xB3))
    chain = corpus.mixed_chain("v3-v3-v5", block=2 * MIB, blocks=32, ids=(a_id, b_id, BUILD_ID))
    for build in chain.builds:
        target = env.storage / build.build_id
        target.mkdir(exist_ok=True)
        for name, data in build.files.items():
            (target / name).write_bytes(data)
    manifest.write_manifest(bdir, BUILD_ID)
    rc, out, _ = env.run("verify", BUILD_ID)
    assert rc == 0, out
    assert "ok   header.memfile: v5, block 2097152, size 67108864, generation 2, " in out
    assert f"chain of memfile: v5 generation 2 {BUILD_ID} <- this build (v5 generation 2, uncompressed per this " \
           f"header's builds entry): ok, {a_id} (v3 generation 0, uncompressed per its own header): ok, " \
           f"{b_id} (v3 generation 1, uncompressed per its own header): ok" in out
