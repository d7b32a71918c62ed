"""A storage of many small real builds in diff-layer chains, for ``verify --all`` tests and the benchmark.

Every build of a chain of depth D is a real template: the device its ``rootfs.ext4.header`` describes is
the sample's ext4 image (so e2fsck and the debugfs checks pass on the assembled device), and its
``memfile.header`` a 4 MiB guest memory. Both are split into D slices; build k maps slice g to build
min(g, k) of its chain and stores only its own slices, holes elsewhere: the files are sparse and tiny
on disk. A bincode-era snapfile (Firecracker v1.12, snapshot 6.0.0) with a correct CRC, metadata.json
and an integrity manifest complete each build.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import tarfile
import tempfile
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

from e2b_artifacts import metadata
from e2b_artifacts.fsutil import data_extents
from e2b_artifacts.header import NIL_BUILD
from e2b_artifacts.manifest import write_manifest
from tests.verify.craft import header_v1_3, snapfile

BLOCK = 4096
MEM_MIB = 4
FIXTURES = Path(__file__).resolve().parent.parent.parent / "fixtures"


def tiny_sample(root: Path, build_id: str = "0b9f3c1e-0000-4000-8000-000000000014") -> Path:
    """A 4 MiB template build of the bundled sample rootfs with the envd stand-in as /sbin/init (no journal,
    made by ``mke2fs -d``, so a thousand of them stay small), with metadata as ``build`` writes it."""
    d = root / build_id
    d.mkdir(parents=True)
    with tempfile.TemporaryDirectory(prefix="fleet-tree-") as tmp:
        tree = Path(tmp)
        with tarfile.open(FIXTURES / "sample-rootfs.tar") as tar:
            members = [m for m in tar.getmembers() if not (m.ischr() or m.isblk())]
            tar.extractall(tree, members=members, filter="fully_trusted")
        shutil.copy2(FIXTURES / "envd-standin" / "envd", tree / "usr" / "bin" / "envd")
        (tree / "sbin" / "init").symlink_to("/usr/bin/envd")
        subprocess.run(["mke2fs", "-q", "-F", "-t", "ext4", "-b", "4096", "-O", "^has_journal", "-d", str(tree),
                        str(d / "rootfs.ext4"), "4M"], check=True, capture_output=True)
    md = metadata.Metadata(build_id, "vmlinux-6.1.102", "v1.12.1_d990331")
    md.ext.update(init="envd", vcpu=2, ram_mb=MEM_MIB)
    md.write(d / "metadata.json")
    return d


def _slices(blocks: Sequence[int], count: int) -> list[list[int]]:
    """``blocks`` cut into ``count`` contiguous, nearly equal slices."""
    per, extra = divmod(len(blocks), count)
    out, at = [], 0
    for g in range(count):
        n = per + (1 if g < extra else 0)
        out.append(list(blocks[at:at + n]))
        at += n
    return out


def _mappings(size: int, owner_of: dict[int, str]) -> list[tuple[int, int, str, int]]:
    """Cover [0, size) in runs of one owner (NIL where nobody owns the block); storage offset = offset."""
    runs: list[tuple[int, int, str, int]] = []
    for block in range(size // BLOCK):
        owner = owner_of.get(block, NIL_BUILD)
        offset = block * BLOCK
        if runs and runs[-1][2] == owner:
            start, length, _, _ = runs[-1]
            runs[-1] = (start, length + BLOCK, owner, start if owner != NIL_BUILD else 0)
        else:
            runs.append((offset, BLOCK, owner, offset if owner != NIL_BUILD else 0))
    return runs


class FleetMaker:
    """Writes chains of builds under ``root`` from one sample build (its rootfs and metadata)."""

    def __init__(self, sample: Path, root: Path, *, seed: int = 14) -> None:
        self.root = root
        self.sample_md = metadata.read(sample / "metadata.json")
        self.image = (sample / "rootfs.ext4").read_bytes()
        with (sample / "rootfs.ext4").open("rb") as fh:
            extents = list(data_extents(fh.fileno(), len(self.image)))
        self.data_blocks = sorted({b for start, end in extents for b in range(start // BLOCK, -(-end // BLOCK))})
        self.mem_blocks = list(range((MEM_MIB << 20) // BLOCK))
        self.snapfile = snapfile("bincode", version="6.0.0", mem_mib=MEM_MIB)
        self.rng = random.Random(seed)

    def chain(self, depth: int) -> list[str]:
        ids = [str(uuid.UUID(int=self.rng.getrandbits(128), version=4)) for _ in range(depth)]
        rootfs_slices = _slices(self.data_blocks, depth)
        mem_slices = _slices(self.mem_blocks, depth)
        for k, build_id in enumerate(ids):
            d = self.root / build_id
            d.mkdir(parents=True)
            rootfs_owner = {b: ids[min(g, k)] for g, s in enumerate(rootfs_slices) for b in s}
            mem_owner = {b: ids[min(g, k)] for g, s in enumerate(mem_slices) for b in s}
            self._data_file(d / "rootfs.ext4", len(self.image), [b for b, o in rootfs_owner.items() if o == build_id],
                            lambda b: self.image[b * BLOCK:(b + 1) * BLOCK])
            own_mem = [s[0] for g, s in enumerate(mem_slices) if s and min(g, k) == k]
            self._data_file(d / "memfile", MEM_MIB << 20, own_mem, lambda _b: self.rng.randbytes(BLOCK))
            for name, size, owners in (("rootfs.ext4.header", len(self.image), rootfs_owner),
                                       ("memfile.header", MEM_MIB << 20, mem_owner)):
                (d / name).write_bytes(header_v1_3(version=3, size=size, generation=k, build_id=build_id,
                                                   base_build_id=ids[0], mappings=_mappings(size, owners)))
            (d / "snapfile").write_bytes(self.snapfile)
            md = metadata.Metadata(build_id, self.sample_md.kernel_version, self.sample_md.firecracker_version,
                                   extra={k2: v for k2, v in self.sample_md.extra.items()})
            md.ext["ram_mb"] = MEM_MIB
            md.write(d / "metadata.json")
            write_manifest(d, build_id)
        return ids

    @staticmethod
    def _data_file(path: Path, size: int, blocks: list[int], data_of: Callable[[int], bytes]) -> None:
        with path.open("wb") as fh:
            os.ftruncate(fh.fileno(), size)
            for b in blocks:
                os.pwrite(fh.fileno(), data_of(b), b * BLOCK)


def make_fleet(sample: Path, root: Path, depths: Sequence[int], *, seed: int = 14) -> list[list[str]]:
    """Chains of the given depths under ``root``; returns their build ids, parents first."""
    maker = FleetMaker(sample, root, seed=seed)
    return [maker.chain(depth) for depth in depths]


def break_missing_header(build_dir: Path) -> None:
    """The header disappears (the Local-storage header failure): the manifest still lists it."""
    (build_dir / "memfile.header").unlink()


def break_snapfile_crc(build_dir: Path) -> None:
    """One flipped byte in the vmstate: Firecracker's CRC64 check fails on resume."""
    path = build_dir / "snapfile"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x5A
    path.write_bytes(bytes(data))


def break_rootfs(build_dir: Path) -> None:
    """Garbage over the ext4 superblock (offset 1024) of a build that stores its whole image."""
    with (build_dir / "rootfs.ext4").open("r+b") as fh:
        os.pwrite(fh.fileno(), bytes(range(256)) * 4, 1024)


def copy_storage(src: Path, dst: Path) -> Path:
    """A copy of a storage directory that keeps holes (shutil's copy does not)."""
    from e2b_artifacts.fsutil import copy_sparse

    for build in sorted(src.iterdir()):
        (dst / build.name).mkdir(parents=True)
        for f in build.iterdir():
            copy_sparse(f, dst / build.name / f.name, durable=False)
            shutil.copystat(f, dst / build.name / f.name)
    return dst
