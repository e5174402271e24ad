"""Who is calling: RFC 9421 signature verification and the replay counter (PROTOCOL.md).

Transport keys never change for a keyid, so they are cached in the process; revocation
and the counter are checked in the database on every request, in the same statement that
returns the host's row. An idle poll therefore costs exactly one indexed statement. A host
over its rate limit (``nixcomply.server.ratelimit``) is answered 429 once it is known to be
that host.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from datetime import datetime
from typing import Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from fastapi import Request
from sqlalchemy import Engine

from nixcomply.model import httpsig
from nixcomply.model.fleet import ErrorCode
from nixcomply.server.db import queries
from nixcomply.server.db.queries import HostRow
from nixcomply.server.errors import ApiError
from nixcomply.server.ratelimit import TokenBuckets

CACHE_SIZE: Final = 200_000


def message_of(request: Request) -> httpsig.Message:
    headers = {k.lower(): v for k, v in request.headers.items()}
    raw_path = request.scope.get("raw_path")
    path = raw_path.decode("latin-1") if isinstance(raw_path, bytes) else request.url.path
    query = request.scope.get("query_string", b"").decode("latin-1")
    return httpsig.Message(request.method, headers.get("host", ""), path, "?" + query, headers)


def _refused(e: httpsig.SignatureError) -> ApiError:
    return ApiError(
        401, ErrorCode(e.code), str(e), headers={"WWW-Authenticate": 'Signature tag="nixcomply-uplink/v1"'}
    )


def check_signature(
    message: httpsig.Message, body: bytes, public: Ed25519PublicKey, *, now: int, skew: int
) -> httpsig.Verified:
    try:
        signed = httpsig.read_signature(message.headers)
        return httpsig.verify(message, body, signed, public, now=now, max_skew=skew)
    except httpsig.SignatureError as e:
        raise _refused(e) from None


class Authenticator:
    def __init__(self, engine: Engine, *, skew: int, limits: TokenBuckets | None = None) -> None:
        self.engine = engine
        self.skew = skew
        self.limits = limits
        self._keys: OrderedDict[str, Ed25519PublicKey] = OrderedDict()
        self._lock = threading.Lock()

    def _key(self, keyid: str) -> Ed25519PublicKey:
        with self._lock:
            key = self._keys.get(keyid)
            if key is not None:
                self._keys.move_to_end(keyid)
                return key
        with self.engine.connect() as conn:
            found = queries.transport_key(conn, keyid)
        if found is None:
            raise ApiError(401, ErrorCode.UNKNOWN_KEY, "no enrolled host has this key")
        key = Ed25519PublicKey.from_public_bytes(found[0])
        with self._lock:
            self._keys[keyid] = key
            while len(self._keys) > CACHE_SIZE:
                self._keys.popitem(last=False)
        return key

    def host(self, request: Request, body: bytes, now: datetime) -> HostRow:
        """The enrolled, unrevoked host that signed ``request``; consumes its counter."""
        message = message_of(request)
        try:
            signed = httpsig.read_signature(message.headers)
        except httpsig.SignatureError as e:
            raise _refused(e) from None
        public = self._key(signed.params.keyid)
        verified = check_signature(message, body, public, now=int(now.timestamp()), skew=self.skew)
        with self.engine.begin() as conn:
            row = queries.authenticate(conn, keyid=verified.keyid, counter=verified.counter, now=now)
            if row is not None:
                request.state.host = f"{row.site_id}/{row.hostname}"
        if row is not None:
            # Counted once the request is the host's own (signature and counter accepted),
            # so nobody can spend another host's tokens with forged or replayed requests.
            wait = self.limits.take(verified.keyid) if self.limits is not None else None
            if wait is not None:
                raise ApiError(
                    429,
                    ErrorCode.RATE_LIMITED,
                    f"too many requests from this host; retry in {wait} s",
                    headers={"Retry-After": str(wait)},
                )
            return row
        with self.engine.connect() as conn:
            found = queries.transport_key(conn, verified.keyid)
        if found is not None and found[1]:
            raise ApiError(403, ErrorCode.REVOKED, "this host's enrollment was revoked")
        raise ApiError(401, ErrorCode.REPLAYED, "the request counter was already used (a replayed request)")
