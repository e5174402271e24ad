"""Named points where a crash test may kill the process (inert in normal use).

The reconciler passes each :class:`FaultPoint` of a cycle; a test running nixcomply in a
child process sets :data:`HOOK` to SIGKILL itself at one of them, then checks that the next
run converges, that every activation has exactly one record and that the evidence log
verifies with nothing acknowledged lost. Nothing reads the environment here: only code that
imports this module and sets the hook can trigger it. (The evidence store has its own points
inside an append: ``nixcomply.evidence.log.FAULT_HOOK``.)
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum
from typing import Final


class FaultPoint(StrEnum):
    """Every point a crash test may kill nixcomply at: a cycle's, in the order a cycle passes
    them, then the server's."""

    SETTLING = "settling"  # an interrupted attempt's test activation is being undone
    SETTLED = "settled"  # the boot default runs again; the interrupted attempt is not yet recorded
    BUILT = "built"  # the target is built and its attempt opened; nothing is activated yet
    TESTED = "tested"  # `nixos-rebuild test` finished
    GATING = "gating"  # the health gate runs
    GATED = "gated"  # the gate decided; nothing is switched yet
    SWITCHED = "switched"  # `nixos-rebuild switch` finished
    REVERTED = "reverted"  # the boot default was re-activated after a failed gate
    RECORDED = "recorded"  # the outcome is in evidence; the attempt is not closed yet
    CLOSED = "closed"  # the attempt is closed together with what the host looks like now
    CHECKED = "checked"  # the runtime checks and heals ran and are recorded
    HEALED = "healed"  # a runbook ran; its remediation is not recorded yet
    ALERTED = "alerted"  # an alert was sent and recorded; its cooldown is not written yet
    # the fleet server's
    INGEST_STORED = "ingest.stored"  # an upload is written, its transaction not yet committed


# The points a reconcile cycle passes (the SIGKILL campaign kills at each of them).
CYCLE_POINTS: Final = frozenset(
    p for p in FaultPoint if p not in {FaultPoint.INGEST_STORED, FaultPoint.HEALED, FaultPoint.ALERTED}
)
# The points a heal passes (only a cycle whose checks find something to heal reaches them).
HEAL_POINTS: Final = frozenset({FaultPoint.HEALED, FaultPoint.ALERTED})


HOOK: Callable[[FaultPoint], None] | None = None


def point(name: FaultPoint) -> None:
    if HOOK is not None:
        HOOK(name)
