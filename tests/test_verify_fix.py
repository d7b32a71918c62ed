"""verify --fix repairs each case it knows, deciding by the findings' fix codes, never by their wording."""

from __future__ import annotations

import itertools
import json
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import e2b_artifacts.kernel.rules  # noqa: F401  (KernelFinding is reworded too)
from e2b_artifacts import manifest, verify
from e2b_artifacts.findings import AUTOMATIC, Finding, Fix
from e2b_artifacts.settings import Settings
from tests.conftest import sample_build
from tests.verify.craft import add_snapshot, header_v1_3, memfile_header, snapfile

BUILD_ID = "5d0e7c1a-2b3f-4a6e-8d9c-1f2e3a4b5c6d"
MIB = 1 << 20
CAMEL = {"buildID": BUILD_ID, "templateID": "tpl1", "kernelVersion": "vmlinux-6.1.102",
         "firecrackerVersion": "v1.12.1_d990331", "envdVersion": "0.2.0"}
V1 = {"version": "v1", "template": {"template_id": "tpl9", "build_id": BUILD_ID, "kernel_version": "vmlinux-6.1.102",
                                    "firecracker_version": "v1.12.1_d990331"},
      "metadata": {"user": "user", "workdir": "/home/user"}}
SNAPSHOT_FILES = ("memfile", "snapfile", "memfile.header")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    storage = tmp_path_factory.mktemp("built")
    return sample_build(storage, BUILD_ID)


@dataclass
class Build:
    dir: Path
    settings: Settings


@pytest.fixture
def fresh(tmp_path: Path, built: Path) -> Build:
    storage = tmp_path / "templates"
    storage.mkdir()
    subprocess.run(["cp", "-a", "--sparse=always", str(built), str(storage)], check=True)
    settings = Settings(flags={"LOCAL_TEMPLATE_STORAGE_BASE_PATH": str(storage),
                               "TEMPLATE_CACHE_DIR": str(tmp_path / "template-cache"),
                               "SHARED_CHUNK_CACHE_PATH": str(tmp_path / "chunks"),
                               "HOST_KERNELS_DIR": str(tmp_path / "no-kernels"),
                               "FIRECRACKER_VERSIONS_DIR": str(tmp_path / "no-firecrackers")}, env={})
    return Build(storage / BUILD_ID, settings)


def _write_metadata(doc: dict[str, Any]) -> Callable[[Path], None]:
    def arrange(d: Path) -> None:
        (d / "metadata.json").write_text(json.dumps(doc))
        manifest.update_manifest_entry(d, "metadata.json")
    return arrange


def _lone(name: str) -> Callable[[Path], None]:
    def arrange(d: Path) -> None:
        (d / name).write_bytes(snapfile("bincode", mem_mib=64) if name == "snapfile" else b"\0" * 4096)
        if name == "memfile":  # with the header E2B writes beside it: only the missing snapfile is wrong
            (d / "memfile.header").write_bytes(memfile_header(BUILD_ID, 64 * MIB, data_bytes=4096))
        manifest.write_manifest(d, BUILD_ID)
    return arrange


def _bad_snapshot(d: Path) -> None:
    add_snapshot(d, era="bincode", version="8.0.0", mem_mib=64)  # v1.13 format, metadata says v1.12
    manifest.write_manifest(d, BUILD_ID)


def _changed_after_manifest(name: str) -> Callable[[Path], None]:
    """A snapshot file that differs from the manifest while every snapshot and header check passes."""
    def arrange(d: Path) -> None:
        add_snapshot(d, mem_mib=64)
        header = header_v1_3(size=64 * MIB, build_id=BUILD_ID, mappings=[(0, 64 * MIB, BUILD_ID, 0)])
        (d / "memfile.header").write_bytes(header)
        manifest.write_manifest(d, BUILD_ID)
        if name == "memfile":
            with (d / "memfile").open("r+b") as fh:
                fh.seek(4096)
                fh.write(b"\x5a")
        elif name == "snapfile":
            (d / "snapfile").write_bytes(snapfile("bincode", mem_mib=64, state_len=4000))
        else:
            (d / "memfile.header").write_bytes(header_v1_3(size=64 * MIB, build_id=BUILD_ID, mappings=[
                (0, 32 * MIB, BUILD_ID, 0), (32 * MIB, 32 * MIB, BUILD_ID, 32 * MIB)]))
    return arrange


def _no_manifest(d: Path) -> None:
    (d / manifest.FILE_NAME).unlink()


def _unlisted(d: Path) -> None:
    add_snapshot(d, mem_mib=64)  # after the build wrote its manifest


def _unlisted_beside_a_mismatch(d: Path) -> None:
    add_snapshot(d, mem_mib=64)
    doc = json.loads((d / "metadata.json").read_text())
    (d / "metadata.json").write_text(json.dumps(doc, indent=4))  # same content, other bytes


def _quarantined(d: Path, fixed: list[str]) -> None:
    assert fixed[0].startswith("snapshot quarantined in "), fixed
    assert not any((d / name).exists() for name in SNAPSHOT_FILES)
    assert (d / ".quarantine").is_dir()


