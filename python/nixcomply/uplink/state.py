"""What the uplink remembers, in the host's state database (``<state>/state.db``, its own
tables): the enrollment (server, keyid, witness key), the request counter, and the retry
schedule, so a restart neither replays a counter nor forgets a backoff. The transport key
is a file beside it (``<state>/uplink/transport.key``, mode 0600).

Retries back off exponentially with full jitter and a cap: the n-th consecutive failure
waits ``uniform(0.5, 1) * min(cap, base * 2**(n-1))``. A success resets the schedule.
Nothing here decides *what* to send: that is the log's own unacknowledged suffix.
"""

from __future__ import annotations

import random
import sqlite3
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from nixcomply.core import sqlite
from nixcomply.errors import NixcomplyError
from nixcomply.evidence.keys import Signer, generate, read_private_key, write_private_key

UPLINK_DIR: Final = "uplink"
TRANSPORT_KEY: Final = "uplink/transport.key"
LOCK: Final = "uplink/lock"
BASE_DELAY: Final = 30.0
MAX_DELAY: Final = 3600.0
WHAT: Final = "the uplink's state"

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS uplink_enrollment (
  id INTEGER PRIMARY KEY CHECK (id = 1),
  server TEXT NOT NULL,
  site TEXT NOT NULL,
  hostname TEXT NOT NULL,
  keyid TEXT NOT NULL,
  witness_key TEXT NOT NULL,
  enrolled_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS uplink_state (
  id INTEGER PRIMARY KEY CHECK (id = 1),
  counter INTEGER NOT NULL DEFAULT 0,
  accepted_size INTEGER NOT NULL DEFAULT 0,
  acknowledged_at TEXT,
  last_attempt_at TEXT,
  failures INTEGER NOT NULL DEFAULT 0,
  next_attempt_at TEXT,
  last_error TEXT
);
INSERT OR IGNORE INTO uplink_state (id) VALUES (1);
"""


class UplinkStateError(NixcomplyError):
    """The uplink's state cannot be read (or the host is not enrolled where it must be)."""


@dataclass(frozen=True)
class Enrollment:
    server: str
    site: str
    hostname: str
    keyid: str
    witness_key: str
    enrolled_at: datetime


@dataclass(frozen=True)
class Progress:
    counter: int
    accepted_size: int
    acknowledged_at: datetime | None
    last_attempt_at: datetime | None
    failures: int
    next_attempt_at: datetime | None
    last_error: str | None


def backoff(
    failures: int, *, base: float = BASE_DELAY, cap: float = MAX_DELAY, rng: random.Random | None = None
) -> float:
    """Seconds to wait after the ``failures``-th consecutive failure (>= 1)."""
    ceiling = min(cap, base * 2.0 ** min(failures - 1, 62))
    factor: float = (rng or random.Random()).uniform(0.5, 1.0)  # noqa: S311 - jitter, not a secret
    return factor * ceiling


class UplinkState:
    def __init__(self, db: sqlite3.Connection, state_dir: Path) -> None:
        self._db = db
        self.state_dir = state_dir

    @classmethod
    def open(cls, state_dir: Path) -> UplinkState:
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = state_dir / "state.db"
        try:
            db = sqlite.connect(path)
        except sqlite3.OperationalError as e:
            raise sqlite.refused(e, path, what=WHAT) from None
        except sqlite3.Error as e:
            raise UplinkStateError(f"{path}: {e}") from None
        state = cls(db, state_dir)
        try:
            with state._write():
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        db.execute(statement)
        except BaseException:
            db.close()
            raise
        return state

    @property
    def path(self) -> Path:
        return self.state_dir / "state.db"

    def _write(self) -> AbstractContextManager[None]:
        return sqlite.transaction(self._db, self.path, what=WHAT)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> UplinkState:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- the transport key ---------------------------------------------------------------

    def transport_key(self, *, create: bool = False) -> Ed25519PrivateKey:
        path = self.state_dir / TRANSPORT_KEY
        if not path.exists():
            if not create:
                raise UplinkStateError(f"{path}: no transport key; run `nixcomply enroll` first")
            signer: Signer = generate("nixcomply-transport")
            write_private_key(path, signer)
            return signer.private_key
        return read_private_key(path).private_key

    # -- enrollment ----------------------------------------------------------------------

    def enrollment(self) -> Enrollment | None:
        row = self._db.execute(
            "SELECT server, site, hostname, keyid, witness_key, enrolled_at FROM uplink_enrollment"
        ).fetchone()
        if row is None:
            return None
        return Enrollment(row[0], row[1], row[2], row[3], row[4], datetime.fromisoformat(row[5]))

    def set_enrollment(self, e: Enrollment) -> None:
        with self._write():
            self._db.execute(
                "INSERT OR REPLACE INTO uplink_enrollment VALUES (1, ?, ?, ?, ?, ?, ?)",
                (e.server, e.site, e.hostname, e.keyid, e.witness_key, sqlite.timestamp(e.enrolled_at)),
            )
            self._db.execute(
                "UPDATE uplink_state SET accepted_size = 0, failures = 0, next_attempt_at = NULL, last_error = NULL"
            )

    # -- requests ------------------------------------------------------------------------

    def next_counter(self) -> int:
        """The next request counter: above every one used, and above the clock in
        microseconds, so a lost database still never repeats a counter."""
        with self._write():
            (last,) = self._db.execute("SELECT counter FROM uplink_state").fetchone()
            value = max(int(last) + 1, time.time_ns() // 1000)
            self._db.execute("UPDATE uplink_state SET counter = ?", (value,))
        return value

    def progress(self) -> Progress:
        row = self._db.execute(
            "SELECT counter, accepted_size, acknowledged_at, last_attempt_at, failures, next_attempt_at, last_error "
            "FROM uplink_state"
        ).fetchone()
        return Progress(
            row[0],
            row[1],
            sqlite.parse_timestamp(row[2]),
            sqlite.parse_timestamp(row[3]),
            row[4],
            sqlite.parse_timestamp(row[5]),
            row[6],
        )

    def acknowledged(self, size: int, now: datetime) -> None:
        with self._write():
            self._db.execute(
                "UPDATE uplink_state SET accepted_size = ?, acknowledged_at = ?",
                (size, sqlite.timestamp(now)),
            )

    def succeeded(self, now: datetime) -> None:
        with self._write():
            self._db.execute(
                "UPDATE uplink_state SET last_attempt_at = ?, failures = 0, next_attempt_at = NULL, last_error = NULL",
                (sqlite.timestamp(now),),
            )

    def failed(
        self, now: datetime, error: str, *, rng: random.Random | None = None, at_least: float = 0
    ) -> datetime:
        """Record a failed attempt; returns when the next one is due (after the backoff, and
        at least ``at_least`` seconds from now: a server's ``Retry-After``)."""
        with self._write():
            (failures,) = self._db.execute("SELECT failures FROM uplink_state").fetchone()
            failures = int(failures) + 1
            due = now + timedelta(seconds=max(backoff(failures, rng=rng), at_least))
            self._db.execute(
                "UPDATE uplink_state SET last_attempt_at = ?, failures = ?, next_attempt_at = ?, last_error = ?",
                (sqlite.timestamp(now), failures, sqlite.timestamp(due), error[:2000]),
            )
        return due
