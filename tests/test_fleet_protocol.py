"""The fleet protocol's building blocks: RFC 9421 signatures, RFC 9530 digests, C2SP
cosignatures and the wire models."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import pydantic
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from nixcomply.evidence.checkpoint import Checkpoint, NoteError, parse_note
from nixcomply.evidence.cosignature import (
    WitnessPublicKey,
    check_newest,
    generate_witness,
    parse_cosignatures,
    parse_witness_key,
    read_witness_key,
    signed_message,
    verify_cosignature,
)
from nixcomply.evidence.keys import generate
from nixcomply.model import httpsig
from nixcomply.model.fleet import TOKEN_PREFIX, UploadRequest, new_token
from nixcomply.model.httpsig import Message, SignatureError

# RFC 9421 Appendix B.1.4 (test-key-ed25519) and B.2.6.
RFC_KEY = b"""-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIJ+DYvh6SEqVTm50DFtMDoQikTmiCqirVv9mWG9qfSnF
-----END PRIVATE KEY-----
"""
RFC_SIGNATURE = "wqcAqbmYJ2ji2glfAMaRy4gruYYnx2nEFN2HN6jrnDnQCK1u02Gb04v9EDgwUPiu4A0w6vuQv5lIp5WPpBKRCw=="
RFC_BASE = (
    '"date": Tue, 20 Apr 2021 02:07:55 GMT\n'
    '"@method": POST\n'
    '"@path": /foo\n'
    '"@authority": example.com\n'
    '"content-type": application/json\n'
    '"content-length": 18\n'
    '"@signature-params": ("date" "@method" "@path" "@authority" "content-type" "content-length")'
    ';created=1618884473;keyid="test-key-ed25519"'
)
NOW = 1_764_577_000


def test_signature_base_and_signature_match_rfc9421_b26() -> None:
    key = serialization.load_pem_private_key(RFC_KEY, None)
    assert isinstance(key, Ed25519PrivateKey)
    message = Message(
        "POST",
        "example.com",
        "/foo",
        "?param=Value&Pet=dog",
        {"date": "Tue, 20 Apr 2021 02:07:55 GMT", "content-type": "application/json", "content-length": "18"},
    )
    covered = ("date", "@method", "@path", "@authority", "content-type", "content-length")
    params = RFC_BASE.rsplit('"@signature-params": ', 1)[1]
    base = httpsig.signature_base(message, covered, params)
    assert base.decode() == RFC_BASE
    assert base64.b64encode(key.sign(base)).decode() == RFC_SIGNATURE


def test_content_digest_is_rfc9530_sha256() -> None:
    # RFC 9530 §B.1: {"hello": "world"} followed by a newline
    assert httpsig.content_digest(b'{"hello": "world"}\n') == (
        "sha-256=:RK/0qy18MlBSVnWgjwz6lZEWjP/lF5HF9bvEF8FabDg=:"
    )


def _signed(body: bytes, key: Ed25519PrivateKey, *, nonce: str = "1", created: int = NOW) -> Message:
    headers = {"content-type": "application/json", "content-digest": httpsig.content_digest(body)}
    message = Message("POST", "127.0.0.1:8080", "/v1/log/entries", "", headers)
    for name, value in httpsig.sign(message, key, nonce=nonce, created=created).items():
        headers[name.lower()] = value
    return message


def test_a_signed_request_verifies_and_names_its_key_and_counter() -> None:
    key = Ed25519PrivateKey.generate()
    body = b'{"old_size": 0}'
    message = _signed(body, key, nonce="1764577000000001")
    signed = httpsig.read_signature(message.headers)
    assert signed.params.keyid == httpsig.key_id(key.public_key())
    verified = httpsig.verify(message, body, signed, key.public_key(), now=NOW + 5)
    assert verified.counter == 1764577000000001
    assert verified.keyid == hashlib.sha256(key.public_key().public_bytes_raw()).hexdigest()


@pytest.mark.parametrize(
    ("change", "code"),
    [
        (lambda m, b: (Message("GET", m.authority, m.path, m.query, m.headers), b), "bad-signature"),
        (lambda m, b: (Message(m.method, "evil.example", m.path, m.query, m.headers), b), "bad-signature"),
        (lambda m, b: (Message(m.method, m.authority, "/v1/enroll", m.query, m.headers), b), "bad-signature"),
        (lambda m, b: (Message(m.method, m.authority, m.path, "?x=1", m.headers), b), "bad-signature"),
        (lambda m, b: (m, b + b" "), "bad-digest"),
        (
            lambda m, b: (
                Message(m.method, m.authority, m.path, m.query, {**m.headers, "content-type": "text/plain"}),
                b,
            ),
            "bad-signature",
        ),
    ],
    ids=["method", "authority", "path", "query", "body", "content-type"],
)
def test_any_covered_change_breaks_the_signature(change: object, code: str) -> None:
    key = Ed25519PrivateKey.generate()
    body = b'{"old_size": 0}'
    message = _signed(body, key)
    assert callable(change)
    changed, changed_body = change(message, body)
    signed = httpsig.read_signature(changed.headers)
    with pytest.raises(SignatureError) as e:
        httpsig.verify(changed, changed_body, signed, key.public_key(), now=NOW)
    assert e.value.code == code


def test_another_key_does_not_verify() -> None:
    key, other = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    message = _signed(b"{}", key)
    with pytest.raises(SignatureError, match="does not verify"):
        httpsig.verify(message, b"{}", httpsig.read_signature(message.headers), other.public_key(), now=NOW)


@pytest.mark.parametrize(("skew", "code"), [(-400, "stale-signature"), (400, "stale-signature")])
def test_created_outside_the_window_is_refused(skew: int, code: str) -> None:
    key = Ed25519PrivateKey.generate()
    message = _signed(b"{}", key, created=NOW + skew)
    with pytest.raises(SignatureError) as e:
        httpsig.verify(message, b"{}", httpsig.read_signature(message.headers), key.public_key(), now=NOW)
    assert e.value.code == code


def test_a_long_lived_signature_is_refused() -> None:
    key = Ed25519PrivateKey.generate()
    headers = {"content-type": "application/json", "content-digest": httpsig.content_digest(b"")}
    message = Message("GET", "h", "/v1/log", "", headers)
    for name, value in httpsig.sign(message, key, nonce="5", created=NOW, lifetime=3600).items():
        headers[name.lower()] = value
    with pytest.raises(SignatureError, match="at most 300 seconds"):
        httpsig.verify(message, b"", httpsig.read_signature(headers), key.public_key(), now=NOW)


@pytest.mark.parametrize(
    "sig_input",
    [
        "",
        "nixcomply=",
        'nixcomply=("@method");created=1',
        'other=("@method" "@authority" "@path" "@query" "content-type" "content-digest");created=1;expires=2;nonce="1";keyid="k";tag="nixcomply-uplink/v1"',
        'nixcomply=("@method" "@method");created=1;expires=2;nonce="1";keyid="k";tag="t"',
        'nixcomply=("@method");created=1;created=2;expires=2;nonce="1";keyid="k";tag="t"',
        "nixcomply=" + "x" * 5000,
    ],
)
def test_malformed_signature_input_is_refused(sig_input: str) -> None:
    with pytest.raises(SignatureError):
        httpsig.read_signature({"signature-input": sig_input, "signature": "nixcomply=:AAAA:"})


def test_missing_signature_is_unauthenticated() -> None:
    with pytest.raises(SignatureError) as e:
        httpsig.read_signature({})
    assert e.value.code == "unauthenticated"


def test_a_signature_must_cover_the_required_components() -> None:
    key = Ed25519PrivateKey.generate()
    headers = {"content-type": "application/json", "content-digest": httpsig.content_digest(b"")}
    message = Message("GET", "h", "/v1/log", "", headers)
    signed = httpsig.sign(message, key, nonce="5", created=NOW, covered=("@method", "@path"))
    headers.update({k.lower(): v for k, v in signed.items()})
    with pytest.raises(SignatureError, match="does not cover @authority, @query, content-type"):
        httpsig.verify(message, b"", httpsig.read_signature(headers), key.public_key(), now=NOW)


# -- cosignatures ---------------------------------------------------------------------------


def test_cosignature_is_c2sp_cosignature_v1() -> None:
    witness = generate_witness("witness.example/w1")
    log = generate("clinic-01.example/log")
    cp = Checkpoint("clinic-01.example/log", 3, hashlib.sha256(b"x").digest())
    text = cp.text()
    line = witness.cosign(text, timestamp=1679315147)
    blob = base64.b64decode(line.split(" ")[2])
    assert line.startswith("\u2014 witness.example/w1 ")
    assert len(blob) == 4 + 8 + 64
    # key id: SHA-256(name || 0x0A || 0x04 || key)[:4]
    raw = witness.public.raw
    assert blob[:4] == hashlib.sha256(b"witness.example/w1\n\x04" + raw).digest()[:4]
    assert int.from_bytes(blob[4:12], "big") == 1679315147
    assert signed_message(text, 1679315147).startswith(b"cosignature/v1\ntime 1679315147\nclinic-01")
    witness.private_key.public_key().verify(blob[12:], signed_message(text, 1679315147))
    # it verifies, appended to the log's own note
    note = cp.sign([log]).decode() + line
    cos = parse_cosignatures(note.split("\n\n", 1)[1])
    assert verify_cosignature(text, cos, witness.public).timestamp == 1679315147


def test_cosignature_on_another_checkpoint_or_by_another_witness_fails() -> None:
    witness, other = generate_witness("w.example/a"), generate_witness("w.example/a")
    text = Checkpoint("o", 3, b"\x01" * 32).text()
    line = witness.cosign(text)
    with pytest.raises(NoteError, match="does not verify"):
        verify_cosignature(Checkpoint("o", 3, b"\x02" * 32).text(), parse_cosignatures(line), witness.public)
    with pytest.raises(NoteError, match="not cosigned"):
        verify_cosignature(text, parse_cosignatures(line), other.public)


def test_witness_keys_round_trip_and_are_checked(tmp_path: object) -> None:

    assert isinstance(tmp_path, Path)
    witness = generate_witness("w.example/a")
    assert WitnessPublicKey.from_vkey(witness.public.vkey) == witness.public
    assert parse_witness_key(witness.private_text()).public == witness.public
    path = tmp_path / "witness.key"
    path.write_text(witness.private_text())
    path.chmod(0o644)
    with pytest.raises(ValueError, match="readable by group or others"):
        read_witness_key(path)
    path.chmod(0o600)
    assert read_witness_key(path).public == witness.public
    log_vkey = generate("w.example/a").public.vkey  # algorithm byte 0x01: not a witness key
    with pytest.raises(ValueError, match="0x04"):
        WitnessPublicKey.from_vkey(log_vkey)


# -- wire models ------------------------------------------------------------------------------


def test_upload_request_refuses_unknown_fields_and_bad_base64() -> None:
    with pytest.raises(pydantic.ValidationError, match="extra"):
        UploadRequest.model_validate({"old_size": 0, "checkpoint": "x", "surprise": 1})
    with pytest.raises(pydantic.ValidationError, match="base64"):
        UploadRequest.model_validate(
            {"old_size": 0, "checkpoint": "x", "entries": [{"seq": 0, "envelope": "!!"}]}
        )


def test_check_newest_requires_a_valid_cosignature_on_the_newest_checkpoint(tmp_path: object) -> None:

    assert isinstance(tmp_path, Path)
    witness, other = generate_witness("w.example/a"), generate_witness("w.example/b")
    log = generate("o.example/log")
    (tmp_path / "log" / "checkpoints").mkdir(parents=True)
    (tmp_path / "log" / "cosignatures").mkdir()
    note = Checkpoint("o.example/log", 3, hashlib.sha256(b"x").digest()).sign([log])
    (tmp_path / "log" / "checkpoints" / "000000000003").write_bytes(note)
    assert "not cosigned" in (check_newest(tmp_path, witness.public, 3) or "")
    text = parse_note(note).text
    (tmp_path / "log" / "cosignatures" / "000000000003").write_text(other.cosign(text))
    assert "not cosigned by witness w.example/a" in (check_newest(tmp_path, witness.public, 3) or "")
    (tmp_path / "log" / "cosignatures" / "000000000003").write_text(witness.cosign(text))
    assert check_newest(tmp_path, witness.public, 3) is None
    forged = Checkpoint("o.example/log", 3, hashlib.sha256(b"y").digest()).sign([log])
    (tmp_path / "log" / "checkpoints" / "000000000003").write_bytes(forged)
    assert "does not verify" in (check_newest(tmp_path, witness.public, 3) or "")


def test_enrollment_tokens_never_look_like_an_option() -> None:
    """A token is passed as `nixcomply enroll --token T`: one starting with '-' (as random
    base64url may) would be read as an option (seen in CI: 'expected one argument')."""

    tokens = [new_token() for _ in range(2000)]
    assert all(t.startswith(TOKEN_PREFIX) for t in tokens)
    assert len(set(tokens)) == len(tokens)
    assert all(len(t) == len(TOKEN_PREFIX) + 43 for t in tokens)
