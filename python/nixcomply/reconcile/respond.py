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
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeVar

from nixcomply.checks.context import CheckContext
from nixcomply.checks.finding import Finding
from nixcomply.checks.registry import run_checks
from nixcomply.core import faults
from nixcomply.core.faults import FaultPoint
from nixcomply.core.memo import Memo, file_stamp
from nixcomply.core.paths import runbooks_dir
from nixcomply.errors import HostIOError, InputError, NixcomplyError, Problem
from nixcomply.evidence.statement import Host
from nixcomply.evidence.store import EvidenceStore
from nixcomply.heal import policy
from nixcomply.heal.rules import Condition, Decision, Op, Rule, RuleAction, RuleFile, decide, load_rules
from nixcomply.heal.runbook import Runbook, load_runbook
from nixcomply.heal.sync import SyncGeneration
from nixcomply.host.state import State
from nixcomply.model.outcome import RunOutcome
from nixcomply.model.severity import Severity
from nixcomply.model.status import FindingStatus
from nixcomply.reconcile import record
from nixcomply.reconcile.config import ReconcilerConfig

if TYPE_CHECKING:
    from nixcomply.heal.executor import RunbookRun

logger = logging.getLogger(__name__)


@dataclass
class HealOutcome:
    decisions: dict[int, str] = field(default_factory=dict)  # finding index -> what was decided
    seqs: list[int] = field(default_factory=list)
    runs: list[RunbookRun] = field(default_factory=list)


# The runbook run under way (state value): written before a runbook acts, cleared once its
# remediation is recorded. One left behind is a run the reconciler did not live to record
# (SIGKILL, a crash, power loss): the next cycle records it as failed, so every action the
# host took is in the evidence and counts against the runbook (cooldown, flap suppression).
HEAL_RUNNING: Final = "heal.running"
POLICY_CHECK: Final = "heal_policy"
# Built in, first of all: a runbook or rules file that does not load is ignored (the others
# still heal) and a person is told, even when it is the rules file that is bad.
POLICY_RULE: Final = Rule(
    id="L1-POLICY-001",
    description="A runbook or rules file does not load: it is ignored, a person must fix it",
    when=[Condition(field="check", op=Op.EQ, value=POLICY_CHECK)],
    action=RuleAction(alert="a heal policy file does not load and is ignored: ${finding.message}"),
    cooldown_seconds=3600,
    priority=0,
)


@dataclass(frozen=True)
class Policy:
    """The shipped rules and the runbooks they name, and what did not load (each bad file
    costs only itself)."""

    rules: list[Rule]
    runbooks: dict[str, Runbook]
    problems: list[Problem]
    broken: dict[str, str] = field(default_factory=dict)  # runbook id -> why it does not load

    def findings(self) -> list[Finding]:
        """One error finding per file that did not load: it goes into the check run's evidence
        and alerts through :data:`POLICY_RULE`."""
        by_file: dict[str, list[Problem]] = {}
        for p in self.problems:
            by_file.setdefault(str(p.file), []).append(p)
        return [
            Finding(
                check=POLICY_CHECK,
                control_ids=[],
                severity=Severity.HIGH,
                status=FindingStatus.ERROR,
                subject=file,
                drifted=False,
                message=f"{problems[0]}"
                + (f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""),
                duration_s=0.0,
            )
            for file, problems in sorted(by_file.items())
        ]


# (st_dev, st_ino, st_mtime_ns, st_size) -> what the file gave: a daemon re-reads a runbook
# only when it changed
_Key = tuple[int, int, int, int]
_RUNBOOKS: dict[Path, tuple[_Key, Runbook | InputError]] = {}


def _stat_key(path: Path) -> _Key | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)


_RULES: dict[tuple[Path, frozenset[str]], tuple[_Key, list[Rule] | InputError]] = {}


def _runbook(path: Path, memo: Memo | None) -> Runbook:
    def load() -> Runbook:
        return _remembered(
            memo,
            f"runbook:{path}",
            path,
            lambda: load_runbook(path),
            restore=Runbook.model_validate_json,
            keep=Runbook.model_dump_json,
        )

    return _cached(_RUNBOOKS, path, path, load)


def _rules(path: Path, runbook_ids: frozenset[str], memo: Memo | None) -> list[Rule]:
    def load() -> list[Rule]:
        key = f"rules:{path}:{','.join(sorted(runbook_ids))}"
        found = _remembered(
            memo,
            key,
            path,
            lambda: RuleFile(rules=load_rules([path], runbook_ids=runbook_ids)),
            restore=RuleFile.model_validate_json,
            keep=RuleFile.model_dump_json,
        )
        return found.rules

    return _cached(_RULES, (path, runbook_ids), path, load)


