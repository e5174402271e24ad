"""The host's uplink: enrollment, upload passes from the log's own unacknowledged suffix,
backoff persisted in the state database, lag, and the `nixcomply enroll|upload` verbs,
against the real server over real HTTP."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import random
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
import zipfile
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fixtures_evidence import Keys, fill, make_keys, open_store, pinned_copy, write_keyring
from fixtures_server import Served, serve
from sqlalchemy import func, select

from nixcomply.core import sqlite as core_sqlite
from nixcomply.errors import LockHeldError, UsageError
from nixcomply.evidence.checkpoint import parse_note
from nixcomply.evidence.cosignature import (
    WitnessPublicKey,
    generate_witness,
    parse_cosignatures,
    verify_cosignature,
)
from nixcomply.model.fleet import ErrorBody, ErrorCode
from nixcomply.server.db.tables import entries, hosts
from nixcomply.uplink import run
from nixcomply.uplink.client import Client, ServerUnreachable, UplinkError
from nixcomply.uplink.state import MAX_DELAY, Enrollment, UplinkState, backoff


@pytest.fixture
def host_store(tmp_path: Path) -> tuple[Path, Keys]:
    root = tmp_path / "state"
    keys = make_keys()
    with open_store(root, keys) as store:
        fill(store, 5)
    write_keyring(root, keys)
    return root, keys


def enroll(fleet: Served, root: Path, name: str = "clinic-01") -> Enrollment:
    return run.enroll(
        root,
        server=fleet.url,
        token=fleet.invite("north", name),
        hostname=name,
        machine_id="ab" * 16,
        origin="clinic-01.example/evidence-log",
    )


def server_entries(fleet: Served) -> int:
    with fleet.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(entries)).scalar_one())


def test_backoff_grows_with_jitter_up_to_a_cap() -> None:
    rng = random.Random(1)
    waits = [backoff(n, rng=rng) for n in range(1, 12)]
    assert 15 <= waits[0] <= 30
    assert 30 <= waits[1] <= 60
    assert all(w <= MAX_DELAY for w in waits)
    assert waits[-1] >= MAX_DELAY / 2
    assert len({round(w, 6) for w in waits}) == len(waits)  # jittered


def test_counter_and_backoff_survive_a_restart(tmp_path: Path) -> None:
    with UplinkState.open(tmp_path) as state:
        first = state.next_counter()
        assert state.next_counter() > first
        now = datetime(2026, 3, 1, tzinfo=UTC)
        due = state.failed(now, "server down")
        state.failed(now, "server down")
    with UplinkState.open(tmp_path) as state:
        assert state.next_counter() > first + 1
        progress = state.progress()
        assert progress.failures == 2
        assert progress.next_attempt_at is not None and progress.next_attempt_at > due - timedelta(seconds=1)
        assert progress.last_error == "server down"
        state.succeeded(now)
        assert state.progress().failures == 0
        assert state.progress().next_attempt_at is None


def test_enroll_then_upload_keeps_cosignatures(fleet: Served, host_store: tuple[Path, Keys]) -> None:
    root, _keys = host_store
    enrollment = enroll(fleet, root)
    assert enrollment.witness_key == fleet.witness.public.vkey
    assert (root / "uplink" / "transport.key").stat().st_mode & 0o777 == 0o600
    report = run.upload(root)
    assert (report.outcome, report.sent, report.accepted_size) == ("uploaded", 5, 5)
    assert report.cosigned == [5]
    cos = (root / "log" / "cosignatures" / "000000000005").read_text()
    note = (root / "log" / "checkpoints" / "000000000005").read_bytes()
    verify_cosignature(
        parse_note(note).text, parse_cosignatures(cos), WitnessPublicKey.from_vkey(enrollment.witness_key)
    )
    again = run.upload(root)
    assert (again.outcome, again.sent) == ("up-to-date", 0)
    lag = run.lag(root)
    assert lag is not None and lag.entries == 0
    assert server_entries(fleet) == 5


def test_enrolling_twice_is_refused(fleet: Served, host_store: tuple[Path, Keys]) -> None:

    root, _ = host_store
    enroll(fleet, root)
    with pytest.raises(UsageError, match="already enrolled"):
        enroll(fleet, root)


def test_server_down_for_cycles_then_up_everything_arrives_once_in_order(
    fleet: Served, host_store: tuple[Path, Keys]
) -> None:
    root, keys = host_store
    enroll(fleet, root)
    assert run.upload(root).outcome == "uploaded"
    port = fleet.port
    fleet.stop()
    clock = [datetime.now(UTC)]
    for _cycle in range(4):  # four reconcile cycles while the server is down
        with open_store(root, keys) as store:
            fill(store, 2)
        report = run.upload(root, force=True, now=lambda: clock[0])
        assert report.outcome == "failed", report
        assert report.next_attempt_at is not None
        clock[0] += timedelta(seconds=1)
        assert run.upload(root, now=lambda: clock[0]).outcome == "waiting"
    progress = UplinkState.open(root).progress()
    assert progress.failures == 4
    lag = run.lag(root)
    assert lag is not None and (lag.entries, lag.local_size) == (8, 13)
    back = serve(fleet.config, fleet.engine, fleet.witness, port=port)
    try:
        due = progress.next_attempt_at
        assert due is not None
        report = run.upload(root, now=lambda: due + timedelta(seconds=1))
        assert (report.outcome, report.sent, report.accepted_size) == ("uploaded", 8, 13)
        with back.engine.connect() as conn:
            seqs = [
                r[0]
                for r in conn.execute(select(entries.c.seq).order_by(entries.c.received_at, entries.c.seq))
            ]
        assert seqs == list(range(13))
        assert UplinkState.open(root).progress().failures == 0
    finally:
        back.stop()


def test_a_refusal_is_recorded_and_retried_later(fleet: Served, host_store: tuple[Path, Keys]) -> None:
    root, _ = host_store
    enroll(fleet, root)
    with fleet.engine.begin() as conn:
        conn.execute(hosts.update().values(revoked_at=func.now()))
    report = run.upload(root)
    assert (report.outcome, report.code) == ("failed", "revoked")
    assert UplinkState.open(root).progress().last_error is not None
    assert server_entries(fleet) == 0


def test_not_enrolled_does_nothing(tmp_path: Path) -> None:
    assert run.upload(tmp_path).outcome == "not-enrolled"
    assert run.lag(tmp_path) is None


def test_lag_counts_entries_and_the_age_of_the_oldest(fleet: Served, host_store: tuple[Path, Keys]) -> None:
    root, keys = host_store
    enroll(fleet, root)
    run.upload(root)
    with open_store(root, keys) as store:
        fill(store, 3)
    lag = run.lag(root)
    assert lag is not None
    assert (lag.entries, lag.accepted_size, lag.local_size) == (3, 5, 8)
    assert lag.oldest_unsent is not None
    assert lag.age_seconds(lag.oldest_unsent + timedelta(minutes=5)) == 300


@pytest.fixture
def reconciler_config(host_store: tuple[Path, Keys], tmp_path: Path) -> Path:
    root, _ = host_store
    path = tmp_path / "reconciler.json"
    origin = {"origin": "clinic-01.example/evidence-log"}
    config = {
        "flake": "git+file:///srv/fleet",
        "host": "clinic-01",
        "state_dir": str(root),
        "evidence": origin,
    }
    path.write_text(json.dumps(config))
    return path


def test_enroll_and_upload_verbs(fleet: Served, reconciler_config: Path, cli: object) -> None:
    assert callable(cli)
    token = fleet.invite("north", "clinic-01")
    r = cli("enroll", "--config", reconciler_config, "--server", fleet.url, "--token", token)
    assert r.code == 0, r.err
    assert "enrolled as north/clinic-01" in r.out
    r = cli("upload", "--config", reconciler_config, "--json")
    assert r.code == 0, r.err
    assert json.loads(r.out)["accepted_size"] == 5
    r = cli("enroll", "--config", reconciler_config, "--server", fleet.url, "--token", token)
    assert r.code == 2
    assert "already enrolled" in r.err


def test_verify_witness_requires_the_servers_cosignature_on_the_newest_checkpoint(
    fleet: Served, host_store: tuple[Path, Keys], tmp_path: Path, cli: Any
) -> None:
    root, keys = host_store
    vkey = fleet.witness.public.vkey
    enroll(fleet, root)
    ring = pinned_copy(root)
    r = cli("evidence", "verify", root, "--witness", vkey, "--keyring", ring)
    assert r.code == 1, "nothing was cosigned yet"
    assert "not cosigned by a witness" in r.out
    run.upload(root)
    r = cli("evidence", "verify", root, "--witness", vkey, "--keyring", ring)
    assert r.code == 0, r.out
    other = generate_witness("msp.example/witness").public.vkey
    r = cli("evidence", "verify", root, "--witness", other, "--keyring", ring)
    assert r.code == 1
    assert "not cosigned by witness msp.example/witness" in r.out
    # a newer entry that the server has not cosigned yet
    with open_store(root, keys) as store:
        fill(store, 1)
    assert cli("evidence", "verify", root, "--witness", vkey, "--keyring", ring).code == 1
    run.upload(root)
    assert cli("evidence", "verify", root, "--witness", vkey, "--keyring", ring).code == 0
    # the packet carries the cosignatures and the witness key the host enrolled with
    packet = tmp_path / "packet.zip"
    r = cli(
        "evidence", "export", "--state-dir", root, "--from", "2026-01-01", "--to", "2026-12-31", "-o", packet
    )
    assert r.code == 0, r.err
    with zipfile.ZipFile(packet) as zf:
        names = set(zf.namelist())
        assert zf.read("witness.vkey").decode().strip() == vkey
    assert "log/cosignatures/000000000006" in names
    key_file = tmp_path / "witness.vkey"
    key_file.write_text(vkey + "\n")
    r = cli("evidence", "verify", packet, "--witness", key_file, "--keyring", ring)
    assert r.code == 0, r.out
    r = cli("evidence", "verify", packet, "--witness", other, "--keyring", ring)
    assert r.code == 1
    r = cli("evidence", "verify", packet, "--witness", "not-a-key")
    assert r.code == 2


def test_enroll_errors_are_clear(
    fleet: Served, reconciler_config: Path, cli: Any, host_store: tuple[Path, Keys]
) -> None:
    r = cli("enroll", "--config", reconciler_config, "--server", "not-a-url", "--token", "x" * 20)
    assert (r.code, "is not an http(s) URL" in r.err) == (2, True), r.err
    r = cli("enroll", "--config", reconciler_config, "--server", "http://127.0.0.1:1", "--token", "x" * 20)
    assert r.code == 1
    assert "127.0.0.1:1" in r.err
    r = cli("enroll", "--config", reconciler_config, "--server", fleet.url, "--token", "x" * 20)
    assert r.code == 1
    assert "invalid-token" in r.err
    assert "Traceback" not in r.err
    root, _ = host_store
    assert run.upload(root).outcome == "not-enrolled", "a refused enrollment enrolls nothing"


def test_a_cosignature_that_does_not_verify_by_the_enrolled_witness_is_never_kept(
    fleet: Served, host_store: tuple[Path, Keys], cli: Any
) -> None:
    """The host kept whatever cosignature the server answered: one by another key (a server
    whose witness key changed, or whoever answers in its name) was written beside the
    checkpoint, unchecked."""
    root, _keys = host_store
    enroll(fleet, root)
    impostor = generate_witness("msp.example/witness").public.vkey  # same name, another key
    with sqlite3.connect(root / "state.db") as db:
        db.execute("UPDATE uplink_enrollment SET witness_key = ?", (impostor,))
    report = run.upload(root)
    assert report.outcome == "failed", report
    assert "cosignature of checkpoint 5 is not valid" in (report.error or "")
    assert not (root / "log" / "cosignatures").exists() or not any((root / "log" / "cosignatures").iterdir())
    # the entries did arrive; once the host trusts the right key again it keeps the cosignature
    with sqlite3.connect(root / "state.db") as db:
        db.execute("UPDATE uplink_enrollment SET witness_key = ?", (fleet.witness.public.vkey,))
    assert run.upload(root, force=True).outcome == "up-to-date"
    assert (root / "log" / "cosignatures" / "000000000005").is_file()
    ring = pinned_copy(root)
    assert (
        cli("evidence", "verify", root, "--keyring", ring, "--witness", fleet.witness.public.vkey).code == 0
    )


def test_a_locked_state_database_is_a_clear_error_not_an_internal_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The uplink's writes after opening raised sqlite3.OperationalError ('database is
    locked', an internal error) when another program held the state database; the uplink now
    writes through core/sqlite.py like the host's state."""
    monkeypatch.setattr(core_sqlite, "BUSY_TIMEOUT", 0.05)
    state = UplinkState.open(tmp_path)
    other = sqlite3.connect(tmp_path / "state.db", isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        with pytest.raises(LockHeldError, match=r"state\.db: the uplink's state stayed locked"):
            state.failed(datetime.now(UTC), "server down")
        with pytest.raises(LockHeldError):
            UplinkState.open(tmp_path)
        other.execute("ROLLBACK")
        state.failed(datetime.now(UTC), "server down")
        assert state.progress().failures == 1
    finally:
        other.close()
        state.close()


def test_the_servers_error_message_is_bounded_and_escaped() -> None:
    """A server's error message went as it was into logs, the state database and `nixcomply
    status`: escape sequences for the host operator's terminal, any length."""
    hostile = ErrorBody(code=ErrorCode.INVALID, message="\x1b]0;owned\x07\u202e" + "x" * 100_000)
    e = UplinkError(422, hostile)
    assert str(e).isprintable()
    assert "\\x1b]0;owned\\x07\\u202e" in str(e)
    assert len(str(e)) < 1000


@pytest.mark.parametrize("kind", ["fifo", "symlink"])
def test_a_fifo_or_link_planted_among_attachments_never_blocks_or_leaks(
    fleet: Served, host_store: tuple[Path, Keys], tmp_path: Path, kind: str
) -> None:
    """The outbox read attachments with read_bytes: a FIFO blocked the upload (and with it the
    end of every reconcile run) for ever, a symbolic link sent whatever it named (here a
    file outside the store) to the server."""
    root, _keys = host_store
    enroll(fleet, root)
    bundle = next(b for b in sorted(root.glob("evidence/*/*/*/*")) if (b / "attachments").is_dir())
    planted = bundle / "attachments" / "planted.txt"
    secret = tmp_path / "secret.txt"
    secret.write_text("not evidence\n")
    if kind == "fifo":
        os.mkfifo(planted)
    else:
        planted.symlink_to(secret)
    code = (
        "import sys; from pathlib import Path; from nixcomply.uplink import run; "
        "r = run.upload(Path(sys.argv[1])); print(r.outcome); print(r.error)"
    )
    child = subprocess.run(
        [sys.executable, "-c", code, str(root)], capture_output=True, text=True, timeout=120, check=False
    )
    outcome, error = child.stdout.splitlines()[:2]
    assert outcome == "failed", child.stdout + child.stderr
    assert str(planted) in error
    assert "not a regular file" in error or "symbolic link" in error
    assert server_entries(fleet) <= int(bundle.name.split("-")[1])


def test_a_server_holding_more_than_the_host_is_loud_not_acknowledged(
    fleet: Served, host_store: tuple[Path, Keys], tmp_path: Path
) -> None:
    """The host's store put back to an older copy: the server said it held 5, the host has 3,
    and the uplink recorded 5 as accepted (an upload lag below zero, nothing said)."""
    root, _keys = host_store
    backup = tmp_path / "backup"
    shutil.copytree(root, backup)
    enroll(fleet, root)
    assert run.upload(root).outcome == "uploaded"
    for part in ("evidence", "log"):  # the evidence rolled back; the uplink state kept
        shutil.rmtree(root / part)
        shutil.copytree(backup / part, root / part)
    leaves = (root / "log" / "leaves").read_bytes()
    (root / "log" / "leaves").write_bytes(leaves[: 3 * 32])
    report = run.upload(root, force=True)
    assert report.outcome == "failed", report
    assert "the server holds 5 entries of this host's log, the log here has 3" in (report.error or "")
    assert UplinkState.open(root).progress().accepted_size == 5  # from the last real acknowledgement


@contextlib.contextmanager
def hostile_server(answer: Callable[[socket.socket, threading.Event], None]) -> Iterator[str]:
    """A "server" on 127.0.0.1 that reads one request and answers with ``answer``."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            request = b""
            while b"\r\n\r\n" not in request:
                request += conn.recv(65536)
            with contextlib.suppress(OSError):
                answer(conn, stop)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(timeout=60)
        listener.close()


def _trickle(conn: socket.socket, stop: threading.Event) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000000\r\n\r\n")
    while not stop.wait(0.05):
        conn.sendall(b" ")


def _flood(conn: socket.socket, _stop: threading.Event) -> None:
    size = 8 * 1024 * 1024
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % size)
    conn.sendall(b" " * size)


@pytest.mark.parametrize(
    ("answer", "message"),
    [(_trickle, "no complete answer within 0.5 s"), (_flood, "an answer of more than 1048576 bytes")],
    ids=["trickle", "flood"],
)
def test_a_server_that_trickles_or_floods_its_answer_is_cut_off(answer: Any, message: str) -> None:
    """Only each read had a timeout: a server sending a byte every 50 ms held the uplink, and
    the reconcile run ending with an upload, for ever; an endless answer was read whole."""
    with hostile_server(answer) as url:
        client = Client(url, Ed25519PrivateKey.generate(), itertools.count(1).__next__, timeout=0.5)
        done: list[BaseException] = []

        def call() -> None:
            try:
                client.log_state()
            except BaseException as e:  # noqa: BLE001 - handed to the test thread
                done.append(e)

        worker = threading.Thread(target=call, daemon=True)
        worker.start()
        worker.join(timeout=60)  # a hang detector only; the client gives up after 0.5 s
        assert not worker.is_alive(), "the client never gave up"
        (error,) = done
        assert isinstance(error, ServerUnreachable), error
        assert message in str(error)


def _claims_everything(conn: socket.socket, _stop: threading.Event) -> None:
    body = json.dumps({"accepted_size": 5, "witness_key": "x"}).encode()
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
    conn.sendall(head + body)


def test_a_claim_to_hold_the_log_needs_the_witnesss_cosignature(
    fleet: Served, host_store: tuple[Path, Keys]
) -> None:
    """Whoever answered in the server's name (plain http) could say it held the whole log:
    the host acknowledged it, its upload lag fell to zero, and nothing had been sent."""
    root, _keys = host_store
    enroll(fleet, root)
    with hostile_server(_claims_everything) as url, sqlite3.connect(root / "state.db") as db:
        db.execute("UPDATE uplink_enrollment SET server = ?", (url,))
        db.commit()
        report = run.upload(root)
    assert report.outcome == "failed", report
    assert "holds 5 entries but shows no cosigned checkpoint" in (report.error or "")
    assert UplinkState.open(root).progress().accepted_size == 0
    lag = run.lag(root)
    assert lag is not None and lag.entries == 5
