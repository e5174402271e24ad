"""Every SQL statement the server runs: small functions over SQLAlchemy Core that return
typed rows. Each query is narrowed to its tenant by :func:`scoped`, the one place that
knows how a site or a host limits a table; nothing else writes a ``WHERE site_id``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, TypeVar

from sqlalchemy import Connection, Table, and_, func, insert, select, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.sql import Select, Update

from nixcomply.server.db.tables import (
    attachments,
    audit_log,
    checkpoints,
    entries,
    hosts,
    incidents,
    invites,
    sites,
    statements,
)

S = TypeVar("S", Select[Any], Update)


@dataclass(frozen=True)
class Scope:
    """Whose data a query may touch: the whole MSP (the operator's CLI), one site, or one
    host (an authenticated request: a host reads and writes only its own log)."""

    site_id: int | None = None
    host_id: int | None = None

    @classmethod
    def msp(cls) -> Scope:
        return cls()

    @classmethod
    def site(cls, site_id: int) -> Scope:
        return cls(site_id=site_id)

    @classmethod
    def host(cls, site_id: int, host_id: int) -> Scope:
        return cls(site_id=site_id, host_id=host_id)


def scoped(stmt: S, table: Table, scope: Scope) -> S:
    """``stmt`` on ``table`` limited to ``scope``."""
    if scope.host_id is not None:
        column = table.c.id if table is hosts else table.c.host_id
        stmt = stmt.where(column == scope.host_id)
    if scope.site_id is not None:
        if "site_id" in table.c:
            stmt = stmt.where(table.c.site_id == scope.site_id)
        elif table is sites:
            stmt = stmt.where(sites.c.id == scope.site_id)
        else:
            stmt = stmt.where(table.c.host_id.in_(select(hosts.c.id).where(hosts.c.site_id == scope.site_id)))
    return stmt


@dataclass(frozen=True)
class SiteRow:
    id: int
    name: str
    created_at: datetime


@dataclass(frozen=True)
class HostRow:
    id: int
    site_id: int
    hostname: str
    machine_id: str
    origin: str
    keyid: str
    transport_key: bytes
    keyring: dict[str, Any]
    counter: int
    accepted_size: int
    root: bytes | None
    frontier: bytes
    last_envelope_sha256: bytes | None
    checkpoint: bytes | None
    cosignature: str | None
    enrolled_at: datetime
    last_seen_at: datetime | None
    last_upload_at: datetime | None
    revoked_at: datetime | None

    @property
    def scope(self) -> Scope:
        return Scope.host(self.site_id, self.id)


@dataclass(frozen=True)
class HostListing:
    site: str
    hostname: str
    accepted_size: int
    enrolled_at: datetime
    last_seen_at: datetime | None
    last_upload_at: datetime | None
    revoked_at: datetime | None
    incidents: int


@dataclass(frozen=True)
class InviteRow:
    id: int
    site_id: int
    hostname: str
    expires_at: datetime
    used_at: datetime | None


@dataclass(frozen=True)
class IncidentRow:
    id: int
    site: str
    hostname: str
    kind: str
    message: str
    accepted_checkpoint: bytes | None
    presented_checkpoint: bytes
    count: int
    first_seen_at: datetime
    last_seen_at: datetime


@dataclass(frozen=True)
class StatementRow:
    host_id: int
    seq: int
    site_id: int
    predicate_type: str
    event: str
    outcome: str
    observed_at: datetime
    bundle_id: str


# -- sites -----------------------------------------------------------------------------------


def add_site(conn: Connection, name: str) -> SiteRow | None:
    """The new site, or None when one of that name exists."""
    row = conn.execute(
        pg_insert(sites).values(name=name).on_conflict_do_nothing().returning(*sites.c)
    ).one_or_none()
    return None if row is None else SiteRow(**row._mapping)


def list_sites(conn: Connection, scope: Scope) -> list[SiteRow]:
    rows = conn.execute(scoped(select(sites), sites, scope).order_by(sites.c.name))
    return [SiteRow(**r._mapping) for r in rows]


def site_by_name(conn: Connection, name: str) -> SiteRow | None:
    row = conn.execute(select(sites).where(sites.c.name == name)).one_or_none()
    return None if row is None else SiteRow(**row._mapping)


# -- enrollment ------------------------------------------------------------------------------


def create_invite(
    conn: Connection, scope: Scope, *, hostname: str, token_sha256: bytes, expires_at: datetime
) -> InviteRow:
    assert scope.site_id is not None
    row = conn.execute(
        insert(invites)
        .values(site_id=scope.site_id, hostname=hostname, token_sha256=token_sha256, expires_at=expires_at)
        .returning(
            invites.c.id, invites.c.site_id, invites.c.hostname, invites.c.expires_at, invites.c.used_at
        )
    ).one()
    return InviteRow(**row._mapping)


def burn_invite(conn: Connection, *, token_sha256: bytes, hostname: str, now: datetime) -> InviteRow | None:
    """Mark a valid, unused invite for ``hostname`` used; None if there is none."""
    row = conn.execute(
        update(invites)
        .where(
            invites.c.token_sha256 == token_sha256,
            invites.c.hostname == hostname,
            invites.c.used_at.is_(None),
            invites.c.expires_at > now,
        )
        .values(used_at=now)
        .returning(
            invites.c.id, invites.c.site_id, invites.c.hostname, invites.c.expires_at, invites.c.used_at
        )
    ).one_or_none()
    return None if row is None else InviteRow(**row._mapping)


def add_host(
    conn: Connection,
    scope: Scope,
    *,
    hostname: str,
    machine_id: str,
    origin: str,
    keyid: str,
    transport_key: bytes,
    keyring: Mapping[str, Any],
) -> HostRow | None:
    """The new host, or None if the site has a host of that name or the key is taken."""
    assert scope.site_id is not None
    row = conn.execute(
        pg_insert(hosts)
        .values(
            site_id=scope.site_id,
            hostname=hostname,
            machine_id=machine_id,
            origin=origin,
            keyid=keyid,
            transport_key=transport_key,
            keyring=dict(keyring),
        )
        .on_conflict_do_nothing()
        .returning(*hosts.c)
    ).one_or_none()
    return None if row is None else HostRow(**row._mapping)


# -- authentication --------------------------------------------------------------------------


def transport_key(conn: Connection, keyid: str) -> tuple[bytes, bool] | None:
    """The transport key of ``keyid`` and whether its host is revoked (None: unknown).
    Only the failure path of :func:`authenticate` and enrollment use it."""
    row = conn.execute(
        select(hosts.c.transport_key, hosts.c.revoked_at.is_not(None)).where(hosts.c.keyid == keyid)
    ).one_or_none()
    return None if row is None else (row[0], bool(row[1]))


def authenticate(conn: Connection, *, keyid: str, counter: int, now: datetime) -> HostRow | None:
    """Advance the host's request counter to ``counter`` if it is larger and the host is
    not revoked, and return its row: the one statement of an idle poll."""
    row = conn.execute(
        update(hosts)
        .where(hosts.c.keyid == keyid, hosts.c.counter < counter, hosts.c.revoked_at.is_(None))
        .values(counter=counter, last_seen_at=now)
        .returning(*hosts.c)
    ).one_or_none()
    return None if row is None else HostRow(**row._mapping)


def lock_host(conn: Connection, scope: Scope) -> HostRow:
    """The host's row, locked until the transaction ends (uploads of one host serialise)."""
    row = conn.execute(scoped(select(hosts), hosts, scope).with_for_update()).one()
    return HostRow(**row._mapping)


# -- the log ---------------------------------------------------------------------------------


def stored_entries(conn: Connection, scope: Scope, first: int, last: int) -> dict[int, bytes]:
    """sha256 of the stored envelopes ``first..last`` (inclusive), by sequence number."""
    stmt = select(entries.c.seq, entries.c.envelope_sha256).where(entries.c.seq.between(first, last))
    return {int(r[0]): bytes(r[1]) for r in conn.execute(scoped(stmt, entries, scope))}


# PostgreSQL types of the columns COPY writes in binary (psycopg dumps each value as one).
_PG_TYPES: Final = {
    "BigInteger": "int8",
    "Integer": "int4",
    "Text": "text",
    "LargeBinary": "bytea",
    "DateTime": "timestamptz",
}


def _pg_type(column_type: object) -> str:
    if isinstance(column_type, ARRAY):
        return _pg_type(column_type.item_type) + "[]"
    return _PG_TYPES[type(column_type).__name__]


def store_log(
    conn: Connection,
    scope: Scope,
    *,
    entry_rows: Sequence[Mapping[str, Any]],
    attachment_rows: Sequence[Mapping[str, Any]],
    statement_rows: Sequence[Mapping[str, Any]],
) -> None:
    """Insert new entries with what they carry, bulk-loaded with ``COPY`` in the caller's
    transaction, in COPY's binary format: one round trip per table instead of one per row.
    The rows name their ``host_id`` (and ``site_id``), which :func:`_own` checks against
    the scope."""
    driver = conn.connection.driver_connection
    assert driver is not None
    with driver.cursor() as cursor:
        for table, rows in (
            (entries, entry_rows),
            (attachments, attachment_rows),
            (statements, statement_rows),
        ):
            if not rows:
                continue
            columns = list(rows[0])
            unknown = set(columns) - set(table.c.keys())
            if unknown:
                raise ValueError(f"{table.name} has no column(s) {', '.join(sorted(unknown))}")
            with cursor.copy(f"COPY {table.name} ({', '.join(columns)}) FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types([_pg_type(table.c[c].type) for c in columns])
                for row in rows:
                    owned = _own(scope, row)
                    copy.write_row([owned[c] for c in columns])


def _own(scope: Scope, row: Mapping[str, Any]) -> Mapping[str, Any]:
    if row["host_id"] != scope.host_id or row.get("site_id", scope.site_id) != scope.site_id:
        raise ValueError("a row outside the caller's scope")
    return row


def advance(
    conn: Connection,
    scope: Scope,
    *,
    size: int,
    root: bytes,
    frontier: bytes,
    last_envelope_sha256: bytes | None,
    note: bytes,
    cosignature: str,
    keyring: Mapping[str, Any],
    now: datetime,
) -> None:
    """Record an accepted checkpoint and move the host's row to it (and its keyring, which
    signed rotations advance)."""
    assert scope.host_id is not None
    conn.execute(
        pg_insert(checkpoints)
        .values(host_id=scope.host_id, size=size, root=root, note=note, cosignature=cosignature)
        .on_conflict_do_nothing()
    )
    conn.execute(
        scoped(update(hosts), hosts, scope).values(
            accepted_size=size,
            root=root,
            frontier=frontier,
            last_envelope_sha256=last_envelope_sha256,
            checkpoint=note,
            cosignature=cosignature,
            keyring=dict(keyring),
            last_upload_at=now,
        )
    )


# Distinct incidents kept per host (see record_incident).
MAX_INCIDENTS_PER_HOST = 100


def record_incident(
    conn: Connection,
    scope: Scope,
    *,
    kind: str,
    message: str,
    accepted: bytes | None,
    presented: bytes,
    presented_sha256: bytes,
    detail: Mapping[str, Any],
) -> None:
    """Keep a refused fork or rollback; the same presentation again only counts up. A host
    past :data:`MAX_INCIDENTS_PER_HOST` distinct incidents only counts up its newest one:
    the first are the evidence, and a host that keeps presenting other histories (each up
    to a checkpoint's 64 KiB) must not be able to fill the server's database."""
    assert scope.host_id is not None
    assert scope.site_id is not None
    known = incidents.c.host_id == scope.host_id
    total = conn.execute(select(func.count()).where(known)).scalar_one()
    if total >= MAX_INCIDENTS_PER_HOST:
        seen = conn.execute(
            select(incidents.c.id).where(known, incidents.c.presented_sha256 == presented_sha256)
        ).scalar_one_or_none()
        target = seen or conn.execute(select(func.max(incidents.c.id)).where(known)).scalar_one()
        conn.execute(
            update(incidents)
            .where(incidents.c.id == target)
            .values(count=incidents.c.count + 1, last_seen_at=func.now())
        )
        return
    stmt = pg_insert(incidents).values(
        host_id=scope.host_id,
        site_id=scope.site_id,
        kind=kind,
        message=message,
        accepted_checkpoint=accepted,
        presented_checkpoint=presented,
        presented_sha256=presented_sha256,
        detail=dict(detail),
    )
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[incidents.c.host_id, incidents.c.presented_sha256],
            set_={"count": incidents.c.count + 1, "last_seen_at": func.now()},
        )
    )