def _remembered(
    memo: Memo | None,
    key: str,
    path: Path,
    load: Callable[[], M],
    *,
    restore: Callable[[str], M],
    keep: Callable[[M], str],
) -> M:
    """What ``load()`` gave the last run for this file, if it has not changed since (the
    parsed runbook as JSON, validated again: a fraction of parsing its YAML); a refusal is
    never remembered."""
    stamp = file_stamp(path)
    if memo is not None and stamp is not None:
        value = memo.recall(key, stamp)
        if value is not None:
            try:
                return restore(value)
            except ValueError:
                logger.info("the remembered %s no longer validates; reading the file again", key)
    loaded = load()
    if memo is not None and stamp is not None:
        memo.memorise(key, stamp, keep(loaded))
    return loaded


T = TypeVar("T")
K = TypeVar("K")
M = TypeVar("M")


def _cached(cache: dict[K, tuple[_Key, T | InputError]], key: K, path: Path, load: Callable[[], T]) -> T:
    """``load()``, or what it gave last time if ``path`` has not changed since (a refusal
    too: a bad file is not parsed again every cycle)."""
    stat_key = _stat_key(path)
    cached = cache.get(key)
    if stat_key is not None and cached is not None and cached[0] == stat_key:
        if isinstance(cached[1], InputError):
            raise cached[1]
        return cached[1]
    try:
        loaded: T | InputError = load()
    except InputError as e:
        loaded = e
    if stat_key is not None:
        cache[key] = (stat_key, loaded)
    if isinstance(loaded, InputError):
        raise loaded
    return loaded


