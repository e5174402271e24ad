"""kernel_cmdline: parameters of the running kernel's command line (``<root>/proc/cmdline``).

Some settings only take effect at boot (``audit=1``, ``audit_backlog_limit=8192``): the
configuration can say so long before the host is rebooted into it, so the running kernel's
command line is the evidence. ``expect`` maps a parameter to the value it must have (the last
occurrence wins, as the kernel reads it); ``true`` means the parameter must be present
without a value. Words after ``--`` belong to init and are ignored.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from typing import Any, Final

from nixcomply.checks.base import CheckError, CheckSpec, Controls, Verdict, per_control
from nixcomply.checks.context import CheckContext
from nixcomply.checks.finding import Finding

NAME: Final = "kernel_cmdline"
SPEC: Final = CheckSpec(name=NAME, severity="medium", runbook="RB-DRIFT-001", needs_control=True)


def parse_cmdline(text: str) -> dict[str, str | None]:
    """``/proc/cmdline`` -> parameter -> value (None for a bare word like ``quiet``)."""
    if not text.strip():
        raise ValueError("/proc/cmdline is empty")
    try:
        words = shlex.split(text)
    except ValueError as e:
        raise ValueError(f"/proc/cmdline: {e}") from None
    params: dict[str, str | None] = {}
    for word in words:
        if word == "--":  # what follows is passed to init, not read by the kernel
            break
        key, sep, value = word.partition("=")
        if not key:
            raise ValueError(f"/proc/cmdline: {word[:80]!r} is not a parameter")
        params[key] = value if sep else None
    return params


def observe(ctx: CheckContext) -> tuple[dict[str, str | None], dict[str, str]]:
    path = ctx.host_path("/proc/cmdline")
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        raise CheckError(f"{path} does not exist (is /proc mounted?)") from None
    return parse_cmdline(text), {"proc_cmdline": text}


def judge(params: dict[str, str | None], expect: Mapping[str, Any], ctx: CheckContext) -> Verdict:
    if not expect:
        raise ValueError("the control's expect names no kernel parameter")
    observed: dict[str, Any] = {}
    wrong = []
    for key in sorted(expect):
        want = expect[key]
        if not (want is True or (isinstance(want, (str, int)) and not isinstance(want, bool))):
            raise ValueError(f"expect.{key} must be a value or true, not {want!r}")
        present = key in params
        have = params.get(key)
        observed[key] = have if present else None
        if want is True:
            if not present:
                wrong.append(f"{key} is not on the kernel command line")
        elif not present:
            wrong.append(f"{key} is not on the kernel command line (expected {key}={want})")
        elif have != str(want):
            wrong.append(f"{key}={have}, expected {key}={want}")
    expected = {k: (v if v is True else str(v)) for k, v in expect.items()}
    if wrong:
        # only a boot reads the command line: no runbook can heal this, a reboot into the
        # current generation does
        return Verdict(
            "drift",
            "running kernel: " + "; ".join(wrong) + "; the next boot into the current generation sets it",
            observed,
            expected,
            runbook=None,
            reboot_needed=True,
        )
    shown = " ".join(k if v is True else f"{k}={v}" for k, v in sorted(expected.items()))
    return Verdict("pass", f"running kernel was booted with {shown}", observed, expected)


def run(ctx: CheckContext, controls: Controls) -> list[Finding]:
    return per_control(ctx, controls, SPEC, observe, judge)
