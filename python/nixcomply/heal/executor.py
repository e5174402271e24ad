"""Run a runbook: guard, preconditions, steps with retries, verification, rollback.

:func:`execute` is the only way a runbook runs. In order:

1. :func:`nixcomply.heal.guard.check` validates the parameters and every step's arguments
   (rollback included). A refusal ends the run as ``rejected`` before anything ran.
2. A dry run stops here and reports, per step, what it would do with the resolved
   arguments (outcome ``planned``). It makes no systemd call and runs no command.
3. Preconditions run once each. On failure their ``on_failure`` decides: ``abort`` ends
   the run ``failed`` (nothing was changed), ``alert`` sends an alert and ends ``alert``,
   ``skip`` ends ``rejected`` (the runbook does not apply).
4. An attempt runs the steps in order, stopping at a failed step unless it has
   ``continue_on_failure``, and when none stopped it, calls ``verify()`` (the caller
   re-runs the finding's check). A failed attempt is repeated from the first step up to
   ``constraints.max_retries`` times, ``retry_delay_seconds`` apart: waiting again for a
   unit that failed proves nothing, restarting it again might help. Each step's result
   counts its ``attempts``.
5. When the last attempt stopped at a failed step, the rollback runs (below) and the
   outcome is ``reverted`` when every rollback step succeeded and none was an alert,
   ``alert`` when a rollback step failed or an alert was sent (the runbook's last resort is
   a person), and ``failed`` when the runbook has no rollback. When the steps succeeded
   but the verification says the drift remains, the rollback runs too and the outcome is
   ``failed`` (``alert`` if a rollback step itself fails).
6. Every key of ``evidence_required`` must have been recorded; a missing one is a failure.

Outcome ``deferred`` (outside the maintenance window) and cooldown/flap decisions belong to
the caller (:mod:`nixcomply.heal.policy`); :meth:`RunbookRun.not_run` builds such a record.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, assert_never

from pydantic import Field, JsonValue

from nixcomply.errors import NixcomplyError
from nixcomply.heal import guard
from nixcomply.heal.actions import ACTIONS, ActionEnv, ActionResult, bounded, describe, send_alert
from nixcomply.heal.config import HealConfig
from nixcomply.heal.runbook import Action, OnFailure, Precondition, Runbook
from nixcomply.heal.sync import SyncGeneration
from nixcomply.host.systemd import Systemd, SystemdFactory
from nixcomply.model.base import StrictModel
from nixcomply.model.outcome import RunOutcome

logger = logging.getLogger(__name__)

Verifier = Callable[[], object]
PASSING: Final = frozenset({"pass"})


class StepOutcome(StrEnum):
    SUCCESS = "success"
    FAILED = "failed"
    PLANNED = "planned"


class StepResult(StrictModel):
    """One step as it ran (or, in a dry run, would run)."""

    section: str = Field(description="preconditions, steps, rollback, or alert (sent by the executor)")
    index: int
    name: str | None = None
    action: Action
    description: str
    params: dict[str, JsonValue] = Field(description="the arguments after substitution and checks")
    outcome: StepOutcome
    attempts: int = 0
    started_at: datetime | None = None
    duration_s: float = 0.0
    detail: str = ""
    error: str | None = None
    output: str = Field(default="", description="what the step printed, bounded by heal.max_output_bytes")
    command: list[str] = Field(default_factory=list)
    exit_code: int | None = None
    evidence_key: str | None = None
    continue_on_failure: bool = False
    would: str | None = Field(default=None, description="dry run: what it would do")

    @property
    def ok(self) -> bool:
        return self.outcome == StepOutcome.SUCCESS


class Verification(StrictModel):
    ran: bool
    ok: bool
    detail: str
    observed: JsonValue = None


class RunbookRun(StrictModel):
    """Everything a runbook run did, for reports (``--json``) and evidence."""

    runbook: str
    version: int
    name: str
    params: dict[str, str | int]
    dry_run: bool = False
    outcome: RunOutcome
    reason: str
    started_at: datetime
    finished_at: datetime
    duration_s: float
    preconditions: list[StepResult] = Field(default_factory=list)
    steps: list[StepResult] = Field(default_factory=list)
    rollback: list[StepResult] = Field(default_factory=list)
    alert: StepResult | None = Field(default=None, description="an alert the executor sent itself")
    verification: Verification | None = None
    evidence: dict[str, JsonValue] = Field(default_factory=dict, description="evidence_key -> captured data")
    missing_evidence: list[str] = Field(default_factory=list)
    refusals: list[str] = Field(default_factory=list, description="why the guard refused the run")

    def all_steps(self) -> list[StepResult]:
        return [*self.preconditions, *self.steps, *self.rollback, *([self.alert] if self.alert else [])]

    @classmethod
    def not_run(
        cls,
        runbook: Runbook,
        params: Mapping[str, object],
        outcome: RunOutcome,
        reason: str,
        *,
        at: datetime | None = None,
    ) -> RunbookRun:
        """A run the caller decided not to start (deferred, suppressed, cooling down)."""
        at = at or datetime.now(UTC)
        return cls(
            runbook=runbook.id,
            version=runbook.version,
            name=runbook.name,
            params={k: v for k, v in params.items() if isinstance(v, str | int) and not isinstance(v, bool)},
            outcome=outcome,
            reason=reason,
            started_at=at,
            finished_at=at,
            duration_s=0.0,
        )


@dataclass(frozen=True)
class ExecutionContext:
    """What a run may use. ``systemd`` opens a connection (once per run, on first use);
    ``sync_generation`` is the reconciler's callback for RB-DRIFT-001; ``root`` is the host
    root paths are relative to; ``sleep``/``clock``/``now`` are injectable for tests."""

    config: HealConfig = field(default_factory=HealConfig)
    systemd: SystemdFactory[Systemd] | None = None
    sync_generation: SyncGeneration | None = None
    root: Path = Path("/")
    user_mode: bool = False
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic
    now: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))


def execute(
    runbook: Runbook,
    params: Mapping[str, object],
    ctx: ExecutionContext,
    *,
    dry_run: bool = False,
    verify: Verifier | None = None,
) -> RunbookRun:
    """Run ``runbook`` with ``params``; never raises for a refused or failed run (the
    outcome says it). ``verify`` re-checks the drift after the steps: it returns a bool, or
    an object/mapping with ``status`` (``"pass"`` passes) or ``drifted``."""
    started, t0 = ctx.now(), ctx.clock()

    def done(outcome: RunOutcome, reason: str, **fields: Any) -> RunbookRun:
        return RunbookRun(
            runbook=runbook.id,
            version=runbook.version,
            name=runbook.name,
            params=fields.pop("resolved", {}),
            dry_run=dry_run,
            outcome=outcome,
            reason=reason,
            started_at=started,
            finished_at=ctx.now(),
            duration_s=round(ctx.clock() - t0, 3),
            **fields,
        )

    try:
        plan = guard.check(runbook, params, ctx.config, root=ctx.root)
    except guard.GuardError as e:
        logger.warning("%s refused: %s", runbook.id, e)
        return done(
            RunOutcome.REJECTED,
            f"refused before any step ran: {e.refusals[0]}",
            refusals=[str(r) for r in e.refusals],
            resolved={
                k: v for k, v in params.items() if isinstance(v, str | int) and not isinstance(v, bool)
            },
        )
    if dry_run:
        return done(
            RunOutcome.PLANNED,
            "dry run: nothing was executed",
            resolved=dict(plan.params),
            **_planned(plan, ctx),
        )
    with _Session(ctx.systemd) as session:
        runner = _Runner(plan, ctx, session)
        outcome, reason = runner.run(verify)
    return done(
        outcome,
        reason,
        resolved=dict(plan.params),
        preconditions=runner.results[guard.Section.PRECONDITION],
        steps=runner.results[guard.Section.STEP],
        rollback=runner.results[guard.Section.ROLLBACK],
        alert=runner.alert,
        verification=runner.verification,
        evidence=runner.evidence,
        missing_evidence=runner.missing,
    )


def _planned(plan: guard.BoundRunbook, ctx: ExecutionContext) -> dict[str, list[StepResult]]:
    out: dict[str, list[StepResult]] = {}
    for section, bound in (
        ("preconditions", plan.preconditions),
        ("steps", plan.steps),
        ("rollback", plan.rollback),
    ):
        out[section] = [
            _result(b, StepOutcome.PLANNED, would=describe(b.step.action, b.args, ctx.config, b.step.timeout))
            for b in bound
        ]
    return out


def _result(b: guard.BoundStep, outcome: StepOutcome, **fields: Any) -> StepResult:
    return StepResult(
        section=b.section.value,
        index=b.index,
        name=b.step.name,
        action=b.step.action,
        description=b.step.description,
        params=dict(b.shown),
        outcome=outcome,
        evidence_key=b.step.evidence_key,
        continue_on_failure=b.step.continue_on_failure,
        **fields,
    )


class _Session:
    """The run's systemd connection, opened when a step first needs it."""

    def __init__(self, factory: SystemdFactory[Systemd] | None) -> None:
        self._factory = factory
        self._stack = ExitStack()
        self._sd: Systemd | None = None

    def __enter__(self) -> _Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def get(self) -> Systemd:
        if self._sd is None:
            if self._factory is None:
                raise NixcomplyError("no systemd connection was given to this run")
            self._sd = self._stack.enter_context(self._factory())
        return self._sd


