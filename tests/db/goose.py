"""Apply goose-format migration files the way goose does, for building test schemas.

Runs the ``-- +goose Up`` section of each file: a ``StatementBegin``/``StatementEnd`` block is one
statement, elsewhere a statement ends at a line ending in ``;``. Each statement runs on its own in
autocommit mode (so ``CREATE INDEX CONCURRENTLY`` and procedures that ``COMMIT`` work, as under
goose's ``NO TRANSACTION``); then the version is recorded in the goose table.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

import psycopg

MIGRATIONS = Path(__file__).parent / "migrations"
VERSION_RE = re.compile(r"^(\d+)_.*\.sql$")


def version_of(path: Path) -> int:
    match = VERSION_RE.match(path.name)
    assert match, path
    return int(match.group(1))


def up_statements(text: str) -> list[str]:
    statements: list[str] = []
    buffer: list[str] = []
    in_up = in_block = False
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("-- +goose"):
            word = stripped[len("-- +goose"):].strip().split()[0] if stripped[len("-- +goose"):].strip() else ""
            if word == "Up":
                in_up = True
            elif word == "Down":
                break
            elif word == "StatementBegin":
                in_block = True
            elif word == "StatementEnd":
                in_block = False
                if "".join(buffer).strip():
                    statements.append("\n".join(buffer))
                buffer = []
            continue
        if not in_up:
            continue
        buffer.append(line)
        if not in_block and stripped.endswith(";") and not stripped.startswith("--"):
            statements.append("\n".join(buffer))
            buffer = []
    if "".join(ln for ln in buffer if not ln.strip().startswith("--")).strip():
        statements.append("\n".join(buffer))
    return statements


def files(up_to: int | None = None, skip: Iterable[int] = ()) -> list[Path]:
    skipped = set(skip)
    return [p for p in sorted(MIGRATIONS.glob("*.sql"))
            if (up_to is None or version_of(p) <= up_to) and version_of(p) not in skipped]


def apply(url: str, paths: Iterable[Path], table: str = "_migrations") -> list[int]:
    applied = []
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE IF NOT EXISTS public.{table} (id serial PRIMARY KEY, "
                     "version_id bigint NOT NULL, is_applied boolean NOT NULL, tstamp timestamp DEFAULT now())")
        if conn.execute(f"SELECT count(*) FROM public.{table}").fetchone() == (0,):
            conn.execute(f"INSERT INTO public.{table} (version_id, is_applied) VALUES (0, true)")
        for path in paths:
            for statement in up_statements(path.read_text()):
                try:
                    conn.execute(statement)
                except psycopg.Error as exc:
                    raise RuntimeError(f"{path.name}: {exc}\n--- statement ---\n{statement}") from exc
            conn.execute(f"INSERT INTO public.{table} (version_id, is_applied) VALUES (%s, true)",
                         (version_of(path),))
            applied.append(version_of(path))
    return applied
