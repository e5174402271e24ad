"""DSSE envelopes (github.com/secure-systems-lab/dsse, protocol v1) signed with Ed25519.

The signature covers the pre-authentication encoding (PAE) of the payload type and the
exact payload bytes, never a re-serialisation::

    PAE(type, body) = "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body

with LEN the decimal byte length. The stored envelope file is the JSON object
``{"payload": base64(payload), "payloadType": type, "signatures": [{"keyid": hint, "sig":
base64(signature)}]}`` written compactly with sorted keys and a final newline; its bytes
are what the Merkle log hashes. ``keyid`` is only a hint (the C2SP key id of the signing
key, 8 hex digits): verification tries every trusted key, hinted key first. Base64 is read
in standard or URL-safe form, padded or not (the spec allows either).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from nixcomply.evidence.keys import PublicKey, Signer, b64decode_strict

IN_TOTO_PAYLOAD_TYPE: Final = "application/vnd.in-toto+json"


class EnvelopeError(ValueError):
    """The envelope is malformed or does not verify; the message says which part."""


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding."""
    t = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(payload), payload)


@dataclass(frozen=True)
class Signature:
    keyid: str
    sig: bytes


@dataclass(frozen=True)
class Envelope:
    payload: bytes
    payload_type: str
    signatures: tuple[Signature, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "payload": base64.b64encode(self.payload).decode(),
            "payloadType": self.payload_type,
            "signatures": [
                {"keyid": s.keyid, "sig": base64.b64encode(s.sig).decode()} for s in self.signatures
            ],
        }

    def to_bytes(self) -> bytes:
        return (json.dumps(self.to_json(), sort_keys=True, separators=(",", ":")) + "\n").encode()


def sign(payload: bytes, signers: Sequence[Signer], *, payload_type: str = IN_TOTO_PAYLOAD_TYPE) -> Envelope:
    """An envelope over ``payload`` with one signature per signer (rotation needs two)."""
    if not signers:
        raise ValueError("an envelope needs at least one signer")
    message = pae(payload_type, payload)
    return Envelope(payload, payload_type, tuple(Signature(s.key_id_hex, s.sign(message)) for s in signers))


# The one form nixcomply writes (Envelope.to_bytes, one signature), read without the JSON
# parser: nothing between these delimiters can be a JSON escape (strict base64 and an
# alphanumeric key id reject the backslash), so json.loads would give the same fields.
_HEAD: Final = b'{"payload":"'
_MIDDLE: Final = b'","payloadType":"' + IN_TOTO_PAYLOAD_TYPE.encode() + b'","signatures":[{"keyid":"'
_SIG: Final = b'","sig":"'
_TAILS: Final = (b'"}]}\n', b'"}]}')


def _parse_canonical(data: bytes) -> Envelope | None:
    if not data.startswith(_HEAD):
        return None
    end = data.find(b'"', len(_HEAD))
    if end < 0 or not data.startswith(_MIDDLE, end):
        return None
    key_start = end + len(_MIDDLE)
    key_end = data.find(b'"', key_start)
    if key_end < 0 or not data.startswith(_SIG, key_end):
        return None
    sig_start = key_end + len(_SIG)
    sig_end = data.find(b'"', sig_start)
    keyid = data[key_start:key_end]
    if sig_end < 0 or data[sig_end:] not in _TAILS or not keyid.isalnum():
        return None
    try:
        payload = binascii.a2b_base64(data[len(_HEAD) : end], strict_mode=True)
        sig = binascii.a2b_base64(data[sig_start:sig_end], strict_mode=True)
    except binascii.Error:
        return None  # the general path says what is wrong
    return Envelope(payload, IN_TOTO_PAYLOAD_TYPE, (Signature(keyid.decode(), sig),))


def parse(data: bytes | str) -> Envelope:
    """Parse an envelope; raises :class:`EnvelopeError` naming the bad field."""
    if isinstance(data, bytes) and (envelope := _parse_canonical(data)) is not None:
        return envelope
    return _parse_json(data)


def _parse_json(data: bytes | str) -> Envelope:
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise EnvelopeError(f"not JSON: {e}") from None
    return from_json(obj)


def from_json(obj: object) -> Envelope:
    if not isinstance(obj, dict):
        raise EnvelopeError("not a JSON object")
    extra = set(obj) - {"payload", "payloadType", "signatures"}
    if extra:
        raise EnvelopeError(f"unexpected field(s): {', '.join(sorted(extra))}")
    payload_b64 = obj.get("payload")
    payload_type = obj.get("payloadType")
    sigs = obj.get("signatures")
    if not isinstance(payload_b64, str):
        raise EnvelopeError("payload: missing or not a string")
    if not isinstance(payload_type, str):
        raise EnvelopeError("payloadType: missing or not a string")
    if not isinstance(sigs, list) or not sigs:
        raise EnvelopeError("signatures: missing or empty")
    try:
        payload = b64decode_strict(payload_b64)
    except ValueError as e:
        raise EnvelopeError(f"payload: {e}") from None
    signatures = []
    for i, s in enumerate(sigs):
        if not isinstance(s, dict) or not isinstance(s.get("sig"), str):
            raise EnvelopeError(f"signatures[{i}]: not an object with a string 'sig'")
        keyid = s.get("keyid", "")
        if not isinstance(keyid, str):
            raise EnvelopeError(f"signatures[{i}].keyid: not a string")
        try:
            raw = b64decode_strict(s["sig"])
        except ValueError as e:
            raise EnvelopeError(f"signatures[{i}].sig: {e}") from None
        signatures.append(Signature(keyid, raw))
    return Envelope(payload, payload_type, tuple(signatures))


def verified_keys(
    envelope: Envelope, trusted: Sequence[PublicKey], *, payload_type: str = IN_TOTO_PAYLOAD_TYPE
) -> list[PublicKey]:
    """The trusted keys that made a valid signature on ``envelope`` (possibly none).

    Every signature is tried against every trusted key; ``keyid`` only orders the attempts.
    Raises :class:`EnvelopeError` if the payload type is not the expected one.
    """
    if envelope.payload_type != payload_type:
        raise EnvelopeError(f"payloadType is {envelope.payload_type!r}, expected {payload_type!r}")
    message = pae(envelope.payload_type, envelope.payload)
    found: list[PublicKey] = []
    for signature in envelope.signatures:
        if len(signature.sig) != 64:
            continue
        candidates = sorted(trusted, key=lambda k: k.key_id_hex != signature.keyid)
        for key in candidates:
            if key in found:
                continue
            if key.verify(signature.sig, message):
                found.append(key)
                break
    return found


def verify(
    envelope: Envelope, trusted: Sequence[PublicKey], *, payload_type: str = IN_TOTO_PAYLOAD_TYPE
) -> bytes:
    """The payload if at least one trusted key signed it, else :class:`EnvelopeError`."""
    if not verified_keys(envelope, trusted, payload_type=payload_type):
        raise EnvelopeError("no signature verifies with a trusted key")
    return envelope.payload
