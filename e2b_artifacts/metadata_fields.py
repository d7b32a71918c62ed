"""metadata.json as upstream's orchestrator decodes it: its version rule, the Go types of every field, and
the checks a field allows on its own (reserved kernel parameters, CPU templates, prefetch mappings).

Upstream: ``deserialize`` and ``Template`` in packages/orchestrator/pkg/template/metadata/template_metadata.go
(e2b-dev/runtime, which carries the newest fields: ``prefetch.origin``, ``balloon``, ``cpu_template``,
``build_cpu_template``, ``vcpu_count``; e2b-dev/infra has ``cmdline_args``, ``filesystem_only``,
``fs_quiesced``). ``deserialize`` first reads ``version`` into ``any``: anything but a JSON number, or a
number <= 1, yields ``Template{Version: 1}`` with every other field dropped. Otherwise the whole document
goes through ``json.Unmarshal`` into ``Template``; one value of the wrong Go type fails it, and with it every
use of the build. Unknown keys are ignored; ``null`` leaves a field at its zero value. Keys are matched
exactly here (Go's decoder also accepts them case-insensitively, which no writer produces).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

DEPRECATED_VERSION = 1
UINT64_MAX = (1 << 64) - 1
INT64 = (-(1 << 63), (1 << 63) - 1)

# The parameters the orchestrator sets itself (reservedCmdlineParams, packages/orchestrator/pkg/sandbox/fc/
# kernel_args.go of e2b-dev/runtime; infra has the first ten, selinux came next, then the four vCPU ones).
# ValidateCmdlineArgs refuses a map holding any of them as a whole: buildKernelArgs then applies none of
# the map and boots the default command line.
RESERVED_CMDLINE_PARAMS = frozenset({
    "init", "clocksource", "root", "ip", "console", "rootflags", "panic", "reboot", "loglevel", "quiet",
    "selinux", "maxcpus", "nr_cpus", "possible_cpus", "nosmp",
})
PREFETCH_ORIGINS = ("build", "checkpoint", "harvest")  # PrefetchOrigin constants; "" predates the field
ACCESS_TYPES = ("r", "w", "p")
# models.CPUConfig (packages/shared/pkg/fc/models/cpu_config.go): which fields each architecture's
# Firecracker accepts (cputemplate.validateFor refuses the other architecture's).
CPU_TEMPLATE_X86_ONLY = ("cpuid_modifiers", "msr_modifiers", "x86_tsc_khz")
CPU_TEMPLATE_ARM_ONLY = ("reg_modifiers", "vcpu_features")

GoType = Any  # a type name ("string", "bool", "int64", "uint64", "object"), a nested schema dict, or [element]
_CONTEXT: dict[str, GoType] = {"user": "string", "workdir": "string", "env_vars": {"*": "string"}}
_CPU_TEMPLATE: dict[str, GoType] = {"cpuid_modifiers": ["object"], "kvm_capabilities": ["string"],
                                    "msr_modifiers": ["object"], "reg_modifiers": ["object"],
                                    "vcpu_features": ["object"], "x86_tsc_khz": "int64"}
TEMPLATE_SCHEMA: dict[str, GoType] = {
    "version": "uint64",
    "template": {"build_id": "string", "kernel_version": "string", "firecracker_version": "string"},
    "context": _CONTEXT,
    "start": {"start_command": "string", "ready_command": "string", "context": _CONTEXT},
    "from_image": "string",
    "from_template": {"alias": "string", "build_id": "string"},
    "prefetch": {"memory": {"indices": ["uint64"], "access_types": ["string"], "block_size": "int64"},
                 "origin": "string"},
    "cmdline_args": {"*": "string"},
    "balloon": {"reporting": "bool", "hinting": "bool"},
    "cpu_template": _CPU_TEMPLATE,
    "build_cpu_template": _CPU_TEMPLATE,
    "vcpu_count": "int64",
    "filesystem_only": "bool",
    "fs_quiesced": "bool",
}
# The fields newer than the 2025 format, as this tool names them in messages.
NEW_FIELDS = ("cmdline_args", "filesystem_only", "fs_quiesced", "prefetch", "balloon", "cpu_template",
              "build_cpu_template", "vcpu_count")


@dataclass(frozen=True)
class UpstreamReading:
    """What ``deserialize`` makes of a document: ``version`` 1 means every other field is dropped;
    ``problems`` non-empty means json.Unmarshal fails."""

    version: int
    problems: tuple[str, ...] = ()

    @property
    def dropped(self) -> bool:
        return self.version <= DEPRECATED_VERSION

    @property
    def decodes(self) -> bool:
        return not self.problems


def upstream_reading(doc: dict[str, Any]) -> UpstreamReading:
    """Upstream's version rule, then the Go type of every known field."""
    version = doc.get("version")
    if not isinstance(version, int | float) or isinstance(version, bool) or version <= DEPRECATED_VERSION:
        return UpstreamReading(DEPRECATED_VERSION)
    problems = tuple(_type_problems(doc, TEMPLATE_SCHEMA, "Template"))
    return UpstreamReading(int(version), problems)  # a float version is a problem, its floor a label


