"""The server's one door into ``nixcomply.evidence``: everything ingestion needs to judge a
host's envelopes and checkpoints, with the project's own verifier code (DSSE, statements,
keyrings, signed notes, RFC 6962 hashing and proofs). Nothing else in ``server/`` imports
the evidence package, so a change to the verifier is a change here.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from hashlib import sha256
from typing import Any, Final

import pydantic

from nixcomply.evidence import dsse
from nixcomply.evidence.checkpoint import (
    Checkpoint,
    NoteError,
    open_checkpoint,
    parse_checkpoint_text,
    parse_note,
)
from nixcomply.evidence.cosignature import Witness, generate_witness, read_witness_key
from nixcomply.evidence.keyring import KeyEntry, Keyring, KeyStatus, RangeCache
from nixcomply.evidence.keys import PublicKey
from nixcomply.evidence.merkle import Frontier, leaf_hash, verify_consistency
from nixcomply.evidence.statement import (
    GENESIS_PREV,
    Attestation,
    KeyRole,
    KeyRotation,
    Statement,
    parse_statement,
)
from nixcomply.evidence.store import ATTACHMENTS_DIR

HASH: Final = 32
GENESIS: Final = bytes.fromhex(GENESIS_PREV)

__all__ = [
    "GENESIS",
    "Checkpoint",
    "EntryError",
    "HostKeys",
    "NoteError",
    "VerifiedEntry",
    "Witness",
    "consistent",
    "frontier_bytes",
    "generate_witness",
    "load_frontier",
    "parse_checkpoint",
    "read_witness_key",
]


class EntryError(ValueError):
    """An envelope that does not verify: ``seq`` names it."""

    def __init__(self, seq: int, message: str) -> None:
        super().__init__(message)
        self.seq = seq


@dataclass(frozen=True)
class VerifiedEntry:
    seq: int
    envelope: bytes
    envelope_sha256: bytes
    leaf: bytes
    prev: bytes
    checkpoint_sha256: bytes | None
    statement: Statement
    payload: bytes
    attachments: Mapping[str, bytes]
    rotation: tuple[KeyRotation, dsse.Envelope] | None = None

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


Item = tuple[int, bytes, Mapping[str, bytes]]
_PARALLEL_MIN: Final = 64
_CHUNK: Final = 32
_POOL: list[ThreadPoolExecutor] = []
_POOL_LOCK: Final = threading.Lock()


def _pool() -> ThreadPoolExecutor:
    with _POOL_LOCK:
        if not _POOL:
            workers = max(1, min(len(os.sched_getaffinity(0)), 4))
            _POOL.append(ThreadPoolExecutor(max_workers=workers, thread_name_prefix="verify"))
        return _POOL[0]


class HostKeys:
    """A host's enrolled keyring, advanced by the key rotations it signs."""

    def __init__(self, keyring: Keyring) -> None:
        self._set(keyring)

    def _set(self, keyring: Keyring) -> None:
        self.keyring = keyring
        self._bundle = RangeCache(keyring, KeyRole.BUNDLE)
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

    def verify_entries(self, items: Sequence[Item]) -> list[VerifiedEntry]:
        """Check a batch of envelopes, in order (:class:`EntryError` names the first bad
        one). A large batch is checked on a few threads: ``cryptography`` releases the GIL
        while it verifies a signature. A key rotation changes the keys valid after it, so
        the entries following one are checked again, in order, with the new keys."""
        if len(items) < _PARALLEL_MIN:
            results = [self._check(*item) for item in items]
        else:
            chunks = [items[i : i + _CHUNK] for i in range(0, len(items), _CHUNK)]
            results = [r for part in _pool().map(self._check_all, chunks) for r in part]
        out: list[VerifiedEntry] = []
        for index, result in enumerate(results):
            if isinstance(result, EntryError):
                raise result
            out.append(result)
            if result.rotation is not None:
                self._rotate(result.seq, *result.rotation)
                return out + self.verify_entries(items[index + 1 :])
        return out

    def verify_entry(self, seq: int, envelope: bytes, attachments: Mapping[str, bytes]) -> VerifiedEntry:
        """Check one envelope as ``nixcomply evidence verify`` checks a bundle."""
        [entry] = self.verify_entries([(seq, envelope, attachments)])
        return entry

    def _check_all(self, items: Sequence[Item]) -> list[VerifiedEntry | EntryError]:
        return [self._check(*item) for item in items]

    def _check(
        self, seq: int, envelope: bytes, attachments: Mapping[str, bytes]
    ) -> VerifiedEntry | EntryError:
        try:
            return self._check_one(seq, envelope, attachments)
        except EntryError as e:
            return e

    def _check_one(self, seq: int, envelope: bytes, attachments: Mapping[str, bytes]) -> VerifiedEntry:
        try:
            env = dsse.parse(envelope)
        except dsse.EnvelopeError as e:
            raise EntryError(seq, f"envelope: {e}") from None
        try:
            signers = dsse.verified_keys(env, self._bundle(seq))
        except dsse.EnvelopeError as e:
            raise EntryError(seq, f"envelope: {e}") from None
        if not signers:
            raise EntryError(seq, f"no valid signature by a bundle key the keyring trusts for entry {seq}")
        try:
            statement = parse_statement(env.payload)
        except pydantic.ValidationError as e:
            err = e.errors(include_url=False)[0]
            raise EntryError(
                seq, f"statement: {'.'.join(str(p) for p in err['loc'])}: {err['msg']}"
            ) from None
        chain = statement.predicate.chain
        if chain is None or statement.predicate.bundle_id is None:
            raise EntryError(seq, "the statement has no chain or bundle_id")
        if chain.seq != seq:
            raise EntryError(seq, f"the statement says it is entry {chain.seq}")
        wanted = {
            s.name[len(ATTACHMENTS_DIR) + 1 :]: s.digest["sha256"]
            for s in statement.subject
            if s.name.startswith(ATTACHMENTS_DIR + "/")
        }
        extra = sorted(set(attachments) - set(wanted))
        if extra:
            raise EntryError(seq, f"attachment {extra[0]} is not a subject of the signed statement")
        for name, digest in sorted(wanted.items()):
            data = attachments.get(name)
            if data is None:
                raise EntryError(seq, f"attachment {name} is missing")
            if sha256(data).hexdigest() != digest:
                raise EntryError(seq, f"attachment {name}: sha256 differs from the statement's")
        predicate = statement.predicate
        return VerifiedEntry(
            seq=seq,
            envelope=envelope,
            envelope_sha256=sha256(envelope).digest(),
            leaf=leaf_hash(envelope),
            prev=bytes.fromhex(chain.prev),
            checkpoint_sha256=bytes.fromhex(chain.checkpoint) if chain.checkpoint else None,
            statement=statement,
            payload=env.payload,
            attachments=dict(attachments),
            rotation=(predicate, env) if isinstance(predicate, KeyRotation) else None,
        )

    def _rotate(self, seq: int, predicate: KeyRotation, env: dsse.Envelope) -> None:
        """A rotation signed by the old and the new key moves the keyring: the old key's
        range ends at the rotation, the new key's begins there (keyring.py's rules)."""
        try:
            new = PublicKey.from_vkey(predicate.key)
            old = PublicKey.from_vkey(predicate.previous_key) if predicate.previous_key else None
        except ValueError as e:
            raise EntryError(seq, f"key rotation names a malformed key: {e}") from None
        role = predicate.role
        keys = list(self.keyring.keys)
        if predicate.action == "rotate":
            if old is None or len(dsse.verified_keys(env, [old, new])) != 2:
                raise EntryError(seq, "the key rotation is not signed by both the old and the new key")
            keys = [
                k.model_copy(update={"valid_until": seq, "status": KeyStatus.RETIRED})
                if k.role is role and k.key == old
                else k
                for k in keys
            ]
            if self.keyring.entry_for(new, role) is None:
                keys.append(KeyEntry(vkey=new.vkey, role=role, valid_from=seq))
        else:
            limit = (predicate.from_seq if predicate.from_seq is not None else seq) - 1
            keys = [
                k.model_copy(update={"valid_until": limit, "status": KeyStatus.REVOKED})
                if k.role is role and k.key == new
                else k
                for k in keys
            ]
        self._set(self.keyring.with_keys(keys))


def parse_checkpoint(note: bytes) -> Checkpoint:
    """A checkpoint note's content, not yet verified (:class:`NoteError` if malformed)."""
    return parse_checkpoint_text(parse_note(note).text)


def load_frontier(size: int, data: bytes) -> Frontier:
    return Frontier(size, [data[i : i + HASH] for i in range(0, len(data), HASH)])


def frontier_bytes(frontier: Frontier) -> bytes:
    return b"".join(frontier.hashes)


def consistent(old: int, new: int, old_root: bytes, new_root: bytes, proof: list[bytes]) -> bool:
    return verify_consistency(old, new, old_root, new_root, proof)


def note_text(note: bytes) -> str:
    return parse_note(note).text
