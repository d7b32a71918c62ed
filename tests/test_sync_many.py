"""``sync push|pull --all`` / ``--builds FILE``, ``--sql FILE`` and ``register --all``: many builds at once.

The storage is four real builds (tests/storage/fleet.py: a 3-deep diff-layer chain and one unrelated build),
each with a template id and an envd version as ``e2b-artifact build`` records them. S3 is the session's
radosgw (tests/conftest.py), reached through a recording proxy where the order of requests is checked;
the database is a real PostgreSQL with upstream's migrations (tests/db). The CLI runs as a subprocess.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from e2b_artifacts import metadata
from e2b_artifacts.manifest import write_manifest
from tests.conftest import assert_clean_error, cli
from tests.db import pgserver
from tests.db.seed import Db, make_db
from tests.storage.fleet import make_fleet, tiny_sample
from tests.storage.proxy import Proxy
from tests.test_sync import Remote, _kill_when, _remote, _through

ENVD = "0.2.4"
BAD_INPUT, CONFLICT = 3, 6


@dataclass
class Storage:
    root: Path
    chain: list[str]  # parents first
    single: str

    @property
    def ids(self) -> list[str]:
        return [*self.chain, self.single]

    def template_of(self, build_id: str) -> str:
        return f"tpl{build_id.replace('-', '')[:17]}"


@pytest.fixture(scope="module")
def storage(tmp_path_factory: pytest.TempPathFactory) -> Storage:
    sample = tiny_sample(tmp_path_factory.mktemp("sample"))
    root = tmp_path_factory.mktemp("many") / "templates"
    chain, (single,) = make_fleet(sample, root, [3, 1], seed=1096)
    made = Storage(root, chain, single)
    for build_id in made.ids:  # as `build` writes them: each build of its own template, envd version recorded
        md = metadata.read(root / build_id / "metadata.json")
        md.template_id, md.envd_version = made.template_of(build_id), ENVD
        md.write(root / build_id / "metadata.json")
        write_manifest(root / build_id, build_id)
    return made


@pytest.fixture(scope="module")
def pg() -> Iterator[pgserver.PgServer]:
    server = pgserver.start_server()
    try:
        yield server
    finally:
        pgserver.remove(server)


@pytest.fixture
def proxy_of(request: pytest.FixtureRequest) -> Iterator[Callable[..., Proxy]]:
    started: list[Proxy] = []

    def start(upstream: str) -> Proxy:
        started.append(Proxy(upstream).start())
        return started[-1]

    yield start
    for proxy in started:
        proxy.stop()


def run(storage: Path, remote: Remote, *args: str) -> subprocess.CompletedProcess[str]:
    return cli("--storage", storage, "sync", *args, *remote.args, env=remote.env)


def run_json(storage: Path, remote: Remote, *args: str) -> dict[str, Any]:
    proc = run(storage, remote, *args, "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    doc: dict[str, Any] = json.loads(proc.stdout)
    return doc


def _writes(proxy: Proxy, build_id: str) -> list[tuple[int, str]]:
    """(position in the request log, file name) of every PUT/POST the server got for ``build_id``."""
    return [(i, s.path.rsplit("/", 1)[-1]) for i, s in enumerate(proxy.seen)
            if s.method in ("PUT", "POST") and f"/{build_id}/" in s.path]


API_COLUMNS = ("eb.vcpu, eb.ram_mb, eb.free_disk_size_mb, eb.total_disk_size_mb, eb.status_group, "
               "e.team_id::text AS team_id, e.public, e.source, e.build_count, eba.source AS assignment_source")


def api_rows(db: Db, templates: list[str]) -> dict[str, dict[str, Any]]:
    """Per template, the row upstream's API reads for its default tag: GetTemplateWithBuildByTag
    (packages/db/queries/templates/get_template_with_build_by_tag.sql, the 2026 form with status_group and
    active_envs, as register's lookup runs it), with the template and build columns the API embeds."""
    import psycopg

    from e2b_artifacts.db.register import lookup_query
    from e2b_artifacts.db.schema import inspect

    rows = {}
    with psycopg.connect(db.url) as conn:
        key, sql = lookup_query(inspect(conn))
        assert key == "by_tag_status_group"
        sql = sql.replace(" FROM ", f", {API_COLUMNS} FROM ", 1)
        for template in templates:
            with conn.cursor() as cur:
                cur.execute(sql, {"name": template})
                row = cur.fetchone()
                assert row is not None, f"the API finds no build for template {template}"
                assert cur.description is not None
                rows[template] = {d.name: v for d, v in zip(cur.description, row, strict=True)}
    return rows


def table_rows(db: Db) -> dict[str, list[tuple[Any, ...]]]:
    """What registering wrote, without the timestamps."""
    return {
        "envs": db.rows("SELECT id, team_id::text, public, source, build_count, cluster_id FROM public.envs "
                        "ORDER BY id"),
        "env_builds": db.rows(
            "SELECT id::text, env_id, status, status_group, kernel_version, firecracker_version, envd_version, vcpu, "
            "ram_mb, free_disk_size_mb, total_disk_size_mb, start_cmd, ready_cmd FROM public.env_builds ORDER BY id"),
        "env_build_assignments": db.rows(
            "SELECT env_id, build_id::text, tag, source FROM public.env_build_assignments ORDER BY build_id"),
    }


def psql(pg: pgserver.PgServer, db: Db, sql_file: Path) -> None:
    proc = subprocess.run([str(pg.bin / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", db.url, "-f", str(sql_file)],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr


def test_push_all_to_s3_pull_all_into_an_empty_directory_and_register(
        storage: Storage, request: pytest.FixtureRequest, tmp_path: Path, proxy_of: Callable[..., Proxy],
        pg: pgserver.PgServer) -> None:
    """The issue's must-show (e2b-dev/E2B#1096): the chain and its neighbour to S3, back into an empty storage,
    verified there, registered, and the rows are the ones the API reads."""
    s3 = _remote("s3", tmp_path, request)
    proxy = proxy_of(s3.args[1])
    pushed = run_json(storage.root, _through(s3, proxy), "push", "--all", s3.url, "--jobs", "2")
    print(f"\npush --all: {pushed['bytes_sent']} bytes in {pushed['seconds']} s ({pushed['mb_per_s']} MB/s)")
    assert pushed["counts"] == {"sent": 4} and pushed["mode"] == "all" and pushed["ok"]
    assert pushed["bytes_sent"] == pushed["bytes_total"] > 0 and pushed["mb_per_s"] > 0
    order = [b["build_id"] for b in pushed["builds"]]
    assert sorted(order) == sorted(storage.ids)
    assert [b for b in order if b in storage.chain] == storage.chain  # parents first, each once
    for build_id in storage.ids:  # metadata.json is the last object of each build
        writes = _writes(proxy, build_id)
        assert writes[-1][1] == "metadata.json" and [n for _, n in writes].count("metadata.json") == 1, writes
    for parent, child in zip(storage.chain, storage.chain[1:], strict=False):  # a child starts once its parent is
        assert _writes(proxy, parent)[-1][0] < _writes(proxy, child)[0][0]   # complete at the destination

    dst = tmp_path / "cluster-b" / "templates"
    sql_file = tmp_path / "register.sql"
    registered_db, applied_db = make_db(pg), make_db(pg)  # one filled by register, one by the --sql file
    team = applied_db.team_id
    pulled = run_json(dst, s3, "pull", "--all", s3.url, "--jobs", "3", "--sql", str(sql_file), "--team-id", team)
    print(f"pull --all: {pulled['bytes_sent']} bytes in {pulled['seconds']} s ({pulled['mb_per_s']} MB/s)")
    assert pulled["counts"] == {"sent": 4} and pulled["bytes_sent"] == pushed["bytes_sent"]
    assert [b for b in (b["build_id"] for b in pulled["builds"]) if b in storage.chain] == storage.chain
    assert pulled["sql"]["builds"] == [b["build_id"] for b in pulled["builds"]]
    assert sorted(p.name for p in dst.iterdir()) == sorted(storage.ids)  # nothing else left in the storage

    verified = cli("verify", "--all", str(dst), "--json")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    summary = json.loads(verified.stdout.splitlines()[-1])
    assert summary["type"] == "summary" and summary["counts"].get("FAIL", 0) == 0
    assert summary["counts"].get("error", 0) == 0 and summary["builds"] == 4 and summary["ok"], summary
    assert sorted(d["build_id"] for d in map(json.loads, verified.stdout.splitlines()[:-1])) == sorted(storage.ids)

    again = run_json(dst, s3, "pull", "--all", s3.url)
    assert again["counts"] == {"up-to-date": 4} and again["bytes_sent"] == 0

    done = cli("--storage", dst, "register", "--all", "--db", registered_db.url, "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout)
    assert [b["build_id"] for b in result["builds"]] == [b["build_id"] for b in pulled["builds"]]
    templates = [storage.template_of(b) for b in storage.ids]
    rows = api_rows(registered_db, templates)
    for build_id in storage.ids:
        md = metadata.read(dst / build_id / "metadata.json")
        row = rows[storage.template_of(build_id)]
        assert row["build_id"] == build_id and row["status_group"] == "ready" and row["source"] == "template"
        assert (row["kernel_version"], row["firecracker_version"], row["envd_version"]) == (
            md.kernel_version, md.firecracker_version, ENVD)
        assert (row["vcpu"], row["ram_mb"], row["team_id"]) == (md.ext["vcpu"], md.ext["ram_mb"], registered_db.team_id)

    # The --sql file (psql, as an operator applies it) writes the same rows for the team it names.
    psql(pg, applied_db, sql_file)
    psql(pg, applied_db, sql_file)  # idempotent
    expected = table_rows(registered_db)
    expected["envs"] = [(r[0], team, *r[2:]) for r in expected["envs"]]
    assert table_rows(applied_db) == expected
    assert {t: {k: v for k, v in r.items() if k != "team_id"} for t, r in api_rows(applied_db, templates).items()} == \
        {t: {k: v for k, v in r.items() if k != "team_id"} for t, r in rows.items()}


def test_killed_push_all_resumes_with_what_is_missing(storage: Storage, request: pytest.FixtureRequest,
                                                     tmp_path: Path) -> None:
    s3 = _remote("s3", tmp_path, request)
    first = storage.chain[0]

    def first_published() -> bool:
        return f"{s3.prefix}{first}/metadata.json" in s3.object_keys()

    _kill_when(first_published, "the first build complete on the server", storage.root, s3,
               "push", "--all", s3.url, "--jobs", "1", "--limit-rate", "4M")
    complete = {k.split("/")[-2] for k in s3.object_keys() if k.endswith("/metadata.json")}
    assert first in complete and len(complete) < 4
    resumed = run_json(storage.root, s3, "push", "--all", s3.url)
    states = {b["build_id"]: b["outcome"] for b in resumed["builds"]}
    assert {b for b, s in states.items() if s == "up-to-date"} == complete
    assert {b for b, s in states.items() if s == "sent"} == set(storage.ids) - complete
    assert resumed["bytes_sent"] < resumed["bytes_total"]
    assert {k.split("/")[-2] for k in s3.object_keys() if k.endswith("/metadata.json")} == set(storage.ids)
    assert not list(storage.root.glob(".*"))  # no upload record or temp file left in the source storage


def test_builds_file_with_parents_to_a_directory_and_a_failed_build_does_not_stop_the_others(
        storage: Storage, tmp_path: Path) -> None:
    remote = Remote(str(tmp_path / "remote"), [], {}, "local")
    leaf = storage.chain[-1]
    ids_file = tmp_path / "builds.txt"
    ids_file.write_text(f"# the leaf only: --with-parents brings its ancestry\n{leaf}\n")
    pushed = run_json(storage.root, remote, "push", "--builds", str(ids_file), "--with-parents", remote.url)
    assert [b["build_id"] for b in pushed["builds"]] == storage.chain and pushed["counts"] == {"sent": 3}

    single_file = tmp_path / "single.txt"
    single_file.write_text(f"{storage.single}\n")
    run_json(storage.root, remote, "push", "--builds", str(single_file), remote.url)

    # Without --with-parents the leaf cannot come alone; the unrelated build comes all the same.
    ids_file.write_text(f"{leaf}\n{storage.single}\n")
    dst = tmp_path / "dst"
    proc = run(dst, remote, "pull", "--builds", str(ids_file), remote.url, "--json")
    assert_clean_error(proc, CONFLICT, leaf, "--with-parents")
    doc = json.loads(proc.stdout)
    assert doc["ok"] is False and doc["counts"] == {"failed": 1, "sent": 1} and doc["exit_code"] == CONFLICT
    assert sorted(p.name for p in dst.iterdir() if not p.name.startswith(".")) == [storage.single]


def test_unknown_build_in_builds_file_is_a_clean_error(storage: Storage, tmp_path: Path) -> None:
    remote = Remote(str(tmp_path / "remote"), [], {}, "local")
    unknown = "0b9f3c1e-dead-4000-8000-000000000014"
    ids_file = tmp_path / "builds.txt"
    ids_file.write_text(f"{storage.single}\n{unknown}\n")
    proc = run(storage.root, remote, "push", "--builds", str(ids_file), remote.url)
    assert_clean_error(proc, BAD_INPUT, unknown)
    assert not (tmp_path / "remote").exists()  # checked before anything moved
    run_json(storage.root, remote, "push", "--all", remote.url)
    proc = run(tmp_path / "dst", remote, "pull", "--builds", str(ids_file), remote.url)
    assert_clean_error(proc, BAD_INPUT, unknown, "sync ls")
    assert_clean_error(run(storage.root, remote, "push", "--all", storage.single, remote.url), 2, "only DEST")
    assert_clean_error(run(storage.root, remote, "push", "--all", remote.url, "--sql", str(tmp_path / "x.sql")),
                       2, "--team-id")


def test_several_builds_of_one_template_in_one_transaction_serve_the_last(
        pg: pgserver.PgServer, tmp_path: Path) -> None:
    """register --builds and the --sql file order builds of one template by the file: the last is the one the
    API serves (the lookups order by finished_at / the assignment's created_at, distinct within the
    transaction)."""
    from tests.test_db import TEMPLATE
    from tests.test_db import make_build as db_build

    older, newer = db_build(tmp_path), db_build(tmp_path)
    for build_id in (older, newer):
        write_manifest(tmp_path / build_id, build_id)
    ids_file = tmp_path / "builds.txt"
    ids_file.write_text(f"{older}\n{newer}\n")
    for era in ("2025", "current"):
        db = make_db(pg, up_to=None if era == "current" else 20251106172810)
        done = cli("--storage", tmp_path, "register", "--builds", str(ids_file), "--db", db.url, "--json")
        assert done.returncode == 0, done.stdout + done.stderr
        assert [b["api_lookup"]["row"]["build_id"] for b in json.loads(done.stdout)["builds"]] == [newer, newer]
        assert db.rows("SELECT build_count FROM public.envs WHERE id = %s", TEMPLATE) == [(2,)]
    assert_clean_error(cli("--storage", tmp_path, "register", "--builds", str(ids_file), "--template-id", "x",
                           "--db", db.url), 2, "--template-id")

    sql_db = make_db(pg)
    sql_file = tmp_path / "two.sql"
    remote = Remote(str(tmp_path / "remote"), [], {}, "local")
    synced = run_json(tmp_path, remote, "push", "--builds", str(ids_file), remote.url, "--sql", str(sql_file),
                      "--team-id", sql_db.team_id)
    assert synced["sql"]["builds"] == [older, newer]
    psql(pg, sql_db, sql_file)
    assert api_rows(sql_db, [TEMPLATE])[TEMPLATE]["build_id"] == newer
    assert table_rows(sql_db)["envs"] == [(TEMPLATE, sql_db.team_id, False, "template", 2, None)]
