"""Put envd into an ext4 image and make it start, without mounting or root.

``envd`` mode: ``/usr/bin/envd`` (0755, 0:0) and ``/sbin/init -> /usr/bin/envd``.
``systemd`` mode (what upstream E2B does): envd plus an enabled ``envd.service``;
``/sbin/init`` is left alone and must resolve inside the image.

All writes are one debugfs batch recorded in an undo file; the result is read
back and checked with ``e2fsck -fn``; on any failure the undo files put the
input image back byte for byte. A second run with the same inputs writes nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Literal

from . import e2fsprogs, limits
from .e2fsprogs import Ext4Image, Inode, quote
from .errors import ArtifactError, ExitCode
from .fsutil import read_input
from .stages import StageTimes

InitMode = Literal["envd", "systemd"]
ENVD_PATH = "/usr/bin/envd"
INIT_PATH = "/sbin/init"
UNIT_PATH = "/etc/systemd/system/envd.service"
WANTS_LINK = "/etc/systemd/system/multi-user.target.wants/envd.service"
# Modelled on upstream's HEAD envd unit: envd runs directly, restarts forever.
UNIT_TEXT = """\
[Unit]
Description=E2B envd
DefaultDependencies=no
After=local-fs.target

[Service]
Type=simple
User=root
Group=root
ExecStart=/usr/bin/envd
Restart=always
OOMScoreAdjust=-1000
Environment=GOMEMLIMIT=80MiB

