"""Hostile input to the evidence verbs (a review as an attacker who controls the host's disk,
and as an auditor who hands verify the wrong file): every case ends in a clear refusal that
names the file, never in a hang, a traceback or a file written where nobody asked."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import warnings
import zipfile
from pathlib import Path
from typing import Any

import pytest
from fixtures_evidence import Keys, fill, make_keys, open_store, pinned_copy, write_keyring

from conftest import REPO, Cli
from nixcomply.evidence import packet as packet_module
from nixcomply.evidence.checkpoint import parse_note
from nixcomply.evidence.cosignature import Witness, check_newest, generate_witness
from nixcomply.evidence.verify import verify

# A verify that hangs fails here instead of blocking the suite.
LIMIT = 120


@pytest.fixture
def store(tmp_path: Path, keys: Keys) -> Path:
    root = tmp_path / "state"
    with open_store(root, keys) as s:
        fill(s, 4)
    write_keyring(root, keys)
    return root


def nixcomply(*args: str | os.PathLike[str]) -> subprocess.CompletedProcess[str]:
    """The real command in its own process, with a deadline (a hang is a failure)."""
    return subprocess.run(
        [sys.executable, "-m", "nixcomply", *(os.fspath(a) for a in args)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=LIMIT,
        check=False,
    )


# -- export -o ----------------------------------------------------------------------------------


@pytest.fixture
def temp_files(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The directories atomic writes made their temporary files in."""
    made: list[str] = []
    real = tempfile.mkstemp

    def spy(*args: Any, **kwargs: Any) -> tuple[int, str]:
        made.append(os.fspath(kwargs.get("dir", "")))
        return real(*args, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", spy)
    return made


def test_export_to_a_directory_is_refused_before_anything_is_written(
    cli: Cli, store: Path, tmp_path: Path, temp_files: list[str]
) -> None:
    out = tmp_path / "packets"
    out.mkdir()
    r = cli(
        "evidence", "export", "--from", "2026-01-01", "--to", "2026-12-31", "-o", out, "--state-dir", store
    )
    assert r.code == 74, r.err
    assert f"{out}: is a directory" in r.err
    assert "give a file name" in r.err
    assert "Traceback" not in r.err
    # no temporary file beside the directory (as root, `-o /tmp` made one in /)
    assert temp_files == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["packets", "state"]


def test_export_into_a_missing_directory_is_refused(cli: Cli, store: Path, tmp_path: Path) -> None:
    out = tmp_path / "nowhere" / "packet.zip"
    r = cli(
        "evidence", "export", "--from", "2026-01-01", "--to", "2026-12-31", "-o", out, "--state-dir", store
    )
    assert r.code == 74, r.err
    assert f"the directory {out.parent} does not exist" in r.err


def test_export_writes_beside_its_output(
    cli: Cli, store: Path, tmp_path: Path, temp_files: list[str]
) -> None:
    out = tmp_path / "out" / "packet.zip"
    out.parent.mkdir()
    r = cli(
        "evidence", "export", "--from", "2026-01-01", "--to", "2026-12-31", "-o", out, "--state-dir", store
    )
    assert r.code == 0, r.err
    assert temp_files == [os.fspath(out.parent)]
    assert [p.name for p in out.parent.iterdir()] == ["packet.zip"]


# -- --pin-checkpoint and --witness files ----------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"garbage\n", "not a checkpoint (nor a pin.json): no blank line before the signature lines"),
        (b"\xff\xfe\n\n", "not a checkpoint (nor a pin.json): not valid UTF-8"),
        (
            b"origin\nnot-a-size\nAAAA\n\n\xe2\x80\x94 x AAAAAAAA\n",
            "not a checkpoint (nor a pin.json): tree size 'not-a-size'",
        ),
        (b'{"format": "nixcomply-evidence-pin/v1"}', "not a pin file: no 'checkpoint' field"),
        (b'{"format": "other"}', "not a pin file: not a nixcomply-evidence-pin/v1 document"),
        (
            b'{"format": "nixcomply-evidence-pin/v1", "checkpoint": "x\\n", "keyring": {"keys": 3}}',
            "not a pin file: keyring.keys: Input should be a valid list",
        ),
        (b'{"a":' * 100_000, "not a pin file"),
    ],
    ids=["garbage", "not-utf8", "bad-size", "no-checkpoint", "other-format", "bad-keyring", "deep"],
)
def test_a_pin_that_is_not_one_is_bad_input(
    cli: Cli, store: Path, tmp_path: Path, content: bytes, message: str
) -> None:
    pin = tmp_path / "pin.txt"
    pin.write_bytes(content)
    r = cli("evidence", "verify", store, "--keyring", store / "keyring.json", "--pin-checkpoint", pin)
    assert r.code == 2, r.out + r.err
    assert f"{pin}: {message}" in r.err
    assert "Traceback" not in r.err


