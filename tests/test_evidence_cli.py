"""``nixcomply evidence ...`` end to end through the CLI: real keys, real stores, real zips.
Bad input exits 2 with a message naming the file or field, never a traceback."""

from __future__ import annotations

import json
import stat
import zipfile
from datetime import date
from pathlib import Path

import pytest
from fixtures_evidence import (
    TOPLEVEL,
    Keys,
    attestation,
    fill,
    open_store,
    pinned_copy,
    write_key_files,
    write_keyring,
)

from conftest import Cli, CliResult
from nixcomply.evidence.keyring import load_keyring
from nixcomply.evidence.statement import KeyRole

CONTROLS_MAP = """citation,title,kind,requirement,coverage,controls,checks,evidence
164.308(a)(5)(i),Security awareness and training,standard,required,attestation,,,signed attestation
164.312(d),Person or entity authentication,standard,required,partial,ssh.password-auth-disabled;ssh.root-login-disabled,sshd_effective,check runs
"""


def no_traceback(r: CliResult) -> None:
    assert "Traceback" not in r.err
    assert "internal error" not in r.err


@pytest.fixture
def store(tmp_path: Path, keys: Keys) -> Path:
    root = tmp_path / "state"
    with open_store(root, keys) as s:
        fill(s, 6)
    write_keyring(root, keys)
    return root


@pytest.fixture
def key_files(tmp_path: Path, keys: Keys) -> tuple[Path, Path]:
    d = tmp_path / "keys"
    d.mkdir()
    return write_key_files(d, keys)


def test_keygen_writes_private_key_and_keyring(cli: Cli, tmp_path: Path) -> None:
    ring = tmp_path / "state" / "keyring.json"
    r = cli(
        "evidence",
        "keygen",
        "--role",
        "bundle",
        "--name",
        "c1/bundle",
        "--out",
        tmp_path / "b.key",
        "--keyring",
        ring,
    )
    assert r.code == 0, r.err
    vkey = r.out.strip()
    assert vkey.startswith("c1/bundle+")
    assert stat.S_IMODE((tmp_path / "b.key").stat().st_mode) == 0o600
    assert (tmp_path / "b.key.pub").read_text().strip() == vkey
    assert [e.vkey for e in load_keyring(ring).keys] == [vkey]
    r = cli(
        "evidence",
        "keygen",
        "--role",
        "log",
        "--name",
        "c1/log",
        "--out",
        tmp_path / "l.key",
        "--keyring",
        ring,
    )
    assert r.code == 0, r.err
    assert {e.role for e in load_keyring(ring).keys} == {KeyRole.BUNDLE, KeyRole.LOG}

    again = cli("evidence", "keygen", "--role", "bundle", "--out", tmp_path / "b2.key", "--keyring", ring)
    assert again.code == 2
    assert "already has an active bundle key" in again.err
    assert "evidence rotate" in again.err
    assert not (tmp_path / "b2.key").exists()
    exists = cli("evidence", "keygen", "--role", "bundle", "--out", tmp_path / "b.key")
    assert exists.code == 2
    assert "refusing to overwrite" in exists.err
    bad = cli("evidence", "keygen", "--role", "bundle", "--name", "has space", "--out", tmp_path / "x.key")
    assert bad.code == 2
    assert "--name" in bad.err
    for r in (again, exists, bad):
        no_traceback(r)


def test_verify_ok_json_and_tampered(cli: Cli, store: Path) -> None:
    r = cli("evidence", "verify", store, "--keyring", pinned_copy(store))
    assert r.code == 0, r.out + r.err
    assert r.out.splitlines()[-2].startswith("OK: store")
    assert r.out.splitlines()[-1] == f"pin next time: --pin-checkpoint {store}/log/checkpoints/000000000006"
    r = cli("evidence", "verify", store, "--keyring", pinned_copy(store), "--json")
    report = json.loads(r.out)
    assert (report["ok"], report["exit_code"], report["entries"], report["checkpoints_verified"]) == (
        True,
        0,
        6,
        6,
    )
    assert report["origin"] == "clinic-01.example/evidence-log"

    bundle = sorted(store.glob("evidence/*/*/*/*"))[2]
    statement = bundle / "statement.json"
    statement.write_bytes(statement.read_bytes().replace(b"success", b"failure", 1))
    r = cli("evidence", "verify", store, "--keyring", pinned_copy(store))
    assert r.code == 1
    first = r.out.splitlines()[0]
    assert first.startswith("FAILED: entry 2 (")
    assert bundle.name in first
    r = cli("evidence", "verify", store, "--json")
    data = json.loads(r.out)
    assert data["first_error"]["seq"] == 2
    assert bundle.name in data["first_error"]["path"]
    no_traceback(r)


