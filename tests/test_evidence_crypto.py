"""Known-answer tests from the specifications (DSSE, C2SP signed notes, RFC 6962) and the
properties of the Merkle proofs, keys and keyring."""

from __future__ import annotations

import base64
import os
import stat
import subprocess
from hashlib import sha256, sha512
from pathlib import Path
from typing import Any, Final

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fuzzing import examples
from hypothesis import given, settings
from hypothesis import strategies as st

from nixcomply.core.fsutil import ensure_dir
from nixcomply.errors import InputError, UsageError
from nixcomply.evidence import dsse
from nixcomply.evidence.checkpoint import (
    Checkpoint,
    NoteError,
    open_checkpoint,
    parse_checkpoint_text,
    parse_note,
    sign_note,
    verify_note,
)
from nixcomply.evidence.keyring import KeyEntry, Keyring, KeyStatus, RangeCache, load_keyring, save_keyring
from nixcomply.evidence.keys import (
    BUNDLE_CREDENTIAL,
    PublicKey,
    generate,
    key_id,
    load_signer,
    parse_private_key,
    read_private_key,
    write_private_key,
)
from nixcomply.evidence.merkle import (
    EMPTY_ROOT,
    Frontier,
    Tree,
    leaf_hash,
    root_of,
    verify_consistency,
    verify_inclusion,
)
from nixcomply.evidence.statement import KeyRole

# -- DSSE ------------------------------------------------------------------------------


def test_pae_spec_vector() -> None:
    # The test vector of the DSSE protocol specification.
    assert dsse.pae("http://example.com/HelloWorld", b"hello world") == (
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )


def test_pae_counts_bytes_not_characters() -> None:
    assert dsse.pae("t/é", "ü".encode()) == "DSSEv1 4 t/é 2 ü".encode()


def test_sign_and_verify_envelope() -> None:
    a, b = generate("a/key"), generate("b/key")
    env = dsse.sign(b'{"x":1}', [a])
    parsed = dsse.parse(env.to_bytes())
    assert parsed == env
    assert dsse.verify(parsed, [b.public, a.public]) == b'{"x":1}'
    assert dsse.verified_keys(parsed, [b.public]) == []
    with pytest.raises(dsse.EnvelopeError, match="no signature verifies"):
        dsse.verify(parsed, [b.public])


def test_keyid_is_only_a_hint() -> None:
    a = generate("a/key")
    env = dsse.sign(b"payload", [a])
    lying = dsse.Envelope(env.payload, env.payload_type, (dsse.Signature("ffffffff", env.signatures[0].sig),))
    assert dsse.verified_keys(lying, [a.public]) == [a.public]


def test_payload_type_is_checked() -> None:
    a = generate("a/key")
    env = dsse.sign(b"payload", [a], payload_type="text/plain")
    with pytest.raises(dsse.EnvelopeError, match="payloadType"):
        dsse.verify(env, [a.public])
    assert dsse.verify(env, [a.public], payload_type="text/plain") == b"payload"


def test_signature_covers_type_and_payload() -> None:
    a = generate("a/key")
    env = dsse.sign(b"payload", [a])
    assert not dsse.verified_keys(dsse.Envelope(b"payloaD", env.payload_type, env.signatures), [a.public])


def test_urlsafe_and_unpadded_base64_accepted() -> None:
    a = generate("a/key")
    payload = bytes(range(250, 256)) * 3  # encodes with '+' and '/' characters
    env = dsse.sign(payload, [a]).to_json()
    env["payload"] = base64.urlsafe_b64encode(payload).decode().rstrip("=")
    env["signatures"][0]["sig"] = base64.urlsafe_b64encode(dsse.sign(payload, [a]).signatures[0].sig).decode()
    assert "-" in env["payload"] or "_" in env["payload"]
    assert dsse.verify(dsse.from_json(env), [a.public]) == payload


