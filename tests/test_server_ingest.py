"""Ingestion keeps each host honest: forks and rollbacks are refused and kept as incidents
with both checkpoints, envelopes that do not verify are refused, and nothing stored
changes."""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from fixtures_evidence import HOST, fill, make_keys, open_store, write_keyring
from fixtures_server import FleetHost, Served, make_host
from sqlalchemy import select
from test_server_api import enrolled, refused

from nixcomply.evidence import dsse
from nixcomply.evidence.checkpoint import Checkpoint, parse_checkpoint_text, parse_note
from nixcomply.evidence.keys import generate
from nixcomply.evidence.rotation import rotate
from nixcomply.evidence.statement import KeyRole
from nixcomply.model.fleet import ErrorCode, UploadEntry, UploadRequest, b64encode
from nixcomply.server.db import queries
from nixcomply.server.db.tables import checkpoints, entries, hosts, incidents, statements
from nixcomply.uplink.outbox import batches


def snapshot(fleet: Served) -> dict[str, Any]:
    with fleet.engine.connect() as conn:
        return {
            "entries": conn.execute(
                select(entries.c.host_id, entries.c.seq, entries.c.envelope_sha256).order_by(entries.c.seq)
            ).all(),
            "statements": conn.execute(select(statements.c.seq)).all(),
            "checkpoints": conn.execute(select(checkpoints.c.size, checkpoints.c.note)).all(),
            "hosts": conn.execute(
                select(hosts.c.accepted_size, hosts.c.root, hosts.c.checkpoint, hosts.c.keyring)
            ).all(),
        }


def incident_rows(fleet: Served) -> list[queries.IncidentRow]:
    with fleet.engine.connect() as conn:
        return queries.list_incidents(conn, queries.Scope.msp())


def twin(host: FleetHost, tmp_path: Path) -> FleetHost:
    """A copy of the host's store as it is now, with the same keys: the host's other
    history from here on."""
    root = tmp_path / f"{host.name}-twin"
    shutil.copytree(host.root, root)
    return FleetHost(host.name, root, host.keys, host.transport, host.client, host.machine_id, host.witness)


def resign(entry: UploadEntry, host: FleetHost, change: dict[str, Any]) -> UploadEntry:
    """Entry ``k`` rewritten and re-signed with the host's own bundle key."""
    envelope = dsse.parse(base64.b64decode(entry.envelope))
    statement = json.loads(envelope.payload)
    statement["predicate"].update(change)
    payload = json.dumps(statement, separators=(",", ":")).encode() + b"\n"
    forged = dsse.sign(payload, [host.keys.bundle]).to_bytes()
    return UploadEntry(seq=entry.seq, envelope=b64encode(forged), attachments=entry.attachments)


def test_an_entry_rewritten_and_resigned_is_a_fork(fleet: Served, tmp_path: Path) -> None:
    host = enrolled(fleet, tmp_path)
    host.record(6)
    host.push()
    before = snapshot(fleet)
    request = next(batches(host.root, 0)).request
    forged = [resign(e, host, {"outcome": "failed"}) if e.seq == 3 else e for e in request.entries]
    e = refused(lambda: host.client.upload(request.model_copy(update={"entries": forged})))
    assert (e.status, e.code) == (409, ErrorCode.FORK)
    assert e.error.detail == {"incident": True, "seq": 3}
    assert snapshot(fleet) == before
    [incident] = incident_rows(fleet)
    assert incident.kind == "fork"
    assert incident.accepted_checkpoint == before["hosts"][0].checkpoint
    assert incident.presented_checkpoint == request.checkpoint.encode()


def test_a_log_truncated_and_regrown_differently_is_a_fork(fleet: Served, tmp_path: Path) -> None:
    host = enrolled(fleet, tmp_path)
    host.record(3)
    other = twin(host, tmp_path)  # the log as it was at size 3
    host.record(3)
    host.push()  # the server accepted 6 entries
    before = snapshot(fleet)
    other.record(5)  # the host's log, cut back to 3 and grown to 8 differently
    e = refused(other.push)
    assert e.code is ErrorCode.FORK
    assert "chain" in e.error.message
    # the same size as accepted with another root is a fork too
    same_size = list(batches(other.root, 0))[-1].request
    e = refused(
        lambda: other.client.upload(
            UploadRequest(old_size=6, entries=[], checkpoint=_checkpoint(other, 6), proof=[])
        )
    )
    assert e.code is ErrorCode.FORK
    assert snapshot(fleet) == before
    assert {i.kind for i in incident_rows(fleet)} == {"fork"}
    assert len(incident_rows(fleet)) == 2
    assert same_size.old_size == 0


