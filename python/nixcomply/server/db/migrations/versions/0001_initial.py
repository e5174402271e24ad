"""The initial schema: sites, invites, hosts, the log (entries, attachments, checkpoints),
the queryable statements, incidents and the audit log.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "attachments",
        sa.Column("host_id", sa.BigInteger(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("sha256", sa.LargeBinary(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("host_id", "seq", "name", name=op.f("pk_attachments")),
    )
    op.create_table(
        "audit_log",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("actor", sa.Text(), nullable=False),
        sa.Column("action", sa.Text(), nullable=False),
        sa.Column("site_id", sa.BigInteger(), nullable=True),
        sa.Column("host_id", sa.BigInteger(), nullable=True),
        sa.Column("detail", postgresql.JSONB(), server_default=sa.text("'{}'::jsonb"), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
    )
    op.create_table(
        "sites",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sites")),
        sa.UniqueConstraint("name", name=op.f("uq_sites_name")),
    )
    op.create_table(
        "hosts",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("site_id", sa.BigInteger(), nullable=False),
        sa.Column("hostname", sa.Text(), nullable=False),
        sa.Column("machine_id", sa.Text(), nullable=False),
        sa.Column("origin", sa.Text(), nullable=False),
        sa.Column("keyid", sa.Text(), nullable=False),
        sa.Column("transport_key", sa.LargeBinary(), nullable=False),
        sa.Column("keyring", postgresql.JSONB(), nullable=False),
        sa.Column("counter", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("accepted_size", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("root", sa.LargeBinary(), nullable=True),
        sa.Column("frontier", sa.LargeBinary(), server_default=sa.text("''::bytea"), nullable=False),
        sa.Column("last_envelope_sha256", sa.LargeBinary(), nullable=True),
        sa.Column("checkpoint", sa.LargeBinary(), nullable=True),
        sa.Column("cosignature", sa.Text(), nullable=True),
        sa.Column("enrolled_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_upload_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("accepted_size >= 0", name=op.f("ck_hosts_size")),
        sa.ForeignKeyConstraint(["site_id"], ["sites.id"], name=op.f("fk_hosts_site_id_sites")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_hosts")),
        sa.UniqueConstraint("keyid", name=op.f("uq_hosts_keyid")),
        sa.UniqueConstraint("site_id", "hostname", name=op.f("uq_hosts_site_id_hostname")),
    )
    op.create_table(
        "invites",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("site_id", sa.BigInteger(), nullable=False),
        sa.Column("hostname", sa.Text(), nullable=False),
        sa.Column("token_sha256", sa.LargeBinary(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(["site_id"], ["sites.id"], name=op.f("fk_invites_site_id_sites")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_invites")),
        sa.UniqueConstraint("token_sha256", name=op.f("uq_invites_token_sha256")),
    )
    op.create_table(
        "statements",
        sa.Column("host_id", sa.BigInteger(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("site_id", sa.BigInteger(), nullable=False),
        sa.Column("predicate_type", sa.Text(), nullable=False),
        sa.Column("event", sa.Text(), nullable=False),
        sa.Column("outcome", sa.Text(), nullable=False),
        sa.Column("observed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("bundle_id", sa.Text(), nullable=False),
        sa.Column("control_ids", postgresql.ARRAY(sa.Text()), nullable=False),
        sa.Column("control_states", postgresql.ARRAY(sa.Text()), nullable=False),
        sa.ForeignKeyConstraint(["site_id"], ["sites.id"], name=op.f("fk_statements_site_id_sites")),
        sa.PrimaryKeyConstraint("host_id", "seq", name=op.f("pk_statements")),
    )
    op.create_index(
        op.f("ix_statements_control_ids"), "statements", ["control_ids"], unique=False, postgresql_using="gin"
    )
    op.create_index(
        op.f("ix_statements_control_states"),
        "statements",
        ["control_states"],
        unique=False,
        postgresql_using="gin",
    )
    op.create_index(
        op.f("ix_statements_host_id_observed_at"), "statements", ["host_id", "observed_at"], unique=False
    )
    op.create_index(
        op.f("ix_statements_outcome_observed_at"), "statements", ["outcome", "observed_at"], unique=False
    )
    op.create_index(
        op.f("ix_statements_predicate_type_observed_at"),
        "statements",
        ["predicate_type", "observed_at"],
        unique=False,
    )
    op.create_index(
        op.f("ix_statements_site_id_observed_at"), "statements", ["site_id", "observed_at"], unique=False
    )
    op.create_table(
        "checkpoints",
        sa.Column("host_id", sa.BigInteger(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("root", sa.LargeBinary(), nullable=False),
        sa.Column("note", sa.LargeBinary(), nullable=False),
        sa.Column("cosignature", sa.Text(), nullable=False),
        sa.Column("accepted_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(["host_id"], ["hosts.id"], name=op.f("fk_checkpoints_host_id_hosts")),
        sa.PrimaryKeyConstraint("host_id", "size", name=op.f("pk_checkpoints")),
    )
    op.create_table(
        "entries",
        sa.Column("host_id", sa.BigInteger(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("envelope", sa.LargeBinary(), nullable=False),
        sa.Column("envelope_sha256", sa.LargeBinary(), nullable=False),
        sa.Column("leaf", sa.LargeBinary(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(["host_id"], ["hosts.id"], name=op.f("fk_entries_host_id_hosts")),
        sa.PrimaryKeyConstraint("host_id", "seq", name=op.f("pk_entries")),
    )
    op.create_table(
        "incidents",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("host_id", sa.BigInteger(), nullable=False),
        sa.Column("site_id", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("accepted_checkpoint", sa.LargeBinary(), nullable=True),
        sa.Column("presented_checkpoint", sa.LargeBinary(), nullable=False),
        sa.Column("presented_sha256", sa.LargeBinary(), nullable=False),
        sa.Column("detail", postgresql.JSONB(), server_default=sa.text("'{}'::jsonb"), nullable=False),
        sa.Column("count", sa.Integer(), server_default=sa.text("1"), nullable=False),
        sa.Column(
            "first_seen_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.Column(
            "last_seen_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.ForeignKeyConstraint(["host_id"], ["hosts.id"], name=op.f("fk_incidents_host_id_hosts")),
        sa.ForeignKeyConstraint(["site_id"], ["sites.id"], name=op.f("fk_incidents_site_id_sites")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_incidents")),
        sa.UniqueConstraint(
            "host_id", "presented_sha256", name=op.f("uq_incidents_host_id_presented_sha256")
        ),
    )


def downgrade() -> None:
    op.drop_table("audit_log")
    op.drop_table("incidents")
    op.drop_table("checkpoints")
    op.drop_table("statements")
    op.drop_table("attachments")
    op.drop_table("entries")
    op.drop_table("hosts")
    op.drop_table("invites")
    op.drop_table("sites")
