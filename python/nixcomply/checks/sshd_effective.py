"""sshd_effective: the configuration sshd actually uses (``sshd -T``) vs the manifest.

``sshd -T`` prints every keyword in lowercase with its effective value, after defaults,
includes and (with ``-C user=,host=,addr=``) the ``Match`` blocks that apply to such a
connection. It must run as root with readable host keys, otherwise it fails: that is an
error finding, not a pass. Keywords that can be given several times (``hostkey``,
``listenaddress``, ``allowgroups``) print one line each.

Comparison: keywords in lowercase; a scalar value compares exactly, or case-insensitively
when it is not a path (sshd prints ``VERBOSE`` and ``no``); algorithm lists (``ciphers``,
``macs``, ``kexalgorithms`` ...) are one comma-separated line and compare *in order*
(the first common algorithm is the one negotiated); an expected list for a keyword printed
on several lines compares as a set.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

from nixcomply.checks.base import CheckSpec, Controls, Outputs, Verdict, per_control, run_command
from nixcomply.checks.context import CheckContext
from nixcomply.checks.finding import Finding

NAME: Final = "sshd_effective"
SPEC: Final = CheckSpec(name=NAME, severity="high", runbook="RB-DRIFT-001", needs_control=True)

_KEYWORD: Final = re.compile(r"^[a-z][a-z0-9]*$")
# Keywords sshd -T always prints: output without them is not sshd -T output.
_ALWAYS: Final = frozenset({"port", "permitrootlogin", "passwordauthentication"})

SshdSettings = dict[str, list[str]]


def parse_sshd_t(text: str) -> SshdSettings:
    """``sshd -T`` output -> keyword -> values (one per line the keyword was printed on)."""
    settings: SshdSettings = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        keyword, _, value = line.partition(" ")
        if not _KEYWORD.match(keyword):
            raise ValueError(f"sshd -T line {number} is not 'keyword value': {raw[:80]!r}")
        settings.setdefault(keyword, []).append(value.strip())
    if not settings:
        raise ValueError("sshd -T printed nothing")
    missing = sorted(_ALWAYS - set(settings))
    if missing:
        raise ValueError(f"sshd -T output lacks {', '.join(missing)}: not sshd -T output")
    return settings


def argv(ctx: CheckContext) -> list[str]:
    cfg = ctx.config.sshd
    command = [cfg.binary, "-T", "-f", str(ctx.host_path(cfg.config_file))]
    if cfg.connection:
        command += ["-C", ",".join(f"{k}={v}" for k, v in sorted(cfg.connection.items()))]
    return command


def observe(ctx: CheckContext) -> tuple[SshdSettings, Outputs]:
    result = run_command(ctx, argv(ctx))
    return parse_sshd_t(result.stdout), {"sshd_t": result.stdout}


def _text(value: Any) -> str | list[str]:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return [str(_text(v)) for v in value]
    if isinstance(value, (int, float, str)):
        return str(value)
    raise ValueError(f"expected value {value!r} is not a string, number, boolean or list")


def _same(observed: str, expected: str) -> bool:
    if observed == expected:
        return True
    return "/" not in expected and observed.casefold() == expected.casefold()


def matches(observed: list[str], expected: str | list[str]) -> bool:
    if isinstance(expected, list):
        if len(observed) == 1:
            # one line: an ordered comma list (ciphers) or a single entry
            return _same(observed[0], ",".join(expected))
        return sorted(v.casefold() for v in observed) == sorted(v.casefold() for v in expected)
    return len(observed) == 1 and _same(observed[0], expected)


def judge(settings: SshdSettings, expect: Mapping[str, Any], ctx: CheckContext) -> Verdict:
    if not expect:
        raise ValueError("the control's expect names no sshd keyword")
    observed: dict[str, Any] = {}
    expected: dict[str, Any] = {}
    wrong: list[str] = []
    for key in sorted(expect):
        keyword = key.lower()
        want = _text(expect[key])
        have = settings.get(keyword)
        expected[keyword] = want
        observed[keyword] = None if have is None else (have[0] if len(have) == 1 else have)
        if have is None:
            wrong.append(f"{keyword} not printed by sshd -T (unknown keyword?)")
        elif not matches(have, want):
            shown = ",".join(have) if len(have) > 1 else have[0]
            wrong.append(
                f"{keyword} is {shown!r}, expected {want if isinstance(want, str) else ','.join(want)!r}"
            )
    if wrong:
        return Verdict("drift", "sshd effective configuration: " + "; ".join(wrong), observed, expected)
    shown = ", ".join(f"{k} {v if isinstance(v, str) else ','.join(v)}" for k, v in expected.items())
    return Verdict("pass", f"sshd effective configuration has {shown}", observed, expected)


def run(ctx: CheckContext, controls: Controls) -> list[Finding]:
    return per_control(ctx, controls, SPEC, observe, judge)
