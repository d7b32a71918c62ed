"""The build directory ``<storage>/<build-id>/`` as one concept.

What a build id may be; the name of every file a build holds (upstream's object
names, the compressed variants and their size sidecars); the hidden names beside
and inside a build (lock, staging, replaced builds, quarantine); the lock that
serializes writers of one build id; and how a new build is put in place: filled
in a staging directory beside the target (:func:`stage`), then renamed into place
in one step (:func:`publish`), an existing build moved aside, never deleted.

Only the standard library and this package's errors and fsutil are imported here,
so every module can use it without pulling in heavier code.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .errors import ArtifactError, ExitCode
from .fsutil import exclusive_lock, unused_path

# ---- build ids -------------------------------------------------------------------------------

BUILD_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def check_build_id(build_id: str) -> str:
    """``build_id`` when it can name a directory of its own (a UUID, or letters, digits, ``._-``)."""
    if not BUILD_ID_RE.fullmatch(build_id):  # fullmatch: "$" would let a trailing newline through
        raise ArtifactError(f"invalid build id {build_id!r}",
                            hint="use a UUID (the default) or letters, digits, '.', '_' and '-'",
                            code=ExitCode.USAGE)
    return build_id


# ---- files of a build ------------------------------------------------------------------------

ROOTFS = "rootfs.ext4"
MEMFILE = "memfile"
SNAPFILE = "snapfile"
HEADER_SUFFIX = ".header"
MEMFILE_HEADER = MEMFILE + HEADER_SUFFIX
ROOTFS_HEADER = ROOTFS + HEADER_SUFFIX
METADATA = "metadata.json"
MANIFEST = "artifact-manifest.json"  # this tool's integrity manifest; upstream ignores it
PLAIN_RECORD = "artifact-plain.json"  # in a build this tool compressed: how to give back its plain files

DATA_FILES = (MEMFILE, ROOTFS)  # the files headers map blocks of
HEADERS = (MEMFILE_HEADER, ROOTFS_HEADER)
DATA_FILE_OF = {MEMFILE_HEADER: MEMFILE, ROOTFS_HEADER: ROOTFS}  # header name -> the data file it describes
HEADER_OF = {data: header for header, data in DATA_FILE_OF.items()}

LZ4_SUFFIX = ".lz4"
ZSTD_SUFFIX = ".zstd"
COMPRESSED_SUFFIXES = (LZ4_SUFFIX, ZSTD_SUFFIX)  # a data file stored compressed: ``memfile.zstd``
UNCOMPRESSED_SIZE_SUFFIX = ".uncompressed-size"  # sidecar of a compressed object: decimal size of its data


def compressed_names(data_name: str) -> tuple[str, ...]:
    """The names ``data_name`` has when stored compressed (``memfile.lz4``, ``memfile.zstd``)."""
    return tuple(data_name + suffix for suffix in COMPRESSED_SUFFIXES)


def uncompressed_size_name(compressed_name: str) -> str:
    """The sidecar holding the uncompressed size of ``compressed_name`` (``memfile.lz4.uncompressed-size``)."""
    return compressed_name + UNCOMPRESSED_SIZE_SUFFIX


def data_name_of(name: str) -> str:
    """``name`` without a compression suffix (``memfile.zstd`` -> ``memfile``); other names unchanged."""
    for suffix in COMPRESSED_SUFFIXES:
        if name.endswith(suffix):
            return name.removesuffix(suffix)
    return name


def is_snapshot_name(name: str) -> bool:
    """Files that make up the snapshot: ``snapfile``, ``memfile``, ``memfile.*``/``snapfile.*`` (headers,
    compressed forms, sidecars). Quarantined together by a cold start."""
    return name in (SNAPFILE, MEMFILE) or name.startswith((MEMFILE + ".", SNAPFILE + "."))


# ---- hidden names beside and inside a build ---------------------------------------------------

QUARANTINE_DIR = ".quarantine"  # inside a build: what a cold start moved aside, per timestamp
REPLACED_DIR = ".replaced"  # beside the builds: builds replaced by a newer one, as ``<id>.<timestamp>``
LOCK_SUFFIX = ".lock"
STAGING_INFIX = ".staging-"  # ``.<id>.staging-<random>``: a build being written
RESUMABLE_STAGING_SUFFIX = ".sync-partial"  # ``.<id>.sync-partial``: a pull kept for the next run to resume
PUSH_UPLOADS_SUFFIX = ".push-uploads.json"  # ``.<id>.push-uploads.json``: a killed push's unfinished uploads
COMPRESSED_INFIX = ".compressed-"  # ``.<id>.compressed-zstd``: the compressed form a push --compress sends


AUDIT_QUARANTINE_DIR = ".audit-quarantine"  # beside the builds: builds ``audit --fix`` moved aside, per timestamp
LEFTOVERS_DIR = ".leftovers"  # beside the builds: stale staging dirs and temp files of killed runs, per timestamp
_TEMP_FILE_RE = re.compile(r"\..+\.tmp")  # what fsutil.atomic_write_bytes writes before its rename


def lock_path(storage: Path, build_id: str) -> Path:
    return storage / f".{build_id}{LOCK_SUFFIX}"


def staging_prefix(build_id: str) -> str:
    return f".{build_id}{STAGING_INFIX}"


def resumable_staging_dir(storage: Path, build_id: str) -> Path:
    return storage / f".{build_id}{RESUMABLE_STAGING_SUFFIX}"


def push_uploads_path(storage: Path, build_id: str) -> Path:
    """The record of the multipart uploads a push of ``build_id`` started and has not completed."""
    return storage / f".{build_id}{PUSH_UPLOADS_SUFFIX}"


def compressed_staging_dir(storage: Path, build_id: str, codec: str) -> Path:
    """Where ``sync push --compress`` puts the compressed form of ``build_id`` it sends (kept until sent)."""
    return storage / f".{build_id}{COMPRESSED_INFIX}{codec}"


def replaced_dir(storage: Path) -> Path:
    return storage / REPLACED_DIR


def audit_quarantine_dir(storage: Path, timestamp: str) -> Path:
    """Where ``audit --fix`` moves the builds of one run: ``<storage>/.audit-quarantine/<timestamp>/<build-id>``."""
    return storage / AUDIT_QUARANTINE_DIR / timestamp


# ---- writing a build -------------------------------------------------------------------------

@contextlib.contextmanager
def lock(storage: Path, build_id: str) -> Iterator[None]:
    """Hold the exclusive lock of ``build_id`` in ``storage`` (exit code 6 when another process holds it).

    Everything that writes a build or moves its files takes it. The ``.<id>.lock`` file exists only
    while it is held.
    """
    with exclusive_lock(lock_path(storage, build_id), f"build {build_id}"):
        yield


def sweep_stale(storage: Path, build_id: str, *, staging: bool = True) -> list[tuple[Path, Path]]:
    """Move what killed runs left of ``build_id`` into ``<storage>/.leftovers/<UTC timestamp>/``: its
    ``.<id>.staging-*`` directories and the ``.<name>.*.tmp`` files of interrupted atomic writes inside
    the build. Call it holding :func:`lock`: whoever wrote them held that lock, so they are stale.
    Returns the (from, to) pairs; nothing is deleted. ``staging=False``: the caller listed the storage
    and saw no ``.<id>.staging-*`` there, so it is not listed again (``verify --all`` would otherwise list
    a storage of N builds N times).
    """
    stale = [Path(e.path) for e in os.scandir(storage) if e.name.startswith(staging_prefix(build_id))
             and e.is_dir(follow_symlinks=False)] if staging and storage.is_dir() else []
    build_dir = storage / build_id
    if build_dir.is_dir():
        stale += [Path(e.path) for e in os.scandir(build_dir) if _TEMP_FILE_RE.fullmatch(e.name)
                  and e.is_file(follow_symlinks=False)]
    if not stale:
        return []
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    moves = []
    for path in sorted(stale):
        dest_dir = storage / LEFTOVERS_DIR / stamp / (build_id if path.parent == build_dir else "")
        dest_dir.mkdir(parents=True, exist_ok=True)
        dest = unused_path(dest_dir / path.name)
        os.rename(path, dest)
        moves.append((path, dest))
    return moves


@contextlib.contextmanager
def stage(storage: Path, build_id: str, *, resumable: bool = False) -> Iterator[Path]:
    """A staging directory beside ``<storage>/<build_id>`` to fill, then hand to :func:`publish`.

    It is a fresh ``.<id>.staging-*`` directory, removed when the block ends without publishing it
    (it only ever holds what the caller wrote). ``resumable`` uses ``.<id>.sync-partial`` instead,
    created if missing and kept on failure, so that a re-run can continue from what is there.
    Take :func:`lock` first.
    """
    storage.mkdir(parents=True, exist_ok=True)
    if resumable:
        staging = resumable_staging_dir(storage, build_id)
        staging.mkdir(mode=0o755, exist_ok=True)
        yield staging
        return
    staging = Path(tempfile.mkdtemp(prefix=staging_prefix(build_id), dir=storage))
    try:
        yield staging
    finally:
        if staging.exists():  # not published: our own staging dir, never user data
            shutil.rmtree(staging, ignore_errors=True)


def publish(staging: Path, target: Path, *, replace: bool = False) -> Path | None:
    """Make ``staging`` the build at ``target``: its files and itself fsynced, then one rename.

    An existing ``target`` is refused (exit code 6) unless ``replace``; then it moves to
    ``.replaced/<id>.<UTC timestamp>`` beside it first (never deleted; put back if the rename fails),
    and that path is returned.
    """
    for entry in os.scandir(staging):
        if entry.is_file(follow_symlinks=False):
            _fsync(Path(entry.path), os.O_RDONLY)
    os.chmod(staging, 0o755)
    _fsync(staging, os.O_RDONLY | os.O_DIRECTORY)
    aside = None
    if target.exists() or target.is_symlink():
        if not replace:
            raise ArtifactError(f"build {target.name} already exists at {target}",
                                hint="another process wrote it meanwhile; check it, or choose another build id",
                                code=ExitCode.CONFLICT)
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
        aside = unused_path(replaced_dir(target.parent) / f"{target.name}.{stamp}")
        aside.parent.mkdir(exist_ok=True)
        os.rename(target, aside)
    try:
        os.rename(staging, target)
    except OSError:
        if aside is not None:
            os.rename(aside, target)  # put the old build back
        raise
    _fsync(target.parent, os.O_RDONLY | os.O_DIRECTORY)
    return aside


def _fsync(path: Path, flags: int) -> None:
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
