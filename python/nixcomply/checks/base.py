"""What every check shares: turning observations and controls into findings.

A check module provides a pure parser (command output -> typed observation, raising
``ValueError`` on anything it does not recognise), an ``observe`` that runs the command, and
a ``judge`` that compares the observation with one control's ``expect``. The drivers here do
the rest the same way for every check:

* excepted controls give ``excepted`` findings and nothing is run for them;
* without enforced controls, a check that has a sensible default runs on its own
  (``control_ids`` empty, the check's own severity), one that has not is ``skipped``;
* an ``expect`` key the check does not know is an ``error`` (a typo in a baseline must not
  pass silently);
* anything that goes wrong while observing or judging is an ``error``, never a pass.
"""

from __future__ import annotations

import enum
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

from nixcomply.checks.context import CheckContext
from nixcomply.checks.finding import FRAMEWORK_KEYS, Finding
from nixcomply.core import process
from nixcomply.errors import CommandError, NixcomplyError
from nixcomply.host.systemd import UnitStateLike
from nixcomply.model.manifest import ManifestControl
from nixcomply.model.severity import Severity, SeverityName
from nixcomply.model.status import FindingStatus, FindingStatusName

T = TypeVar("T")
Controls = Mapping[str, ManifestControl]
Outputs = dict[str, str]
# Output kept per command: enough for evidence, bounded so a runaway command cannot bloat it.
MAX_OUTPUT_CHARS: Final = 64_000