def test_verify_warning_exit_3(cli: Cli, tmp_path: Path, keys: Keys) -> None:
    root = tmp_path / "s"
    with open_store(root, keys) as s:
        s.append(attestation(0, expires=date(2026, 6, 30)), subjects=[TOPLEVEL])
    write_keyring(root, keys)
    r = cli("evidence", "verify", root, "--at", "2026-07-01", "--keyring", pinned_copy(root))
    assert r.code == 3
    assert "expired on 2026-06-30" in r.out
    assert cli("evidence", "verify", root, "--at", "2026-06-01", "--keyring", pinned_copy(root)).code == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["evidence", "verify", "/nonexistent/dir"], "no such directory"),
        (["evidence", "verify", "{store}", "--keyring", "/nonexistent.json"], "keyring not found"),
        (["evidence", "verify", "{store}", "--keyring", "{bad_keyring}"], "bad.json:3: keys[0].role"),
        (
            ["evidence", "verify", "{store}", "--pin-checkpoint", "/nonexistent.note"],
            "nonexistent.note: no such file",
        ),
        (["evidence", "verify", "{store}", "--at", "yesterday"], "is not a date"),
        (["evidence", "verify", "{store}", "--jobs", "0"], "--jobs"),
        (["evidence", "verify", "{not_zip}"], "not a readable zip"),
    ],
)
def test_verify_usage_errors_exit_2(
    cli: Cli, store: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"version": 1, "keys": [\n  {"vkey": "' + "x" + '",\n   "role": "boss"}]}\n')
    bad.write_text(
        '{"version": 1, "keys": [\n  {"vkey": "'
        + load_keyring(store / "keyring.json").keys[0].vkey
        + '",\n   "role": "boss"}]}\n'
    )
    not_zip = tmp_path / "packet.zip"
    not_zip.write_text("not a zip")
    argv = [a.format(store=store, bad_keyring=bad, not_zip=not_zip) for a in args]
    r = cli(*argv)
    assert r.code == 2, r.out + r.err
    assert message in r.err
    no_traceback(r)


