"""mounts: mount points carry the options a control requires (``<root>/proc/self/mountinfo``).

``expect`` maps a mount point to the options that must be in effect (``nosuid``, ``nodev``,
``noexec``, ...). mountinfo(5) lists the per-mount options in field 6; the last mount on a
mount point is the one in effect. A path that is not a mount point is drift: its options are
those of the file system it lies on, not the ones asked for.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from nixcomply.checks.base import CheckError, CheckSpec, Controls, Verdict, per_control
from nixcomply.checks.context import CheckContext
from nixcomply.checks.finding import Finding

NAME: Final = "mounts"
SPEC: Final = CheckSpec(name=NAME, severity="medium", runbook="RB-DRIFT-001", needs_control=True)


def _unescape(path: str) -> str:
    """mountinfo writes space, tab, newline and backslash as octal escapes."""
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        path = path.replace(code, char)
    return path


def parse_mountinfo(text: str) -> dict[str, tuple[str, frozenset[str]]]:
    """mount point -> (file system type, per-mount options), the last mount winning."""
    mounts: dict[str, tuple[str, frozenset[str]]] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        if not raw.strip():
            continue
        fields = raw.split(" ")
        try:
            separator = fields.index("-", 6)
        except ValueError:
            raise ValueError(f"mountinfo line {number} has no '-' separator: {raw[:80]!r}") from None
        if separator + 1 >= len(fields):
            raise ValueError(f"mountinfo line {number} has no file system type")
        mounts[_unescape(fields[4])] = (fields[separator + 1], frozenset(fields[5].split(",")))
    if not mounts:
        raise ValueError("mountinfo lists no mount")
    return mounts


def observe(ctx: CheckContext) -> tuple[dict[str, tuple[str, frozenset[str]]], dict[str, str]]:
    path = ctx.host_path("/proc/self/mountinfo")
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        raise CheckError(f"{path} does not exist (is /proc mounted?)") from None
    return parse_mountinfo(text), {"mountinfo": text}


def judge(
    mounts: dict[str, tuple[str, frozenset[str]]], expect: Mapping[str, Any], ctx: CheckContext
) -> Verdict:
    if not expect:
        raise ValueError("the control's expect names no mount point")
    observed: dict[str, Any] = {}
    expected: dict[str, Any] = {}
    wrong = []
    for mount in sorted(expect):
        want = expect[mount]
        if (
            not mount.startswith("/")
            or not isinstance(want, list)
            or not all(isinstance(o, str) for o in want)
        ):
            raise ValueError(f"expect.{mount} must be an absolute mount point with a list of options")
        expected[mount] = sorted(want)
        if mount not in mounts:
            observed[mount] = None
            wrong.append(f"{mount} is not a mount point")
            continue
        fstype, options = mounts[mount]
        observed[mount] = {"fstype": fstype, "options": sorted(options)}
        missing = sorted(set(want) - options)
        if missing:
            wrong.append(f"{mount} ({fstype}) lacks {','.join(missing)}")
    if wrong:
        return Verdict("drift", "; ".join(wrong), observed, expected)
    shown = "; ".join(f"{m} {','.join(o)}" for m, o in expected.items())
    return Verdict("pass", f"mounted with {shown}", observed, expected)


def run(ctx: CheckContext, controls: Controls) -> list[Finding]:
    return per_control(ctx, controls, SPEC, observe, judge)
