"""The build directory as one concept: id rule, file names, lock, stage/publish; import lightness; one home."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from e2b_artifacts import layout
from e2b_artifacts.errors import ArtifactError, ExitCode
from tests.conftest import REPO, stop

PACKAGE = REPO / "e2b_artifacts"


# ---- build ids -------------------------------------------------------------------------------

@pytest.mark.parametrize("build_id", ["3f2a9c1e-0b7d-4e55-9a61-2f1c3d4e5f60", "b1", "a.b_c-D9", "x" * 128])
def test_build_id_accepted(build_id: str) -> None:
    assert layout.check_build_id(build_id) == build_id


@pytest.mark.parametrize("build_id", ["", ".", "..", "../evil", "a/b", ".hidden", "-flag", "_x", "a b", "x" * 129,
                                      "é", "a\0b", "a\n"])
def test_build_id_refused(build_id: str) -> None:
    with pytest.raises(ArtifactError) as err:
        layout.check_build_id(build_id)
    assert err.value.code == ExitCode.USAGE and "invalid build id" in err.value.message and err.value.hint


# ---- names -----------------------------------------------------------------------------------

def test_file_names_are_upstreams() -> None:
    assert (layout.ROOTFS, layout.MEMFILE, layout.SNAPFILE) == ("rootfs.ext4", "memfile", "snapfile")
    assert layout.HEADERS == ("memfile.header", "rootfs.ext4.header")
    assert layout.DATA_FILE_OF == {"memfile.header": "memfile", "rootfs.ext4.header": "rootfs.ext4"}
    assert layout.HEADER_OF == {"memfile": "memfile.header", "rootfs.ext4": "rootfs.ext4.header"}
    assert (layout.METADATA, layout.MANIFEST) == ("metadata.json", "artifact-manifest.json")
    assert layout.compressed_names(layout.MEMFILE) == ("memfile.lz4", "memfile.zstd")
    assert layout.compressed_names(layout.ROOTFS) == ("rootfs.ext4.lz4", "rootfs.ext4.zstd")
    assert layout.uncompressed_size_name("rootfs.ext4.zstd") == "rootfs.ext4.zstd.uncompressed-size"
    assert [layout.data_name_of(n) for n in ("memfile.zstd", "rootfs.ext4.lz4", "memfile", "memfile.header")] == [
        "memfile", "rootfs.ext4", "memfile", "memfile.header"]


def test_snapshot_names() -> None:
    snapshot = ["snapfile", "memfile", "memfile.header", "memfile.lz4", "memfile.zstd.uncompressed-size",
                "snapfile.orig"]
    other = ["rootfs.ext4", "rootfs.ext4.header", "metadata.json", "artifact-manifest.json", "memfiles", "snap"]
    assert [n for n in snapshot + other if layout.is_snapshot_name(n)] == snapshot


def test_hidden_names(tmp_path: Path) -> None:
    assert layout.lock_path(tmp_path, "b1") == tmp_path / ".b1.lock"
    assert layout.resumable_staging_dir(tmp_path, "b1") == tmp_path / ".b1.sync-partial"
    assert layout.staging_prefix("b1") == ".b1.staging-"
    assert layout.replaced_dir(tmp_path) == tmp_path / ".replaced"
    assert layout.QUARANTINE_DIR == ".quarantine"


# ---- lock ------------------------------------------------------------------------------------

def _hold_lock(storage: Path, build_id: str) -> subprocess.Popen[str]:
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from e2b_artifacts import layout\n"
        "with layout.lock(Path(sys.argv[1]), sys.argv[2]):\n    print('locked', flush=True); time.sleep(30)"),
        str(storage), build_id], stdout=subprocess.PIPE, text=True, cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)})
    assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
    return holder


def test_lock_conflict_is_exit_6(tmp_path: Path) -> None:
    holder = _hold_lock(tmp_path, "b1")
    try:
        with pytest.raises(ArtifactError) as err, layout.lock(tmp_path, "b1"):
            pass
        assert err.value.code == ExitCode.CONFLICT and int(err.value.code) == 6
        assert "build b1 is locked by another process" in err.value.message and err.value.hint
        with layout.lock(tmp_path, "b2"):  # another id is not affected
            pass
    finally:
        stop(holder)
    with layout.lock(tmp_path, "b1"):  # released when the holder is gone
        pass


def test_lock_conflict_through_the_cli(tmp_path: Path) -> None:
    """`clone` into a locked build id: one error line, exit 6, nothing written."""
    source = tmp_path / "src"
    source.mkdir()
    (source / layout.METADATA).write_text('{"version": 2, "template": {"build_id": "src", "kernel_version": '
                                          '"vmlinux-6.1.102", "firecracker_version": "v1.12.1_d990331"}}')
    storage = tmp_path / "storage"
    holder = _hold_lock(storage, "b1")
    try:
        proc = subprocess.run([sys.executable, "-m", "e2b_artifacts", "--storage", str(storage), "clone",
                               str(source), "--build-id", "b1"], capture_output=True, text=True, cwd=REPO,
                              env={**os.environ, "PYTHONPATH": str(REPO)}, check=False)
    finally:
        stop(holder)
    assert proc.returncode == 6, proc.stderr
    assert proc.stderr.startswith("error: build b1 is locked by another process") and "Traceback" not in proc.stderr
    assert sorted(p.name for p in storage.iterdir()) == [".b1.lock"]


def test_lock_file_exists_only_while_held(tmp_path: Path) -> None:
    with layout.lock(tmp_path, "b1"):
        assert layout.lock_path(tmp_path, "b1").exists()
    assert not layout.lock_path(tmp_path, "b1").exists()  # no .lock left behind after a build
    layout.lock_path(tmp_path, "b2").write_text("")  # left by a killed holder: taken, then removed
    with layout.lock(tmp_path, "b2"):
        pass
    assert list(tmp_path.iterdir()) == []


def test_removed_lock_files_still_exclude(tmp_path: Path) -> None:
    """Two processes take and release one lock 300 times each; a counter shows no overlap."""
    script = (
        "import sys, time\nfrom pathlib import Path\nfrom e2b_artifacts import layout\n"
        "from e2b_artifacts.errors import ArtifactError\n"
        "root = Path(sys.argv[1]); counter = root / 'counter'; done = 0\n"
        "while done < 300:\n"
        "    try:\n"
        "        with layout.lock(root, 'b1'):\n"
        "            n = int(counter.read_text()); time.sleep(0.0002); counter.write_text(str(n + 1)); done += 1\n"
        "    except ArtifactError:\n"
        "        time.sleep(0.0001)\n")
    (tmp_path / "counter").write_text("0")
    procs = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], cwd=REPO,
                              env={**os.environ, "PYTHONPATH": str(REPO)}) for _ in range(2)]
    for proc in procs:
        assert proc.wait(timeout=120) == 0
    assert (tmp_path / "counter").read_text() == "600"
    assert not layout.lock_path(tmp_path, "b1").exists()


def _fill(staging: Path, content: str) -> None:
    (staging / layout.ROOTFS).write_text(content)
    (staging / layout.METADATA).write_text("{}")


def test_stage_then_publish(tmp_path: Path) -> None:
    storage = tmp_path / "storage"
    with layout.lock(storage, "b1"), layout.stage(storage, "b1") as staging:
        assert staging.parent == storage and staging.name.startswith(".b1.staging-")
        _fill(staging, "new")
        assert not (storage / "b1").exists()
        assert layout.publish(staging, storage / "b1") is None
        assert not staging.exists()
    target = storage / "b1"
    assert (target / layout.ROOTFS).read_text() == "new" and target.stat().st_mode & 0o777 == 0o755
    assert sorted(p.name for p in storage.iterdir()) == ["b1"]  # no staging, no lock left


def test_publish_replace_moves_the_old_build_to_replaced(tmp_path: Path) -> None:
    target = tmp_path / "b1"
    target.mkdir()
    (target / "user-note.txt").write_text("keep me")
    with layout.stage(tmp_path, "b1") as staging:
        _fill(staging, "new")
        aside = layout.publish(staging, target, replace=True)
    assert aside is not None and aside.parent == tmp_path / ".replaced"
    assert re.fullmatch(r"b1\.\d{8}T\d{6}Z", aside.name), aside.name
    assert (aside / "user-note.txt").read_text() == "keep me"
    assert sorted(p.name for p in target.iterdir()) == [layout.METADATA, layout.ROOTFS]
    with layout.stage(tmp_path, "b1") as staging:  # a second replace within the same second: a new name
        _fill(staging, "newer")
        again = layout.publish(staging, target, replace=True)
    assert again is not None and again != aside and (again / layout.ROOTFS).read_text() == "new"
    assert (aside / "user-note.txt").read_text() == "keep me"
    assert (target / layout.ROOTFS).read_text() == "newer"


def test_publish_refuses_an_existing_build_without_replace(tmp_path: Path) -> None:
    target = tmp_path / "b1"
    target.mkdir()
    (target / "user-note.txt").write_text("keep me")
    with pytest.raises(ArtifactError) as err, layout.stage(tmp_path, "b1") as staging:
        _fill(staging, "new")
        layout.publish(staging, target)
    assert err.value.code == ExitCode.CONFLICT and "already exists" in err.value.message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b1"]  # staging removed, nothing moved aside
    assert sorted(p.name for p in target.iterdir()) == ["user-note.txt"]


def test_failed_stage_publishes_nothing(tmp_path: Path) -> None:
    target = tmp_path / "b1"
    with pytest.raises(RuntimeError, match="half way"), layout.stage(tmp_path, "b1") as staging:
        _fill(staging, "partial")
        raise RuntimeError("half way")
    assert not target.exists() and list(tmp_path.iterdir()) == []
    old = tmp_path / "b2"
    old.mkdir()
    (old / layout.ROOTFS).write_text("old")
    with pytest.raises(KeyboardInterrupt), layout.stage(tmp_path, "b2") as staging:
        _fill(staging, "partial")
        raise KeyboardInterrupt
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b2"] and (old / layout.ROOTFS).read_text() == "old"


def test_failed_rename_puts_the_old_build_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "b1"
    target.mkdir()
    (target / layout.ROOTFS).write_text("old")
    real_rename = os.rename

    def rename(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        if Path(src).name.startswith(".b1.staging-"):
            raise OSError(28, "No space left on device")
        real_rename(src, dst)

    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(OSError, match="No space"), layout.stage(tmp_path, "b1") as staging:
        _fill(staging, "new")
        layout.publish(staging, target, replace=True)
    assert (target / layout.ROOTFS).read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".replaced", "b1"]
    assert list((tmp_path / ".replaced").iterdir()) == []


def test_resumable_stage_is_kept_for_the_next_run(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), layout.stage(tmp_path, "b1", resumable=True) as staging:
        assert staging == tmp_path / ".b1.sync-partial"
        (staging / layout.ROOTFS).write_text("first half")
        raise RuntimeError("interrupted")
    assert (tmp_path / ".b1.sync-partial" / layout.ROOTFS).read_text() == "first half"
    with layout.stage(tmp_path, "b1", resumable=True) as staging:
        assert (staging / layout.ROOTFS).read_text() == "first half"
        (staging / layout.METADATA).write_text("{}")
        layout.publish(staging, tmp_path / "b1")
    assert sorted(p.name for p in (tmp_path / "b1").iterdir()) == [layout.METADATA, layout.ROOTFS]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b1"]


# ---- import lightness ------------------------------------------------------------------------

HEAVY_FOR = {
    "e2b_artifacts.sync": ("oci", "image", "fidelity", "rootfs", "build"),
    "e2b_artifacts.verify": ("oci", "image", "build", "clone"),
}


def _loaded_by(module: str) -> list[str]:
    """The package's modules that ``import module`` loads, in a fresh interpreter."""
    proc = subprocess.run([sys.executable, "-c", f"import {module}, sys; "
                           "print('\\n'.join(sorted(m for m in sys.modules if m.startswith('e2b_artifacts'))))"],
                          capture_output=True, text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                          check=True)
    loaded = proc.stdout.split()
    assert module in loaded  # the check ran on the module itself
    return loaded