def _json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return f"number {value}"
    names: dict[type, str] = {dict: "object", list: "array", str: "string"}
    return names.get(type(value), type(value).__name__)


def _type_problems(value: Any, schema: GoType, path: str) -> list[str]:
    """Why Go's json.Unmarshal of ``value`` into ``schema`` fails, in its own words; [] when it decodes."""
    if value is None:  # null is a no-op for every Go type
        return []
    if isinstance(schema, list):
        if not isinstance(value, list):
            return [f"cannot unmarshal {_json_kind(value)} into {path} of type []{_go_name(schema[0])}"]
        return [p for i, item in enumerate(value) for p in _type_problems(item, schema[0], f"{path}[{i}]")]
    if isinstance(schema, dict):
        if not isinstance(value, dict):
            return [f"cannot unmarshal {_json_kind(value)} into {path} of type {_go_name(schema)}"]
        if "*" in schema:
            return [p for k, v in value.items() for p in _type_problems(v, schema["*"], f"{path}[{k!r}]")]
        return [p for k, sub in schema.items() if k in value for p in _type_problems(value[k], sub, f"{path}.{k}")]
    ok = {"string": isinstance(value, str), "bool": isinstance(value, bool), "object": isinstance(value, dict),
          "int64": _int_in(value, *INT64), "uint64": _int_in(value, 0, UINT64_MAX)}[schema]
    return [] if ok else [f"cannot unmarshal {_json_kind(value)} into {path} of type {schema}"]


def _int_in(value: Any, low: int, high: int) -> bool:
    # Go reads integers from the literal: 2.0 or 1e3 is not an int64 (Python's json makes them floats too).
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _go_name(schema: GoType) -> str:
    if isinstance(schema, dict):
        return f"map[string]{_go_name(schema['*'])}" if "*" in schema else "struct"
    if isinstance(schema, list):
        return f"[]{_go_name(schema[0])}"
    return "struct" if schema == "object" else str(schema)


Severity = Literal["ok", "warn", "FAIL"]


@dataclass(frozen=True)
class FieldIssue:
    severity: Severity
    field: str
    message: str


def cmdline_args_issues(args: Any) -> list[FieldIssue]:
    """``cmdline_args`` as ValidateCmdlineArgs judges it, plus the names upstream's parser cannot produce."""
    if not isinstance(args, dict) or not args:
        return []
    reserved = sorted(k for k in args if k in RESERVED_CMDLINE_PARAMS)
    issues: list[FieldIssue] = []
    if reserved:
        issues.append(FieldIssue("FAIL", "cmdline_args", (
            f"reserved by the orchestrator: {', '.join(reserved)} (ValidateCmdlineArgs refuses the whole map, so "
            f"none of its {len(args)} parameters is applied and the guest boots the default command line)")))
    # ParseCmdlineArgs splits a fragment at whitespace and the first "=": a name holding either, or an empty
    # one, cannot come from it, and would render as a parameter of its own ({"init=/x": ""} sets init).
    smuggled = sorted(repr(k) for k in args if not k or "=" in k or any(c.isspace() for c in k))
    if smuggled:
        issues.append(FieldIssue("FAIL", "cmdline_args", (
            f"names upstream's ParseCmdlineArgs never produces: {', '.join(smuggled)} (empty, or holding '=' or "
            "whitespace: each renders as a parameter of its own, past the reserved-name check)")))
    return issues


