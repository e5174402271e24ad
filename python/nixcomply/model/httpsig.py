"""HTTP Message Signatures (RFC 9421) with Ed25519, and Content-Digest (RFC 9530).

Every request a host makes to the fleet server is signed with its *transport key* (an
Ed25519 key made at enrollment, separate from the evidence keys). The signature covers::

    "@method" "@authority" "@path" "@query" "content-type" "content-digest"

with the parameters ``created``, ``expires``, ``nonce``, ``keyid``, ``alg="ed25519"`` and
``tag="nixcomply-uplink/v1"``, under the label ``nixcomply``. ``content-digest`` is
``sha-256=:<base64>:`` of the exact body bytes (an empty body for a GET), so the body is
signed too. The signature base is built exactly as RFC 9421 §2.5 says: one line per covered
component (``"<name>": <value>``), then the ``"@signature-params"`` line, joined by LF,
without a final LF; the signature is Ed25519 over those bytes (§3.3.6).

Replay protection (RFC 9421 §7.2.2 leaves the policy to the application): ``created``
must lie within the allowed clock skew, ``expires`` no later than ``created`` plus the
maximum lifetime, and ``nonce`` is the decimal of a per-key counter that must be larger
than every counter the server accepted from that key before. A captured request is
therefore good for nothing: its counter is used up. This module only checks the signature
and the time window; the counter is the server's (one indexed row per host).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

LABEL: Final = "nixcomply"
TAG: Final = "nixcomply-uplink/v1"
ALG: Final = "ed25519"
COVERED: Final = ("@method", "@authority", "@path", "@query", "content-type", "content-digest")
MAX_LIFETIME: Final = 300
MAX_SKEW: Final = 300
MAX_HEADER: Final = 4096

_KEY: Final = r"[a-z*][a-z0-9_.*-]*"
_STRING: Final = r'"(?:[^"\\\x00-\x1f\x7f]|\\["\\])*"'
_ITEM: Final = re.compile(rf"({_KEY})=\(((?:\s*{_STRING})*)\s*\)((?:;{_KEY}=(?:-?[0-9]{{1,15}}|{_STRING}))*)")
_PARAM: Final = re.compile(rf";({_KEY})=(-?[0-9]{{1,15}}|{_STRING})")
_STR_ITEM: Final = re.compile(_STRING)
_SIGNATURE: Final = re.compile(rf"({_KEY})=:([A-Za-z0-9+/]*={{0,2}}):")
_DIGEST: Final = re.compile(r"sha-256=:([A-Za-z0-9+/]{43}=):")


class SignatureError(ValueError):
    """A request's signature is missing, malformed, outside its time window or does not
    verify. ``code`` is the stable error code the server answers with."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def content_digest(body: bytes) -> str:
    """The RFC 9530 ``Content-Digest`` field value of ``body`` (sha-256)."""
    return "sha-256=:" + base64.b64encode(hashlib.sha256(body).digest()).decode() + ":"


def key_id(public: Ed25519PublicKey | bytes) -> str:
    """The ``keyid`` of a transport key: the hex sha256 of its raw public key."""
    raw = public if isinstance(public, bytes) else public.public_bytes_raw()
    return hashlib.sha256(raw).hexdigest()


def _sf_string(value: str) -> str:
    if any(ord(c) < 0x20 or ord(c) > 0x7E for c in value):
        raise ValueError(f"{value!r} cannot be an sf-string")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _unquote(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text[1:-1])


@dataclass(frozen=True)
class SignatureParams:
    """The covered components and parameters of one signature (``Signature-Input``)."""

    covered: tuple[str, ...]
    created: int
    expires: int
    nonce: str
    keyid: str
    alg: str = ALG
    tag: str = TAG

    def serialize(self) -> str:
        """The inner list with its parameters, as it appears in ``Signature-Input`` and
        as the value of the ``@signature-params`` line."""
        inner = " ".join(_sf_string(c) for c in self.covered)
        return (
            f"({inner});created={self.created};expires={self.expires};nonce={_sf_string(self.nonce)}"
            f";keyid={_sf_string(self.keyid)};alg={_sf_string(self.alg)};tag={_sf_string(self.tag)}"
        )


