"""Test images made with umoci and skopeo over a busybox-static tree (tools we did not write).

Layer 1 (umoci repack): busybox, a symlink, /etc/doomed, /data/keep, /opq/{old1,sub/old2}, a char device.
Layer 2 (crafted with tarfile, added with ``umoci raw add-layer``): ``opq/.wh..wh..opq`` + ``opq/new2``
         and ``data/link`` as a hard link to the layer-1 file ``data/keep`` (umoci itself re-adds the
         target when a link count changes, and never writes opaque markers).
Layer 3 (umoci repack): deletes /etc/doomed (``.wh.doomed``), adds a setuid file and a file with a
         ``security.capability`` xattr set by setcap, and opq/new3.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

BUSYBOX = Path("/bin/busybox")
TAG = "t"


def run(*cmd: str | Path, cwd: Path | None = None) -> str:
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, cwd=cwd, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd}: {proc.stderr}")
    return proc.stdout


def _crafted_layer(path: Path, keep_mtime: float) -> None:
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        def add(name: str, kind: bytes, data: bytes = b"", mode: int = 0o644, linkname: str = "") -> None:
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.size, info.linkname, info.mtime = kind, mode, len(data), linkname, keep_mtime
            tar.addfile(info, io.BytesIO(data) if data else None)
        add("opq", tarfile.DIRTYPE, mode=0o755)
        add("opq/.wh..wh..opq", tarfile.REGTYPE, mode=0)
        add("opq/new2", tarfile.REGTYPE, b"new in layer 2\n")
        add("data/link", tarfile.LNKTYPE, linkname="data/keep")


def make_layout(work: Path) -> Path:
    """An OCI layout ``work/layout`` with tag ``t`` (3 layers) and ``multi`` (an index: amd64 + arm64)."""
    layout = work / "layout"
    run("umoci", "init", "--layout", layout)
    run("umoci", "new", "--image", f"{layout}:{TAG}")
    bundle = work / "bundle"
    run("umoci", "unpack", "--image", f"{layout}:{TAG}", bundle)
    root = bundle / "rootfs"
    for d in ("bin", "etc", "data", "opq/sub", "usr/bin", "dev"):
        (root / d).mkdir(parents=True, exist_ok=True)
    shutil.copy2(BUSYBOX, root / "bin/busybox")
    os.symlink("busybox", root / "bin/sh")
    os.symlink("/bin/busybox", root / "bin/ls")
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "etc/doomed").write_text("deleted in layer 3\n")
    (root / "data/keep").write_text("layer 1 content\n")
    os.chown(root / "data/keep", 1000, 1000)
    (root / "opq/old1").write_text("hidden by the opaque dir\n")
    (root / "opq/sub/old2").write_text("hidden too\n")
    os.mknod(root / "dev/console", 0o620 | 0o020000, os.makedev(5, 1))
    run("umoci", "repack", "--refresh-bundle", "--image", f"{layout}:{TAG}", bundle)
    crafted = work / "layer2.tar"
    _crafted_layer(crafted, (root / "data/keep").stat().st_mtime)
    run("umoci", "raw", "add-layer", "--image", f"{layout}:{TAG}", crafted)
    shutil.rmtree(bundle)
    run("umoci", "unpack", "--image", f"{layout}:{TAG}", bundle)
    (root / "etc/doomed").unlink()
    (root / "usr/bin/suid").write_text("#!/bin/sh\necho setuid\n")
    os.chmod(root / "usr/bin/suid", 0o4755)
    shutil.copy2(BUSYBOX, root / "usr/bin/ping")
    run("setcap", "cap_net_raw+ep", root / "usr/bin/ping")
    (root / "opq/new3").write_text("new in layer 3\n")
    run("umoci", "repack", "--image", f"{layout}:{TAG}", bundle)
    run("umoci", "config", "--image", f"{layout}:{TAG}", "--config.env", "LANG=C.UTF-8",
        "--config.workingdir", "/data", "--config.user", "1000:1000", "--config.cmd", "/bin/sh")
    shutil.rmtree(bundle)
    _add_index(layout)
    return layout


def _blob(layout: Path, data: bytes) -> str:
    digest = hashlib.sha256(data).hexdigest()
    (layout / "blobs/sha256" / digest).write_bytes(data)
    return f"sha256:{digest}"


def _add_index(layout: Path) -> None:
    """Tag ``multi``: an image index with the 3-layer image as linux/amd64 and a 1-layer arm64 image."""
    index_path = layout / "index.json"
    index = json.loads(index_path.read_text())
    full = next(m for m in index["manifests"] if m["annotations"]["org.opencontainers.image.ref.name"] == TAG)
    manifest = json.loads((layout / "blobs/sha256" / full["digest"].split(":")[1]).read_bytes())
    config = json.loads((layout / "blobs/sha256" / manifest["config"]["digest"].split(":")[1]).read_bytes())
    config["architecture"] = "arm64"
    config["rootfs"]["diff_ids"] = config["rootfs"]["diff_ids"][:1]
    config_bytes = json.dumps(config).encode()
    arm = dict(manifest, layers=manifest["layers"][:1],
               config=dict(manifest["config"], digest=_blob(layout, config_bytes), size=len(config_bytes)))
    arm_bytes = json.dumps(arm).encode()
    image_index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [
        {**{k: full[k] for k in ("mediaType", "digest", "size")},
         "platform": {"os": "linux", "architecture": "amd64"}},
        {"mediaType": full["mediaType"], "digest": _blob(layout, arm_bytes), "size": len(arm_bytes),
         "platform": {"os": "linux", "architecture": "arm64"}}]}
    index_bytes = json.dumps(image_index).encode()
    index["manifests"].append({"mediaType": "application/vnd.oci.image.index.v1+json",
                               "digest": _blob(layout, index_bytes), "size": len(index_bytes),
                               "annotations": {"org.opencontainers.image.ref.name": "multi"}})
    index_path.write_text(json.dumps(index))


def docker_archive(layout: Path, dest: Path) -> Path:
    run("skopeo", "copy", f"oci:{layout}:{TAG}", f"docker-archive:{dest}:example/busy:{TAG}")
    return dest


def zstd_layout(layout: Path, dest: Path) -> Path:
    run("skopeo", "copy", "--dest-compress-format", "zstd", f"oci:{layout}:{TAG}", f"oci:{dest}:{TAG}")
    return dest


def craft_layout(dest: Path, layers: list[bytes], tag: str = TAG) -> Path:
    """An OCI layout written by hand (for layers other tools refuse to write): uncompressed layer tars."""
    (dest / "blobs/sha256").mkdir(parents=True)
    (dest / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    digests = [_blob(dest, data) for data in layers]
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                         "rootfs": {"type": "layers", "diff_ids": digests}}).encode()
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                      "digest": _blob(dest, config), "size": len(config)},
                           "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d,
                                       "size": len(data)} for d, data in zip(digests, layers, strict=True)]}).encode()
    index = {"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                                                "digest": _blob(dest, manifest), "size": len(manifest),
                                                "annotations": {"org.opencontainers.image.ref.name": tag}}]}
    (dest / "index.json").write_text(json.dumps(index))
    return dest


def tar_bytes(*members: tuple[str, bytes, str | bytes]) -> bytes:
    """A layer tar from ``(name, type, data-or-linkname)`` triples; mode 0644 (dirs 0755), owner 0."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, payload in members:
            info = tarfile.TarInfo(name)
            info.type = kind
            info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
            data = payload if isinstance(payload, bytes) else b""
            if isinstance(payload, str):
                info.linkname = payload
            info.size = len(data) if kind == tarfile.REGTYPE else 0
            tar.addfile(info, io.BytesIO(data) if info.size else None)
    return buf.getvalue()


