"""The evidence store with real files, real keys and real processes: appending, scrubbing,
recovery from a crash at every step, concurrent appenders, key rotation and revocation."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest
from fixtures_evidence import (
    HOST,
    ORIGIN,
    TOPLEVEL,
    Keys,
    attestation,
    check_run,
    fill,
    generation_change,
    make_keys,
    open_store,
    remediation,
    write_key_files,
    write_keyring,
)

from nixcomply.errors import UsageError
from nixcomply.evidence import dsse, log
from nixcomply.evidence.checkpoint import open_checkpoint
from nixcomply.evidence.export import export_packet
from nixcomply.evidence.keyring import KeyEntry, Keyring, KeyStatus, load_keyring, save_keyring
from nixcomply.evidence.keys import generate
from nixcomply.evidence.log import StoreError, read_leaves, state_sizes
from nixcomply.evidence.merkle import Frontier, leaf_hash
from nixcomply.evidence.rotation import finish_rotation, revoke, rotate
from nixcomply.evidence.statement import GENESIS_PREV, KeyRole, KeyRotation, parse_statement
from nixcomply.evidence.store import ENVELOPE_FILE, STATEMENT_FILE
from nixcomply.evidence.verify import verify, verify_path
from nixcomply.model.outcome import Outcome

REPO = Path(__file__).resolve().parent.parent
APPENDER = REPO / "tests" / "evidence_appender.py"


def statement_of(bundle: Path) -> dict[str, object]:
    data: dict[str, object] = json.loads((bundle / STATEMENT_FILE).read_bytes())
    return data


def test_append_writes_a_signed_chained_bundle(tmp_path: Path, keys: Keys) -> None:
    with open_store(tmp_path, keys) as store:
        assert store.last_seq() is None
        assert store.tail() is None
        first = store.append(generation_change(0), subjects=[TOPLEVEL], attachments={"switch.log": b"ok\n"})
        second = store.append(check_run(1), subjects=[TOPLEVEL])
        tail = store.tail()
        assert store.last_seq() == 1
    assert (first.seq, first.checkpoint_size, second.seq, second.checkpoint_size) == (0, 1, 1, 2)
    assert re.fullmatch(r"20260301T093000Z-00000000-[0-9a-f]{8}", first.bundle_id)
    assert first.path == tmp_path / "evidence/2026/03/01" / first.bundle_id
    assert tail is not None
    assert (tail.seq, tail.bundle_id, tail.path) == (1, second.bundle_id, second.path)

    envelope = dsse.parse((first.path / ENVELOPE_FILE).read_bytes())
    assert envelope.payload == (first.path / STATEMENT_FILE).read_bytes()
    assert dsse.verify(envelope, [keys.bundle.public]) == envelope.payload
    assert (
        first.envelope_sha256
        == __import__("hashlib").sha256((first.path / ENVELOPE_FILE).read_bytes()).hexdigest()
    )

    statement = parse_statement(envelope.payload)
    assert statement.predicate_type == "https://nixcomply.dev/evidence/generation-change/v1"
    chain = statement.predicate.chain
    assert chain is not None
    assert (chain.seq, chain.prev) == (0, GENESIS_PREV)
    names = {s.name: s.digest["sha256"] for s in statement.subject}
    assert names[TOPLEVEL.name] == TOPLEVEL.digest["sha256"]
    assert names["attachments/switch.log"] == __import__("hashlib").sha256(b"ok\n").hexdigest()

    second_statement = parse_statement((second.path / STATEMENT_FILE).read_bytes())
    assert second_statement.predicate.chain is not None
    assert second_statement.predicate.chain.prev == first.envelope_sha256

    leaves = read_leaves(tmp_path)
    assert leaves == [leaf_hash((r.path / ENVELOPE_FILE).read_bytes()) for r in (first, second)]
    checkpoint = open_checkpoint((tmp_path / "log/checkpoints/000000000002").read_bytes(), [keys.log.public])
    frontier = Frontier()
    frontier.extend(leaves)
    assert (checkpoint.checkpoint.origin, checkpoint.checkpoint.size) == (ORIGIN, 2)
    assert checkpoint.checkpoint.root == frontier.root()
    assert (tmp_path / "log/checkpoints/000000000001").exists()
    assert state_sizes(tmp_path) == [2]
    assert not (tmp_path / "log/pending.json").exists()
    assert verify(tmp_path, keys.keyring).exit_code == 0


def test_free_text_is_scrubbed_before_signing(tmp_path: Path, keys: Keys) -> None:
    with open_store(tmp_path, keys) as store:
        recorded = store.append(
            remediation(0),
            attachments={"journal.txt": b"login by patient_id=P-20331 from 8.8.8.8\n", "blob": b"\xff\x00"},
        )
        attested = store.append(attestation(1), attachments={"a.txt": b"ok\n"})
    text = (recorded.path / STATEMENT_FILE).read_text()
    assert "bob@clinic.example" not in text
    assert "[EMAIL-REDACTED-" in text
    journal = (recorded.path / "attachments/journal.txt").read_text()
    assert "P-20331" not in journal
    assert "8.8.8.8" not in journal
    assert (recorded.path / "attachments/blob").read_bytes() == b"\xff\x00"
    assert recorded.redactions == {"email": 1, "ip": 1, "patient_id": 1}
    # People and links stay readable: they identify who attested, not a patient.
    statement = statement_of(attested.path)
    predicate = statement["predicate"]
    assert isinstance(predicate, dict)
    assert predicate["attested_by"] == "alice@clinic.example"
    assert predicate["evidence_url"] == "https://docs.clinic.example/training/2026"
    assert verify(tmp_path, keys.keyring).exit_code == 0


def test_same_value_redacts_the_same_across_entries(tmp_path: Path, keys: Keys) -> None:
    with open_store(tmp_path, keys) as store:
        a = store.append(remediation(0), subjects=[TOPLEVEL])
        b = store.append(remediation(1), subjects=[TOPLEVEL])
    tag = re.compile(r"\[EMAIL-REDACTED-[0-9a-f]{6}\]")
    assert tag.findall((a.path / STATEMENT_FILE).read_text()) == tag.findall(
        (b.path / STATEMENT_FILE).read_text()
    )
    assert (tmp_path / "scrub-salt").stat().st_mode & 0o777 == 0o600


def test_bad_appends_are_refused_without_writing(tmp_path: Path, keys: Keys) -> None:
    with open_store(tmp_path, keys) as store:
        with pytest.raises(ValueError, match="subject"):
            store.append(check_run(0))
        with pytest.raises(ValueError, match="attachment name"):
            store.append(check_run(0), attachments={"../escape": b""})
        filled = check_run(0).model_copy(update={"bundle_id": "20260301T093000Z-00000000-00000000"})
        with pytest.raises(ValueError, match="leave chain and bundle_id unset"):
            store.append(filled, subjects=[TOPLEVEL])
        assert store.last_seq() is None
    assert read_leaves(tmp_path) == []


def test_append_state_is_logarithmic(tmp_path: Path, keys: Keys) -> None:
    with open_store(tmp_path, keys, durable=False) as store:
        fill(store, 21)
    (state_file,) = (tmp_path / "log/state").iterdir()
    state = json.loads(state_file.read_text())
    assert state["size"] == 21
    assert len(state["frontier"]) == bin(21).count("1") == 3


def test_two_processes_append_concurrently(tmp_path: Path, keys: Keys) -> None:
    bundle_key, log_key = write_key_files(tmp_path, keys)
    root = tmp_path / "store"
    procs = [
        subprocess.Popen(
            [sys.executable, str(APPENDER), str(root), str(bundle_key), str(log_key), "25", tag, "--wait"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for tag in ("a", "b")
    ]
    for p in procs:
        assert p.stdout is not None
        assert p.stdout.readline() == "ready\n"
    for p in procs:  # both start appending at once
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    a, b = ([int(line.split()[0]) for line in out.splitlines()] for out in outputs)
    assert sorted(a + b) == list(range(50))
    assert max(a) > min(b), f"the appends did not overlap: {a} {b}"
    assert max(b) > min(a), f"the appends did not overlap: {a} {b}"
    report = verify(root, keys.keyring)
    assert report.exit_code == 0, report.lines()
    assert report.entries == 50


def test_threads_of_one_process_append_safely(tmp_path: Path, keys: Keys) -> None:
    import threading

    with open_store(tmp_path, keys, durable=False) as store:
        threads = [
            threading.Thread(
                target=lambda i=i: [store.append(check_run(i), subjects=[TOPLEVEL]) for _ in range(10)]
            )
            for i in range(4)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    report = verify(tmp_path, keys.keyring)
    assert report.exit_code == 0, report.lines()
    assert report.entries == 40


STEPS_ROLLED_BACK = ["pending", "attachment", "bundle-written"]
STEPS_FINISHED = ["bundle", "leaf", "state", "old-state", "checkpoint"]


def crash_append_at(root: Path, keys: Keys, step: str) -> None:
    """Append in a child process that dies at ``step`` (a fault point of the append)."""
    pid = os.fork()
    if pid == 0:  # the child dies at the chosen step of its append
        try:

            def die(at: str) -> None:
                if at == step:
                    os._exit(37)

            log.FAULT_HOOK = die
            with open_store(root, keys) as store:
                store.append(generation_change(7), subjects=[TOPLEVEL], attachments={"x.log": b"x\n"})
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 37


@pytest.mark.parametrize("step", STEPS_ROLLED_BACK + STEPS_FINISHED)
def test_crash_at_each_step_recovers(tmp_path: Path, keys: Keys, step: str) -> None:
    with open_store(tmp_path, keys) as store:
        fill(store, 3)
    crash_append_at(tmp_path, keys, step)

    # Before recovery the store is an honest "interrupted" state: a warning, not tampering.
    before = verify(tmp_path, keys.keyring)
    assert before.exit_code == 3, before.lines()
    assert any("interrupted" in str(w) for w in before.warnings)

    with open_store(tmp_path, keys) as store:
        expected = 4 if step in STEPS_FINISHED else 3
        assert store.last_seq() == expected - 1
        store.append(check_run(9), subjects=[TOPLEVEL])
    report = verify(tmp_path, keys.keyring)
    assert report.exit_code == 0, report.lines()
    assert report.entries == expected + 1
    assert not list(tmp_path.glob("evidence/*/*/*/.*"))


def test_export_leaves_out_an_entry_no_checkpoint_covers(tmp_path: Path, keys: Keys) -> None:
    root = tmp_path / "store"
    with open_store(root, keys) as store:
        fill(store, 3)
    crash_append_at(root, keys, "state")
    packet = tmp_path / "p.zip"
    result = export_packet(root, keys.keyring, packet, start=date(2026, 3, 1), end=date(2026, 3, 1))
    assert (result.tree_size, result.bundles) == (3, 3)
    assert any("interrupted" in str(w) for w in result.report.warnings)
    report = verify_path(packet, keys.keyring)
    assert report.exit_code == 0, report.lines()


def test_inconsistent_log_stops_appends(tmp_path: Path, keys: Keys) -> None:
    with open_store(tmp_path, keys) as store:
        fill(store, 2)
    with (tmp_path / "log/leaves").open("ab") as f:
        f.write(b"x" * 32)
    with pytest.raises(StoreError, match="leaves"):
        open_store(tmp_path, keys)


def test_store_refuses_keys_its_keyring_does_not_trust(tmp_path: Path, keys: Keys) -> None:
    write_keyring(tmp_path, keys)
    with open_store(tmp_path, keys) as store:
        store.append(check_run(0), subjects=[TOPLEVEL])
    stranger = Keys(generate("other/bundle"), keys.log, keys.keyring)
    with open_store(tmp_path, stranger) as store, pytest.raises(StoreError, match="is not in it") as e:
        store.append(check_run(1), subjects=[TOPLEVEL])
    assert e.value.hint is not None


def test_rotate_bundle_key(tmp_path: Path) -> None:
    keys = make_keys()
    ring_path = write_keyring(tmp_path, keys)
    new = generate("clinic-01.example/evidence-bundle-2")
    with open_store(tmp_path, keys) as store:
        fill(store, 3)
        recorded = rotate(
            store, ring_path, role=KeyRole.BUNDLE, new=new, host=HOST, actor="admin", reason="yearly"
        )
        after = store.append(check_run(5), subjects=[TOPLEVEL])
    assert recorded.seq == 3
    envelope = dsse.parse((recorded.path / ENVELOPE_FILE).read_bytes())
    assert {k.name for k in dsse.verified_keys(envelope, [keys.bundle.public, new.public])} == {
        keys.bundle.name,
        new.name,
    }
    assert dsse.verified_keys(dsse.parse((after.path / ENVELOPE_FILE).read_bytes()), [new.public])
    ring = load_keyring(ring_path)
    old_entry = ring.entry_for(keys.bundle.public, KeyRole.BUNDLE)
    new_entry = ring.entry_for(new.public, KeyRole.BUNDLE)
    assert old_entry is not None
    assert new_entry is not None
    assert (old_entry.valid_until, old_entry.status) == (3, KeyStatus.RETIRED)
    assert (new_entry.valid_from, new_entry.status) == (3, KeyStatus.ACTIVE)
    report = verify(tmp_path, ring)
    assert report.exit_code == 0, report.lines()
    # The old keyring does not know the new key: the entry after the rotation fails.
    stale = verify(tmp_path, keys.keyring)
    first = stale.first_error()
    assert first is not None
    assert first.seq == 4
    # And the old key may no longer sign.
    with open_store(tmp_path, keys) as store, pytest.raises(StoreError, match="retired"):
        store.append(check_run(6), subjects=[TOPLEVEL])


def test_rotate_log_key(tmp_path: Path) -> None:
    keys = make_keys()
    ring_path = write_keyring(tmp_path, keys)
    new = generate(ORIGIN)
    with open_store(tmp_path, keys) as store:
        fill(store, 2)
        recorded = rotate(store, ring_path, role=KeyRole.LOG, new=new, host=HOST, actor="admin")
        store.append(check_run(5), subjects=[TOPLEVEL])
    both = open_checkpoint(
        (tmp_path / "log/checkpoints/000000000003").read_bytes(), [keys.log.public, new.public]
    )
    assert {k.key_id for k in both.verified_by} == {keys.log.public.key_id, new.public.key_id}
    later = open_checkpoint(
        (tmp_path / "log/checkpoints/000000000004").read_bytes(), [keys.log.public, new.public]
    )
    assert [k.key_id for k in later.verified_by] == [new.public.key_id]
    assert recorded.seq == 2
    report = verify(tmp_path, load_keyring(ring_path))
    assert report.exit_code == 0, report.lines()


def test_rotation_keyring_update_is_finished_after_a_crash(tmp_path: Path) -> None:
    keys = make_keys()
    ring_path = write_keyring(tmp_path, keys)
    new = generate("clinic-01.example/evidence-bundle-2")
    with open_store(tmp_path, keys) as store:
        fill(store, 1)
        # The rotation entry was written, then the process died before the keyring update.
        predicate = KeyRotation(
            event="evidence.key-rotated",
            observed_at=check_run(0).observed_at,
            host=HOST,
            outcome=Outcome.SUCCESS,
            action="rotate",
            role=KeyRole.BUNDLE,
            key=new.public.vkey,
            previous_key=keys.bundle.public.vkey,
        )
        store.append(predicate, attachments={"key.pub": new.public.vkey.encode()}, cosigners=[new])
        warned = verify(tmp_path, load_keyring(ring_path))
        assert warned.exit_code == 3
        assert any("does not list" in str(w) for w in warned.warnings)
        assert finish_rotation(store, ring_path)
        assert not finish_rotation(store, ring_path)
    assert verify(tmp_path, load_keyring(ring_path)).exit_code == 0


def test_revoke_a_retired_key_and_a_leaked_one(tmp_path: Path) -> None:
    keys = make_keys()
    ring_path = write_keyring(tmp_path, keys)
    new = generate("clinic-01.example/evidence-bundle-2")
    with open_store(tmp_path, keys) as store:
        fill(store, 4)
        with pytest.raises(UsageError, match="current bundle key"):
            revoke(store, ring_path, keys.bundle.public.vkey, host=HOST, actor="admin", reason="test")
        rotate(store, ring_path, role=KeyRole.BUNDLE, new=new, host=HOST, actor="admin")
        with pytest.raises(UsageError, match="no key"):
            revoke(store, ring_path, "nobody/key", host=HOST, actor="admin", reason="x")
        recorded = revoke(
            store, ring_path, keys.bundle.name, host=HOST, actor="admin", reason="retired laptop"
        )
    ring = load_keyring(ring_path)
    entry = ring.entry_for(keys.bundle.public, KeyRole.BUNDLE)
    assert entry is not None
    assert (entry.status, entry.valid_until, entry.reason) == (KeyStatus.REVOKED, 4, "retired laptop")
    assert recorded.seq == 5
    assert verify(tmp_path, ring).exit_code == 0

    # A key that leaked at entry 2: revoking it from there makes entries 2..4 fail.
    leaked = ring.with_keys(
        [e.model_copy(update={"valid_until": 1}) if e.key == keys.bundle.public else e for e in ring.keys]
    )
    report = verify(tmp_path, leaked)
    first = report.first_error()
    assert first is not None
    assert first.seq == 2
    assert "no valid signature" in first.message


def test_expired_attestation_is_a_warning_until_renewed(tmp_path: Path, keys: Keys) -> None:
    with open_store(tmp_path, keys) as store:
        store.append(attestation(0, expires=date(2026, 6, 30)), attachments={"a.txt": b"x\n"})
        report = verify(tmp_path, keys.keyring, today=date(2026, 7, 1))
        assert report.exit_code == 3
        assert "expired on 2026-06-30" in str(report.warnings[0])
        assert verify(tmp_path, keys.keyring, today=date(2026, 6, 30)).exit_code == 0
        store.append(attestation(1, expires=date(2027, 6, 30)), attachments={"a.txt": b"x\n"})
    assert verify(tmp_path, keys.keyring, today=date(2026, 7, 1)).exit_code == 0


def test_keyring_without_log_key_fails_checkpoints(store_copy: Path, keys: Keys) -> None:
    only_bundle = Keyring(keys=[KeyEntry(vkey=keys.bundle.public.vkey, role=KeyRole.BUNDLE)])
    report = verify(store_copy, only_bundle)
    assert report.exit_code == 1
    assert any("not signed by a trusted log key" in str(e) for e in report.errors)
    save_keyring(store_copy / "keyring.json", only_bundle)
