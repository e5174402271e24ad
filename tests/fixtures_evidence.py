"""Fixtures for the evidence tests: real Ed25519 keys, a keyring, real stores on disk, and
predicates like the ones the reconciler and runbooks record."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from nixcomply.evidence.keyring import KeyEntry, Keyring, save_keyring
from nixcomply.evidence.keys import Signer, generate, write_private_key
from nixcomply.evidence.statement import (
    ActionRecord,
    Attestation,
    CheckRun,
    ControlResult,
    FrameworkRefs,
    GenerationChange,
    GenerationRecord,
    GenerationRef,
    HealthCheckResult,
    Host,
    KeyRole,
    Remediation,
    Subject,
)
from nixcomply.evidence.store import EvidenceStore, Recorded
from nixcomply.model.outcome import Outcome
from nixcomply.model.status import ControlStatus, Coverage

ORIGIN = "clinic-01.example/evidence-log"
HOST = Host(machine_id="3d1219c7c4c5404aaa1f6d2a48adfda4", hostname="clinic-01")
T0 = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)
STORE_PATH = "/nix/store/0c9ws1kd6vrsm4kn5xq3c3i0bzjw7dmv-nixos-system-clinic-01-26.05.20260301.1d2e3f4"
PREV_PATH = "/nix/store/b7wv9nw6x3m5y4lk2q8s0d1f3g5h7j9k-nixos-system-clinic-01-26.05.20260215.0a1b2c3"
SSH_REFS = FrameworkRefs(
    hipaa=["164.312(d)"], soc2=["CC6.1"], cis_v8=["6.3"], nist_800_53=["IA-2"], nist_csf=["PR.AA-03"]
)
TOPLEVEL = Subject(name=STORE_PATH, digest={"sha256": "9f" * 32})


@dataclass(frozen=True)
class Keys:
    bundle: Signer
    log: Signer
    keyring: Keyring


def make_keys() -> Keys:
    bundle = generate("clinic-01.example/evidence-bundle")
    log = generate(ORIGIN)
    keyring = Keyring(
        keys=[
            KeyEntry(vkey=bundle.public.vkey, role=KeyRole.BUNDLE),
            KeyEntry(vkey=log.public.vkey, role=KeyRole.LOG),
        ]
    )
    return Keys(bundle, log, keyring)


@pytest.fixture(scope="session")
def keys() -> Keys:
    return make_keys()


def generation_change(i: int = 0, *, when: datetime | None = None) -> GenerationChange:
    return GenerationChange(
        event="generation.switched",
        observed_at=when or T0 + timedelta(hours=i),
        host=HOST,
        outcome=Outcome.SUCCESS,
        policy_digest="sha256:" + "ab" * 32,
        generation=GenerationRecord(
            number=40 + i,
            store_path=STORE_PATH,
            previous=GenerationRef(number=39 + i, store_path=PREV_PATH),
            nixos_version="26.05.20260301.1d2e3f4",
            configuration_revision="1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f6a7b8c9d0e",
            flake_nar_hash="sha256-" + "A" * 43 + "=",
        ),
        flake_ref="git+ssh://git@git.example/clinic-fleet?ref=main",
        controls=[
            ControlResult(
                id="ssh.password-auth-disabled",
                status=ControlStatus.PASS,
                expected={"passwordauthentication": "no"},
                observed={"passwordauthentication": "no"},
                frameworks=SSH_REFS,
            )
        ],
        actions=[
            ActionRecord(name="nixos-rebuild.test", outcome=Outcome.SUCCESS, exit_code=0, duration_s=4.2),
            ActionRecord(name="nixos-rebuild.switch", outcome=Outcome.SUCCESS, exit_code=0, duration_s=3.1),
        ],
        health_gate=[
            HealthCheckResult(name="sshd", ok=True, detail="listening on 0.0.0.0:22", duration_s=0.1)
        ],
        durations={"build": 12.5, "test": 4.2, "gate": 0.4, "switch": 3.1},
    )


def check_run(i: int = 0, *, status: ControlStatus = ControlStatus.PASS) -> CheckRun:
    return CheckRun(
        event="checks.ran",
        observed_at=T0 + timedelta(hours=i, minutes=5),
        host=HOST,
        outcome=Outcome.SUCCESS if status is ControlStatus.PASS else Outcome.ALERT,
        controls=[
            ControlResult(
                id="ssh.password-auth-disabled",
                status=status,
                expected={"passwordauthentication": "no"},
                observed={"passwordauthentication": "no" if status is ControlStatus.PASS else "yes"},
                frameworks=SSH_REFS,
            ),
            ControlResult(
                id="audit.auditd-enabled",
                status=ControlStatus.PASS,
                frameworks=FrameworkRefs(hipaa=["164.312(b)"], soc2=["CC7.2"], nist_800_53=["AU-2"]),
            ),
        ],
    )


def remediation(i: int = 0) -> Remediation:
    return Remediation(
        event="drift.healed",
        observed_at=T0 + timedelta(hours=i, minutes=10),
        host=HOST,
        outcome=Outcome.SUCCESS,
        runbook="RB-DRIFT-001",
        finding="sshd allowed password login; contact was bob@clinic.example",
        controls=[
            ControlResult(id="ssh.password-auth-disabled", status=ControlStatus.PASS, frameworks=SSH_REFS)
        ],
        actions=[
            ActionRecord(
                name="systemctl.restart", outcome=Outcome.SUCCESS, command=["systemctl", "restart", "sshd"]
            )
        ],
    )


def attestation(i: int = 0, *, expires: date = date(2099, 1, 1)) -> Attestation:
    return Attestation(
        event="attestation.recorded",
        observed_at=T0 + timedelta(hours=i, minutes=20),
        host=HOST,
        actor="alice@clinic.example",
        outcome=Outcome.SUCCESS,
        control="164.308(a)(5)(i)",
        title="Security awareness and training",
        coverage=Coverage.ATTESTATION,
        attested_by="alice@clinic.example",
        evidence_url="https://docs.clinic.example/training/2026",
        expires=expires,
        statement="All 12 staff completed the 2026 training.",
        controls=[
            ControlResult(
                id="164.308(a)(5)(i)",
                status=ControlStatus.ATTESTED,
                frameworks=FrameworkRefs(hipaa=["164.308(a)(5)(i)"]),
            )
        ],
    )


def open_store(root: Path, keys: Keys, *, durable: bool = True) -> EvidenceStore:
    return EvidenceStore.open(root, keys.bundle, keys.log, origin=ORIGIN, durable=durable)


def fill(store: EvidenceStore, n: int) -> list[Recorded]:
    """``n`` entries cycling through the predicate kinds, some with attachments."""
    out = []
    for i in range(n):
        kind = i % 4
        if kind == 0:
            out.append(
                store.append(
                    generation_change(i),
                    subjects=[TOPLEVEL],
                    attachments={"switch.log": b"activating the configuration...\nsetting up /etc...\n"},
                )
            )
        elif kind == 1:
            out.append(store.append(check_run(i), subjects=[TOPLEVEL]))
        elif kind == 2:
            out.append(
                store.append(remediation(i), attachments={"diff.txt": b"-PasswordAuthentication yes\n+no\n"})
            )
        else:
            out.append(store.append(attestation(i), attachments={"attestation.txt": b"All staff trained.\n"}))
    return out


def write_keyring(root: Path, keys: Keys) -> Path:
    path = root / "keyring.json"
    save_keyring(path, keys.keyring)
    return path


def pinned_copy(root: Path) -> Path:
    """An auditor's own copy of ``root``'s keyring, beside ``root`` (the keyring inside the
    directory verified pins nothing, even when given as ``--keyring``)."""
    copy = root.parent / f"{root.name}.pinned-keyring.json"
    copy.write_bytes((root / "keyring.json").read_bytes())
    return copy


def write_key_files(directory: Path, keys: Keys) -> tuple[Path, Path]:
    b, lg = directory / "bundle.key", directory / "log.key"
    write_private_key(b, keys.bundle)
    write_private_key(lg, keys.log)
    return b, lg


@pytest.fixture(scope="session")
def sample_store(tmp_path_factory: pytest.TempPathFactory, keys: Keys) -> Path:
    """A store of 9 entries (all predicate kinds, attachments), built once; copy it before
    changing anything (:func:`store_copy`)."""
    root = tmp_path_factory.mktemp("sample") / "store"
    with open_store(root, keys, durable=False) as store:
        fill(store, 9)
    write_keyring(root, keys)
    return root


@pytest.fixture
def store_copy(sample_store: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "store"
    shutil.copytree(sample_store, dest)
    return dest
