"""``audit`` against a real PostgreSQL with upstream's migrations (tests/db), real build directories
(tests/storage/builds.py: v3 headers chaining builds) and a real cache directory, through the real CLI.

The seeded storage has one case of every mismatch class and, beside them, what must not be reported: a served
build whose parent has no row of its own (a chain), a failed build, a cache entry of a served build.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from tests.conftest import assert_clean_error, cli
from tests.db.pgserver import PgServer
from tests.db.seed import Db, make_db
from tests.storage.builds import make_build

TAG_2025_45 = 20251106172810
TEMPLATE_OK, TEMPLATE_BAD = "okokokokokokokokokok", "badbadbadbadbadbadba"


def add_template(db: Db, template_id: str, alias: str | None = None) -> None:
    with psycopg.connect(db.url) as conn:
        conn.execute("INSERT INTO envs (id, team_id, public, updated_at) VALUES (%s, %s, false, now())",
                     (template_id, db.team_id))
        if alias:
            conn.execute("INSERT INTO env_aliases (alias, env_id, is_renamable) VALUES (%s, %s, true)",
                         (alias, template_id))


def add_build(db: Db, build_id: str, template_id: str, status: str, minutes_ago: int = 0) -> None:
    """An env_builds row as upstream's API writes one, and (on schemas that have them) its default tag."""
    with psycopg.connect(db.url) as conn:
        node = conn.execute("SELECT is_nullable FROM information_schema.columns WHERE table_name = 'env_builds' "
                            "AND column_name = 'cluster_node_id'").fetchone()
        extra = ", cluster_node_id" if node == ("NO",) else ""
        conn.execute(f"INSERT INTO env_builds (id, env_id, status, vcpu, ram_mb, free_disk_size_mb, kernel_version, "
                     f"firecracker_version, envd_version, created_at, updated_at, finished_at{extra}) "
                     f"VALUES (%s, %s, %s, 2, 512, 512, 'vmlinux-6.1.102', 'v1.12.1_d990331', '0.2.4', "
                     f"now() - %s * interval '1 minute', now(), now(){', %s' if extra else ''})",
                     (build_id, template_id, status, minutes_ago, *(["unknown"] if extra else [])))
        if conn.execute("SELECT to_regclass('public.env_build_assignments')").fetchone() != (None,):
            conn.execute("INSERT INTO env_build_assignments (env_id, build_id, tag, source, created_at) "
                         "VALUES (%s, %s, 'default', 'app', now() - %s * interval '1 minute')",
                         (template_id, build_id, minutes_ago))


@dataclass
class Seeded:
    db: Db
    storage: Path
    cache: Path
    expected: dict[tuple[str, str], str]  # (class, subject) -> build id
    keep: dict[str, str]  # ids of what must not be reported

    def expected_id(self, kind: str) -> str:
        return next(b for (k, _), b in self.expected.items() if k == kind)

    def audit(self, *args: str) -> tuple[int, list[dict[str, Any]], str]:
        proc = cli("--set", f"TEMPLATE_CACHE_DIR={self.cache}", "--set", f"SNAPSHOT_CACHE_DIR={self.cache}.none",
                   "audit", "--db", self.db.url, "--storage", str(self.storage), "--json", *args)
        assert "Traceback" not in proc.stderr, proc.stderr
        return proc.returncode, [json.loads(line) for line in proc.stdout.splitlines()], proc.stderr


def seed(pg: PgServer, root: Path, up_to: int | None = None) -> Seeded:
    db = make_db(pg, up_to=up_to)
    storage, cache = root / "templates", root / "orchestrator" / "template"
    storage.mkdir(parents=True)
    parent = make_build(storage)  # no row of its own: the served build below maps data to it
    good = make_build(storage, parents=[parent])
    no_files = str(uuid.uuid4())
    gone_parent = str(uuid.uuid4())
    broken_chain = make_build(storage, parents=[gone_parent])
    orphan = make_build(storage)
    failed = str(uuid.uuid4())
    add_template(db, TEMPLATE_OK, alias="ok-alias")
    add_build(db, good, TEMPLATE_OK, "uploaded", minutes_ago=30)
    add_build(db, no_files, TEMPLATE_OK, "uploaded", minutes_ago=20)
    add_build(db, broken_chain, TEMPLATE_OK, "uploaded", minutes_ago=10)
    add_template(db, TEMPLATE_BAD, alias="bad-alias")
    add_build(db, failed, TEMPLATE_BAD, "failed")
    stale = str(uuid.uuid4())
    for build_id in (stale, good):
        chunk = cache / build_id / "cache" / str(uuid.uuid4()) / "rootfs.ext4"
        chunk.parent.mkdir(parents=True)
        chunk.write_bytes(hashlib.sha256(build_id.encode()).digest() * 128)
    return Seeded(db, storage, cache, {
        ("build-no-files", no_files): no_files,
        ("parent-gone", broken_chain): broken_chain,
        ("orphan-files", orphan): orphan,
        ("name-unresolved", f"{TEMPLATE_BAD}:default"): "",
        ("cache-stale", str(cache / stale)): stale,
    }, {"parent": parent, "good": good, "failed": failed})


def inventory(*roots: Path) -> list[str]:
    """The sha256 of every file under ``roots`` (wherever it lies), except audit's own records."""
    return sorted(hashlib.sha256(p.read_bytes()).hexdigest() for root in roots for p in root.rglob("*")
                  if p.is_file() and p.name != "audit-fix.json")


def row_counts(db: Db) -> dict[str, int]:
    return {t: db.rows(f"SELECT count(*) FROM public.{t}")[0][0]
            for t in ("envs", "env_builds", "env_aliases", "env_build_assignments")}