# -- the operator's views --------------------------------------------------------------------


def list_hosts(conn: Connection, scope: Scope) -> list[HostListing]:
    open_incidents = (
        select(func.count()).where(incidents.c.host_id == hosts.c.id).correlate(hosts).scalar_subquery()
    )
    stmt = (
        select(
            sites.c.name.label("site"),
            hosts.c.hostname,
            hosts.c.accepted_size,
            hosts.c.enrolled_at,
            hosts.c.last_seen_at,
            hosts.c.last_upload_at,
            hosts.c.revoked_at,
            open_incidents.label("incidents"),
        )
        .join_from(hosts, sites, hosts.c.site_id == sites.c.id)
        .order_by(sites.c.name, hosts.c.hostname)
    )
    return [HostListing(**r._mapping) for r in conn.execute(scoped(stmt, hosts, scope))]


def host_by_name(conn: Connection, scope: Scope, hostname: str) -> HostRow | None:
    row = conn.execute(scoped(select(hosts), hosts, scope).where(hosts.c.hostname == hostname)).one_or_none()
    return None if row is None else HostRow(**row._mapping)


def revoke_host(conn: Connection, scope: Scope, now: datetime) -> bool:
    result = conn.execute(
        scoped(update(hosts), hosts, scope).where(hosts.c.revoked_at.is_(None)).values(revoked_at=now)
    )
    return bool(result.rowcount)