class _Runner:
    def __init__(self, plan: guard.BoundRunbook, ctx: ExecutionContext, session: _Session) -> None:
        self.plan = plan
        self.ctx = ctx
        self.session = session
        self.results: dict[guard.Section, list[StepResult]] = {s: [] for s in guard.Section}
        self.evidence: dict[str, JsonValue] = {}
        self.alert: StepResult | None = None
        self.verification: Verification | None = None
        self.missing: list[str] = []

    @property
    def runbook(self) -> Runbook:
        return self.plan.runbook

    def run(self, verify: Verifier | None) -> tuple[RunOutcome, str]:
        for b in self.plan.preconditions:
            result = self._run(b)
            if result.ok:
                continue
            why = f"precondition {b.label} failed: {result.error or result.detail}"
            # a failed precondition always stops the run: whatever on_failure says (or a value
            # this code does not know), the steps after it never run
            on_failure = b.step.on_failure if isinstance(b.step, Precondition) else OnFailure.ABORT
            match on_failure:
                case OnFailure.ABORT:
                    return RunOutcome.FAILED, f"{why}; nothing was changed"
                case OnFailure.ALERT:
                    self.alert = self._send_alert(f"{self.runbook.id}: {why}")
                    return RunOutcome.ALERT, f"{why}; a person must look"
                case OnFailure.SKIP:
                    return RunOutcome.REJECTED, f"does not apply: {why}"
                case unknown:
                    if TYPE_CHECKING:  # mypy proves the cases above cover every OnFailure
                        assert_never(unknown)
                    logger.error("%s: unknown on_failure %r: stopping", self.runbook.id, unknown)
                    return RunOutcome.FAILED, f"{why}; nothing was changed"

        ran: dict[int, guard.BoundStep] = {}
        failure: StepResult | None = None
        constraints = self.runbook.constraints
        for attempt in range(constraints.max_retries + 1):
            if attempt:
                logger.info(
                    "%s: trying the steps again in %g s (attempt %d of %d)",
                    self.runbook.id,
                    constraints.retry_delay_seconds,
                    attempt + 1,
                    constraints.max_retries + 1,
                )
                self.ctx.sleep(constraints.retry_delay_seconds)
            failure = None
            for b in self.plan.steps:
                result = self._run(b)
                ran[b.index] = b
                if not result.ok and not b.step.continue_on_failure:
                    failure = result
                    break
            if failure is None:
                self.verification = self._verify(verify)
                if self.verification.ok:
                    break
        steps_ran = [ran[i] for i in sorted(ran)]

        if failure is not None:
            why = f"step {failure.section}[{failure.index}] ({failure.action.value}) failed: {failure.error or failure.detail}"
            rolled = self._rollback(steps_ran)
            if not rolled:
                return RunOutcome.FAILED, f"{why}; the runbook has no rollback"
            if any(not r.ok for r in rolled):
                return RunOutcome.ALERT, f"{why}; the rollback failed too: a person must look"
            if any(r.action == Action.SEND_ALERT for r in rolled):
                return RunOutcome.ALERT, f"{why}; rolled back and alerted"
            return RunOutcome.REVERTED, f"{why}; rolled back"

        assert self.verification is not None
        if not self.verification.ok:
            why = f"the steps succeeded but the verification failed: {self.verification.detail}"
            rolled = self._rollback(steps_ran)
            if any(not r.ok for r in rolled):
                return RunOutcome.ALERT, f"{why}; the rollback failed too: a person must look"
            return RunOutcome.FAILED, why + ("; rolled back" if rolled else "")

        self.missing = [k for k in self.runbook.evidence_required if k not in self.evidence]
        if self.missing:
            return RunOutcome.FAILED, f"required evidence was not recorded: {', '.join(self.missing)}"
        return RunOutcome.SUCCESS, self.verification.detail

    def _rollback(self, ran: list[guard.BoundStep]) -> list[StepResult]:
        """The rollback steps undoing the steps that ran (last first), then the rest."""
        order: list[guard.BoundStep] = []
        for b in reversed(ran):
            order.extend(r for r in self.plan.rollback if b.step.name and r.step.undoes == b.step.name)
        order.extend(r for r in self.plan.rollback if r.step.undoes is None)
        return [self._run(r) for r in order]

    def _run(self, b: guard.BoundStep) -> StepResult:
        """Run one step once; a step run again (a retry) replaces its result, counting attempts."""
        started = self.ctx.now()
        t0 = self.ctx.clock()
        outcome, error = self._attempt(b)
        ok = outcome is not None and outcome.ok
        limit = self.ctx.config.max_output_bytes
        results = self.results[b.section]
        previous = next((r for r in results if r.index == b.index), None)
        result = _result(
            b,
            StepOutcome.SUCCESS if ok else StepOutcome.FAILED,
            attempts=(previous.attempts if previous else 0) + 1,
            started_at=started,
            duration_s=round(self.ctx.clock() - t0 + (previous.duration_s if previous else 0), 3),
            detail=outcome.detail if outcome else "",
            error=error,
            output=bounded(outcome.output, limit) if outcome else "",
            command=list(outcome.command) if outcome else [],
            exit_code=outcome.exit_code if outcome else None,
        )
        log = logger.info if ok else logger.warning
        log("%s %s: %s", self.runbook.id, b.label, error or result.detail)
        if previous is not None:
            results[results.index(previous)] = result
        else:
            results.append(result)
        if b.step.evidence_key:
            data: dict[str, JsonValue] = {"ok": ok, "detail": result.detail}
            if error:
                data["error"] = error
            if outcome is not None:
                data.update(outcome.data)
            self.evidence[b.step.evidence_key] = data
        return result

    def _attempt(self, b: guard.BoundStep) -> tuple[ActionResult | None, str | None]:
        env = ActionEnv(
            config=self.ctx.config,
            systemd=self.session.get,
            timeout=b.step.timeout,
            sync_generation=self.ctx.sync_generation,
            user_mode=self.ctx.user_mode,
            now=self.ctx.now,
        )
        try:
            return ACTIONS[b.step.action](b.args, env), None
        except NixcomplyError as e:
            return None, str(e)
        except OSError as e:
            return None, f"{e.strerror or e}{f': {e.filename}' if e.filename else ''}"
        except Exception as e:  # a bug in one action must not skip the rollback
            logger.exception("%s %s: internal error", self.runbook.id, b.label)
            return None, f"internal error: {type(e).__name__}: {e}"

    def _send_alert(self, message: str) -> StepResult:
        """The executor's own alert when a precondition asks for one."""
        text = " ".join(message.split())[: self.ctx.config.alert.max_length]
        step = Precondition(
            action=Action.SEND_ALERT, description="alert sent by the executor", params={"message": text}
        )
        b = guard.BoundStep(
            guard.Section.PRECONDITION, 0, step, {"message": text, "priority": None}, {"message": text}
        )
        env = ActionEnv(config=self.ctx.config, systemd=self.session.get, timeout=30, now=self.ctx.now)
        t0 = self.ctx.clock()
        try:
            out: ActionResult | None = send_alert(b.args, env)
            error = None
        except NixcomplyError as e:
            out, error = None, str(e)
        return _result(
            b,
            StepOutcome.SUCCESS if out is not None and out.ok else StepOutcome.FAILED,
            attempts=1,
            started_at=self.ctx.now(),
            duration_s=round(self.ctx.clock() - t0, 3),
            detail=out.detail if out else "",
            error=error,
            command=list(out.command) if out else [],
        ).model_copy(update={"section": "alert"})

    def _verify(self, verify: Verifier | None) -> Verification:
        if verify is None:
            return Verification(ran=False, ok=True, detail="all steps succeeded (no verification was given)")
        try:
            value = verify()
        except Exception as e:  # noqa: BLE001 - a check that errors is a failed verification
            logger.warning("%s: verification raised %s", self.runbook.id, e)
            return Verification(ran=True, ok=False, detail=f"the verification could not run: {e}")
        return _judge(value)


def _field(value: object, name: str) -> Any:
    if isinstance(value, Mapping):
        return value.get(name)
    return getattr(value, name, None)


def _judge(value: object) -> Verification:
    if isinstance(value, bool):
        return Verification(
            ran=True, ok=value, detail="the verification passed" if value else "the drift remains"
        )
    status, drifted, message = _field(value, "status"), _field(value, "drifted"), _field(value, "message")
    observed = _field(value, "observed")
    if not isinstance(observed, dict | list | str | int | float | bool | type(None)):
        observed = str(observed)
    if status is not None:
        ok = str(status) in PASSING
    elif drifted is not None:
        ok = not drifted
    else:
        ok = bool(value)
    detail = str(message) if message else ("the verification passed" if ok else "the drift remains")
    if status is not None:
        detail = f"check status {status}: {detail}"
    return Verification(ran=True, ok=ok, detail=detail, observed=observed)
