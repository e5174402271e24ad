"""The reconciler's memory: SQLite in WAL mode under the state directory.

What must survive a crash or a reboot lives here: the runs and their outcomes, the attempts
per target revision (a revision that was reverted is not tried again until it changes or an
operator runs ``nixcomply reset``), the last known good generation, what the host looked like
at the end of the last cycle (to notice changes nixcomply did not make), the toplevel each
revision built to (so a no-op cycle needs no build), heal history for flap suppression, and
cooldowns. Every write is one transaction with ``synchronous=FULL``.
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import os
import sqlite3
import stat
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Final, TypeVar

from nixcomply.core import sqlite
from nixcomply.errors import HostIOError, LockHeldError, NixcomplyError
from nixcomply.evidence.log import LogHead

logger = logging.getLogger(__name__)

SCHEMA_VERSION: Final = 2
T = TypeVar("T")


class AttemptPhase(StrEnum):
    """Where an attempt at a revision is (the ``attempts.phase`` column). An attempt that is
    not ``done`` was interrupted; the next cycle settles it from what the host shows."""

    PREPARING = (
        "preparing"  # an activation nobody gated is undone before the test (nothing of the target runs)
    )
    TESTING = "testing"  # `nixos-rebuild test` runs or ran; the health gate has not passed
    GATING = "gating"  # the health gate runs
    SWITCHING = "switching"  # the gate passed; `nixos-rebuild switch` runs
    REVERTING = "reverting"  # the gate failed: the boot default is being re-activated (``detail`` says why)
    UNDOING = (
        "undoing"  # the attempt was interrupted before its gate passed: the boot default is re-activated
    )
    DONE = "done"  # the outcome is recorded in evidence


class AttemptOutcome(StrEnum):
    """How an attempt ended (the ``attempts.outcome`` column; NULL while it runs)."""

    SUCCESS = "success"  # tested, gated, switched
    REVERTED = "reverted"  # the gate failed; the boot default runs again
    FAILED = "failed"  # activation failed and could not be undone cleanly
    INTERRUPTED = "interrupted"  # a crash cut it short before its gate passed; undone, tried again

    @property
    def blocks(self) -> bool:
        """A reverted or failed revision is not retried until it changes or is reset; an
        interrupted one was never judged, so it is."""
        return self in (AttemptOutcome.REVERTED, AttemptOutcome.FAILED)


_BLOCKING: Final = tuple(o.value for o in AttemptOutcome if o.blocks)

_SCHEMA: Final = """
CREATE TABLE runs (
  id INTEGER PRIMARY KEY,
  started_at TEXT NOT NULL,
  finished_at TEXT,
  kind TEXT NOT NULL,
  outcome TEXT,
  summary TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE attempts (
  revision TEXT PRIMARY KEY,
  toplevel TEXT,
  phase TEXT NOT NULL,          -- AttemptPhase: testing, gating, switching, reverting, done
  outcome TEXT,                 -- AttemptOutcome: success, reverted, failed, interrupted (NULL while in progress)
  count INTEGER NOT NULL DEFAULT 0,
  updated_at TEXT NOT NULL,
  detail TEXT NOT NULL DEFAULT ''
);
CREATE TABLE toplevels (
  revision TEXT PRIMARY KEY,
  toplevel TEXT NOT NULL,
  recorded_at TEXT NOT NULL
);
CREATE TABLE meta (
  key TEXT PRIMARY KEY,
  value TEXT NOT NULL
);
CREATE TABLE heals (
  id INTEGER PRIMARY KEY,
  check_name TEXT NOT NULL,
  runbook TEXT NOT NULL,
  outcome TEXT NOT NULL,
  at TEXT NOT NULL
);
CREATE INDEX heals_by_key ON heals (check_name, runbook, at);
CREATE TABLE suppressed (
  key TEXT PRIMARY KEY,          -- check:runbook
  since TEXT NOT NULL,
  reason TEXT NOT NULL
);
CREATE TABLE cooldowns (
  key TEXT PRIMARY KEY,
  until TEXT NOT NULL,
  failures INTEGER NOT NULL DEFAULT 0
);
"""
# Schema 2: what a run may remember from the last (nixcomply.core.memo).
_MEMO: Final = """
CREATE TABLE memo (
  key TEXT PRIMARY KEY,          -- what: runbook:<path>, store:nixos-version:<path>, ...
  stamp TEXT NOT NULL,           -- the file's dev:ino:mtime:size, or 'immutable'
  value TEXT NOT NULL
);
"""
# version found -> statements that bring it to SCHEMA_VERSION
_MIGRATIONS: Final = {0: _SCHEMA + _MEMO, 1: _MEMO}


EVIDENCE_HEAD: Final = "evidence_head"


class StateError(NixcomplyError):
    """Raised when the state database cannot be opened or is from a newer nixcomply."""


def now() -> datetime:
    return datetime.now(UTC)


def _ts(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def _dt(text: str) -> datetime:
    return datetime.fromisoformat(text)


@dataclass(frozen=True)
class Run:
    id: int
    kind: str
    started_at: datetime
    finished_at: datetime | None
    outcome: str | None
    summary: dict[str, Any]


@dataclass(frozen=True)
class Attempt:
    """``count`` numbers the attempts at this revision: with the revision it names one
    attempt, which evidence carries so a crashed cycle's record is recognised."""

    revision: str
    toplevel: str | None
    phase: AttemptPhase
    outcome: AttemptOutcome | None
    count: int
    updated_at: datetime
    detail: str

    @property
    def blocked(self) -> bool:
        """A reverted or failed revision is not retried until it changes or is reset."""
        return self.outcome is not None and self.outcome.blocks

    @property
    def interrupted(self) -> bool:
        return self.outcome is None

    @property
    def key(self) -> str:
        return f"{self.revision}#{self.count}"


_ATTEMPT_COLUMNS: Final = "revision, toplevel, phase, outcome, count, updated_at, detail"


def _attempt(row: Any) -> Attempt:
    return Attempt(
        row[0],
        row[1],
        AttemptPhase(row[2]),
        None if row[3] is None else AttemptOutcome(row[3]),
        row[4],
        _dt(row[5]),
        row[6],
    )


@dataclass(frozen=True)
class LastGood:
    """The generation the host last switched to after a passed health gate."""

    generation: int | None
    store_path: str
    revision: str | None


@dataclass(frozen=True)
class Observation:
    """What the host looked like when nixcomply last looked."""

    current: str | None
    booted: str | None
    profile_generation: int | None
    revision: str | None
    at: datetime


class State:
    def __init__(self, db: sqlite3.Connection, path: Path) -> None:
        self._db = db
        self.path = path

    @classmethod
    def open(cls, state_dir: Path) -> State:
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = state_dir / "state.db"
        try:
            db = sqlite.connect(path)
            with _transaction(db, path):  # IMMEDIATE: two first openers cannot both create the schema
                version = db.execute("PRAGMA user_version").fetchone()[0]
                if version in _MIGRATIONS:
                    for statement in _MIGRATIONS[version].split(";"):
                        if statement.strip():
                            db.execute(statement)
                    db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            if version > SCHEMA_VERSION:
                raise StateError(
                    f"{path} was written by a newer nixcomply (schema {version}, this one knows {SCHEMA_VERSION})",
                    hint="upgrade nixcomply; do not delete the state database",
                )
        except sqlite3.OperationalError as e:
            refused = _refused(e, path)
            if isinstance(refused, HostIOError | LockHeldError):
                raise refused from None
            raise StateError(f"cannot open state database {path}: {e}") from None
        except sqlite3.DatabaseError as e:
            raise _damaged(e, path) from None
        return cls(db, path)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> State:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # runs -------------------------------------------------------------------------------

    def start_run(self, kind: str) -> int:
        with _transaction(self._db, self.path):
            cur = self._db.execute("INSERT INTO runs (started_at, kind) VALUES (?, ?)", (_ts(now()), kind))
        assert cur.lastrowid is not None
        return cur.lastrowid

    def finish_run(self, run_id: int, outcome: str, summary: dict[str, Any]) -> None:
        with _transaction(self._db, self.path):
            self._db.execute(
                "UPDATE runs SET finished_at = ?, outcome = ?, summary = ? WHERE id = ?",
                (_ts(now()), outcome, json.dumps(summary, sort_keys=True, default=str), run_id),
            )

    def last_run(self, *, finished: bool = True) -> Run | None:
        where = "WHERE finished_at IS NOT NULL" if finished else ""
        row = self._db.execute(
            f"SELECT id, kind, started_at, finished_at, outcome, summary FROM runs {where} ORDER BY id DESC LIMIT 1"  # noqa: S608
        ).fetchone()
        if row is None:
            return None
        return Run(row[0], row[1], _dt(row[2]), _dt(row[3]) if row[3] else None, row[4], json.loads(row[5]))

    # attempts per target revision ----------------------------------------------------------

    def attempt(self, revision: str) -> Attempt | None:
        row = self._db.execute(
            f"SELECT {_ATTEMPT_COLUMNS} FROM attempts WHERE revision = ?",  # noqa: S608
            (revision,),
        ).fetchone()
        return None if row is None else _attempt(row)

    def begin_attempt(
        self, revision: str, toplevel: str, *, phase: AttemptPhase = AttemptPhase.TESTING
    ) -> Attempt:
        """Open an attempt right before it changes anything (``testing``: its test activation;
        ``preparing``: undoing an activation nobody gated first)."""
        with _transaction(self._db, self.path):
            self._db.execute(
                "INSERT INTO attempts (revision, toplevel, phase, outcome, count, updated_at) "
                "VALUES (?, ?, ?, NULL, 1, ?) "
                "ON CONFLICT (revision) DO UPDATE SET toplevel = excluded.toplevel, phase = excluded.phase, "
                "outcome = NULL, count = count + 1, updated_at = excluded.updated_at, detail = ''",
                (revision, toplevel, phase.value, _ts(now())),
            )
            attempt = self.attempt(revision)
        assert attempt is not None
        return attempt

    def set_phase(self, revision: str, phase: AttemptPhase, detail: str | None = None) -> None:
        """Move an open attempt on; ``detail`` (why it reverts) replaces the recorded one."""
        with _transaction(self._db, self.path):
            self._db.execute(
                "UPDATE attempts SET phase = ?, detail = coalesce(?, detail), updated_at = ? WHERE revision = ?",
                (phase.value, detail, _ts(now()), revision),
            )

    def end_attempt(
        self,
        revision: str,
        outcome: AttemptOutcome,
        detail: str = "",
        *,
        observation: Observation | None = None,
        last_good: LastGood | None = None,
    ) -> None:
        """Close an attempt once its outcome is in evidence; with ``observation`` (what the
        host looks like now) and ``last_good``, in the same transaction, so a crash can never
        leave a closed attempt beside an observation from before it (the next cycle would
        take nixcomply's own switch for someone else's)."""
        with _transaction(self._db, self.path):
            self._db.execute(
                "UPDATE attempts SET phase = ?, outcome = ?, detail = ?, updated_at = ? WHERE revision = ?",
                (AttemptPhase.DONE.value, outcome.value, detail, _ts(now()), revision),
            )
            if observation is not None:
                self.set_observation(observation)
            if last_good is not None:
                self.set_last_good(
                    generation=last_good.generation,
                    store_path=last_good.store_path,
                    revision=last_good.revision,
                )

    def in_progress(self) -> list[Attempt]:
        """Attempts that never reached an outcome: nixcomply was interrupted during them."""
        rows = self._db.execute(
            f"SELECT {_ATTEMPT_COLUMNS} FROM attempts WHERE outcome IS NULL ORDER BY updated_at"  # noqa: S608
        ).fetchall()
        return [_attempt(r) for r in rows]

    def blocked_revisions(self) -> list[Attempt]:
        marks = ", ".join("?" for _ in _BLOCKING)
        rows = self._db.execute(
            f"SELECT {_ATTEMPT_COLUMNS} FROM attempts WHERE outcome IN ({marks}) ORDER BY updated_at",  # noqa: S608
            _BLOCKING,
        ).fetchall()
        return [_attempt(r) for r in rows]

    def clear_attempts(self, revision: str | None = None) -> int:
        with _transaction(self._db, self.path):
            if revision is None:
                marks = ", ".join("?" for _ in _BLOCKING)
                cur = self._db.execute(f"DELETE FROM attempts WHERE outcome IN ({marks})", _BLOCKING)  # noqa: S608
            else:
                cur = self._db.execute("DELETE FROM attempts WHERE revision = ?", (revision,))
        return cur.rowcount

    # toplevel each revision built to (a no-op cycle needs no build) --------------------------

    def remember_toplevel(self, revision: str, toplevel: str) -> None:
        with _transaction(self._db, self.path):
            self._db.execute(
                "INSERT INTO toplevels (revision, toplevel, recorded_at) VALUES (?, ?, ?) "
                "ON CONFLICT (revision) DO UPDATE SET toplevel = excluded.toplevel, recorded_at = excluded.recorded_at",
                (revision, toplevel, _ts(now())),
            )

    def toplevel_for(self, revision: str) -> str | None:
        row = self._db.execute("SELECT toplevel FROM toplevels WHERE revision = ?", (revision,)).fetchone()
        return None if row is None else str(row[0])

    # small named values -----------------------------------------------------------------------

    def _get(self, key: str) -> Any:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def _set(self, key: str, value: Any) -> None:
        with _transaction(self._db, self.path):
            self._db.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, json.dumps(value, sort_keys=True)),
            )

    def set_last_good(self, *, generation: int | None, store_path: str, revision: str | None) -> None:
        self._set(
            "last_good",
            {"generation": generation, "store_path": store_path, "revision": revision, "at": _ts(now())},
        )

    def last_good(self) -> dict[str, Any] | None:
        value = self._get("last_good")
        return value if isinstance(value, dict) else None

    def set_observation(self, obs: Observation) -> None:
        self._set(
            "observation",
            {
                "current": obs.current,
                "booted": obs.booted,
                "profile_generation": obs.profile_generation,
                "revision": obs.revision,
                "at": _ts(obs.at),
            },
        )

    def observation(self) -> Observation | None:
        v = self._get("observation")
        if not isinstance(v, dict):
            return None
        return Observation(v["current"], v["booted"], v["profile_generation"], v["revision"], _dt(v["at"]))

    def evidence_head(self) -> LogHead | None:
        """The evidence log's size (and checkpoint) after the newest append it recorded."""
        value = self._get(EVIDENCE_HEAD)
        return None if value is None else LogHead.from_json(value)

    def record_evidence_head(self, head: LogHead) -> None:
        """Record how far the evidence log reached; never backwards (``evidence verify``
        fails a log shorter than this, and the store refuses to append to one)."""
        with _transaction(self._db, self.path):
            current = self.evidence_head()
            if current is None or head.size >= current.size:
                self._set(EVIDENCE_HEAD, head.to_json())

    def set_value(self, key: str, value: Any) -> None:
        self._set(f"value:{key}", value)

    def value(self, key: str) -> Any:
        return self._get(f"value:{key}")

    # what a run remembers from the last (nixcomply.core.memo.Memo) ---------------------------

    def recall(self, key: str, stamp: str) -> str | None:
        row = self._db.execute("SELECT stamp, value FROM memo WHERE key = ?", (key,)).fetchone()
        return str(row[1]) if row is not None and row[0] == stamp else None

    def memorise(self, key: str, stamp: str, value: str) -> None:
        """Remember ``value``; a full disk only costs the memory (it is computed again)."""
        try:
            with _transaction(self._db, self.path):
                self._db.execute(
                    "INSERT INTO memo (key, stamp, value) VALUES (?, ?, ?) "
                    "ON CONFLICT (key) DO UPDATE SET stamp = excluded.stamp, value = excluded.value",
                    (key, stamp, value),
                )
        except HostIOError as e:
            logger.warning("not remembering %s: %s", key, e)

    # heals, flap suppression, cooldowns ---------------------------------------------------------

    def record_heal(self, check: str, runbook: str, outcome: str, at: datetime | None = None) -> None:
        with _transaction(self._db, self.path):
            self._db.execute(
                "INSERT INTO heals (check_name, runbook, outcome, at) VALUES (?, ?, ?, ?)",
                (check, runbook, outcome, _ts(at or now())),
            )

    def successful_heals_since(self, check: str, runbook: str, since: datetime) -> int:
        row = self._db.execute(
            "SELECT count(*) FROM heals WHERE check_name = ? AND runbook = ? AND outcome = 'success' AND at >= ?",
            (check, runbook, _ts(since)),
        ).fetchone()
        return int(row[0])

    def heal_counts(self) -> dict[str, int]:
        rows = self._db.execute("SELECT outcome, count(*) FROM heals GROUP BY outcome").fetchall()
        return {str(r[0]): int(r[1]) for r in rows}

    def suppress(self, key: str, reason: str, at: datetime | None = None) -> None:
        with _transaction(self._db, self.path):
            self._db.execute(
                "INSERT INTO suppressed (key, since, reason) VALUES (?, ?, ?) ON CONFLICT (key) DO NOTHING",
                (key, _ts(at or now()), reason),
            )

    def suppressed(self) -> dict[str, tuple[datetime, str]]:
        rows = self._db.execute("SELECT key, since, reason FROM suppressed ORDER BY key").fetchall()
        return {r[0]: (_dt(r[1]), r[2]) for r in rows}

    def clear_suppressed(self, key: str | None = None) -> int:
        with _transaction(self._db, self.path):
            if key is None:
                cur = self._db.execute("DELETE FROM suppressed")
            else:
                cur = self._db.execute("DELETE FROM suppressed WHERE key = ?", (key,))
        return cur.rowcount

    def cooldown(self, key: str) -> tuple[datetime, int] | None:
        row = self._db.execute("SELECT until, failures FROM cooldowns WHERE key = ?", (key,)).fetchone()
        return None if row is None else (_dt(row[0]), int(row[1]))

    def set_cooldown(self, key: str, until: datetime, failures: int) -> None:
        with _transaction(self._db, self.path):
            self._db.execute(
                "INSERT INTO cooldowns (key, until, failures) VALUES (?, ?, ?) "
                "ON CONFLICT (key) DO UPDATE SET until = excluded.until, failures = excluded.failures",
                (key, _ts(until), failures),
            )

    def clear_cooldowns(self) -> int:
        with _transaction(self._db, self.path):
            return self._db.execute("DELETE FROM cooldowns").rowcount