@pytest.mark.parametrize("module", sorted(HEAVY_FOR))
def test_import_is_light(module: str) -> None:
    heavy = [m for m in _loaded_by(module)
             if any(m == f"e2b_artifacts.{h}" or m.startswith(f"e2b_artifacts.{h}.") for h in HEAVY_FOR[module])]
    assert heavy == [], f"import {module} loads {heavy}"


def test_layout_imports_only_errors_and_fsutil() -> None:
    assert _loaded_by("e2b_artifacts.layout") == [
        "e2b_artifacts", "e2b_artifacts.errors", "e2b_artifacts.fsutil", "e2b_artifacts.layout"]


# ---- one home for the file names -------------------------------------------------------------

MUST_SHOW_RE = re.compile(r'"(memfile\.header|rootfs\.ext4|snapfile)"')
FILE_NAMES = {layout.ROOTFS, layout.MEMFILE, layout.SNAPFILE, *layout.HEADERS, layout.METADATA, layout.MANIFEST,
              *(n for d in layout.DATA_FILES for n in layout.compressed_names(d)),
              *(layout.uncompressed_size_name(n) for d in layout.DATA_FILES for n in layout.compressed_names(d))}


def _sources() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if p != PACKAGE / "layout.py")


def _snapshot_check_codes() -> set[str]:
    """The stable codes of snapfile issues (``Issue(severity, code, message)``): ``memfile`` is one, not a file."""
    codes = set()
    for node in ast.walk(ast.parse((PACKAGE / "snapshot.py").read_text())):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "Issue" and \
                len(node.args) > 1 and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str):
            codes.add(node.args[1].value)
    assert {"crc", "memfile"} <= codes  # the scan below relies on finding them
    return codes


