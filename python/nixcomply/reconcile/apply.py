"""Apply a drift plan: test, health gate, then switch, or revert.

``nixos-rebuild test --store-path P`` activates P without touching the boot default, so a
crash anywhere before the switch leaves the host booting the last good generation. When the
gate fails, the generation the profile still points at is re-activated
(``switch-to-configuration test``) and the attempt is recorded as ``reverted``, which blocks
that revision until it changes or is reset.

An activation is only ever finished by switching after *this* attempt's gate passed on it.
A system that is active but not the boot default when an attempt starts (a test activation
made by hand, or one nobody gated) is undone first: the boot default is re-activated, so
every unit whose definition the target changes is restarted by the target's own test and
the gate judges processes the target started.

Before anything is activated the state directory must have room for what the attempt will
write (``min_free_bytes``): an activation whose outcome cannot be recorded is worse than one
that waits (outcome ``held``). The attempt is opened here, with each phase durable before it
starts, and closed by the caller once the outcome is in evidence; a crash at any point is
settled by the next cycle from what the host shows (:mod:`nixcomply.reconcile.settle`).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from nixcomply.core import faults
from nixcomply.core.faults import FaultPoint
from nixcomply.errors import CommandError
from nixcomply.heal.window import in_window, next_opening
from nixcomply.host.state import AttemptPhase, State
from nixcomply.host.systemd import SystemdFactory
from nixcomply.model.outcome import ApplyOutcome, PlanKind
from nixcomply.nixos import generations, system
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

    @property
    def unit_dir(self) -> str:
        return health.USER_UNITS if self.config.systemd.user_mode else health.SYSTEM_UNITS


class _Timer:
    def __init__(self) -> None:
        self.durations: dict[str, float] = {}

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time what runs inside as ``name``, whether it ends well or raises."""
        started = time.monotonic()
        try:
            yield
        finally:
            self.durations[name] = round(time.monotonic() - started, 3)


def free_space_problem(config: ReconcilerConfig) -> str | None:
    """Why the state directory cannot take an attempt's records now, or None: less than
    ``min_free_bytes`` free for the state database and the evidence store (both live
    there), or almost no inodes left."""
    try:
        vfs = os.statvfs(config.state_dir)
    except OSError as e:
        return f"cannot measure {config.state_dir}: {e.strerror}"
    free = vfs.f_bavail * vfs.f_frsize
    if free < config.min_free_bytes:
        return (
            f"{config.state_dir} has {free // 1024} KiB free; an activation waits until the state "
            f"database and the evidence store have {config.min_free_bytes // 1024} KiB (min_free_bytes)"
        )
    if vfs.f_files and vfs.f_favail < 1000:
        return f"{config.state_dir} has {vfs.f_favail} inodes free; evidence bundles need files"
    return None


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
    room = free_space_problem(ctx.config)
    if room is not None:
        logger.error("not activating %s: %s", target, room)
        return ApplyResult(
            outcome=ApplyOutcome.HELD,
            detail=f"nothing was activated: {room}",
            target_path=plan.target_path,
            generation_before=generation_before,
        )
    return _Attempt(ctx, state, plan.target_revision, target, generation_before).run(host)


