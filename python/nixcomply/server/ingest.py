"""Ingestion: judge an upload against what the server accepted from that host, store it in
one transaction, and cosign the checkpoint (PROTOCOL.md, "Upload" and "Witness").

The host's row is locked for the whole transaction, so two uploads of one host never
interleave and checking the old size and persisting the new one are atomic (the race the
tlog-witness spec warns about). A refusal that proves misbehaviour — a fork or a rollback
— rolls the transaction back and records an incident in a transaction of its own: nothing
stored changes but the incident.
"""

from __future__ import annotations

import base64
import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from hashlib import sha256
from typing import Any, assert_never

from sqlalchemy import Connection, Engine

from nixcomply.core import faults, gcpause
from nixcomply.model.fleet import ErrorCode, UploadRequest, UploadResponse, b64decode
from nixcomply.server.db import queries
from nixcomply.server.db.queries import HostRow
from nixcomply.server.errors import ApiError
from nixcomply.server.verifying import (
    Check,
    EntryError,
    HostKeys,
    NoteError,
    Witness,
    frontier_bytes,
    load_frontier,
    note_text,
    parse_checkpoint,
)

logger = logging.getLogger(__name__)


@dataclass
class Refusal(Exception):
    """Proof of misbehaviour: rolled back, then kept as an incident."""

    kind: ErrorCode
    message: str
    accepted: bytes | None
    presented: bytes
    detail: dict[str, Any] = field(default_factory=dict)


def _bad(code: ErrorCode, message: str, **detail: Any) -> ApiError:
    return ApiError(422, code, message, detail=detail or None)


def ingest(
    engine: Engine, host: HostRow, request: UploadRequest, witness: Witness, now: Callable[[], datetime]
) -> UploadResponse:
    try:
        # the collector paused while an upload is verified and stored (core/gcpause.py)
        with gcpause.paused(), engine.begin() as conn:
            return _ingest(conn, host, request, witness, now())
    except Refusal as r:
        with engine.begin() as conn:
            queries.record_incident(
                conn,
                host.scope,
                kind=r.kind.value,
                message=r.message,
                accepted=r.accepted,
                presented=r.presented,
                presented_sha256=sha256(r.presented).digest(),
                detail=r.detail,
            )
        logger.warning(
            "host %s (site %d): %s refused: %s", host.hostname, host.site_id, r.kind.value, r.message
        )
        raise ApiError(409, r.kind, r.message, detail={"incident": True, **r.detail}) from None


