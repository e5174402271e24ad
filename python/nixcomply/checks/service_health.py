"""service_health: critical systemd units are active, not failed, not restarting in a loop.

Units come from a control's ``expect.units`` or, when it names none, from
``parameters.critical_services`` (a name without a suffix is a ``.service``). One finding per
unit, merging the controls that name it, so RB-SERVICE-001 gets exactly one ``unit``.
A unit is healthy when it is loaded and active, and its ``NRestarts`` grew by at most
``checks.services.max_restarts`` since the previous look (the reconciler passes the
previous counts in the context; without them the count since the unit was last started by a
job is used). The observation carries ``n_restarts`` so the caller can keep it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from nixcomply.checks.base import (
    CheckSpec,
    Controls,
    Outputs,
    Verdict,
    expect_str_list,
    per_subject,
    unit_active,
    unit_name,
    unit_states,
)
from nixcomply.checks.context import CheckContext
from nixcomply.checks.finding import Finding
from nixcomply.host.systemd import UnitStateLike, describe_unit, unit_record

NAME: Final = "service_health"
SPEC: Final = CheckSpec(
    name=NAME, severity="high", runbook="RB-SERVICE-001", expect_keys=frozenset({"units"})
)


def restarts_since_last_look(ctx: CheckContext, state: UnitStateLike) -> int:
    now = state.n_restarts or 0
    before = ctx.previous_restarts.get(state.name)
    if before is None or before > now:  # never seen, or the counter was reset by a start job
        return now
    return now - before


def judge_unit(ctx: CheckContext, unit: str, state: UnitStateLike) -> Verdict:
    limit = ctx.config.services.max_restarts
    restarts = restarts_since_last_look(ctx, state)
    observed: dict[str, Any] = {**unit_record(state), "restarts_since_last_look": restarts}
    expected = {"active_state": "active", "max_restarts": limit}
    params = {"unit": unit}
    if not unit_active(state):
        return Verdict("drift", f"{unit} is {describe_unit(state)}", observed, expected, params, subject=unit)
    if restarts > limit:
        message = f"{unit} restarted {restarts} times since the last look (more than {limit}): it keeps dying"
        return Verdict("drift", message, observed, expected, params, subject=unit)
    return Verdict("pass", f"{unit} is {describe_unit(state)}", observed, expected, params, subject=unit)


def run(ctx: CheckContext, controls: Controls) -> list[Finding]:
    def subjects_of(expect: Mapping[str, Any]) -> list[str] | None:
        units = expect_str_list(expect, "units")
        return None if not units else [unit_name(u) for u in units]

    def defaults() -> list[str]:
        return [unit_name(u) for u in ctx.parameters.critical_services]

    def observe_all(units: list[str]) -> dict[str, tuple[UnitStateLike, Outputs] | BaseException]:
        states = unit_states(ctx, units)
        return {u: s if isinstance(s, BaseException) else (s, {}) for u, s in states.items()}

    def judge(unit: str, state: UnitStateLike) -> Verdict:
        return judge_unit(ctx, unit, state)

    return per_subject(ctx, controls, SPEC, subjects_of, defaults, observe_all, judge)
