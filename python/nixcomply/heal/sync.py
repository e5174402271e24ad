"""The callback RB-DRIFT-001's ``sync_generation`` step calls: the reconciler re-applies the
approved generation and says how it went. Its own small module, so the reconcile cycle can
hand one over without loading the runbook executor (most cycles run no runbook)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from pydantic import JsonValue


@dataclass(frozen=True)
class SyncResult:
    """What the caller's ``sync_generation`` callback reports (the reconciler's cycle)."""

    ok: bool
    detail: str
    data: Mapping[str, JsonValue] = field(default_factory=dict)


SyncGeneration = Callable[[float], SyncResult]
