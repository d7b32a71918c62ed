"""One line of a check report: ``ok``, ``warn`` or ``FAIL``, why, and the command that fixes it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Status = Literal["ok", "warn", "FAIL"]


@dataclass(frozen=True)
class Finding:
    check: str  # dotted area: files, metadata, kernel, rootfs.init, snapshot.crc, header.memfile, manifest, ...
    status: Status
    message: str
    hint: str = ""

    def line(self) -> str:
        text = f"{self.status:<4} {self.check}: {self.message}"
        return text + (f"\n     hint: {self.hint}" if self.hint and self.status != "ok" else "")

    def to_dict(self) -> dict[str, str]:
        return {"check": self.check, "status": self.status, "message": self.message, "hint": self.hint}
