"""Settle the attempts a previous cycle did not finish, from what the host shows.

An attempt is open from just before it changes anything until its outcome is in evidence
(:mod:`nixcomply.reconcile.apply`), and each phase is durable before it starts. A cycle that
finds one open decides from the host alone, so that every activation ends with exactly one
record and no activation is ever finished by switching unless its own gate passed:

=============================================  ============================  =====================================
what the host shows                            the attempt's phase           what the cycle does
=============================================  ============================  =====================================
the target runs and is the boot default        any                           the switch completed: ``success``
the boot default runs                          reverting                     the revert completed: ``reverted``
the boot default runs                          undoing                       the undo completed: ``reverted``
                                                                             (interrupted)
the target runs, the boot default differs      reverting                     finish the revert: ``reverted``
the target runs, the boot default differs      testing, gating, switching,   a test activation no gate passed (or
                                               undoing                       whose switch was cut short): re-activate
                                                                             the boot default, ``reverted``
                                                                             (interrupted); the plan then decides
                                                                             afresh, the revision is not blocked
anything else                                  any                           nothing of the attempt is visible: it
                                                                             ends ``interrupted``, unrecorded
=============================================  ============================  =====================================

A record written before the crash is recognised by the attempt's key in the newest
statement and not written again.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import assert_never

from nixcomply.host.state import Attempt, AttemptOutcome, AttemptPhase


class Settlement(StrEnum):
    """What to do with an attempt found open."""

    SWITCHED = "switched"  # record success
    REVERTED = "reverted"  # the revert completed: record it
    UNDONE = "undone"  # the undo completed: record it
    FINISH_REVERT = "finish-revert"  # re-activate the boot default, then record the revert
    UNDO = "undo"  # re-activate the boot default, then record the interrupted attempt
    NOTHING = "nothing"  # nothing of it visible: end it unrecorded

    @property
    def reactivates(self) -> bool:
        """The boot default is re-activated first."""
        return self in (Settlement.FINISH_REVERT, Settlement.UNDO)

    @property
    def outcome(self) -> AttemptOutcome:
        match self:
            case Settlement.SWITCHED:
                return AttemptOutcome.SUCCESS
            case Settlement.REVERTED | Settlement.FINISH_REVERT:
                return AttemptOutcome.REVERTED
            case Settlement.UNDONE | Settlement.UNDO | Settlement.NOTHING:
                return AttemptOutcome.INTERRUPTED
            case unreachable:
                assert_never(unreachable)


@dataclass(frozen=True)
class Decision:
    settlement: Settlement
    detail: str


def settlement(attempt: Attempt, *, current: str | None, profile: str | None) -> Decision:
    """What the host shows happened to ``attempt`` (``current``: what runs, ``profile``: the
    boot default), and what is left to do."""
    target = attempt.toplevel
    phase = attempt.phase
    during = f"during {phase.value}"
    if target is not None and current == target == profile:
        return Decision(Settlement.SWITCHED, "the switch completed; the run that made it was interrupted")
    if current is not None and current == profile:
        match phase:
            case AttemptPhase.REVERTING:
                return Decision(Settlement.REVERTED, attempt.detail or "the health gate failed")
            case AttemptPhase.UNDOING:
                return Decision(Settlement.UNDONE, attempt.detail or _interrupted(attempt, during))
            case (
                AttemptPhase.PREPARING
                | AttemptPhase.TESTING
                | AttemptPhase.GATING
                | AttemptPhase.SWITCHING
                | AttemptPhase.DONE
            ):
                return Decision(Settlement.NOTHING, f"interrupted {during}; nothing of it was activated")
            case unreachable:
                assert_never(unreachable)
    if target is not None and current == target:
        match phase:
            case AttemptPhase.REVERTING:
                return Decision(Settlement.FINISH_REVERT, attempt.detail or "the health gate failed")
            case AttemptPhase.TESTING | AttemptPhase.GATING | AttemptPhase.SWITCHING | AttemptPhase.UNDOING:
                return Decision(Settlement.UNDO, attempt.detail or _interrupted(attempt, during))
            case AttemptPhase.PREPARING | AttemptPhase.DONE:
                return Decision(Settlement.NOTHING, f"interrupted {during}; the target was not tested")
            case unreachable:
                assert_never(unreachable)
    return Decision(Settlement.NOTHING, f"interrupted {during}; the host runs {current}, not its doing")


def _interrupted(attempt: Attempt, during: str) -> str:
    return (
        f"the attempt at {attempt.revision[:12]} was interrupted {during}, before its health gate "
        f"passed; {attempt.toplevel} was never switched to"
    )
