"""What verification may trust: a pinned keyring (9.2), how far the log reached (9.3), and
key rotations (9.5). Each test reproduces a way the earlier verifier said OK to evidence an
auditor must not accept."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
from fixtures_evidence import (
    HOST,
    ORIGIN,
    TOPLEVEL,
    Keys,
    check_run,
    fill,
    make_keys,
    open_store,
    pinned_copy,
    write_keyring,
)

from conftest import CliResult
from nixcomply.evidence.checkpoint import parse_note
from nixcomply.evidence.keyring import KeyEntry, Keyring, load_keyring, save_keyring
from nixcomply.evidence.keys import generate
from nixcomply.evidence.log import LastEntry, LogHead, LogState, StoreError, read_leaves, state_name
from nixcomply.evidence.merkle import Frontier
from nixcomply.evidence.rotation import rotate
from nixcomply.evidence.statement import KeyRole, KeyRotation, parse_statement
from nixcomply.evidence.store import EvidenceStore
from nixcomply.evidence.verify import verify
from nixcomply.host.state import EvidenceHead, State, read_evidence_head
from nixcomply.model.outcome import Outcome

Cli = Callable[..., CliResult]


def host_store(root: Path, keys: Keys, n: int) -> Path:
    """A store as a host keeps it: keyring, and the head in the state database."""
    root.mkdir(parents=True, exist_ok=True)
    write_keyring(root, keys)
    with EvidenceStore.open(root, keys.bundle, keys.log, origin=ORIGIN, head=EvidenceHead(root)) as store:
        fill(store, n)
    return root


# -- 9.2: the keyring must be pinned ------------------------------------------------------


def test_another_hosts_store_is_never_plain_ok(cli: Cli, tmp_path: Path, keys: Keys) -> None:
    """A store replaced by another host's store (its own keys, its own keyring) verified
    with exit 0 when the auditor trusted the keyring inside it."""
    clinic_keyring = tmp_path / "clinic-keyring.json"
    save_keyring(clinic_keyring, keys.keyring)
    impostor = host_store(tmp_path / "state", make_keys(), 4)
    r = cli("evidence", "verify", impostor, "--json")
    report = json.loads(r.out)
    assert r.code == 3, r.out
    assert report["keyring_pinned"] is False
    (warning,) = [w for w in report["warnings"] if w["path"] == "keyring.json"]
    assert "not a pinned copy" in warning["message"]
    assert "not who made it" in warning["message"]
    r = cli("evidence", "verify", impostor)
    assert r.code == 3
    assert r.out.splitlines()[-2].startswith("OK with warnings")
    # With the clinic's keyring, obtained out of band, the forgery fails.
    r = cli("evidence", "verify", impostor, "--keyring", clinic_keyring, "--json")
    report = json.loads(r.out)
    assert r.code == 1
    assert report["keyring_pinned"] is True
    assert report["first_error"]["seq"] == 0
    assert "no valid signature" in report["first_error"]["message"]


def test_an_attackers_key_added_to_the_keyring_fails_against_the_pinned_one(
    tmp_path: Path, keys: Keys
) -> None:
    """Someone who can write the store adds their key to its keyring and appends entries
    signed with it: consistent, so the store's own keyring accepted them."""
    root = host_store(tmp_path / "state", keys, 4)
    mallory = generate("mallory/bundle")
    ring = load_keyring(root / "keyring.json")
    save_keyring(
        root / "keyring.json",
        ring.with_keys([*ring.keys, KeyEntry(vkey=mallory.public.vkey, role=KeyRole.BUNDLE)]),
    )
    with EvidenceStore.open(root, mallory, keys.log, origin=ORIGIN) as store:
        store.append(check_run(8), subjects=[TOPLEVEL])
    unpinned = verify(root, None)
    assert unpinned.exit_code == 3
    assert not unpinned.keyring_pinned
    pinned = verify(root, keys.keyring)
    assert pinned.exit_code == 1
    first = pinned.first_error()
    assert first is not None
    assert (first.seq, "no valid signature" in first.message) == (4, True), pinned.lines()
    assert any(
        e.path == "keyring.json" and "it trusts bundle key mallory/bundle" in e.message for e in pinned.errors
    ), pinned.lines()


def test_a_keyring_beside_the_evidence_must_be_the_pinned_one(store_copy: Path, keys: Keys) -> None:
    """With --keyring the keyring inside the store was ignored, whatever it said."""
    extra = generate("someone/log")
    ring = load_keyring(store_copy / "keyring.json")
    save_keyring(
        store_copy / "keyring.json",
        ring.with_keys([*ring.keys, KeyEntry(vkey=extra.public.vkey, role=KeyRole.LOG)]),
    )
    report = verify(store_copy, keys.keyring)
    assert report.exit_code == 1
    (error,) = report.errors
    assert error.path == "keyring.json"
    assert "differs from the pinned keyring" in error.message