def _checkpoint(host: FleetHost, size: int) -> str:
    return (host.root / "log" / "checkpoints" / f"{size:012d}").read_text()


def test_a_smaller_checkpoint_is_a_rollback(fleet: Served, tmp_path: Path) -> None:
    host = enrolled(fleet, tmp_path)
    host.record(5)
    host.push()
    before = snapshot(fleet)
    e = refused(
        lambda: host.client.upload(
            UploadRequest(old_size=3, entries=[], checkpoint=_checkpoint(host, 3), proof=[])
        )
    )
    assert e.code is ErrorCode.ROLLBACK
    request = next(iter(batches(host.root, 0))).request
    cut = UploadRequest(old_size=0, entries=request.entries[:3], checkpoint=_checkpoint(host, 3), proof=[])
    e = refused(lambda: host.client.upload(cut))
    assert (e.status, e.code) == (409, ErrorCode.ROLLBACK)
    assert e.error.detail == {"incident": True, "accepted_size": 5, "presented_size": 3}
    assert snapshot(fleet) == before
    # the same checkpoint presented again counts up the same incident
    refused(lambda: host.client.upload(cut))
    [incident] = incident_rows(fleet)
    assert (incident.kind, incident.count) == ("rollback", 3)


def test_a_host_presenting_history_after_history_cannot_fill_the_database(
    fleet: Served, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every distinct presentation was a new incident row with its checkpoint (up to 64 KiB):
    a compromised host signing one rollback after another filled the server's database."""
    monkeypatch.setattr(queries, "MAX_INCIDENTS_PER_HOST", 2)
    host = enrolled(fleet, tmp_path)
    host.record(5)
    host.push()
    for i in range(4):
        note = Checkpoint("clinic-01.example/evidence-log", 2, bytes([i]) * 32).sign([host.keys.log])
        request = UploadRequest(old_size=2, checkpoint=note.decode())
        e = refused(lambda: host.client.upload(request))  # noqa: B023 - called at once
        assert e.code is ErrorCode.ROLLBACK  # still refused and said, every time
    rows = incident_rows(fleet)
    assert [(r.kind, r.count) for r in rows] == [("rollback", 1), ("rollback", 3)]
    other = enrolled(fleet, tmp_path, "clinic-02")  # another host's incidents are its own
    other.record(3)
    other.push()
    note = Checkpoint("clinic-01.example/evidence-log", 1, bytes(32)).sign([other.keys.log])
    refused(lambda: other.client.upload(UploadRequest(old_size=1, checkpoint=note.decode())))
    assert len(incident_rows(fleet)) == 3


def test_an_envelope_signed_by_an_unknown_key_is_refused(fleet: Served, tmp_path: Path) -> None:
    host = enrolled(fleet, tmp_path)
    stranger = make_host(fleet, tmp_path, "stranger")
    stranger.keys = make_keys()
    stranger.record(2)
    request = next(batches(stranger.root, 0)).request
    # the stranger's entries and checkpoint, sent by the host: its keys verify neither
    e = refused(lambda: host.client.upload(request))
    assert e.code is ErrorCode.BAD_ENTRY
    host.record(2)
    own = next(batches(host.root, 0)).request
    mixed = own.model_copy(update={"entries": [request.entries[0], own.entries[1]]})
    e = refused(lambda: host.client.upload(mixed))
    assert e.code is ErrorCode.BAD_ENTRY
    assert e.error.detail == {"seq": 0}
    assert "no valid signature" in e.error.message
    assert snapshot(fleet)["entries"] == []
    assert incident_rows(fleet) == []


@pytest.mark.parametrize("tamper", ["changed", "missing", "extra"])
def test_attachments_must_match_the_signed_subjects(fleet: Served, tmp_path: Path, tamper: str) -> None:
    host = enrolled(fleet, tmp_path)
    host.record(1)
    request = next(batches(host.root, 0)).request
    entry = request.entries[0]
    attachments = dict(entry.attachments)
    if tamper == "changed":
        attachments["switch.log"] = b64encode(b"something else\n")
    elif tamper == "missing":
        del attachments["switch.log"]
    else:
        attachments["extra.txt"] = b64encode(b"x")
    bad = request.model_copy(update={"entries": [entry.model_copy(update={"attachments": attachments})]})
    e = refused(lambda: host.client.upload(bad))
    assert e.code is ErrorCode.BAD_ENTRY
    assert snapshot(fleet)["entries"] == []


def test_a_bad_consistency_proof_is_refused(fleet: Served, tmp_path: Path) -> None:
    host = enrolled(fleet, tmp_path)
    host.record(5)
    first = next(batches(host.root, 0, max_entries=3)).request
    host.client.upload(first)
    second = next(iter(batches(host.root, 3))).request
    assert second.proof
    bad = second.model_copy(update={"proof": [b64encode(b"\x00" * 32)] * len(second.proof)})
    e = refused(lambda: host.client.upload(bad))
    assert e.code is ErrorCode.BAD_PROOF
    assert host.client.upload(second).accepted_size == 5
    with fleet.engine.connect() as conn:
        assert conn.execute(select(incidents.c.id)).all() == []


@pytest.mark.parametrize("role", ["bundle", "log"])
def test_a_signed_key_rotation_moves_the_servers_keyring(fleet: Served, tmp_path: Path, role: str) -> None:

    host = enrolled(fleet, tmp_path)
    host.record(3)
    keyring = write_keyring(host.root, host.keys)
    new = generate(f"clinic-01.example/evidence-{role}-2")
    with open_store(host.root, host.keys) as store:
        rotate(store, keyring, role=KeyRole(role), new=new, host=HOST, actor="alice")
        fill(store, 3)  # signed with the new key
    responses = host.push()
    assert responses[-1].accepted_size == 7
    with fleet.engine.connect() as conn:
        stored = conn.execute(select(hosts.c.keyring)).scalar_one()
    assert any(k["vkey"] == new.public.vkey and k["valid_from"] == 3 for k in stored["keys"])
    old = next(k for k in stored["keys"] if k["role"] == role and k["vkey"] != new.public.vkey)
    assert (old["valid_until"], old["status"]) == (3, "retired")


def test_a_rotation_signed_by_the_new_key_only_is_refused(fleet: Served, tmp_path: Path) -> None:

    host = enrolled(fleet, tmp_path)
    host.record(2)
    keyring = write_keyring(host.root, host.keys)
    new = generate("clinic-01.example/evidence-bundle-2")
    with open_store(host.root, host.keys) as store:
        rotate(store, keyring, role=KeyRole.BUNDLE, new=new, host=HOST, actor="alice")
    request = next(batches(host.root, 0)).request
    rotation = request.entries[2]
    envelope = dsse.parse(base64.b64decode(rotation.envelope))
    only_new = dsse.sign(envelope.payload, [new]).to_bytes()  # drop the old key's signature
    forged = rotation.model_copy(update={"envelope": b64encode(only_new)})
    e = refused(
        lambda: host.client.upload(request.model_copy(update={"entries": [*request.entries[:2], forged]}))
    )
    assert e.code is ErrorCode.BAD_ENTRY
    assert e.error.detail == {"seq": 2}
    assert snapshot(fleet)["entries"] == []


def test_a_checkpoint_not_signed_by_the_hosts_log_key_is_refused(fleet: Served, tmp_path: Path) -> None:

    host = enrolled(fleet, tmp_path)
    host.record(2)
    request = next(batches(host.root, 0)).request
    cp = parse_checkpoint_text(parse_note(request.checkpoint.encode()).text)
    other = Checkpoint(cp.origin, cp.size, cp.root).sign([generate(cp.origin)]).decode()
    e = refused(lambda: host.client.upload(request.model_copy(update={"checkpoint": other})))
    assert e.code is ErrorCode.BAD_CHECKPOINT
    assert "not signed by a trusted log key" in e.error.message
    assert snapshot(fleet)["entries"] == []
