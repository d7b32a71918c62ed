"""metadata.json: every form read, the current upstream form written, unknown fields kept."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from e2b_artifacts import metadata
from e2b_artifacts.errors import ArtifactError

V2: dict[str, Any] = {
    "version": 2,
    "template": {"build_id": "3f1c9a52-7d0e-4b6a-9c44-0e5d2b8f1a77", "kernel_version": "vmlinux-6.1.102",
                 "firecracker_version": "v1.12.1_d990331", "future_field": 7},
    "context": {"user": "user", "workdir": "/home/user", "env_vars": {"LANG": "C.UTF-8"}},
    "start": {"start_command": "python3 -m http.server 8000", "ready_command": "curl -sf localhost:8000",
              "context": {"user": "user"}},
    "from_image": "python:3.12-slim",
    "from_template": {"alias": "base", "build_id": "11111111-1111-1111-1111-111111111111"},
    "prefetch": {"memory": {"block_size": 4096}},
}


def test_v2_round_trip_keeps_everything(tmp_path: Path) -> None:
    path = tmp_path / "metadata.json"
    path.write_text(json.dumps(V2))
    md = metadata.read(path)
    assert (md.form, md.build_id, md.kernel_version, md.firecracker_version) == (
        "v2", V2["template"]["build_id"], "vmlinux-6.1.102", "v1.12.1_d990331")
    md.kernel_version = "vmlinux-6.1.158"
    md.write(path)
    written = json.loads(path.read_text())
    expected = json.loads(json.dumps(V2))
    expected["template"]["kernel_version"] = "vmlinux-6.1.158"
    assert written == expected


def test_v1_form_becomes_v2() -> None:
    v1 = {"version": "v1", "template": {"template_id": "tmpl", "build_id": "b1", "kernel_version": "vmlinux-6.1.102",
                                        "firecracker_version": "v1.10.1_30cbb07"},
          "metadata": {"user": "root", "workdir": "/", "env_vars": {}}, "start": None, "from_image": "alpine"}
    md = metadata.parse(json.dumps(v1).encode())
    assert (md.form, md.template_id, md.build_id) == ("v1", "tmpl", "b1")
    doc = md.to_dict()
    assert doc["version"] == 2 and doc["context"] == {"user": "root", "workdir": "/", "env_vars": {}}
    assert "metadata" not in doc and doc["from_image"] == "alpine"
    assert doc["template"] == {"build_id": "b1", "kernel_version": "vmlinux-6.1.102",
                               "firecracker_version": "v1.10.1_30cbb07"}
    assert doc["e2b_artifact"]["template_id"] == "tmpl"


def test_camel_case_form() -> None:
    camel = {"buildID": "b2", "templateID": "t2", "kernelVersion": "vmlinux-5.10.223",
             "firecrackerVersion": "v1.7.0_abc1234", "envdVersion": "0.2.4", "notes": "hand-written"}
    md = metadata.parse(json.dumps(camel).encode())
    assert (md.form, md.build_id, md.template_id, md.envd_version) == ("camel", "b2", "t2", "0.2.4")
    doc = md.to_dict()
    assert doc["version"] == 2 and doc["notes"] == "hand-written"
    assert doc["template"]["kernel_version"] == "vmlinux-5.10.223"
    assert doc["e2b_artifact"] == {"template_id": "t2", "envd_version": "0.2.4"}
    assert metadata.parse(md.to_json()).to_dict() == doc  # stable once written


@pytest.mark.parametrize(("doc", "needle"), [
    (b"{not json", "not valid JSON"),
    (b"[1, 2]", "expected a JSON object"),
    (json.dumps({"version": 2}).encode(), "field template: expected an object, missing"),
    (json.dumps({"version": 2, "template": {"build_id": "x", "kernel_version": "k"}}).encode(),
     "field template.firecracker_version: expected a non-empty string, missing"),
    (json.dumps({"version": 2, "template": {"build_id": 5, "kernel_version": "k",
                                             "firecracker_version": "f"}}).encode(),
     "field template.build_id: expected a non-empty string, got 5"),
    (json.dumps({"buildID": "b", "kernelVersion": "k"}).encode(), "field firecrackerVersion: missing"),
    # a number > 1 that is not a uint64: upstream unmarshals the whole document (and fails on the version)
    (json.dumps({"version": 9.5}).encode(), "field template: expected an object, missing"),
    (json.dumps({"version": True}).encode(), "field version: true, and no template object or camelCase fields: "
                                            "upstream reads it as version 1 with every field dropped"),
])
def test_errors_name_file_and_field(tmp_path: Path, doc: bytes, needle: str) -> None:
    path = tmp_path / "metadata.json"
    path.write_bytes(doc)
    with pytest.raises(ArtifactError) as err:
        metadata.read(path)
    assert str(path) in err.value.message and needle in err.value.message
    assert err.value.hint


# upstream's deserialize (template_metadata.go): not a JSON number, or <= 1 -> Template{Version: 1}, all dropped
@pytest.mark.parametrize("version", ["2", "v1", True, None, 1, 0, -3, 1.0])
def test_versions_upstream_reads_as_version_1(version: object) -> None:
    doc = {"version": version, "template": {"build_id": "b", "kernel_version": "k", "firecracker_version": "f"},
           "filesystem_only": True}
    md = metadata.parse(json.dumps(doc).encode())
    assert md.form == "v1" and md.upstream.dropped and md.upstream.version == 1 and md.version_as_read == version
    assert md.filesystem_only and not md.upstream_filesystem_only  # the file says it, upstream never sees it


def test_go_types_of_every_field() -> None:
    good = {"version": 3, "template": {"build_id": "b", "kernel_version": "k", "firecracker_version": "f"},
            "context": {"env_vars": {"A": "1"}}, "cmdline_args": {"quiet_boot": ""}, "vcpu_count": 2,
            "prefetch": {"memory": {"indices": [0, 5], "access_types": ["r", "w"], "block_size": 4096},
                         "origin": "checkpoint"}, "balloon": {"reporting": False, "hinting": True},
            "cpu_template": None, "filesystem_only": False}
    md = metadata.parse(json.dumps(good).encode())
    assert md.upstream.decodes and md.upstream.version == 3 and md.to_dict()["version"] == 3
    assert (md.vcpu_count, md.balloon, md.cmdline_args) == (2, {"reporting": False, "hinting": True},
                                                            {"quiet_boot": ""})
    bad = {**good, "version": 2.5, "context": {"env_vars": {"A": 1}}, "vcpu_count": 1e3,
           "prefetch": {"memory": {"indices": [-1], "block_size": "4096"}}, "balloon": {"reporting": "yes"},
           "cmdline_args": ["init=/bin/sh"]}
    problems = metadata.parse(json.dumps(bad).encode()).upstream.problems
    assert set(problems) == {
        "cannot unmarshal number 2.5 into Template.version of type uint64",
        "cannot unmarshal number 1 into Template.context.env_vars['A'] of type string",
        "cannot unmarshal number 1000.0 into Template.vcpu_count of type int64",
        "cannot unmarshal number -1 into Template.prefetch.memory.indices[0] of type uint64",
        "cannot unmarshal string into Template.prefetch.memory.block_size of type int64",
        "cannot unmarshal string into Template.balloon.reporting of type bool",
        "cannot unmarshal array into Template.cmdline_args of type map[string]string",
    }


def test_reserved_cmdline_parameters_as_validate_cmdline_args_refuses_them() -> None:
    from e2b_artifacts import metadata_fields as fields

    # runtime kernel_args.go reservedCmdlineParams: the 15 names, matched exactly (case matters, as in Go's map)
    upstream = {"init", "clocksource", "root", "ip", "console", "rootflags", "panic", "reboot", "loglevel", "quiet",
                "selinux", "maxcpus", "nr_cpus", "possible_cpus", "nosmp"}
    assert upstream == fields.RESERVED_CMDLINE_PARAMS
    assert fields.cmdline_args_issues({"Init": "x", "mitigations": "off"}) == []
    (reserved,) = fields.cmdline_args_issues({"maxcpus": "1", "mitigations": "off"})
    assert reserved.severity == "FAIL" and "maxcpus" in reserved.message and "none of its 2" in reserved.message
    (smuggled,) = fields.cmdline_args_issues({"init=/evil": "", "a b": ""})
    assert "'a b', 'init=/evil'" in smuggled.message
