"""`db check` and `register` against a real PostgreSQL with schemas made from upstream's goose migrations.

Two schema versions: "2025" = the pinned migrations up to tag 2025.45 (2025-11-06), "current" = all
pinned migrations (2026: env_build_assignments, status_group trigger, envs.source, active_envs).
"""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest

from e2b_artifacts import metadata
from e2b_artifacts.db import known
from tests.conftest import assert_clean_error, cli
from tests.db import goose, pgserver
from tests.db.seed import Db, make_db, next_name

TAG_2025_45 = 20251106172810  # newest pinned migration in tag 2025.45 (2025-11-06)
M_N_BUILDS = 20251218160000  # env_build_assignments, kept in sync by a trigger until 20260204172712
ERAS = {"2025": TAG_2025_45, "2025-12": M_N_BUILDS, "current": None}
ENV_SECURE = 20250409113306
TEMPLATE = "a1b2c3d4e5f6g7h8i9j0"
KERNEL, FIRECRACKER, ENVD = "vmlinux-6.1.102", "v1.12.1_d990331", "0.2.4"
CHECK_FAILED, CONFLICT = 1, 6


def make_build(storage: Path, template_id: str | None = TEMPLATE, envd: str | None = ENVD,
               **ext: Any) -> str:
    build_id = str(uuid.uuid4())
    build_dir = storage / build_id
    build_dir.mkdir(parents=True)
    (build_dir / "rootfs.ext4").write_bytes(b"\0" * (3 << 20))
    md = metadata.Metadata(build_id=build_id, kernel_version=KERNEL, firecracker_version=FIRECRACKER,
                           template_id=template_id, envd_version=envd,
                           extra={"context": {}, "start": {"start_command": "python3 -m http.server"}})
    md.ext.update(ext)
    md.write(build_dir / "metadata.json")
    return build_id


