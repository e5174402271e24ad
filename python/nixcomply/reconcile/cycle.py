"""One reconcile cycle, end to end: lock, observe, notice outside changes, settle interrupted
work, decide, apply, record evidence, remember.

Ordering matters for crash safety. Both evidence keys are checked before anything changes
(a key the keyring does not list would otherwise be found after the switch). An attempt is
opened before anything is activated and closed only after its outcome is in signed
evidence, together with what the host looked like afterwards (one transaction), so the next
cycle never takes nixcomply's own switch for someone else's. An interrupted attempt is found
on the next cycle and settled from what the host shows (:mod:`nixcomply.reconcile.settle`):
nothing is recorded twice, nothing acknowledged is lost, and every activation is recorded.

A cycle in phases (:class:`_Cycle`): observe and notice outside changes; settle interrupted
attempts; decide and apply; record and close; the runtime checks and their heals.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from nixcomply.checks.context import CheckContext
from nixcomply.checks.finding import Finding
from nixcomply.core import faults
from nixcomply.core.faults import FaultPoint
from nixcomply.core.lock import StateLock
from nixcomply.core.memo import Memo
from nixcomply.errors import CommandError, InputError, NixcomplyError
from nixcomply.evidence.store import EvidenceStore
from nixcomply.heal.sync import SyncGeneration, SyncResult
from nixcomply.host.state import Attempt, AttemptOutcome, AttemptPhase, LastGood, State
from nixcomply.model.manifest import Manifest, read_manifest
from nixcomply.model.outcome import ApplyOutcome, PlanKind
from nixcomply.nixos import generations
from nixcomply.nixos.rebuild import RebuildAction, switch_to_configuration
from nixcomply.nixos.root import Root
from nixcomply.nixos.tools import Tools
from nixcomply.reconcile import apply as applying
from nixcomply.reconcile import record, runtime
from nixcomply.reconcile.config import ReconcilerConfig
from nixcomply.reconcile.gate import GateSystemd
from nixcomply.reconcile.model import (
    ApplyResult,
    CycleReport,
    ExternalChange,
    FindingSummary,
    HostState,
    Plan,
    reboot_reasons,
)
from nixcomply.reconcile.observe import external_change, observation_of, observe
from nixcomply.reconcile.plan import LockedTarget, decide, desired_state
from nixcomply.reconcile.respond import Healer, load_policy
from nixcomply.reconcile.settle import Settlement, settlement

if TYPE_CHECKING:
    from nixcomply.host.systemd import SystemdFactory

logger = logging.getLogger(__name__)

# the state database's value: the checks of the last cycle whose drift only a boot heals
REBOOT_REASONS: Final = "reboot_reasons"

_ATTEMPT_OUTCOME = {
    ApplyOutcome.SUCCESS: AttemptOutcome.SUCCESS,
    ApplyOutcome.REVERTED: AttemptOutcome.REVERTED,
    ApplyOutcome.FAILED: AttemptOutcome.FAILED,
}


def tools_for(config: ReconcilerConfig) -> Tools:
    return Tools(
        nix=config.executables.nix,
        nixos_rebuild=config.executables.nixos_rebuild,
        git=config.executables.git,
        systemd_run=config.executables.systemd_run,
        extra_env=dict(config.environment),
    )


@dataclass(frozen=True)
class RuntimeResult:
    findings: list[Finding]
    summaries: list[FindingSummary]
    seqs: list[int]
    policy_problems: list[str]


@dataclass(frozen=True)
class PlanReport:
    host: HostState
    target: LockedTarget
    plan: Plan


class Reconciler:
    def __init__(
        self,
        config: ReconcilerConfig,
        *,
        tools: Tools | None = None,
        systemd: SystemdFactory[GateSystemd] | None = None,
        use_systemd: bool = True,
    ) -> None:
        self.config = config
        self.root = Root(config.root)
        self.tools = tools or tools_for(config)
        self.systemd = (
            systemd if systemd is not None else (config.systemd.connector() if use_systemd else None)
        )

    def context(self) -> applying.Context:
        return applying.Context(config=self.config, root=self.root, tools=self.tools, systemd=self.systemd)

    def observe(self, memo: Memo | None = None) -> HostState:
        return observe(self.root, tools=self.tools, hostname=self.config.host, memo=memo)

    # -- plan ------------------------------------------------------------------------------

    def plan(self, *, build: bool = True) -> PlanReport:
        """Observe and decide without activating anything (``nixcomply plan``)."""
        with StateLock(self.config.state_dir, purpose="plan"), State.open(self.config.state_dir) as state:
            host = self.observe()
            target = desired_state(self.config, tools=self.tools)
            plan = decide(host, target, state, self.config, tools=self.tools, build_target=build)
            return PlanReport(host=host, target=target, plan=plan)

    # -- reconcile -------------------------------------------------------------------------

    def run(self, *, dry_run: bool = False, store: EvidenceStore | None = None) -> CycleReport:
        started = datetime.now(UTC)
        dry_run = dry_run or self.config.dry_run
        with contextlib.ExitStack() as stack:
            stack.enter_context(StateLock(self.config.state_dir, purpose="reconcile"))
            state = stack.enter_context(State.open(self.config.state_dir))
            if store is None and not dry_run:
                store = stack.enter_context(record.open_store(self.config))
            if store is not None and not dry_run:
                store.check_keys()  # both keys can sign before anything changes
            run_id = state.start_run("reconcile-dry-run" if dry_run else "reconcile")
            report = _Cycle(self, state, store, dry_run=dry_run, started=started).run()
            if not dry_run and self.config.upload.server and self.config.upload.after_cycle:
                _upload(self.config)
            if self.config.metrics.enable:
                self._write_metrics(report, state, store)
            state.finish_run(
                run_id,
                report.result.outcome.value,
                {
                    "plan": report.plan.kind.value if report.plan else None,
                    "target_revision": report.plan.target_revision if report.plan else None,
                    "detail": report.result.detail,
                    "evidence_seqs": report.evidence_seqs,
                    "generation": report.host.profile.generation if report.host.profile else None,
                },
            )
            return report

    def _write_metrics(self, report: CycleReport, state: State, store: EvidenceStore | None) -> None:
        from nixcomply.host import metrics

        tail = store.tail() if store is not None else None
        manifest = _running_manifest(report.host)
        snapshot = metrics.Snapshot(
            host=self.config.host,
            baseline=f"{manifest.baseline.id}" if manifest else None,
            nixos_release=manifest.nixos_release if manifest else None,
            finished_at=report.finished_at.timestamp(),
            duration_s=(report.finished_at - report.started_at).total_seconds(),
            outcome=report.result.outcome.value,
            plan=report.plan.kind.value if report.plan else None,
            generation=report.host.profile.generation if report.host.profile else None,
            need_reboot=bool(report.reboot_needed),
            findings=tuple(report.finding_samples),
            heals=state.heal_counts(),
            suppressed=len(state.suppressed()),
            blocked=len(state.blocked_revisions()),
            evidence_seq=tail.seq if tail else None,
            checkpoint_size=tail.checkpoint_size if tail else None,
            **_upload_metrics(self.config),
        )
        metrics.write(self.config.metrics.path, snapshot)

    def policy_digest(self, host: HostState) -> str | None:
        """The digest of the baseline the running system was rendered from."""
        manifest = _running_manifest(host)
        return manifest.baseline.digest if manifest else None


def _running_manifest(host: HostState) -> Manifest | None:
    """The running system's manifest, or None (an unreadable one is a finding of the checks,
    not an error of the cycle)."""
    return None if host.current is None else _manifest_of(host.current.store_path)


@functools.lru_cache(maxsize=8)
def _manifest_of(store_path: str) -> Manifest | None:
    """A store path never changes, so its manifest is read once per process."""
    try:
        return read_manifest(Path(store_path))
    except InputError:
        return None


@dataclass
class _Cycle:
    """One run of :meth:`Reconciler.run`: the phases of a cycle and what they share."""

    reconciler: Reconciler
    state: State
    store: EvidenceStore | None
    dry_run: bool
    started: datetime
    seqs: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        config = self.reconciler.config
        self.config = config
        self.tools = self.reconciler.tools
        self.identity = record.host_identity(self.reconciler.root.path, config.host)

    def run(self) -> CycleReport:
        host = self.reconciler.observe(self.state)
        interrupted = [] if self.dry_run else self.state.in_progress()
        external = self.notice(host, interrupted)
        target = desired_state(self.config, tools=self.tools)
        host = self.settle(host, target, interrupted)
        self.remember(host)

        plan = decide(host, target, self.state, self.config, tools=self.tools)
        result = applying.apply(
            plan, host, self.state, self.reconciler.context(), dry_run=self.dry_run, now=datetime.now(UTC)
        )
        after = self.reconciler.observe(self.state) if result.outcome.changed_host else host
        self.record_and_close(plan, result, before=host, after=after, target=target)
        faults.point(FaultPoint.CLOSED)

        checked = self.runtime_checks(
            after,
            target,
            switched=result.outcome == ApplyOutcome.SUCCESS,
            in_sync=plan.kind == PlanKind.IN_SYNC or result.outcome == ApplyOutcome.SUCCESS,
        )
        faults.point(FaultPoint.CHECKED)
        self.remember(after)
        if not self.dry_run:  # `nixcomply status` says so until a boot heals it
            self.state.set_value(REBOOT_REASONS, reboot_reasons(checked.summaries))
        return CycleReport(
            started_at=self.started,
            finished_at=datetime.now(UTC),
            dry_run=self.dry_run,
            host=after,
            desired=target.desired,
            external=external,
            plan=plan,
            result=result,
            evidence_seqs=self.seqs,
            findings=checked.summaries,
            policy_problems=checked.policy_problems,
        )

    def policy(self, host: HostState) -> str | None:
        return self.reconciler.policy_digest(host)

    def remember(self, host: HostState) -> None:
        if not self.dry_run:
            self.state.set_observation(observation_of(host))

    # -- observe: changes nixcomply did not make ------------------------------------------

    def notice(self, host: HostState, interrupted: list[Attempt]) -> ExternalChange | None:
        """The generation change since the last cycle that nixcomply did not make, recorded
        with actor ``external``. Systems an interrupted attempt was activating (or reverting
        to) are nixcomply's own doing."""
        explained = frozenset(
            p
            for a in interrupted
            for p in (a.toplevel, host.profile.store_path if host.profile else None)
            if p
        )
        external = external_change(self.state.observation(), host, explained_paths=explained)
        if external is None:
            return None
        logger.warning("%s", external.description)
        if self.store is not None:
            recorded = record.record_external(
                self.store,
                host_id=self.identity,
                before=None,
                after=host,
                change=external,
                policy_digest=self.policy(host),
                tools=self.tools,
                now=datetime.now(UTC),
                memo=self.state,
            )
            self.seqs.append(recorded.seq)
        return external

    # -- settle: attempts a previous run did not finish -----------------------------------

    def settle(self, host: HostState, target: LockedTarget, interrupted: list[Attempt]) -> HostState:
        """Settle every interrupted attempt from what the host shows; the host as it is after
        (re-observed when a settlement re-activated the boot default)."""
        for attempt in interrupted:
            host = self._settle(attempt, host, target)
        return host

    def _settle(self, attempt: Attempt, host: HostState, target: LockedTarget) -> HostState:
        current = host.current.store_path if host.current else None
        profile = host.profile.store_path if host.profile else None
        decision = settlement(attempt, current=current, profile=profile)
        logger.warning("settling the interrupted attempt %s: %s", attempt.key, decision.detail)
        if decision.settlement == Settlement.NOTHING:
            self.state.end_attempt(attempt.revision, AttemptOutcome.INTERRUPTED, decision.detail)
            return host
        outcome = (
            ApplyOutcome.SUCCESS if decision.settlement == Settlement.SWITCHED else ApplyOutcome.REVERTED
        )
        detail = decision.detail
        durations: dict[str, float] = {}
        if decision.settlement.reactivates:
            if decision.settlement == Settlement.UNDO:
                self.state.set_phase(attempt.revision, AttemptPhase.UNDOING, detail=decision.detail)
            faults.point(FaultPoint.SETTLING)
            outcome, detail, durations = self._reactivate_boot_default(detail)
            faults.point(FaultPoint.SETTLED)
            host = self.reconciler.observe(self.state)
        result = ApplyResult(
            outcome=outcome,
            detail=detail,
            attempt=attempt.key,
            target_path=attempt.toplevel,
            durations=durations,
        )
        if self.store is not None and not self._already_recorded(attempt):
            recorded = record.record_apply(
                self.store,
                host_id=self.identity,
                before=host,
                after=host,
                desired=target.desired.model_copy(update={"revision": attempt.revision}),
                result=result,
                policy_digest=self.policy(host),
                tools=self.tools,
                now=datetime.now(UTC),
                note="(recovered)",
                attempt=attempt.key,
                memo=self.state,
            )
            if recorded is not None:
                self.seqs.append(recorded.seq)
        faults.point(FaultPoint.RECORDED)
        ended = decision.settlement.outcome if outcome != ApplyOutcome.FAILED else AttemptOutcome.FAILED
        last_good = None
        if ended == AttemptOutcome.SUCCESS:
            last_good = LastGood(
                host.profile.generation if host.profile else None, attempt.toplevel or "", attempt.revision
            )
        self.state.end_attempt(
            attempt.revision, ended, detail, observation=observation_of(host), last_good=last_good
        )
        return host

    def _reactivate_boot_default(self, why: str) -> tuple[ApplyOutcome, str, dict[str, float]]:
        good = generations.profile_target(self.reconciler.root)
        if good is None:
            return ApplyOutcome.FAILED, f"{why}; the host has no profile generation to re-activate", {}
        started = time.monotonic()
        try:
            switch_to_configuration(
                good, RebuildAction.TEST, tools=self.tools, timeout=self.config.activation_timeout
            )
        except CommandError as e:
            took = {"undo": round(time.monotonic() - started, 3)}
            return ApplyOutcome.FAILED, f"{why}; re-activating the boot default {good} failed: {e}", took
        took = {"undo": round(time.monotonic() - started, 3)}
        return ApplyOutcome.REVERTED, f"{why}; re-activated the boot default {good}", took

    def _already_recorded(self, attempt: Attempt) -> bool:
        """Whether the newest evidence entry records ``attempt`` (the run that wrote it died
        before closing the attempt): recording it again would duplicate it."""
        assert self.store is not None
        return record.recorded_attempt(self.store.tail_statement()) == attempt.key

    # -- record and close: this cycle's attempt -------------------------------------------

    def record_and_close(
        self, plan: Plan, result: ApplyResult, *, before: HostState, after: HostState, target: LockedTarget
    ) -> None:
        """The generation change as evidence, then the attempt closed together with what the
        host looks like now (one transaction: 12.3)."""
        if self.store is not None and result.outcome.changed_host:
            recorded = record.record_apply(
                self.store,
                host_id=self.identity,
                before=before,
                after=after,
                desired=target.desired,
                result=result,
                policy_digest=self.policy(after),
                tools=self.tools,
                now=datetime.now(UTC),
                attempt=result.attempt,
                memo=self.state,
            )
            if recorded is not None:
                self.seqs.append(recorded.seq)
        faults.point(FaultPoint.RECORDED)
        ended = _ATTEMPT_OUTCOME.get(result.outcome)
        if plan.kind != PlanKind.DRIFT or plan.target_revision is None or ended is None:
            return
        last_good = None
        if ended == AttemptOutcome.SUCCESS:
            last_good = LastGood(
                after.profile.generation if after.profile else None,
                result.target_path or "",
                plan.target_revision,
            )
        self.state.end_attempt(
            plan.target_revision,
            ended,
            result.detail,
            observation=None if self.dry_run else observation_of(after),
            last_good=last_good,
        )

    # -- the runtime checks and their heals -----------------------------------------------

    def runtime_checks(
        self, host: HostState, target: LockedTarget, *, switched: bool, in_sync: bool
    ) -> RuntimeResult:
        """The drift checks on the running host, the heals they call for, and one check-run
        statement with every control's status and what was decided about it."""
        config, state, store = self.config, self.state, self.store
        systemd = config.systemd.connector(if_installed=True)

        def check_context() -> CheckContext:
            return runtime.context(
                config, host, target.desired, state, systemd=systemd, now=datetime.now(UTC)
            )

        runtime.record_ruleset(check_context(), host, state, force=switched)
        loaded = load_policy(memo=self.state)
        findings = [*runtime.check(check_context(), state), *loaded.findings()]
        policy = self.policy(host)
        healer = Healer(
            config=config,
            state=state,
            store=store,
            identity=self.identity,
            policy_digest=policy,
            dry_run=self.dry_run,
            check_context=check_context,
            systemd=config.systemd.connector(),
            sync_generation=self._sync_generation(host, in_sync=in_sync),
            now=lambda: datetime.now(UTC),
        )
        healed = healer.heal(findings, loaded)
        self.seqs.extend(healed.seqs)
        if store is not None:
            self.seqs.append(
                record.record_check_run(
                    store,
                    host_id=self.identity,
                    host=host,
                    findings=findings,
                    decisions=healed.decisions,
                    policy_digest=policy,
                    tools=self.tools,
                    now=datetime.now(UTC),
                    memo=state,
                ).seq
            )
        return RuntimeResult(
            findings=findings,
            summaries=[runtime.summary(f, healed.decisions.get(i)) for i, f in enumerate(findings)],
            seqs=list(healed.seqs),
            policy_problems=[str(p) for p in loaded.problems],
        )

    def _sync_generation(self, host: HostState, *, in_sync: bool) -> SyncGeneration:
        """RB-DRIFT-001's step: re-activate the approved generation, which runs (this cycle's
        generation step saw to that) and is the boot default."""
        tools = self.tools

        def sync(timeout: float) -> SyncResult:
            profile = host.profile.store_path if host.profile else None
            current = host.current.store_path if host.current else None
            if not in_sync or profile is None or current != profile:
                return SyncResult(
                    False, "the approved generation is not running; the generation step decides first"
                )
            r = switch_to_configuration(Path(profile), RebuildAction.TEST, tools=tools, timeout=timeout)
            ok = not r.units_failed
            return SyncResult(
                ok, f"re-activated {profile} (switch-to-configuration test exited {r.returncode})"
            )

        return sync


def _upload(config: ReconcilerConfig) -> None:
    """Send the cycle's evidence to the MSP's server. Never fails the cycle: a failure is
    logged and retried with backoff (the uplink's own timer tries too), and while backing off
    no request is made, so a dead server costs a cycle nothing."""
    from nixcomply.uplink.run import upload

    try:
        report = upload(
            config.state_dir,
            server=config.upload.server,
            timeout=config.upload.timeout_seconds,
            max_entries=config.upload.max_batch_entries,
        )
    except (NixcomplyError, OSError) as e:
        logger.warning("upload after the cycle: %s", e)
        return
    logger.info("upload after the cycle: %s, server holds %d entries", report.outcome, report.accepted_size)


def _upload_metrics(config: ReconcilerConfig) -> dict[str, Any]:
    if config.upload.server is None:
        return {}  # uploads are off: no lag to report, and the uplink (HTTP, TLS) stays unloaded
    from nixcomply.uplink.run import overview

    found = overview(config.state_dir)
    if found is None:
        return {}
    return {
        "upload_lag_entries": found.lag.entries,
        "upload_lag_seconds": found.lag.age_seconds(datetime.now(UTC)),
        "upload_failures": found.failures,
    }
