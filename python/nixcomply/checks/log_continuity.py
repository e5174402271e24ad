"""logging: the audit trail is continuous: journald and auditd run, and the journal accepts
a message and gives it back.

Units (``checks.logging.units``, default journald and auditd) are read through the systemd
adapter. Then a canary line with a fresh random token is written with
``systemd-cat -t TAG`` (or ``logger -t TAG``) and read back with
``journalctl -t TAG --since @T -o json`` (a few attempts: journald stores asynchronously).
A journal that refuses the write, or a canary that never comes back, is drift: logging
is broken even if the daemons look active.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from nixcomply.checks.base import (
    CheckError,
    CheckSpec,
    Controls,
    Outputs,
    Verdict,
    per_control,
    run_command,
    unit_active,
    unit_states,
)
from nixcomply.checks.context import CheckContext
from nixcomply.checks.finding import Finding
from nixcomply.errors import CommandError, CommandNotFoundError, CommandTimeoutError
from nixcomply.host.systemd import describe_unit, unit_record

NAME: Final = "logging"
SPEC: Final = CheckSpec(name=NAME, severity="high", runbook="RB-SERVICE-001", expect_keys=frozenset())


def _message(entry: Mapping[str, Any]) -> str | None:
    value = entry.get("MESSAGE")
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(b, int) for b in value):  # non-UTF-8: a byte array
        return bytes(value).decode("utf-8", "replace")
    return None


def parse_journal_json(text: str) -> list[str]:
    """``journalctl -o json`` (one JSON object per line) -> the MESSAGE of each entry.
    Empty output is valid: no entry matched."""
    messages = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"journalctl -o json line {number} is not JSON: {e.msg}") from None
        if not isinstance(entry, dict):
            raise ValueError(f"journalctl -o json line {number} is not an object")
        message = _message(entry)
        if message is not None:
            messages.append(message)
    return messages


@dataclass(frozen=True)
class CanaryResult:
    token: str
    written: bool
    found: bool
    attempts: int
    error: str | None


def write_argv(ctx: CheckContext) -> list[str]:
    exe = ctx.config.executables
    tag = ctx.config.logging.canary_tag
    if ctx.config.logging.writer == "logger":
        return [exe.logger, "-t", tag]
    return [exe.systemd_cat, "-t", tag, "-p", "notice"]


def read_argv(ctx: CheckContext, since: int) -> list[str]:
    return [
        ctx.config.executables.journalctl,
        "-t",
        ctx.config.logging.canary_tag,
        "--since",
        f"@{since}",
        "-o",
        "json",
        "--no-pager",
        "-q",
    ]


def canary(ctx: CheckContext, outputs: Outputs) -> CanaryResult:
    cfg = ctx.config.logging
    token = f"nixcomply canary {uuid.uuid4()}"
    since = int(time.time()) - 1
    try:
        run_command(ctx, write_argv(ctx), input=token + "\n")
    except (CommandNotFoundError, CommandTimeoutError):
        raise
    except CommandError as e:
        # the journal refused the message: exactly the failure this check exists for
        outputs["canary_write_stderr"] = e.stderr
        return CanaryResult(token, False, False, 0, (e.stderr.strip().splitlines() or [str(e)])[-1])
    for attempt in range(1, cfg.read_attempts + 1):
        result = run_command(ctx, read_argv(ctx, since))
        outputs["journalctl"] = result.stdout
        if token in parse_journal_json(result.stdout):
            return CanaryResult(token, True, True, attempt, None)
        if attempt < cfg.read_attempts:
            time.sleep(cfg.read_interval_seconds)
    return CanaryResult(token, True, False, cfg.read_attempts, None)


@dataclass(frozen=True)
class LoggingObservation:
    units: dict[str, dict[str, Any]]
    inactive: tuple[str, ...]
    canary: CanaryResult


def observe(ctx: CheckContext) -> tuple[LoggingObservation, Outputs]:
    names = ctx.config.logging.units
    states = unit_states(ctx, names)
    units: dict[str, dict[str, Any]] = {}
    inactive = []
    for name in names:
        state = states[name]
        if isinstance(state, BaseException):
            raise CheckError(f"cannot read {name}: {state}")
        units[name] = {**unit_record(state), "describe": describe_unit(state)}
        if not unit_active(state):
            inactive.append(name)
    outputs: Outputs = {}
    return LoggingObservation(units, tuple(inactive), canary(ctx, outputs)), outputs


def judge(obs: LoggingObservation, expect: Mapping[str, Any], ctx: CheckContext) -> Verdict:
    c = obs.canary
    observed = {
        "units": obs.units,
        "canary_written": c.written,
        "canary_read_back": c.found,
        "read_attempts": c.attempts,
    }
    expected = {"units_active": list(obs.units), "canary_read_back": True}
    if obs.inactive:
        first = obs.inactive[0]
        states = ", ".join(f"{u} is {obs.units[u]['describe']}" for u in obs.inactive)
        return Verdict("drift", f"logging interrupted: {states}", observed, expected, {"unit": first})
    journald = {"unit": ctx.config.logging.units[0]}
    if not c.written:
        return Verdict(
            "drift", f"the journal refused the canary message: {c.error}", observed, expected, journald
        )
    if not c.found:
        message = f"the canary message was written but not found in the journal after {c.attempts} attempt(s)"
        return Verdict("drift", message, observed, expected, journald)
    units = ", ".join(obs.units)
    return Verdict("pass", f"{units} active; canary written and read back", observed, expected)


def run(ctx: CheckContext, controls: Controls) -> list[Finding]:
    return per_control(ctx, controls, SPEC, observe, judge)
