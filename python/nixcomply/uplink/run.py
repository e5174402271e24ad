"""Enrollment and one upload pass: what ``nixcomply enroll`` and ``nixcomply upload`` (and the
hook after every reconcile cycle) run.

An upload pass asks the server for its accepted size, sends the outbox in order, keeps each
cosignature beside its checkpoint, and records progress; any failure is recorded with its
backoff and never raised past the caller that asked for ``quiet`` (a reconcile cycle must
not fail because the server is down). Passes of one host are serialised by a file lock;
a pass that finds the lock taken does nothing.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Final, Literal, TypedDict

from nixcomply.errors import NixcomplyError, UsageError
from nixcomply.evidence.cosignature import WitnessPublicKey
from nixcomply.evidence.store import KEYRING
from nixcomply.model import httpsig
from nixcomply.model.fleet import MAX_ENTRIES, EnrollRequest, ErrorCode, b64encode
from nixcomply.uplink.client import Client, ServerUnreachable, UplinkError
from nixcomply.uplink.outbox import OutboxError, batches, bundle_paths, log_size, store_cosignature
from nixcomply.uplink.state import LOCK, Enrollment, UplinkState, UplinkStateError

logger = logging.getLogger(__name__)
_STAMP: Final = re.compile(r"^(\d{8}T\d{6}Z)-")

Outcome = Literal["uploaded", "up-to-date", "failed", "waiting", "busy", "not-enrolled"]


@dataclass(frozen=True)
class Lag:
    """How far the server is behind the host's log."""

    local_size: int
    accepted_size: int
    oldest_unsent: datetime | None

    @property
    def entries(self) -> int:
        return max(0, self.local_size - self.accepted_size)

    def age_seconds(self, now: datetime) -> float:
        return 0.0 if self.oldest_unsent is None else max(0.0, (now - self.oldest_unsent).total_seconds())


class UploadJson(TypedDict):
    """``nixcomply upload --json`` (stable: fields are added, never renamed or removed).
    ``code`` is the server's error code (``nixcomply.model.fleet.ErrorCode``) of a refused
    attempt; ``cosigned`` the checkpoint sizes the witness cosigned in this pass."""

    outcome: Outcome
    accepted_size: int
    sent: int
    error: str | None
    code: str | None
    next_attempt_at: str | None
    cosigned: list[int]


@dataclass
class PassReport:
    outcome: Outcome
    accepted_size: int = 0
    sent: int = 0
    error: str | None = None
    code: str | None = None
    next_attempt_at: datetime | None = None
    cosigned: list[int] = field(default_factory=list)

    def to_json(self) -> UploadJson:
        return {
            "outcome": self.outcome,
            "accepted_size": self.accepted_size,
            "sent": self.sent,
            "error": self.error,
            "code": self.code,
            "next_attempt_at": self.next_attempt_at.isoformat() if self.next_attempt_at else None,
            "cosigned": self.cosigned,
        }


def _now() -> datetime:
    return datetime.now(UTC)


def enroll(
    state_dir: Path,
    *,
    server: str,
    token: str,
    hostname: str,
    machine_id: str,
    origin: str,
    client_factory: Callable[..., Client] = Client,
    now: Callable[[], datetime] = _now,
) -> Enrollment:
    """Register this host's keyring and a new transport key with the server."""
    keyring_path = state_dir / KEYRING
    try:
        keyring = json.loads(keyring_path.read_bytes())
    except FileNotFoundError:
        raise UsageError(
            f"{keyring_path}: no keyring", hint="create the evidence keys first (`nixcomply evidence keygen`)"
        ) from None
    except ValueError as e:
        raise UsageError(f"{keyring_path}: not JSON: {e}") from None
    with UplinkState.open(state_dir) as state:
        if state.enrollment() is not None:
            raise UsageError(f"this host is already enrolled with {state.enrollment().server}")  # type: ignore[union-attr]
        key = state.transport_key(create=True)
        client = client_factory(server, key, state.next_counter)
        try:
            response = client.enroll(
                EnrollRequest(
                    token=token,
                    hostname=hostname,
                    machine_id=machine_id,
                    origin=origin,
                    transport_key=b64encode(key.public_key().public_bytes_raw()),
                    keyring=keyring,
                )
            )
        finally:
            client.close()
        if response.keyid != httpsig.key_id(key.public_key()):
            raise NixcomplyError("the server registered another key than this host's")
        WitnessPublicKey.from_vkey(response.witness_key)
        enrollment = Enrollment(
            server, response.site, response.hostname, response.keyid, response.witness_key, now()
        )
        state.set_enrollment(enrollment)
    return enrollment


