"""Tampering is detected: any flipped byte in any stored file, a deleted or reordered bundle,
a truncated log, a swapped checkpoint, a rewritten history. Verify exits 1 and its first
error names the place.

The files at risk are everything under ``evidence/`` and ``log/``. ``keyring.json`` is the
trust anchor an auditor supplies (pinned, not read from the evidence) and ``scrub-salt`` is
a secret, not evidence; neither is covered here.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from fixtures_evidence import TOPLEVEL, Keys, check_run, fill, open_store
from fuzzing import examples
from hypothesis import given, settings
from hypothesis import strategies as st

from nixcomply.evidence.checkpoint import Checkpoint, parse_checkpoint_text, parse_note
from nixcomply.evidence.keys import generate
from nixcomply.evidence.log import LastEntry, LogHead, LogState, read_leaves, state_name
from nixcomply.evidence.merkle import Frontier, leaf_hash
from nixcomply.evidence.statement import parse_statement
from nixcomply.evidence.verify import Report, VerifyProblem, verify


def stored_files(root: Path) -> list[str]:
    files = []
    for top in ("evidence", "log"):
        for directory, _dirs, names in os.walk(root / top):
            for name in names:
                rel = Path(directory, name).relative_to(root).as_posix()
                if rel != "log/append.lock":
                    files.append(rel)
    return sorted(files)


def bundles(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.glob("evidence/*/*/*/*"))


@contextmanager
def copy_of(store: Path) -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as tmp:
        dest = Path(tmp) / "store"
        shutil.copytree(store, dest)
        yield dest


def names_place(finding: VerifyProblem, place: str) -> bool:
    return place in (finding.path or "") or place in finding.message


def assert_tampered(report: Report, place: str) -> None:
    assert report.exit_code == 1, report.lines()
    first = report.first_error()
    assert first is not None
    assert names_place(first, place), f"first error {first} does not name {place}: {report.lines()}"


def place_of(rel: str) -> str:
    """What a report must name for a change in ``rel``: the bundle, or the log file."""
    parts = rel.split("/")
    return "/".join(parts[:5]) if parts[0] == "evidence" else rel


def test_untouched_sample_verifies(sample_store: Path, keys: Keys) -> None:
    report = verify(sample_store, keys.keyring)
    assert report.exit_code == 0, report.lines()
    assert len(stored_files(sample_store)) == 36  # 9 bundles: 25 bundle files, leaves, state, 9 checkpoints


@settings(max_examples=examples(150))
@given(data=st.data())
def test_any_flipped_byte_is_detected(sample_store: Path, keys: Keys, data: st.DataObject) -> None:
    files = stored_files(sample_store)
    rel = data.draw(st.sampled_from(files), label="file")
    with copy_of(sample_store) as root:
        path = root / rel
        content = bytearray(path.read_bytes())
        offset = data.draw(st.integers(0, len(content) - 1), label="offset")
        content[offset] ^= data.draw(st.integers(1, 255), label="xor")
        path.write_bytes(bytes(content))
        assert_tampered(verify(root, keys.keyring, jobs=1), place_of(rel))


def flip_into(envelope: bytes, field: bytes, accept: Callable[[bytes], bool]) -> tuple[int, int]:
    """A single flipped byte of ``envelope`` (offset, xor) that changes the signed payload
    only inside the JSON value after ``field`` and leaves a payload ``accept`` takes."""

    obj = json.loads(envelope)
    payload = base64.b64decode(obj["payload"])
    start = envelope.index(obj["payload"].encode())
    at = payload.index(field) + len(field)
    alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    for char in range(at * 4 // 3, (at + 64) * 4 // 3):
        for other in alphabet:
            original = envelope[start + char]
            if other == original:
                continue
            flipped = bytearray(envelope)
            flipped[start + char] = other
            try:
                changed = base64.b64decode(json.loads(bytes(flipped))["payload"], validate=True)
            except ValueError:
                continue
            if changed != payload and accept(changed):
                return start + char, original ^ other
    raise AssertionError(f"no single flipped byte changes {field!r} acceptably")


def test_changed_chain_checkpoint_is_blamed_on_its_bundle(store_copy: Path, keys: Keys) -> None:
    """The seen CI failure: a flipped byte in bundle 3's envelope changed the (now unsigned)
    ``chain.checkpoint``, and the verifier judged checkpoint 3 by it, reporting entry 2
    first. Nothing read from an envelope that does not verify may judge anything else."""

    bundle = bundles(store_copy)[3]
    path = store_copy / bundle / "envelope.dsse.json"
    envelope = path.read_bytes()
    original = parse_statement(base64_payload(envelope)).predicate.chain

    def only_checkpoint_changed(payload: bytes) -> bool:
        try:
            chain = parse_statement(payload).predicate.chain
        except ValueError:
            return False
        return chain is not None and original is not None and chain.checkpoint != original.checkpoint

    offset, xor = flip_into(envelope, b'"checkpoint":"', only_checkpoint_changed)
    flipped = bytearray(envelope)
    flipped[offset] ^= xor
    path.write_bytes(bytes(flipped))
    report = verify(store_copy, keys.keyring, jobs=1)
    assert_tampered(report, bundle)
    assert all(f.seq == 3 or f.seq is None for f in report.errors), report.lines()


def test_changed_chain_seq_is_blamed_on_its_bundle(store_copy: Path, keys: Keys) -> None:
    """An envelope whose signature fails cannot claim another entry's place: bundle 5
    rewritten to say ``seq`` 1 is reported as entry 5, not as a second entry 1."""

    bundle = bundles(store_copy)[5]
    path = store_copy / bundle / "envelope.dsse.json"
    envelope = path.read_bytes()

    def claims_an_earlier_entry(payload: bytes) -> bool:
        try:
            chain = parse_statement(payload).predicate.chain
        except ValueError:
            return False
        return chain is not None and chain.seq < 5

    offset, xor = flip_into(envelope, b'"chain":{"seq":', claims_an_earlier_entry)
    flipped = bytearray(envelope)
    flipped[offset] ^= xor
    path.write_bytes(bytes(flipped))
    report = verify(store_copy, keys.keyring, jobs=1)
    assert_tampered(report, bundle)
    first = report.first_error()
    assert first is not None
    assert first.seq == 5, report.lines()


def base64_payload(envelope: bytes) -> bytes:

    return base64.b64decode(json.loads(envelope)["payload"])


@settings(max_examples=examples(20))
@given(data=st.data())
def test_deleted_bundle_is_detected(sample_store: Path, keys: Keys, data: st.DataObject) -> None:
    with copy_of(sample_store) as root:
        victim = data.draw(st.sampled_from(bundles(root)))
        shutil.rmtree(root / victim)
        seq = int(victim.rsplit("-", 2)[1])
        report = verify(root, keys.keyring)
        assert report.exit_code == 1
        first = report.first_error()
        assert first is not None
        assert first.seq == seq
        assert "bundle missing" in first.message


@settings(max_examples=examples(20))
@given(data=st.data())
def test_reordered_bundles_are_detected(sample_store: Path, keys: Keys, data: st.DataObject) -> None:
    with copy_of(sample_store) as root:
        a, b = data.draw(st.lists(st.sampled_from(bundles(root)), min_size=2, max_size=2, unique=True))
        tmp = root / "swap"
        (root / a).rename(tmp)
        (root / b).rename(root / a)
        tmp.rename(root / b)
        assert_tampered(verify(root, keys.keyring), min(a, b))


@settings(max_examples=examples(25))
@given(data=st.data())
def test_truncated_log_is_detected(sample_store: Path, keys: Keys, data: st.DataObject) -> None:
    with copy_of(sample_store) as root:
        leaves = root / "log/leaves"
        size = leaves.stat().st_size
        keep = data.draw(st.integers(0, size - 1))
        os.truncate(leaves, keep)
        report = verify(root, keys.keyring)
        assert report.exit_code == 1, report.lines()
        assert any("log/leaves" in (f.path or "") or "log has" in f.message for f in report.errors)


@settings(max_examples=examples(20))
@given(data=st.data())
def test_swapped_checkpoints_are_detected(sample_store: Path, keys: Keys, data: st.DataObject) -> None:
    with copy_of(sample_store) as root:
        names = sorted(p.name for p in (root / "log/checkpoints").iterdir())
        a, b = data.draw(st.lists(st.sampled_from(names), min_size=2, max_size=2, unique=True))
        pa, pb = root / "log/checkpoints" / a, root / "log/checkpoints" / b
        da, db = pa.read_bytes(), pb.read_bytes()
        pa.write_bytes(db)
        pb.write_bytes(da)
        assert_tampered(verify(root, keys.keyring), f"log/checkpoints/{min(a, b)}")


def test_newest_checkpoint_replaced_by_an_older_one(store_copy: Path, keys: Keys) -> None:
    cps = sorted((store_copy / "log/checkpoints").iterdir())
    cps[-1].write_bytes(cps[-2].read_bytes())
    assert_tampered(verify(store_copy, keys.keyring), f"log/checkpoints/{cps[-1].name}")


def test_removed_checkpoint_is_detected(store_copy: Path, keys: Keys) -> None:
    cps = sorted((store_copy / "log/checkpoints").iterdir())
    cps[3].unlink()
    assert_tampered(verify(store_copy, keys.keyring), f"log/checkpoints/{cps[3].name}")


def test_extra_file_in_a_bundle_is_detected(store_copy: Path, keys: Keys) -> None:
    bundle = bundles(store_copy)[2]
    (store_copy / bundle / "attachments").mkdir(exist_ok=True)
    (store_copy / bundle / "attachments" / "planted.txt").write_text("not signed")
    assert_tampered(verify(store_copy, keys.keyring), bundle)


def test_coordinated_truncation_needs_a_pin(tmp_path: Path, keys: Keys) -> None:
    root = tmp_path / "store"
    with open_store(root, keys, durable=False) as store:
        fill(store, 6)
    pin = (root / "log/checkpoints/000000000006").read_bytes()
    with open_store(root, keys, durable=False) as store:
        store.append(check_run(9), subjects=[TOPLEVEL])
    assert verify(root, keys.keyring, pin=pin).exit_code == 0

    # Someone with write access removes the last two entries and everything that names them.
    for b in bundles(root)[-2:]:
        shutil.rmtree(root / b)
    os.truncate(root / "log/leaves", 5 * 32)
    for n in (6, 7):
        (root / f"log/checkpoints/{n:012d}").unlink()
    state_dir = root / "log/state"
    for p in state_dir.iterdir():
        p.unlink()

    frontier = Frontier()
    frontier.extend(read_leaves(root))
    last = bundles(root)[-1]
    statement = parse_statement((root / last / "statement.json").read_bytes())
    env = (root / last / "envelope.dsse.json").read_bytes()

    state = LogState(
        frontier, LastEntry(4, statement.predicate.bundle_id or "", last, hashlib.sha256(env).hexdigest())
    )
    (state_dir / state_name(5)).write_bytes(state.to_bytes())

    # Without a pin the shorter log is self-consistent; with the pin the truncation shows.
    assert verify(root, keys.keyring).exit_code == 0
    report = verify(root, keys.keyring, pin=pin)
    assert report.exit_code == 1
    first = report.first_error()
    assert first is not None
    assert "truncated" in first.message
    assert report.pinned == {"size": 6, "consistent": False}


def test_rewritten_history_fails_the_pin(tmp_path: Path, keys: Keys) -> None:
    honest, forged = tmp_path / "honest", tmp_path / "forged"
    with open_store(honest, keys, durable=False) as store:
        fill(store, 5)
    pin = (honest / "log/checkpoints/000000000004").read_bytes()
    # The same keys sign a different history (a stolen key cannot rewrite what was pinned).
    with open_store(forged, keys, durable=False) as store:
        store.append(check_run(0), subjects=[TOPLEVEL])
        fill(store, 5)
    assert verify(forged, keys.keyring).exit_code == 0
    report = verify(forged, keys.keyring, pin=pin)
    assert report.exit_code == 1
    first = report.first_error()
    assert first is not None
    assert "rewritten" in first.message


def test_pin_from_another_log_or_key_is_rejected(store_copy: Path, keys: Keys, tmp_path: Path) -> None:

    other = Keys(keys.bundle, generate("other.example/log"), keys.keyring)
    with open_store(tmp_path / "other", other, durable=False) as store:
        fill(store, 2)
    pin = (tmp_path / "other/log/checkpoints/000000000002").read_bytes()
    report = verify(store_copy, keys.keyring, pin=pin)
    assert report.exit_code == 1
    first = report.first_error()
    assert first is not None
    assert "pinned checkpoint" in first.message


def test_resigned_old_checkpoint_is_caught_by_its_commitment(store_copy: Path, keys: Keys) -> None:
    """A historical checkpoint whose signatures still verify but whose bytes changed (here:
    an extra cosignature) no longer matches what the next entry committed to."""

    path = store_copy / "log/checkpoints/000000000004"
    cp = parse_checkpoint_text(parse_note(path.read_bytes()).text)
    path.write_bytes(Checkpoint(cp.origin, cp.size, cp.root).sign([keys.log, generate("witness.example/w")]))
    for deep in (False, True):
        report = verify(store_copy, keys.keyring, all_checkpoints=deep)
        assert_tampered(report, "log/checkpoints/000000000004")
        first = report.first_error()
        assert first is not None
        assert "committed to" in first.message


def test_all_checkpoints_verifies_every_signature(sample_store: Path, keys: Keys) -> None:
    fast = verify(sample_store, keys.keyring)
    deep = verify(sample_store, keys.keyring, all_checkpoints=True)
    assert fast.exit_code == deep.exit_code == 0
    assert fast.checkpoints_verified == deep.checkpoints_verified == 9


def test_equivalent_respellings_are_caught(store_copy: Path, keys: Keys) -> None:
    """Edits that parse to the same values are still edits: the append state must be in the
    store's own form, and a checkpoint signature in canonical base64."""

    (state,) = (store_copy / "log/state").iterdir()
    state.write_bytes(state.read_bytes().replace(b'"size": 9', b'"size":  9'))
    assert_tampered(verify(store_copy, keys.keyring), f"log/state/{state.name}")
    state.write_bytes(state.read_bytes().replace(b'"size":  9', b'"size": 9'))
    assert verify(store_copy, keys.keyring).exit_code == 0

    newest = store_copy / "log/checkpoints/000000000009"
    text = newest.read_text()
    blob = text.rstrip("\n").rsplit(" ", 1)[1]
    assert blob.endswith("=") and not blob.endswith("==")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    respelled = blob[:-2] + alphabet[alphabet.index(blob[-2]) ^ 1] + "="
    assert base64.b64decode(respelled) == base64.b64decode(blob)  # same bytes, other spelling
    newest.write_text(text.replace(blob, respelled))
    assert_tampered(verify(store_copy, keys.keyring), "log/checkpoints/000000000009")


