"""``audit``: template storage against E2B's database against this host's orchestrator caches.

* :mod:`.model` the findings (one per mismatch, with the command that fixes it) and the report;
* :mod:`.dbside` what the database says: builds and their status group, tags, aliases, deleted templates,
  and the only two row changes ``--fix`` makes (a build marked ``failed``, a template soft-deleted);
* :mod:`.hostside` what storage and the caches hold: builds, the parents their headers map to, cache entries;
* :mod:`.judge` the mismatch classes, from those three views;
* :mod:`.fix` quarantines (renames, never deletes), marks rows, registers orphans ``register`` can register;
* :mod:`.run` one audit, or audit-fix-audit until nothing fixable is left.
"""

from __future__ import annotations

from .model import AuditFinding, AuditReport, FixAction, Kind
from .run import AuditOptions, audit

__all__ = ["AuditFinding", "AuditOptions", "AuditReport", "FixAction", "Kind", "audit"]