def test_must_show_grep_hits_only_layout() -> None:
    """``grep -rn '"memfile.header"\\|"rootfs.ext4"\\|"snapfile"' e2b_artifacts/`` hits only layout.py."""
    hits = [f"{p.relative_to(REPO)}:{n}: {line.strip()}" for p in _sources()
            for n, line in enumerate(p.read_text().splitlines(), 1) if MUST_SHOW_RE.search(line)]
    assert hits == []
    assert MUST_SHOW_RE.search((PACKAGE / "layout.py").read_text())  # the pattern does match where they live


def test_no_module_but_layout_spells_a_build_file_name() -> None:
    """No string literal outside layout.py equals a build file name (snapfile issue codes excepted)."""
    codes = _snapshot_check_codes()
    hits = []
    for path in _sources():
        tree = ast.parse(path.read_text())
        exempt: set[int] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "Issue" and \
                    len(node.args) > 1:
                exempt.add(id(node.args[1]))
            if isinstance(node, ast.Dict) and node.keys and all(
                    isinstance(k, ast.Constant) and k.value in codes for k in node.keys):
                exempt.update(id(k) for k in node.keys)  # a table keyed by snapfile issue code
        hits += [f"{path.relative_to(REPO)}:{node.lineno}: {node.value!r}" for node in ast.walk(tree)
                 if isinstance(node, ast.Constant) and node.value in FILE_NAMES and id(node) not in exempt]
    assert hits == []