# -- 9.6: nothing may lie where it does not belong ---------------------------------------


@pytest.mark.parametrize(
    "place",
    [
        "planted.txt",
        "evidence.bak",
        "log/planted",
        "log/state/planted.json",
        "log/state/000000000009.json.bak",
        "log/checkpoints/.hidden",
        "log/checkpoints/000000000009.orig",
        "log/cosignatures/000000000042",
        "evidence/2026/03/01/.hidden",
        "evidence/2026/notes.txt",
    ],
)
def test_unexpected_files_fail_and_are_named(store_copy: Path, keys: Keys, place: str) -> None:
    """Every place has a fixed list of what may be there; the earlier verifier ignored an
    extra file at the store root, in log/, log/state/ and hidden among the checkpoints."""
    path = store_copy / place
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("not evidence\n")
    report = verify(store_copy, keys.keyring)
    assert report.exit_code == 1, report.lines()
    assert [e.path for e in report.errors] == [place], report.lines()


def test_leftover_of_an_interrupted_write_is_a_warning(store_copy: Path, keys: Keys) -> None:
    (store_copy / ".keyring.json.k3j_x9aZ.tmp").write_text("{}")
    report = verify(store_copy, keys.keyring)
    assert report.exit_code == 3, report.lines()
    assert report.warnings[0].path == ".keyring.json.k3j_x9aZ.tmp"
    assert "interrupted write" in report.warnings[0].message