[Install]
WantedBy=multi-user.target
"""
# envd mode records what /sbin/init was before it replaced it, so systemd mode can put it back.
INIT_RECORD_PATH = "/etc/e2b-artifact/init-before-envd"
SAVED_INIT_PATH = "/sbin/init.before-envd"  # a regular /sbin/init moved aside by envd mode
SYSTEMD_CANDIDATES = ("/lib/systemd/systemd", "/usr/lib/systemd/systemd")
MOUNTPOINTS = {"/proc": "040555", "/sys": "040555", "/dev": "040755"}  # the guest mounts proc, sysfs, devtmpfs
_MARGIN_BLOCKS = 64  # directories, extent blocks, the unit file
_UNIT_SOURCE = "<unit-file>"  # replaced by the temp file holding UNIT_TEXT when the script runs
_RECORD_SOURCE = "<record-file>"  # replaced by the temp file holding the init record


@dataclass
class InjectResult:
    image: str
    init: str
    changed: bool
    grown_to: int | None = None
    envd_sha256: str = ""
    actions: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        return {"ok": True, "image": self.image, "init": self.init, "changed": self.changed,
                "grown_to_bytes": self.grown_to, "envd_sha256": self.envd_sha256, "actions": self.actions}


@dataclass(frozen=True)
class _Plan:
    envd_dir: str  # /usr/bin, resolved inside the image
    init_link: str | None  # where /sbin/init lives after resolving its parent (envd mode)
    commands: list[str]
    actions: list[str]
    record: str = ""  # the text of INIT_RECORD_PATH to write ("" = none)


def inject(image: Path, envd: Path, *, init: InitMode = "envd", grow: bool = True,
           times: StageTimes | None = None) -> InjectResult:
    """Install ``envd`` into ``image`` (in place, atomically in effect: all or nothing).

    ``times`` (optional) gets the closing ``e2fsck -fn`` as its ``fsck`` stage."""
    times = times if times is not None else StageTimes()
    envd_bytes = read_envd(envd)
    geo = e2fsprogs.geometry(image)  # also rejects non-ext4 input with a clear error
    view = Ext4Image(image)
    plan = _plan(view, envd, envd_bytes, init)
    result = InjectResult(str(image), init, changed=bool(plan.commands),
                          envd_sha256=hashlib.sha256(envd_bytes).hexdigest(), actions=plan.actions)
    if not plan.commands:
        return result
    needed = _blocks(len(envd_bytes)) + _MARGIN_BLOCKS
    if geo.free_blocks < needed or geo.free_inodes < 8:
        if not grow:
            raise ArtifactError(
                f"{image.name} is full: {geo.free_blocks * geo.block_size // 1024} KiB free, "
                f"envd needs {needed * geo.block_size // 1024} KiB",
                hint="drop --no-grow to let inject grow the image with resize2fs, or resize2fs it yourself",
                code=ExitCode.NO_SPACE)
        result.grown_to = (geo.block_count + needed + 256) * geo.block_size
    original_size = image.stat().st_size
    with _scratch(image) as scratch:
        resize_undo, debugfs_undo, unit_file = scratch / "resize.undo", scratch / "debugfs.undo", scratch / "unit"
        unit_file.write_text(UNIT_TEXT)
        record_file = scratch / "record"
        record_file.write_text(plan.record)
        commands = [c.replace(_UNIT_SOURCE, quote(str(unit_file))).replace(_RECORD_SOURCE, quote(str(record_file)))
                    for c in plan.commands]
        try:
            if result.grown_to is not None:
                e2fsprogs.resize(image, result.grown_to, undo_file=resize_undo)
            out = e2fsprogs.debugfs(image, commands, write=True, undo_file=debugfs_undo)
            problems = out.errors()
            if problems:
                raise ArtifactError(f"writing into {image.name} failed: {problems[0]}",
                                    hint="the image was restored; run with --debug for the debugfs script",
                                    code=ExitCode.NO_SPACE if "space" in problems[0].lower() else ExitCode.TOOL)
            _read_back(image, plan, envd_bytes, init)
            with times.stage("fsck"):
                check = e2fsprogs.fsck(image)
            if not check.clean:
                raise ArtifactError(f"e2fsck -fn reports errors after inject (exit {check.exit_code})",
                                    hint="the image was restored; please report this with --debug",
                                    code=ExitCode.TOOL)
        except BaseException:
            _restore(image, original_size, debugfs_undo, resize_undo)
            raise
    return result


def require_systemd_init(image: Path) -> None:
    """Refuse (exit 3) unless ``/sbin/init`` in ``image`` resolves to an executable file."""
    e2fsprogs.geometry(image)  # a clear error first when it is not ext*
    _require_init(Ext4Image(image))


def read_envd(envd: Path) -> bytes:
    return read_input(envd, "envd", limit=limits.ENVD,
                      missing_hint="pass --envd PATH, or set HOST_ENVD_PATH (upstream default /fc-envd/envd)")


def _blocks(n: int) -> int:
    return -(-n // e2fsprogs.BLOCK_SIZE)


def _resolve_dir(view: Ext4Image, path: str) -> str:
    """Resolve the existing part of a directory path inside the image; keep the missing tail."""
    parts = PurePosixPath(path).parts[1:]
    for i in range(len(parts), 0, -1):
        head = "/" + "/".join(parts[:i])
        node = view.stat(head)
        if node is not None:
            if node.kind not in ("dir", "symlink"):
                raise ArtifactError(f"{head} in the image is a {node.kind}, not a directory",
                                    hint=f"remove or rename {head} in the image first", code=ExitCode.BAD_INPUT)
            real = view.resolve(head)
            return str(PurePosixPath(real, *parts[i:]))
    return path


def _mkdirs(view: Ext4Image, directory: str, commands: list[str], actions: list[str]) -> None:
    """Queue ``mkdir`` for each missing component of ``directory`` (not already queued)."""
    parts = PurePosixPath(directory).parts[1:]
    chain = ["/" + "/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    queued = {c.split(" ", 1)[1] for c in commands if c.startswith("mkdir ")}
    existing = view.stat_many([d for d in chain if quote(d) not in queued])
    for d in chain:
        if quote(d) not in queued and existing[d] is None:
            commands += [f"mkdir {quote(d)}", f"sif {quote(d)} mode 040755"]
            actions.append(f"mkdir {d}")


# Everything planning and read-back look at, fetched in one debugfs run.
_PREFETCH = ("/usr", "/usr/bin", ENVD_PATH, "/sbin", INIT_PATH, "/etc", "/etc/systemd", "/etc/systemd/system",
             UNIT_PATH, str(PurePosixPath(WANTS_LINK).parent), WANTS_LINK, INIT_RECORD_PATH, SAVED_INIT_PATH,
             *SYSTEMD_CANDIDATES, *MOUNTPOINTS)


def _plan(view: Ext4Image, envd: Path, envd_bytes: bytes, init: InitMode) -> _Plan:
    view.stat_many(_PREFETCH)
    envd_dir = _resolve_dir(view, "/usr/bin")
    envd_at = f"{envd_dir}/envd"
    init_dir = _resolve_dir(view, "/sbin")
    init_link = f"{init_dir}/init"
    commands: list[str] = []
    actions: list[str] = []
    current = view.stat_many([envd_at, init_link, UNIT_PATH, WANTS_LINK])

    envd_node = current[envd_at]
    if envd_node is not None and envd_node.kind == "dir":
        raise ArtifactError(f"{envd_at} is a directory in the image", hint="remove it from the image first",
                            code=ExitCode.BAD_INPUT)
    if not _file_matches(view, envd_node, envd_at, envd_bytes, 0o755):
        _mkdirs(view, envd_dir, commands, actions)
        if envd_node is not None:
            commands.append(f"rm {quote(envd_at)}")
        mtime = int(envd.stat().st_mtime)
        commands += [f"write {quote(str(envd))} {quote(envd_at)}", f"sif {quote(envd_at)} mode 0100755",
                     f"sif {quote(envd_at)} uid 0", f"sif {quote(envd_at)} gid 0",
                     f"sif {quote(envd_at)} mtime @{mtime}"]
        actions.append(f"write {ENVD_PATH} ({len(envd_bytes)} bytes, 0755, 0:0)")

    for mountpoint, mode in MOUNTPOINTS.items():
        if view.stat(mountpoint) is None:
            commands += [f"mkdir {mountpoint}", f"sif {mountpoint} mode {mode}"]
            actions.append(f"mkdir {mountpoint}")

    if init == "envd":
        init_node = current[init_link]
        if init_node is not None and init_node.kind == "dir":
            raise ArtifactError(f"{init_link} is a directory in the image", hint="remove it from the image first",
                                code=ExitCode.BAD_INPUT)
        record = ""
        if not (init_node is not None and init_node.kind == "symlink" and init_node.target == ENVD_PATH):
            _mkdirs(view, init_dir, commands, actions)
            record = _record_original_init(view, init_node, init_link, commands, actions)
            if init_node is not None:
                was = f" (was {init_node.kind}" + (f" -> {init_node.target})" if init_node.target else ")")
            else:
                was = ""
            commands.append(f"symlink {quote(init_link)} {ENVD_PATH}")
            actions.append(f"symlink {INIT_PATH} -> {ENVD_PATH}{was}")
        return _Plan(envd_dir, init_link, commands, actions, record)

    if not _restore_original_init(view, init_link, envd_at, commands, actions):
        _require_init(view)  # after a restore, the read-back checks the init that was put back
    unit = UNIT_TEXT.encode()
    if not _file_matches(view, current[UNIT_PATH], UNIT_PATH, unit, 0o644):
        _mkdirs(view, str(PurePosixPath(UNIT_PATH).parent), commands, actions)
        if current[UNIT_PATH] is not None:
            commands.append(f"rm {quote(UNIT_PATH)}")
        commands += [f"write {_UNIT_SOURCE} {UNIT_PATH}", f"sif {UNIT_PATH} mode 0100644",
                     f"sif {UNIT_PATH} uid 0", f"sif {UNIT_PATH} gid 0"]
        actions.append(f"write {UNIT_PATH}")
    wants = current[WANTS_LINK]
    if not (wants is not None and wants.kind == "symlink" and wants.target == UNIT_PATH):
        _mkdirs(view, str(PurePosixPath(WANTS_LINK).parent), commands, actions)
        if wants is not None:
            commands.append(f"rm {quote(WANTS_LINK)}")
        commands.append(f"symlink {WANTS_LINK} {UNIT_PATH}")
        actions.append(f"enable envd.service ({WANTS_LINK} -> {UNIT_PATH})")
    return _Plan(envd_dir, None, commands, actions)


def _record_original_init(view: Ext4Image, node: Inode | None, init_link: str, commands: list[str],
                          actions: list[str]) -> str:
    """Queue the commands that take ``/sbin/init`` out of envd's way, keeping what it was; the record text."""
    if node is None:
        return ""  # nothing to put back; a record from an earlier run (if any) stays as it is
    if node.kind == "symlink":
        commands.append(f"rm {quote(init_link)}")
        record = f"symlink {node.target}\n"
    else:
        if view.stat(SAVED_INIT_PATH) is not None:
            raise ArtifactError(f"{SAVED_INIT_PATH} already exists in the image, so {INIT_PATH} cannot be kept there",
                                hint=f"move {SAVED_INIT_PATH} out of the image first", code=ExitCode.BAD_INPUT)
        # debugfs ln + unlink is a rename: the inode keeps its link count.
        commands += [f"ln {quote(init_link)} {SAVED_INIT_PATH}", f"unlink {quote(init_link)}"]
        actions.append(f"kept the original {INIT_PATH} as {SAVED_INIT_PATH}")
        record = f"file {SAVED_INIT_PATH}\n"
    _mkdirs(view, str(PurePosixPath(INIT_RECORD_PATH).parent), commands, actions)
    if view.stat(INIT_RECORD_PATH) is not None:
        commands.append(f"rm {INIT_RECORD_PATH}")
    commands += [f"write {_RECORD_SOURCE} {INIT_RECORD_PATH}", f"sif {INIT_RECORD_PATH} mode 0100644",
                 f"sif {INIT_RECORD_PATH} uid 0", f"sif {INIT_RECORD_PATH} gid 0"]
    actions.append(f"recorded the original {INIT_PATH} in {INIT_RECORD_PATH}")
    return record


