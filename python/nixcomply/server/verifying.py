"""The server's one door into ``nixcomply.evidence``: everything ingestion needs to judge a
host's envelopes and checkpoints, with the project's own verifier
(:func:`nixcomply.evidence.verify.verify_entries`: the same code ``nixcomply evidence
verify`` runs on a store). Nothing else in ``server/`` imports the evidence package, so a
change to the verifier is a change here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from hashlib import sha256
from typing import Any, Final

import pydantic

from nixcomply.evidence.checkpoint import (
    Checkpoint,
    NoteError,
    open_checkpoint,
    parse_checkpoint_text,
    parse_note,
)
from nixcomply.evidence.cosignature import Witness, generate_witness, read_witness_key
from nixcomply.evidence.keyring import Keyring, RangeCache
from nixcomply.evidence.keys import write_key_pair
from nixcomply.evidence.merkle import Frontier
from nixcomply.evidence.statement import GENESIS_PREV, Attestation, KeyRole, Statement
from nixcomply.evidence.verify import Check, EntriesResult, Entry, LogPosition, VerifyProblem, verify_entries

HASH: Final = 32
GENESIS: Final = bytes.fromhex(GENESIS_PREV)

__all__ = [
    "GENESIS",
    "Check",
    "Checkpoint",
    "EntryError",
    "HostKeys",
    "NoteError",
    "Upload",
    "VerifiedEntry",
    "Witness",
    "frontier_bytes",
    "generate_witness",
    "load_frontier",
    "parse_checkpoint",
    "read_witness_key",
    "write_key_pair",
]


class EntryError(ValueError):
    """An upload that does not verify: ``seq`` names the first bad entry (or None), and
    ``check`` which kind of check failed (a fork is :attr:`Check.LINK` or :attr:`Check.ROOT`)."""

    def __init__(self, problem: VerifyProblem) -> None:
        super().__init__(problem.message)
        self.seq = problem.seq
        self.check = problem.check or Check.ENTRY


@dataclass(frozen=True)
class VerifiedEntry:
    seq: int
    envelope: bytes
    envelope_sha256: bytes
    leaf: bytes
    statement: Statement
    attachments: Mapping[str, bytes]

    def statement_row(self) -> dict[str, Any]:
        p = self.statement.predicate
        return {
            "seq": self.seq,
            "predicate_type": self.statement.predicate_type,
            "event": p.event,
            "outcome": p.outcome.value,
            "observed_at": p.observed_at,
            "bundle_id": p.bundle_id,
            "control_ids": [c for c, _ in self.controls()],
            "control_states": [f"{c}={st}" for c, st in self.controls()],
        }

    def controls(self) -> list[tuple[str, str]]:
        p = self.statement.predicate
        found = [(c.id, c.status.value) for c in p.controls]
        if isinstance(p, Attestation):
            found.append((p.control, "attested"))
        return found


@dataclass(frozen=True)
class Upload:
    """An upload that verified: its entries, where the log stands now, and the host's
    keyring as the upload's signed rotation entries left it (to store)."""

    entries: list[VerifiedEntry]
    frontier: Frontier
    root: bytes
    last_envelope_sha256: bytes
    keys: HostKeys


Item = tuple[int, bytes, Mapping[str, bytes]]


class HostKeys:
    """A host's enrolled keyring (the keyring the server pins for it)."""

    def __init__(self, keyring: Keyring) -> None:
        self.keyring = keyring
        self._log = RangeCache(keyring, KeyRole.LOG)

    @classmethod
    def load(cls, data: Mapping[str, Any]) -> HostKeys:
        """Raises ``ValueError`` naming what is wrong."""
        try:
            keyring = Keyring.model_validate(data)
        except pydantic.ValidationError as e:
            err = e.errors(include_url=False)[0]
            raise ValueError(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}") from None
        for role in KeyRole:
            if not keyring.active(role):
                raise ValueError(f"the keyring has no active {role.value} key")
        return cls(keyring)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.keyring.to_bytes())
        return data

    def open_checkpoint(self, note: bytes) -> Checkpoint:
        """Parse a checkpoint note and verify it with a log key valid for its size."""
        size = parse_checkpoint(note).size
        return open_checkpoint(note, self._log(size - 1) if size > 0 else []).checkpoint

    def verify_upload(
        self,
        items: Sequence[Item],
        *,
        accepted: int,
        frontier: Frontier,
        last_envelope_sha256: bytes | None,
        checkpoint_sha256: bytes | None,
        note: bytes,
        proof: Sequence[bytes],
    ) -> Upload:
        """New entries ``accepted``.., the checkpoint ``note`` they end at and the consistency
        proof from the accepted tree, verified as a continuation of what was accepted
        (:class:`EntryError` names the first problem and its kind)."""
        start = LogPosition(
            accepted,
            tuple(frontier.hashes),
            last_envelope_sha256.hex() if last_envelope_sha256 is not None else None,
            checkpoint_sha256.hex() if checkpoint_sha256 is not None else None,
        )
        result = verify_entries(_entries(items), self.keyring, start=start, checkpoint=note, proof=proof)
        _raise_first(result)
        after = result.position
        return Upload(
            _verified(items, result),
            Frontier(after.size, after.frontier),
            after.root,
            bytes.fromhex(after.last_envelope_sha256 or GENESIS_PREV),
            HostKeys(result.keyring),
        )

    def verify_entry(self, seq: int, envelope: bytes, attachments: Mapping[str, bytes]) -> VerifiedEntry:
        """Whether one envelope is authentic and valid at ``seq`` (its links not checked)."""
        result = verify_entries(
            _entries([(seq, envelope, attachments)]), self.keyring, start=LogPosition(seq), checkpoint=None
        )
        _raise_first(result)
        [entry] = _verified([(seq, envelope, attachments)], result)
        return entry


def _entries(items: Sequence[Item]) -> list[Entry]:
    return [Entry(envelope, dict(attachments)) for _seq, envelope, attachments in items]


def _raise_first(result: EntriesResult) -> None:
    first = result.report.first_error()
    if first is not None:
        raise EntryError(first)


def _verified(items: Sequence[Item], result: EntriesResult) -> list[VerifiedEntry]:
    by_seq = {seq: (envelope, attachments) for seq, envelope, attachments in items}
    out = []
    for a in result.accepted:
        envelope, attachments = by_seq[a.seq]
        out.append(
            VerifiedEntry(a.seq, envelope, sha256(envelope).digest(), a.leaf, a.statement, dict(attachments))
        )
    return out


def parse_checkpoint(note: bytes) -> Checkpoint:
    """A checkpoint note's content, not yet verified (:class:`NoteError` if malformed)."""
    return parse_checkpoint_text(parse_note(note).text)


def load_frontier(size: int, data: bytes) -> Frontier:
    return Frontier(size, [data[i : i + HASH] for i in range(0, len(data), HASH)])


def frontier_bytes(frontier: Frontier) -> bytes:
    return b"".join(frontier.hashes)


def note_text(note: bytes) -> str:
    return parse_note(note).text
