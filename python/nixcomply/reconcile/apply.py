"""Apply a drift plan: test, health gate, then switch, or revert.

``nixos-rebuild test --store-path P`` activates P without touching the boot default, so a
crash anywhere before the switch leaves the host booting the last good generation; the next
cycle sees an activation pending and decides again. When the gate fails, the generation the
profile still points at is re-activated (``switch-to-configuration test``) and the attempt is
recorded as ``reverted``, which blocks that revision until it changes or is reset.

The attempt is opened here and closed by the caller once the outcome is in evidence, so a
crash between the two is found and recorded on the next cycle instead of lost.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from nixcomply.core import faults
from nixcomply.errors import CommandError
from nixcomply.heal.window import in_window, next_opening
from nixcomply.host.state import State
from nixcomply.host.systemd import SystemdFactory
from nixcomply.model.outcome import ApplyOutcome, PlanKind
from nixcomply.nixos import generations
from nixcomply.nixos.rebuild import RebuildAction, nixos_rebuild, switch_to_configuration
from nixcomply.nixos.root import Root
from nixcomply.nixos.tools import Tools
from nixcomply.reconcile import gate as health
from nixcomply.reconcile.config import ReconcilerConfig
from nixcomply.reconcile.model import ApplyResult, GateResult, HostState, Plan

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Context:
    config: ReconcilerConfig
    root: Root
    tools: Tools
    systemd: SystemdFactory[health.GateSystemd] | None


class _Timer:
    def __init__(self) -> None:
        self.durations: dict[str, float] = {}

    def measure(self, name: str, started: float) -> None:
        self.durations[name] = round(time.monotonic() - started, 3)


def apply(
    plan: Plan, host: HostState, state: State, ctx: Context, *, dry_run: bool, now: datetime
) -> ApplyResult:
    generation_before = host.profile.generation if host.profile else None
    if plan.kind != PlanKind.DRIFT:
        return ApplyResult(
            outcome=ApplyOutcome.NOTHING, detail=plan.reason, generation_before=generation_before
        )
    assert plan.target_path is not None, "a drift plan is built"
    assert plan.target_revision is not None, "a drift plan has a revision"
    target = Path(plan.target_path)
    window = ctx.config.maintenance_window
    if not in_window(window, now):
        opens = next_opening(window, now)
        return ApplyResult(
            outcome=ApplyOutcome.DEFERRED,
            detail=f"switching generations waits for the maintenance window (opens {opens:%Y-%m-%d %H:%M %Z})",
            target_path=plan.target_path,
            generation_before=generation_before,
        )
    if dry_run:
        return ApplyResult(
            outcome=ApplyOutcome.DRY_RUN,
            detail=f"dry run: would test {target}, run the health gate, then switch (or revert)",
            target_path=plan.target_path,
            generation_before=generation_before,
        )

    timer = _Timer()
    rev = plan.target_revision

    def revert(why: str, gate: GateResult | None) -> ApplyResult:
        state.set_phase(rev, "reverting")
        return _revert(
            ctx, target=target, why=why, gate=gate, timer=timer, generation_before=generation_before
        )

    state.begin_attempt(rev, str(target))
    faults.point("built")
    failed_before = health.failed_units(ctx.systemd)

    started = time.monotonic()
    try:
        activation = nixos_rebuild(
            RebuildAction.TEST, target, tools=ctx.tools, timeout=ctx.config.activation_timeout
        )
    except CommandError as e:
        timer.measure("test", started)
        return revert(f"`nixos-rebuild test` failed: {e}", None)
    timer.measure("test", started)
    faults.point("tested")

    state.set_phase(rev, "gating")
    started = time.monotonic()
    result = health.run_gate(
        ctx.config.health_gate,
        activation=activation,
        failed_before=failed_before,
        systemd=ctx.systemd,
        env=dict(ctx.tools.extra_env),
    )
    timer.measure("gate", started)
    faults.point("gated")
    if not result.ok:
        failed = "; ".join(f"{c.name}: {c.detail}" for c in result.checks if not c.ok)
        return revert(f"health gate failed: {failed}", result)

    state.set_phase(rev, "switching")
    started = time.monotonic()
    try:
        switched = nixos_rebuild(
            RebuildAction.SWITCH, target, tools=ctx.tools, timeout=ctx.config.activation_timeout
        )
    except CommandError as e:
        timer.measure("switch", started)
        return revert(f"`nixos-rebuild switch` failed: {e}", result)
    timer.measure("switch", started)
    faults.point("switched")
    after = generations.current_generation(ctx.root)
    note = " (switch-to-configuration reported failed units while switching)" if switched.units_failed else ""
    return ApplyResult(
        outcome=ApplyOutcome.SUCCESS,
        detail=f"tested, health gate passed, switched to {target}{note}",
        target_path=str(target),
        gate=result,
        durations=timer.durations,
        generation_before=generation_before,
        generation_after=after.number if after else None,
    )


def _revert(
    ctx: Context,
    *,
    target: Path,
    why: str,
    gate: GateResult | None,
    timer: _Timer,
    generation_before: int | None,
) -> ApplyResult:
    """Re-activate what the profile (the boot default) still points at."""
    logger.warning("reverting: %s", why)
    good = generations.profile_target(ctx.root)
    started = time.monotonic()
    if good is None:
        return ApplyResult(
            outcome=ApplyOutcome.FAILED,
            detail=why + "; the host has no profile generation to revert to",
            target_path=str(target),
            gate=gate,
            durations=timer.durations,
            generation_before=generation_before,
        )
    try:
        switch_to_configuration(
            good, RebuildAction.TEST, tools=ctx.tools, timeout=ctx.config.activation_timeout
        )
    except CommandError as e:
        timer.measure("revert", started)
        return ApplyResult(
            outcome=ApplyOutcome.FAILED,
            detail=f"{why}; re-activating {good} failed too: {e}",
            target_path=str(target),
            gate=gate,
            durations=timer.durations,
            generation_before=generation_before,
        )
    timer.measure("revert", started)
    faults.point("reverted")
    return ApplyResult(
        outcome=ApplyOutcome.REVERTED,
        detail=f"{why}; re-activated {good} (the boot default was never changed)",
        target_path=str(target),
        gate=gate,
        durations=timer.durations,
        generation_before=generation_before,
        generation_after=generation_before,
    )
