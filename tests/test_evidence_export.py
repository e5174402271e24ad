"""The auditor's packet: what it holds, and that any change to its evidence is caught.

``README.md``, ``verify-report.json`` and the descriptive fields of ``packet.json``
(created_at, from, to) inform the auditor and are not evidence; ``keyring.json`` is the
trust anchor the auditor pins separately. Everything else is checked byte for byte.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import shutil
import tempfile
import zipfile
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from fixtures_evidence import TOPLEVEL, Keys, fill, generation_change, open_store, write_keyring
from fuzzing import examples
from hypothesis import given, settings
from hypothesis import strategies as st

from nixcomply.errors import UsageError, VerificationError
from nixcomply.evidence import export
from nixcomply.evidence.export import export_packet
from nixcomply.evidence.index import control_index
from nixcomply.evidence.merkle import verify_inclusion
from nixcomply.evidence.packet import unpack
from nixcomply.evidence.statement import parse_statement
from nixcomply.evidence.verify import Report, verify, verify_path
from nixcomply.evidence.verify import verify as real_verify

INFORMATIONAL = {"README.md", "verify-report.json", "packet.json", "keyring.json"}


@pytest.fixture(scope="module")
def packet_dir(sample_store: Path, keys: Keys, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("packet")
    export_packet(sample_store, keys.keyring, out / "p.zip", start=date(2026, 3, 1), end=date(2026, 3, 1))
    unpack(out / "p.zip", out / "p")
    return out / "p"


def packet_files(root: Path) -> list[str]:
    out = []
    for directory, _dirs, names in os.walk(root):
        for name in names:
            rel = Path(directory, name).relative_to(root).as_posix()
            if rel not in INFORMATIONAL:
                out.append(rel)
    return sorted(out)


def test_packet_contents(packet_dir: Path, keys: Keys) -> None:
    meta = json.loads((packet_dir / "packet.json").read_text())
    assert meta["format"] == "nixcomply-evidence-packet/v2"
    assert (meta["tree_size"], len(meta["entries"])) == (9, 9)
    proof = json.loads((packet_dir / "proofs/4.json").read_text())
    leaves = (packet_dir / "log/leaves").read_bytes()

    assert verify_inclusion(
        leaves[4 * 32 : 5 * 32],
        4,
        9,
        [base64.b64decode(h) for h in proof["inclusion_path"]],
        base64.b64decode(proof["root"]),
    )
    report = verify(packet_dir, keys.keyring)
    assert report.exit_code == 0, report.lines()
    assert report.kind == "packet"
    # bundles, attachments, proofs, checkpoints, leaves, index, pin.json
    assert len(packet_files(packet_dir)) == 9 * 2 + 7 + 9 + 9 + 1 + 1 + 1


@settings(max_examples=examples(80))
@given(data=st.data())
def test_any_flipped_byte_in_a_packet_is_detected(packet_dir: Path, keys: Keys, data: st.DataObject) -> None:
    rel = data.draw(st.sampled_from(packet_files(packet_dir)), label="file")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "p"
        shutil.copytree(packet_dir, root)
        content = bytearray((root / rel).read_bytes())
        content[data.draw(st.integers(0, len(content) - 1), label="offset")] ^= data.draw(st.integers(1, 255))
        (root / rel).write_bytes(bytes(content))
        report = verify(root, keys.keyring, jobs=1)
        assert report.exit_code == 1, report.lines()
        first = report.first_error()
        assert first is not None
        place = "/".join(rel.split("/")[:5]) if rel.startswith("evidence/") else rel
        assert place in (first.path or "") + first.message, report.lines()


def test_packet_index_entries_must_match(packet_dir: Path, keys: Keys, tmp_path: Path) -> None:
    root = tmp_path / "p"
    shutil.copytree(packet_dir, root)
    meta = json.loads((root / "packet.json").read_text())
    meta["entries"][2]["envelope_sha256"] = "0" * 64
    meta["origin"] = "someone.else/log"
    (root / "packet.json").write_text(json.dumps(meta))
    report = verify(root, keys.keyring)
    messages = [str(e) for e in report.errors]
    assert any("index does not match" in m for m in messages)
    assert any("names log 'someone.else/log'" in m for m in messages)


def test_bundle_removed_from_a_packet_is_detected(packet_dir: Path, keys: Keys, tmp_path: Path) -> None:
    root = tmp_path / "p"
    shutil.copytree(packet_dir, root)
    victim = sorted(root.glob("evidence/*/*/*/*"))[5]
    shutil.rmtree(victim)
    report = verify(root, keys.keyring)
    first = report.first_error()
    assert first is not None
    assert first.seq == 5
    assert "bundle missing" in first.message


def test_unsafe_zip_members_are_refused(tmp_path: Path, keys: Keys) -> None:
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr("../escape.txt", "x")
    with pytest.raises(VerificationError, match="unsafe member"):
        verify_path(bad, keys.keyring)
    assert not (tmp_path / "escape.txt").exists()


def test_export_rejects_backwards_period(sample_store: Path, keys: Keys, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="before"):
        export_packet(
            sample_store, keys.keyring, tmp_path / "p.zip", start=date(2026, 3, 2), end=date(2026, 3, 1)
        )


# -- 9.4: a packet proves it holds every entry of its period ------------------------------


@pytest.fixture(scope="module")
def days_store(tmp_path_factory: pytest.TempPathFactory, keys: Keys) -> Path:
    """45 entries: 0..14 observed on 2026-03-01, 15..38 on 03-02, 39..44 on 03-03."""
    root = tmp_path_factory.mktemp("days") / "store"
    with open_store(root, keys, durable=False) as store:
        fill(store, 45)
    write_keyring(root, keys)
    return root


@pytest.fixture
def day_packet(days_store: Path, keys: Keys, tmp_path: Path) -> Path:
    export_packet(days_store, keys.keyring, tmp_path / "p.zip", start=date(2026, 3, 2), end=date(2026, 3, 2))
    unpack(tmp_path / "p.zip", tmp_path / "p")
    return tmp_path / "p"


def drop(root: Path, seq: int) -> None:
    """Remove an entry and every trace of it a packet has: bundle, proof, listing, index rows."""

    meta = json.loads((root / "packet.json").read_text())
    (victim,) = [e for e in meta["entries"] if e["seq"] == seq]
    shutil.rmtree(root / victim["path"])
    (root / f"proofs/{seq}.json").unlink()
    meta["entries"] = [e for e in meta["entries"] if e["seq"] != seq]
    write_meta(root, meta)
    rows = [
        (
            e["seq"],
            e["path"],
            e["bundle_id"],
            parse_statement((root / e["path"] / "statement.json").read_bytes()),
        )
        for e in meta["entries"]
        if e["role"] == "period"
    ]
    (root / "index/controls.csv").write_bytes(control_index(rows))


def write_meta(root: Path, meta: dict[str, object]) -> None:
    (root / "packet.json").write_text(json.dumps(meta, indent=2) + "\n")


def test_day_packet_holds_the_period_and_its_boundaries(day_packet: Path, keys: Keys) -> None:
    meta = json.loads((day_packet / "packet.json").read_text())
    assert meta["period"] == {"start": 15, "end": 39}
    roles = {e["seq"]: e["role"] for e in meta["entries"]}
    assert roles == {14: "before", 39: "after", **dict.fromkeys(range(15, 39), "period")}
    report = verify(day_packet, keys.keyring)
    assert report.exit_code == 0, report.lines()
    assert report.period == {
        "start": date(2026, 3, 2),
        "end": date(2026, 3, 2),
        "first_seq": 15,
        "end_seq": 39,
    }
    assert "complete for 2026-03-02..2026-03-02 (entries 15..38)" in report.lines()[-2]


def test_omitted_bundle_with_all_its_traces_is_detected(day_packet: Path, keys: Keys) -> None:
    """Removing a bundle, its proof, its packet.json entry and its index rows passed:
    packet.json is unsigned and only listed entries were checked."""
    drop(day_packet, 20)
    report = verify(day_packet, keys.keyring)
    first = report.first_error()
    assert first is not None
    assert first.seq == 20, report.lines()
    assert "bundle missing (period entry" in first.message


@pytest.mark.parametrize("end", ["first", "last"])
def test_period_shrunk_around_an_omitted_entry_is_detected(day_packet: Path, keys: Keys, end: str) -> None:
    """Dropping the period's first (or last) entry and moving the period's edge past it
    leaves a boundary entry observed inside the period."""
    meta = json.loads((day_packet / "packet.json").read_text())
    seq = 15 if end == "first" else 38
    drop(day_packet, 14 if end == "first" else 39)  # the old boundary goes too
    meta = json.loads((day_packet / "packet.json").read_text())
    for e in meta["entries"]:
        if e["seq"] == seq:
            e["role"] = "before" if end == "first" else "after"
    meta["period"] = {"start": 16, "end": 39} if end == "first" else {"start": 15, "end": 38}
    write_meta(day_packet, meta)
    drop(day_packet, seq)
    report = verify(day_packet, keys.keyring)
    assert report.exit_code == 1
    first = report.first_error()
    assert first is not None
    assert first.seq == seq, report.lines()
    assert "bundle missing" in first.message


def test_boundary_observed_inside_the_period_is_detected(day_packet: Path, keys: Keys) -> None:
    meta = json.loads((day_packet / "packet.json").read_text())
    drop(day_packet, 14)
    meta = json.loads((day_packet / "packet.json").read_text())
    for e in meta["entries"]:
        if e["seq"] == 15:
            e["role"] = "before"
    meta["period"]["start"] = 16
    write_meta(day_packet, meta)

    rows = [
        (
            e["seq"],
            e["path"],
            e["bundle_id"],
            parse_statement((day_packet / e["path"] / "statement.json").read_bytes()),
        )
        for e in meta["entries"]
        if e["role"] == "period"
    ]
    (day_packet / "index/controls.csv").write_bytes(control_index(rows))
    report = verify(day_packet, keys.keyring)
    first = report.first_error()
    assert first is not None
    assert first.seq == 15, report.lines()
    assert "the entry before the period was observed on 2026-03-02, not before 2026-03-02" in first.message


def test_edited_pin_json_is_detected(day_packet: Path, keys: Keys) -> None:
    pin = json.loads((day_packet / "pin.json").read_text())
    pin["keyring"]["keys"] = pin["keyring"]["keys"][:1]
    (day_packet / "pin.json").write_text(json.dumps(pin, indent=2) + "\n")
    report = verify(day_packet, keys.keyring)
    assert [e.path for e in report.errors] == ["pin.json"], report.lines()


def test_clock_that_went_back_is_pointed_out(tmp_path: Path, keys: Keys) -> None:

    root = tmp_path / "store"
    days = [1, 2, 1, 3]
    with open_store(root, keys, durable=False) as store:
        for i, day in enumerate(days):
            store.append(
                generation_change(i, when=datetime(2026, 3, day, 12, tzinfo=UTC)), subjects=[TOPLEVEL]
            )
    export_packet(root, keys.keyring, tmp_path / "p.zip", start=date(2026, 3, 1), end=date(2026, 3, 1))
    report = verify_path(tmp_path / "p.zip", keys.keyring)
    assert report.exit_code == 3, report.lines()
    assert report.period is not None
    assert (report.period["first_seq"], report.period["end_seq"]) == (0, 3)
    assert any(w.seq == 1 and "the host's clock went back" in w.message for w in report.warnings)


def test_export_holds_the_append_lock_while_it_reads(
    days_store: Path, keys: Keys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Export verified the store and then read it again without the lock: an append in
    between made it pack something other than what it checked."""

    seen: list[bool] = []

    def verify_then_try_to_append(*args: Any, **kwargs: Any) -> Report:
        report = real_verify(*args, **kwargs)
        fd = os.open(days_store / "log/append.lock", os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            seen.append(True)  # an appender would wait here
        else:
            seen.append(False)
        finally:
            os.close(fd)
        return report

    monkeypatch.setattr("nixcomply.evidence.export.verify", verify_then_try_to_append)
    export.export_packet(
        days_store, keys.keyring, tmp_path / "p.zip", start=date(2026, 3, 1), end=date(2026, 3, 1)
    )
    assert seen == [True]
