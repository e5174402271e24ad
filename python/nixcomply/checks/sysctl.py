"""sysctl: kernel parameters as the kernel reports them, read from ``<root>/proc/sys``.

No subprocess: ``sysctl`` itself only reads these files. A key maps to a path the way
sysctl maps it (``net.ipv4.ip_forward`` -> ``net/ipv4/ip_forward``); a key the kernel does
not have is an error (the control cannot be verified here), not a pass. Values compare
with whitespace normalised, since the kernel separates vector values with tabs
(``tcp_rmem``: ``4096\\t131072\\t6291456``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from nixcomply.checks.base import CheckError, CheckSpec, Controls, Outputs, Verdict, per_control
from nixcomply.checks.context import CheckContext
from nixcomply.checks.finding import Finding

NAME: Final = "sysctl"
SPEC: Final = CheckSpec(name=NAME, severity="medium", runbook="RB-DRIFT-001", needs_control=True)
_KEY: Final = re.compile(r"^[A-Za-z0-9_*-]+(?:[./][A-Za-z0-9_*:@-]+)*$")


def key_path(key: str) -> Path:
    """``net.ipv4.conf.all.rp_filter`` -> ``net/ipv4/conf/all/rp_filter`` (a key written with
    slashes is taken as it is, which is how sysctl names interfaces with dots)."""
    if not _KEY.match(key) or ".." in key:
        raise ValueError(f"{key!r} is not a sysctl key")
    return Path(key) if "/" in key else Path(*key.split("."))


def parse_value(text: str) -> str:
    """The content of a /proc/sys file -> the value as ``sysctl -n`` prints it, normalised."""
    value = " ".join(text.split())
    if not value:
        raise ValueError("empty value")
    return value


def expected_text(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, list):
        return " ".join(expected_text(v) for v in value)
    if isinstance(value, (int, float, str)):
        return " ".join(str(value).split())
    raise ValueError(f"expected value {value!r} is not a string, number, boolean or list")


def read_key(ctx: CheckContext, key: str) -> str:
    path = ctx.host_path("/proc/sys") / key_path(key)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        raise CheckError(f"{key} does not exist on this kernel ({path})") from None
    except PermissionError:
        raise CheckError(f"{key} is not readable ({path}): run as root") from None
    try:
        return parse_value(text)
    except ValueError as e:
        raise CheckError(f"{key}: {e} in {path}") from None


def observe(ctx: CheckContext) -> tuple[CheckContext, Outputs]:
    # Keys come from each control's expect; reading happens in judge (cheap file reads).
    return ctx, {}


def judge(ctx: CheckContext, expect: Mapping[str, Any], _ctx: CheckContext) -> Verdict:
    if not expect:
        raise ValueError("the control's expect names no sysctl key")
    observed: dict[str, Any] = {}
    expected: dict[str, Any] = {}
    wrong: list[str] = []
    lines: list[str] = []
    for key in sorted(expect):
        want = expected_text(expect[key])
        have = read_key(ctx, key)
        observed[key], expected[key] = have, want
        lines.append(f"{key} = {have}")
        if have != want:
            wrong.append(f"{key} is {have}, expected {want}")
    outputs = {"sysctl": "\n".join(lines) + "\n"}
    if wrong:
        return Verdict("drift", "; ".join(wrong), observed, expected, outputs=outputs)
    shown = ", ".join(f"{k} = {v}" for k, v in expected.items())
    return Verdict("pass", shown, observed, expected, outputs=outputs)


def run(ctx: CheckContext, controls: Controls) -> list[Finding]:
    return per_control(ctx, controls, SPEC, observe, judge)