@pytest.mark.parametrize("option", ["--pin-checkpoint", "--witness", "--keyring"])
@pytest.mark.parametrize("kind", ["fifo", "directory", "device"])
def test_option_files_that_are_not_regular_files_are_refused_without_waiting(
    store: Path, tmp_path: Path, option: str, kind: str
) -> None:
    path = tmp_path / "given"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "directory":
        path.mkdir()
    else:
        path.symlink_to("/dev/zero")
    r = nixcomply("evidence", "verify", store, option, path)
    assert r.returncode == 2, r.stdout + r.stderr
    assert f"{path}: is " in r.stderr
    assert "Traceback" not in r.stderr


# -- files planted in the store ------------------------------------------------------------------


def _planted(store: Path, where: str) -> Path:
    bundle = next(b for b in sorted(store.glob("evidence/*/*/*/*")) if (b / "attachments").is_dir())
    return {
        "envelope": bundle / "envelope.dsse.json",
        "statement": bundle / "statement.json",
        "attachment": next((bundle / "attachments").iterdir()),
        "checkpoint": store / "log" / "checkpoints" / "000000000002",
        "leaves": store / "log" / "leaves",
        "state": next((store / "log" / "state").iterdir()),
        "keyring": store / "keyring.json",
    }[where]


@pytest.mark.parametrize(
    "where", ["envelope", "statement", "attachment", "checkpoint", "leaves", "state", "keyring"]
)
@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "symlink-to-a-copy"])
def test_a_fifo_device_or_symlink_in_the_store_fails_verification_by_name(
    store: Path, tmp_path: Path, where: str, kind: str
) -> None:
    target = _planted(store, where)
    rel = target.relative_to(store).as_posix()
    pinned = tmp_path / "pinned-keyring.json"
    pinned.write_bytes((store / "keyring.json").read_bytes())
    copy = tmp_path / "copy-of-the-file"
    copy.write_bytes(target.read_bytes())
    target.unlink()
    if kind == "fifo":
        os.mkfifo(target)
    elif kind == "dev-zero":
        target.symlink_to("/dev/zero")
    else:
        target.symlink_to(copy)  # the same bytes, from elsewhere: still not evidence in place
    r = nixcomply("evidence", "verify", store, "--keyring", pinned, "--json")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    assert rel.rsplit("/", 1)[-1] in r.stdout or rel in r.stdout, r.stdout


@pytest.mark.parametrize("where", ["log", "log/checkpoints", "log/state", "log/cosignatures", "evidence"])
def test_a_symlinked_directory_is_never_followed(store: Path, keys: Keys, where: str) -> None:
    (store / "log" / "cosignatures").mkdir()
    real = store / f"{where}.elsewhere"
    (store / where).rename(real)
    (store / where).symlink_to(real.name)
    report = verify(store, keys.keyring, jobs=1)
    assert report.exit_code == 1
    assert any(p.path == where and "symbolic link" in p.message for p in report.errors), report.lines()


