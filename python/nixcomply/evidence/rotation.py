"""Key rotation and revocation: evidence entries that change which keys the keyring trusts.

A rotation at entry ``r`` is a key-rotation statement signed by the old *and* the new key
(for the log key, the checkpoint covering ``r`` is also signed by both); the keyring then
ends the old key's range at ``r`` and starts the new key's at ``r``. A revocation is a
key-rotation statement with ``action: revoke``, signed by the current bundle key; the
keyring marks the key revoked and ends its range before the first entry it must no longer
vouch for (by default the revocation entry itself; ``--from-seq`` cuts earlier, which makes
every entry it signed from there fail verification — the point of revoking a key that
leaked).

The store's append lock is held across the entry and the keyring update, so no other
append can come between them. If the process dies after the entry and before the keyring
is written, ``verify`` warns that the keyring does not reflect the rotation; running the
same rotation again finishes it (:func:`finish_rotation`).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

from nixcomply.errors import UsageError
from nixcomply.evidence import dsse
from nixcomply.evidence.keyring import KeyEntry, Keyring, KeyStatus, load_keyring, save_keyring
from nixcomply.evidence.keys import PublicKey, Signer
from nixcomply.evidence.statement import Host, KeyRole, KeyRotation, KeyRotationStatement, parse_statement
from nixcomply.evidence.store import ENVELOPE_FILE, EvidenceStore, Recorded
from nixcomply.model.outcome import Outcome

logger = logging.getLogger(__name__)


def _now() -> datetime:
    return datetime.now(UTC)


def _apply_rotation(keyring: Keyring, role: KeyRole, old: PublicKey, new: PublicKey, seq: int) -> Keyring:
    keys = [
        e.model_copy(update={"valid_until": seq, "status": KeyStatus.RETIRED})
        if e.role is role and e.key == old
        else e
        for e in keyring.keys
    ]
    if keyring.entry_for(new, role) is None:
        keys.append(KeyEntry(vkey=new.vkey, role=role, valid_from=seq, added_at=_now()))
    return keyring.with_keys(keys)


def finish_rotation(store: EvidenceStore, keyring_path: Path) -> bool:
    """If the newest entry is a rotation the keyring does not reflect yet, update the
    keyring (the crash window of :func:`rotate`). Returns whether it changed anything."""
    tail = store.tail()
    if tail is None:
        return False
    envelope = dsse.parse((tail.path / ENVELOPE_FILE).read_bytes())
    statement = parse_statement(envelope.payload)
    if not isinstance(statement, KeyRotationStatement):
        return False
    p = statement.predicate
    keyring = load_keyring(keyring_path)
    new = PublicKey.from_vkey(p.key)
    if p.action == "rotate" and p.previous_key is not None:
        entry = keyring.entry_for(new, p.role)
        if entry is not None and entry.valid_from == tail.seq:
            return False
        updated = _apply_rotation(keyring, p.role, PublicKey.from_vkey(p.previous_key), new, tail.seq)
    else:
        entry = keyring.entry_for(new, p.role)
        if entry is None or entry.status is KeyStatus.REVOKED:
            return False
        updated = _apply_revocation(
            keyring, entry, p.from_seq if p.from_seq is not None else tail.seq, p.reason
        )
    save_keyring(keyring_path, updated, durable=store.durable)
    logger.warning("finished the keyring update of the key change at entry %d", tail.seq)
    return True


def rotate(
    store: EvidenceStore,
    keyring_path: Path,
    *,
    role: KeyRole,
    new: Signer,
    host: Host,
    actor: str,
    reason: str = "",
) -> Recorded:
    """Replace the store's ``role`` key by ``new``; the store signs with ``new`` afterwards."""
    with store.locked():
        finish_rotation(store, keyring_path)
        keyring = load_keyring(keyring_path)
        old = store.signer if role is KeyRole.BUNDLE else store.log_signer
        if keyring.entry_for(old.public, role) is None:
            raise UsageError(f"the current {role.value} key {old.public.name} is not in {keyring_path}")
        if any(e.key.raw == new.public.raw for e in keyring.keys):
            raise UsageError(f"{new.public.name} is already in {keyring_path}; generate a fresh key")
        predicate = KeyRotation(
            event="evidence.key-rotated",
            observed_at=_now(),
            host=host,
            actor=actor,
            outcome=Outcome.SUCCESS,
            action="rotate",
            role=role,
            key=new.public.vkey,
            previous_key=old.public.vkey,
            reason=reason,
        )
        attachments = {"key.pub": (new.public.vkey + "\n").encode()}
        if role is KeyRole.BUNDLE:
            recorded = store.append(predicate, attachments=attachments, cosigners=[new])
        else:
            recorded = store.append(
                predicate, attachments=attachments, cosigners=[old, new], log_cosigners=[new]
            )
        save_keyring(keyring_path, _apply_rotation(keyring, role, old.public, new.public, recorded.seq))
        if role is KeyRole.BUNDLE:
            store.signer = new
        else:
            store.log_signer = new
    return recorded


def _apply_revocation(keyring: Keyring, target: KeyEntry, from_seq: int, reason: str) -> Keyring:
    until = from_seq - 1 if target.valid_until is None else min(target.valid_until, from_seq - 1)
    revoked = target.model_copy(
        update={
            "status": KeyStatus.REVOKED,
            "valid_until": max(until, target.valid_from - 1),
            "reason": reason,
        }
    )
    return keyring.with_keys([revoked if e is target else e for e in keyring.keys])


def revoke(
    store: EvidenceStore,
    keyring_path: Path,
    key: str,
    *,
    host: Host,
    actor: str,
    reason: str,
    from_seq: int | None = None,
) -> Recorded:
    """Revoke the keyring's key named ``key`` (vkey, name, name+keyid or fingerprint)."""
    with store.locked():
        finish_rotation(store, keyring_path)
        keyring = load_keyring(keyring_path)
        matches = keyring.find(key)
        if len(matches) != 1:
            found = "no key" if not matches else f"{len(matches)} keys"
            raise UsageError(f"{found} in {keyring_path} match {key!r}; give the full verifier key")
        target = matches[0]
        current = store.signer if target.role is KeyRole.BUNDLE else store.log_signer
        if target.key == current.public:
            raise UsageError(
                f"{target.key.name} is the store's current {target.role.value} key",
                hint="rotate to a new key first (nixcomply evidence rotate), then revoke the old one",
            )
        if target.status is KeyStatus.REVOKED:
            raise UsageError(f"{target.key.name} is already revoked")
        predicate = KeyRotation(
            event="evidence.key-revoked",
            observed_at=_now(),
            host=host,
            actor=actor,
            outcome=Outcome.SUCCESS,
            action="revoke",
            role=target.role,
            key=target.vkey,
            from_seq=from_seq,
            reason=reason,
        )
        recorded = store.append(predicate, attachments={"revoked-key.pub": (target.vkey + "\n").encode()})
        cut = from_seq if from_seq is not None else recorded.seq
        save_keyring(keyring_path, _apply_revocation(keyring, target, cut, reason))
    return recorded