def test_pin_json_of_an_earlier_packet_pins_keyring_and_checkpoint(
    cli: Cli, tmp_path: Path, keys: Keys
) -> None:
    root = host_store(tmp_path / "state", keys, 4)
    first = tmp_path / "q1.zip"
    assert (
        cli(
            "evidence",
            "export",
            "--from",
            "2026-03-01",
            "--to",
            "2026-03-01",
            "-o",
            first,
            "--state-dir",
            root,
        ).code
        == 0
    )
    clinic = tmp_path / "clinic.json"
    save_keyring(clinic, keys.keyring)
    r = cli("evidence", "verify", first, "--keyring", clinic)
    assert r.code == 0, r.out
    assert f"pin next time: --pin-checkpoint pin.json (extract it from {first})" in r.out

    with zipfile.ZipFile(first) as zf:
        (tmp_path / "pin.json").write_bytes(zf.read("pin.json"))
    with EvidenceStore.open(root, keys.bundle, keys.log, origin=ORIGIN, head=EvidenceHead(root)) as store:
        store.append(check_run(30), subjects=[TOPLEVEL])
    second = tmp_path / "q2.zip"
    assert (
        cli(
            "evidence",
            "export",
            "--from",
            "2026-03-02",
            "--to",
            "2026-03-02",
            "-o",
            second,
            "--state-dir",
            root,
        ).code
        == 0
    )
    r = cli("evidence", "verify", second, "--pin-checkpoint", tmp_path / "pin.json", "--json")
    report = json.loads(r.out)
    assert r.code == 0, r.out
    assert report["keyring_pinned"] is True
    assert "pin.json" in report["keyring_source"]
    assert report["pinned"] == {"size": 4, "consistent": True}
    # An unpinned verification does not offer its pin.json: its keyring proves nothing.
    r = cli("evidence", "verify", second, "--json")
    assert json.loads(r.out)["pin_next"] is None


# -- 9.3: rollback and truncation ---------------------------------------------------------


def test_state_database_records_the_head(tmp_path: Path, keys: Keys) -> None:
    root = host_store(tmp_path / "state", keys, 3)
    head = read_evidence_head(root)
    assert head is not None
    assert head.size == 3

    assert (
        head.checkpoint_sha256
        == hashlib.sha256((root / "log/checkpoints/000000000003").read_bytes()).hexdigest()
    )
    report = verify(root, keys.keyring, host_head=head)
    assert report.exit_code == 0, report.lines()
    assert report.host_size == 3


def test_rolled_back_store_fails(cli: Cli, tmp_path: Path, keys: Keys) -> None:
    """A store put back to an earlier copy of its evidence and log verified."""
    root = host_store(tmp_path / "state", keys, 3)
    backup = tmp_path / "backup"
    for part in ("evidence", "log"):
        shutil.copytree(root / part, backup / part)
    with EvidenceStore.open(root, keys.bundle, keys.log, origin=ORIGIN, head=EvidenceHead(root)) as store:
        fill(store, 2)
    for part in ("evidence", "log"):
        shutil.rmtree(root / part)
        shutil.copytree(backup / part, root / part)
    r = cli("evidence", "verify", root, "--keyring", pinned_copy(root), "--json")
    report = json.loads(r.out)
    assert r.code == 1, r.out
    assert report["host_size"] == 5
    assert report["first_error"]["path"] == "state.db"
    assert "rolled back" in report["first_error"]["message"]
    # And the host refuses to append on top of the rolled-back log.
    with pytest.raises(StoreError, match="recorded 5"):
        EvidenceStore.open(root, keys.bundle, keys.log, origin=ORIGIN, head=EvidenceHead(root))


def test_deleted_evidence_and_log_fail(cli: Cli, tmp_path: Path, keys: Keys) -> None:
    root = host_store(tmp_path / "state", keys, 3)
    shutil.rmtree(root / "evidence")
    shutil.rmtree(root / "log")
    r = cli("evidence", "verify", root, "--keyring", pinned_copy(root))
    assert r.code == 1, r.out
    assert "the host's state database records 3 entries, the log has 0" in r.out


def test_cut_off_tail_fails_without_a_pin(tmp_path: Path, keys: Keys) -> None:
    """The newest entries and everything that names them removed: a consistent, shorter log."""

    root = host_store(tmp_path / "state", keys, 6)
    bundles = sorted(p.relative_to(root).as_posix() for p in root.glob("evidence/*/*/*/*"))
    for b in bundles[-2:]:
        shutil.rmtree(root / b)

    os.truncate(root / "log/leaves", 4 * 32)
    for n in (5, 6):
        (root / f"log/checkpoints/{n:012d}").unlink()
    for p in (root / "log/state").iterdir():
        p.unlink()
    last = bundles[3]
    statement = parse_statement((root / last / "statement.json").read_bytes())

    env = (root / last / "envelope.dsse.json").read_bytes()
    state = LogState(
        Frontier.of(read_leaves(root)),
        LastEntry(3, statement.predicate.bundle_id or "", last, hashlib.sha256(env).hexdigest()),
    )
    (root / "log/state" / state_name(4)).write_bytes(state.to_bytes())
    assert verify(root, keys.keyring).exit_code == 0  # on its own, the shorter log is consistent
    report = verify(root, keys.keyring, host_head=read_evidence_head(root))
    first = report.first_error()
    assert first is not None
    assert (first.seq, first.path) == (4, "state.db"), report.lines()