@pytest.mark.parametrize(
    ("text", "error"),
    [
        (b"not json", "not JSON"),
        (b"[]", "not a JSON object"),
        (b'{"payload":"YQ==","payloadType":"t"}', "signatures"),
        (b'{"payload":"YQ==","payloadType":"t","signatures":[]}', "signatures"),
        (b'{"payload":"!!","payloadType":"t","signatures":[{"sig":"YQ=="}]}', "payload"),
        (b'{"payload":"YQ==","payloadType":"t","signatures":[{"sig":1}]}', "signatures\\[0\\]"),
        (b'{"payload":"YQ==","payloadType":"t","signatures":[{"sig":"YQ=="}],"x":1}', "unexpected"),
    ],
)
def test_malformed_envelopes(text: bytes, error: str) -> None:
    with pytest.raises(dsse.EnvelopeError, match=error):
        dsse.parse(text)


def _general(data: bytes) -> dsse.Envelope | str:
    """What the JSON path makes of ``data`` (an envelope, or its error)."""
    try:
        return dsse._parse_json(data)
    except dsse.EnvelopeError as e:
        return f"error: {e}"


def _either(data: bytes) -> dsse.Envelope | str:
    try:
        return dsse.parse(data)
    except dsse.EnvelopeError as e:
        return f"error: {e}"


def test_the_written_form_is_read_without_the_json_parser_and_alike() -> None:
    a = generate("a/key")
    data = dsse.sign(bytes(range(256)) * 3, [a]).to_bytes()
    fast = dsse._parse_canonical(data)
    assert fast is not None
    assert fast == _general(data) == dsse.parse(data)
    assert dsse.verify(fast, [a.public]) == bytes(range(256)) * 3


# Spellings of an envelope the fast path must leave to the JSON parser (or read alike).
_SPELLINGS: Final = [
    lambda d: d.replace(b'{"payload"', b'{ "payload"'),
    lambda d: d.replace(b'"sig":"', b'"sig": "'),
    lambda d: d.replace(b'"keyid":"', b'"keyid":"\\u0030'),
    lambda d: d.replace(b'"payload":"', b'"payload":"\\u0041'),
    lambda d: d.replace(b'=="}]}', b'"}]}'),
    lambda d: d.replace(b'"}]}', b'"},{"keyid":"00","sig":"YQ=="}]}'),
    lambda d: d.replace(b'"}]}', b'"}],"x":1}'),
    lambda d: d.replace(b"application/vnd.in-toto+json", b"text/plain"),
    lambda d: d.replace(b'"keyid":"', b'"keyid":"-'),
    lambda d: d.rstrip(b"\n") + b"\n\n",
    lambda d: d[:-5] + b'"}]}\n',
    lambda d: d.replace(b'"keyid":"', b'"keyid":"","kid":"'),
]


@pytest.mark.parametrize("spell", range(len(_SPELLINGS)))
def test_other_spellings_read_as_the_json_parser_reads_them(spell: int) -> None:
    a = generate("a/key")
    data = _SPELLINGS[spell](dsse.sign(b"\xfb\xff" * 40, [a]).to_bytes())
    assert dsse._parse_canonical(data) in (None, _general(data))
    assert _either(data) == _general(data)


@settings(max_examples=examples(200))
@given(data=st.binary(max_size=400), at=st.integers(0, 399), flips=st.binary(min_size=1, max_size=3))
def test_any_changed_byte_reads_as_the_json_parser_reads_it(data: bytes, at: int, flips: bytes) -> None:
    a = generate("a/key")
    written = bytearray(dsse.sign(data, [a]).to_bytes())
    at %= len(written)
    written[at : at + len(flips)] = flips
    changed = bytes(written)
    assert dsse._parse_canonical(changed) in (None, _general(changed))
    assert _either(changed) == _general(changed)


# -- C2SP signed notes ---------------------------------------------------------------------

# From the C2SP signed-note specification (c2sp.org/signed-note, "Verifier keys" example).
SPEC_VKEY = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k"
SPEC_NOTE = (
    "This is an example message.\n\n"
    "\u2014 example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n"
).encode()
# From golang.org/x/mod/sumdb/note, the reference implementation (used as data).
GO_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_TEXT = (
    "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n"
)
GO_NOTE = (
    GO_TEXT
    + "\n\u2014 PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
)


