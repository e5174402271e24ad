"""The keyring: which public keys an auditor trusts, for which role and which entries.

``keyring.json`` (the one home-made format besides the predicates)::

    {
      "version": 1,
      "keys": [
        {"vkey": "clinic-01/evidence-bundle+1f2e3d4c+AXx...", "role": "bundle",
         "valid_from": 0, "valid_until": 41, "status": "retired"},
        {"vkey": "clinic-01/evidence-bundle-2+9a8b7c6d+AQq...", "role": "bundle",
         "valid_from": 41, "valid_until": null, "status": "active"},
        {"vkey": "clinic-01/evidence-log+55aa66bb+AZz...", "role": "log",
         "valid_from": 0, "valid_until": null, "status": "active"}
      ]
    }

* ``vkey`` is the C2SP verifier key (name, key id, public key; ``nixcomply.evidence.keys``).
* ``role``: ``bundle`` keys sign statements (DSSE envelopes), ``log`` keys sign checkpoints.
* ``valid_from``/``valid_until`` are *log sequence numbers*, both inclusive; ``null`` means
  open-ended. A bundle key may sign the entries whose ``chain.seq`` is in range; a log key
  may sign the checkpoints whose last entry (tree size - 1) is in range. A rotation at
  entry ``r`` ends the old key's range at ``r`` and starts the new key's at ``r``: the
  rotation entry itself (and, for the log key, the checkpoint that covers it) carries both
  signatures.
* ``status``: ``active``, ``retired`` (rotated out, still valid for its range) or
  ``revoked`` (compromised: ``valid_until`` was cut back to the entry before the first one
  it must no longer vouch for; ``reason`` says why).

The keyring an auditor verifies with is *pinned*: a copy obtained out of band (or the one
in the export packet whose fingerprints were compared out of band), not one trusted merely
because it sits next to the evidence.
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Sequence
from datetime import datetime
from enum import StrEnum
from functools import cached_property
from pathlib import Path
from typing import Final, Literal

from pydantic import Field, field_validator, model_validator

from nixcomply.errors import InputError
from nixcomply.evidence.keys import PublicKey
from nixcomply.evidence.statement import KeyRole
from nixcomply.model.base import StrictModel

KEYRING_VERSION: Final = 1


class KeyStatus(StrEnum):
    ACTIVE = "active"
    RETIRED = "retired"
    REVOKED = "revoked"


class KeyEntry(StrictModel):
    vkey: str
    role: KeyRole
    valid_from: int = Field(default=0, ge=0)
    valid_until: int | None = Field(default=None, ge=-1)
    status: KeyStatus = KeyStatus.ACTIVE
    added_at: datetime | None = None
    reason: str | None = None

    @field_validator("vkey")
    @classmethod
    def _vkey(cls, v: str) -> str:
        PublicKey.from_vkey(v)  # raises ValueError saying what is wrong
        return v

    @model_validator(mode="after")
    def _range(self) -> KeyEntry:
        if self.valid_until is not None and self.valid_until < self.valid_from - 1:
            raise ValueError(f"valid_until {self.valid_until} is before valid_from {self.valid_from}")
        if self.status is KeyStatus.REVOKED and self.valid_until is None:
            raise ValueError("a revoked key needs valid_until (the last entry it may sign)")
        return self

    @cached_property
    def key(self) -> PublicKey:
        return PublicKey.from_vkey(self.vkey)

    def valid_for(self, seq: int) -> bool:
        return self.valid_from <= seq and (self.valid_until is None or seq <= self.valid_until)


class Keyring(StrictModel):
    version: Literal[1] = KEYRING_VERSION
    keys: list[KeyEntry] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique(self) -> Keyring:
        seen: set[tuple[str, bytes]] = set()
        for entry in self.keys:
            ident = (entry.role.value, entry.key.raw)
            if ident in seen:
                raise ValueError(f"key {entry.key.name} is listed twice for role {entry.role.value}")
            seen.add(ident)
        return self

    def valid_keys(self, role: KeyRole, seq: int) -> list[PublicKey]:
        """The keys of ``role`` that may sign entry (or checkpoint over entries up to) ``seq``."""
        return [e.key for e in self.keys if e.role is role and e.valid_for(seq)]

    def all_keys(self, role: KeyRole) -> list[PublicKey]:
        return [e.key for e in self.keys if e.role is role]

    def entry_for(self, key: PublicKey, role: KeyRole) -> KeyEntry | None:
        for e in self.keys:
            if e.role is role and e.key.raw == key.raw and e.key.name == key.name:
                return e
        return None

    def active(self, role: KeyRole) -> list[KeyEntry]:
        return [e for e in self.keys if e.role is role and e.status is KeyStatus.ACTIVE]

    def find(self, name_or_vkey: str) -> list[KeyEntry]:
        """Entries whose vkey, key name, ``name+keyid`` or fingerprint is ``name_or_vkey``."""
        out = []
        for e in self.keys:
            k = e.key
            if name_or_vkey in (e.vkey, k.name, f"{k.name}+{k.key_id_hex}", k.fingerprint):
                out.append(e)
        return out

    def with_keys(self, keys: Sequence[KeyEntry]) -> Keyring:
        return Keyring(version=self.version, keys=list(keys))

    def to_bytes(self) -> bytes:
        data = self.model_dump(mode="json")
        for entry in data["keys"]:
            # Optional notes are left out when empty; an open-ended range stays explicit.
            for name in ("added_at", "reason"):
                if entry[name] is None:
                    del entry[name]
        return (json.dumps(data, indent=2) + "\n").encode()


class RangeCache:
    """Fast "valid keys for seq" over a whole log. The answer only changes at the range
    boundaries, so the segments are computed once; lookups bisect them. Immutable after
    construction, so threads can share it."""

    def __init__(self, keyring: Keyring, role: KeyRole) -> None:
        bounds = {0}
        for e in keyring.keys:
            if e.role is role:
                bounds.add(e.valid_from)
                if e.valid_until is not None:
                    bounds.add(e.valid_until + 1)
        self._bounds = sorted(bounds)
        self._keys = [keyring.valid_keys(role, lo) for lo in self._bounds]

    def __call__(self, seq: int) -> list[PublicKey]:
        return self._keys[bisect.bisect_right(self._bounds, seq) - 1]


def load_keyring(path: Path) -> Keyring:
    """Read and validate a keyring; problems name the file, line and field."""
    from nixcomply.core.yamlsource import load_model

    if not path.exists():
        raise InputError.single(path, "keyring not found")
    keyring, _source = load_model(Keyring, path)
    return keyring


def save_keyring(path: Path, keyring: Keyring, *, durable: bool = True) -> None:
    from nixcomply.core.fsutil import atomic_write, ensure_dir

    ensure_dir(path.parent)
    atomic_write(path, keyring.to_bytes(), mode=0o644, durable=durable)