def _ingest(
    conn: Connection, host: HostRow, req: UploadRequest, witness: Witness, now: datetime
) -> UploadResponse:
    row = queries.lock_host(conn, host.scope)
    keys = HostKeys.load(row.keyring)
    note = req.checkpoint.encode()

    def signed_checkpoint() -> None:
        try:
            keys.open_checkpoint(note)
        except NoteError as e:
            raise _bad(ErrorCode.BAD_CHECKPOINT, f"checkpoint: {e}") from None

    # Its signature is checked once the keys it may be signed with are known: a log-key
    # rotation among the new entries changes them.
    try:
        cp = parse_checkpoint(note)
    except NoteError as e:
        raise _bad(ErrorCode.BAD_CHECKPOINT, f"checkpoint: {e}") from None
    if cp.size <= row.accepted_size:
        signed_checkpoint()
    if cp.origin != row.origin:
        raise _bad(
            ErrorCode.BAD_CHECKPOINT, f"checkpoint of log {cp.origin!r}, the host enrolled {row.origin!r}"
        )
    accepted = row.accepted_size
    uploaded = {e.seq: e for e in req.entries}
    if len(uploaded) != len(req.entries):
        raise _bad(ErrorCode.BAD_ENTRY, "an entry is sent twice")
    expected = list(range(req.old_size, req.old_size + len(req.entries)))
    if [e.seq for e in req.entries] != expected:
        raise _bad(ErrorCode.BAD_ENTRY, f"entries must be {req.old_size}.. in order, without gaps")
    if req.old_size + len(req.entries) != cp.size:
        raise _bad(
            ErrorCode.BAD_CHECKPOINT,
            f"the checkpoint has size {cp.size}, the entries end at {req.old_size + len(req.entries)}",
        )

    # Entries the server already holds must be exactly the stored ones.
    overlap_end = min(cp.size, accepted)
    duplicates = 0
    if req.old_size < overlap_end:
        stored = queries.stored_entries(conn, row.scope, req.old_size, overlap_end - 1)
        for seq in range(req.old_size, overlap_end):
            item = uploaded[seq]
            envelope = b64decode(item.envelope)
            if stored.get(seq) != sha256(envelope).digest():
                # A fork only if the host signed the other entry; anything else is garbage.
                attachments = {name: b64decode(data) for name, data in item.attachments.items()}
                try:
                    keys.verify_entry(seq, envelope, attachments)
                except EntryError as e:
                    raise _bad(ErrorCode.BAD_ENTRY, f"entry {seq}: {e}", seq=seq) from None
                raise Refusal(
                    ErrorCode.FORK,
                    f"entry {seq} differs from the one accepted at that index",
                    row.checkpoint,
                    note,
                    {"seq": seq},
                )
            duplicates += 1

    if cp.size < accepted:
        raise Refusal(
            ErrorCode.ROLLBACK,
            f"a checkpoint of size {cp.size}, but {accepted} entries were accepted: the log was cut back",
            row.checkpoint,
            note,
            {"accepted_size": accepted, "presented_size": cp.size},
        )
    if cp.size == accepted:
        if cp.root != row.root and accepted > 0:
            raise Refusal(
                ErrorCode.FORK, f"a checkpoint of size {cp.size} with another root", row.checkpoint, note, {}
            )
        # The same upload again (or an empty log): accepted once, answered again.
        return _answer(row, stored=0, duplicates=duplicates, witness=witness)
    if req.old_size != accepted:
        raise ApiError(
            409,
            ErrorCode.SIZE_MISMATCH,
            f"old_size {req.old_size}, but the accepted size is {accepted}",
            detail={"accepted_size": accepted},
        )

    # New entries: verified by the project's verifier as the continuation of what was
    # accepted (signatures, statements, attachments, chain links, the checkpoint, its root
    # and the consistency proof), with the keys the upload's own rotation entries leave.
    items = [
        (
            item.seq,
            b64decode(item.envelope),
            {name: b64decode(data) for name, data in item.attachments.items()},
        )
        for item in req.entries
    ]
    try:
        upload = keys.verify_upload(
            items,
            accepted=accepted,
            frontier=load_frontier(accepted, row.frontier),
            last_envelope_sha256=row.last_envelope_sha256,
            checkpoint_sha256=sha256(row.checkpoint).digest() if row.checkpoint is not None else None,
            note=note,
            proof=[base64.b64decode(h) for h in req.proof],
        )
    except EntryError as e:
        raise _refusal(e, row, note) from None
    verified, root, frontier, prev = upload.entries, upload.root, upload.frontier, upload.last_envelope_sha256

    cosignature = witness.cosign(note_text(note), timestamp=int(now.timestamp()))
    h, s = row.id, row.site_id
    queries.store_log(
        conn,
        row.scope,
        entry_rows=[
            {
                "host_id": h,
                "seq": e.seq,
                "envelope": e.envelope,
                "envelope_sha256": e.envelope_sha256,
                "leaf": e.leaf,
            }
            for e in verified
        ],
        attachment_rows=[
            {"host_id": h, "seq": e.seq, "name": name, "sha256": sha256(data).digest(), "data": data}
            for e in verified
            for name, data in sorted(e.attachments.items())
        ],
        statement_rows=[{"host_id": h, "site_id": s, **e.statement_row()} for e in verified],
    )
    queries.advance(
        conn,
        row.scope,
        size=cp.size,
        root=root,
        frontier=frontier_bytes(frontier),
        last_envelope_sha256=prev,
        note=note,
        cosignature=cosignature,
        keyring=upload.keys.to_json(),
        now=now,
    )
    faults.point(faults.FaultPoint.INGEST_STORED)  # crash tests: everything written, nothing committed
    new = dataclasses.replace(row, accepted_size=cp.size, root=root, checkpoint=note, cosignature=cosignature)
    return _answer(new, stored=len(verified), duplicates=duplicates, witness=witness)


def _refusal(e: EntryError, row: HostRow, note: bytes) -> Exception:
    """What an upload that does not verify is answered with: an entry that is not authentic
    or valid, a bad checkpoint or proof change nothing (422); authentic entries that do not
    continue what was accepted, or a signed checkpoint that is not their tree, are a fork."""
    seq = {"seq": e.seq} if e.seq is not None else {}
    match e.check:
        case Check.ENTRY:
            return _bad(ErrorCode.BAD_ENTRY, f"entry {e.seq}: {e}", **seq)
        case Check.CHECKPOINT:
            return _bad(ErrorCode.BAD_CHECKPOINT, f"checkpoint: {e}")
        case Check.PROOF:
            return _bad(ErrorCode.BAD_PROOF, str(e))
        case Check.LINK:
            return Refusal(ErrorCode.FORK, f"entry {e.seq}: {e}", row.checkpoint, note, seq)
        case Check.ROOT:
            return Refusal(ErrorCode.FORK, str(e), row.checkpoint, note, {})
        case _:
            assert_never(e.check)


def _answer(row: HostRow, *, stored: int, duplicates: int, witness: Witness) -> UploadResponse:
    if row.checkpoint is None or row.cosignature is None:
        raise _bad(ErrorCode.BAD_CHECKPOINT, "nothing was accepted yet: upload entries from 0")
    return UploadResponse(
        accepted_size=row.accepted_size,
        stored=stored,
        duplicates=duplicates,
        checkpoint=row.checkpoint.decode(),
        cosignature=row.cosignature,
        witness_key=witness.public.vkey,
    )
