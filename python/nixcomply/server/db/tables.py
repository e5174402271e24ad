"""The server's PostgreSQL schema, as SQLAlchemy Core tables (the alembic migrations in
``migrations/versions`` create exactly this; a test compares them).

Tenancy: one server deployment (one database) per MSP; inside it, ``sites`` (clinics) own
``hosts``, and every row of evidence carries its ``host_id`` (statements also their
``site_id``, so a site's queries need no join). Queries go through
``nixcomply.server.db.queries``, which scopes each one by tenant in one place.

``hosts`` is the hot row: it holds what an idle poll answers (accepted size, root, newest
checkpoint and cosignature) and the request counter that stops replays, so a poll is one
indexed statement. ``frontier`` is the RFC 6962 frontier of the accepted tree (the
concatenated 32-byte hashes), which lets ingestion recompute the root of a longer tree
from the new leaves alone.
"""

from __future__ import annotations

from typing import Final

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

NAMING: Final = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
metadata: Final = MetaData(naming_convention=NAMING)
NOW: Final = text("now()")


def _ts(name: str, *, nullable: bool = False, default: bool = False) -> Column[object]:
    return Column(name, DateTime(timezone=True), nullable=nullable, server_default=NOW if default else None)


sites: Final = Table(
    "sites",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("name", Text, nullable=False, unique=True),
    _ts("created_at", default=True),
)

invites: Final = Table(
    "invites",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("site_id", BigInteger, ForeignKey("sites.id"), nullable=False),
    Column("hostname", Text, nullable=False),
    Column("token_sha256", LargeBinary, nullable=False, unique=True),
    _ts("expires_at"),
    _ts("used_at", nullable=True),
    _ts("created_at", default=True),
)

hosts: Final = Table(
    "hosts",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("site_id", BigInteger, ForeignKey("sites.id"), nullable=False),
    Column("hostname", Text, nullable=False),
    Column("machine_id", Text, nullable=False),
    Column("origin", Text, nullable=False),
    Column("keyid", Text, nullable=False, unique=True),
    Column("transport_key", LargeBinary, nullable=False),
    Column("keyring", JSONB, nullable=False),
    Column("counter", BigInteger, nullable=False, server_default=text("0")),
    Column("accepted_size", BigInteger, nullable=False, server_default=text("0")),
    Column("root", LargeBinary, nullable=True),
    Column("frontier", LargeBinary, nullable=False, server_default=text("''::bytea")),
    Column("last_envelope_sha256", LargeBinary, nullable=True),
    Column("checkpoint", LargeBinary, nullable=True),
    Column("cosignature", Text, nullable=True),
    _ts("enrolled_at", default=True),
    _ts("last_seen_at", nullable=True),
    _ts("last_upload_at", nullable=True),
    _ts("revoked_at", nullable=True),
    UniqueConstraint("site_id", "hostname"),
    CheckConstraint("accepted_size >= 0", name="size"),
)

entries: Final = Table(
    "entries",
    metadata,
    Column("host_id", BigInteger, ForeignKey("hosts.id"), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("envelope", LargeBinary, nullable=False),
    Column("envelope_sha256", LargeBinary, nullable=False),
    Column("leaf", LargeBinary, nullable=False),
    _ts("received_at", default=True),
    PrimaryKeyConstraint("host_id", "seq"),
)

attachments: Final = Table(
    "attachments",
    metadata,
    Column("host_id", BigInteger, nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("name", Text, nullable=False),
    Column("sha256", LargeBinary, nullable=False),
    Column("data", LargeBinary, nullable=False),
    PrimaryKeyConstraint("host_id", "seq", "name"),
)

statements: Final = Table(
    "statements",
    metadata,
    Column("host_id", BigInteger, nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("site_id", BigInteger, ForeignKey("sites.id"), nullable=False),
    Column("predicate_type", Text, nullable=False),
    Column("event", Text, nullable=False),
    Column("outcome", Text, nullable=False),
    _ts("observed_at"),
    Column("bundle_id", Text, nullable=False),
    # The controls a statement reports, as arrays with GIN indexes (one row per entry keeps
    # ingestion to one COPY row): their ids, and "id=status" pairs.
    Column("control_ids", ARRAY(Text), nullable=False),
    Column("control_states", ARRAY(Text), nullable=False),
    PrimaryKeyConstraint("host_id", "seq"),
    Index(None, "control_ids", postgresql_using="gin"),
    Index(None, "control_states", postgresql_using="gin"),
    Index(None, "site_id", "observed_at"),
    Index(None, "host_id", "observed_at"),
    Index(None, "predicate_type", "observed_at"),
    Index(None, "outcome", "observed_at"),
)

checkpoints: Final = Table(
    "checkpoints",
    metadata,
    Column("host_id", BigInteger, ForeignKey("hosts.id"), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("root", LargeBinary, nullable=False),
    Column("note", LargeBinary, nullable=False),
    Column("cosignature", Text, nullable=False),
    _ts("accepted_at", default=True),
    PrimaryKeyConstraint("host_id", "size"),
)

incidents: Final = Table(
    "incidents",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("host_id", BigInteger, ForeignKey("hosts.id"), nullable=False),
    Column("site_id", BigInteger, ForeignKey("sites.id"), nullable=False),
    Column("kind", Text, nullable=False),
    Column("message", Text, nullable=False),
    Column("accepted_checkpoint", LargeBinary, nullable=True),
    Column("presented_checkpoint", LargeBinary, nullable=False),
    Column("presented_sha256", LargeBinary, nullable=False),
    Column("detail", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("count", Integer, nullable=False, server_default=text("1")),
    _ts("first_seen_at", default=True),
    _ts("last_seen_at", default=True),
    UniqueConstraint("host_id", "presented_sha256"),
)

audit_log: Final = Table(
    "audit_log",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    _ts("at", default=True),
    Column("actor", Text, nullable=False),
    Column("action", Text, nullable=False),
    Column("site_id", BigInteger, nullable=True),
    Column("host_id", BigInteger, nullable=True),
    Column("detail", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
)
