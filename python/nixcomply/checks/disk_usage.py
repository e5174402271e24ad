"""disk_usage: filesystems are below ``parameters.disk_usage_max_percent`` full.

``os.statvfs`` per path (``expect.mounts`` or ``checks.disk.mounts``), counted like ``df``:
used / (used + available to unprivileged users), so the root reserve counts as full. One
finding per path, with RB-DISK-001's ``path``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from nixcomply.checks.base import CheckSpec, Controls, Outputs, Verdict, expect_str_list, per_subject
from nixcomply.checks.context import CheckContext
from nixcomply.checks.finding import Finding

NAME: Final = "disk_usage"
SPEC: Final = CheckSpec(
    name=NAME, severity="medium", runbook="RB-DISK-001", expect_keys=frozenset({"mounts"})
)


@dataclass(frozen=True)
class Usage:
    percent: float
    used_bytes: int
    available_bytes: int
    total_bytes: int
    inodes_percent: float | None


def usage_of(st: os.statvfs_result) -> Usage:
    """df's arithmetic: used = blocks - free; percent = used / (used + avail), rounded up."""
    if st.f_blocks <= 0:
        raise ValueError("the filesystem reports no blocks (a pseudo filesystem?)")
    used = st.f_blocks - st.f_bfree
    denominator = used + st.f_bavail
    percent = math.ceil(used * 1000 / denominator) / 10 if denominator else 100.0
    inodes = None
    if st.f_files > 0:
        used_inodes = st.f_files - st.f_ffree
        inodes = (
            math.ceil(used_inodes * 1000 / (used_inodes + st.f_favail)) / 10
            if used_inodes + st.f_favail
            else 100.0
        )
    return Usage(percent, used * st.f_frsize, st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize, inodes)


def run(ctx: CheckContext, controls: Controls) -> list[Finding]:
    limit = ctx.parameters.disk_usage_max_percent

    def subjects_of(expect: Mapping[str, Any]) -> list[str] | None:
        mounts = expect_str_list(expect, "mounts")
        if mounts is not None:
            for mount in mounts:
                if not mount.startswith("/"):
                    raise ValueError(f"expect.mounts: {mount!r} is not an absolute path")
        return mounts

    def defaults() -> list[str]:
        return [str(m) for m in ctx.config.disk.mounts]

    def observe_all(mounts: list[str]) -> dict[str, tuple[Usage, Outputs] | BaseException]:
        result: dict[str, tuple[Usage, Outputs] | BaseException] = {}
        for mount in mounts:
            try:
                result[mount] = (usage_of(os.statvfs(ctx.host_path(mount))), {})
            except (OSError, ValueError) as e:
                result[mount] = e
        return result

    def judge(mount: str, usage: Usage) -> Verdict:
        observed = {
            "used_percent": usage.percent,
            "used_bytes": usage.used_bytes,
            "available_bytes": usage.available_bytes,
            "total_bytes": usage.total_bytes,
            "inodes_used_percent": usage.inodes_percent,
        }
        expected = {"max_percent": limit}
        params = {"path": mount}
        full = usage.percent > limit or (usage.inodes_percent is not None and usage.inodes_percent > limit)
        what = f"{mount} is {usage.percent:g}% full"
        if usage.inodes_percent is not None and usage.inodes_percent > limit:
            what += f", {usage.inodes_percent:g}% of inodes used"
        if full:
            return Verdict("drift", f"{what} (limit {limit}%)", observed, expected, params, subject=mount)
        return Verdict("pass", f"{what} (limit {limit}%)", observed, expected, params, subject=mount)

    return per_subject(ctx, controls, SPEC, subjects_of, defaults, observe_all, judge)