@dataclass(frozen=True)
class Message:
    """What a signature covers of a request: method, authority, path, query (with its
    leading ``?``; ``?`` alone for none, RFC 9421 §2.2.7), header fields by lowercase name."""

    method: str
    authority: str
    path: str
    query: str
    headers: Mapping[str, str]

    def component(self, name: str) -> str:
        match name:
            case "@method":
                return self.method.upper()
            case "@authority":
                return self.authority.lower()
            case "@path":
                return self.path or "/"
            case "@query":
                return self.query if self.query.startswith("?") else "?" + self.query
            case _ if name.startswith("@"):
                raise SignatureError("bad-signature", f"derived component {name} is not supported")
            case _:
                value = self.headers.get(name)
                if value is None:
                    raise SignatureError("bad-signature", f"covered header field {name} is missing")
                return value.strip()


def signature_base(message: Message, covered: Sequence[str], params: str) -> bytes:
    """RFC 9421 §2.5: one line per covered component, then ``"@signature-params"`` with
    the serialized parameters (``SignatureParams.serialize``)."""
    lines = [f'"{name}": {message.component(name)}' for name in covered]
    lines.append(f'"@signature-params": {params}')
    text = "\n".join(lines)
    if any(ord(c) < 0x20 and c != "\n" for c in text):
        raise SignatureError("bad-signature", "a covered component contains a control character")
    return text.encode("utf-8")


def sign(
    message: Message,
    key: Ed25519PrivateKey,
    *,
    nonce: str,
    created: int,
    lifetime: int = 60,
    covered: Sequence[str] = COVERED,
) -> dict[str, str]:
    """The ``Signature-Input`` and ``Signature`` header fields for ``message`` (whose
    headers must already hold ``content-type`` and ``content-digest``)."""
    params = SignatureParams(
        tuple(covered), created, created + lifetime, nonce, key_id(key.public_key().public_bytes_raw())
    )
    signature = key.sign(signature_base(message, params.covered, params.serialize()))
    return {
        "Signature-Input": f"{LABEL}={params.serialize()}",
        "Signature": f"{LABEL}=:{base64.b64encode(signature).decode()}:",
    }


def parse_signature_input(value: str) -> tuple[str, SignatureParams, str]:
    """The label, parameters and serialized parameters (the ``@signature-params`` value,
    as sent) of the one signature in a ``Signature-Input`` field."""
    if len(value) > MAX_HEADER:
        raise SignatureError("bad-signature", "Signature-Input is too long")
    m = _ITEM.fullmatch(value.strip())
    if m is None:
        raise SignatureError("bad-signature", "Signature-Input is not one signature in RFC 9421 syntax")
    label, inner, raw_params = m.groups()
    covered = tuple(_unquote(s) for s in _STR_ITEM.findall(inner))
    params: dict[str, str] = {}
    for key, val in _PARAM.findall(raw_params):
        if key in params:
            raise SignatureError("bad-signature", f"parameter {key} is given twice")
        params[key] = val
    try:
        created = int(params["created"])
        expires = int(params["expires"])
        nonce = _unquote(params["nonce"])
        keyid = _unquote(params["keyid"])
        alg = _unquote(params.get("alg", f'"{ALG}"'))
        tag = _unquote(params["tag"])
    except KeyError as e:
        raise SignatureError("bad-signature", f"Signature-Input lacks the {e.args[0]} parameter") from None
    except ValueError:
        raise SignatureError("bad-signature", "Signature-Input has a malformed parameter") from None
    if len(set(covered)) != len(covered):
        raise SignatureError("bad-signature", "a component is covered twice")
    text = value.strip()[len(label) + 1 :]
    return label, SignatureParams(covered, created, expires, nonce, keyid, alg, tag), text