def test_stale_leftovers_of_killed_runs_are_moved_aside_by_the_next_run(tmp_path: Path) -> None:
    storage = tmp_path / "storage"
    build_dir = storage / "b1"
    build_dir.mkdir(parents=True)
    (build_dir / layout.ROOTFS).write_text("data")
    staging = storage / ".b1.staging-abc123"  # a killed build of b1
    staging.mkdir()
    (staging / layout.ROOTFS).write_text("half")
    (storage / ".b2.staging-zzz").mkdir()  # another id: not b1's to judge
    tmp = build_dir / ".artifact-manifest.json.k2j3h4g5.tmp"  # a killed atomic write
    tmp.write_text("{")
    with layout.lock(storage, "b1"):
        moves = layout.sweep_stale(storage, "b1")
    assert [a for a, _ in moves] == [staging, tmp]
    assert all(b.is_relative_to(storage / layout.LEFTOVERS_DIR) and b.exists() for _, b in moves)
    assert (moves[0][1] / layout.ROOTFS).read_text() == "half"  # moved, not deleted
    assert moves[1][1].parent.name == "b1"
    assert (storage / ".b2.staging-zzz").exists() and (build_dir / layout.ROOTFS).exists()
    assert layout.sweep_stale(storage, "b1") == []


def test_verify_moves_stale_temp_files_and_says_so(tmp_path: Path) -> None:
    storage = tmp_path / "storage"
    build_dir = storage / "b1"
    build_dir.mkdir(parents=True)
    (build_dir / ".artifact-manifest.json.q1w2e3r4.tmp").write_text("{")
    proc = subprocess.run([sys.executable, "-m", "e2b_artifacts", "--storage", str(storage), "verify", "b1"],
                          capture_output=True, text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                          check=False)
    assert "moved .artifact-manifest.json.q1w2e3r4.tmp, left by an interrupted run, to " in proc.stdout, proc.stdout
    assert list((storage / layout.LEFTOVERS_DIR).glob("*/b1/.artifact-manifest.json.q1w2e3r4.tmp"))
    assert "leftover temp files" not in proc.stdout