def test_spec_vkey_and_key_id() -> None:
    key = PublicKey.from_vkey(SPEC_VKEY)
    assert key.name == "example.com/foo"
    assert key.key_id == 0x530D903A
    assert key_id(key.name, key.raw) == 0x530D903A
    assert key.vkey == SPEC_VKEY


def test_spec_note_verifies() -> None:
    note = parse_note(SPEC_NOTE)
    assert note.text == "This is an example message.\n"
    assert verify_note(note, [PublicKey.from_vkey(SPEC_VKEY)]) == [PublicKey.from_vkey(SPEC_VKEY)]
    assert note.to_bytes() == SPEC_NOTE


def test_spec_note_tampered_text_rejected() -> None:
    tampered = SPEC_NOTE.replace(b"example message", b"example massage")
    with pytest.raises(NoteError, match="does not verify"):
        verify_note(parse_note(tampered), [PublicKey.from_vkey(SPEC_VKEY)])


def test_go_reference_signing_is_reproduced() -> None:
    signer = parse_private_key(GO_SKEY, default_name="unused")
    assert signer.name == "PeterNeumann"
    assert signer.public.vkey == GO_VKEY
    # Ed25519 is deterministic: the same key and text give the reference note byte for byte.
    assert sign_note(GO_TEXT, [signer]).decode() == GO_NOTE
    assert signer.private_text().strip() == GO_SKEY


def test_unknown_keys_are_ignored_but_one_known_key_is_required() -> None:
    known = generate("log.example/a")
    other = generate("log.example/b")
    note = parse_note(sign_note("text\n", [other, known]))
    assert verify_note(note, [known.public]) == [known.public]
    with pytest.raises(NoteError, match="not signed by a trusted"):
        verify_note(note, [generate("log.example/c").public])


def test_same_name_other_key_is_not_confused() -> None:
    real = generate("log.example/a")
    impostor = generate("log.example/a")
    note = parse_note(sign_note("text\n", [impostor]))
    with pytest.raises(NoteError, match="not signed by a trusted"):
        verify_note(note, [real.public])


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"\xff\xfe", "UTF-8"),
        (b"text\x01\n\n\xe2\x80\x94 a YQ==\n", "control character"),
        (b"text\n", "blank line"),
        (b"text\n\n", "no signature"),
        (b"text\n\n- a AAAAAAA=\n", "malformed signature"),
        (b"text\n\n\xe2\x80\x94 a AAAA\n", "too short"),
        (b"text\n\n\xe2\x80\x94 a AAAAAAA=", "newline"),
    ],
)
def test_malformed_notes(data: bytes, error: str) -> None:
    with pytest.raises(NoteError, match=error):
        parse_note(data)


def test_checkpoint_round_trip_and_format() -> None:
    log = generate("clinic.example/log")
    root = sha256(b"x").digest()
    data = Checkpoint("clinic.example/log", 17, root).sign([log])
    text = data.decode()
    assert text.startswith(
        f"clinic.example/log\n17\n{base64.b64encode(root).decode()}\n\n\u2014 clinic.example/log "
    )
    opened = open_checkpoint(data, [log.public])
    assert opened.checkpoint == Checkpoint("clinic.example/log", 17, root)


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("origin\n017\n" + base64.b64encode(bytes(32)).decode() + "\n", "leading zeros"),
        ("origin\n1\nnotbase64!\n", "base64"),
        ("origin\n1\n" + base64.b64encode(bytes(31)).decode() + "\n", "32"),
        ("origin\n1\n", "three lines"),
        ("\n1\n" + base64.b64encode(bytes(32)).decode() + "\n", "origin"),
    ],
)
def test_malformed_checkpoints(text: str, error: str) -> None:
    with pytest.raises(NoteError, match=error):
        parse_checkpoint_text(text)


# -- RFC 6962 ----------------------------------------------------------------------------


def h(data: bytes) -> bytes:
    return sha256(data).digest()


