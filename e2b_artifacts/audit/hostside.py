"""What the template storage and this host's orchestrator caches hold.

Storage: every build (``fleet.listing``) and the builds its headers map data to (``header.parent_build_ids``:
the ids a ``memfile.header`` / ``rootfs.ext4.header`` names besides its own; a diff layer reads those blocks
from them). Only the headers are read, never the data.

Caches, keyed by build id as the orchestrator keys them (``settings.py``, ``coldstart.CACHE_SETTINGS``):
``$TEMPLATE_CACHE_DIR/<build-id>/``, ``$SHARED_CHUNK_CACHE_PATH/<build-id>/`` and UUID-named entries of
``$SNAPSHOT_CACHE_DIR``. Upstream's build ids are UUIDs, so a cache entry whose name is not one is not a build's
and is left alone, as are hidden names (this tool's own quarantine beside them).
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from .. import layout
from ..errors import ArtifactError
from ..fleet.listing import list_builds
from ..header import parent_build_ids
from ..settings import Settings
from ..storage import Storage

CACHE_SETTINGS = ("TEMPLATE_CACHE_DIR", "SHARED_CHUNK_CACHE_PATH", "SNAPSHOT_CACHE_DIR")


@dataclass
class StorageView:
    location: str
    local_root: Path | None  # the directory, when the storage is one (only then can --fix move builds)
    builds: set[str] = field(default_factory=set)
    parents: dict[str, tuple[str, ...]] = field(default_factory=dict)  # build -> builds its headers map to

    def missing_parents(self, build_id: str) -> list[str]:
        return [p for p in self.parents.get(build_id, ()) if p not in self.builds]


def read_storage(store: Storage) -> StorageView:
    from ..storage.local import LocalStorage

    view = StorageView(store.url, store.root if isinstance(store, LocalStorage) else None)
    for build in list_builds(store).builds:
        view.builds.add(build.build_id)
        found: set[str] = set()
        for name in layout.HEADERS:
            if name not in build.files:
                continue
            try:
                found.update(parent_build_ids(store.read_all(f"{build.build_id}/{name}"), build.build_id,
                                              f"{store.url}/{build.build_id}/{name}"))
            except ArtifactError:
                continue  # an unreadable header is verify's finding; audit judges the chains it can read
        if found:
            view.parents[build.build_id] = tuple(sorted(found))
    return view


@dataclass(frozen=True)
class CacheEntry:
    setting: str  # TEMPLATE_CACHE_DIR, ...
    build_id: str
    path: Path


def _is_uuid(name: str) -> bool:
    try:
        return str(uuid.UUID(name)) == name.lower()
    except ValueError:
        return False


def read_caches(settings: Settings) -> list[CacheEntry]:
    entries: list[CacheEntry] = []
    seen: set[Path] = set()
    for name in CACHE_SETTINGS:
        value = settings[name].value
        if not value or not os.path.isdir(value) or Path(value).resolve() in seen:
            continue
        seen.add(Path(value).resolve())
        with os.scandir(value) as it:
            for entry in it:
                if not entry.name.startswith(".") and _is_uuid(entry.name):
                    entries.append(CacheEntry(name, entry.name.lower(), Path(entry.path)))
    return sorted(entries, key=lambda e: (e.setting, e.build_id))
