"""The auditor's packet: what it holds, and that any change to its evidence is caught.

``README.md``, ``verify-report.json`` and the descriptive fields of ``packet.json``
(created_at, from, to) inform the auditor and are not evidence; ``keyring.json`` is the
trust anchor the auditor pins separately. Everything else is checked byte for byte.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import zipfile
from datetime import date
from pathlib import Path

import pytest
from fixtures_evidence import Keys
from fuzzing import examples
from hypothesis import given, settings
from hypothesis import strategies as st

from nixcomply.errors import UsageError, VerificationError
from nixcomply.evidence.export import export_packet
from nixcomply.evidence.merkle import verify_inclusion
from nixcomply.evidence.packet import unpack
from nixcomply.evidence.verify import verify, verify_path

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
    import base64

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
        assert place in (first.path or "") + first.message or any(
            place in (f.path or "") + f.message for f in report.errors
        ), report.lines()


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