def run(storage: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return cli("--storage", storage, *args)


def counts(db: Db) -> dict[str, int]:
    tables = ["envs", "env_builds", "env_aliases"]
    if db.rows("SELECT to_regclass('public.env_build_assignments') IS NOT NULL")[0][0]:
        tables.append("env_build_assignments")
    return {t: db.rows(f"SELECT count(*) FROM public.{t}")[0][0] for t in tables}


def api_lookup(db: Db, name: str) -> dict[str, Any]:
    """The query upstream's API of this schema version runs for a template's latest build."""
    from e2b_artifacts.db.register import api_lookup as lookup
    from e2b_artifacts.db.schema import inspect

    with psycopg.connect(db.url) as conn:
        return lookup(conn, inspect(conn), name)


@pytest.mark.parametrize("era", list(ERAS))
def test_fresh_schema_check_clean_then_register_is_what_the_api_finds(pg: pgserver.PgServer, tmp_path: Path,
                                                                      era: str) -> None:
    db = make_db(pg, up_to=ERAS[era])
    check = run(tmp_path, "db", "check", "--db", db.url, "--json")
    assert check.returncode == 0, check.stdout + check.stderr
    report = json.loads(check.stdout)
    assert report["ok"] and report["missing"] == []
    assert not [f for f in report["findings"] if f["status"] != "ok"], report["findings"]
    assert report["goose_table"] == "_migrations"

    build_id = make_build(tmp_path, vcpu=4, ram_mb=1024, free_disk_mb=700, total_disk_mb=1200)
    reg = run(tmp_path, "register", build_id, "--db", db.url, "--alias", "my-tmpl", "--json")
    assert reg.returncode == 0, reg.stdout + reg.stderr
    assert json.loads(reg.stdout)["api_lookup"]["row"]["build_id"] == build_id

    found = api_lookup(db, TEMPLATE)
    assert found == {"build_id": build_id, "kernel_version": KERNEL, "firecracker_version": FIRECRACKER,
                     "envd_version": ENVD, "status": "uploaded"}
    if era == "2025":
        assert api_lookup(db, "my-tmpl")["build_id"] == build_id  # the 2025 query also resolves aliases
    ((vcpu, ram, free, total, finished, node),) = db.rows(
        "SELECT vcpu, ram_mb, free_disk_size_mb, total_disk_size_mb, finished_at IS NOT NULL, cluster_node_id "
        "FROM env_builds WHERE id = %s", build_id)
    assert (vcpu, ram, free, total, finished) == (4, 1024, 700, 1200, True)
    # NOT NULL from 20250824185633 (in 2025.45), nullable again from 20251121101953
    assert node == ("unknown" if era == "2025" else None)
    assert db.rows("SELECT cluster_id, team_id::text FROM envs WHERE id = %s", TEMPLATE) == [(None, db.team_id)]
    assert db.rows("SELECT env_id FROM env_aliases WHERE alias = 'my-tmpl'") == [(TEMPLATE,)]
    if era != "2025":
        assert db.rows("SELECT tag FROM env_build_assignments WHERE build_id = %s", build_id) == [("default",)]
    if era == "current":
        assert db.rows("SELECT status_group FROM env_builds WHERE id = %s", build_id) == [("ready",)]
        assert db.rows("SELECT source FROM envs WHERE id = %s", TEMPLATE) == [("template",)]


def test_missing_env_secure_is_named_blocks_register_and_apply_fixes_it(pg: pgserver.PgServer,
                                                                         tmp_path: Path) -> None:
    db = make_db(pg, skip=(ENV_SECURE,))
    check = run(tmp_path, "db", "check", "--db", db.url)
    assert check.returncode == CHECK_FAILED, check.stdout + check.stderr
    assert "snapshots.env_secure" in check.stdout
    assert "20250409113306_add_envd_secured_to_snapshot" in check.stdout
    assert "ADD COLUMN IF NOT EXISTS env_secure" in check.stdout  # the exact fix

    build_id = make_build(tmp_path)
    refused = run(tmp_path, "register", build_id, "--db", db.url)
    assert_clean_error(refused, CHECK_FAILED, "snapshots.env_secure", "20250409113306")
    assert counts(db)["env_builds"] == 0

    fixed = run(tmp_path, "db", "check", "--db", db.url, "--apply", "--json")
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert json.loads(fixed.stdout)["applied"] == ["20250409113306_add_envd_secured_to_snapshot.sql"]
    assert db.rows("SELECT count(*) FROM _migrations WHERE version_id = %s AND is_applied", ENV_SECURE) == [(1,)]
    assert db.rows("SELECT data_type, is_nullable, column_default FROM information_schema.columns "
                   "WHERE table_name = 'snapshots' AND column_name = 'env_secure'") == [("boolean", "NO", "false")]

    ok = run(tmp_path, "register", build_id, "--db", db.url)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert api_lookup(db, TEMPLATE)["build_id"] == build_id


def test_check_without_apply_changes_nothing(pg: pgserver.PgServer, tmp_path: Path) -> None:
    db = make_db(pg, skip=(ENV_SECURE,))
    before = db.rows("SELECT count(*) FROM _migrations")
    assert run(tmp_path, "db", "check", "--db", db.url).returncode == CHECK_FAILED
    assert db.rows("SELECT count(*) FROM _migrations") == before
    assert db.rows("SELECT count(*) FROM information_schema.columns WHERE column_name = 'env_secure'") == [(0,)]


@pytest.mark.parametrize("era", list(ERAS))
def test_register_twice_leaves_the_same_rows(pg: pgserver.PgServer, tmp_path: Path, era: str) -> None:
    db = make_db(pg, up_to=ERAS[era])
    build_id = make_build(tmp_path)
    args = ("register", build_id, "--db", db.url, "--alias", "twice")
    assert run(tmp_path, *args).returncode == 0
    first = counts(db)
    stamps = db.rows("SELECT updated_at, finished_at FROM env_builds WHERE id = %s", build_id)
    second = run(tmp_path, *args)
    assert second.returncode == 0, second.stderr
    assert counts(db) == first
    assert set(first.values()) == {1}
    assert db.rows("SELECT updated_at, finished_at FROM env_builds WHERE id = %s", build_id) == stamps
    assert db.rows("SELECT build_count FROM envs WHERE id = %s", TEMPLATE) == [(1,)]


@pytest.mark.parametrize("era", list(ERAS))
def test_a_newer_build_takes_over_and_registering_the_older_one_again_brings_it_back(
        pg: pgserver.PgServer, tmp_path: Path, era: str) -> None:
    db = make_db(pg, up_to=ERAS[era])
    old, new = make_build(tmp_path), make_build(tmp_path)
    for build in (old, new):
        assert run(tmp_path, "register", build, "--db", db.url).returncode == 0
    assert api_lookup(db, TEMPLATE)["build_id"] == new
    assert db.rows("SELECT build_count FROM envs WHERE id = %s", TEMPLATE) == [(2,)]
    assert run(tmp_path, "register", old, "--db", db.url).returncode == 0
    assert api_lookup(db, TEMPLATE)["build_id"] == old
    assert counts(db)["env_builds"] == 2
    if era != "2025":
        assert counts(db)["env_build_assignments"] == 2


def test_dry_run_prints_the_sql_and_writes_nothing(pg: pgserver.PgServer, tmp_path: Path) -> None:
    db = make_db(pg)
    build_id = make_build(tmp_path)
    proc = run(tmp_path, "register", build_id, "--db", db.url, "--alias", "dry", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert "INSERT INTO public.env_builds" in proc.stdout and f"'{build_id}'" in proc.stdout
    assert "INSERT INTO public.env_build_assignments" in proc.stdout
    assert "rolled back" in proc.stdout
    assert counts(db) == {"envs": 0, "env_builds": 0, "env_aliases": 0, "env_build_assignments": 0}


def test_check_on_the_default_database_points_at_the_e2b_one(pg: pgserver.PgServer, tmp_path: Path) -> None:
    db = make_db(pg, up_to=TAG_2025_45)
    with_password = pg.url("postgres").replace("postgres@", "postgres:s3cret@")  # trust auth ignores it
    proc = run(tmp_path, "db", "check", "--db", with_password)
    assert proc.returncode == CHECK_FAILED
    assert "'postgres' has no E2B tables" in proc.stdout and repr(db.name) in proc.stdout
    assert f"postgresql://postgres@127.0.0.1:{pg.port}/e2b_" in proc.stdout  # (the first of them, by name)
    assert "s3cret" not in proc.stdout + proc.stderr
    refused = run(tmp_path, "register", make_build(tmp_path), "--db", pg.url("postgres"))
    assert_clean_error(refused, CHECK_FAILED, "no E2B tables")

    goose.apply(pg.url("postgres"), goose.files(up_to=TAG_2025_45))  # someone migrated 'postgres' too
    try:
        warned = run(tmp_path, "db", "check", "--db", pg.url("postgres"), "--json")
        findings = json.loads(warned.stdout)["findings"]
        assert any(f["status"] == "warn" and f["check"] == "db.database" and db.name in f["message"]
                   for f in findings), findings
        with psycopg.connect(pg.url("postgres")) as conn:
            conn.execute("INSERT INTO tiers (id, name, concurrent_instances) VALUES ('base_v1', 'Base', 20)")
            conn.execute("INSERT INTO teams (name, tier, is_default) VALUES ('local', 'base_v1', true)")
        registered = run(tmp_path, "register", make_build(tmp_path), "--db", pg.url("postgres"))
        assert registered.returncode == 0, registered.stderr
        assert "warning: connected to the default database 'postgres'" in registered.stderr
        assert repr(db.name) in registered.stderr
    finally:
        with psycopg.connect(pg.url("postgres"), autocommit=True) as conn:
            conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public; DROP SCHEMA auth CASCADE")


def test_register_refuses_what_it_cannot_write_cleanly(pg: pgserver.PgServer, tmp_path: Path) -> None:
    db = make_db(pg)
    first = make_build(tmp_path)
    assert run(tmp_path, "register", first, "--db", db.url, "--alias", "taken").returncode == 0
    other = make_build(tmp_path, template_id="zzzzzzzzzzzzzzzzzzzz")
    assert_clean_error(run(tmp_path, "register", other, "--db", db.url, "--alias", "taken"), CONFLICT,
                       "alias 'taken' already names template " + TEMPLATE)
    assert_clean_error(run(tmp_path, "register", first, "--db", db.url, "--template-id", "zzzzzzzzzzzzzzzzzzzz"),
                       CONFLICT, "already belongs to template " + TEMPLATE)
    assert_clean_error(run(tmp_path, "register", first, "--db", db.url, "--team-id", "team-1"), 2, "not a UUID")
    no_envd = make_build(tmp_path, envd=None)
    assert_clean_error(run(tmp_path, "register", no_envd, "--db", db.url), 2, "no envd version")
    assert run(tmp_path, "register", no_envd, "--db", db.url, "--envd-version", "0.1.1").returncode == 0
    assert db.rows("SELECT envd_version FROM env_builds WHERE id = %s", no_envd) == [("0.1.1",)]


def test_every_known_migration_is_pinned_and_its_columns_appear() -> None:
    pinned = {goose.version_of(p): p for p in goose.files()}
    for migration in known.load().migrations:
        assert migration.version in pinned, migration.file_name
        assert pinned[migration.version].name == migration.file_name
        up = "\n".join(goose.up_statements(pinned[migration.version].read_text()))
        for table, columns in migration.adds.items():
            for column in columns:
                assert column in up or table in up, (migration.file_name, table, column)


def test_register_repairs_hand_written_rows_the_api_ignores(pg: pgserver.PgServer, tmp_path: Path) -> None:
    """The issue's symptoms: wrong status, no finished_at, envd_version NULL, cluster_id set."""
    db = make_db(pg, up_to=TAG_2025_45)
    build_id = make_build(tmp_path)
    with psycopg.connect(db.url) as conn:
        cluster = conn.execute("INSERT INTO clusters (endpoint, token) VALUES ('x', 'y') RETURNING id").fetchone()
        conn.execute("INSERT INTO envs (id, team_id, updated_at, cluster_id) VALUES (%s, %s, now(), %s)",
                     (TEMPLATE, db.team_id, cluster[0] if cluster else None))
        conn.execute("INSERT INTO env_builds (id, env_id, status, updated_at, vcpu, ram_mb, free_disk_size_mb, "
                     "kernel_version, firecracker_version, cluster_node_id) "
                     "VALUES (%s, %s, 'building', now(), 2, 512, 512, %s, %s, 'node-1')",
                     (build_id, TEMPLATE, KERNEL, FIRECRACKER))
    assert api_lookup(db, TEMPLATE) == {}  # what the API sees: no usable build
    assert run(tmp_path, "register", build_id, "--db", db.url).returncode == 0
    assert api_lookup(db, TEMPLATE)["build_id"] == build_id
    assert db.rows("SELECT cluster_id FROM envs") == [(None,)]
    assert db.rows("SELECT status, finished_at IS NOT NULL, envd_version FROM env_builds") == [
        ("uploaded", True, ENVD)]


def test_a_build_from_e2b_artifact_build_registers_with_its_recorded_resources(
        pg: pgserver.PgServer, tmp_path: Path, sample_tar: Path, envd_standin: Path) -> None:
    db = make_db(pg)
    built = run(tmp_path, "build", "--rootfs-tar", str(sample_tar), "--envd", str(envd_standin),
                "--template-id", TEMPLATE, "--envd-version", ENVD, "--vcpu", "3", "--ram-mb", "768", "--json")
    assert built.returncode == 0, built.stderr
    build_id = json.loads(built.stdout)["build_id"]
    rootfs_mb = (tmp_path / build_id / "rootfs.ext4").stat().st_size >> 20
    assert run(tmp_path, "register", build_id, "--db", db.url).returncode == 0
    assert db.rows("SELECT vcpu, ram_mb, total_disk_size_mb, envd_version FROM env_builds WHERE id = %s",
                   build_id) == [(3, 768, rootfs_mb, ENVD)]
    assert api_lookup(db, TEMPLATE)["build_id"] == build_id


def test_a_database_error_is_one_clean_line_and_nothing_is_committed(pg: pgserver.PgServer, tmp_path: Path) -> None:
    db = make_db(pg)
    with psycopg.connect(db.url, autocommit=True) as conn:
        conn.execute("DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'reader') THEN "
                     "CREATE ROLE reader LOGIN BYPASSRLS; END IF; END $$")
        conn.execute("GRANT SELECT ON ALL TABLES IN SCHEMA public TO reader")
        conn.execute("GRANT INSERT, UPDATE ON envs TO reader")  # env_builds stays read-only
    reader_url = db.url.replace("postgres@", "reader@")
    proc = run(tmp_path, "register", make_build(tmp_path), "--db", reader_url)
    assert_clean_error(proc, 7, "registering failed, nothing was committed", "permission denied")
    assert counts(db)["envs"] == 0


def test_goose_default_table_and_no_goose_table(pg: pgserver.PgServer, tmp_path: Path) -> None:
    name = next_name()
    with psycopg.connect(pg.url(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    url = pg.url(name)
    goose.apply(url, goose.files(skip=(ENV_SECURE,)), table="goose_db_version")  # goose without -table
    report = json.loads(run(tmp_path, "db", "check", "--db", url, "--json").stdout)
    assert report["goose_table"] == "goose_db_version"
    assert [m["migration"] for m in report["missing"]] == ["20250409113306_add_envd_secured_to_snapshot.sql"]

    with psycopg.connect(url) as conn:
        conn.execute("DROP TABLE goose_db_version")
    proc = run(tmp_path, "db", "check", "--db", url)
    assert proc.returncode == CHECK_FAILED
    assert "warn db.goose: no goose table" in proc.stdout  # judged by columns alone
    assert "missing snapshots.env_secure" in proc.stdout
    assert run(tmp_path, "db", "check", "--db", url, "--apply").returncode == 0


def test_renumbered_migration_with_its_columns_present_is_not_flagged(pg: pgserver.PgServer, tmp_path: Path) -> None:
    """Upstream renamed 20250611172307_cluster_node_for_builds.sql: current goose tables lack that version,
    the columns exist, and newer versions are recorded. Nothing to run, so nothing to warn about."""
    db = make_db(pg)
    with psycopg.connect(db.url) as conn:
        conn.execute("DELETE FROM public._migrations WHERE version_id = 20250611172307")
    check = run(tmp_path, "db", "check", "--db", db.url, "--json")
    assert check.returncode == 0, check.stdout + check.stderr
    report = json.loads(check.stdout)
    assert not [f for f in report["findings"] if f["status"] != "ok"], report["findings"]
    assert "20250611172307" not in check.stdout + check.stderr
    build_id = make_build(tmp_path)
    reg = run(tmp_path, "register", build_id, "--db", db.url)
    assert reg.returncode == 0, reg.stdout + reg.stderr
    assert "not recorded in goose" not in reg.stdout + reg.stderr