def test_rewritten_history_at_the_recorded_size_fails(tmp_path: Path, keys: Keys) -> None:
    root = host_store(tmp_path / "state", keys, 3)
    head = read_evidence_head(root)
    assert head is not None
    forged = tmp_path / "forged"
    with open_store(forged, keys, durable=False) as store:
        store.append(check_run(9), subjects=[TOPLEVEL])
        fill(store, 3)
    report = verify(forged, keys.keyring, host_head=head)
    first = report.first_error()
    assert first is not None
    assert "history was rewritten" in first.message, report.lines()


def test_recorded_head_never_goes_backwards(tmp_path: Path) -> None:

    with State.open(tmp_path) as state:
        state.record_evidence_head(LogHead(5, "a" * 64))
        state.record_evidence_head(LogHead(3, "b" * 64))
        assert state.evidence_head() == LogHead(5, "a" * 64)
    assert read_evidence_head(tmp_path) == LogHead(5, "a" * 64)
    assert read_evidence_head(tmp_path / "nowhere") is None


# -- 9.5: rotations are enforced ----------------------------------------------------------


def log_rotated(tmp_path: Path) -> tuple[Path, Keyring, int]:
    keys = make_keys()
    ring_path = write_keyring(tmp_path, keys)
    new = generate(ORIGIN)
    with open_store(tmp_path, keys) as store:
        fill(store, 2)
        recorded = rotate(store, ring_path, role=KeyRole.LOG, new=new, host=HOST, actor="admin")
    return tmp_path, load_keyring(ring_path), recorded.seq


@pytest.mark.parametrize("strip", [0, 1])
def test_log_rotation_checkpoint_needs_both_signatures(tmp_path: Path, strip: int) -> None:
    """The checkpoint covering a log-key rotation carries both keys' signatures; stripping
    either still verified."""
    root, ring, seq = log_rotated(tmp_path)
    assert verify(root, ring).exit_code == 0
    path = root / f"log/checkpoints/{seq + 1:012d}"
    note = parse_note(path.read_bytes())
    assert len(note.signatures) == 2
    kept = [s for i, s in enumerate(note.signatures) if i != strip]
    path.write_bytes(type(note)(note.text, tuple(kept)).to_bytes())
    report = verify(root, ring)
    first = report.first_error()
    assert first is not None
    assert first.path == f"log/checkpoints/{seq + 1:012d}", report.lines()
    assert "must be signed by both" in first.message


def test_keyring_change_without_a_rotation_entry_fails(tmp_path: Path) -> None:
    """A new bundle key put into the keyring from entry 3 on, with no rotation entry for
    it, only warned (or passed)."""
    keys = make_keys()
    write_keyring(tmp_path, keys)
    with open_store(tmp_path, keys) as store:
        fill(store, 3)
    new = generate("clinic-01.example/evidence-bundle-2")
    ring = keys.keyring.with_keys(
        [
            keys.keyring.keys[0].model_copy(update={"valid_until": 2}),
            *keys.keyring.keys[1:],
            KeyEntry(vkey=new.public.vkey, role=KeyRole.BUNDLE, valid_from=3),
        ]
    )
    save_keyring(tmp_path / "keyring.json", ring)
    moved = Keys(new, keys.log, ring)
    with open_store(tmp_path, moved) as store:
        store.append(check_run(5), subjects=[TOPLEVEL])
    for report in (verify(tmp_path, ring), verify(tmp_path, None)):
        assert report.exit_code == 1, report.lines()
        assert any("no signed rotation entry introduces it" in e.message for e in report.errors), (
            report.lines()
        )


def test_unreflected_old_rotation_is_an_error_not_a_warning(tmp_path: Path) -> None:
    """A signed rotation the keyring does not show is the crash window of `rotate` only
    while it is the newest entry; later it means the keyring was edited back."""

    keys = make_keys()
    ring_path = write_keyring(tmp_path, keys)
    new = generate("clinic-01.example/evidence-bundle-2")
    with open_store(tmp_path, keys) as store:
        fill(store, 1)
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
    assert verify(tmp_path, None).exit_code == 3
    rotated = load_keyring(ring_path).rotated(KeyRole.BUNDLE, keys.bundle.public, new.public, 1)
    save_keyring(ring_path, rotated)
    with open_store(tmp_path, Keys(new, keys.log, rotated)) as store:
        store.append(check_run(3), subjects=[TOPLEVEL])
    save_keyring(ring_path, keys.keyring)  # edited back
    report = verify(tmp_path, keys.keyring)
    assert report.exit_code == 1
    assert any(e.path == "keyring.json" and "it lacks bundle key" in e.message for e in report.errors), (
        report.lines()
    )
