"""diagnose: the knowledge base applied to logs with known failure lines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from e2b_artifacts.diagnose import diagnose_text, load_rules
from tests.conftest import cli

# One line per failure the issue lists, as the tools print them, mixed with noise.
SAMPLE_LOG = """\
[    0.000000] Linux version 6.1.102 (builder@host) #1 SMP
[    0.301000] virtio_mmio: probe of virtio_mmio.0 failed with error -22
[    0.412000] Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)
[    0.500000] Run /sbin/init as init process
[    0.501000] Kernel panic - not syncing: Requested init /sbin/init failed (error -2).
[    0.900000] Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000200
[    0.950000] Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(254,0)
2025-06-01T10:00:00Z ERROR error loading snapshot: CRC64 validation failed: 1234567890
2025-06-01T10:00:01Z ERROR failed to get template: storage: object does not exist
2025-06-01T10:00:02Z ERROR failed to open metadata file: open /tmp/templates/abc/metadata.json: no such file
    * Placement Failure: no nodes were eligible for evaluation
{"level":"fatal","msg":"failed to start","error":"listen tcp :5008: bind: address already in use"}
ERROR: column "env_secure" does not exist (SQLSTATE 42703)
panic: unsupported service discovery provider: ""
Get "https://docker.example.com/v2/": x509: certificate has expired or is not yet valid
storage.NewClient: google: could not find default credentials. See https://cloud.google.com/docs/authentication
an ordinary line that means nothing
"""

EXPECTED_IDS = ["device-discovery", "init-missing", "init-exited", "root-mount-failed", "snapshot-crc",
                "storage-object-missing", "nomad-placement", "port-in-use", "db-migrations", "service-discovery",
                "x509-expired", "gcp-credentials-local"]


def test_every_failure_of_the_issue_is_listed_once_in_log_order() -> None:
    findings = diagnose_text(SAMPLE_LOG)
    assert [f.rule.id for f in findings] == EXPECTED_IDS
    by_id = {f.rule.id: f for f in findings}
    assert by_id["init-exited"].detail == "init exited with status 2"
    assert by_id["port-in-use"].detail == "port 5008 is taken"
    assert [n for n, _ in by_id["device-discovery"].lines] == [2, 3]
    assert by_id["storage-object-missing"].count == 2
    assert any("kernel check" in c for c in by_id["device-discovery"].rule.commands)
    assert any("inject" in c for c in by_id["init-missing"].rule.commands)
    assert any("cold-start" in c for c in by_id["snapshot-crc"].rule.commands)


def test_signal_and_other_init_errors_are_decoded() -> None:
    [killed] = diagnose_text("Kernel panic - not syncing: Attempted to kill init! exitcode=0x0000000b")
    assert killed.detail == "init was killed by signal 11 (SIGSEGV)"
    [noexec] = diagnose_text("Kernel panic - not syncing: Requested init /sbin/init failed (error -8).")
    assert noexec.rule.id == "init-not-executable"
    assert diagnose_text("all good\nRun /sbin/init as init process\n") == []


def test_acpi_tables_failure_comes_before_the_missing_disk() -> None:
    """The console of an ACPI-only Linux 6.1 without CONFIG_PCI under QEMU microvm acpi=on (test kernel boot)."""
    log = ("[    0.031000] ACPI Error: AE_BAD_PARAMETER, During Region initialization (20220331/tbxfload-52)\n"
           "[    0.031500] ACPI: Unable to load the System Description Tables\n"
           '[    0.300000] VFS: Cannot open root device "vda" or unknown-block(0,0): error -6\n')
    found = diagnose_text(log)
    assert [m.rule.id for m in found] == ["acpi-tables", "device-discovery"]
    assert "CONFIG_PCI=y" in found[0].rule.fix


def test_cli_lists_each_failure_with_line_cause_and_fix(tmp_path: Path) -> None:
    log = tmp_path / "mixed.log"
    log.write_text(SAMPLE_LOG)
    proc = cli("diagnose", log)
    assert proc.returncode == 1, proc.stderr
    for finding_id in EXPECTED_IDS:
        assert f"[{finding_id}]" in proc.stdout
    panic = "Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000200"
    assert f"line 6: [    0.900000] {panic}" in proc.stdout
    assert proc.stdout.count("  cause: ") == len(EXPECTED_IDS)
    assert proc.stdout.count("  fix: ") == len(EXPECTED_IDS)
    assert f"{len(EXPECTED_IDS)} known problem(s) found" in proc.stdout

    as_json = cli("diagnose", "--json", "-", input=SAMPLE_LOG.encode())
    doc = json.loads(as_json.stdout)
    assert as_json.returncode == 1 and doc["ok"] is False and doc["source"] == "stdin"
    assert [f["id"] for f in doc["findings"]] == EXPECTED_IDS


def test_clean_log_exits_zero(tmp_path: Path) -> None:
    log = tmp_path / "ok.log"
    log.write_text("Run /sbin/init as init process\ne2b-envd-standin: started\n")
    proc = cli("diagnose", log)
    assert proc.returncode == 0, proc.stdout
    assert "no known problem found" in proc.stdout


def test_custom_knowledge_base_and_bad_input(tmp_path: Path) -> None:
    rules = tmp_path / "kb.json"
    rules.write_text(json.dumps({"rules": [{"id": "oom", "title": "out of memory", "patterns": ["Out of memory: Kill"],
                                            "cause": "guest RAM too small", "fix": "raise ram_mb"}]}))
    assert [r.id for r in load_rules(rules)] == ["oom"]
    log = tmp_path / "oom.log"
    log.write_text("[ 3.2] Out of memory: Killed process 77 (envd)\n")
    proc = cli("diagnose", "--rules", rules, log)
    assert proc.returncode == 1 and "[oom]" in proc.stdout and "raise ram_mb" in proc.stdout
    rules.write_text(json.dumps({"rules": [{"id": "x", "title": "t", "patterns": ["("], "cause": "c", "fix": "f"}]}))
    bad = cli("diagnose", "--rules", rules, log)
    assert bad.returncode == 3 and "bad rule 'x'" in bad.stderr and "Traceback" not in bad.stderr
    missing = cli("diagnose", tmp_path / "nope.log")
    assert missing.returncode == 3 and "cannot read" in missing.stderr


@pytest.mark.parametrize("rule_id", EXPECTED_IDS)
def test_bundled_rules_are_complete(rule_id: str) -> None:
    rule = {r.id: r for r in load_rules()}[rule_id]
    assert rule.title and rule.cause and rule.fix and rule.patterns


# The host and storage failures self-hosters report, as the services print them.
HOST_LOG = """\
2026-03-01T10:00:00Z FATAL required environment variable "LOKI_URL" is not set
2026-03-01T10:00:01Z ERROR failed to create namespace: open /run/netns/ns-2: permission denied
2026-03-01T10:00:02Z ERROR failed to listen on port 5008: bind: address already in use
2026-03-01T10:00:03Z ERROR listen tcp 0.0.0.0:3001: bind: address already in use
[nbd pool]: failed to create network: no free slots
[  12.3] block nbd7: Receive control failed (result -32)
ERROR failed to load snapshot: Unrecognized ioctl flags: 268
ERROR fork/exec /fc-envd/envd: no such file or directory
ERROR Kernel Loader: Unable to read kernel image
ERROR Cannot restore hugetlbfs backed snapshot by mapping the memory file. Please use uffd.
ERROR failed to init envd: syncing took too long
ERROR sandbox files for 'abc123' not found
ERROR failed to get snapfile: object does not exist
ERROR open /dev/ptmx: no such file or directory
ERROR exit status 127: ionice: not found
ERROR error loading snapshot: Invalid data version 9.0.0
ERROR error loading snapshot: Magic value does not match
ERROR error loading snapshot: Snapshot size exceeds limit
ERROR error loading snapshot: CRC64 validation failed: 987654321
ERROR something nobody has seen before failed badly
an ordinary line
"""

HOST_IDS = ["env-var-missing", "netns-permission", "port-in-use", "nbd-no-free-slots", "nbd-receive-control",
            "uffd-features", "envd-missing-on-host", "kernel-file-unreadable", "snapshot-hugetlbfs-file",
            "envd-sync-timeout", "local-storage-header-missing", "musl-template-tools", "snapshot-data-version",
            "snapshot-magic", "snapshot-size-limit", "snapshot-crc"]


def test_host_and_storage_failures_are_known_with_their_details() -> None:
    from e2b_artifacts.diagnose import diagnose_log

    result = diagnose_log(HOST_LOG.splitlines())
    assert [f.rule.id for f in result.matches] == HOST_IDS
    by_id = {f.rule.id: f for f in result.matches}
    assert by_id["env-var-missing"].detail == "LOKI_URL is not set"
    port = by_id["port-in-use"]
    assert port.detail == "port 5008 is taken; port 3001 is taken"  # both ports, each in its own form
    assert port.commands() == ["ss -ltnp 'sport = :5008'", "ss -ltnp 'sport = :3001'",  # no <port> left
                               "e2b-artifact host check"]
    assert "CRC64 987654321" in (by_id["snapshot-crc"].detail or "")
    assert "'snapshot.crc: CRC64 validation failed: 987654321'" in (by_id["snapshot-crc"].detail or "")
    assert by_id["local-storage-header-missing"].count == 2
    assert result.unmatched == [(20, "ERROR something nobody has seen before failed badly")]


def test_crc_message_without_a_number_says_so() -> None:
    [crc] = diagnose_text("error loading snapshot: CRC64 validation failed")
    assert crc.detail is not None and "from v1.14 its message carries none" in crc.detail


def test_cli_lists_unmatched_error_lines(tmp_path: Path) -> None:
    log = tmp_path / "host.log"
    log.write_text(HOST_LOG)
    proc = cli("diagnose", log)
    assert proc.returncode == 1
    assert "* 1 error line(s) matched no known failure:" in proc.stdout
    assert "  line 20: ERROR something nobody has seen before failed badly" in proc.stdout
    assert "run: ss -ltnp 'sport = :5008'" in proc.stdout and "<port>" not in proc.stdout
    doc = json.loads(cli("diagnose", "--json", log).stdout)
    assert doc["unmatched_count"] == 1 and doc["unmatched"][0]["line"] == 20
    only_unknown = cli("diagnose", "-", input=b"fatal: the flux capacitor failed\n")
    assert only_unknown.returncode == 0 and "matched no known failure" in only_unknown.stdout


@pytest.mark.parametrize("rule_id", HOST_IDS)
def test_new_rules_are_complete(rule_id: str) -> None:
    rule = {r.id: r for r in load_rules()}[rule_id]
    assert rule.title and rule.cause and rule.fix and rule.patterns
