"""verify_entries: what a fleet server does with an upload — the next envelopes of a host's
log, the checkpoint they end at and a consistency proof — with the verifier's own code and
no directory."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pytest
from fixtures_evidence import HOST, ORIGIN, Keys, fill, make_keys, open_store, write_keyring
from fuzzing import examples
from hypothesis import given, settings
from hypothesis import strategies as st

from nixcomply.evidence.keyring import load_keyring
from nixcomply.evidence.keys import generate
from nixcomply.evidence.log import read_leaves
from nixcomply.evidence.merkle import Frontier, Tree
from nixcomply.evidence.rotation import rotate
from nixcomply.evidence.statement import KeyRole
from nixcomply.evidence.verify import Check, Entry, LogPosition, verify_entries
from nixcomply.evidence.verify.entries import THREADED_MIN

ATTACHED = "attachments/"


def upload(root: Path, first: int, end: int) -> list[Entry]:
    """Entries first..end-1 of a store as a host would send them (envelope, attachments)."""
    out = []
    for seq in range(first, end):
        (bundle,) = root.glob(f"evidence/*/*/*/*-{seq:08d}-*")
        attachments = {p.name: p.read_bytes() for p in (bundle / "attachments").glob("*")}
        out.append(Entry((bundle / "envelope.dsse.json").read_bytes(), attachments))
    return out


def position(root: Path, size: int) -> LogPosition:
    """What a server keeps after accepting the first ``size`` entries."""

    if size == 0:
        return LogPosition()
    (last,) = root.glob(f"evidence/*/*/*/*-{size - 1:08d}-*")
    frontier = Frontier.of(read_leaves(root)[:size])
    return LogPosition(
        size,
        tuple(frontier.hashes),
        hashlib.sha256((last / "envelope.dsse.json").read_bytes()).hexdigest(),
        hashlib.sha256((root / f"log/checkpoints/{size:012d}").read_bytes()).hexdigest(),
    )


def checkpoint(root: Path, size: int) -> bytes:
    return (root / f"log/checkpoints/{size:012d}").read_bytes()


@pytest.fixture(scope="module")
def host_log(tmp_path_factory: pytest.TempPathFactory, keys: Keys) -> Path:
    root = tmp_path_factory.mktemp("upload") / "store"
    with open_store(root, keys, durable=False) as store:
        fill(store, 12)
    return root


def test_first_upload_and_the_next(host_log: Path, keys: Keys) -> None:
    result = verify_entries(
        upload(host_log, 0, 7), keys.keyring, start=LogPosition(), checkpoint=checkpoint(host_log, 7)
    )
    assert result.ok, result.report.lines()
    assert result.position == position(host_log, 7)
    assert result.checkpoint is not None
    assert result.checkpoint.checkpoint.size == 7
    assert len(result.statements) == 7
    proof = Tree(read_leaves(host_log)).consistency_proof(7, 12)
    nxt = verify_entries(
        upload(host_log, 7, 12),
        result.keyring,
        start=result.position,
        checkpoint=checkpoint(host_log, 12),
        proof=proof,
    )
    assert nxt.ok, nxt.report.lines()
    assert nxt.position.size == 12
    assert nxt.report.origin == ORIGIN


def test_a_changed_entry_is_named_first(host_log: Path, keys: Keys) -> None:
    entries = upload(host_log, 4, 12)
    env = json.loads(entries[3].envelope)
    payload = base64.b64decode(env["payload"]).replace(b"success", b"failure", 1)
    env["payload"] = base64.b64encode(payload).decode()
    entries[3] = Entry(json.dumps(env).encode(), entries[3].attachments)
    result = verify_entries(
        entries, keys.keyring, start=position(host_log, 4), checkpoint=checkpoint(host_log, 12)
    )
    assert not result.ok
    first = result.report.first_error()
    assert first is not None
    assert (first.seq, first.path) == (7, "entries[3]"), result.report.lines()
    assert result.position == position(host_log, 4)  # nothing accepted


@pytest.mark.parametrize("case", ["gap", "wrong-start", "attachment", "bad-proof", "old-checkpoint"])
def test_uploads_that_do_not_continue_the_log_fail(host_log: Path, keys: Keys, case: str) -> None:
    entries = upload(host_log, 4, 12)
    start = position(host_log, 4)
    cp = checkpoint(host_log, 12)
    proof = Tree(read_leaves(host_log)).consistency_proof(4, 12)
    expect = 0
    if case == "gap":
        del entries[2]
        expect = 6
    elif case == "wrong-start":
        start = position(host_log, 3)
        expect = 3
    elif case == "attachment":
        name = next(iter(entries[0].attachments or {}))
        entries[0] = Entry(entries[0].envelope, {name: b"changed\n"})
        expect = 4
    elif case == "bad-proof":
        proof = [*proof[:-1], bytes(32)]
        expect = 4
    else:
        cp = checkpoint(host_log, 11)
        expect = 11
    result = verify_entries(entries, keys.keyring, start=start, checkpoint=cp, proof=proof)
    assert not result.ok
    first = result.report.first_error()
    assert first is not None
    assert first.seq == expect, (case, result.report.lines())


def test_rotation_in_an_upload_moves_the_keyring_on(tmp_path: Path) -> None:
    keys = make_keys()
    ring_path = write_keyring(tmp_path, keys)
    new = generate("clinic-01.example/evidence-bundle-2")
    with open_store(tmp_path, keys) as store:
        fill(store, 2)
        rotate(store, ring_path, role=KeyRole.BUNDLE, new=new, host=HOST, actor="admin")
        store.signer = new
        fill(store, 1)
    result = verify_entries(
        upload(tmp_path, 0, 4), keys.keyring, start=LogPosition(), checkpoint=checkpoint(tmp_path, 4)
    )
    assert result.ok, result.report.lines()
    assert result.keyring.trust() == load_keyring(ring_path).trust()
    # A server that accepted the rotation earlier keeps its keyring; the next upload needs
    # no rotation entry for the key it already trusts.
    after = verify_entries(
        upload(tmp_path, 3, 4),
        result.keyring,
        start=position(tmp_path, 3),
        checkpoint=checkpoint(tmp_path, 4),
    )
    assert after.ok, after.report.lines()
    # Without the rotation entry the server's keyring never learns the new key.
    later = verify_entries(
        upload(tmp_path, 3, 4), keys.keyring, start=position(tmp_path, 3), checkpoint=checkpoint(tmp_path, 4)
    )
    assert not later.ok


@settings(max_examples=examples(60))
@given(data=st.data())
def test_any_flipped_byte_in_an_upload_is_named_first(
    host_log: Path, keys: Keys, data: st.DataObject
) -> None:
    entries = upload(host_log, 3, 12)
    i = data.draw(st.integers(0, len(entries) - 1), label="entry")
    envelope = bytearray(entries[i].envelope)
    envelope[data.draw(st.integers(0, len(envelope) - 1), label="offset")] ^= data.draw(
        st.integers(1, 255), label="xor"
    )
    entries[i] = Entry(bytes(envelope), entries[i].attachments)
    result = verify_entries(
        entries, keys.keyring, start=position(host_log, 3), checkpoint=checkpoint(host_log, 12)
    )
    assert not result.ok
    first = result.report.first_error()
    assert first is not None
    assert (first.seq, first.path) == (3 + i, f"entries[{i}]"), result.report.lines()


def test_a_large_upload_is_checked_on_threads_with_the_same_verdict(tmp_path: Path, keys: Keys) -> None:
    with open_store(tmp_path, keys, durable=False) as store:
        fill(store, THREADED_MIN + 6)
    n = THREADED_MIN + 6
    entries = upload(tmp_path, 0, n)
    result = verify_entries(entries, keys.keyring, start=LogPosition(), checkpoint=checkpoint(tmp_path, n))
    assert result.ok, result.report.lines()
    assert [a.seq for a in result.accepted] == list(range(n))
    env = json.loads(entries[40].envelope)
    env["signatures"][0]["sig"] = base64.b64encode(bytes(64)).decode()
    entries[40] = Entry(json.dumps(env).encode(), entries[40].attachments)
    bad = verify_entries(entries, keys.keyring, start=LogPosition(), checkpoint=checkpoint(tmp_path, n))
    first = bad.report.first_error()
    assert first is not None
    assert (first.seq, first.path, first.check) == (40, "entries[40]", Check.ENTRY)