def list_incidents(conn: Connection, scope: Scope) -> list[IncidentRow]:
    stmt = (
        select(
            incidents.c.id,
            sites.c.name.label("site"),
            hosts.c.hostname,
            incidents.c.kind,
            incidents.c.message,
            incidents.c.accepted_checkpoint,
            incidents.c.presented_checkpoint,
            incidents.c.count,
            incidents.c.first_seen_at,
            incidents.c.last_seen_at,
        )
        .join_from(incidents, hosts, incidents.c.host_id == hosts.c.id)
        .join(sites, incidents.c.site_id == sites.c.id)
        .order_by(incidents.c.id)
    )
    return [IncidentRow(**r._mapping) for r in conn.execute(scoped(stmt, incidents, scope))]


def find_statements(
    conn: Connection,
    scope: Scope,
    *,
    predicate_type: str | None = None,
    outcome: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    control: str | None = None,
    status: str | None = None,
    limit: int = 1000,
) -> list[StatementRow]:
    """Statements by predicate type, outcome, time range, and (with ``control``) the status
    a control had in them."""
    stmt = select(
        statements.c.host_id,
        statements.c.seq,
        statements.c.site_id,
        statements.c.predicate_type,
        statements.c.event,
        statements.c.outcome,
        statements.c.observed_at,
        statements.c.bundle_id,
    )
    conditions = []
    if predicate_type is not None:
        conditions.append(statements.c.predicate_type == predicate_type)
    if outcome is not None:
        conditions.append(statements.c.outcome == outcome)
    if since is not None:
        conditions.append(statements.c.observed_at >= since)
    if until is not None:
        conditions.append(statements.c.observed_at < until)
    if control is not None and status is not None:
        conditions.append(statements.c.control_states.contains([f"{control}={status}"]))
    elif control is not None:
        conditions.append(statements.c.control_ids.contains([control]))
    elif status is not None:
        # any control with this status: not indexed (a scan of the rows the other filters keep)
        state = func.unnest(statements.c.control_states).column_valued("state")
        conditions.append(select(state).where(state.like(f"%={status}")).exists())
    if conditions:
        stmt = stmt.where(and_(*conditions))
    stmt = scoped(stmt, statements, scope).order_by(statements.c.observed_at, statements.c.seq).limit(limit)
    return [StatementRow(**r._mapping) for r in conn.execute(stmt)]


