"""The connection pool: one SQLAlchemy engine per process (psycopg 3)."""

from __future__ import annotations

from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import URL

from nixcomply.server.config import ServerConfig


def make_engine(config: ServerConfig, url: URL | None = None) -> Engine:
    """No ``pool_pre_ping``: it would cost every request a round trip (the idle poll is one
    statement). A connection a database restart broke fails its request with 503, and
    SQLAlchemy then invalidates the whole pool, so the server recovers by itself."""
    db = config.database
    return create_engine(
        url or config.database_url(),
        pool_size=db.pool_size,
        max_overflow=db.max_overflow,
        pool_timeout=db.pool_timeout,
        hide_parameters=True,
    )
