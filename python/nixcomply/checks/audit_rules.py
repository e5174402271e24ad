"""audit_rules: the audit rules loaded in the kernel (``auditctl -l``) carry the expected keys.

NixOS loads ``security.audit.rules`` at boot; a rule removed by hand, or a reboot where
loading failed, shows up here. Rules are identified by their key (``-k identity`` on watches,
``-F key=exec`` on syscall rules), as the baseline names them. ``auditctl -l`` prints
``No rules`` when none are loaded: valid, and drift for any expected key.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from nixcomply.checks.base import (
    CheckSpec,
    Controls,
    Outputs,
    Verdict,
    expect_str_list,
    per_control,
    run_command,
)
from nixcomply.checks.context import CheckContext
from nixcomply.checks.finding import Finding

NAME: Final = "audit_rules"
SPEC: Final = CheckSpec(
    name=NAME, severity="high", runbook="RB-DRIFT-001", expect_keys=frozenset({"keys"}), needs_control=True
)
# A rule may carry several keys, which the kernel stores joined with \x01.
_KEY_SEPARATOR: Final = "\x01"


@dataclass(frozen=True)
class AuditRules:
    rules: tuple[str, ...]
    keys: frozenset[str]


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


def judge(rules: AuditRules, expect: Mapping[str, Any], ctx: CheckContext) -> Verdict:
    want = expect_str_list(expect, "keys")
    if not want:
        raise ValueError("the control's expect names no audit rule key (keys: [...])")
    missing = sorted(set(want) - rules.keys)
    observed = {"rule_count": len(rules.rules), "keys": sorted(rules.keys)}
    expected = {"keys": sorted(want)}
    if missing:
        where = f"{len(rules.rules)} rule(s) loaded" if rules.rules else "no audit rules are loaded"
        return Verdict(
            "drift", f"audit rules missing for key(s) {', '.join(missing)} ({where})", observed, expected
        )
    return Verdict("pass", f"audit rules loaded for key(s) {', '.join(sorted(want))}", observed, expected)


def run(ctx: CheckContext, controls: Controls) -> list[Finding]:
    return per_control(ctx, controls, SPEC, observe, judge)
