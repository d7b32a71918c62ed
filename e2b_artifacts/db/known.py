"""The migrations this tool knows, read from ``data/migrations.json``.

Each entry is one of E2B's goose migrations (e2b-dev/infra ``packages/db/migrations``):
its version, its name, the tables/columns it adds that the API reads or ``register``
writes, and, where the change is a plain idempotent add whose absence breaks the API,
the SQL that makes up for it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    adds: dict[str, tuple[str, ...]] = field(default_factory=dict)
    breaks: str = ""  # what fails in the API without it
    fix_sql: str = ""  # idempotent SQL equivalent to the Up section, when that is a plain add
    notes: str = ""

    @property
    def file_name(self) -> str:
        return f"{self.version}_{self.name}.sql"


@dataclass(frozen=True)
class LookupQuery:
    key: str
    source: str
    sql: str


@dataclass(frozen=True)
class Known:
    migrations: tuple[Migration, ...]
    goose_tables: tuple[str, ...]
    migrate_command: str
    migrate_missing_command: str
    core_tables: tuple[str, ...]
    lookups: dict[str, LookupQuery]


def _migration(raw: dict[str, Any]) -> Migration:
    return Migration(version=int(raw["version"]), name=str(raw["name"]),
                     adds={t: tuple(cols) for t, cols in raw.get("adds", {}).items()},
                     breaks=raw.get("breaks", ""), fix_sql=raw.get("fix_sql", ""), notes=raw.get("notes", ""))


@cache
def load() -> Known:
    doc = json.loads(resources.files("e2b_artifacts").joinpath("data/migrations.json").read_text())
    migrations = tuple(sorted((_migration(m) for m in doc["migrations"]), key=lambda m: m.version))
    lookups = {key: LookupQuery(key=key, source=q["source"], sql=q["sql"])
               for key, q in doc["lookup_queries"].items()}
    return Known(migrations=migrations, goose_tables=tuple(doc["goose_tables"]),
                 migrate_command=doc["migrate_command"], migrate_missing_command=doc["migrate_missing_command"],
                 core_tables=tuple(doc["core_tables"]), lookups=lookups)