def cpu_template_issues(name: str, tmpl: Any, arch: str) -> list[FieldIssue]:
    """What cputemplate.validateFor refuses on ``arch`` (x86_64 / aarch64), and x86_tsc_khz's range."""
    if not isinstance(tmpl, dict):
        return []
    issues: list[FieldIssue] = []
    foreign = CPU_TEMPLATE_ARM_ONLY if arch == "x86_64" else CPU_TEMPLATE_X86_ONLY
    for key in foreign:
        if tmpl.get(key) not in (None, [], 0):
            only = "x86_64" if key in CPU_TEMPLATE_X86_ONLY else "aarch64"
            issues.append(FieldIssue("FAIL", name, f"sets {key}, which Firecracker supports only on {only} "
                                                   f"(the build is {arch}): a cold boot with it fails"))
    tsc = tmpl.get("x86_tsc_khz")
    if isinstance(tsc, int) and tsc and not 100_000 <= tsc <= 10_000_000:
        issues.append(FieldIssue("FAIL", name, f"x86_tsc_khz {tsc} is outside 100000-10000000 kHz "
                                               "(models.CPUConfig.validateX86TscKhz)"))
    unknown = sorted(set(tmpl) - set(_CPU_TEMPLATE))
    if unknown:
        issues.append(FieldIssue("warn", name, f"keys models.CPUConfig does not have (dropped on decode): "
                                               f"{', '.join(unknown)}"))
    return issues


def prefetch_issues(prefetch: Any, *, memfile_block_size: int | None, memory_bytes: int | None) -> list[FieldIssue]:
    """``prefetch.memory`` against itself and, where known, the memfile it indexes."""
    if not isinstance(prefetch, dict):
        return []
    issues: list[FieldIssue] = []
    origin = prefetch.get("origin")
    if isinstance(origin, str) and origin and origin not in PREFETCH_ORIGINS:
        issues.append(FieldIssue("warn", "prefetch", f"origin {origin!r} is none of {', '.join(PREFETCH_ORIGINS)}"))
    memory = prefetch.get("memory")
    if not isinstance(memory, dict):
        return issues
    indices, types, block = memory.get("indices") or [], memory.get("access_types") or [], memory.get("block_size")
    if isinstance(indices, list) and isinstance(types, list) and len(indices) != len(types):
        issues.append(FieldIssue("warn", "prefetch", f"memory has {len(indices)} indices but {len(types)} access "
                                                     "types (they are aligned one to one)"))
    odd = sorted({t for t in types if isinstance(t, str) and t not in ACCESS_TYPES})
    if odd:
        issues.append(FieldIssue("warn", "prefetch", f"access types {odd} are none of r, w, p"))
    if isinstance(block, int) and memfile_block_size is not None and block != memfile_block_size:
        issues.append(FieldIssue("warn", "prefetch", f"memory.block_size {block} differs from the memfile "
                                                     f"header's block size {memfile_block_size}"))
    ints = [i for i in indices if isinstance(i, int)] if isinstance(indices, list) else []
    if ints and isinstance(block, int) and block > 0 and memory_bytes is not None and max(ints) * block >= memory_bytes:
        issues.append(FieldIssue("warn", "prefetch", f"block index {max(ints)} (x {block}) lies past the guest "
                                                     f"memory of {memory_bytes} bytes"))
    return issues
