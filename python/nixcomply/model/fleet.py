"""The fleet protocol's request and response bodies (see ``nixcomply/server/PROTOCOL.md``).

Both sides validate with these models (``extra="forbid"``): the server's OpenAPI schema is
generated from them, and the host's uplink parses every answer through them. Binary values
(envelope files, attachments, proof hashes) travel as standard base64; checkpoints and
cosignatures as the text of their signed notes.
"""

from __future__ import annotations

import base64
import binascii
import secrets
from enum import StrEnum
from typing import Annotated, Any, Final

from pydantic import AfterValidator, ConfigDict, Field, StringConstraints

from nixcomply.model.base import StrictModel

PROTOCOL_VERSION: Final = 1
MAX_ENTRIES: Final = 1000
MAX_PROOF: Final = 63
MAX_ATTACHMENTS: Final = 64
API: Final = "/v1"


class _Wire(StrictModel):
    """Request and response bodies: strict, and built at import (FastAPI wraps each body in a
    field of its own, which cannot take a model whose schema is deferred)."""

    model_config = ConfigDict(defer_build=False)


def _b64(value: str) -> str:
    try:
        base64.b64decode(value, validate=True)
    except binascii.Error:
        raise ValueError("not standard base64") from None
    return value


Base64 = Annotated[str, StringConstraints(max_length=64 * 1024 * 1024), AfterValidator(_b64)]
Hash64 = Annotated[str, StringConstraints(min_length=44, max_length=44), AfterValidator(_b64)]
Name = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")]
Note = Annotated[str, StringConstraints(min_length=1, max_length=64 * 1024)]


def _printable(value: str) -> str:
    if not value.isprintable():
        raise ValueError("only printable characters (no control, format or bidirectional characters)")
    return value


# A log's origin line (c2sp.org/tlog-checkpoint): shown to operators and auditors.
Origin = Annotated[str, StringConstraints(min_length=1, max_length=200), AfterValidator(_printable)]
AttachmentName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")]


TOKEN_PREFIX: Final = "nxc1_"  # noqa: S105 - a prefix, not a secret


def new_token() -> str:
    """A single-use enrollment token: 32 random bytes, base64url, behind a prefix that says
    what it is and keeps it from ever starting with '-' (a command line would read that as
    an option)."""

    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def b64decode(value: str) -> bytes:
    return base64.b64decode(value, validate=True)


def b64encode(value: bytes) -> str:
    return base64.b64encode(value).decode()


class ErrorCode(StrEnum):
    """The stable ``code`` of every error the server answers with."""

    MALFORMED = "malformed-body"  # 400: not JSON
    INVALID = "invalid-body"  # 422: JSON that does not fit the model (unknown field, wrong type)
    TOO_LARGE = "too-large"  # 413
    UNSUPPORTED_MEDIA_TYPE = "unsupported-media-type"  # 415
    NOT_FOUND = "not-found"  # 404
    METHOD_NOT_ALLOWED = "method-not-allowed"  # 405
    UNAUTHENTICATED = "unauthenticated"  # 401: no signature
    BAD_SIGNATURE = "bad-signature"  # 401: malformed or not verifying
    BAD_DIGEST = "bad-digest"  # 401: Content-Digest does not match the body
    STALE_SIGNATURE = "stale-signature"  # 401: outside the created/expires window
    UNKNOWN_KEY = "unknown-key"  # 401: keyid of no enrolled host
    REPLAYED = "replayed"  # 401: counter not above the last accepted
    REVOKED = "revoked"  # 403
    INVALID_TOKEN = "invalid-token"  # noqa: S105 - 403: unknown, used or expired enrollment token
    ALREADY_ENROLLED = "already-enrolled"  # 409: the transport key or host name is taken
    SIZE_MISMATCH = "size-mismatch"  # 409: old_size is not the accepted size (detail.accepted_size)
    FORK = "fork"  # 409: inconsistent with what was accepted; an incident is recorded
    ROLLBACK = "rollback"  # 409: smaller than what was accepted; an incident is recorded
    BAD_ENTRY = "bad-entry"  # 422: an envelope that does not verify (detail.seq)
    BAD_CHECKPOINT = "bad-checkpoint"  # 422: malformed or not signed by the host's log key
    BAD_PROOF = "bad-proof"  # 422: the consistency proof does not verify
    BAD_KEYRING = "bad-keyring"  # 422
    RATE_LIMITED = "rate-limited"  # 429: too many requests from this host or address (Retry-After)
    UNAVAILABLE = "unavailable"  # 503: the database is unreachable; retry
    INTERNAL = "internal"  # 500: a bug; nothing was written


class ErrorBody(_Wire):
    code: ErrorCode
    message: str
    detail: dict[str, Any] | None = None


class EnrollRequest(_Wire):
    """Sent once, signed with the new transport key (which proves possession of it)."""

    token: Annotated[str, StringConstraints(min_length=16, max_length=200)]
    hostname: Name
    machine_id: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{32}$")]
    origin: Origin
    transport_key: Hash64 = Field(description="the raw Ed25519 transport public key, base64")
    keyring: dict[str, Any] = Field(description="the host's keyring.json (bundle and log public keys)")


class EnrollResponse(_Wire):
    site: Name
    hostname: Name
    origin: str
    keyid: str = Field(description="the keyid the host signs its requests with")
    witness_key: str = Field(description="the server's witness verifier key (cosignature/v1)")
    accepted_size: int = 0


class LogState(_Wire):
    """``GET /v1/log``: what the server holds of the caller's log (the idle poll)."""

    accepted_size: int
    root: Hash64 | None = None
    checkpoint: Note | None = None
    cosignature: Note | None = None
    witness_key: str


class UploadEntry(_Wire):
    seq: int = Field(ge=0)
    envelope: Base64 = Field(description="the bytes of envelope.dsse.json")
    attachments: dict[AttachmentName, Base64] = Field(default_factory=dict, max_length=MAX_ATTACHMENTS)


class UploadRequest(_Wire):
    """``POST /v1/log/entries``: entries ``old_size``.., the host's checkpoint of the tree they
    end, and the consistency proof from ``old_size`` to it (RFC 6962 §2.1.2)."""

    old_size: int = Field(ge=0)
    entries: list[UploadEntry] = Field(default_factory=list, max_length=MAX_ENTRIES)
    checkpoint: Note
    proof: list[Hash64] = Field(default_factory=list, max_length=MAX_PROOF)


class UploadResponse(_Wire):
    accepted_size: int
    stored: int = Field(description="entries stored by this request")
    duplicates: int = Field(description="entries already held, byte for byte")
    checkpoint: Note
    cosignature: Note = Field(description="the witness's cosignature line(s) on the checkpoint")
    witness_key: str
