"""build --from-image against hostile or damaged sources: a stale cache, malformed documents, blobs that are
not what their descriptors say, decompression bombs. Real layouts, a real registry, the real CLI."""

from __future__ import annotations

import hashlib
import io
import json
import os
import resource
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from e2b_artifacts.errors import ArtifactError
from tests.conftest import assert_clean_error, cli, debugfs_lines, sha256
from tests.oci import images
from tests.oci.registry import registry

Edit = Callable[[dict[str, Any], dict[str, Any]], object]


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 3-layer umoci-made test image (tests/oci/images.py)."""
    return images.make_layout(tmp_path_factory.mktemp("umoci"))


def build(tmp_path: Path, envd: Path, source: str, build_id: str, *extra: str | Path,
          cache: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {"E2B_ARTIFACT_CACHE": str(cache or tmp_path / "cache")}
    return cli("--storage", tmp_path / "templates", "build", "--from-image", source, "--envd", envd,
               "--build-id", build_id, "--disk-size-mb", "8", *extra, env=env)


def measured(args: list[str | Path], env: dict[str, str], *, address_space: int | None = None,
             file_size: int | None = None, timeout: float = 300) -> tuple[subprocess.CompletedProcess[str], int]:
    """The CLI's result and its peak RSS in KiB (``wait4`` on that one child), optionally under resource limits
    (so a defect fails the test instead of taking the machine) and a timeout."""
    import tempfile
    import threading

    def set_limits() -> None:
        if address_space is not None:
            resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))
        if file_size is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (file_size, file_size))

    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen([sys.executable, "-m", "e2b_artifacts", *map(str, args)], stdout=out, stderr=err,
                                env={**os.environ, **env}, preexec_fn=set_limits)
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return (subprocess.CompletedProcess(proc.args, proc.returncode, out.read().decode(), err.read().decode()),
                usage.ru_maxrss)


def crafted(tmp_path: Path, edit: Edit | None = None, name: str = "crafted") -> Path:
    """A one-layer layout written by hand, optionally with its manifest/config edited."""
    made = images.craft_layout(tmp_path / name, [images.tar_bytes(("etc", tarfile.DIRTYPE, b""),
                                                                  ("etc/hello", tarfile.REGTYPE, b"hi\n"))])
    if edit is not None:
        images.edit_image(made, edit)
    return made


def layer_blob(layout_dir: Path, n: int = -1) -> Path:
    manifest = json.loads(images.read_blob(layout_dir, json.loads((layout_dir / "index.json").read_text())
                                           ["manifests"][0]["digest"]))
    return layout_dir / "blobs/sha256" / str(manifest["layers"][n]["digest"]).split(":", 1)[1]


def rewrite_keeping_mtime(path: Path, data: bytes) -> None:
    """Change a file's bytes in place (same inode, same size, mtime put back): what only ctime betrays."""
    st = path.stat()
    with path.open("r+b") as fh:
        fh.write(data)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


# --- a warm cache must not launder a changed source --------------------------------------------------------

def test_warm_cache_rechecks_a_changed_layout_layer(tmp_path: Path, layout: Path, envd_standin: Path) -> None:
    copy = tmp_path / "layout"
    shutil.copytree(layout, copy)
    source = f"oci-layout:{copy}:t"
    assert build(tmp_path, envd_standin, source, "first").returncode == 0
    blob = layer_blob(copy)
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0xFF  # in the gzip trailer: decompresses fine, digest differs
    rewrite_keeping_mtime(blob, bytes(data))
    warm = build(tmp_path, envd_standin, source, "warm")
    cold = build(tmp_path, envd_standin, source, "cold", cache=tmp_path / "empty-cache")
    assert_clean_error(cold, 8, "layer digest mismatch")
    assert_clean_error(warm, 8, "layer digest mismatch")  # the same answer as with an empty cache
    data[-1] ^= 0xFF
    rewrite_keeping_mtime(blob, bytes(data))  # repaired: builds again, from the cache
    assert build(tmp_path, envd_standin, source, "repaired").returncode == 0