def test_rfc6962_roots_computed_by_hand() -> None:
    d = [b"a", b"b", b"c", b"d", b"e"]
    l0, l1, l2, l3, l4 = (h(b"\x00" + x) for x in d)
    assert root_of([]) == h(b"") == EMPTY_ROOT
    assert root_of([l0]) == l0
    n01 = h(b"\x01" + l0 + l1)
    assert root_of([l0, l1]) == n01
    # Three leaves split at 2: MTH = H(1 || MTH(a,b) || MTH(c)); the lone c is not rehashed.
    assert root_of([l0, l1, l2]) == h(b"\x01" + n01 + l2)
    n23 = h(b"\x01" + l2 + l3)
    n0123 = h(b"\x01" + n01 + n23)
    assert root_of([l0, l1, l2, l3]) == n0123
    assert root_of([l0, l1, l2, l3, l4]) == h(b"\x01" + n0123 + l4)
    for n in range(6):
        f = Frontier()
        f.extend([l0, l1, l2, l3, l4][:n])
        assert f.root() == root_of([l0, l1, l2, l3, l4][:n])
        assert Tree([l0, l1, l2, l3, l4][:n]).root() == f.root()


def test_rfc6962_known_empty_and_leaf_values() -> None:
    # Well-known constants: SHA-256 of the empty string, and of a single 0x00 byte.
    assert EMPTY_ROOT.hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert leaf_hash(b"").hex() == "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"


def test_inclusion_proof_by_hand() -> None:
    leaves = [leaf_hash(x) for x in (b"a", b"b", b"c")]
    tree = Tree(leaves)
    # PATH(2, [a,b,c]) = [MTH(a,b)]; PATH(0, ...) = [b, c].
    assert tree.inclusion_proof(2) == [h(b"\x01" + leaves[0] + leaves[1])]
    assert tree.inclusion_proof(0) == [leaves[1], leaves[2]]


def test_inclusion_checks_hash_lengths() -> None:
    """9.7: a 0-byte leaf against a 0-byte root in a tree of one used to verify."""
    assert not verify_inclusion(b"", 0, 1, [], b"")
    leaf = leaf_hash(b"a")
    assert verify_inclusion(leaf, 0, 1, [], leaf)
    assert not verify_inclusion(leaf[:31], 0, 1, [], leaf[:31])
    tree = Tree([leaf_hash(x) for x in (b"a", b"b", b"c")])
    path = tree.inclusion_proof(0)
    assert verify_inclusion(tree.levels[0][0], 0, 3, path, tree.root())
    assert not verify_inclusion(tree.levels[0][0], 0, 3, [path[0], path[1] + b"x"], tree.root())
    assert not verify_inclusion(leaf, 0, 0, [], leaf)


def test_consistency_checks_sizes_and_lengths() -> None:
    """9.7: consistency between two empty trees used to be accepted."""
    assert not verify_consistency(0, 0, EMPTY_ROOT, EMPTY_ROOT, [])
    assert not verify_consistency(0, 3, EMPTY_ROOT, EMPTY_ROOT, [])
    tree = Tree([leaf_hash(x) for x in (b"a", b"b", b"c")])
    root1 = Tree(tree.levels[0][:1]).root()
    assert verify_consistency(3, 3, tree.root(), tree.root(), [])
    assert not verify_consistency(3, 3, tree.root()[:16], tree.root()[:16], [])
    proof = tree.consistency_proof(1)
    assert verify_consistency(1, 3, root1, tree.root(), proof)
    assert not verify_consistency(1, 3, root1, tree.root(), [p + b"\0" for p in proof])
    assert not verify_consistency(2, 1, root1, root1, proof)