@dataclass(frozen=True)
class Overview:
    """The uplink on one screen: where it uploads, how far behind the server is, and how
    the last attempts went (``nixcomply status``, the metrics)."""

    enrollment: Enrollment
    lag: Lag
    failures: int
    last_error: str | None
    next_attempt_at: datetime | None
    acknowledged_at: datetime | None

    def lines(self, now: datetime) -> list[str]:
        e = self.enrollment
        head = f"upload     {e.site}/{e.hostname} at {e.server}: "
        if self.lag.entries == 0:
            head += f"up to date ({self.lag.accepted_size} entries held)"
        else:
            head += f"{self.lag.entries} entries behind, oldest {self.lag.age_seconds(now):.0f} s old"
        out = [head]
        if self.failures:
            due = (
                f", next attempt {self.next_attempt_at:%Y-%m-%d %H:%M:%S} UTC" if self.next_attempt_at else ""
            )
            out.append(f"{'':<11}{self.failures} failed attempt(s){due}: {self.last_error}")
        return out

    def to_json(self, now: datetime) -> dict[str, object]:
        return {
            "server": self.enrollment.server,
            "site": self.enrollment.site,
            "hostname": self.enrollment.hostname,
            "lag_entries": self.lag.entries,
            "lag_seconds": round(self.lag.age_seconds(now), 1),
            "accepted_size": self.lag.accepted_size,
            "local_size": self.lag.local_size,
            "failures": self.failures,
            "last_error": self.last_error,
            "next_attempt_at": self.next_attempt_at.isoformat() if self.next_attempt_at else None,
            "acknowledged_at": self.acknowledged_at.isoformat() if self.acknowledged_at else None,
        }


def describe(data: Mapping[str, object] | None) -> list[str]:
    """``nixcomply status``'s lines for an :meth:`Overview.to_json` (None: not enrolled)."""
    if data is None:
        return ["upload     not enrolled (nixcomply enroll)"]
    head = f"upload     {data['site']}/{data['hostname']} at {data['server']}: "
    if data["lag_entries"] == 0:
        head += f"up to date ({data['accepted_size']} entries held)"
    else:
        head += f"{data['lag_entries']} entries behind, the oldest {data['lag_seconds']} s old"
    out = [head]
    if data["failures"]:
        due = f", next attempt {data['next_attempt_at']}" if data["next_attempt_at"] else ""
        out.append(f"{'':<11}{data['failures']} failed attempt(s){due}: {data['last_error']}")
    return out


def overview(state_dir: Path) -> Overview | None:
    """The uplink's state (None when the host is not enrolled). Reads only."""
    if not (state_dir / "state.db").exists():
        return None
    try:
        state = UplinkState.open(state_dir)
    except UplinkStateError:
        return None
    with state:
        enrollment = state.enrollment()
        progress = state.progress()
    if enrollment is None:
        return None
    size = log_size(state_dir)
    oldest = None
    if size > progress.accepted_size:
        path = bundle_paths(state_dir, progress.accepted_size).get(progress.accepted_size)
        m = _STAMP.match(path.name) if path else None
        if m:
            oldest = datetime.strptime(m.group(1), "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    return Overview(
        enrollment,
        Lag(size, progress.accepted_size, oldest),
        progress.failures,
        progress.last_error,
        progress.next_attempt_at,
        progress.acknowledged_at,
    )


def lag(state_dir: Path) -> Lag | None:
    """The upload lag of an enrolled host (None when it is not enrolled)."""
    found = overview(state_dir)
    return None if found is None else found.lag