def test_a_state_database_that_is_not_a_file_is_not_taken_for_none(cli: Cli, store: Path) -> None:
    (store / "state.db").symlink_to("/dev/zero")
    r = cli("evidence", "verify", store, "--keyring", store / "keyring.json")
    assert r.code == 1, r.out + r.err
    assert "state.db: not a regular file" in r.err


# -- a keyring or pin taken from the directory being verified ----------------------------------


def _packet_dir(cli: Cli, store: Path, tmp_path: Path) -> Path:
    out = tmp_path / "packet.zip"
    r = cli(
        "evidence", "export", "--from", "2026-01-01", "--to", "2026-12-31", "-o", out, "--state-dir", store
    )
    assert r.code == 0, r.err
    unpacked = tmp_path / "packet"
    with zipfile.ZipFile(out) as zf:
        zf.extractall(unpacked)
    return unpacked


@pytest.mark.parametrize("how", ["the-file", "a-hard-link", "another-file-inside"])
@pytest.mark.parametrize("kind", ["store", "packet"])
def test_the_directorys_own_keyring_given_as_keyring_pins_nothing(
    cli: Cli, store: Path, tmp_path: Path, kind: str, how: str
) -> None:
    """`verify PACKET --keyring PACKET/keyring.json` said plain OK (exit 0, keyring_pinned
    true): the directory vouched for itself, and an impostor's packet passed the same way."""
    root = store if kind == "store" else _packet_dir(cli, store, tmp_path)
    given = root / "keyring.json"
    if how == "a-hard-link":
        given = tmp_path / "my-copy.json"
        os.link(root / "keyring.json", given)
    elif how == "another-file-inside":
        given = root / "log" / ".." / "keyring.json"
    r = cli("evidence", "verify", root, "--keyring", given, "--json")
    report = json.loads(r.out)
    assert r.code == 3, r.out + r.err
    assert report["keyring_pinned"] is False
    assert "a file of the directory verified" in report["keyring_source"]
    (warning,) = [w for w in report["warnings"] if w["path"] == "keyring.json"]
    assert "not a pinned copy" in warning["message"]
    assert f"--keyring {given}" in warning["message"]
    # A copy (other bytes on disk, same content) is the auditor's own: pinned.
    copy = tmp_path / "copy.json"
    copy.write_bytes((root / "keyring.json").read_bytes())
    r = cli("evidence", "verify", root, "--keyring", copy, "--json")
    assert r.code == 0, r.out
    assert json.loads(r.out)["keyring_pinned"] is True


def test_the_packets_own_pin_pins_nothing(cli: Cli, store: Path, tmp_path: Path) -> None:
    """--pin-checkpoint PACKET/pin.json pinned the packet's keyring and checkpoint from the
    packet itself."""
    root = _packet_dir(cli, store, tmp_path)
    r = cli("evidence", "verify", root, "--pin-checkpoint", root / "pin.json", "--json")
    report = json.loads(r.out)
    assert r.code == 3, r.out + r.err
    assert report["keyring_pinned"] is False
    assert report["pinned"] is None
    (warning,) = [w for w in report["warnings"] if w["path"] == str(root / "pin.json")]
    assert "it pins nothing" in warning["message"]
    # Kept outside, the same pin pins.
    kept = tmp_path / "kept-pin.json"
    kept.write_bytes((root / "pin.json").read_bytes())
    r = cli("evidence", "verify", root, "--pin-checkpoint", kept, "--json")
    assert r.code == 0, r.out
    assert json.loads(r.out)["keyring_pinned"] is True


def test_a_checkpoint_of_the_store_itself_is_no_pin(cli: Cli, store: Path, tmp_path: Path) -> None:
    pinned = tmp_path / "keyring.json"
    pinned.write_bytes((store / "keyring.json").read_bytes())
    own = store / "log" / "checkpoints" / "000000000004"
    r = cli("evidence", "verify", store, "--keyring", pinned, "--pin-checkpoint", own)
    assert r.code == 3, r.out + r.err
    assert "it pins nothing" in r.out + r.err