@settings(max_examples=examples(60))
@given(n=st.integers(1, 70), data=st.data())
def test_proofs_verify_and_detect_changes(n: int, data: st.DataObject) -> None:
    leaves = [leaf_hash(i.to_bytes(4, "big")) for i in range(n)]
    tree = Tree(leaves)
    f = Frontier()
    f.extend(leaves)
    assert f.root() == tree.root() == root_of(leaves)
    i = data.draw(st.integers(0, n - 1))
    size = data.draw(st.integers(i + 1, n))
    proof = tree.inclusion_proof(i, size)
    sub = root_of(leaves[:size])
    assert verify_inclusion(leaves[i], i, size, proof, sub)
    assert not verify_inclusion(leaf_hash(b"other"), i, size, proof, sub)
    if size > 1:
        assert not verify_inclusion(leaves[i], (i + 1) % size, size, proof, sub)
    old = data.draw(st.integers(1, n))
    cproof = tree.consistency_proof(old)
    assert verify_consistency(old, n, root_of(leaves[:old]), tree.root(), cproof)
    if old < n:
        assert not verify_consistency(old, n, leaf_hash(b"forged"), tree.root(), cproof)
        assert not verify_consistency(old, n, root_of(leaves[:old]), leaf_hash(b"forged"), cproof)
        if cproof:
            bad = [*cproof[:-1], leaf_hash(b"x")]
            assert not verify_consistency(old, n, root_of(leaves[:old]), tree.root(), bad)


def test_frontier_state_is_checked() -> None:
    with pytest.raises(ValueError, match="frontier hashes"):
        Frontier(3, [bytes(32)])


# -- keys ----------------------------------------------------------------------------------


def test_key_files_round_trip_with_safe_modes(tmp_path: Path) -> None:
    signer = generate("clinic.example/bundle")
    pub = write_private_key(tmp_path / "k" / "bundle.key", signer)
    assert stat.S_IMODE((tmp_path / "k" / "bundle.key").stat().st_mode) == 0o600
    assert pub.read_text().strip() == signer.public.vkey
    assert read_private_key(tmp_path / "k" / "bundle.key").public == signer.public
    with pytest.raises(UsageError, match="refusing to overwrite"):
        write_private_key(tmp_path / "k" / "bundle.key", generate("x/y"))


def test_group_readable_key_refused(tmp_path: Path) -> None:
    path = tmp_path / "bundle.key"
    write_private_key(path, generate("a/b"))
    path.chmod(0o640)
    with pytest.raises(InputError, match="readable by group or others") as e:
        read_private_key(path)
    assert e.value.hint == f"chmod 600 {path}"


def test_key_mode_is_checked_on_the_file_that_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """9.8: the key used to be stat'ed by path and then opened by path, so a file swapped in
    between (here: a world-readable key renamed over the checked one right after the first
    look at the path) was read unchecked. Checked on the open descriptor, the key read is
    the one whose mode and owner were checked."""
    good, planted = generate("a/good"), generate("a/planted")
    path = tmp_path / "bundle.key"
    write_private_key(path, good)
    other = tmp_path / "other.key"
    write_private_key(other, planted)
    other.chmod(0o644)
    swapped = False
    real_stat, real_open = os.stat, os.open

    def swap_after(real: Any) -> Any:
        def call(target: Any, *args: Any, **kwargs: Any) -> Any:
            nonlocal swapped
            result = real(target, *args, **kwargs)
            if not swapped and os.fspath(target) == os.fspath(path):
                swapped = True
                os.rename(other, path)
            return result

        return call

    monkeypatch.setattr(os, "stat", swap_after(real_stat))
    monkeypatch.setattr(os, "open", swap_after(real_open))
    signer = read_private_key(path)
    monkeypatch.undo()
    assert swapped
    assert signer.public == good.public
    with pytest.raises(InputError, match="readable by group or others"):
        read_private_key(path)


def test_key_owned_by_another_user_refused(tmp_path: Path) -> None:
    path = tmp_path / "bundle.key"
    write_private_key(path, generate("a/b"))
    os.chown(path, 65534, -1)  # nobody: could replace the key's contents at any time
    with pytest.raises(InputError, match="owned by uid 65534") as e:
        read_private_key(path)
    assert e.value.hint == f"chown {os.geteuid()} {path}"


def test_fifo_at_the_key_path_does_not_hang(tmp_path: Path) -> None:
    path = tmp_path / "bundle.key"
    os.mkfifo(path, 0o600)
    with pytest.raises(InputError, match="not a regular file"):
        read_private_key(path)