def test_every_mismatch_class_reported_once_with_its_fix_then_fix_leaves_it_clean(pg: PgServer,
                                                                                  tmp_path: Path) -> None:
    s = seed(pg, tmp_path)
    before, rows_before = inventory(tmp_path), row_counts(s.db)
    rc, docs, _ = s.audit()
    assert rc == 1
    findings = [d for d in docs if d["type"] == "finding"]
    assert {(f["class"], f["subject"]): f["build_id"] or "" for f in findings} == s.expected
    assert len(findings) == len(s.expected)  # each once
    for f in findings:
        assert f["status"] == "FAIL" and f["fix"] and "--fix" in f["command"], f
    by_class = {f["class"]: f for f in findings}
    assert by_class["build-no-files"]["fix"] == "row.mark-failed"
    assert by_class["parent-gone"]["details"]["missing_parents"] and by_class["parent-gone"]["fix"] == \
        "files.quarantine"
    assert by_class["orphan-files"]["fix"] == "files.quarantine"  # no template id in its metadata
    assert by_class["name-unresolved"]["details"]["aliases"] == ["bad-alias"]
    assert by_class["name-unresolved"]["fix"] == "template.soft-delete"
    assert by_class["cache-stale"]["fix"] == "cache.quarantine"
    for f in findings:  # the chain's parent (no row), the served build, the failed build: no finding of their own
        assert f["build_id"] not in s.keep.values(), f
    assert s.keep["parent"] not in json.dumps(findings) and s.keep["good"] not in json.dumps(findings)
    summary = docs[-1]
    assert summary["type"] == "summary" and not summary["ok"] and summary["findings"] == 5
    assert inventory(tmp_path) == before and row_counts(s.db) == rows_before  # audit alone changes nothing

    rc, docs, _ = s.audit("--fix")
    assert rc == 0, docs
    fixed = [d for d in docs if d["type"] == "fixed"]
    assert {(d["class"], d["action"]) for d in fixed} == {
        ("build-no-files", "marked failed"), ("parent-gone", "moved"), ("parent-gone", "marked failed"),
        ("orphan-files", "moved"), ("name-unresolved", "soft-deleted"), ("cache-stale", "moved")}
    assert all(d["undo"] for d in fixed)
    assert docs[-1]["ok"] and docs[-1]["findings"] == 0

    rc, docs, _ = s.audit()
    assert rc == 0 and docs == [docs[-1]] and docs[-1]["ok"]
    assert inventory(tmp_path) == before, "a file was deleted or changed"
    assert row_counts(s.db) == rows_before, "a row was deleted"
    no_files = s.expected_id("build-no-files")
    ((status, group, reason),) = s.db.rows("SELECT status, status_group, reason FROM env_builds WHERE id = %s",
                                           no_files)
    assert (status, group) == ("failed", "failed") and "no files" in reason["message"]
    assert s.db.rows("SELECT deleted_at IS NOT NULL FROM envs WHERE id = %s", TEMPLATE_BAD) == [(True,)]
    moved = {p.name for p in (s.storage / ".audit-quarantine").glob("*/*") if p.is_dir()}
    assert moved == {s.expected_id("parent-gone"), s.expected_id("orphan-files")}
    record = json.loads(next((s.storage / ".audit-quarantine").glob("*/audit-fix.json")).read_text())
    assert all(e["undo"].startswith(("mv ", "UPDATE ")) for e in record["entries"])
    assert (s.cache / s.keep["good"]).is_dir() and (s.storage / s.keep["parent"]).is_dir()


def test_orphan_with_a_template_is_registered_and_names_without_soft_delete_keep_their_command(
        pg: PgServer, tmp_path: Path) -> None:
    """2025.45 schema: no env_build_assignments, no envs.deleted_at."""
    from e2b_artifacts import metadata

    db = make_db(pg, up_to=TAG_2025_45)
    storage = tmp_path / "templates"
    orphan = make_build(storage)
    md = metadata.read(storage / orphan / "metadata.json")
    md.ext.update(template_id="newnewnewnewnewnewne", envd_version="0.2.4")
    md.write(storage / orphan / "metadata.json")
    add_template(db, TEMPLATE_BAD, alias="bad-alias")
    add_build(db, str(uuid.uuid4()), TEMPLATE_BAD, "failed")
    s = Seeded(db, storage, tmp_path / "no-cache", {}, {})
    rc, docs, _ = s.audit("--fix")
    assert rc == 1
    assert [(d["class"], d["action"]) for d in docs if d["type"] == "fixed"] == [("orphan-files", "registered")]
    (left,) = [d for d in docs if d["type"] == "finding"]
    assert left["class"] == "name-unresolved" and left["fix"] == "" and "register BUILD" in left["command"]
    assert db.rows("SELECT status FROM env_builds WHERE id = %s", orphan) == [("uploaded",)]


def test_bad_input_is_one_clean_error(pg: PgServer, tmp_path: Path) -> None:
    proc = cli("audit", "--db", "postgresql://postgres@127.0.0.1:1/e2b", "--storage", str(tmp_path))
    assert_clean_error(proc, 7, "cannot connect")
    db = make_db(pg)
    proc = cli("audit", "--db", db.url, "--storage", str(tmp_path / "nowhere"), "--json")
    assert_clean_error(proc, 3, "not found")
    assert json.loads(proc.stdout)["exit_code"] == 3
    proc = cli("audit", "--db", pg.url(), "--storage", str(tmp_path))
    assert_clean_error(proc, 1, "no E2B tables")