# -- witness cosignatures beside the checkpoints -------------------------------------------------


def _cosign(root: Path, witness: Witness, size: int) -> Path:
    note = (root / "log" / "checkpoints" / f"{size:012d}").read_bytes()
    path = root / "log" / "cosignatures" / f"{size:012d}"
    path.parent.mkdir(exist_ok=True)
    path.write_text(witness.cosign(parse_note(note).text))
    return path


def _forged(witness: Witness) -> str:
    """A cosignature line naming ``witness`` (its name and key id) with a wrong signature."""
    return witness.cosign("origin\n4\nAAAA\n")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "holds no cosignature/v1 line"),
        (b"garbage\n", "malformed cosignature line"),
        (b"\xff\n", "not valid UTF-8"),
        ("\u2014 w.example/x !!!!\n".encode(), "malformed cosignature line"),
        (b"\xe2\x80\x94 w " + b"A" * 70_000 + b"\n", "more than a cosignature file holds"),
    ],
    ids=["empty", "garbage", "not-utf8", "not-base64", "oversize"],
)
def test_a_malformed_cosignature_file_fails_without_witness(
    cli: Cli, store: Path, tmp_path: Path, content: bytes, message: str
) -> None:
    """Cosignature files were read only with --witness: garbage beside a checkpoint passed."""
    path = _cosign(store, generate_witness("w.example/x"), 4)
    path.write_bytes(content)
    r = cli("evidence", "verify", store, "--keyring", pinned_copy(store), "--json")
    assert r.code == 1, r.out + r.err
    report = json.loads(r.out)
    assert report["first_error"]["path"] == "log/cosignatures/000000000004"
    assert message in report["first_error"]["message"]


def test_cosignatures_by_an_unknown_witness_pass_and_a_known_ones_must_verify(
    cli: Cli, store: Path, tmp_path: Path
) -> None:
    witness, stranger = generate_witness("msp.example/witness"), generate_witness("other.example/w")
    _cosign(store, stranger, 2)
    _cosign(store, witness, 4)
    ring = pinned_copy(store)
    assert cli("evidence", "verify", store, "--keyring", ring).code == 0
    assert cli("evidence", "verify", store, "--keyring", ring, "--witness", witness.public.vkey).code == 0
    # A forged cosignature by the witness on an older checkpoint: only the newest was checked.
    (store / "log" / "cosignatures" / f"{2:012d}").write_text(_forged(witness))
    r = cli("evidence", "verify", store, "--keyring", ring, "--witness", witness.public.vkey, "--json")
    assert r.code == 1, r.out
    first = json.loads(r.out)["first_error"]
    assert first["path"] == "log/cosignatures/000000000002"
    assert "does not verify over checkpoint 2" in first["message"]


