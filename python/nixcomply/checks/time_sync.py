"""time_sync: the clock is synchronised and within ``parameters.time_max_drift_seconds``.

chrony (``services.chrony``): ``chronyc -c tracking`` prints one CSV line (reference id,
name, stratum, reference time, system time offset, last offset, RMS offset, frequency,
residual frequency, skew, root delay, root dispersion, update interval, leap status); the
human form of ``chronyc tracking`` is parsed too. Synchronised means a leap status other
than ``Not synchronised``, a stratum from 1 to 15, and ``|system time offset|`` within the
allowed drift.

systemd-timesyncd: ``timedatectl show`` gives ``NTPSynchronized=yes|no``; timesyncd does not
publish its offset there, so only synchronisation is judged (the message says so).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from nixcomply.checks.base import CheckSpec, Controls, Outputs, Verdict, expect_bool, per_control, run_command
from nixcomply.checks.context import CheckContext
from nixcomply.checks.finding import Finding

NAME: Final = "time_sync"
SPEC: Final = CheckSpec(
    name=NAME, severity="medium", runbook="RB-TIMESYNC-001", expect_keys=frozenset({"synchronized"})
)
_CSV_FIELDS: Final = 14
_NOT_SYNCED: Final = "Not synchronised"


@dataclass(frozen=True)
class TimeObservation:
    source: str
    synchronized_flag: bool  # what the daemon itself says
    offset_seconds: float | None  # None: the source does not tell
    stratum: int | None
    reference: str | None
    leap_status: str | None


def _float(value: str, what: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"chronyc tracking: {what} {value!r} is not a number") from None


def _chrony(reference: str, stratum: int, offset: float, leap: str) -> TimeObservation:
    synced = leap != _NOT_SYNCED and 1 <= stratum <= 15
    return TimeObservation("chrony", synced, abs(offset), stratum, reference or None, leap)


def parse_chrony_csv(text: str) -> TimeObservation:
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise ValueError("chronyc -c tracking printed nothing")
    if len(lines) != 1:
        raise ValueError(f"chronyc -c tracking printed {len(lines)} lines, expected 1")
    fields = lines[0].split(",")
    if len(fields) != _CSV_FIELDS:
        raise ValueError(
            f"chronyc -c tracking has {len(fields)} fields, expected {_CSV_FIELDS}: {lines[0][:80]!r}"
        )
    if not fields[2].isdigit():
        raise ValueError(f"chronyc -c tracking: stratum {fields[2]!r} is not a number")
    offset = _float(fields[4], "system time offset")
    return _chrony(fields[1], int(fields[2]), offset, fields[13].strip())


_SYSTEM_TIME: Final = re.compile(r"^([0-9.]+) seconds (fast|slow) of NTP time$")


def parse_chrony_text(text: str) -> TimeObservation:
    values: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        key, sep, value = line.partition(":")
        if not sep:
            raise ValueError(f"chronyc tracking: line is not 'Key : value': {line[:80]!r}")
        values[key.strip()] = value.strip()
    if not values:
        raise ValueError("chronyc tracking printed nothing")
    for key in ("Reference ID", "Stratum", "System time", "Leap status"):
        if key not in values:
            raise ValueError(f"chronyc tracking output lacks {key!r}")
    system = _SYSTEM_TIME.match(values["System time"])
    if system is None or not values["Stratum"].isdigit():
        raise ValueError(f"chronyc tracking: cannot read System time {values['System time']!r}")
    offset = float(system.group(1)) * (1 if system.group(2) == "fast" else -1)
    reference = values["Reference ID"].partition("(")[2].rstrip(")")
    return _chrony(reference, int(values["Stratum"]), offset, values["Leap status"])


def parse_chrony_tracking(text: str) -> TimeObservation:
    """Either form of ``chronyc tracking``."""
    first = text.strip().splitlines()[0] if text.strip() else ""
    return parse_chrony_text(text) if first.startswith("Reference ID") else parse_chrony_csv(text)


def parse_timedatectl_show(text: str) -> TimeObservation:
    values: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise ValueError(f"timedatectl show: line is not 'Key=value': {line[:80]!r}")
        values[key] = value
    if not values:
        raise ValueError("timedatectl show printed nothing")
    if values.get("NTPSynchronized") not in ("yes", "no"):
        raise ValueError("timedatectl show output lacks NTPSynchronized=yes|no")
    return TimeObservation("timesyncd", values["NTPSynchronized"] == "yes", None, None, None, None)


def argv(ctx: CheckContext) -> list[str]:
    cfg = ctx.config.time
    exe = ctx.config.executables
    if cfg.source == "timesyncd":
        return [exe.timedatectl, "show"]
    command = [exe.chronyc]
    if cfg.chronyc_host:
        command += ["-h", cfg.chronyc_host]
    if cfg.chronyc_port:
        command += ["-p", str(cfg.chronyc_port)]
    return [*command, "-c", "tracking"]


def observe(ctx: CheckContext) -> tuple[TimeObservation, Outputs]:
    result = run_command(ctx, argv(ctx))
    if ctx.config.time.source == "timesyncd":
        return parse_timedatectl_show(result.stdout), {"timedatectl_show": result.stdout}
    return parse_chrony_tracking(result.stdout), {"chronyc_tracking": result.stdout}


def judge(obs: TimeObservation, expect: Mapping[str, Any], ctx: CheckContext) -> Verdict:
    want = expect_bool(expect, "synchronized", True)
    limit = ctx.parameters.time_max_drift_seconds
    within = obs.offset_seconds is None or obs.offset_seconds <= limit
    synced = obs.synchronized_flag and within
    observed: dict[str, Any] = {
        "source": obs.source,
        "synchronized": synced,
        "daemon_says_synchronized": obs.synchronized_flag,
        "offset_seconds": obs.offset_seconds,
        "stratum": obs.stratum,
        "reference": obs.reference,
        "leap_status": obs.leap_status,
    }
    expected = {"synchronized": want, "max_offset_seconds": limit}
    params = {"unit": ctx.config.time.effective_unit}
    offset = "" if obs.offset_seconds is None else f", offset {obs.offset_seconds:.6f} s"
    if synced == want:
        note = " (timesyncd does not report its offset)" if obs.offset_seconds is None else ""
        state = "synchronised" if synced else "not synchronised, as expected"
        return Verdict(
            "pass",
            f"clock {state} via {obs.source}{offset} (limit {limit:g} s){note}",
            observed,
            expected,
            params,
        )
    if not obs.synchronized_flag:
        why = f"{obs.source} is not synchronised" + (
            f" (leap status {obs.leap_status})" if obs.leap_status else ""
        )
    elif not within:
        why = f"clock offset {obs.offset_seconds:.3f} s exceeds {limit:g} s"
    else:
        why = "clock is synchronised but the control expects it not to be"
    return Verdict("drift", why, observed, expected, params)


def run(ctx: CheckContext, controls: Controls) -> list[Finding]:
    return per_control(ctx, controls, SPEC, observe, judge)