def test_export_packet_verifies_and_detects_edits(cli: Cli, store: Path, tmp_path: Path) -> None:
    packet = tmp_path / "packet.zip"
    r = cli(
        "evidence", "export", "--from", "2026-03-01", "--to", "2026-03-01", "-o", packet, "--state-dir", store
    )
    assert r.code == 0, r.err
    assert "6 bundles" in r.out
    with zipfile.ZipFile(packet) as zf:
        names = set(zf.namelist())
        index = zf.read("index/controls.csv").decode().splitlines()
        meta = json.loads(zf.read("packet.json"))
        readme = zf.read("README.md").decode()
    assert {
        "README.md",
        "packet.json",
        "keyring.json",
        "verify-report.json",
        "index/controls.csv",
        "log/leaves",
    } <= names
    assert {f"proofs/{i}.json" for i in range(6)} <= names
    assert "log/checkpoints/000000000006" in names
    assert index[0].startswith("framework,reference,control,status")
    frameworks = {line.split(",")[0] for line in index[1:]}
    assert frameworks == {"hipaa", "soc2", "cis_v8", "nist_800_53", "nist_csf"}
    assert any(line.startswith("hipaa,164.308(a)(5)(i),164.308(a)(5)(i),attested") for line in index)
    assert meta["tree_size"] == 6
    assert [e["seq"] for e in meta["entries"]] == list(range(6))
    assert "nixcomply evidence verify . --keyring" in readme  # tests/test_packet_readme.py runs it

    r = cli("evidence", "verify", packet, "--keyring", pinned_copy(store))
    assert r.code == 0, r.out + r.err
    assert "OK: packet" in r.out
    pin = tmp_path / "pin.note"
    pin.write_bytes((store / "log/checkpoints/000000000004").read_bytes())
    assert (
        cli("evidence", "verify", packet, "--keyring", pinned_copy(store), "--pin-checkpoint", pin).code == 0
    )

    # An edited index (an auditor's shortcut into the evidence) is caught.
    edited = tmp_path / "edited.zip"
    with zipfile.ZipFile(packet) as src, zipfile.ZipFile(edited, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename == "index/controls.csv":
                data = data.replace(b",fail,", b",pass,").replace(b"attested", b"pass")
            dst.writestr(info, data)
    r = cli("evidence", "verify", edited, "--keyring", pinned_copy(store))
    assert r.code == 1
    assert "index/controls.csv" in r.out


def test_export_controls_filter_and_range(cli: Cli, store: Path, tmp_path: Path) -> None:
    packet = tmp_path / "p.zip"
    r = cli(
        "evidence",
        "export",
        "--from",
        "2026-03-01",
        "--to",
        "2026-03-02",
        "--controls",
        "164.308(a)(5)(i)",
        "-o",
        packet,
        "--state-dir",
        store,
    )
    assert r.code == 0, r.err
    with zipfile.ZipFile(packet) as zf:
        meta = json.loads(zf.read("packet.json"))
        index = zf.read("index/controls.csv").decode().splitlines()[1:]
    # The packet holds the whole period (only so can it prove nothing was left out); the
    # index narrows it to the bundles about the control.
    assert [e["seq"] for e in meta["entries"]] == list(range(6))
    assert meta["period"] == {"start": 0, "end": 6}
    assert {line.split(",")[7] for line in index} == {"3"}
    assert cli("evidence", "verify", packet, "--keyring", pinned_copy(store)).code == 0
    empty = cli(
        "evidence", "export", "--from", "2025-01-01", "--to", "2025-01-31", "-o", packet, "--state-dir", store
    )
    assert empty.code == 0
    assert "0 bundles" in empty.out
    backwards = cli(
        "evidence", "export", "--from", "2026-03-02", "--to", "2026-03-01", "-o", packet, "--state-dir", store
    )
    assert backwards.code == 2
    assert "before" in backwards.err


def test_export_refuses_a_store_that_does_not_verify(cli: Cli, store: Path, tmp_path: Path) -> None:
    (store / "log/leaves").write_bytes(b"\0" * 32 * 6)
    r = cli(
        "evidence",
        "export",
        "--from",
        "2026-03-01",
        "--to",
        "2026-03-01",
        "-o",
        tmp_path / "p.zip",
        "--state-dir",
        store,
    )
    assert r.code == 1
    assert "refusing to export" in r.err
    assert not (tmp_path / "p.zip").exists()
    no_traceback(r)


def test_attest_records_and_verifies(
    cli: Cli, store: Path, key_files: tuple[Path, Path], tmp_path: Path
) -> None:
    cmap = tmp_path / "controls-map.csv"
    cmap.write_text(CONTROLS_MAP)
    bundle_key, log_key = key_files
    common = ["--controls-map", cmap, "--state-dir", store, "--signing-key", bundle_key, "--log-key", log_key]
    r = cli(
        "evidence",
        "attest",
        "164.308(a)(5)(i)",
        "--by",
        "alice@clinic.example",
        "--evidence-url",
        "https://docs.clinic.example/training",
        "--expires",
        "2099-01-01",
        "--statement",
        "All staff trained in 2026.",
        *common,
    )
    assert r.code == 0, r.err
    assert "entry 6" in r.out
    assert cli("evidence", "verify", store, "--keyring", pinned_copy(store)).code == 0
    (bundle,) = [p for p in store.glob("evidence/*/*/*/*") if "-00000006-" in p.name]
    predicate = json.loads((bundle / "statement.json").read_text())["predicate"]
    assert (predicate["control"], predicate["coverage"], predicate["attested_by"]) == (
        "164.308(a)(5)(i)",
        "attestation",
        "alice@clinic.example",
    )

    by_id = cli(
        "evidence", "attest", "ssh.password-auth-disabled", "--by", "bob", "--evidence-url", "https://x.example/y",
        "--expires", "2099-01-01", "--statement", "reviewed", *common,
    )  # fmt: skip
    assert by_id.code == 0, by_id.err


@pytest.mark.parametrize(
    "case",
    [
        ("164.308(a)(5)(ii)", [], "neither a citation"),
        ("164.308(a)(5)(i)", ["--expires", "2020-01-01"], "not in the future"),
        ("164.308(a)(5)(i)", ["--evidence-url", "ftp://x"], "evidence_url"),
        ("164.308(a)(5)(i)", ["--statement", " "], "--statement is empty"),
    ],
)
def test_attest_bad_input_exit_2(
    cli: Cli, store: Path, key_files: tuple[Path, Path], tmp_path: Path, case: tuple[str, list[str], str]
) -> None:
    control, extra, message = case
    cmap = tmp_path / "controls-map.csv"
    cmap.write_text(CONTROLS_MAP)
    bundle_key, log_key = key_files
    base = {
        "--by": "alice",
        "--evidence-url": "https://x.example",
        "--expires": "2099-01-01",
        "--statement": "ok",
    }
    for flag, value in zip(extra[::2], extra[1::2], strict=True):
        base[flag] = value
    args = [x for kv in base.items() for x in kv]
    r = cli(
        "evidence", "attest", control, *args, "--controls-map", cmap, "--state-dir", store,
        "--signing-key", bundle_key, "--log-key", log_key,
    )  # fmt: skip
    assert r.code == 2, r.out + r.err
    assert message in r.err
    no_traceback(r)


def test_attest_bad_controls_map_names_file(
    cli: Cli, store: Path, key_files: tuple[Path, Path], tmp_path: Path
) -> None:
    cmap = tmp_path / "controls-map.csv"
    cmap.write_text("citation,title\n164.308(a)(5)(i),x\n")
    r = cli(
        "evidence", "attest", "164.308(a)(5)(i)", "--by", "a", "--evidence-url", "https://x.example",
        "--expires", "2099-01-01", "--statement", "s", "--controls-map", cmap, "--state-dir", store,
        "--signing-key", key_files[0], "--log-key", key_files[1],
    )  # fmt: skip
    assert r.code == 2
    assert f"{cmap}:1: header: header is 'citation,title'" in r.err


def test_attest_defaults_to_the_shipped_map_and_baseline(
    cli: Cli, store: Path, key_files: tuple[Path, Path]
) -> None:
    """Without --controls-map and --baseline, nixcomply's own baseline/ is used: a control id
    then carries its references in every framework."""
    r = cli(
        "evidence", "attest", "ssh.password-auth-disabled", "--by", "bob", "--evidence-url", "https://x.example/y",
        "--expires", "2099-01-01", "--statement", "exception reviewed", "--state-dir", store,
        "--signing-key", key_files[0], "--log-key", key_files[1],
    )  # fmt: skip
    assert r.code == 0, r.err
    (bundle,) = [p for p in store.glob("evidence/*/*/*/*") if "-00000006-" in p.name]
    control = json.loads((bundle / "statement.json").read_text())["predicate"]["controls"][0]
    assert control["status"] == "attested"
    assert "164.312(d)" in control["frameworks"]["hipaa"]
    assert all(control["frameworks"][fw] for fw in ("soc2", "cis_v8", "nist_800_53", "nist_csf"))


def test_group_readable_signing_key_refused(
    cli: Cli, store: Path, key_files: tuple[Path, Path], tmp_path: Path
) -> None:
    cmap = tmp_path / "controls-map.csv"
    cmap.write_text(CONTROLS_MAP)
    key_files[0].chmod(0o644)
    r = cli(
        "evidence", "attest", "164.308(a)(5)(i)", "--by", "a", "--evidence-url", "https://x.example",
        "--expires", "2099-01-01", "--statement", "s", "--controls-map", cmap, "--state-dir", store,
        "--signing-key", key_files[0], "--log-key", key_files[1],
    )  # fmt: skip
    assert r.code == 2
    assert "readable by group or others" in r.err
    assert f"chmod 600 {key_files[0]}" in r.err


def test_rotate_and_revoke_via_cli(
    cli: Cli, store: Path, key_files: tuple[Path, Path], tmp_path: Path
) -> None:
    old_name = load_keyring(store / "keyring.json").keys[0].key.name
    bundle_key, log_key = key_files
    new_key = tmp_path / "keys" / "bundle-2.key"
    assert cli("evidence", "keygen", "--role", "bundle", "--name", "c1/bundle-2", "--out", new_key).code == 0
    r = cli(
        "evidence", "rotate", "--role", "bundle", "--new-key", new_key, "--state-dir", store,
        "--signing-key", bundle_key, "--log-key", log_key,
    )  # fmt: skip
    assert r.code == 0, r.err
    assert "at entry 6" in r.out
    # Under systemd the keys come from $CREDENTIALS_DIRECTORY; the paths are then ignored.
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "nixcomply-evidence-bundle-key").write_bytes(new_key.read_bytes())
    (creds / "nixcomply-evidence-log-key").write_bytes(log_key.read_bytes())
    for p in creds.iterdir():
        p.chmod(0o400)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CREDENTIALS_DIRECTORY", str(creds))
        r = cli("evidence", "revoke", old_name, "--reason", "laptop retired", "--state-dir", store)
    assert r.code == 0, r.err
    r = cli("evidence", "verify", store, "--json", "--keyring", pinned_copy(store))
    assert json.loads(r.out)["exit_code"] == 0, r.out
    revoked = [e for e in load_keyring(store / "keyring.json").keys if e.key.name == old_name]
    assert revoked[0].status.value == "revoked"
    # The old key may not sign any more: a clear refusal, not invalid evidence.
    cmap = tmp_path / "controls-map.csv"
    cmap.write_text(CONTROLS_MAP)
    r = cli(
        "evidence", "attest", "164.308(a)(5)(i)", "--by", "a", "--evidence-url", "https://x.example",
        "--expires", "2099-01-01", "--statement", "s", "--controls-map", cmap,
        "--state-dir", store, "--signing-key", bundle_key, "--log-key", log_key,
    )  # fmt: skip
    assert r.code == 1
    assert "is revoked" in r.err
    assert "point the service at the new key" in r.err
    no_traceback(r)


def test_rotate_and_revoke_record_the_sudo_caller_as_actor(
    cli: Cli, store: Path, key_files: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under sudo the audit trail names the technician, not root (as `runbook run` does)."""
    monkeypatch.setenv("SUDO_USER", "alice")
    old_name = load_keyring(store / "keyring.json").keys[0].key.name
    bundle_key, log_key = key_files
    new_key = tmp_path / "keys" / "bundle-2.key"
    assert cli("evidence", "keygen", "--role", "bundle", "--name", "c1/bundle-2", "--out", new_key).code == 0
    keys = ["--state-dir", store, "--log-key", log_key]
    r = cli(
        "evidence", "rotate", "--role", "bundle", "--new-key", new_key, "--signing-key", bundle_key, *keys
    )
    assert r.code == 0, r.err
    r = cli("evidence", "revoke", old_name, "--reason", "retired", "--signing-key", new_key, *keys)
    assert r.code == 0, r.err
    actors = []
    for seq in ("00000006", "00000007"):
        (bundle,) = [p for p in store.glob("evidence/*/*/*/*") if f"-{seq}-" in p.name]
        actors.append(json.loads((bundle / "statement.json").read_text())["predicate"]["actor"])
    assert actors == ["alice", "alice"]
