"""audit_rules: the audit rules loaded in the kernel (``auditctl -l``) are the control's.

NixOS loads ``security.audit.rules`` at boot; a rule removed by hand, a reboot where loading
failed, or new rules not yet loaded (locked with ``-e 2`` until reboot) show up here. Every
rule the control sets (its ``security.audit.rules`` in the manifest) must be loaded, and its
``expect.keys`` must be present. ``auditctl -l`` prints rules in its own form, so both sides
are compared in a canonical one: watches print as ``-w PATH -p PERMS -k KEY``; syscall rules
as ``-a always,exit -F arch=b64 -S a,b -F auid!=-1 -F key=KEY`` (``-k`` becomes ``-F key=``,
``-S`` lists are joined and reordered, ``4294967295`` and ``unset`` print as ``-1``,
``exit,always`` as ``always,exit``). ``No rules`` is valid output, and drift for any rule.

With ``security.audit.enable = "lock"`` (hipaa-v1) the loaded rules cannot change before the
next boot: missing rules are then asked about with ``auditctl -s``, and when ``enabled`` is 2
the drift names no runbook and says a reboot is needed (``Finding.reboot_needed``; the rules
alert a person instead of re-applying a generation that could only fail to load them).
"""

from __future__ import annotations

import functools
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final

from nixcomply.checks.audit_status import parse_auditctl_status
from nixcomply.checks.base import (
    OBSERVATION_ERRORS,
    CheckSpec,
    Controls,
    Outputs,
    Target,
    Verdict,
    error_text,
    expect_str_list,
    per_target,
    run_command,
)
from nixcomply.checks.context import CheckContext
from nixcomply.checks.finding import Finding
from nixcomply.model.manifest import ManifestControl

NAME: Final = "audit_rules"
SPEC: Final = CheckSpec(
    name=NAME, severity="high", runbook="RB-DRIFT-001", expect_keys=frozenset({"keys"}), needs_control=True
)
# A rule may carry several keys, which the kernel stores joined with \x01.
_KEY_SEPARATOR: Final = "\x01"


RULES_OPTION: Final = "security.audit.rules"
_UNSET: Final = frozenset({"4294967295", "-1", "unset"})
_OPS: Final = ("!=", ">=", "<=", "&=", "=", ">", "<", "&")

CanonicalRule = tuple[Any, ...]


@dataclass(frozen=True)
class AuditRules:
    rules: tuple[str, ...]
    keys: frozenset[str]

    @property
    def canonical(self) -> frozenset[CanonicalRule]:
        return frozenset(canonical_rule(r) for r in self.rules)


def _field(text: str) -> tuple[str, str, str]:
    for op in _OPS:
        name, sep, value = text.partition(op)
        if sep and name and "=" not in name and "!" not in name and "<" not in name and ">" not in name:
            if name in ("auid", "uid", "euid", "loginuid") and value in _UNSET:
                value = "-1"
            if name == "perm":
                value = "".join(sorted(value))
            return name, op, value
    raise ValueError(f"{text!r} is not a field comparison like auid>=1000")


def canonical_rule(line: str) -> CanonicalRule:
    """One rule, as written in a rules file or printed by ``auditctl -l``, in a form where
    both spellings of the same rule compare equal."""
    try:
        words = shlex.split(line)
    except ValueError as e:
        raise ValueError(f"audit rule {line[:80]!r}: {e}") from None
    keys: set[str] = set()
    fields: set[tuple[str, str, str]] = set()
    compares: set[str] = set()
    syscalls: set[str] = set()
    watch: str | None = None
    perms = ""
    action: tuple[str, ...] = ()
    i = 0
    while i < len(words):
        option = words[i]
        if i + 1 >= len(words):
            raise ValueError(f"audit rule {line[:80]!r}: {option} has no argument")
        arg = words[i + 1]
        i += 2
        if option == "-w":
            watch = arg.rstrip("/") or "/"
        elif option == "-p":
            perms = "".join(sorted(arg))
        elif option == "-k":
            keys.update(k for k in arg.split(_KEY_SEPARATOR) if k)
        elif option in ("-a", "-A"):
            action = tuple(sorted(arg.split(",")))
        elif option == "-S":
            syscalls.update(s for s in arg.split(",") if s)
        elif option == "-C":
            compares.add(arg)
        elif option == "-F":
            name, op, value = _field(arg)
            if name == "key":
                keys.update(k for k in value.split(_KEY_SEPARATOR) if k)
            else:
                fields.add((name, op, value))
        else:
            raise ValueError(f"audit rule {line[:80]!r}: unknown option {option}")
    if watch is not None:
        return ("watch", watch, perms, frozenset(keys))
    if not action:
        raise ValueError(f"audit rule {line[:80]!r} is neither a watch (-w) nor a syscall rule (-a)")
    return ("syscall", action, frozenset(syscalls), frozenset(fields), frozenset(compares), frozenset(keys))