class _Attempt:
    """One attempt at a revision: open it, undo an ungated activation, test, gate, switch or
    revert. Each phase is made durable before it starts."""

    def __init__(
        self, ctx: Context, state: State, revision: str, target: Path, generation_before: int | None
    ) -> None:
        self.ctx = ctx
        self.state = state
        self.revision = revision
        self.target = target
        self.generation_before = generation_before
        self.timer = _Timer()
        self.key: str | None = None

    def result(self, outcome: ApplyOutcome, detail: str, gate: GateResult | None = None) -> ApplyResult:
        return ApplyResult(
            outcome=outcome,
            detail=detail,
            attempt=self.key,
            target_path=str(self.target),
            gate=gate,
            durations=self.timer.durations,
            generation_before=self.generation_before,
            generation_after=self.generation_before if outcome == ApplyOutcome.REVERTED else None,
        )

    def run(self, host: HostState) -> ApplyResult:
        ungated = host.activation_pending
        self.key = self.state.begin_attempt(
            self.revision, str(self.target), phase=AttemptPhase.PREPARING if ungated else AttemptPhase.TESTING
        ).key
        if ungated:
            undo_failed = self._undo_ungated(host)
            if undo_failed is not None:
                return undo_failed
            self.state.set_phase(self.revision, AttemptPhase.TESTING)
        faults.point(FaultPoint.BUILT)
        failed_before = health.failed_units(self.ctx.systemd)
        previous = system.current_system(self.ctx.root)

        began = datetime.now(UTC)
        try:
            with self.timer.phase("test"):
                activation = nixos_rebuild(
                    RebuildAction.TEST,
                    self.target,
                    tools=self.ctx.tools,
                    timeout=self.ctx.config.activation_timeout,
                )
        except CommandError as e:
            return self._revert(f"`nixos-rebuild test` failed: {e}", None)
        faults.point(FaultPoint.TESTED)

        self.state.set_phase(self.revision, AttemptPhase.GATING)
        with self.timer.phase("gate"):
            gate = health.run_gate(
                self.ctx.config.health_gate,
                activation=health.Activation(activation, self.target, previous, began, self.ctx.unit_dir),
                failed_before=failed_before,
                systemd=self.ctx.systemd,
                env=dict(self.ctx.tools.extra_env),
            )
        faults.point(FaultPoint.GATED)
        if not gate.ok:
            failed = "; ".join(f"{c.name}: {c.detail}" for c in gate.checks if not c.ok)
            return self._revert(f"health gate failed: {failed}", gate)

        self.state.set_phase(self.revision, AttemptPhase.SWITCHING)
        try:
            with self.timer.phase("switch"):
                switched = nixos_rebuild(
                    RebuildAction.SWITCH,
                    self.target,
                    tools=self.ctx.tools,
                    timeout=self.ctx.config.activation_timeout,
                )
        except CommandError as e:
            return self._revert(f"`nixos-rebuild switch` failed: {e}", gate)
        faults.point(FaultPoint.SWITCHED)
        after = generations.current_generation(self.ctx.root)
        note = (
            " (switch-to-configuration reported failed units while switching)"
            if switched.units_failed
            else ""
        )
        return ApplyResult(
            outcome=ApplyOutcome.SUCCESS,
            detail=f"tested, health gate passed, switched to {self.target}{note}",
            attempt=self.key,
            target_path=str(self.target),
            gate=gate,
            durations=self.timer.durations,
            generation_before=self.generation_before,
            generation_after=after.number if after else None,
        )

    def _undo_ungated(self, host: HostState) -> ApplyResult | None:
        """Re-activate the boot default before testing: what runs now was activated without
        a gate nixcomply saw pass. None when done, else the failed result."""
        good = generations.profile_target(self.ctx.root)
        current = host.current.store_path if host.current else None
        logger.warning(
            "%s is active but not the boot default: re-activating %s before testing", current, good
        )
        if good is None:
            return self.result(ApplyOutcome.FAILED, "the host has no profile generation to start from")
        try:
            with self.timer.phase("undo"):
                switch_to_configuration(
                    good, RebuildAction.TEST, tools=self.ctx.tools, timeout=self.ctx.config.activation_timeout
                )
        except CommandError as e:
            return self.result(
                ApplyOutcome.FAILED,
                f"{current} was active without a passed gate; re-activating the boot default {good} "
                f"before testing failed: {e}",
            )
        return None

    def _revert(self, why: str, gate: GateResult | None) -> ApplyResult:
        """Re-activate what the profile (the boot default) still points at."""
        self.state.set_phase(self.revision, AttemptPhase.REVERTING, detail=why)
        logger.warning("reverting: %s", why)
        good = generations.profile_target(self.ctx.root)
        if good is None:
            return self.result(
                ApplyOutcome.FAILED, why + "; the host has no profile generation to revert to", gate
            )
        try:
            with self.timer.phase("revert"):
                switch_to_configuration(
                    good, RebuildAction.TEST, tools=self.ctx.tools, timeout=self.ctx.config.activation_timeout
                )
        except CommandError as e:
            return self.result(ApplyOutcome.FAILED, f"{why}; re-activating {good} failed too: {e}", gate)
        faults.point(FaultPoint.REVERTED)
        return self.result(
            ApplyOutcome.REVERTED, f"{why}; re-activated {good} (the boot default was never changed)", gate
        )
