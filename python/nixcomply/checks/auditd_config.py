"""auditd_config: the audit daemon's configuration (``<root>/etc/audit/auditd.conf``).

auditd reads ``key = value`` lines (``#`` comments; keys are case-sensitive, action values
are not: ``SYSLOG`` and ``syslog`` are the same). NixOS renders
``security.auditd.settings`` into that file, one line per key. ``expect`` maps a key to the
value it must have; a key that is missing is drift (auditd's built-in default applies, which
is not what the baseline asked for).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from nixcomply.checks.base import CheckError, CheckSpec, Controls, Verdict, per_control
from nixcomply.checks.context import CheckContext
from nixcomply.checks.finding import Finding

NAME: Final = "auditd_config"
SPEC: Final = CheckSpec(name=NAME, severity="medium", runbook="RB-DRIFT-001", needs_control=True)
CONFIG: Final = "/etc/audit/auditd.conf"


def parse_auditd_conf(text: str) -> dict[str, str]:
    values: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not key or " " in key:
            raise ValueError(f"{CONFIG} line {number} is not 'key = value': {raw[:80]!r}")
        values[key] = value.strip()
    return values


def observe(ctx: CheckContext) -> tuple[dict[str, str], dict[str, str]]:
    path = ctx.host_path(CONFIG)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        raise CheckError(f"{CONFIG} does not exist: is auditd configured?") from None
    return parse_auditd_conf(text), {"auditd_conf": text}


def judge(values: dict[str, str], expect: Mapping[str, Any], ctx: CheckContext) -> Verdict:
    if not expect:
        raise ValueError("the control's expect names no auditd.conf key")
    observed: dict[str, Any] = {}
    expected: dict[str, Any] = {}
    wrong = []
    for key in sorted(expect):
        want = expect[key]
        if isinstance(want, bool) or not isinstance(want, (str, int)):
            raise ValueError(f"expect.{key} must be a string or number, not {want!r}")
        have = values.get(key)
        observed[key], expected[key] = have, str(want)
        if have is None:
            wrong.append(f"{key} is not set")
        elif have.casefold() != str(want).casefold():
            wrong.append(f"{key} is {have}, expected {want}")
    if wrong:
        return Verdict("drift", f"{CONFIG}: " + "; ".join(wrong), observed, expected)
    shown = ", ".join(f"{k} = {v}" for k, v in expected.items())
    return Verdict("pass", f"{CONFIG}: {shown}", observed, expected)


def run(ctx: CheckContext, controls: Controls) -> list[Finding]:
    return per_control(ctx, controls, SPEC, observe, judge)
