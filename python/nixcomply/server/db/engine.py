"""The connection pool: one SQLAlchemy engine per process (psycopg 3)."""

from __future__ import annotations

from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import URL

from nixcomply.server.config import ServerConfig


def make_engine(config: ServerConfig, url: URL | None = None) -> Engine:
    """``pool_pre_ping`` replaces connections a database restart broke, so the server
    recovers by itself; requests during the outage get 503."""
    db = config.database
    return create_engine(
        url or config.database_url(),
        pool_size=db.pool_size,
        max_overflow=db.max_overflow,
        pool_timeout=db.pool_timeout,
        pool_pre_ping=True,
        hide_parameters=True,
    )