class CheckError(NixcomplyError):
    """Raised by a check when an observation could not be made or made no sense (a tool said
    something unexpected, a file is missing that must exist). The runner turns it into an
    ``error`` finding with ``outputs`` kept as evidence; should one escape to the command
    line, it is reported like any deliberate error (exit code 1), never as a bug."""

    def __init__(self, message: str, *, outputs: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.outputs = dict(outputs or {})


class _Default(enum.Enum):
    RUNBOOK = "default"


DEFAULT_RUNBOOK: Final = _Default.RUNBOOK


@dataclass(frozen=True)
class CheckSpec:
    """A check's own identity: used when no control speaks for it."""

    name: str
    severity: SeverityName
    runbook: str | None
    expect_keys: frozenset[str] | None = None  # None: free-form (sshd keywords, sysctl keys)
    needs_control: bool = False  # True: nothing to compare without a control's expect


@dataclass(frozen=True)
class Verdict:
    """One judgement before it becomes a :class:`Finding`."""

    status: FindingStatusName
    message: str
    observed: Mapping[str, Any] = field(default_factory=dict)
    expected: Mapping[str, Any] = field(default_factory=dict)
    runbook_params: Mapping[str, str | int] = field(default_factory=dict)
    severity: SeverityName | None = None  # overrides the controls' (the exceptions check does)
    runbook: str | _Default | None = DEFAULT_RUNBOOK
    subject: str | None = None
    outputs: Mapping[str, str] = field(default_factory=dict)
    reboot_needed: bool = False  # drift only the next boot heals (Finding.reboot_needed)


# What observing and judging may raise on purpose; the runner turns anything else into an
# error finding too, but labels it an internal error.
OBSERVATION_ERRORS: Final = (CheckError, ValueError, NixcomplyError, OSError)


def run_command(
    ctx: CheckContext,
    argv: Sequence[str],
    *,
    timeout: float | None = None,
    allowed_returncodes: Sequence[int] = (0,),
    input: str | None = None,
    extra_env: Mapping[str, str] | None = None,
) -> process.Result:
    """``nixcomply.core.process.run`` with the checks' command timeout."""
    return process.run(
        list(argv),
        check=True,
        timeout=timeout if timeout is not None else ctx.config.timeouts.command_seconds,
        input=input,
        extra_env=extra_env,
        allowed_returncodes=allowed_returncodes,
    )


def clip(text: str) -> str:
    if len(text) <= MAX_OUTPUT_CHARS:
        return text
    return text[:MAX_OUTPUT_CHARS] + f"\n[... {len(text) - MAX_OUTPUT_CHARS} more characters cut]"


def error_text(error: BaseException) -> tuple[str, Outputs]:
    """A one-line message and the outputs worth keeping for an error."""
    outputs: Outputs = {}
    if isinstance(error, CheckError):
        outputs.update(error.outputs)
    if isinstance(error, CommandError):
        if error.stdout:
            outputs["stdout"] = clip(error.stdout)
        if error.stderr:
            outputs["stderr"] = clip(error.stderr)
    message = " | ".join(line.strip() for line in str(error).splitlines() if line.strip())
    if isinstance(error, OSError) and not isinstance(error, NixcomplyError):
        message = f"{error.strerror or type(error).__name__}: {error.filename or message}"
    return message or type(error).__name__, outputs


def merge_frameworks(controls: Sequence[ManifestControl]) -> dict[str, list[str]]:
    merged: dict[str, set[str]] = {key: set() for key in FRAMEWORK_KEYS}
    for control in controls:
        for key, refs in control.frameworks.items():
            if key in merged:
                merged[key].update(refs)
    return {key: sorted(refs) for key, refs in merged.items()}


def _most_severe(controls: Sequence[tuple[str, ManifestControl]]) -> tuple[str, ManifestControl] | None:
    if not controls:
        return None
    return max(sorted(controls, key=lambda item: item[0]), key=lambda item: item[1].severity.rank)


def make_finding(
    spec: CheckSpec,
    controls: Sequence[tuple[str, ManifestControl]],
    verdict: Verdict,
    *,
    outputs: Mapping[str, str] | None = None,
    duration: float = 0.0,
) -> Finding:
    """A finding from a verdict about ``controls`` (empty: the check on its own)."""
    top = _most_severe(controls)
    severity = Severity(verdict.severity or (top[1].severity if top else spec.severity))
    runbook: str | None = None
    if verdict.status == "drift":
        if verdict.runbook is not DEFAULT_RUNBOOK:
            runbook = verdict.runbook
        else:
            runbook = top[1].remediation if top else spec.runbook
    merged_outputs = {**(outputs or {}), **verdict.outputs}
    return Finding(
        check=spec.name,
        control_ids=sorted(cid for cid, _ in controls),
        severity=severity,
        status=FindingStatus(verdict.status),
        subject=verdict.subject,
        observed=dict(verdict.observed),
        expected=dict(verdict.expected),
        drifted=verdict.status == "drift",
        message=verdict.message,
        recommended_runbook=runbook,
        runbook_params=dict(verdict.runbook_params),
        frameworks=merge_frameworks([c for _, c in controls]),
        outputs={k: clip(v) for k, v in merged_outputs.items()},
        duration_s=max(duration, 0.0),
        reboot_needed=verdict.reboot_needed and verdict.status == "drift",
    )


def excepted_findings(ctx: CheckContext, spec: CheckSpec, controls: Controls) -> list[Finding]:
    """``excepted`` findings for excepted controls, ``skipped`` ones for controls the site's
    parameters make not applicable (``unless: router``)."""
    findings = []
    for cid in sorted(controls):
        control = controls[cid]
        if control.status == "not-applicable":
            message = f"{cid} does not apply to this host (site parameters); not checked"
            findings.append(make_finding(spec, [(cid, control)], Verdict("skipped", message)))
            continue
        if control.status != "excepted":
            continue
        exception = ctx.manifest.exceptions.get(cid) if ctx.manifest else None
        if exception is not None:
            message = (
                f"{cid} is excepted until {exception.expires.isoformat()} "
                f"(ticket {exception.ticket}, approved by {exception.approved_by}); not checked"
            )
        else:
            message = f"{cid} is excepted in the running generation's manifest; not checked"
        findings.append(make_finding(spec, [(cid, control)], Verdict("excepted", message)))
    return findings


def error_findings(
    spec: CheckSpec,
    ctx: CheckContext,
    controls: Controls,
    message: str,
    outputs: Mapping[str, str] | None = None,
) -> list[Finding]:
    """What a check that could not run at all reports: ``excepted`` for excepted controls,
    ``error`` for every other control (one for the check itself when it has none)."""
    findings = excepted_findings(ctx, spec, controls)
    enforced = [(cid, controls[cid]) for cid in sorted(controls) if controls[cid].status == "enforced"]
    if enforced:
        findings.extend(
            make_finding(spec, [item], Verdict("error", message), outputs=outputs) for item in enforced
        )
    elif not controls:
        findings.append(make_finding(spec, [], Verdict("error", message), outputs=outputs))
    return findings


def skipped_findings(spec: CheckSpec, ctx: CheckContext, controls: Controls, message: str) -> list[Finding]:
    findings = excepted_findings(ctx, spec, controls)
    enforced = [(cid, controls[cid]) for cid in sorted(controls) if controls[cid].status == "enforced"]
    if enforced:
        findings.extend(make_finding(spec, [item], Verdict("skipped", message)) for item in enforced)
    elif not controls:
        findings.append(make_finding(spec, [], Verdict("skipped", message)))
    return findings


def expect_problem(spec: CheckSpec, expect: Mapping[str, Any]) -> str | None:
    if spec.expect_keys is None:
        return None
    unknown = sorted(set(expect) - spec.expect_keys)
    if not unknown:
        return None
    allowed = ", ".join(sorted(spec.expect_keys)) or "none"
    return f"{spec.name} does not know expect key(s) {', '.join(unknown)} (known: {allowed})"


@dataclass(frozen=True)
class Target:
    """The controls judged together against one expectation."""

    controls: tuple[tuple[str, ManifestControl], ...]
    expect: Mapping[str, Any]


def targets(ctx: CheckContext, spec: CheckSpec, controls: Controls) -> tuple[list[Finding], list[Target]]:
    """Excepted/skipped/bad-expect findings already decided, and what is left to judge."""
    findings = excepted_findings(ctx, spec, controls)
    enforced = [(cid, controls[cid]) for cid in sorted(controls) if controls[cid].status == "enforced"]
    if not enforced:
        if controls:
            return findings, []
        if spec.needs_control:
            note = Verdict("skipped", f"no control of the running baseline asks for {spec.name}")
            return [make_finding(spec, [], note)], []
        return findings, [Target((), {})]
    result = []
    for cid, control in enforced:
        problem = expect_problem(spec, control.verify.expect)
        if problem:
            findings.append(make_finding(spec, [(cid, control)], Verdict("error", problem)))
        else:
            result.append(Target(((cid, control),), control.verify.expect))
    return findings, result


def per_control(
    ctx: CheckContext,
    controls: Controls,
    spec: CheckSpec,
    observe: Callable[[CheckContext], tuple[T, Outputs]],
    judge: Callable[[T, Mapping[str, Any], CheckContext], Verdict],
) -> list[Finding]:
    """Observe once, judge every control's ``expect`` against that observation."""
    return per_target(ctx, controls, spec, observe, lambda value, target: judge(value, target.expect, ctx))


def per_target(
    ctx: CheckContext,
    controls: Controls,
    spec: CheckSpec,
    observe: Callable[[CheckContext], tuple[T, Outputs]],
    judge: Callable[[T, Target], Verdict],
) -> list[Finding]:
    """:func:`per_control` for a check whose judgement needs more of the controls than their
    ``expect`` (the audit rules each control sets)."""
    findings, todo = targets(ctx, spec, controls)
    if not todo:
        return findings
    start = time.monotonic()
    try:
        observation, outputs = observe(ctx)
    except OBSERVATION_ERRORS as e:
        message, extra = error_text(e)
        duration = time.monotonic() - start
        findings.extend(
            make_finding(spec, list(t.controls), Verdict("error", message), outputs=extra, duration=duration)
            for t in todo
        )
        return findings
    for target in todo:
        try:
            verdict = judge(observation, target)
        except (CheckError, ValueError) as e:
            message, extra = error_text(e)
            verdict = Verdict("error", message, outputs=extra)
        findings.append(
            make_finding(
                spec, list(target.controls), verdict, outputs=outputs, duration=time.monotonic() - start
            )
        )
    return findings


def per_subject(  # noqa: PLR0917 - the parts of a check, named at every call
    ctx: CheckContext,
    controls: Controls,
    spec: CheckSpec,
    subjects_of: Callable[[Mapping[str, Any]], list[str] | None],
    default_subjects: Callable[[], list[str]],
    observe_all: Callable[[list[str]], Mapping[str, tuple[T, Outputs] | BaseException]],
    judge: Callable[[str, T], Verdict],
) -> list[Finding]:
    """One finding per observed subject (unit, mount), merging the controls that name it.

    ``subjects_of(expect)`` gives a control's subjects, or None for the defaults.
    ``observe_all`` returns, per subject, the observation or the exception it raised.
    """
    findings, todo = targets(ctx, spec, controls)
    if not todo:
        return findings
    by_subject: dict[str, list[tuple[str, ManifestControl]]] = {}
    for target in todo:
        try:
            subjects = subjects_of(target.expect)
        except ValueError as e:
            findings.append(make_finding(spec, list(target.controls), Verdict("error", str(e))))
            continue
        for subject in subjects if subjects is not None else default_subjects():
            by_subject.setdefault(subject, []).extend(target.controls)
    if not by_subject:
        return findings
    start = time.monotonic()
    try:
        observed = observe_all(sorted(by_subject))
    except OBSERVATION_ERRORS as e:
        message, extra = error_text(e)
        duration = time.monotonic() - start
        for subject in sorted(by_subject):
            verdict = Verdict("error", f"{subject}: {message}", subject=subject)
            findings.append(
                make_finding(spec, by_subject[subject], verdict, outputs=extra, duration=duration)
            )
        return findings
    for subject in sorted(by_subject):
        result = observed.get(subject)
        outputs: Outputs = {}
        if result is None:
            verdict = Verdict("error", f"{subject}: not observed", subject=subject)
        elif isinstance(result, BaseException):
            message, outputs = error_text(result)
            verdict = Verdict("error", f"{subject}: {message}", subject=subject)
        else:
            value, outputs = result
            try:
                verdict = judge(subject, value)
            except (CheckError, ValueError) as e:
                message, outputs = error_text(e)
                verdict = Verdict("error", f"{subject}: {message}", subject=subject)
        unique = sorted(dict(by_subject[subject]).items())
        findings.append(
            make_finding(spec, unique, verdict, outputs=outputs, duration=time.monotonic() - start)
        )
    return findings


def expect_bool(expect: Mapping[str, Any], key: str, default: bool | None = None) -> bool | None:
    value = expect.get(key, default)
    if value is None or isinstance(value, bool):
        return value
    raise ValueError(f"expect.{key} must be true or false, not {value!r}")


def expect_str_list(expect: Mapping[str, Any], key: str) -> list[str] | None:
    value = expect.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ValueError(f"expect.{key} must be a list of names, not {value!r}")
    return list(value)


def age_text(seconds: float) -> str:
    """``3 h 5 min``, ``2 d 4 h``: ages for messages."""
    seconds = max(seconds, 0)
    if seconds < 3600:
        return f"{int(seconds // 60)} min"
    if seconds < 86400 * 2:
        return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60)} min"
    return f"{int(seconds // 86400)} d {int(seconds % 86400 // 3600)} h"


# -- systemd -----------------------------------------------------------------------------


def unit_states(ctx: CheckContext, names: Sequence[str]) -> dict[str, UnitStateLike | BaseException]:
    """The state of each unit through one connection of the context's systemd adapter;
    a unit that cannot be read maps to the exception. No adapter: a :class:`CheckError`."""
    if ctx.systemd_factory is None:
        raise CheckError(
            "systemd cannot be reached (no systemd adapter: is pystemd installed, is systemd running?)"
        )
    states: dict[str, UnitStateLike | BaseException] = {}
    with ctx.systemd_factory() as systemd:
        for name in names:
            try:
                states[name] = systemd.unit_state(name)
            except Exception as e:  # noqa: BLE001 - any failure of one unit is that unit's error finding
                states[name] = e
    return states


def unit_active(state: UnitStateLike) -> bool:
    """What ``systemctl is-active`` counts as active."""
    return state.load_state == "loaded" and state.active_state in ("active", "reloading", "refreshing")


def unit_name(name: str) -> str:
    """``sshd`` -> ``sshd.service`` (parameters.critical_services may omit the suffix)."""
    return name if re.search(r"\.[a-z]+$", name) else f"{name}.service"
