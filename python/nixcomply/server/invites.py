"""Enrollment tokens: made for one host of one site, single use, with an expiry. The server
keeps only each token's SHA-256; the token itself is shown once, to the operator."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection

from nixcomply.model.fleet import new_token
from nixcomply.server.db import queries


def token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def invite(
    conn: Connection, site: queries.SiteRow, hostname: str, *, ttl: timedelta, actor: str
) -> tuple[str, datetime]:
    """A new token for ``hostname`` in ``site`` and when it expires (audited)."""
    token = new_token()
    expires = datetime.now(UTC) + ttl
    scope = queries.Scope.site(site.id)
    queries.create_invite(
        conn, scope, hostname=hostname, token_sha256=token_digest(token), expires_at=expires
    )
    queries.audit(conn, actor=actor, action="host.invited", scope=scope, detail={"host": hostname})
    return token, expires


def site_named(conn: Connection, name: str) -> queries.SiteRow:
    """The site called ``name``, added if there is none (for the demo and the benchmarks)."""
    found = queries.site_by_name(conn, name) or queries.add_site(conn, name)
    assert found is not None
    return found
