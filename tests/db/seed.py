"""Fresh E2B databases on the test PostgreSQL (``pg`` in tests/conftest.py), for ``db``/``register``/``audit``.

One counter for the whole run, so every module's databases get distinct names on the one server.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import psycopg

from tests.db import goose, pgserver


@dataclass
class Db:
    url: str
    name: str
    team_id: str

    def rows(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.url) as conn:
            return conn.execute(sql, params or None).fetchall()


_counter = iter(range(1_000_000))


def next_name() -> str:
    """A database name no other test of this run uses."""
    return f"e2b_{next(_counter)}"


def make_db(pg: pgserver.PgServer, up_to: int | None = None, skip: tuple[int, ...] = ()) -> Db:
    """A fresh database with the pinned migrations applied, plus one tier and one team (as E2B's seed does)."""
    name = next_name()
    with psycopg.connect(pg.url(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    url = pg.url(name)
    goose.apply(url, goose.files(up_to=up_to, skip=skip))
    team = str(uuid.uuid4())
    with psycopg.connect(url) as conn:
        conn.execute("INSERT INTO tiers (id, name, concurrent_instances) VALUES ('base_v1', 'Base', 20)")
        cols = conn.execute("SELECT column_name FROM information_schema.columns "
                            "WHERE table_name = 'teams' AND column_name = 'is_default'").fetchall()
        if cols:  # dropped by a 2025 migration that is not pinned (teams is not read here)
            conn.execute("INSERT INTO teams (id, name, tier, is_default) VALUES (%s, 'local', 'base_v1', true)",
                         (team,))
        else:
            conn.execute("INSERT INTO teams (id, name, tier) VALUES (%s, 'local', 'base_v1')", (team,))
    return Db(url=url, name=name, team_id=team)
