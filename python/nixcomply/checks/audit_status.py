"""audit_status: the kernel audit subsystem's state (``auditctl -s``).

``enabled`` is 0 (off), 1 (on) or 2 (on and locked until reboot, ``-e 2``); ``failure`` is
what the kernel does when it cannot log (0 silent, 1 printk, 2 panic); ``pid`` is the
process receiving the records (0: no auditd, records go to the kernel log). Expectations
compare as integers; ``enabled: 1`` is also met by 2 (locked is stricter). A control that
expects ``enabled`` also needs a running audit daemon (``pid`` not 0) unless it says
``pid_running: false``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

from nixcomply.checks.base import CheckSpec, Controls, Outputs, Verdict, per_control, run_command
from nixcomply.checks.context import CheckContext
from nixcomply.checks.finding import Finding

NAME: Final = "audit_status"
SPEC: Final = CheckSpec(
    name=NAME,
    severity="high",
    runbook="RB-SERVICE-001",
    expect_keys=frozenset({"enabled", "failure", "pid_running", "backlog_limit_min"}),
)
DEFAULT_EXPECT: Final[Mapping[str, Any]] = {"enabled": 1}
_LINE: Final = re.compile(r"^([a-z_]+) (-?\d+)(?: .*)?$")
_REQUIRED: Final = ("enabled", "failure", "pid")


def parse_auditctl_status(text: str) -> dict[str, int]:
    status: dict[str, int] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        match = _LINE.match(line)
        if match is None:
            raise ValueError(f"auditctl -s line {number} is not 'name number': {line[:80]!r}")
        status[match.group(1)] = int(match.group(2))
    missing = [key for key in _REQUIRED if key not in status]
    if missing:
        raise ValueError(f"auditctl -s output lacks {', '.join(missing)}")
    return status


def observe(ctx: CheckContext) -> tuple[dict[str, int], Outputs]:
    result = run_command(ctx, [ctx.config.executables.auditctl, "-s"])
    return parse_auditctl_status(result.stdout), {"auditctl_s": result.stdout}


def _int(expect: Mapping[str, Any], key: str) -> int | None:
    value = expect.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"expect.{key} must be an integer, not {value!r}")
    return value


def judge(status: dict[str, int], expect: Mapping[str, Any], ctx: CheckContext) -> Verdict:
    expect = expect or DEFAULT_EXPECT
    enabled = _int(expect, "enabled")
    failure = _int(expect, "failure")
    backlog = _int(expect, "backlog_limit_min")
    # "enabled" is what the auditd control asks for: records need a daemon to land anywhere
    pid_running = expect.get("pid_running", "enabled" in expect)
    if not isinstance(pid_running, bool):
        raise ValueError(f"expect.pid_running must be true or false, not {pid_running!r}")
    wrong = []
    if enabled is not None and not (
        status["enabled"] == enabled or (enabled == 1 and status["enabled"] == 2)
    ):
        wrong.append(f"enabled is {status['enabled']}, expected {enabled}")
    if failure is not None and status["failure"] != failure:
        wrong.append(f"failure is {status['failure']}, expected {failure}")
    if backlog is not None and status.get("backlog_limit", 0) < backlog:
        wrong.append(f"backlog_limit is {status.get('backlog_limit')}, expected at least {backlog}")
    if pid_running and status["pid"] == 0:
        wrong.append("no audit daemon receives the records (pid 0)")
    expected: dict[str, Any] = dict(expect)
    expected["pid_running"] = pid_running
    observed = dict(status)
    if wrong:
        return Verdict(
            "drift", "audit subsystem: " + "; ".join(wrong), observed, expected, {"unit": "auditd.service"}
        )
    return Verdict(
        "pass",
        f"audit enabled={status['enabled']} failure={status['failure']} auditd pid {status['pid']}",
        observed,
        expected,
    )


def run(ctx: CheckContext, controls: Controls) -> list[Finding]:
    return per_control(ctx, controls, SPEC, observe, judge)