def _restore_original_init(view: Ext4Image, init_link: str, envd_at: str, commands: list[str],
                           actions: list[str]) -> bool:
    """In systemd mode: undo envd mode's /sbin/init (from its record, else link the image's systemd)."""
    try:
        runs_envd = view.resolve(INIT_PATH) == envd_at
    except ArtifactError:
        runs_envd = False
    if not runs_envd:
        return False
    record = view.read(INIT_RECORD_PATH).decode(errors="replace").split() if view.stat(INIT_RECORD_PATH) else []
    commands.append(f"rm {quote(init_link)}")
    if record[:1] == ["symlink"] and len(record) == 2:
        commands.append(f"symlink {quote(init_link)} {quote(record[1])}")
        actions.append(f"symlink {INIT_PATH} -> {record[1]} (put back from {INIT_RECORD_PATH})")
    elif record[:1] == ["file"] and len(record) == 2 and view.stat(record[1]) is not None:
        commands += [f"ln {quote(record[1])} {quote(init_link)}", f"unlink {quote(record[1])}"]
        actions.append(f"moved {record[1]} back to {INIT_PATH}")
    else:
        systemd = next((c for c in SYSTEMD_CANDIDATES if (n := view.stat(c)) is not None and n.kind == "file"), None)
        if systemd is None:
            raise ArtifactError(f"{INIT_PATH} runs envd (envd mode) and the image has no record of what it was "
                                "before, nor a systemd to link instead",
                                hint="install systemd in the image, or keep --init envd", code=ExitCode.BAD_INPUT)
        commands.append(f"symlink {quote(init_link)} {systemd}")
        actions.append(f"symlink {INIT_PATH} -> {systemd} (was -> {ENVD_PATH})")
    if view.stat(INIT_RECORD_PATH) is not None:
        commands.append(f"rm {INIT_RECORD_PATH}")
    return True