def load_policy(directory: Path | None = None, *, memo: Memo | None = None) -> Policy:
    """The rules and runbooks shipped with nixcomply (or in ``directory``). A file that does
    not load is left out and named in ``problems``; a rule that names a runbook which does
    not load still loads, and finds it broken when it decides."""
    directory = directory or runbooks_dir()
    runbooks: dict[str, Runbook] = {}
    problems: list[Problem] = []
    broken: dict[str, str] = {}
    paths = sorted(directory.glob("RB-*.yaml"))
    for path in paths:
        try:
            runbooks[path.stem] = _runbook(path, memo)
        except InputError as e:
            problems.extend(e.problems)
            broken[path.stem] = str(e.problems[0])
    rules: list[Rule] = [POLICY_RULE]
    for path in sorted((directory / "rules").glob("*.yaml")):
        try:
            rules.extend(_rules(path, frozenset(p.stem for p in paths), memo))
        except InputError as e:
            problems.extend(e.problems)
    return Policy(rules=rules, runbooks=runbooks, problems=problems, broken=broken)


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

    def heal(self, findings: Sequence[Finding], loaded: Policy) -> HealOutcome:
        out = HealOutcome()
        if not self.dry_run:
            self._settle_interrupted(out)
        for problem in loaded.problems:
            logger.error("a heal policy file does not load and is ignored: %s", problem)
        for index, finding in enumerate(findings):
            if not finding.needs_attention:
                continue
            decision = decide(loaded.rules, finding.model_dump(mode="json"))
            if decision is None:
                out.decisions[index] = "no rule: reported only"
                continue
            try:
                out.decisions[index] = self._act(finding, decision, loaded, out)
            except NixcomplyError as e:
                out.decisions[index] = f"could not act: {e}"
                logger.error("healing %s failed: %s", finding.check, e)
                if not self.dry_run:
                    self._settle_interrupted(out, why=f"it stopped with an error: {e}")
        return out

    def _settle_interrupted(self, out: HealOutcome, *, why: str | None = None) -> None:
        """Record the runbook run that was under way and never recorded (see HEAL_RUNNING)
        as failed: what it did is unknown. At least once: killed again between this record
        and the state update, the next cycle records it a second time."""
        try:
            running = self.state.value(HEAL_RUNNING)
            if running is None:
                return
            try:
                self._record_interrupted(running, out, why)
            except (KeyError, TypeError, ValueError) as e:  # not what _act wrote: say so, drop it
                logger.error("an interrupted runbook run was noted unreadably (%r: %s); dropped", running, e)
                self.state.set_value(HEAL_RUNNING, None)
        except NixcomplyError as e:  # a full disk: it stays under way, for the next cycle
            logger.error("could not record an interrupted runbook run: %s", e)

    def _record_interrupted(self, running: Any, out: HealOutcome, why: str | None) -> None:
        from nixcomply.heal.executor import RunbookRun  # noqa: PLC0415
        from nixcomply.heal.remediation import record_remediation  # noqa: PLC0415

        at = self.now()
        started = datetime.fromisoformat(str(running["started_at"]))
        reason = why or "interrupted: the reconciler stopped (killed, crashed or lost power) while it ran"
        run = RunbookRun(
            runbook=str(running["runbook"]),
            version=int(running["version"]),
            name=str(running["name"]),
            params=dict(running["params"]),
            outcome=RunOutcome.FAILED,
            reason=f"{reason}; what it did is not known",
            started_at=started,
            finished_at=max(at, started),
            duration_s=max((at - started).total_seconds(), 0.0),
        )
        finding = running.get("finding")
        logger.error("%s for %s was interrupted: recorded as failed", run.runbook, running["check"])
        if self.store is not None:
            out.seqs.append(
                record_remediation(
                    self.store,
                    run,
                    host=self.identity,
                    finding=finding if isinstance(finding, dict) else None,
                    policy_digest=self.policy_digest,
                ).seq
            )
        policy.record_outcome(
            self.state,
            check=str(running["check"]),
            runbook=run.runbook,
            cooldown_key=str(running["cooldown_key"]),
            cooldown=timedelta(seconds=int(running["cooldown_seconds"])),
            outcome=run.outcome.value,
            at=at,
        )
        self.state.set_value(HEAL_RUNNING, None)

    def _key(self, finding: Finding, decision: Decision) -> str:
        return f"{decision.cooldown_key}:{finding.subject or '-'}"

    def _act(self, finding: Finding, decision: Decision, loaded: Policy, out: HealOutcome) -> str:
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
            # recorded before the cooldown starts: killed in between, the alert is sent and
            # recorded again by the next cycle, never sent and left unrecorded
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
            faults.point(FaultPoint.ALERTED)
            self.state.set_cooldown(key, at + cooldown, 0)
            return f"alert ({decision.rule.id}): {decision.alert}"

        assert decision.runbook is not None
        runbook = loaded.runbooks.get(decision.runbook)
        if runbook is None:
            why = loaded.broken.get(decision.runbook, "it is not shipped")
            return f"rule {decision.rule.id} names {decision.runbook}, which does not load: {why}"
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
        # the executor loads only when a runbook runs: most cycles run none (import cost, 12)
        from nixcomply.heal.executor import ExecutionContext, execute  # noqa: PLC0415
        from nixcomply.heal.remediation import record_remediation  # noqa: PLC0415

        ctx = ExecutionContext(
            config=self.config.heal,
            systemd=self.systemd,
            sync_generation=self.sync_generation,
            root=self.config.root,
            user_mode=self.config.systemd.user_mode,
        )
        if not self.dry_run:
            self._announce(
                runbook,
                {
                    "check": finding.check,
                    "runbook": runbook.id,
                    "version": runbook.version,
                    "name": runbook.name,
                    "params": {
                        k: v
                        for k, v in params.items()
                        if isinstance(v, str | int) and not isinstance(v, bool)
                    },
                    "cooldown_key": key,
                    "cooldown_seconds": decision.rule.cooldown_seconds,
                    "finding": finding.model_dump(mode="json"),
                    "started_at": at.isoformat(),
                },
            )
        run = execute(runbook, params, ctx, dry_run=self.dry_run, verify=self._verifier(finding))
        out.runs.append(run)
        if self.dry_run:
            return f"dry run: would run {runbook.id} ({run.reason})"
        faults.point(FaultPoint.HEALED)
        if self.store is not None:
            out.seqs.append(
                record_remediation(
                    self.store, run, host=self.identity, finding=finding, policy_digest=self.policy_digest
                ).seq
            )
        self.state.set_value(HEAL_RUNNING, None)
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

    def _announce(self, runbook: Runbook, running: dict[str, Any]) -> None:
        """Say a run is under way before it acts (HEAL_RUNNING). A disk too full to take it
        does not stop the run: freeing that disk may be what the run is for."""
        try:
            self.state.set_value(HEAL_RUNNING, running)
        except HostIOError as e:
            logger.warning("%s runs without being noted as under way: %s", runbook.id, e)

    def _verifier(self, finding: Finding) -> Callable[[], object]:
        """Re-run the finding's own check and return its new finding for the same subject."""

        def verify() -> object:
            for f in run_checks(self.check_context(), [finding.check]):
                if f.subject == finding.subject and f.control_ids == finding.control_ids:
                    return f
            return False

        return verify

    def _alert(self, message: str) -> bool:
        from nixcomply.heal.actions import ActionEnv, send_alert  # noqa: PLC0415 - see _act

        def no_systemd() -> Any:
            raise NixcomplyError("alerts do not use systemd")

        env = ActionEnv(config=self.config.heal, systemd=no_systemd, timeout=30)
        result = send_alert({"message": message, "priority": None}, env)
        if not result.ok:
            logger.error("%s", result.detail)
        return result.ok
