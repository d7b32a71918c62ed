"""Where a kernel's build configuration comes from, and how each option was decided.

In order: the embedded IKCONFIG; a config file (``--config FILE``, else a sidecar beside the
kernel, see :func:`sidecar_configs`); else evidence from the kernel itself (``.symtab`` symbols,
then byte strings); else unknown.
"""

from __future__ import annotations

import functools
import re
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from .. import limits
from ..fsutil import read_input
from .image import gunzip

DecidedBy = Literal["config", "symbol", "string", "unknown"]
IKCFG_START = b"IKCFG_ST"
_GZIP_DEFLATE = b"\x1f\x8b\x08"
_SET = re.compile(r"^CONFIG_([A-Za-z0-9_]+)=(.*)$")
_UNSET = re.compile(r"^# CONFIG_([A-Za-z0-9_]+) is not set$")
_VERSIONED_KERNEL = re.compile(r"^(?:vmlinux|vmlinuz|bzImage|Image)-(.+)$")


@dataclass(frozen=True)
class ConfigFile:
    origin: str  # "IKCONFIG", "--config /path", "sidecar /path"
    text: bytes
    label: str = ""  # origin with the file name only, for the per-option lines

    def __post_init__(self) -> None:
        if not self.label:
            kind, _, path = self.origin.partition(" ")
            object.__setattr__(self, "label", f"{kind} {Path(path).name}" if path else kind)

    @functools.cached_property
    def options(self) -> dict[str, str]:
        return parse_config(self.text.decode("utf-8", errors="replace"))


@dataclass(frozen=True)
class Evidence:
    """How to decide an option from the kernel binary when no config is available (kernels/rules.json)."""

    symbols: tuple[str, ...] = ()
    strings: tuple[bytes, ...] = ()


@dataclass(frozen=True)
class OptionValue:
    name: str  # without the CONFIG_ prefix
    value: str | None  # "y", "m", "n" (not set / not built in), another value, or None when unknown
    decided_by: DecidedBy
    evidence: str  # what was looked at: "IKCONFIG", "symbol vm_cmdline_set in .symtab", ...

    def describe(self) -> str:
        """``CONFIG_X=y``, ``CONFIG_X is not set``, ``CONFIG_X not built in`` or ``CONFIG_X unknown``."""
        if self.value is None:
            return f"CONFIG_{self.name} unknown"
        if self.value == "n":
            return f"CONFIG_{self.name} is not set" if self.decided_by == "config" else \
                f"CONFIG_{self.name} is not built in (not set, or a module)"
        return f"CONFIG_{self.name}={self.value}"

    def how(self) -> str:
        return f"decided by {self.decided_by}: {self.evidence}"


def parse_config(text: str) -> dict[str, str]:
    """A Kconfig ``.config``: ``CONFIG_X=y`` -> {"X": "y"}, ``# CONFIG_X is not set`` -> {"X": "n"}."""
    options: dict[str, str] = {}
    for line in text.splitlines():
        if m := _SET.match(line):
            options[m.group(1)] = m.group(2)
        elif m := _UNSET.match(line):
            options[m.group(1)] = "n"
    return options


def ikconfig(data: bytes) -> bytes | None:
    """The ``.config`` embedded with CONFIG_IKCONFIG (a gzip stream after ``IKCFG_ST``), byte for byte."""
    pos = data.find(IKCFG_START + _GZIP_DEFLATE)
    if pos < 0:
        return None
    try:
        # The decompressor stops at the end of the gzip member; IKCFG_ED and the rest are ignored.
        return gunzip(data[pos + len(IKCFG_START):], limits.KERNEL_CONFIG)
    except zlib.error:
        return None


def sidecar_configs(kernel: Path) -> list[Path]:
    """Config files beside ``kernel`` that belong to it, in the order they are tried.

    ``<kernel>.config`` (Firecracker CI: ``vmlinux-6.1.102.config``; ``vmlinux.bin.config``), then
    ``config-<version>`` for a kernel named ``vmlinux-<version>``/``vmlinuz-<version>`` (Debian's
    /boot), then a file named ``config`` in the kernel's directory (``$HOST_KERNELS_DIR/<name>/config``).
    """
    candidates = [kernel.with_name(kernel.name + ".config")]
    if m := _VERSIONED_KERNEL.match(kernel.name):
        candidates.append(kernel.with_name(f"config-{m.group(1)}"))
    candidates.append(kernel.with_name("config"))
    return candidates


def find_config(data: bytes, kernel: Path, explicit: Path | None) -> tuple[ConfigFile | None, list[str]]:
    """The config to decide options by, and notes (e.g. an explicit config that differs from IKCONFIG)."""
    notes: list[str] = []
    given = ConfigFile(f"--config {explicit}", _read(explicit)) if explicit is not None else None
    embedded = ikconfig(data)
    if embedded is not None:
        found = ConfigFile("IKCONFIG", embedded)
        if given is not None and given.options != found.options:
            notes.append(f"{explicit} differs from the config embedded in the kernel; the embedded one is used")
        return found, notes
    if given is not None:
        return given, notes
    for candidate in sidecar_configs(kernel):
        if candidate.is_file():
            return ConfigFile(f"sidecar {candidate}", _read(candidate)), notes
    return None, notes


class OptionReader:
    """Decides options from a config when there is one, else from the kernel's symbols and strings."""

    def __init__(self, data: bytes, config: ConfigFile | None, symbols: frozenset[str] | None,
                 evidence: Mapping[str, Evidence]) -> None:
        self._data = data
        self._config = config
        self._symbols = symbols
        self._evidence = evidence
        self._cache: dict[str, OptionValue] = {}

    def __call__(self, name: str) -> OptionValue:
        if name not in self._cache:
            self._cache[name] = self._decide(name)
        return self._cache[name]

    def _decide(self, name: str) -> OptionValue:
        if self._config is not None:
            # Kconfig leaves options whose dependencies are off out of .config entirely: that is "not set".
            return OptionValue(name, self._config.options.get(name, "n"), "config", self._config.label)
        evidence = self._evidence.get(name, Evidence())
        if self._symbols is not None and evidence.symbols:
            symbols = self._symbols
            found = next((s for s in evidence.symbols if s in symbols), None)
            if found:
                return OptionValue(name, "y", "symbol", f"{found} in .symtab")
            return OptionValue(name, "n", "symbol", f"no {', '.join(evidence.symbols)} in .symtab")
        if evidence.strings:
            hit = next((s for s in evidence.strings if s in self._data), None)
            shown = ", ".join(_show(s) for s in evidence.strings)
            if hit:
                return OptionValue(name, "y", "string", f"{_show(hit)} in the kernel")
            return OptionValue(name, "n", "string", f"no {shown} in the kernel")
        why = "no config, and no symbol table" if self._symbols is None else "no config"
        return OptionValue(name, None, "unknown", f"{why}, and no string that tells")


def _show(s: bytes | str) -> str:
    text = s.decode("latin-1") if isinstance(s, bytes) else s
    return '"' + text.replace("\0", "\\0") + '"'


def _read(path: Path) -> bytes:
    fix = "pass the kernel's .config (e.g. /boot/config-<version>) with --config"
    return read_input(path, "config", limit=limits.KERNEL_CONFIG, missing_hint=fix, hint=fix)
