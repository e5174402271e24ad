"""journald_config: the effective ``[Journal]`` settings of journald.conf and its drop-ins.

``systemd-analyze cat-config systemd/journald.conf`` prints the main file and every drop-in
in the order systemd reads them, each under a ``# /path`` comment; for each key the last
assignment wins, as in systemd. With a root other than ``/`` the files under that root are
read (``--root``). Keys are case-sensitive (``Storage``); boolean values compare as
booleans (``yes`` = ``true`` = ``1`` = ``on``). A key set nowhere has systemd's compiled-in
default, which nixcomply does not guess: it is drift when a control expects a value.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from nixcomply.checks.base import CheckSpec, Controls, Outputs, Verdict, per_control, run_command
from nixcomply.checks.context import CheckContext
from nixcomply.checks.finding import Finding

NAME: Final = "journald_config"
SPEC: Final = CheckSpec(name=NAME, severity="medium", runbook="RB-DRIFT-001", needs_control=True)
_TRUE: Final = frozenset({"1", "yes", "y", "true", "t", "on"})
_FALSE: Final = frozenset({"0", "no", "n", "false", "f", "off"})


@dataclass(frozen=True)
class UnitConfig:
    settings: dict[str, str]  # effective value of each key in the wanted section
    files: tuple[str, ...]  # the files systemd read, in order


def parse_cat_config(text: str, section: str = "Journal") -> UnitConfig:
    """``systemd-analyze cat-config`` output -> effective settings of ``[section]``."""
    if not text.strip():
        raise ValueError("systemd-analyze cat-config printed nothing")
    settings: dict[str, str] = {}
    files: list[str] = []
    current: str | None = None
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith("# /"):
            files.append(line[2:].strip())
            current = None  # every file starts outside any section
            continue
        if line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            if not line.endswith("]"):
                raise ValueError(f"line {number}: malformed section header {line[:80]!r}")
            current = line[1:-1]
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"line {number} is not 'Key=value': {line[:80]!r}")
        if current is None:
            raise ValueError(f"line {number}: assignment outside a section: {line[:80]!r}")
        if current == section:
            settings[key.strip()] = value.strip()
    return UnitConfig(settings, tuple(files))


def argv(ctx: CheckContext, config: str = "systemd/journald.conf") -> list[str]:
    command = [ctx.config.executables.systemd_analyze]
    if ctx.root != Path("/"):
        command.append(f"--root={ctx.root}")
    return [*command, "cat-config", config]


def observe(ctx: CheckContext) -> tuple[UnitConfig, Outputs]:
    result = run_command(ctx, argv(ctx))
    return parse_cat_config(result.stdout), {"cat_config": result.stdout}


def _as_bool(value: str) -> bool | None:
    lowered = value.lower()
    return True if lowered in _TRUE else False if lowered in _FALSE else None


def _expected(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float, str)):
        return str(value)
    raise ValueError(f"expected value {value!r} is not a string, number or boolean")


def same_value(observed: str, expected: str) -> bool:
    if observed == expected:
        return True
    a, b = _as_bool(observed), _as_bool(expected)
    return a is not None and a == b


def judge(config: UnitConfig, expect: Mapping[str, Any], ctx: CheckContext) -> Verdict:
    if not expect:
        raise ValueError("the control's expect names no journald.conf key")
    observed: dict[str, Any] = {}
    expected: dict[str, Any] = {}
    wrong = []
    for key in sorted(expect):
        want = _expected(expect[key])
        have = config.settings.get(key)
        observed[key], expected[key] = have, want
        if have is None:
            wrong.append(f"{key} is not set (expected {want})")
        elif not same_value(have, want):
            wrong.append(f"{key}={have}, expected {want}")
    observed_all = {**observed, "files": list(config.files)}
    if wrong:
        return Verdict("drift", "journald.conf: " + "; ".join(wrong), observed_all, expected)
    return Verdict(
        "pass", "journald.conf: " + ", ".join(f"{k}={v}" for k, v in observed.items()), observed_all, expected
    )


def run(ctx: CheckContext, controls: Controls) -> list[Finding]:
    return per_control(ctx, controls, SPEC, observe, judge)