def test_damaged_cache_entry_is_recreated(tmp_path: Path, layout: Path, envd_standin: Path) -> None:
    source = f"oci-layout:{layout}:t"
    assert build(tmp_path, envd_standin, source, "first").returncode == 0
    config = json.loads(images.read_blob(layout, json.loads(images.read_blob(
        layout, json.loads((layout / "index.json").read_text())["manifests"][0]["digest"]))["config"]["digest"]))
    diff_id = config["rootfs"]["diff_ids"][0]  # layer 1 holds /bin/busybox
    cached = tmp_path / "cache/blobs/sha256" / diff_id.split(":", 1)[1]
    with tarfile.open(cached) as tar:
        busybox = tar.getmember("bin/busybox")
    data = bytearray(cached.read_bytes())
    data[busybox.offset_data + 1000] ^= 0xFF
    rewrite_keeping_mtime(cached, bytes(data))
    proc = build(tmp_path, envd_standin, source, "second")
    assert proc.returncode == 0, proc.stderr
    assert "fidelity: 18 entries, 0 mismatches" in proc.stderr
    assert "damaged" in proc.stderr  # it says why the layer was unpacked again
    assert sha256(cached) == diff_id.split(":", 1)[1]
    image = tmp_path / "templates/second/rootfs.ext4"
    dumped = tmp_path / "busybox"
    debugfs_lines(image, f"dump /bin/busybox {dumped}")
    assert dumped.read_bytes() == images.BUSYBOX.read_bytes()