def attachment(conn: Connection, scope: Scope, seq: int, name: str) -> bytes | None:
    stmt = select(attachments.c.data).where(attachments.c.seq == seq, attachments.c.name == name)
    row = conn.execute(scoped(stmt, attachments, scope)).one_or_none()
    return None if row is None else bytes(row[0])


def envelope(conn: Connection, scope: Scope, seq: int) -> bytes | None:
    row = conn.execute(
        scoped(select(entries.c.envelope).where(entries.c.seq == seq), entries, scope)
    ).one_or_none()
    return None if row is None else bytes(row[0])


def audit(
    conn: Connection,
    *,
    actor: str,
    action: str,
    scope: Scope,
    detail: Mapping[str, Any] | None = None,
) -> None:
    conn.execute(
        insert(audit_log).values(
            actor=actor,
            action=action,
            site_id=scope.site_id,
            host_id=scope.host_id,
            detail=dict(detail or {}),
        )
    )


def audit_entries(conn: Connection, scope: Scope) -> list[tuple[datetime, str, str, dict[str, Any]]]:
    stmt = select(audit_log.c.at, audit_log.c.actor, audit_log.c.action, audit_log.c.detail)
    return [
        (r[0], r[1], r[2], r[3])
        for r in conn.execute(scoped(stmt, audit_log, scope).order_by(audit_log.c.id))
    ]


def counts(conn: Connection, scope: Scope) -> dict[str, int]:
    out = {}
    for name, table in (("entries", entries), ("statements", statements), ("checkpoints", checkpoints)):
        out[name] = int(
            conn.execute(scoped(select(func.count()).select_from(table), table, scope)).scalar_one()
        )
    return out