def _rewritten(original: dict[str, Any]) -> Callable[[Path, list[str]], None]:
    def outcome(d: Path, fixed: list[str]) -> None:
        assert len(fixed) == 1 and fixed[0].startswith("rewrote "), fixed
        assert json.loads((d / "metadata.json").read_text())["version"] == 2
        assert json.loads((d / "metadata.json.orig").read_text()) == original
    return outcome


def _manifest_written(d: Path, fixed: list[str]) -> None:
    assert fixed == [f"wrote {d / manifest.FILE_NAME} from the current files"]
    assert manifest.check_manifest(d, quick=False) == []


def _snapshot_added(d: Path, fixed: list[str]) -> None:
    added = ("memfile", "memfile.header", "snapfile")
    assert sorted(fixed) == [f"added {n} to {manifest.FILE_NAME}" for n in added]
    listed = manifest.load_manifest(d)
    assert listed is not None and set(added) <= set(listed.files)
    assert manifest.check_manifest(d, quick=False) == []


def _nothing_done(d: Path, fixed: list[str]) -> None:
    assert fixed == []
    listed = manifest.load_manifest(d)
    assert listed is not None and "memfile" not in listed.files  # not blessed while another file mismatches


CASES: dict[str, tuple[Callable[[Path], None], Callable[[Path, list[str]], None], str]] = {
    # name: (arrange, outcome, fix code that drives the repair)
    "camelCase-metadata": (_write_metadata(CAMEL), _rewritten(CAMEL), Fix.METADATA_REWRITE),
    "v1-metadata": (_write_metadata(V1), _rewritten(V1), Fix.METADATA_REWRITE),
    "lone-memfile": (_lone("memfile"), _quarantined, Fix.SNAPSHOT_QUARANTINE),
    "lone-snapfile": (_lone("snapfile"), _quarantined, Fix.SNAPSHOT_QUARANTINE),
    "failing-snapshot": (_bad_snapshot, _quarantined, Fix.SNAPSHOT_QUARANTINE),
    "memfile-changed": (_changed_after_manifest("memfile"), _quarantined, Fix.SNAPSHOT_QUARANTINE),
    "snapfile-changed": (_changed_after_manifest("snapfile"), _quarantined, Fix.SNAPSHOT_QUARANTINE),
    "memfile.header-changed": (_changed_after_manifest("memfile.header"), _quarantined, Fix.SNAPSHOT_QUARANTINE),
    "no-manifest": (_no_manifest, _manifest_written, Fix.MANIFEST_WRITE),
    "unlisted-files": (_unlisted, _snapshot_added, Fix.MANIFEST_ADD),
    "unlisted-beside-a-mismatch": (_unlisted_beside_a_mismatch, _nothing_done, ""),
}


def _subclasses(cls: type[Finding]) -> Iterator[type[Finding]]:
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


REWORDED = "reworded"


@pytest.fixture
def reworded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every finding made from now on gets a message and hint that share no word with the original."""
    numbers = itertools.count()
    for cls in (Finding, *_subclasses(Finding)):
        original: Callable[..., None] = vars(cls)["__init__"]  # each dataclass has its own generated __init__

        def init(self: Finding, *args: Any, _original: Callable[..., None] = original, **kwargs: Any) -> None:
            _original(self, *args, **kwargs)
            object.__setattr__(self, "message", f"{REWORDED} {next(numbers)}")
            object.__setattr__(self, "hint", REWORDED)
        monkeypatch.setattr(cls, "__init__", init)


def _repair(case: str, b: Build, *, expect_reworded: bool) -> None:
    arrange, outcome, code = CASES[case]
    arrange(b.dir)
    before = verify(b.dir, b.settings)
    assert all((f.message.startswith(REWORDED + " ")) == expect_reworded for f in before.findings)
    codes = {f.fix for f in before.findings}
    assert code in codes if code else not codes & AUTOMATIC, [f.to_dict() for f in before.findings]
    after = verify(b.dir, b.settings, fix=True)
    outcome(b.dir, after.fixed)
    if code:
        assert not after.failed(), [f.to_dict() for f in after.findings]
        assert not {f.fix for f in after.findings} & AUTOMATIC  # nothing left that --fix would do


@pytest.mark.parametrize("case", CASES)
def test_fix_repairs(case: str, fresh: Build) -> None:
    _repair(case, fresh, expect_reworded=False)


@pytest.mark.parametrize("case", CASES)
def test_fix_repairs_with_every_message_reworded(case: str, fresh: Build, reworded: None) -> None:
    _repair(case, fresh, expect_reworded=True)


def test_json_report_shows_fix_codes(fresh: Build) -> None:
    _lone("memfile")(fresh.dir)
    (fresh.dir / manifest.FILE_NAME).unlink()
    doc = verify(fresh.dir, fresh.settings).to_dict()
    by_code = {f["fix"]: f for f in doc["findings"] if f["fix"]}
    assert by_code["snapshot.quarantine"]["check"] == "files"
    assert by_code["manifest.write"]["check"] == "manifest"
    assert all(set(f) >= {"check", "status", "message", "hint", "fix"} for f in doc["findings"])