def parse_auditctl_list(text: str) -> AuditRules:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        raise ValueError("auditctl -l printed nothing")
    if lines == ["No rules"]:
        return AuditRules((), frozenset())
    keys: set[str] = set()
    for number, line in enumerate(lines, 1):
        if not line.startswith("-"):
            raise ValueError(f"auditctl -l line {number} is not a rule: {line[:80]!r}")
        try:
            words = shlex.split(line)
        except ValueError as e:
            raise ValueError(f"auditctl -l line {number}: {e}") from None
        for i, word in enumerate(words):
            value = None
            if word == "-k" and i + 1 < len(words):
                value = words[i + 1]
            elif word == "-F" and i + 1 < len(words) and words[i + 1].startswith("key="):
                value = words[i + 1][len("key=") :]
            if value:
                keys.update(k for k in value.split(_KEY_SEPARATOR) if k)
    return AuditRules(tuple(lines), frozenset(keys))


def observe(ctx: CheckContext) -> tuple[AuditRules, Outputs]:
    result = run_command(ctx, [ctx.config.executables.auditctl, "-l"])
    return parse_auditctl_list(result.stdout), {"auditctl_l": result.stdout}


def judge(
    rules: AuditRules, expect: Mapping[str, Any], ctx: CheckContext, *, expected_rules: Sequence[str] = ()
) -> Verdict:
    """The keys of ``expect`` are present and every rule of ``expected_rules`` is loaded."""
    want = expect_str_list(expect, "keys")
    if not want:
        raise ValueError("the control's expect names no audit rule key (keys: [...])")
    loaded = rules.canonical
    missing_rules = [r for r in expected_rules if canonical_rule(r) not in loaded]
    missing = sorted(set(want) - rules.keys)
    observed = {"rule_count": len(rules.rules), "keys": sorted(rules.keys)}
    expected: dict[str, Any] = {"keys": sorted(want)}
    if expected_rules:
        expected["rules"] = list(expected_rules)
        observed["missing_rules"] = missing_rules
    where = f"{len(rules.rules)} rule(s) loaded" if rules.rules else "no audit rules are loaded"
    if missing:
        return Verdict(
            "drift", f"audit rules missing for key(s) {', '.join(missing)} ({where})", observed, expected
        )
    if missing_rules:
        shown = "; ".join(missing_rules[:3]) + (
            f" (+{len(missing_rules) - 3} more)" if len(missing_rules) > 3 else ""
        )
        return Verdict(
            "drift", f"{len(missing_rules)} audit rule(s) not loaded ({where}): {shown}", observed, expected
        )
    count = f", all {len(expected_rules)} rule(s) loaded" if expected_rules else ""
    return Verdict(
        "pass", f"audit rules loaded for key(s) {', '.join(sorted(want))}{count}", observed, expected
    )


def _rules_of(control: ManifestControl) -> list[str]:
    value = control.settings.get(RULES_OPTION, [])
    if not isinstance(value, list) or not all(isinstance(r, str) for r in value):
        raise ValueError(f"the manifest's {RULES_OPTION} of this control is not a list of rules")
    return value


def lock_state(ctx: CheckContext) -> tuple[int | None, Outputs]:
    """``enabled`` of ``auditctl -s`` (2: the rules are locked until the next boot) and what
    it printed; None when it cannot be told (the drift is then reported as it is)."""
    try:
        result = run_command(ctx, [ctx.config.executables.auditctl, "-s"])
        return parse_auditctl_status(result.stdout)["enabled"], {"auditctl_s": result.stdout}
    except OBSERVATION_ERRORS as e:
        message, _ = error_text(e)
        return None, {"auditctl_s_error": message}


def _locked(verdict: Verdict, outputs: Outputs) -> Verdict:
    """Drift of locked rules: nothing changes them before the next boot, so no runbook is
    named (re-applying the generation would only fail), and the finding says a reboot is
    needed."""
    return replace(
        verdict,
        message=f"{verdict.message}; the loaded rules are locked until the next boot (auditctl -s: enabled 2, "
        'security.audit.enable = "lock"): reboot into the current generation to load its rules',
        observed={**verdict.observed, "locked": True},
        runbook=None,
        reboot_needed=True,
        outputs={**verdict.outputs, **outputs},
    )


def run(ctx: CheckContext, controls: Controls) -> list[Finding]:
    # asked once, and only when some rule is missing: a host in sync runs auditctl -l alone
    lock = functools.cache(lambda: lock_state(ctx))

    def judge_target(rules: AuditRules, target: Target) -> Verdict:
        expected_rules = [r for _, control in target.controls for r in _rules_of(control)]
        verdict = judge(rules, target.expect, ctx, expected_rules=expected_rules)
        if verdict.status != "drift":
            return verdict
        enabled, outputs = lock()
        if enabled == 2:
            return _locked(verdict, outputs)
        return replace(
            verdict, observed={**verdict.observed, "locked": False if enabled is not None else None}
        )

    return per_target(ctx, controls, SPEC, observe, judge_target)