def _names_damage(method: Callable[..., T]) -> Callable[..., T]:
    """A damaged database (malformed pages) shows itself at the first query that reads the
    damage, anywhere in a cycle: each :class:`State` method names the file and what to do,
    instead of an internal error. What the machine refused (:func:`_refused`) stays that."""

    @functools.wraps(method)
    def named(self: State, *args: Any, **kwargs: Any) -> T:
        try:
            return method(self, *args, **kwargs)
        except sqlite3.OperationalError as e:
            raise _refused(e, self.path) from None
        except sqlite3.DatabaseError as e:
            raise _damaged(e, self.path) from None

    return named


for _name, _member in list(vars(State).items()):
    if inspect.isfunction(_member) and not _name.startswith("__"):
        setattr(State, _name, _names_damage(_member))


def _damaged(e: sqlite3.DatabaseError, path: Path) -> StateError:
    return StateError(
        f"{path}: the state database is damaged ({e})",
        hint="restore it from a backup, or move it aside and run again: a new one is started and "
        "interrupted work is settled from what the host shows (the evidence log still verifies "
        "against its own checkpoints)",
    )


class EvidenceHead:
    """The evidence store's record of its size in the state database (``EvidenceStore.open(
    head=...)``): a connection per call, so whichever thread appends may record."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir

    def evidence_head(self) -> LogHead | None:
        with State.open(self.state_dir) as state:
            return state.evidence_head()

    def record_evidence_head(self, head: LogHead) -> None:
        with State.open(self.state_dir) as state:
            state.record_evidence_head(head)


def read_evidence_head(state_dir: Path) -> LogHead | None:
    """The recorded evidence head of ``state_dir/state.db``, read without writing anything
    (an auditor may verify a copy they cannot write); None without a database or record."""
    path = state_dir / "state.db"
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(st.st_mode):
        # A symbolic link, FIFO or device put in its place hides the record (or hangs the
        # reader): that is tampering with what verification compares against, not "none".
        raise StateError(
            f"{path}: not a regular file (a symbolic link, FIFO or device): the host's record cannot be read"
        )
    for mode in ("ro", "ro&immutable=1"):
        try:
            db = sqlite3.connect(f"file:{path}?mode={mode}", uri=True)
        except sqlite3.Error:
            continue
        try:
            # A database the host's State never opened (the uplink's tables alone) has no
            # meta table: no record, not an error.
            if (
                db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'").fetchone()
                is None
            ):
                return None
            row = db.execute("SELECT value FROM meta WHERE key = ?", (EVIDENCE_HEAD,)).fetchone()
        except sqlite3.Error:
            continue
        finally:
            db.close()
        try:
            return None if row is None else LogHead.from_json(json.loads(row[0]))
        except ValueError as e:
            raise StateError(f"{path}: the recorded evidence head is malformed: {e}") from None
    raise StateError(f"cannot read {path}", hint="is it a nixcomply state database?")


def _transaction(db: sqlite3.Connection, path: Path) -> AbstractContextManager[None]:
    """An explicit transaction (the connection is in autocommit mode otherwise). The
    machine refusing the write (a full disk, a read-only filesystem, a lock held past the
    busy timeout) is an error naming the database (``nixcomply.core.sqlite``)."""
    return sqlite.transaction(db, path, other=StateError)


def _refused(e: sqlite3.OperationalError, path: Path) -> NixcomplyError:
    return sqlite.refused(e, path, other=StateError)
