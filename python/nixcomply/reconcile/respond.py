"""The heal step of a cycle: findings -> rules -> policy -> runbooks (or alerts) -> evidence.

For every finding that drifted or could not be checked, the deterministic rules pick a
runbook or an alert. The policy then decides whether it may run now (flap suppression,
cooldowns, maintenance window). A runbook runs through the guarded executor, and the
finding's own check is re-run afterwards: only a check that passes makes the heal a
success. Every run and every alert is a signed remediation statement; what was decided for
each finding also goes into that cycle's check-run statement.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from nixcomply.checks.context import CheckContext
from nixcomply.checks.finding import Finding
from nixcomply.checks.registry import run_checks
from nixcomply.core.paths import runbooks_dir
from nixcomply.errors import InputError, NixcomplyError
from nixcomply.evidence.statement import Host
from nixcomply.evidence.store import EvidenceStore
from nixcomply.heal import policy
from nixcomply.heal.actions import ActionEnv, SyncGeneration, send_alert
from nixcomply.heal.executor import ExecutionContext, RunbookRun, execute
from nixcomply.heal.remediation import record_remediation
from nixcomply.heal.rules import Decision, Rule, decide, load_rules
from nixcomply.heal.runbook import Runbook, load_runbook
from nixcomply.host.state import State
from nixcomply.model.outcome import RunOutcome
from nixcomply.reconcile import record
from nixcomply.reconcile.config import ReconcilerConfig

logger = logging.getLogger(__name__)


@dataclass
class HealOutcome:
    decisions: dict[int, str] = field(default_factory=dict)  # finding index -> what was decided
    seqs: list[int] = field(default_factory=list)
    runs: list[RunbookRun] = field(default_factory=list)


def load_policy() -> tuple[list[Rule], dict[str, Runbook]]:
    """The built-in rules and the runbooks they name (shipped with nixcomply)."""
    directory = runbooks_dir()
    runbooks = {p.stem: load_runbook(p) for p in sorted(directory.glob("RB-*.yaml"))}
    rules = load_rules((directory / "rules").glob("*.yaml"), runbook_ids=frozenset(runbooks))
    return rules, runbooks


@dataclass
class Healer:
    config: ReconcilerConfig
    state: State
    store: EvidenceStore | None
    identity: Host
    policy_digest: str | None
    dry_run: bool
    check_context: Callable[[], CheckContext]
    systemd: Callable[[], Any] | None
    sync_generation: SyncGeneration | None
    now: Callable[[], datetime]

    def heal(self, findings: Sequence[Finding]) -> HealOutcome:
        out = HealOutcome()
        try:
            rules, runbooks = load_policy()
        except InputError as e:
            logger.error("the rules or runbooks do not load; nothing is healed: %s", e)
            return out
        for index, finding in enumerate(findings):
            if not finding.needs_attention:
                continue
            decision = decide(rules, finding.model_dump(mode="json"))
            if decision is None:
                out.decisions[index] = "no rule: reported only"
                continue
            try:
                out.decisions[index] = self._act(finding, decision, runbooks, out)
            except NixcomplyError as e:
                out.decisions[index] = f"could not act: {e}"
                logger.error("healing %s failed: %s", finding.check, e)
        return out

    def _key(self, finding: Finding, decision: Decision) -> str:
        return f"{decision.cooldown_key}:{finding.subject or '-'}"

    def _act(
        self, finding: Finding, decision: Decision, runbooks: dict[str, Runbook], out: HealOutcome
    ) -> str:
        at = self.now()
        key = self._key(finding, decision)
        cooldown = timedelta(seconds=decision.rule.cooldown_seconds)
        if decision.alert is not None:
            verdict = policy.may_run(
                self.state,
                check=finding.check,
                runbook="alert",
                cooldown_key=key,
                disruptive=False,
                window=None,
                at=at,
            )
            if verdict.gate != policy.Gate.RUN:
                return f"alert ({decision.rule.id}) already sent: {verdict.reason}"
            if self.dry_run:
                return f"dry run: would alert ({decision.rule.id}): {decision.alert}"
            sent = self._alert(f"{decision.alert} [{finding.check}: {finding.message}]")
            self.state.set_cooldown(key, at + cooldown, 0)
            if self.store is not None:
                out.seqs.append(
                    record.record_alert(
                        self.store,
                        host_id=self.identity,
                        finding=finding,
                        rule=decision.rule.id,
                        message=decision.alert,
                        sent=sent,
                        policy_digest=self.policy_digest,
                        now=at,
                    ).seq
                )
            return f"alert ({decision.rule.id}): {decision.alert}"

        assert decision.runbook is not None
        runbook = runbooks.get(decision.runbook)
        if runbook is None:
            return f"rule {decision.rule.id} names {decision.runbook}, which is not shipped"
        params = {
            k: v for k, v in {**finding.runbook_params, **decision.params}.items() if v not in ("", None)
        }
        disruptive = runbook.disruptive or runbook.constraints.requires_maintenance_window
        verdict = policy.may_run(
            self.state,
            check=finding.check,
            runbook=runbook.id,
            cooldown_key=key,
            disruptive=disruptive,
            window=self.config.maintenance_window,
            at=at,
        )
        if verdict.gate != policy.Gate.RUN:
            return f"{runbook.id} not run: {verdict.reason}"
        if not self.config.heal.enable:
            return f"{runbook.id} not run: healing is disabled (heal.enable = false)"
        ctx = ExecutionContext(
            config=self.config.heal,
            systemd=self.systemd,
            sync_generation=self.sync_generation,
            root=self.config.root,
            user_mode=self.config.systemd.user_mode,
        )
        run = execute(runbook, params, ctx, dry_run=self.dry_run, verify=self._verifier(finding))
        out.runs.append(run)
        if self.dry_run:
            return f"dry run: would run {runbook.id} ({run.reason})"
        if self.store is not None:
            out.seqs.append(
                record_remediation(
                    self.store, run, host=self.identity, finding=finding, policy_digest=self.policy_digest
                ).seq
            )
        if run.outcome != RunOutcome.REJECTED:
            suppressed = policy.record_outcome(
                self.state,
                check=finding.check,
                runbook=runbook.id,
                cooldown_key=key,
                cooldown=cooldown,
                outcome=run.outcome.value,
                at=self.now(),
            )
            if suppressed:
                return f"{runbook.id}: {run.outcome.value}; now suppressed (it keeps coming back)"
        return f"{runbook.id}: {run.outcome.value} ({run.reason})"

    def _verifier(self, finding: Finding) -> Callable[[], object]:
        """Re-run the finding's own check and return its new finding for the same subject."""

        def verify() -> object:
            for f in run_checks(self.check_context(), [finding.check]):
                if f.subject == finding.subject and f.control_ids == finding.control_ids:
                    return f
            return False

        return verify

    def _alert(self, message: str) -> bool:
        def no_systemd() -> Any:
            raise NixcomplyError("alerts do not use systemd")

        env = ActionEnv(config=self.config.heal, systemd=no_systemd, timeout=30)
        result = send_alert({"message": message, "priority": None}, env)
        if not result.ok:
            logger.error("%s", result.detail)
        return result.ok
