"""One reconcile cycle, end to end: lock, observe, notice outside changes, finish interrupted
work, decide, apply, record evidence, remember.

Ordering matters for crash safety. An attempt is opened before anything is activated and
closed only after its outcome is in signed evidence; an interrupted attempt is found on the
next cycle and settled from what the host shows (the switch completed, or the host still
boots the old generation and the plan decides again). Nothing is recorded twice and nothing
acknowledged is lost.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nixcomply.checks.context import CheckContext
from nixcomply.checks.finding import Finding
from nixcomply.core import faults
from nixcomply.core.lock import StateLock
from nixcomply.errors import InputError, NixcomplyError
from nixcomply.evidence.statement import Host
from nixcomply.evidence.store import EvidenceStore
from nixcomply.heal.actions import SyncGeneration, SyncResult
from nixcomply.host.state import Attempt, State
from nixcomply.model.manifest import Manifest, read_manifest
from nixcomply.model.outcome import ApplyOutcome, PlanKind
from nixcomply.nixos.rebuild import RebuildAction, switch_to_configuration
from nixcomply.nixos.root import Root
from nixcomply.nixos.tools import Tools
from nixcomply.reconcile import apply as applying
from nixcomply.reconcile import record, runtime
from nixcomply.reconcile.config import ReconcilerConfig
from nixcomply.reconcile.gate import GateSystemd
from nixcomply.reconcile.model import ApplyResult, CycleReport, FindingSummary, HostState, Plan
from nixcomply.reconcile.observe import external_change, observation_of, observe
from nixcomply.reconcile.plan import LockedTarget, decide, desired_state
from nixcomply.reconcile.respond import Healer

if TYPE_CHECKING:
    from nixcomply.host.systemd import SystemdFactory

logger = logging.getLogger(__name__)


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

    # -- plan ------------------------------------------------------------------------------

    def plan(self, *, build: bool = True) -> PlanReport:
        """Observe and decide without activating anything (``nixcomply plan``)."""
        with StateLock(self.config.state_dir, purpose="plan"), State.open(self.config.state_dir) as state:
            host = observe(self.root, tools=self.tools, hostname=self.config.host)
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
            run_id = state.start_run("reconcile-dry-run" if dry_run else "reconcile")
            report = self._cycle(state, store, started=started, dry_run=dry_run)
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

    def _cycle(
        self, state: State, store: EvidenceStore | None, *, started: datetime, dry_run: bool
    ) -> CycleReport:
        seqs: list[int] = []
        host = observe(self.root, tools=self.tools, hostname=self.config.host)
        identity = record.host_identity(self.root.path, self.config.host)
        policy = self._policy_digest(host)
        interrupted = state.in_progress()
        explained = frozenset(
            p
            for a in interrupted
            for p in (a.toplevel, host.profile.store_path if host.profile else None)
            if p
        )

        external = external_change(state.observation(), host, explained_paths=explained)
        if external is not None:
            logger.warning("%s", external.description)
            if store is not None:
                seqs.append(
                    record.record_external(
                        store,
                        host_id=identity,
                        before=None,
                        after=host,
                        change=external,
                        policy_digest=policy,
                        tools=self.tools,
                        now=datetime.now(UTC),
                    ).seq
                )

        target = desired_state(self.config, tools=self.tools)
        for attempt in interrupted:
            seq = self._settle(
                attempt, host=host, target=target, state=state, store=store, identity=identity, policy=policy
            )
            if seq is not None:
                seqs.append(seq)
        if not dry_run:
            state.set_observation(observation_of(host))

        plan = decide(host, target, state, self.config, tools=self.tools)
        result = applying.apply(plan, host, state, self.context(), dry_run=dry_run, now=datetime.now(UTC))
        after = (
            observe(self.root, tools=self.tools, hostname=self.config.host)
            if result.outcome.changed_host
            else host
        )
        if store is not None and result.outcome.changed_host:
            recorded = record.record_apply(
                store,
                host_id=identity,
                before=host,
                after=after,
                desired=target.desired,
                result=result,
                policy_digest=self._policy_digest(after),
                tools=self.tools,
                now=datetime.now(UTC),
            )
            if recorded is not None:
                seqs.append(recorded.seq)
        faults.point("recorded")
        self._close_attempt(plan, result, after, state)
        findings = self._runtime_checks(
            after,
            target,
            state,
            store,
            identity,
            switched=result.outcome == ApplyOutcome.SUCCESS,
            in_sync=plan.kind == PlanKind.IN_SYNC or result.outcome == ApplyOutcome.SUCCESS,
            dry_run=dry_run,
        )
        seqs.extend(findings.seqs)
        if not dry_run:
            state.set_observation(observation_of(after))
        return CycleReport(
            started_at=started,
            finished_at=datetime.now(UTC),
            dry_run=dry_run,
            host=after,
            desired=target.desired,
            external=external,
            plan=plan,
            result=result,
            evidence_seqs=seqs,
            findings=findings.summaries,
        )

    def _runtime_checks(
        self,
        host: HostState,
        target: LockedTarget,
        state: State,
        store: EvidenceStore | None,
        identity: Host,
        *,
        switched: bool,
        in_sync: bool,
        dry_run: bool,
    ) -> RuntimeResult:
        """The drift checks on the running host, the heals they call for, and one check-run
        statement with every control's status and what was decided about it."""
        systemd = self.config.systemd.connector(if_installed=True)

        def check_context() -> CheckContext:
            return runtime.context(
                self.config, host, target.desired, state, systemd=systemd, now=datetime.now(UTC)
            )

        runtime.record_ruleset(check_context(), host, state, force=switched)
        findings = runtime.check(check_context(), state)
        policy = self._policy_digest(host)
        healer = Healer(
            config=self.config,
            state=state,
            store=store,
            identity=identity,
            policy_digest=policy,
            dry_run=dry_run,
            check_context=check_context,
            systemd=self.config.systemd.connector(),
            sync_generation=self._sync_generation(host, in_sync=in_sync),
            now=lambda: datetime.now(UTC),
        )
        healed = healer.heal(findings)
        seqs = list(healed.seqs)
        if store is not None:
            seqs.append(
                record.record_check_run(
                    store,
                    host_id=identity,
                    host=host,
                    findings=findings,
                    decisions=healed.decisions,
                    policy_digest=policy,
                    tools=self.tools,
                    now=datetime.now(UTC),
                ).seq
            )
        return RuntimeResult(
            findings=findings,
            summaries=[runtime.summary(f, healed.decisions.get(i)) for i, f in enumerate(findings)],
            seqs=seqs,
        )

    def _sync_generation(self, host: HostState, *, in_sync: bool) -> SyncGeneration:
        """RB-DRIFT-001's step: re-activate the approved generation, which runs (this cycle's
        generation step saw to that) and is the boot default."""

        def sync(timeout: float) -> SyncResult:
            profile = host.profile.store_path if host.profile else None
            current = host.current.store_path if host.current else None
            if not in_sync or profile is None or current != profile:
                return SyncResult(
                    False, "the approved generation is not running; the generation step decides first"
                )
            r = switch_to_configuration(Path(profile), RebuildAction.TEST, tools=self.tools, timeout=timeout)
            ok = not r.units_failed
            return SyncResult(
                ok, f"re-activated {profile} (switch-to-configuration test exited {r.returncode})"
            )

        return sync

    def _close_attempt(self, plan: Plan, result: ApplyResult, after: HostState, state: State) -> None:
        if plan.kind != PlanKind.DRIFT or plan.target_revision is None:
            return
        rev = plan.target_revision
        if result.outcome == ApplyOutcome.SUCCESS:
            state.end_attempt(rev, "success", result.detail)
            state.set_last_good(
                generation=after.profile.generation if after.profile else None,
                store_path=result.target_path or "",
                revision=rev,
            )
        elif result.outcome.failed:
            state.end_attempt(rev, result.outcome.value, result.detail)

    def _settle(
        self,
        attempt: Attempt,
        *,
        host: HostState,
        target: LockedTarget,
        state: State,
        store: EvidenceStore | None,
        identity: Host,
        policy: str | None,
    ) -> int | None:
        """An attempt a previous run did not finish: record what the host shows happened."""
        current = host.current.store_path if host.current else None
        profile = host.profile.store_path if host.profile else None
        if attempt.toplevel is not None and current == attempt.toplevel == profile:
            outcome, detail = (
                ApplyOutcome.SUCCESS,
                "the switch completed; the run that made it was interrupted before recording it",
            )
        elif attempt.phase == "reverting" and current == profile:
            outcome, detail = (
                ApplyOutcome.REVERTED,
                f"{attempt.toplevel} failed and was reverted; the run was interrupted before recording it",
            )
        elif current == profile:
            # interrupted before anything was activated (or after it was undone): no generation
            # changed, nothing to record; not judged by the gate, so not blocked either
            logger.info("an interrupted attempt at %s left the host on its boot default", attempt.revision)
            state.clear_attempts(attempt.revision)
            return None
        else:
            return None  # still activated but not switched: the plan decides again (test, gate, switch)
        result = ApplyResult(outcome=outcome, detail=detail, target_path=attempt.toplevel)
        seq = None
        if store is not None and not _already_recorded(store, attempt):
            recorded = record.record_apply(
                store,
                host_id=identity,
                before=host,
                after=host,
                desired=target.desired.model_copy(update={"revision": attempt.revision}),
                result=result,
                policy_digest=policy,
                tools=self.tools,
                now=datetime.now(UTC),
                note="(recovered)",
            )
            seq = recorded.seq if recorded else None
        if outcome == ApplyOutcome.SUCCESS:
            state.end_attempt(attempt.revision, "success", detail)
            state.set_last_good(
                generation=host.profile.generation if host.profile else None,
                store_path=attempt.toplevel or "",
                revision=attempt.revision,
            )
        else:
            state.end_attempt(attempt.revision, "reverted", detail)
        return seq

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
            need_reboot=bool(report.host.need_reboot),
            findings=tuple(report.finding_samples),
            heals=state.heal_counts(),
            suppressed=len(state.suppressed()),
            blocked=len(state.blocked_revisions()),
            evidence_seq=tail.seq if tail else None,
            checkpoint_size=tail.checkpoint_size if tail else None,
            **_upload_metrics(self.config),
        )
        metrics.write(self.config.metrics.path, snapshot)

    def _policy_digest(self, host: HostState) -> str | None:
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


def _already_recorded(store: EvidenceStore, attempt: Attempt) -> bool:
    """Whether the newest evidence entry is this attempt's outcome (the run that wrote it died
    before closing the attempt): recording it again would duplicate it."""
    import json

    tail = store.tail()
    if tail is None:
        return False
    try:
        statement = json.loads((tail.path / "statement.json").read_bytes())
        predicate = statement["predicate"]
        observed = datetime.fromisoformat(predicate["observed_at"])
        return bool(
            statement["predicateType"].endswith("/generation-change/v1")
            and predicate.get("actor") == "nixcomply"
            and predicate["generation"]["store_path"] == attempt.toplevel
            and observed >= attempt.updated_at
        )
    except (OSError, ValueError, KeyError, TypeError):
        return False


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
    from nixcomply.uplink.run import overview

    found = overview(config.state_dir)
    if found is None:
        return {}
    return {
        "upload_lag_entries": found.lag.entries,
        "upload_lag_seconds": found.lag.age_seconds(datetime.now(UTC)),
        "upload_failures": found.failures,
    }