def test_a_packets_cosignatures_must_verify_by_the_witness_key_it_names(
    cli: Cli, store: Path, tmp_path: Path
) -> None:
    """A packet names its witness (witness.vkey): a cosignature by that key that does not
    verify passed unless the auditor also gave --witness."""
    witness = generate_witness("msp.example/witness")
    _cosign(store, witness, 4)
    packet = tmp_path / "p.zip"
    r = cli(
        "evidence", "export", "--from", "2026-01-01", "--to", "2026-12-31", "-o", packet,
        "--state-dir", store, "--witness", witness.public.vkey,
    )  # fmt: skip
    assert r.code == 0, r.err
    ring = pinned_copy(store)
    assert cli("evidence", "verify", packet, "--keyring", ring).code == 0
    forged = tmp_path / "forged.zip"
    with zipfile.ZipFile(packet) as src, zipfile.ZipFile(forged, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename == "log/cosignatures/000000000004":
                data = _forged(witness).encode()
            dst.writestr(info, data)
    r = cli("evidence", "verify", forged, "--keyring", ring, "--json")
    assert r.code == 1, r.out
    first = json.loads(r.out)["first_error"]
    assert (first["path"], "does not verify" in first["message"]) == ("log/cosignatures/000000000004", True)
    # export refuses to name a witness whose cosignatures in the store do not verify by it
    (store / "log" / "cosignatures" / f"{4:012d}").write_text(_forged(witness))
    r = cli(
        "evidence", "export", "--from", "2026-01-01", "--to", "2026-12-31", "-o", tmp_path / "q.zip",
        "--state-dir", store, "--witness", witness.public.vkey,
    )  # fmt: skip
    assert r.code == 1, r.err
    assert "log/cosignatures/000000000004" in r.err


def test_export_with_a_bad_witness_key_is_a_usage_error(cli: Cli, store: Path, tmp_path: Path) -> None:
    r = cli(
        "evidence", "export", "--from", "2026-01-01", "--to", "2026-12-31", "-o", tmp_path / "p.zip",
        "--state-dir", store, "--witness", "not+a+key",
    )  # fmt: skip
    assert r.code == 2, r.err
    assert "--witness:" in r.err
    assert "Traceback" not in r.err
    assert not (tmp_path / "p.zip").exists()


def test_a_fifo_as_the_newest_cosignature_is_refused_without_waiting(store: Path, tmp_path: Path) -> None:
    witness = generate_witness("msp.example/witness")
    path = _cosign(store, witness, 4)
    path.unlink()
    os.mkfifo(path)
    ring = pinned_copy(store)
    r = nixcomply("evidence", "verify", store, "--keyring", ring, "--witness", witness.public.vkey)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "log/cosignatures/000000000004" in r.stdout
    assert check_newest(store, witness.public, 4) is not None


# -- what the evidence wrote, on the auditor's terminal --------------------------------------------


@pytest.mark.parametrize(
    ("name", "printed"),
    [
        ("x\x1b]0;owned\x07", "x\\x1b]0;owned\\x07"),
        ("report\u202etxt.exe", "report\\u202etxt.exe"),
        ("csi\x9b2J", "csi\\x9b2J"),
    ],
    ids=["osc", "bidi", "c1"],
)
def test_file_names_planted_in_the_store_never_reach_the_terminal_raw(
    cli: Cli, store: Path, name: str, printed: str
) -> None:
    """verify printed the names of planted files as they were: an escape sequence in one ran
    in the auditor's terminal."""
    (store / name).write_text("planted")
    r = cli("evidence", "verify", store, "--keyring", pinned_copy(store))
    assert r.code == 1, r.out
    assert name not in r.out
    assert not any(not c.isprintable() for line in r.out.splitlines() for c in line), r.out
    assert printed in r.out, r.out
    r = cli("evidence", "verify", store, "--keyring", pinned_copy(store), "--json")
    assert name in json.loads(r.out)["first_error"]["path"]  # JSON carries it exactly, escaped


# -- a packet .zip built to confuse or exhaust the verifier ---------------------------------------


def _packet(cli: Cli, store: Path, tmp_path: Path) -> Path:
    out = tmp_path / "packet.zip"
    r = cli(
        "evidence", "export", "--from", "2026-01-01", "--to", "2026-12-31", "-o", out, "--state-dir", store
    )
    assert r.code == 0, r.err
    return out


def _rewrite(packet: Path, out: Path, extra: list[tuple[zipfile.ZipInfo | str, bytes]]) -> Path:
    with zipfile.ZipFile(packet) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info, src.read(info))
        for name, data in extra:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "Duplicate name": the point of the test
                dst.writestr(name, data)
    return out