def gzip_tar_of_zeros(name: str, size: int, level: int = 9) -> bytes:
    """A gzip'd layer tar holding one file of ``size`` zero bytes (about 1000:1: a decompression bomb)."""
    import zlib

    info = tarfile.TarInfo(name)
    info.size, info.mode = size, 0o644
    comp = zlib.compressobj(level, zlib.DEFLATED, 31)
    out = [comp.compress(info.tobuf(tarfile.PAX_FORMAT))]
    zeros = bytes(1 << 20)
    left = size + -size % 512 + 1024  # data, padding, end-of-archive blocks
    while left:
        n = min(left, len(zeros))
        out.append(comp.compress(zeros[:n]))
        left -= n
    out.append(comp.flush())
    return b"".join(out)


def gzip_bomb_layout(dest: Path, size: int, tag: str = TAG) -> Path:
    """A layout whose one gzip layer expands to ``size`` zero bytes of file data."""
    import zlib

    blob = gzip_tar_of_zeros("zeros", size)
    diff = hashlib.sha256()
    decomp = zlib.decompressobj(31)
    data = blob
    while data:
        diff.update(decomp.decompress(data, 1 << 24))
        data = decomp.unconsumed_tail
    layout = craft_layout(dest, [b""], tag)  # the shape; its one layer is replaced below
    edit_image(layout, lambda manifest, config: None, layer_blobs=[(blob, f"sha256:{diff.hexdigest()}")])
    return layout


def read_blob(layout: Path, digest: str) -> bytes:
    return (layout / "blobs/sha256" / digest.split(":", 1)[1]).read_bytes()


def edit_image(layout: Path, edit: object, *, layer_blobs: list[tuple[bytes, str]] | None = None,
               raw_manifest: bytes | None = None, tag: str = TAG) -> Path:
    """Rewrite the one image of a crafted layout: ``edit(manifest, config)`` changes the documents in place;
    ``layer_blobs`` replaces the layers by ``(blob, diff_id)`` (gzip media type); ``raw_manifest`` replaces
    the manifest's bytes outright. Digests and sizes are recomputed, index.json points at the result."""
    index = json.loads((layout / "index.json").read_text())
    entry = index["manifests"][0]
    manifest = json.loads(read_blob(layout, entry["digest"]))
    config = json.loads(read_blob(layout, manifest["config"]["digest"]))
    if layer_blobs is not None:
        manifest["layers"] = [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                               "digest": _blob(layout, blob), "size": len(blob)} for blob, _ in layer_blobs]
        config["rootfs"]["diff_ids"] = [diff_id for _, diff_id in layer_blobs]
    assert callable(edit)
    edit(manifest, config)
    config_bytes = json.dumps(config).encode()
    if isinstance(manifest.get("config"), dict) and "digest" in manifest["config"]:
        manifest["config"].update(digest=_blob(layout, config_bytes), size=len(config_bytes))
    data = raw_manifest if raw_manifest is not None else json.dumps(manifest).encode()
    entry.update(digest=_blob(layout, data), size=len(data))
    (layout / "index.json").write_text(json.dumps(index))
    return layout
