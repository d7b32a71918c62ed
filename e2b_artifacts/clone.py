"""Clone a build under a new build id: sparse-aware copy, ids rewritten, manifest rewritten, copy verified."""

from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass
from pathlib import Path

from . import header as header_mod
from . import layout, manifest, metadata
from .errors import ArtifactError, ExitCode
from .fsutil import copy_sparse


@dataclass
class CloneResult:
    source: Path
    target: Path
    build_id: str
    files: list[str]
    rewritten: list[str]
    warnings: list[str] = dataclasses.field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        return {"ok": True, "source": str(self.source), "target": str(self.target), "build_id": self.build_id,
                "files": self.files, "rewritten": self.rewritten, "warnings": self.warnings}


def clone(source: Path, storage: Path, *, build_id: str | None = None, template_id: str | None = None,
          force: bool = False) -> CloneResult:
    """Copy build ``source`` to ``<storage>/<build_id>`` with ids rewritten in metadata and headers.

    The source is checked against its own manifest first: a clone never blesses bytes that manifest
    rejects. With ``force`` it is copied anyway, the mismatches are carried as warnings, and the copy's
    manifest keeps the source's recorded hashes, so the copy fails verify the way its source does.
    """
    if not source.is_dir():
        raise ArtifactError(f"build directory {source} not found", hint="check the build id (e2b-artifact paths)",
                            code=ExitCode.BAD_INPUT)
    new_id = layout.check_build_id(build_id or str(uuid.uuid4()))
    old_id = source.name
    md = metadata.read(source / layout.METADATA)
    recorded, warnings = _check_source(source, force)
    target = storage / new_id
    with layout.lock(storage, new_id):
        warnings += [f"moved {old.name}, left by an interrupted run, to {moved}"
                     for old, moved in layout.sweep_stale(storage, new_id)]
        if target.exists():
            raise ArtifactError(f"build {new_id} already exists at {target}", hint="choose another --build-id",
                                code=ExitCode.CONFLICT)
        with layout.stage(storage, new_id) as stage:
            result = CloneResult(source, target, new_id, [], [], warnings)
            for path in manifest.artifact_files(source):
                if path.name in (layout.METADATA, layout.PLAIN_RECORD):  # the record names the old id throughout
                    continue
                if path.name in layout.DATA_FILE_OF:
                    (stage / path.name).write_bytes(_rewrite_header(path, old_id, new_id))
                    result.rewritten.append(path.name)
                else:
                    copy_sparse(path, stage / path.name)
                result.files.append(path.name)
            md.build_id = new_id
            if template_id is not None:
                md.template_id = template_id
            md.ext["cloned_from"] = old_id
            md.write(stage / layout.METADATA)
            result.files.append(layout.METADATA)
            result.rewritten.append(layout.METADATA)
            manifest.write_entries(stage, new_id, {
                path.name: recorded[path.name] if path.name in recorded and path.name not in result.rewritten
                else manifest.entry_for(path) for path in manifest.artifact_files(stage)})
            layout.publish(stage, target)
    return result


def _check_source(source: Path, force: bool) -> tuple[dict[str, manifest.FileEntry], list[str]]:
    """The source's recorded entries (with a hash) to carry into the copy, and warnings for the copy."""
    recorded = manifest.load_manifest(source)
    if recorded is None:
        return {}, [f"{source.name} has no {layout.MANIFEST}: the copy's hashes are of its bytes as read, "
                    "not checked against a record"]
    bad = [m for m in manifest.check_manifest(source, manifest=recorded) if m.problem != "unlisted"]
    if bad and not force:
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise ArtifactError(f"source {source.name} does not match its {layout.MANIFEST}: {bad[0].message}{more}; "
                            "nothing copied",
                            hint=f"restore the source from a good copy (e2b-artifact verify {source.name}); --force "
                                 "clones it anyway, and the copy then fails verify the same way",
                            code=ExitCode.INTEGRITY)
    warnings = [f"cloned with --force from a source that does not match its manifest: {m.message}" for m in bad]
    return {name: e for name, e in recorded.files.items() if e.blake3 is not None}, warnings


def _rewrite_header(path: Path, old_id: str, new_id: str) -> bytes:
    """The header with ``old_id`` replaced by ``new_id`` (build id, base id when equal, own mappings)."""
    hdr = header_mod.read_header(path)
    try:
        old_uuid, new_uuid = str(uuid.UUID(old_id)), str(uuid.UUID(new_id))
    except ValueError as exc:
        raise ArtifactError(f"{path.name}: headers name builds by UUID; {old_id!r} or {new_id!r} is not one",
                            hint="clone with a UUID --build-id (the default)", code=ExitCode.USAGE) from exc
    if hdr.version not in (1, 2, 3, 4):
        raise ArtifactError(f"{path}: version {hdr.version} headers cannot be rewritten by this tool",
                            hint="re-export the source build with v3 or v4 headers", code=ExitCode.BAD_INPUT)

    def swap(value: str) -> str:
        return new_uuid if value == old_uuid else value

    mappings = [dataclasses.replace(m, build_id=swap(m.build_id)) for m in hdr.mappings]
    builds = {swap(b): record for b, record in hdr.builds.items()}  # v4: the build's own record moves with it
    return header_mod.serialize(dataclasses.replace(hdr, build_id=swap(hdr.build_id), builds=builds,
                                                    base_build_id=swap(hdr.base_build_id), mappings=mappings))
