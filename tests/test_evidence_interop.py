"""Interop: nixcomply's DSSE envelopes verify with an independent implementation
(securesystemslib, a test dependency only), and envelopes it signs verify with nixcomply."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fixtures_evidence import Keys
from securesystemslib.dsse import Envelope as SslibEnvelope
from securesystemslib.exceptions import VerificationError
from securesystemslib.signer import CryptoSigner, SSlibKey

from nixcomply.evidence import dsse
from nixcomply.evidence.keys import PublicKey, Signer
from nixcomply.evidence.statement import parse_statement
from nixcomply.evidence.store import ENVELOPE_FILE


def sslib_key(key: PublicKey) -> SSlibKey:
    # securesystemslib finds keys by keyid, so give it the hint nixcomply writes.
    return SSlibKey(key.key_id_hex, "ed25519", "ed25519", {"public": key.raw.hex()})


def test_stored_envelopes_verify_with_securesystemslib(sample_store: Path, keys: Keys) -> None:
    envelopes = sorted(sample_store.glob(f"evidence/*/*/*/*/{ENVELOPE_FILE}"))
    assert len(envelopes) == 9
    for path in envelopes:
        theirs = SslibEnvelope.from_dict(json.loads(path.read_bytes()))
        accepted = theirs.verify([sslib_key(keys.bundle.public)], 1)
        assert list(accepted) == [keys.bundle.public.key_id_hex]
        assert theirs.payload_type == dsse.IN_TOTO_PAYLOAD_TYPE
        assert theirs.pae() == dsse.pae(theirs.payload_type, theirs.payload)
        parse_statement(theirs.payload)


def test_securesystemslib_envelope_verifies_with_nixcomply() -> None:
    private = Ed25519PrivateKey.generate()
    ours = Signer("interop/test", private)
    signer = CryptoSigner(private, sslib_key(ours.public))
    envelope = SslibEnvelope(b'{"_type":"x"}', dsse.IN_TOTO_PAYLOAD_TYPE, {})
    envelope.sign(signer)
    parsed = dsse.from_json(envelope.to_dict())
    assert dsse.verify(parsed, [ours.public]) == b'{"_type":"x"}'


def test_tampered_envelope_fails_in_both() -> None:
    private = Ed25519PrivateKey.generate()
    ours = Signer("interop/test", private)
    data = dsse.sign(b"payload", [ours]).to_json()
    data["payloadType"] = "application/other"
    theirs = SslibEnvelope.from_dict(json.loads(json.dumps(data)))
    with pytest.raises(VerificationError):
        theirs.verify([sslib_key(ours.public)], 1)
    assert not dsse.verified_keys(dsse.from_json(data), [ours.public], payload_type="application/other")
