"""SQLite as nixcomply keeps it on a host: one way to open a database and one way to write.

A connection is in autocommit mode (``isolation_level=None``) with WAL and
``synchronous=FULL``; every write is an explicit ``BEGIN IMMEDIATE`` transaction
(:func:`transaction`), so two writers never interleave and a crash leaves the last
committed state. What the machine refuses — a full disk, a read-only filesystem, a
database another program keeps locked past the busy timeout — is an error naming the file
(:func:`refused`), not an internal error. The host's state database (``host/state.py``) and
the uplink's tables in it (``uplink/state.py``) share this.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from nixcomply.errors import HostIOError, LockHeldError, NixcomplyError

# How long a statement waits for another connection's write transaction before giving up
# (read when a database is opened).
BUSY_TIMEOUT = 30.0


class DatabaseError(NixcomplyError):
    """Raised when a database cannot be used for a reason that is not the machine's (see
    :func:`refused`); the message names the file."""


def connect(path: Path) -> sqlite3.Connection:
    """Open ``path`` (created if missing) in autocommit mode, WAL, ``synchronous=FULL`` and
    foreign keys on, waiting up to :data:`BUSY_TIMEOUT` for another writer. Raises
    ``sqlite3`` errors: the caller names what it opened."""
    db = sqlite3.connect(path, timeout=BUSY_TIMEOUT, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA foreign_keys=ON")
    except BaseException:
        db.close()
        raise
    return db


@contextmanager
def transaction(
    db: sqlite3.Connection,
    path: Path,
    *,
    what: str = "the state database",
    other: type[NixcomplyError] = DatabaseError,
) -> Iterator[None]:
    """A ``BEGIN IMMEDIATE`` transaction, committed when the block ends and rolled back when
    it raises (inside another transaction: part of that one). A refusal by the machine is
    :func:`refused`'s error."""
    if db.in_transaction:
        yield
        return
    try:
        db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
    except sqlite3.OperationalError as e:
        raise refused(e, path, what=what, other=other) from None


def refused(
    e: sqlite3.OperationalError,
    path: Path,
    *,
    what: str = "the state database",
    other: type[NixcomplyError] = DatabaseError,
) -> NixcomplyError:
    """What an ``OperationalError`` means for the person running nixcomply (``other``: the
    error for what is not the machine's doing, naming the file)."""
    code = getattr(e, "sqlite_errorcode", None)
    if code == sqlite3.SQLITE_FULL:
        return HostIOError(
            f"{path}: cannot write {what}: the disk is full",
            hint="free space on that filesystem and run again; nothing was lost",
        )
    if code == sqlite3.SQLITE_READONLY:
        return HostIOError(
            f"{path}: cannot write {what}: it is read-only (a read-only filesystem?)",
            hint="nixcomply needs to write its state directory",
        )
    if code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        return LockHeldError(
            f"{path}: {what} stayed locked by another connection for {BUSY_TIMEOUT:g} s",
            hint="another program holds it in a transaction (an sqlite3 shell?); close it and try again",
        )
    if code in (sqlite3.SQLITE_IOERR, sqlite3.SQLITE_CANTOPEN):
        return HostIOError(f"{path}: cannot write {what}: {e}")
    return other(f"{path}: {e}")


def timestamp(value: datetime) -> str:
    """A time as the databases store it: ISO 8601 in UTC, to the microsecond."""
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def parse_timestamp(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)