def parse_signature(value: str, label: str) -> bytes:
    if len(value) > MAX_HEADER:
        raise SignatureError("bad-signature", "Signature is too long")
    m = _SIGNATURE.fullmatch(value.strip())
    if m is None or m.group(1) != label:
        raise SignatureError("bad-signature", f"Signature is not one byte sequence labelled {label}")
    try:
        return base64.b64decode(m.group(2), validate=True)
    except binascii.Error:
        raise SignatureError("bad-signature", "Signature is not valid base64") from None


def check_digest(headers: Mapping[str, str], body: bytes) -> None:
    """The body matches its ``Content-Digest`` (RFC 9530, sha-256)."""
    value = headers.get("content-digest")
    if value is None:
        raise SignatureError("bad-signature", "Content-Digest is missing")
    m = _DIGEST.fullmatch(value.strip())
    if m is None:
        raise SignatureError("bad-signature", "Content-Digest is not one sha-256 digest")
    if value.strip() != content_digest(body):
        raise SignatureError("bad-digest", "Content-Digest does not match the body")


@dataclass(frozen=True)
class Verified:
    keyid: str
    counter: int
    created: int
    expires: int


@dataclass(frozen=True)
class Signed:
    """The signature headers of a request, parsed but not verified."""

    params: SignatureParams
    params_text: str
    signature: bytes


def read_signature(headers: Mapping[str, str]) -> Signed:
    """Parse (without verifying) the signature headers: the server needs the ``keyid`` to
    find the key before it can verify."""
    sig_input = headers.get("signature-input")
    sig = headers.get("signature")
    if sig_input is None or sig is None:
        raise SignatureError("unauthenticated", "the request is not signed (RFC 9421 Signature-Input)")
    label, params, text = parse_signature_input(sig_input)
    if label != LABEL:
        raise SignatureError("bad-signature", f"the signature label is {label!r}, expected {LABEL!r}")
    return Signed(params, text, parse_signature(sig, label))


def verify(
    message: Message,
    body: bytes,
    signed: Signed,
    public: Ed25519PublicKey,
    *,
    now: int,
    max_skew: int = MAX_SKEW,
    max_lifetime: int = MAX_LIFETIME,
) -> Verified:
    """Check that ``params`` cover what they must, lie within their time window, that the
    body matches its digest, and that the signature verifies with ``public``. The caller
    still checks ``Verified.counter`` against the last one it accepted from this key."""
    params = signed.params
    missing = [c for c in COVERED if c not in params.covered]
    if missing:
        raise SignatureError("bad-signature", f"the signature does not cover {', '.join(missing)}")
    if params.alg != ALG:
        raise SignatureError("bad-signature", f"alg {params.alg!r}; only {ALG} is accepted")
    if params.tag != TAG:
        raise SignatureError("bad-signature", f"tag {params.tag!r}; expected {TAG!r}")
    if not re.fullmatch(r"[1-9][0-9]{0,18}", params.nonce):
        raise SignatureError("bad-signature", "nonce must be the decimal request counter")
    if abs(params.created - now) > max_skew:
        raise SignatureError(
            "stale-signature", f"created {params.created} is too far from the server's clock"
        )
    if params.expires <= now or params.expires < params.created:
        raise SignatureError("stale-signature", "the signature has expired")
    if params.expires - params.created > max_lifetime:
        raise SignatureError("bad-signature", f"a signature may live at most {max_lifetime} seconds")
    check_digest(message.headers, body)
    try:
        public.verify(signed.signature, signature_base(message, params.covered, signed.params_text))
    except InvalidSignature:
        raise SignatureError("bad-signature", "the signature does not verify") from None
    return Verified(params.keyid, int(params.nonce), params.created, params.expires)
