"""nix_config: effective Nix settings (sandboxing, who may talk to the daemon, signatures).

Newer Nix prints them with ``nix config show --json``; Nix 2.8 (Debian's) only knows
``nix show-config --json``: the new form is tried first and the old one when Nix says the
command does not exist. Both print ``{name: {"value": ...}}``. Values compare the way
``nix show-config`` prints them: booleans ``true``/``false``, lists space-separated (as a
set: ``trusted-users = root @wheel`` equals ``@wheel root``). Nix 2.8 prints
``experimental-features`` as enum numbers in JSON; compare it on a newer Nix only.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

from nixcomply.checks.base import CheckSpec, Controls, Outputs, Verdict, per_control, run_command
from nixcomply.checks.context import CheckContext
from nixcomply.checks.finding import Finding
from nixcomply.errors import CommandError, CommandNotFoundError, CommandTimeoutError

NAME: Final = "nix_config"
SPEC: Final = CheckSpec(name=NAME, severity="high", runbook="RB-DRIFT-001", needs_control=True)
_FEATURES: Final = ["--extra-experimental-features", "nix-command"]


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return " ".join(_text(v) for v in value)
    if isinstance(value, dict):
        return " ".join(f"{k}={_text(v)}" for k, v in sorted(value.items()))
    if value is None:
        return ""
    return str(value)


def parse_nix_config_json(text: str) -> dict[str, str]:
    """``nix config show --json`` / ``nix show-config --json`` -> name -> value as text."""
    if not text.strip():
        raise ValueError("nix printed no configuration")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"nix configuration is not JSON: {e.msg}") from None
    if not isinstance(data, dict) or not data:
        raise ValueError("nix configuration JSON is not a non-empty object")
    settings = {}
    for name, entry in data.items():
        if not isinstance(entry, dict) or "value" not in entry:
            raise ValueError(f"nix configuration entry {name!r} has no value")
        settings[name] = _text(entry["value"])
    return settings


def argv(ctx: CheckContext, *, legacy: bool) -> list[str]:
    nix = ctx.config.executables.nix
    return (
        [nix, *_FEATURES, "show-config", "--json"]
        if legacy
        else [nix, *_FEATURES, "config", "show", "--json"]
    )


def observe(ctx: CheckContext) -> tuple[dict[str, str], Outputs]:
    try:
        result = run_command(ctx, argv(ctx, legacy=False))
    except (CommandNotFoundError, CommandTimeoutError):
        raise
    except CommandError as e:
        if "not a recognised command" not in e.stderr and "unrecognised" not in e.stderr:
            raise
        result = run_command(ctx, argv(ctx, legacy=True))
    return parse_nix_config_json(result.stdout), {"nix_config": result.stdout}


def _same(observed: str, expected: Any) -> bool:
    want = _text(expected)
    if observed == want:
        return True
    if isinstance(expected, list) or " " in want:
        return sorted(observed.split()) == sorted(want.split())
    return False


def judge(settings: dict[str, str], expect: Mapping[str, Any], ctx: CheckContext) -> Verdict:
    if not expect:
        raise ValueError("the control's expect names no Nix setting")
    observed: dict[str, Any] = {}
    expected: dict[str, Any] = {}
    wrong = []
    for name in sorted(expect):
        have = settings.get(name)
        observed[name], expected[name] = have, _text(expect[name])
        if have is None:
            wrong.append(f"{name} is not a setting this Nix knows")
        elif not _same(have, expect[name]):
            wrong.append(f"{name} = {have!r}, expected {expected[name]!r}")
    if wrong:
        return Verdict("drift", "nix: " + "; ".join(wrong), observed, expected)
    return Verdict("pass", "nix: " + ", ".join(f"{k} = {v}" for k, v in observed.items()), observed, expected)


def run(ctx: CheckContext, controls: Controls) -> list[Finding]:
    return per_control(ctx, controls, SPEC, observe, judge)
