"""Every case of the header corpus (tests/header_corpus.py, packed by hand from upstream's format) through
header.py and verify, against the verdict upstream's own code gives it.

Each case names the upstream file and function that decide it and says why (``Case.cite``, ``Case.why``);
the module docstring of tests/header_corpus.py walks through that code (e2b-dev/infra
packages/shared/pkg/storage/header/ at HEAD 54693ff35: serialization.go DeserializeBytes and LoadHeader,
serialization_v3.go deserializeV3, serialization_v4.go deserializeV4 and readV4BuildsSection,
serialization_v5.go readV5MappingSection, header.go NewHeader, compact.go NewMapping and Mapping.Validate,
mapping.go ValidateMappings, compress_frame_table.go DeserializeFrameTable; and for chains
orchestrator/pkg/sandbox/build/storage_diff.go createDiff and openFromLoadedHeader).
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import pytest

from e2b_artifacts import header
from e2b_artifacts.findings import Finding
from e2b_artifacts.settings import Settings
from e2b_artifacts.verify import verify
from tests import header_corpus as corpus
from tests.header_corpus import Here, Verdict

CASES = corpus.cases()


def _outcome(case: corpus.Case) -> tuple[Here, list[header.Problem]]:
    try:
        hdr = header.parse_header(case.data, case.name)
    except header.HeaderRejected as exc:
        assert exc.rule.id == case.rule, (exc.message, case.rule)
        assert f"[{case.rule}: " in exc.message and exc.rule.upstream in exc.message  # the rule, in upstream's terms
        if case.upstream is Verdict.REJECT:
            assert "upstream's LoadHeader fails" in exc.message
        else:  # a deliberate difference still says what upstream does
            assert header.Verdict[case.upstream.name].value in exc.message
        return Here.REJECT, []
    problems = hdr.problems()
    if case.mappings is not None:
        assert hdr.mappings is not None
        assert [(m.offset, m.length, m.build_id, m.storage_offset) for m in hdr.mappings] == list(case.mappings)
    for p in problems:
        assert p.upstream.value in str(p) and p.rule.upstream in str(p)
        assert (p.severity == "FAIL") == (p.upstream is header.Verdict.INVALID)
    if any(p.severity == "FAIL" for p in problems):
        return Here.FAIL, problems
    return (Here.WARN if problems else Here.OK), problems


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_header_py_gives_upstreams_verdict(case: corpus.Case) -> None:
    got, problems = _outcome(case)
    assert got is case.expected, (case.name, case.why, [str(p) for p in problems])
    if got in (Here.FAIL, Here.WARN):
        assert case.rule in {p.rule.id for p in problems}, [str(p) for p in problems]


def test_corpus_covers_every_rule_and_version() -> None:
    rules = {c.rule for c in CASES}
    assert rules == set(header.RULES), set(header.RULES) ^ rules
    versions = {c.data[0] for c in CASES if len(c.data) >= 64}
    assert {1, 2, 3, 4, 5} <= versions
    assert {c.upstream for c in CASES} == set(Verdict)


def _verify_header_findings(tmp_path: Path, data: bytes, name: str = "memfile.header") -> list[Finding]:
    """The header findings of a real verify run on a build holding only this header and its data file (the
    chain line left out: the builds a case maps to are not there; the chain tests below hold those)."""
    build_id = str(uuid.UUID(bytes=data[32:48])) if len(data) >= 48 else corpus.A
    build = tmp_path / "storage" / build_id
    build.mkdir(parents=True)
    (build / name).write_bytes(data)
    with (build / name.removesuffix(".header")).open("wb") as fh:
        fh.truncate(64 * corpus.PAGE)  # sparse: long enough for every mapping of the corpus
    report = verify(build, Settings(env={}))
    return [f for f in report.findings if f.check.startswith("header.") and "chain of" not in f.message]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_verify_gives_upstreams_verdict(tmp_path: Path, case: corpus.Case) -> None:
    found = _verify_header_findings(tmp_path, case.data)
    statuses = {f.status for f in found}
    text = "\n".join(f.line() for f in found)
    if case.expected in (Here.REJECT, Here.FAIL):
        assert "FAIL" in statuses and f"[{case.rule}: " in text, text
        assert "upstream" in text
    elif case.expected is Here.WARN:
        assert "FAIL" not in statuses and "warn" in statuses and f"[{case.rule}: " in text, text
        assert header.Verdict.ACCEPT.value in text  # the verdict upstream would give, stated in the finding
    else:
        assert statuses == {"ok"}, text


# ---------------------------------------------------------------- chains


def _write_chain(storage: Path, chain: corpus.Chain) -> None:
    for b in chain.builds:
        d = storage / b.build_id
        d.mkdir(parents=True, exist_ok=True)
        for name, data in b.files.items():
            (d / name).write_bytes(data)


@pytest.mark.parametrize("kind", corpus.CHAIN_KINDS)
def test_chain_links_resolved_as_upstream(tmp_path: Path, kind: str) -> None:
    chain = corpus.mixed_chain(kind)
    _write_chain(tmp_path, chain)
    by = {"builds-table": header.Decided.TABLE, "backfill": header.Decided.BACKFILL,
          "own-header": header.Decided.OWN_HEADER, "no-header": header.Decided.NO_HEADER}
    for b in chain.builds:
        if "memfile.header" not in b.files:
            continue
        hdr = header.read_header(tmp_path / b.build_id / "memfile.header")

        def load(build_id: str) -> header.Header | None:
            path = tmp_path / build_id / "memfile.header"
            return header.read_header(path) if path.exists() else None

        links = header.resolve(hdr, "memfile", load)
        assert [(k.build_id, k.codec_name.replace("uncompressed", "none"), k.object_name, k.decided)
                for k in links] == [(x.build_id, x.codec, x.object_name, by[x.decided_by]) for x in b.links]


@pytest.mark.parametrize("kind", corpus.CHAIN_KINDS)
def test_verify_on_a_mixed_chain(tmp_path: Path, kind: str) -> None:
    chain = corpus.mixed_chain(kind)
    _write_chain(tmp_path, chain)
    report = verify(tmp_path / chain.child.build_id, Settings(env={}))
    found = [f for f in report.findings if f.check == "header.memfile"]
    [line] = [f for f in found if "chain of memfile" in f.message]
    assert line.status == ("ok" if chain.ok else "FAIL"), (chain.why, line.message)
    assert all(f.status == "ok" for f in found if f is not line), [f.line() for f in found]
    for link in chain.child.links:  # every link shows its header version (when it has one) and compression
        codec = "uncompressed" if link.codec == "none" else link.codec
        assert f"{codec} per " in line.message
    ancestors = [b for b in chain.builds[:-1] if "memfile.header" in b.files]
    for b in ancestors:
        assert f"{b.build_id} (v{b.files['memfile.header'][0]} generation " in line.message, line.message
    if not chain.ok:
        assert "upstream opens" in line.message and "only memfile.lz4 is there" in line.message
    for b in ancestors:  # every ancestor of the corpus chains is itself a good build
        findings = verify(tmp_path / b.build_id, Settings(env={})).findings
        assert [f.status for f in findings if f.check == "header.memfile"] == ["ok", "ok"], b.build_id


def test_v3_ancestor_under_v5_child_with_hugepages(tmp_path: Path) -> None:
    """The must-show shape at 2 MiB blocks: two v3 ancestors under a v5 child whose table lists only itself."""
    chain = corpus.mixed_chain("v3-v3-v5", block=2 << 20, blocks=8)
    _write_chain(tmp_path, chain)
    report = verify(tmp_path / chain.child.build_id, Settings(env={}))
    [line] = [f for f in report.findings if "chain of memfile" in f.message]
    assert line.status == "ok", line.message
    a, b, _ = chain.builds
    assert f"{a.build_id} (v3 generation 0, uncompressed per its own header): ok" in line.message
    assert f"{b.build_id} (v3 generation 1, uncompressed per its own header): ok" in line.message
    os.truncate(tmp_path / a.build_id / "memfile", 4 << 20)  # the child maps A's blocks 4-5
    [line] = [f for f in verify(tmp_path / chain.child.build_id, Settings(env={})).findings
              if "chain of memfile" in f.message]
    assert line.status == "FAIL" and f"parent {a.build_id}: " in line.message
    assert "holds 4194304 bytes, mappings need 12582912" in line.message


def _as_builds(storage: Path, chain: corpus.Chain) -> None:
    """The chain's builds made complete enough to sync: metadata.json and the integrity manifest."""
    from e2b_artifacts import manifest

    _write_chain(storage, chain)
    for b in chain.builds:
        (storage / b.build_id / "metadata.json").write_text(json.dumps({
            "version": 2, "context": {}, "template": {"build_id": b.build_id, "kernel_version": "vmlinux-6.1.102",
                                                      "firecracker_version": "v1.12.1_d990331"}}))
        manifest.write_manifest(storage / b.build_id, b.build_id)


