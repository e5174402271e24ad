"""The SQLite state and the reconciler lock, with the real SQLite and real processes."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from conftest import Cli
from nixcomply.core.lock import StateLock
from nixcomply.errors import LockHeldError
from nixcomply.host.state import (
    SCHEMA_VERSION,
    AttemptOutcome,
    AttemptPhase,
    LastGood,
    Observation,
    State,
    StateError,
    now,
)


def test_runs_round_trip(tmp_path: Path) -> None:
    with State.open(tmp_path) as state:
        assert state.last_run() is None
        run = state.start_run("reconcile")
        assert state.last_run() is None  # unfinished runs are not "last"
        state.finish_run(run, "success", {"generation": 3})
        last = state.last_run()
        assert last is not None
        assert (last.id, last.kind, last.outcome, last.summary) == (
            run,
            "reconcile",
            "success",
            {"generation": 3},
        )
        assert last.finished_at is not None and last.finished_at >= last.started_at


def test_reverted_revision_is_blocked_until_reset(tmp_path: Path) -> None:
    rev = "a" * 40
    with State.open(tmp_path) as state:
        state.begin_attempt(rev, "/nix/store/x-nixos-system")
        attempt = state.attempt(rev)
        assert attempt is not None and attempt.interrupted and not attempt.blocked
        state.end_attempt(rev, AttemptOutcome.REVERTED, "sshd.service failed")
    with State.open(tmp_path) as state:  # survives reopening
        attempt = state.attempt(rev)
        assert attempt is not None and attempt.blocked and attempt.detail == "sshd.service failed"
        assert [a.revision for a in state.blocked_revisions()] == [rev]
        assert state.clear_attempts() == 1
        assert state.attempt(rev) is None


def test_attempt_count_increments(tmp_path: Path) -> None:
    rev = "b" * 40
    with State.open(tmp_path) as state:
        state.begin_attempt(rev, "/nix/store/1")
        state.set_phase(rev, AttemptPhase.GATING)
        state.begin_attempt(rev, "/nix/store/2")
        attempt = state.attempt(rev)
        assert attempt is not None
        assert (attempt.count, attempt.toplevel, attempt.phase) == (2, "/nix/store/2", "testing")


def test_an_interrupted_attempt_does_not_block_its_revision(tmp_path: Path) -> None:
    rev = "d" * 40
    with State.open(tmp_path) as state:
        assert state.begin_attempt(rev, "/nix/store/d").key == f"{rev}#1"
        state.set_phase(rev, AttemptPhase.UNDOING, detail="interrupted during testing")
        state.end_attempt(rev, AttemptOutcome.INTERRUPTED, "interrupted during testing")
        attempt = state.attempt(rev)
        assert attempt is not None and not attempt.blocked and not attempt.interrupted
        assert state.blocked_revisions() == [] and state.begin_attempt(rev, "/nix/store/d").key == f"{rev}#2"


def test_closing_an_attempt_stores_the_observation_in_the_same_transaction(tmp_path: Path) -> None:
    """12.3: a closed attempt beside an observation from before it would make the next cycle
    take nixcomply's own switch for someone else's."""
    rev = "e" * 40
    obs = Observation("/nix/store/e", "/nix/store/b", 5, rev, now())
    with State.open(tmp_path) as state:
        state.set_observation(Observation("/nix/store/b", "/nix/store/b", 4, "b" * 40, now()))
        state.begin_attempt(rev, "/nix/store/e")
        state.end_attempt(
            rev,
            AttemptOutcome.SUCCESS,
            "switched",
            observation=obs,
            last_good=LastGood(5, "/nix/store/e", rev),
        )
    with State.open(tmp_path) as state:
        assert state.observation() == obs
        good = state.last_good()
        assert good is not None and good["store_path"] == "/nix/store/e"
        # a failing write inside the transaction leaves both as they were
        state.begin_attempt(rev, "/nix/store/f")
        unserialisable: Any = object()
        with pytest.raises(TypeError):
            state.end_attempt(
                rev, AttemptOutcome.SUCCESS, "x", observation=obs, last_good=LastGood(6, unserialisable, rev)
            )
        attempt = state.attempt(rev)
        assert attempt is not None and attempt.interrupted and state.observation() == obs


def test_toplevels_observation_last_good(tmp_path: Path) -> None:
    with State.open(tmp_path) as state:
        assert state.toplevel_for("c" * 40) is None
        state.remember_toplevel("c" * 40, "/nix/store/c")
        assert state.toplevel_for("c" * 40) == "/nix/store/c"
        obs = Observation("/nix/store/c", "/nix/store/b", 4, "c" * 40, now())
        state.set_observation(obs)
        assert state.observation() == obs
        state.set_last_good(generation=4, store_path="/nix/store/c", revision="c" * 40)
        good = state.last_good()
        assert good is not None and good["generation"] == 4


def test_successful_heals_window_and_suppression_persist(tmp_path: Path) -> None:
    t0 = now()
    with State.open(tmp_path) as state:
        state.record_heal("service_health", "RB-SERVICE-001", "success", t0 - timedelta(minutes=130))
        state.record_heal("service_health", "RB-SERVICE-001", "failed", t0 - timedelta(minutes=10))
        state.record_heal("service_health", "RB-SERVICE-001", "success", t0 - timedelta(minutes=5))
        since = t0 - timedelta(minutes=120)
        assert state.successful_heals_since("service_health", "RB-SERVICE-001", since) == 1
        state.suppress("service_health:RB-SERVICE-001", "3 heals in 120 min")
    with State.open(tmp_path) as state:
        assert list(state.suppressed()) == ["service_health:RB-SERVICE-001"]
        assert state.heal_counts() == {"success": 2, "failed": 1}
        assert state.clear_suppressed() == 1
        assert state.suppressed() == {}


def test_wal_mode_and_schema_version(tmp_path: Path) -> None:
    State.open(tmp_path).close()
    db = sqlite3.connect(tmp_path / "state.db")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2
    db.execute("PRAGMA user_version=99")
    db.commit()
    db.close()
    with pytest.raises(StateError, match="newer nixcomply"):
        State.open(tmp_path)


def test_a_schema_1_database_gains_the_memo_and_keeps_its_attempts(tmp_path: Path) -> None:
    rev = "f" * 40
    with State.open(tmp_path) as state:
        state.begin_attempt(rev, "/nix/store/f")
    db = sqlite3.connect(tmp_path / "state.db")
    db.execute("DROP TABLE memo")
    db.execute("PRAGMA user_version=1")
    db.commit()
    db.close()
    with State.open(tmp_path) as state:
        assert state.attempt(rev) is not None
        assert state.recall("k", "s") is None
        state.memorise("k", "s", "v")
        assert state.recall("k", "s") == "v" and state.recall("k", "other") is None


def test_corrupt_database_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "state.db").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StateError, match="the state database is damaged"):
        State.open(tmp_path)


def damage_the_tables(state_dir: Path) -> None:
    """A database whose header is intact and whose table pages are not: it opens, and the
    damage shows at the first query that reads it (a disk that lost a write, a bad copy)."""
    with State.open(state_dir) as state:
        for n in range(200):
            state.record_heal("service_health", "RB-SERVICE-001", "success")
            state.set_cooldown(f"key-{n}", now() + timedelta(hours=1), 0)
    db = state_dir / "state.db"
    for leftover in (state_dir / "state.db-wal", state_dir / "state.db-shm"):
        assert not leftover.exists(), "closing the last connection checkpoints the WAL"
    data = bytearray(db.read_bytes())
    page = 4096
    assert len(data) > 4 * page
    data[2 * page :] = b"A" * (len(data) - 2 * page)
    db.write_bytes(bytes(data))


def test_damage_found_mid_run_names_the_database_not_a_bug(tmp_path: Path, cli: Cli) -> None:
    damage_the_tables(tmp_path / "state")
    with State.open(tmp_path / "state") as state, pytest.raises(StateError) as raised:
        state.heal_counts()
    assert str(raised.value).startswith(f"{tmp_path / 'state' / 'state.db'}: the state database is damaged")
    config = tmp_path / "reconciler.json"
    config.write_text(
        json.dumps(
            {
                "flake": "git+file:///nonexistent",
                "host": "h",
                "state_dir": str(tmp_path / "state"),
                "root": str(tmp_path),
                "systemd": {"enable": False},
            }
        )
    )
    r = cli("status", "--config", config)
    assert r.code == 1, r.err
    assert "the state database is damaged" in r.err and "internal error" not in r.err
    assert "move it aside" in r.err


def test_a_database_another_program_keeps_locked_is_try_again_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An sqlite3 shell left in a transaction: a bounded wait, then exit 75 naming the file,
    never a hang or "internal error"."""
    State.open(tmp_path).close()
    holder = sqlite3.connect(tmp_path / "state.db", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    monkeypatch.setattr("nixcomply.core.sqlite.BUSY_TIMEOUT", 0.2)
    try:
        with pytest.raises(LockHeldError, match="stayed locked by another connection") as raised:
            State.open(tmp_path)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert raised.value.exit_code == 75 and str(tmp_path / "state.db") in str(raised.value)


HOLDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from nixcomply.core.lock import StateLock
    lock = StateLock(Path(sys.argv[1]))
    lock.acquire()
    print("locked", flush=True)
    time.sleep(60)
    """
)


def test_second_reconciler_is_refused_and_lock_dies_with_holder(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(LockHeldError) as info:
            StateLock(tmp_path).acquire()
        assert f"pid {holder.pid}" in str(info.value)
        assert info.value.exit_code == 75
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    deadline = time.monotonic() + 5
    while True:  # the kernel releases the flock when the holder dies
        try:
            with StateLock(tmp_path):
                break
        except LockHeldError:
            assert time.monotonic() < deadline
            time.sleep(0.05)


def test_lock_is_reentrant_after_release(tmp_path: Path) -> None:
    lock = StateLock(tmp_path)
    with lock:
        assert "pid" in (tmp_path / "lock").read_text()
    with StateLock(tmp_path):
        pass
