"""backup: the newest backup is at most ``parameters.backup_max_age_hours`` old.

Three sources (``checks.backup.kind``):

* ``restic``: ``restic -r REPO --password-file FILE snapshots --json --latest 1``. ``--latest``
  counts per host and path set, so the newest of all listed snapshots is taken. restic
  prints times with nanoseconds and a zone.
* ``borg``: ``borg list --json --last 1 REPO`` with ``BORG_PASSCOMMAND`` reading the
  passphrase file; borg prints naive local times, so it runs with ``TZ=UTC``.
* ``timestamp``: a file the backup job writes on success, holding an ISO 8601 time with a
  zone (``date -Is``) or Unix seconds (``date +%s``). No file: no backup ever succeeded.

An unreachable repository or a wrong password is an error (the backup may be fine, nixcomply
cannot tell); no snapshot at all, or too old a one, is drift.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from nixcomply.checks.base import (
    CheckError,
    CheckSpec,
    Controls,
    Outputs,
    Verdict,
    age_text,
    per_control,
    run_command,
)
from nixcomply.checks.context import CheckContext
from nixcomply.checks.finding import Finding

NAME: Final = "backup"
SPEC: Final = CheckSpec(name=NAME, severity="high", runbook="RB-BACKUP-001", expect_keys=frozenset())
_FRACTION: Final = re.compile(r"(\.\d{6})\d+")
_ENV_LINE: Final = re.compile(r"^(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=(.*)$")


def parse_time(text: str, *, naive_is_utc: bool = False) -> datetime:
    """ISO 8601 with a zone (nanoseconds allowed, as restic prints), or Unix seconds."""
    value = text.strip()
    if not value:
        raise ValueError("empty timestamp")
    if re.fullmatch(r"\d+(\.\d+)?", value):
        return datetime.fromtimestamp(float(value), UTC)
    try:
        parsed = datetime.fromisoformat(_FRACTION.sub(r"\1", value.replace("Z", "+00:00")))
    except ValueError:
        raise ValueError(f"{value[:60]!r} is not an ISO 8601 time") from None
    if parsed.tzinfo is None:
        if not naive_is_utc:
            raise ValueError(f"{value!r} has no time zone")
        parsed = parsed.replace(tzinfo=UTC)
    return parsed


def parse_restic_snapshots(text: str) -> datetime | None:
    """``restic snapshots --json`` -> the newest snapshot's time, None when there is none."""
    if not text.strip():
        raise ValueError("restic snapshots printed nothing")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"restic output is not JSON: {e.msg}") from None
    if not isinstance(data, list):
        raise ValueError("restic snapshots --json did not print a list")
    times = []
    for snapshot in data:
        if not isinstance(snapshot, dict) or not isinstance(snapshot.get("time"), str):
            raise ValueError("a restic snapshot has no time")
        times.append(parse_time(snapshot["time"]))
    return max(times, default=None)


def parse_borg_list(text: str) -> datetime | None:
    """``borg list --json`` (run with TZ=UTC) -> the newest archive's start time."""
    if not text.strip():
        raise ValueError("borg list printed nothing")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"borg output is not JSON: {e.msg}") from None
    if not isinstance(data, dict) or not isinstance(data.get("archives"), list):
        raise ValueError("borg list --json has no 'archives' list")
    times = []
    for archive in data["archives"]:
        stamp = archive.get("start") or archive.get("time") if isinstance(archive, dict) else None
        if not isinstance(stamp, str):
            raise ValueError("a borg archive has no start time")
        times.append(parse_time(stamp, naive_is_utc=True))
    return max(times, default=None)


def read_env_file(path: Path) -> dict[str, str]:
    """``KEY=VALUE`` lines (systemd EnvironmentFile syntax without continuations)."""
    env = {}
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        match = _ENV_LINE.match(line)
        if match is None:
            raise CheckError(f"{path} line {number} is not KEY=VALUE")
        value = match.group(2)
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        env[match.group(1)] = value
    return env


@dataclass(frozen=True)
class BackupObservation:
    source: str
    newest: datetime | None
    detail: str


def observe(ctx: CheckContext) -> tuple[BackupObservation, Outputs]:
    cfg = ctx.config.backup
    exe = ctx.config.executables
    env: dict[str, str] = {}
    if cfg.environment_file is not None:
        env.update(read_env_file(ctx.host_path(cfg.environment_file)))
    if cfg.kind == "restic":
        assert cfg.repository is not None  # validated by BackupConfig
        assert cfg.password_file is not None
        result = run_command(
            ctx,
            [
                exe.restic,
                "-r",
                cfg.repository,
                "--password-file",
                str(ctx.host_path(cfg.password_file)),
                "snapshots",
                "--json",
                "--latest",
                "1",
                "--no-lock",
            ],
            timeout=cfg.timeout,
            extra_env=env or None,
        )
        return BackupObservation("restic", parse_restic_snapshots(result.stdout), cfg.repository), {
            "restic_snapshots": result.stdout
        }
    if cfg.kind == "borg":
        assert cfg.repository is not None
        env["TZ"] = "UTC"
        if cfg.password_file is not None:
            env["BORG_PASSCOMMAND"] = "cat " + shlex.quote(str(ctx.host_path(cfg.password_file)))
        result = run_command(
            ctx,
            [exe.borg, "list", "--json", "--last", "1", cfg.repository],
            timeout=cfg.timeout,
            extra_env=env,
        )
        return BackupObservation("borg", parse_borg_list(result.stdout), cfg.repository), {
            "borg_list": result.stdout
        }
    path = ctx.host_path(cfg.timestamp_file)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return BackupObservation("timestamp", None, str(cfg.timestamp_file)), {}
    try:
        newest = parse_time(text)
    except ValueError as e:
        raise CheckError(f"{cfg.timestamp_file}: {e}", outputs={"timestamp_file": text}) from None
    return BackupObservation("timestamp", newest, str(cfg.timestamp_file)), {"timestamp_file": text}


def judge(obs: BackupObservation, expect: Mapping[str, Any], ctx: CheckContext) -> Verdict:
    limit_h = ctx.parameters.backup_max_age_hours
    params = {"unit": ctx.config.backup.unit}
    expected = {"max_age_hours": limit_h}
    if obs.newest is None:
        return Verdict(
            "drift",
            f"no backup found ({obs.source}: {obs.detail})",
            {"source": obs.source, "newest": None, "age_hours": None},
            expected,
            params,
        )
    age = (ctx.now - obs.newest).total_seconds()
    observed = {"source": obs.source, "newest": obs.newest.isoformat(), "age_hours": round(age / 3600, 2)}
    if age > limit_h * 3600:
        message = f"newest backup is {age_text(age)} old (limit {limit_h} h, {obs.source})"
        return Verdict("drift", message, observed, expected, params)
    return Verdict("pass", f"newest backup is {age_text(age)} old ({obs.source})", observed, expected, params)


def run(ctx: CheckContext, controls: Controls) -> list[Finding]:
    return per_control(ctx, controls, SPEC, observe, judge)