def test_a_zip_with_two_members_of_one_name_is_refused(cli: Cli, store: Path, tmp_path: Path) -> None:
    """Extraction kept the last of two members named alike and verified it; another zip tool
    shows the auditor the first: one packet, two contents."""
    packet = _packet(cli, store, tmp_path)
    with zipfile.ZipFile(packet) as zf:
        name = next(n for n in zf.namelist() if n.endswith("statement.json"))
        original = zf.read(name)
    doubled = _rewrite(packet, tmp_path / "doubled.zip", [(name, original.replace(b"success", b"failure"))])
    r = cli("evidence", "verify", doubled, "--keyring", pinned_copy(store))
    assert r.code == 1, r.out + r.err
    assert f"{name!r} appears twice" in r.err
    assert "Traceback" not in r.err


def test_a_corrupted_member_is_tampering_not_a_crash(cli: Cli, store: Path, tmp_path: Path) -> None:
    packet = _packet(cli, store, tmp_path)
    data = bytearray(packet.read_bytes())
    with zipfile.ZipFile(packet) as zf:
        info = zf.getinfo("packet.json")
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    data[start + 5] ^= 0xFF  # inside the compressed bytes: the CRC no longer matches
    bad = tmp_path / "bad.zip"
    bad.write_bytes(bytes(data))
    r = cli("evidence", "verify", bad, "--keyring", pinned_copy(store))
    assert r.code in (1, 2), r.out + r.err
    assert "packet.json" in r.err
    assert "internal error" not in r.err
    assert "Traceback" not in r.err


def test_a_member_under_a_member_that_is_a_file_is_refused(cli: Cli, store: Path, tmp_path: Path) -> None:
    packet = _packet(cli, store, tmp_path)
    odd = _rewrite(packet, tmp_path / "odd.zip", [("packet.json/inside", b"x")])
    r = cli("evidence", "verify", odd, "--keyring", pinned_copy(store))
    assert r.code == 1, r.out + r.err
    assert "packet.json/inside" in r.err
    assert "Traceback" not in r.err


def test_a_zip_bomb_is_refused_before_it_is_extracted(
    cli: Cli, store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Members were read whole into memory and written out, whatever they unpacked to."""
    monkeypatch.setattr(packet_module, "MAX_MEMBER_BYTES", 4 * 1024 * 1024)
    packet = _packet(cli, store, tmp_path)
    bomb = _rewrite(packet, tmp_path / "bomb.zip", [("evidence/zeros", bytes(16 * 1024 * 1024))])
    assert bomb.stat().st_size < 1024 * 1024
    r = cli("evidence", "verify", bomb, "--keyring", pinned_copy(store))
    assert r.code == 1, r.out + r.err
    assert "'evidence/zeros' unpacks to 16777216 bytes" in r.err


def test_a_keyring_that_disagrees_with_the_pinned_one_is_said(cli: Cli, store: Path, tmp_path: Path) -> None:
    """With both --keyring and a pin.json, the pin's keyring (what the auditor pinned last
    time) was silently ignored: a keyring handed over with the new packet replaced it."""
    packet = _packet(cli, store, tmp_path)
    with zipfile.ZipFile(packet) as zf:
        pin = json.loads(zf.read("pin.json"))
    kept = tmp_path / "pin.json"
    kept.write_text(json.dumps(pin))
    ring = pinned_copy(store)
    r = cli("evidence", "verify", packet, "--keyring", ring, "--pin-checkpoint", kept)
    assert r.code == 0, r.out  # the same keyring: nothing to say
    stranger = make_keys().keyring.keys[0]
    pin["keyring"]["keys"].append(json.loads(stranger.model_dump_json()))
    kept.write_text(json.dumps(pin))
    r = cli("evidence", "verify", packet, "--keyring", ring, "--pin-checkpoint", kept, "--json")
    report = json.loads(r.out)
    assert r.code == 3, r.out
    (warning,) = [w for w in report["warnings"] if w["path"] == str(ring)]
    assert "differs from the keyring pinned in --pin-checkpoint" in warning["message"]
