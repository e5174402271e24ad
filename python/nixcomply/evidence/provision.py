"""Provisioning evidence keys: ``nixcomply evidence keygen``, the sandbox host and the test
fixtures all make keys this one way.

A key is written once (mode 0600, never over an existing file, its public key beside it as
``<name>.pub``) and enrolled in the keyring an auditor pins. A keyring holds at most one
active key per role: replacing one is a rotation (:mod:`nixcomply.evidence.rotation`),
which evidence records.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from nixcomply.errors import UsageError
from nixcomply.evidence.keyring import KeyEntry, Keyring, load_keyring, save_keyring
from nixcomply.evidence.keys import Signer, generate, write_private_key
from nixcomply.evidence.statement import KeyRole


def enrollable(keyring_path: Path, role: KeyRole) -> Keyring:
    """The keyring a new ``role`` key can join (empty when absent); an error, before any key
    is written, when the keyring is bad or already has an active key of that role."""
    keyring = load_keyring(keyring_path) if keyring_path.exists() else Keyring()
    active = keyring.active(role)
    if active:
        raise UsageError(
            f"{keyring_path} already has an active {role.value} key ({active[0].key.name})",
            hint="use `nixcomply evidence rotate` to replace it",
        )
    return keyring


def enroll_key(
    keyring_path: Path, signer: Signer, role: KeyRole, *, valid_from: int = 0, durable: bool = True
) -> Keyring:
    """Add ``signer``'s public key to the keyring at ``keyring_path`` (created when absent)."""
    keyring = enrollable(keyring_path, role)
    updated = keyring.with_keys(
        [*keyring.keys, KeyEntry(vkey=signer.public.vkey, role=role, valid_from=valid_from)]
    )
    save_keyring(keyring_path, updated, durable=durable)
    return updated


@dataclass(frozen=True)
class HostKeys:
    """Where a host's two evidence keys were written."""

    signing_key: Path
    log_key: Path
    keyring: Path


def provision_host_keys(
    host: str, *, signing_key: Path, log_key: Path, keyring: Path, durable: bool = True
) -> HostKeys:
    """A new host's bundle key (``<host>-evidence``) and log key (named for the default
    checkpoint origin, ``nixcomply/<host>``), both enrolled in a new keyring."""
    if keyring.exists():
        raise UsageError(f"{keyring} exists; a new host's keys go into a new keyring")
    bundle, log = generate(f"{host}-evidence"), generate(f"nixcomply/{host}")
    write_private_key(signing_key, bundle, durable=durable)
    write_private_key(log_key, log, durable=durable)
    keyring.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    enroll_key(keyring, bundle, KeyRole.BUNDLE, durable=durable)
    enroll_key(keyring, log, KeyRole.LOG, durable=durable)
    return HostKeys(signing_key, log_key, keyring)
