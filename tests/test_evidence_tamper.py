"""Tampering is detected: any flipped byte in any stored file, a deleted or reordered bundle,
a truncated log, a swapped checkpoint, a rewritten history. Verify exits 1 and its first
error names the place.

The files at risk are everything under ``evidence/`` and ``log/``. ``keyring.json`` is the
trust anchor an auditor supplies (pinned, not read from the evidence) and ``scrub-salt`` is
a secret, not evidence; neither is covered here.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fixtures_evidence import TOPLEVEL, Keys, check_run, fill, open_store
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
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


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
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


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_reordered_bundles_are_detected(sample_store: Path, keys: Keys, data: st.DataObject) -> None:
    with copy_of(sample_store) as root:
        a, b = data.draw(st.lists(st.sampled_from(bundles(root)), min_size=2, max_size=2, unique=True))
        tmp = root / "swap"
        (root / a).rename(tmp)
        (root / b).rename(root / a)
        tmp.rename(root / b)
        assert_tampered(verify(root, keys.keyring), min(a, b))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
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


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
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
    from nixcomply.evidence.log import LastEntry, LogState, read_leaves, state_name
    from nixcomply.evidence.merkle import Frontier
    from nixcomply.evidence.statement import parse_statement

    frontier = Frontier()
    frontier.extend(read_leaves(root))
    last = bundles(root)[-1]
    statement = parse_statement((root / last / "statement.json").read_bytes())
    env = (root / last / "envelope.dsse.json").read_bytes()
    import hashlib

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
    from nixcomply.evidence.keys import generate

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
    from nixcomply.evidence.checkpoint import Checkpoint, parse_checkpoint_text, parse_note
    from nixcomply.evidence.keys import generate

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
    import base64

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