def upload(
    state_dir: Path,
    *,
    force: bool = False,
    server: str | None = None,
    timeout: float = 30,
    max_entries: int = MAX_ENTRIES,
    client_factory: Callable[..., Client] = Client,
    now: Callable[[], datetime] = _now,
) -> PassReport:
    """One upload pass (see the module docstring). ``server``: the configured server; an
    enrollment with another one is not used (the configuration changed: enroll again)."""
    os.makedirs(state_dir / "uplink", mode=0o700, exist_ok=True)
    fd = os.open(state_dir / LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return PassReport("busy")
        with UplinkState.open(state_dir) as state:
            return _pass(
                state,
                state_dir,
                force=force,
                server=server,
                max_entries=max_entries,
                client_factory=lambda *a: client_factory(*a, timeout=timeout),
                now=now,
            )
    finally:
        os.close(fd)


def _pass(
    state: UplinkState,
    root: Path,
    *,
    force: bool,
    server: str | None,
    max_entries: int,
    client_factory: Callable[..., Client],
    now: Callable[[], datetime],
) -> PassReport:
    enrollment = state.enrollment()
    if enrollment is None:
        return PassReport("not-enrolled")
    if server is not None and server.rstrip("/") != enrollment.server.rstrip("/"):
        message = f"enrolled with {enrollment.server}, but the configuration names {server}: enroll again"
        return PassReport("failed", state.progress().accepted_size, error=message, code="wrong-server")
    progress = state.progress()
    started = now()
    if not force and progress.next_attempt_at is not None and started < progress.next_attempt_at:
        return PassReport("waiting", progress.accepted_size, next_attempt_at=progress.next_attempt_at)
    witness = WitnessPublicKey.from_vkey(enrollment.witness_key)  # checked at enrollment
    client = client_factory(enrollment.server, state.transport_key(), state.next_counter)
    report = PassReport("up-to-date", progress.accepted_size)
    try:
        remote = client.log_state()
        local = log_size(root)
        if remote.accepted_size > local:
            # The server holds more of this log than the host: its evidence was lost or put
            # back (restore the store), or the server keeps another log under this enrollment.
            raise OutboxError(
                f"the server holds {remote.accepted_size} entries of this host's log, the log here "
                f"has {local}: entries were lost or the store was rolled back; restore it from a "
                "backup (nothing is sent meanwhile)"
            )
        if remote.accepted_size > 0:
            # "I hold N entries" is believed only with the witness's cosignature on this host's
            # own checkpoint N: an answer from whoever sits between host and server (plain
            # http) could otherwise make the host count unsent evidence as uploaded.
            if not (remote.checkpoint and remote.cosignature):
                raise OutboxError(
                    f"the server says it holds {remote.accepted_size} entries but shows no cosigned checkpoint"
                )
            store_cosignature(
                root, remote.accepted_size, remote.checkpoint.encode(), remote.cosignature, witness=witness
            )
        report.accepted_size = remote.accepted_size
        state.acknowledged(remote.accepted_size, now())
        for batch in batches(root, remote.accepted_size, max_entries=max_entries):
            response = client.upload(batch.request)
            store_cosignature(
                root,
                response.accepted_size,
                response.checkpoint.encode(),
                response.cosignature,
                witness=witness,
            )
            state.acknowledged(response.accepted_size, now())
            report.sent += response.stored
            report.accepted_size = response.accepted_size
            report.cosigned.append(response.accepted_size)
            report.outcome = "uploaded"
    except (ServerUnreachable, UplinkError, OutboxError) as e:
        report.outcome = "failed"
        report.error = str(e)
        report.code = e.code.value if isinstance(e, UplinkError) else None
        wait = e.retry_after if isinstance(e, UplinkError) else None
        report.next_attempt_at = state.failed(now(), str(e), at_least=wait or 0)
        level = logging.ERROR if isinstance(e, UplinkError) and e.code in _ALARMING else logging.WARNING
        logger.log(level, "upload to %s failed: %s", enrollment.server, e)
        return report
    finally:
        client.close()
    state.succeeded(now())
    return report


_ALARMING: Final = frozenset({ErrorCode.FORK, ErrorCode.ROLLBACK, ErrorCode.REVOKED, ErrorCode.BAD_ENTRY})
