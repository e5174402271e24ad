"""Whether a decided heal may run now: flap suppression, cooldowns, maintenance windows.

- Flapping: three *successful* heals of the same ``check:runbook`` within 120 minutes mean
  the fix does not stick; further heals of it are suppressed until an operator clears them
  (``nixcomply reset``). The suppression is persisted, so a restart does not forget it.
  Failed heals do not count: they are not flapping, they are failing, and cooldowns handle
  them.
- Cooldowns: after a run, the same rule and runbook wait ``cooldown_seconds``; each
  consecutive failure doubles the wait, up to ``MAX_COOLDOWN``.
- Disruptive runbooks wait for the maintenance window (outcome ``deferred``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Final

from nixcomply.heal.window import MaintenanceWindow, in_window, next_opening
from nixcomply.host.state import State

FLAP_HEALS: Final = 3
FLAP_WINDOW: Final = timedelta(minutes=120)
MAX_COOLDOWN: Final = timedelta(hours=24)


class Gate(StrEnum):
    RUN = "run"
    SUPPRESSED = "suppressed"
    COOLDOWN = "cooldown"
    DEFERRED = "deferred"


@dataclass(frozen=True)
class PolicyDecision:
    gate: Gate
    reason: str
    until: datetime | None = None


def flap_key(check: str, runbook: str) -> str:
    return f"{check}:{runbook}"


def may_run(
    state: State,
    *,
    check: str,
    runbook: str,
    cooldown_key: str,
    disruptive: bool,
    window: MaintenanceWindow | None,
    at: datetime,
) -> PolicyDecision:
    suppressed = state.suppressed().get(flap_key(check, runbook))
    if suppressed is not None:
        since, why = suppressed
        return PolicyDecision(Gate.SUPPRESSED, f"suppressed since {since:%Y-%m-%d %H:%M} UTC: {why}")
    cooldown = state.cooldown(cooldown_key)
    if cooldown is not None and cooldown[0] > at:
        return PolicyDecision(Gate.COOLDOWN, f"cooling down until {cooldown[0]:%H:%M:%S} UTC", cooldown[0])
    if disruptive and not in_window(window, at):
        opens = next_opening(window, at)
        return PolicyDecision(
            Gate.DEFERRED, f"disruptive: waits for the maintenance window ({opens:%Y-%m-%d %H:%M})", opens
        )
    return PolicyDecision(Gate.RUN, "may run now")


def record_outcome(
    state: State,
    *,
    check: str,
    runbook: str,
    cooldown_key: str,
    cooldown: timedelta,
    outcome: str,
    at: datetime,
) -> bool:
    """Record a finished heal; return True when it made ``check:runbook`` suppressed."""
    state.record_heal(check, runbook, outcome, at)
    previous = state.cooldown(cooldown_key)
    failures = (
        (previous[1] + 1) if (previous is not None and outcome != "success") else int(outcome != "success")
    )
    wait = min(cooldown * (2**failures), MAX_COOLDOWN) if failures else cooldown
    state.set_cooldown(cooldown_key, at + wait, failures)
    if outcome == "success" and state.successful_heals_since(check, runbook, at - FLAP_WINDOW) >= FLAP_HEALS:
        state.suppress(
            flap_key(check, runbook),
            f"{FLAP_HEALS} successful heals within {int(FLAP_WINDOW.total_seconds() // 60)} minutes: the fix does not stick",
            at,
        )
        return True
    return False