def test_write_private_key_never_replaces_a_key_that_appears(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """9.8: the existence check came before the rename, so a key created in between (here by
    a concurrent keygen, simulated when the parent directory is made) was replaced."""

    path = tmp_path / "keys" / "bundle.key"
    first = generate("a/first")
    real_ensure_dir = ensure_dir

    def racing_ensure_dir(directory: Path, **kwargs: Any) -> Path:
        monkeypatch.setattr("nixcomply.evidence.keys.ensure_dir", real_ensure_dir)
        real_ensure_dir(directory, **kwargs)
        write_private_key(path, first)  # the other keygen wins the race
        return directory

    monkeypatch.setattr("nixcomply.evidence.keys.ensure_dir", racing_ensure_dir)
    with pytest.raises(UsageError, match="refusing to overwrite"):
        write_private_key(path, generate("a/second"))
    monkeypatch.undo()
    assert read_private_key(path).public == first.public
    assert sorted(p.name for p in path.parent.iterdir()) == ["bundle.key", "bundle.key.pub"]


def test_keyring_is_read_as_json_not_yaml(tmp_path: Path) -> None:
    """9.8: the keyring went through the YAML loader, which also takes YAML spellings."""
    vkey = generate("a/b").public.vkey
    path = tmp_path / "keyring.json"
    path.write_text(f"version: 1\nkeys:\n  - {{vkey: '{vkey}', role: bundle}}\n")
    with pytest.raises(InputError, match="invalid JSON") as e:
        load_keyring(path)
    assert e.value.problems[0].line == 1
    path.write_text('{"version": 1, "keys": [], "keys": []}\n')
    with pytest.raises(InputError, match="duplicate key 'keys'"):
        load_keyring(path)
    path.write_text('{"version": 1,\n "keys": [] // the bundle key\n}\n')
    with pytest.raises(InputError, match="invalid JSON") as e:
        load_keyring(path)
    assert e.value.problems[0].line == 2
    path.write_text('{"version": 1, "keys": [{"vkey": "' + vkey + '", "role": "bundle"}]}\n')
    assert load_keyring(path).keys[0].vkey == vkey


@pytest.mark.parametrize(
    ("content", "error"),
    [
        ("garbage", "PRIVATE\\+KEY"),
        ("PRIVATE+KEY+a+00000000+AAAA", "0x01 followed by"),
        ("PRIVATE+KEY+a+00000000+" + base64.b64encode(b"\x01" + bytes(32)).decode(), "does not match"),
        ("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "PEM"),
    ],
)
def test_bad_key_files_name_the_file(tmp_path: Path, content: str, error: str) -> None:
    path = tmp_path / "bad.key"
    path.write_text(content)
    path.chmod(0o600)
    with pytest.raises(InputError, match=error) as e:
        read_private_key(path)
    assert str(path) in str(e.value)


def test_pem_key_accepted(tmp_path: Path) -> None:

    key = Ed25519PrivateKey.generate()
    path = tmp_path / "evidence-bundle.pem"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    path.chmod(0o400)
    signer = read_private_key(path)
    assert signer.name == "evidence-bundle"


def test_credentials_directory_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    signer = generate("from/credential")
    write_private_key(creds / BUNDLE_CREDENTIAL, signer)
    (creds / BUNDLE_CREDENTIAL).chmod(0o400)  # how systemd hands credentials over
    write_private_key(tmp_path / "path.key", generate("from/path"))
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    assert load_signer(tmp_path / "path.key", credential=BUNDLE_CREDENTIAL).name == "from/credential"
    with pytest.raises(InputError, match="not found in \\$CREDENTIALS_DIRECTORY") as e:
        load_signer(None, credential="other")
    assert e.value.hint is not None
    assert "LoadCredential=other" in e.value.hint
    monkeypatch.delenv("CREDENTIALS_DIRECTORY")
    assert load_signer(tmp_path / "path.key", credential=BUNDLE_CREDENTIAL).name == "from/path"
    with pytest.raises(UsageError, match="no key given"):
        load_signer(None, credential=BUNDLE_CREDENTIAL)


@pytest.mark.parametrize("name", ["", "with space", "plus+sign", "tab\tname"])
def test_bad_key_names(name: str) -> None:
    with pytest.raises(ValueError, match="key name"):
        generate(name)


@pytest.mark.parametrize(
    ("vkey", "error"),
    [
        ("a+b", "form"),
        ("a+ZZZZZZZZ+AAAA", "8 lowercase hex"),
        ("a+00000000+AAAA", "0x01 followed by"),
        (SPEC_VKEY.replace("530d903a", "530d903b"), "does not match"),
    ],
)
def test_bad_vkeys(vkey: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        PublicKey.from_vkey(vkey)


# -- keyring ---------------------------------------------------------------------------


def test_keyring_validity_by_sequence_and_role(tmp_path: Path) -> None:
    old, new, log = generate("k/old"), generate("k/new"), generate("k/log")
    ring = Keyring(
        keys=[
            KeyEntry(vkey=old.public.vkey, role=KeyRole.BUNDLE, valid_until=10, status=KeyStatus.RETIRED),
            KeyEntry(vkey=new.public.vkey, role=KeyRole.BUNDLE, valid_from=10),
            KeyEntry(vkey=log.public.vkey, role=KeyRole.LOG),
        ]
    )
    assert ring.valid_keys(KeyRole.BUNDLE, 9) == [old.public]
    assert ring.valid_keys(KeyRole.BUNDLE, 10) == [old.public, new.public]
    assert ring.valid_keys(KeyRole.BUNDLE, 11) == [new.public]
    assert ring.valid_keys(KeyRole.LOG, 11) == [log.public]
    cache = RangeCache(ring, KeyRole.BUNDLE)
    assert [cache(s) for s in (0, 9, 10, 11, 10**9)] == [
        ring.valid_keys(KeyRole.BUNDLE, s) for s in (0, 9, 10, 11, 10**9)
    ]
    path = tmp_path / "keyring.json"
    save_keyring(path, ring)
    assert load_keyring(path) == ring


def test_keyring_errors_name_file_line_and_field(tmp_path: Path) -> None:
    path = tmp_path / "keyring.json"
    path.write_text(
        '{\n  "version": 1,\n  "keys": [\n    {"vkey": "a+00000000+AAAA", "role": "bundle"}\n  ]\n}\n'
    )
    with pytest.raises(InputError) as e:
        load_keyring(path)
    problem = e.value.problems[0]
    assert (problem.file, problem.line, problem.field) == (path, 4, "keys[0].vkey")
    path.write_text(
        '{"version": 1, "keys": [{"vkey": "' + generate("a/b").public.vkey + '", "role": "boss"}]}'
    )
    with pytest.raises(InputError, match=r"keys\[0\]\.role"):
        load_keyring(path)


def test_revoked_key_needs_an_end() -> None:
    with pytest.raises(ValueError, match="revoked key needs valid_until"):
        KeyEntry(vkey=generate("a/b").public.vkey, role=KeyRole.BUNDLE, status=KeyStatus.REVOKED)


def test_duplicate_keys_refused() -> None:
    k = generate("a/b").public.vkey
    with pytest.raises(ValueError, match="listed twice"):
        Keyring(keys=[KeyEntry(vkey=k, role=KeyRole.BUNDLE), KeyEntry(vkey=k, role=KeyRole.BUNDLE)])


def test_random_bytes_never_verify() -> None:
    key = generate("a/b")
    sig = sha512(b"not a signature").digest()  # 64 bytes, the same every run
    assert not key.public.verify(sig, b"message")


@pytest.mark.nix
def test_key_in_the_nix_store_is_refused(tmp_path: Path, nix_env: dict[str, str]) -> None:

    key = tmp_path / "evidence-test-key"
    write_private_key(key, generate("test/never-use"))
    stored = subprocess.run(
        ["nix", "store", "add-file", str(key)], env=nix_env, capture_output=True, text=True, check=True
    ).stdout.strip()
    assert stored.startswith("/nix/store/")
    with pytest.raises(InputError, match="readable by group or others") as e:
        read_private_key(Path(stored))
    assert e.value.hint is not None
    assert "LoadCredential" in e.value.hint