def _require_init(view: Ext4Image) -> None:
    try:
        real = view.resolve(INIT_PATH)
    except ArtifactError as exc:
        raise ArtifactError(f"systemd mode needs a working /sbin/init, but {exc.message}",
                            hint="install systemd in the image (upstream links /sbin/init to systemd), "
                                 "or use --init envd", code=ExitCode.BAD_INPUT) from exc
    node = view.stat(real)
    if node is None or node.kind != "file" or not node.executable:
        raise ArtifactError(f"/sbin/init resolves to {real}, which is not an executable file",
                            hint="fix /sbin/init in the image, or use --init envd", code=ExitCode.BAD_INPUT)


def _file_matches(view: Ext4Image, node: Inode | None, path: str, content: bytes, mode: int) -> bool:
    if node is None or node.kind != "file" or node.mode != mode or node.uid != 0 or node.gid != 0:
        return False
    return node.size == len(content) and view.read(path) == content


def _read_back(image: Path, plan: _Plan, envd_bytes: bytes, init: InitMode) -> None:
    view = Ext4Image(image)  # a fresh view: nothing remembered from before the write
    envd_at = f"{plan.envd_dir}/envd"
    view.stat_many([*_PREFETCH, envd_at, *([plan.init_link] if plan.init_link else [])])
    node = view.stat(envd_at)
    if not _file_matches(view, node, envd_at, envd_bytes, 0o755):
        raise ArtifactError(f"read-back of {ENVD_PATH} does not match what was written",
                            hint="the image was restored; please report this with --debug", code=ExitCode.TOOL)
    if init == "envd":
        assert plan.init_link is not None
        link = view.stat(plan.init_link)
        if link is None or link.kind != "symlink" or link.target != ENVD_PATH:
            raise ArtifactError(f"read-back of {INIT_PATH} does not point at {ENVD_PATH}",
                                hint="the image was restored; please report this with --debug", code=ExitCode.TOOL)
        if view.resolve(INIT_PATH) != envd_at:
            raise ArtifactError(f"{INIT_PATH} does not resolve to {envd_at} inside the image",
                                hint="check for symlinks around /sbin and /usr/bin in the image", code=ExitCode.TOOL)
    else:
        unit = view.stat(UNIT_PATH)
        if not _file_matches(view, unit, UNIT_PATH, UNIT_TEXT.encode(), 0o644):
            raise ArtifactError(f"read-back of {UNIT_PATH} does not match", hint="the image was restored",
                                code=ExitCode.TOOL)
        wants = view.stat(WANTS_LINK)
        if wants is None or wants.target != UNIT_PATH:
            raise ArtifactError(f"read-back of {WANTS_LINK} is wrong", hint="the image was restored",
                                code=ExitCode.TOOL)
        _require_init(view)
        if view.resolve(INIT_PATH) == envd_at:
            raise ArtifactError(f"read-back: {INIT_PATH} still runs envd in systemd mode",
                                hint="the image was restored", code=ExitCode.TOOL)


@contextlib.contextmanager
def _scratch(image: Path) -> Iterator[Path]:
    """A private directory beside the image for undo files (same filesystem), removed afterwards."""
    with tempfile.TemporaryDirectory(prefix=f".{image.name}.inject-", dir=image.parent) as tmp:
        yield Path(tmp)


def _restore(image: Path, original_size: int, debugfs_undo: Path, resize_undo: Path) -> None:
    if debugfs_undo.exists():
        e2fsprogs.undo(debugfs_undo, image)
    if resize_undo.exists():
        e2fsprogs.undo(resize_undo, image)
    if image.stat().st_size != original_size:
        os.truncate(image, original_size)