def forged_pending(root: Path, seq: int, bundle: str) -> None:

    envelope = (root / bundle / "envelope.dsse.json").read_bytes()
    record = {
        "seq": seq,
        "path": bundle,
        "bundle_id": bundle.rsplit("/", 1)[1],
        "envelope_sha256": hashlib.sha256(envelope).hexdigest(),
        "leaf": leaf_hash(envelope).hex(),
    }
    (root / "log/pending.json").write_bytes((json.dumps(record) + "\n").encode())


def test_forged_pending_record_fails(store_copy: Path, keys: Keys) -> None:
    """A pending.json that no crash can leave (here: naming bundle 2 as the next entry)
    only warned that the next open would undo it."""
    forged_pending(store_copy, 9, bundles(store_copy)[2])
    report = verify(store_copy, keys.keyring)
    assert report.exit_code == 1, report.lines()
    first = report.first_error()
    assert first is not None
    assert first.path == "log/pending.json"
    assert "names the bundle of entry 2" in first.message


def test_pending_record_of_a_finished_append_fails_against_the_host_record(
    store_copy: Path, keys: Keys
) -> None:
    """Entry 8 complete with its checkpoint is what a crash just before removing
    pending.json leaves, unless the host recorded the append as finished."""

    forged_pending(store_copy, 8, bundles(store_copy)[8])
    assert verify(store_copy, keys.keyring).exit_code == 3
    digest = hashlib.sha256((store_copy / "log/checkpoints/000000000009").read_bytes()).hexdigest()
    report = verify(store_copy, keys.keyring, host_head=LogHead(9, digest))
    assert report.exit_code == 1
    assert any(e.path == "log/pending.json" and "after a finished append" in e.message for e in report.errors)