def test_damaged_registry_cache_is_fetched_again(tmp_path: Path, layout: Path, envd_standin: Path) -> None:
    with registry(tmp_path / "registry") as reg:
        ref = reg.push(f"oci:{layout}:t", "busy:t")
        first = build(tmp_path, envd_standin, ref, "first", "--insecure")
        assert first.returncode == 0, first.stderr
        blobs = tmp_path / "cache/blobs/sha256"
        manifest_digest = json.loads((tmp_path / "templates/first/metadata.json").read_text()
                                     )["e2b_artifact"]["image"]["manifest_digest"]
        manifest = json.loads((blobs / manifest_digest.split(":", 1)[1]).read_bytes())
        config_digest = manifest["config"]["digest"]
        config = json.loads((blobs / config_digest.split(":", 1)[1]).read_bytes())
        layer, diff_id = manifest["layers"][0]["digest"], config["rootfs"]["diff_ids"][0]
        (blobs / diff_id.split(":", 1)[1]).unlink()  # so the compressed blob is read again
        for digest in (manifest_digest, config_digest, layer):
            path = blobs / digest.split(":", 1)[1]
            data = bytearray(path.read_bytes())
            data[len(data) // 2] ^= 0x01
            rewrite_keeping_mtime(path, bytes(data))
        second = build(tmp_path, envd_standin, ref, "second", "--insecure")
        assert second.returncode == 0, second.stderr
        assert "fidelity: 18 entries, 0 mismatches" in second.stderr
        for digest in (manifest_digest, config_digest, layer, diff_id):
            assert "sha256:" + sha256(blobs / digest.split(":", 1)[1]) == digest


# --- malformed documents: one clear error naming the file and the field -----------------------------------

MANIFEST_CASES: dict[str, tuple[Edit, str]] = {
    "no-config": (lambda m, c: m.pop("config"), '"config" is missing'),
    "config-list": (lambda m, c: m.update(config=[]), '"config" must be an object'),
    "config-no-digest": (lambda m, c: m["config"].pop("digest"), '"config.digest" is missing'),
    "layer-no-digest": (lambda m, c: m["layers"][0].pop("digest"), '"layers[0].digest" is missing'),
    "layers-int": (lambda m, c: m.update(layers=5), '"layers" must be a list'),
    "layer-string": (lambda m, c: m.update(layers=["sha256:" + "0" * 64]), '"layers[0]" must be an object'),
    "size-string": (lambda m, c: m["layers"][0].update(size="12"), '"layers[0].size" must be an integer'),
    "size-negative": (lambda m, c: m["layers"][0].update(size=-1), '"layers[0].size" must be an integer'),
    "media-type-int": (lambda m, c: m["layers"][0].update(mediaType=7), '"layers[0].mediaType" must be a string'),
    "digest-syntax": (lambda m, c: m["layers"][0].update(digest="sha256"), '"layers[0].digest" is not a digest'),
    "digest-algorithm": (lambda m, c: m["layers"][0].update(digest="sha512:" + "a" * 128),
                         '"layers[0].digest" uses digest algorithm sha512'),
    "config-env-int": (lambda m, c: c.update(config={"Env": 5}), '"config.Env" must be a list of strings'),
    "config-cmd-string": (lambda m, c: c.update(config={"Cmd": "/bin/sh"}), '"config.Cmd" must be a list'),
    "config-config-list": (lambda m, c: c.update(config=[]), '"config" must be an object'),
    "diff-ids-dict": (lambda m, c: c.update(rootfs={"diff_ids": {}}), '"rootfs.diff_ids" must be a list'),
    "diff-id-int": (lambda m, c: c.update(rootfs={"diff_ids": [5]}), '"rootfs.diff_ids[0]" must be a string'),
    "no-rootfs": (lambda m, c: c.pop("rootfs"), '"rootfs" is missing'),
}


@pytest.mark.parametrize("case", sorted(MANIFEST_CASES))
def test_malformed_manifest_or_config(tmp_path: Path, envd_standin: Path, case: str) -> None:
    edit, needle = MANIFEST_CASES[case]
    made = crafted(tmp_path, edit)
    proc = build(tmp_path, envd_standin, f"oci-layout:{made}:t", "x")
    assert_clean_error(proc, 3, needle, f"{made}/blobs/sha256/")


INDEX_CASES: dict[str, tuple[Callable[[dict[str, Any]], object], str]] = {
    "entry-string": (lambda i: i.update(manifests=["sha256:" + "0" * 64]), '"manifests[0]" must be an object'),
    "entry-no-digest": (lambda i: i["manifests"][0].pop("digest"), '"manifests[0].digest" is missing'),
    "manifests-object": (lambda i: i.update(manifests={}), '"manifests" must be a list'),
    "annotations-list": (lambda i: i["manifests"][0].update(annotations=[]),
                         '"manifests[0].annotations" must be an object'),
    "index-list": (lambda i: i.update(manifests=[dict(i["manifests"][0], platform="linux")]),
                   '"manifests[0].platform" must be an object'),
}


@pytest.mark.parametrize("case", sorted(INDEX_CASES))
@pytest.mark.parametrize("tagged", [True, False])
def test_malformed_index(tmp_path: Path, envd_standin: Path, case: str, tagged: bool) -> None:
    edit, needle = INDEX_CASES[case]
    made = crafted(tmp_path)
    index = json.loads((made / "index.json").read_text())
    edit(index)
    (made / "index.json").write_text(json.dumps(index))
    proc = build(tmp_path, envd_standin, f"oci-layout:{made}" + (":t" if tagged else ""), "x")
    assert_clean_error(proc, 3, needle, f"{made}/index.json")


def docker_archive(path: Path, manifest: bytes, config: bytes | None = None) -> Path:
    layer = images.tar_bytes(("hello", tarfile.REGTYPE, b"hi\n"))
    config = config if config is not None else json.dumps(
        {"rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(layer).hexdigest()]}}).encode()
    with tarfile.open(path, "w") as tar:
        for name, data in (("manifest.json", manifest), ("c.json", config), ("l/layer.tar", layer)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


ARCHIVE_CASES = {
    "not-json": (b"[{", "manifest.json is not valid JSON"),
    "config-int": (b'[{"Config": 5, "Layers": []}]', '"[0].Config" must be a string'),
    "layers-int": (b'[{"Config": "c.json", "Layers": 5}]', '"[0].Layers" must be a list'),
    "no-layers": (b'[{"Config": "c.json"}]', '"[0].Layers" is missing'),
    "entry-string": (b'["c.json"]', '"[0]" must be an object'),
    "tags-string": (b'[{"Config": "c.json", "Layers": ["l/layer.tar"], "RepoTags": "x"}]',
                    '"[0].RepoTags" must be a list'),
}


@pytest.mark.parametrize("case", sorted(ARCHIVE_CASES))
def test_malformed_docker_archive(tmp_path: Path, envd_standin: Path, case: str) -> None:
    manifest, needle = ARCHIVE_CASES[case]
    archive = docker_archive(tmp_path / "a.tar", manifest)
    proc = build(tmp_path, envd_standin, f"docker-archive:{archive}", "x")
    assert_clean_error(proc, 3, needle, f"{archive}")


def test_docker_archive_config_without_rootfs(tmp_path: Path, envd_standin: Path) -> None:
    archive = docker_archive(tmp_path / "a.tar", b'[{"Config": "c.json", "Layers": ["l/layer.tar"]}]',
                             b'{"config": {}}')
    proc = build(tmp_path, envd_standin, f"docker-archive:{archive}", "x")
    assert_clean_error(proc, 3, '"rootfs" is missing', f"{archive}:c.json")


REGISTRY_CASES: dict[str, tuple[dict[str, Any], str]] = {
    "no-config": ({"schemaVersion": 2, "layers": []}, '"config" is missing'),
    "config-list": ({"schemaVersion": 2, "config": [], "layers": []}, '"config" must be an object'),
    "layers-int": ({"schemaVersion": 2, "config": {"digest": "sha256:" + "0" * 64, "size": 2}, "layers": 5},
                   '"layers" must be a list'),
    "index-entry-string": ({"schemaVersion": 2, "manifests": ["x"]}, '"manifests[0]" must be an object'),
}


@pytest.mark.parametrize("case", sorted(REGISTRY_CASES))
def test_malformed_registry_manifest(case: str) -> None:
    """What a registry answers goes through the same checks (as bytes: the registry we run refuses to store
    such manifests, and a hostile one is not ours to start)."""
    doc, needle = REGISTRY_CASES[case]
    from e2b_artifacts.oci import schema

    where = "manifest 127.0.0.1:5000/busy:t"
    with pytest.raises(ArtifactError) as caught:
        parsed = schema.parse_manifest_or_index(json.dumps(doc).encode(), where)
        if isinstance(parsed, schema.Index):
            raise AssertionError("an index with a bad entry was accepted")
    assert caught.value.code == 3 and needle in caught.value.message and where in caught.value.message


# --- blobs are read through their descriptor's size ---------------------------------------------------------

def _sparse(path: Path, size: int) -> None:
    with path.open("wb") as fh:
        fh.truncate(size)


def _replace_blob(made: Path, which: str, how: Callable[[Path], object]) -> None:
    index = json.loads((made / "index.json").read_text())
    manifest_digest = index["manifests"][0]["digest"]
    manifest = json.loads(images.read_blob(made, manifest_digest))
    digest = {"index": None, "manifest": manifest_digest, "config": manifest["config"]["digest"],
              "layer": manifest["layers"][0]["digest"]}[which]
    path = made / "index.json" if digest is None else made / "blobs/sha256" / digest.split(":", 1)[1]
    path.unlink()
    how(path)


BLOB_CASES: dict[str, tuple[str, Callable[[Path], object], int, str]] = {
    "config-dev-zero": ("config", lambda p: p.symlink_to("/dev/zero"), 3, "is not a regular file"),
    "layer-dev-zero": ("layer", lambda p: p.symlink_to("/dev/zero"), 3, "is not a regular file"),
    "manifest-dev-zero": ("manifest", lambda p: p.symlink_to("/dev/zero"), 3, "is not a regular file"),
    "index-fifo": ("index", lambda p: os.mkfifo(p), 3, "is not a regular file"),
    "config-huge-sparse": ("config", lambda p: _sparse(p, 4 << 30), 8,
                           "more than the"),
    "layer-huge-sparse": ("layer", lambda p: _sparse(p, 4 << 30), 8, "more than the"),
    "layer-short": ("layer", lambda p: p.write_bytes(b"\0" * 100), 8, "bytes, its descriptor says"),
}


@pytest.mark.parametrize("case", sorted(BLOB_CASES))
def test_blob_read_through_descriptor_size(tmp_path: Path, envd_standin: Path, case: str) -> None:
    which, how, code, needle = BLOB_CASES[case]
    made = crafted(tmp_path)
    _replace_blob(made, which, how)
    args: list[str | Path] = ["--storage", tmp_path / "templates", "build", "--from-image", f"oci-layout:{made}:t",
                              "--envd", envd_standin, "--build-id", "x"]
    proc, _ = measured(args, {"E2B_ARTIFACT_CACHE": str(tmp_path / "cache")}, address_space=2 << 30,
                            file_size=256 << 20, timeout=60)
    assert_clean_error(proc, code, needle)
    assert not list((tmp_path / "cache/blobs/sha256").glob(".*.part"))


# --- decompression bombs -------------------------------------------------------------------------------------

BOMB = 512 << 20  # zeros in one file: ~520 KB of gzip


@pytest.fixture(scope="module")
def bombs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    base = tmp_path_factory.mktemp("bombs")
    gz = images.gzip_bomb_layout(base / "gzip", BOMB)
    zst = base / "zstd"
    shutil.copytree(gz, zst)
    import zlib

    import zstandard

    tar = zlib.decompress(layer_blob(gz).read_bytes(), 31)
    images.edit_image(zst, lambda m, c: None, layer_blobs=[(zstandard.ZstdCompressor(level=3).compress(tar),
                                                            "sha256:" + hashlib.sha256(tar).hexdigest())])
    del tar
    yield {"gzip": gz, "zstd": zst}


def cache_files(cache: Path) -> list[str]:
    blobs = cache / "blobs/sha256"
    return sorted(p.name for p in blobs.iterdir()) if blobs.is_dir() else []


@pytest.mark.parametrize("kind", ["gzip", "zstd"])
def test_bomb_refused_by_ratio(tmp_path: Path, envd_standin: Path, bombs: dict[str, Path], kind: str) -> None:
    made = bombs[kind]
    cache = tmp_path / "cache"
    args: list[str | Path] = ["--storage", tmp_path / "templates", "build", "--from-image", f"oci-layout:{made}:t",
                              "--envd", envd_standin, "--build-id", "x"]
    proc, rss_kib = measured(args, {"E2B_ARTIFACT_CACHE": str(cache)})
    assert_clean_error(proc, 3, "layer 1", "times its compressed size", "--max-layer-ratio")
    assert rss_kib < 250 << 10, rss_kib  # decompression output is bounded, not one giant chunk
    diff_id = json.loads(images.read_blob(made, json.loads(images.read_blob(made, json.loads(
        (made / "index.json").read_text())["manifests"][0]["digest"]))["config"]["digest"]))["rootfs"]["diff_ids"][0]
    left = cache_files(cache)
    assert diff_id.split(":", 1)[1] not in left and not [n for n in left if n.startswith(".")], left
    assert not (tmp_path / "templates/x").exists()


def test_bomb_refused_by_image_size(tmp_path: Path, envd_standin: Path, bombs: dict[str, Path]) -> None:
    made = bombs["gzip"]
    cache = tmp_path / "cache"
    proc = build(tmp_path, envd_standin, f"oci-layout:{made}:t", "x", "--max-layer-ratio", "0",
                 "--max-image-size", "256M")
    assert_clean_error(proc, 3, "--max-image-size", "256 MiB")
    assert not [n for n in cache_files(cache) if n.startswith(".")]
    config_diff = json.loads(images.read_blob(made, json.loads(images.read_blob(made, json.loads(
        (made / "index.json").read_text())["manifests"][0]["digest"]))["config"]["digest"]))["rootfs"]["diff_ids"][0]
    assert config_diff.split(":", 1)[1] not in cache_files(cache)  # the partial layer is gone


def test_bomb_within_raised_limits_builds(tmp_path: Path, envd_standin: Path, bombs: dict[str, Path]) -> None:
    proc = build(tmp_path, envd_standin, f"oci-layout:{bombs['gzip']}:t", "x", "--max-layer-ratio", "0")
    assert proc.returncode == 0, proc.stderr
    assert "fidelity: 1 entries, 0 mismatches" in proc.stderr or "fidelity: 2 entries" in proc.stderr


@pytest.mark.parametrize("value", ["0", "-1G", "lots", "5Q"])
def test_max_image_size_syntax(tmp_path: Path, envd_standin: Path, value: str) -> None:
    made = crafted(tmp_path)
    proc = build(tmp_path, envd_standin, f"oci-layout:{made}:t", "x", "--max-image-size", value)
    assert proc.returncode == 2, proc.stderr
    assert "Invalid value for '--max-image-size'" in proc.stderr and "Traceback" not in proc.stderr


def test_sizes_in_descriptors_over_the_limit_refused_before_reading(tmp_path: Path, envd_standin: Path) -> None:
    made = crafted(tmp_path, lambda m, c: m["layers"][0].update(size=5 << 30))
    proc = build(tmp_path, envd_standin, f"oci-layout:{made}:t", "x")
    assert_clean_error(proc, 3, "--max-image-size")