def test_sync_chain_walk_shows_each_links_version_and_compression(tmp_path: Path) -> None:
    from e2b_artifacts import sync
    from e2b_artifacts.storage import open_storage

    chain = corpus.mixed_chain("v3-v4-v5")
    _as_builds(tmp_path / "here", chain)
    a, b, c = chain.builds
    pushed = sync.push(tmp_path / "here", c.build_id, open_storage(str(tmp_path / "there")), with_parents=True)
    assert [p.build_id for p in pushed.builds] == [a.build_id, b.build_id, c.build_id]  # parents first
    [view] = pushed.builds[-1].chain
    assert (view["file"], view["version"], view["codec"]) == ("memfile", 5, "zstd")
    assert [(k["build_id"], k["version"], k["codec"], k["object"], k["decided_by"]) for k in view["links"]] == [
        (c.build_id, 5, "zstd", "memfile.zstd", header.Decided.TABLE.value),
        (a.build_id, 3, "uncompressed", "memfile", header.Decided.OWN_HEADER.value),
        (b.build_id, 4, "lz4", "memfile.lz4", header.Decided.TABLE.value)]
    pulled = sync.pull(tmp_path / "back", c.build_id, open_storage(str(tmp_path / "there")), with_parents=True)
    assert pulled.builds[-1].chain == pushed.builds[-1].chain  # the remote walk reads ancestors' headers there
    assert header.chain_text(view).startswith(f"memfile: v5 (zstd) <- {c.build_id} v5 zstd per this header's")
    report = verify(tmp_path / "back" / c.build_id, Settings(env={}))
    assert [f.status for f in report.findings if "chain of memfile" in f.message] == ["ok"]
