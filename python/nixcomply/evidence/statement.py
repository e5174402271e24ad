"""The evidence record: an in-toto Statement v1 and nixcomply's predicate schemas.

A statement (https://in-toto.io/Statement/v1) names its *subjects* by sha256 — the system
toplevel the reconciler built, and every attachment of the bundle — and carries one
*predicate* that says what happened. The predicate types are identified by URIs::

    https://nixcomply.dev/evidence/<name>/v1     name in PREDICATE_NAMES

These URIs are identifiers in the in-toto sense (stable names for a schema version), not
pages anyone needs to fetch; this module is their specification.

Every predicate shares: ``bundle_id`` and ``chain`` (filled in by the store: ``chain.seq``
is the entry's position in the log, starting at 0, ``chain.prev`` the sha256 of the
previous entry's envelope file, 64 zeros for the first, and ``chain.checkpoint`` the
sha256 of the log's checkpoint file just before this entry), ``event`` (a dotted name such as
``generation.switched``), ``observed_at`` (UTC), ``host`` (machine-id and hostname),
``actor`` (``nixcomply``, ``external`` or the person who acted), ``outcome`` (success,
failed, reverted, deferred, alert, rejected, expired), ``reconciler_version``,
``policy_digest``, ``controls`` (id, status, expected, observed, and the control's references
in each framework) and ``actions`` (what was done and how it went).

Before signing, the store passes all free text through the PHI scrubber
(:func:`scrub_free_text`). Fields that identify things rather than describe them — digests,
store paths, host names, control ids, framework references, people and URLs — are listed
in each model's ``VERBATIM`` set, validated to their shape, and kept as they are; the
scrubber is built not to touch such values anyway, but an attestation's signer must stay
readable even when it is an e-mail address.

The stored ``statement.json`` is exactly the signed bytes (:func:`statement_bytes`):
compact JSON, one line, in the models' field order; ``jq . statement.json`` shows it.
"""

from __future__ import annotations

import functools
import re
import socket
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, ClassVar, Final, Literal, TypeVar

from pydantic import (
    AwareDatetime,
    ConfigDict,
    Field,
    JsonValue,
    StringConstraints,
    TypeAdapter,
    field_validator,
)

from nixcomply import __version__
from nixcomply.evidence.scrub import Scrubber, merge_counts
from nixcomply.model.base import StrictModel
from nixcomply.model.outcome import Outcome
from nixcomply.model.status import ControlStatus, Coverage

STATEMENT_TYPE: Final = "https://in-toto.io/Statement/v1"
PREDICATE_BASE: Final = "https://nixcomply.dev/evidence/"
PREDICATE_NAMES: Final = ("generation-change", "remediation", "check-run", "attestation", "key-rotation")
FRAMEWORKS: Final = ("hipaa", "soc2", "cis_v8", "nist_800_53", "nist_csf")
GENESIS_PREV: Final = "0" * 64


def predicate_type_uri(name: str) -> str:
    if name not in PREDICATE_NAMES:
        raise ValueError(f"unknown predicate {name!r}")
    return f"{PREDICATE_BASE}{name}/v1"


GENERATION_CHANGE: Final = "https://nixcomply.dev/evidence/generation-change/v1"
REMEDIATION: Final = "https://nixcomply.dev/evidence/remediation/v1"
CHECK_RUN: Final = "https://nixcomply.dev/evidence/check-run/v1"
ATTESTATION: Final = "https://nixcomply.dev/evidence/attestation/v1"
KEY_ROTATION: Final = "https://nixcomply.dev/evidence/key-rotation/v1"

_SHA256_HEX: Final = re.compile(r"[0-9a-f]{64}")

Sha256Hex = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
Identifier = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._()/:@+-]{0,199}$")]
EventName = Annotated[
    str, StringConstraints(pattern=r"^[a-z][a-z0-9-]*(?:\.[a-z0-9][a-z0-9-]*)*$", max_length=100)
]
StorePath = Annotated[
    str, StringConstraints(pattern=r"^/nix/store/[0-9a-df-np-sv-z]{32}-[A-Za-z0-9+._?=-]+$")
]
BundleId = Annotated[str, StringConstraints(pattern=r"^\d{8}T\d{6}Z-\d{8,}-[0-9a-f]{8}$")]
Person = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Url = Annotated[str, StringConstraints(pattern=r"^https?://\S+$", max_length=2000)]
Seconds = Annotated[float, Field(ge=0)]


class KeyRole(StrEnum):
    BUNDLE = "bundle"
    LOG = "log"


class _Model(StrictModel):
    # Fields that identify rather than describe: validated, never scrubbed.
    VERBATIM: ClassVar[frozenset[str]] = frozenset()


class Subject(_Model):
    """An in-toto ResourceDescriptor reduced to what nixcomply uses: name and digests."""

    VERBATIM = frozenset({"name", "digest"})

    name: Annotated[str, StringConstraints(min_length=1, max_length=500)]
    digest: dict[str, str] = Field(min_length=1)

    @field_validator("digest")
    @classmethod
    def _sha256(cls, v: dict[str, str]) -> dict[str, str]:
        sha = v.get("sha256")
        if sha is None or not _SHA256_HEX.fullmatch(sha):
            raise ValueError("digest must include a lowercase hex sha256")
        return v


class FrameworkRefs(_Model):
    """A control's references into each framework, in each framework's own form."""

    VERBATIM = frozenset(FRAMEWORKS)

    hipaa: list[Identifier] = Field(default_factory=list)
    soc2: list[Identifier] = Field(default_factory=list)
    cis_v8: list[Identifier] = Field(default_factory=list)
    nist_800_53: list[Identifier] = Field(default_factory=list)
    nist_csf: list[Identifier] = Field(default_factory=list)

    def items(self) -> list[tuple[str, str]]:
        return [(fw, ref) for fw in FRAMEWORKS for ref in getattr(self, fw)]


class ControlResult(_Model):
    VERBATIM = frozenset({"id", "status"})

    id: Identifier
    status: ControlStatus
    expected: JsonValue = None
    observed: JsonValue = None
    frameworks: FrameworkRefs = Field(default_factory=FrameworkRefs)
    detail: str = ""


class Host(_Model):
    VERBATIM = frozenset({"machine_id", "hostname"})

    machine_id: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{32}$")]
    hostname: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9.-]{0,252}$")]

    @classmethod
    def local(cls, *, etc: Path = Path("/etc")) -> Host:
        """This machine: ``/etc/machine-id`` and the host name. Without a machine-id (some
        containers) the id is all zeros, which evidence readers can recognise."""

        try:
            machine_id = (etc / "machine-id").read_text().strip()
        except OSError:
            machine_id = ""
        if not re.fullmatch(r"[0-9a-f]{32}", machine_id):
            machine_id = "0" * 32
        hostname = (
            re.sub(r"[^A-Za-z0-9.-]", "-", socket.gethostname().split(".")[0]).strip("-.") or "localhost"
        )
        return cls(machine_id=machine_id, hostname=hostname)


class GenerationRef(_Model):
    VERBATIM = frozenset({"number", "store_path"})

    number: int = Field(ge=0)
    store_path: StorePath


class GenerationRecord(_Model):
    VERBATIM = frozenset({"number", "store_path", "previous", "flake_nar_hash"})

    number: int = Field(ge=0)
    store_path: StorePath
    previous: GenerationRef | None = None
    nixos_version: str | None = None
    configuration_revision: str | None = None
    flake_nar_hash: Annotated[str, StringConstraints(pattern=r"^sha256-[A-Za-z0-9+/]{43}=$")] | None = None


class ActionRecord(_Model):
    """One thing nixcomply (or a person) did: a rebuild step, a runbook step, a restart."""

    VERBATIM = frozenset({"name", "outcome"})

    name: Identifier
    outcome: Outcome
    detail: str = ""
    command: list[str] = Field(default_factory=list)
    exit_code: int | None = None
    started_at: AwareDatetime | None = None
    duration_s: Seconds | None = None


class HealthCheckResult(_Model):
    """One check of the health gate between ``nixos-rebuild test`` and ``switch``."""

    VERBATIM = frozenset({"name", "ok", "duration_s"})

    name: Identifier
    ok: bool
    detail: str = ""
    duration_s: Seconds = 0.0


class Chain(_Model):
    """Where the entry sits in the log. ``checkpoint`` is the sha256 of the checkpoint file
    the log had when the entry was appended (tree size ``seq``; null for the first entry):
    it ties every historical checkpoint to a signed statement, so verify can check them
    all by digest and needs the log key's signature only on the newest (and a pinned) one."""

    VERBATIM = frozenset({"seq", "prev", "checkpoint"})

    seq: int = Field(ge=0)
    prev: Sha256Hex
    checkpoint: Sha256Hex | None = None


class Predicate(_Model):
    """Fields every predicate has; subclasses add their own."""

    NAME: ClassVar[str] = ""
    VERBATIM = frozenset(
        {
            "bundle_id",
            "event",
            "observed_at",
            "host",
            "actor",
            "outcome",
            "reconciler_version",
            "policy_digest",
            "chain",
        }
    )

    bundle_id: BundleId | None = None
    event: EventName
    observed_at: AwareDatetime
    host: Host
    actor: Person = "nixcomply"
    outcome: Outcome
    reconciler_version: Identifier = __version__
    policy_digest: Annotated[str, StringConstraints(pattern=r"^sha256:[0-9a-f]{64}$")] | None = None
    controls: list[ControlResult] = Field(default_factory=list)
    actions: list[ActionRecord] = Field(default_factory=list)
    chain: Chain | None = None

    @field_validator("observed_at")
    @classmethod
    def _utc(cls, v: datetime) -> datetime:
        return v.astimezone(UTC)

    @classmethod
    def predicate_type(cls) -> str:
        return predicate_type_uri(cls.NAME)


class GenerationChange(Predicate):
    """The running system moved (or was refused a move) to another generation."""

    NAME = "generation-change"
    VERBATIM = Predicate.VERBATIM | {"generation", "flake_ref", "durations"}

    generation: GenerationRecord
    flake_ref: Annotated[str, StringConstraints(min_length=1, max_length=2000)] | None = None
    health_gate: list[HealthCheckResult] = Field(default_factory=list)
    durations: dict[Identifier, Seconds] = Field(default_factory=dict)


class Remediation(Predicate):
    """A runbook ran to heal drift of one or more controls."""

    NAME = "remediation"
    VERBATIM = Predicate.VERBATIM | {"runbook", "generation"}

    runbook: Annotated[str, StringConstraints(pattern=r"^RB-[A-Z]+-\d{3}$")] | None = None
    finding: str = ""
    generation: GenerationRecord | None = None


class CheckRun(Predicate):
    """A pass of the runtime checks: every control's status as observed."""

    NAME = "check-run"
    VERBATIM = Predicate.VERBATIM | {"generation"}

    generation: GenerationRecord | None = None


class Attestation(Predicate):
    """A person states that an organisational control is met, with a link to the evidence
    (policy, training record, BAA) and an expiry after which it must be renewed."""

    NAME = "attestation"
    VERBATIM = Predicate.VERBATIM | {"control", "attested_by", "evidence_url", "expires", "coverage"}

    control: Identifier
    title: str = ""
    coverage: Coverage | None = None
    attested_by: Person
    evidence_url: Url
    expires: date
    statement: Annotated[str, StringConstraints(min_length=1)]


class KeyRotation(Predicate):
    """A key of the evidence store was rotated (signed by the old and the new key) or
    revoked. Keys are given as verifier keys (``name+keyid+base64``)."""

    NAME = "key-rotation"
    VERBATIM = Predicate.VERBATIM | {"action", "role", "key", "previous_key", "from_seq"}

    action: Literal["rotate", "revoke"]
    role: KeyRole
    key: Annotated[str, StringConstraints(min_length=1, max_length=500)]
    previous_key: Annotated[str, StringConstraints(min_length=1, max_length=500)] | None = None
    from_seq: int | None = Field(default=None, ge=0)
    reason: str = ""


P = TypeVar("P", bound=Predicate)

PREDICATE_CLASSES: Final[Mapping[str, type[Predicate]]] = {
    c.predicate_type(): c for c in (GenerationChange, Remediation, CheckRun, Attestation, KeyRotation)
}


class _Statement(_Model):
    model_config = ConfigDict(populate_by_name=True)

    type_: Literal["https://in-toto.io/Statement/v1"] = Field(default=STATEMENT_TYPE, alias="_type")
    subject: list[Subject] = Field(min_length=1)


class GenerationChangeStatement(_Statement):
    predicate_type: Literal["https://nixcomply.dev/evidence/generation-change/v1"] = Field(
        default=GENERATION_CHANGE, alias="predicateType"
    )
    predicate: GenerationChange


class RemediationStatement(_Statement):
    predicate_type: Literal["https://nixcomply.dev/evidence/remediation/v1"] = Field(
        default=REMEDIATION, alias="predicateType"
    )
    predicate: Remediation


class CheckRunStatement(_Statement):
    predicate_type: Literal["https://nixcomply.dev/evidence/check-run/v1"] = Field(
        default=CHECK_RUN, alias="predicateType"
    )
    predicate: CheckRun


class AttestationStatement(_Statement):
    predicate_type: Literal["https://nixcomply.dev/evidence/attestation/v1"] = Field(
        default=ATTESTATION, alias="predicateType"
    )
    predicate: Attestation


class KeyRotationStatement(_Statement):
    predicate_type: Literal["https://nixcomply.dev/evidence/key-rotation/v1"] = Field(
        default=KEY_ROTATION, alias="predicateType"
    )
    predicate: KeyRotation


Statement = (
    GenerationChangeStatement
    | RemediationStatement
    | CheckRunStatement
    | AttestationStatement
    | KeyRotationStatement
)


@functools.cache
def _statement_adapter() -> TypeAdapter[Statement]:
    """Built on first use, not at import: its schemas for every statement kind cost ~4 MB of
    memory that a reconcile cycle, which only writes statements, never needs."""
    return TypeAdapter(Annotated[Statement, Field(discriminator="predicate_type")])


_STATEMENT_CLASS: Final[Mapping[type[Predicate], type[_Statement]]] = {
    GenerationChange: GenerationChangeStatement,
    Remediation: RemediationStatement,
    CheckRun: CheckRunStatement,
    Attestation: AttestationStatement,
    KeyRotation: KeyRotationStatement,
}


def make_statement(predicate: Predicate, subjects: Sequence[Subject]) -> Statement:
    cls = _STATEMENT_CLASS[type(predicate)]
    statement = cls.model_validate({"subject": list(subjects), "predicate": predicate})
    assert isinstance(
        statement,
        GenerationChangeStatement
        | RemediationStatement
        | CheckRunStatement
        | AttestationStatement
        | KeyRotationStatement,
    )
    return statement


def statement_bytes(statement: Statement) -> bytes:
    """The bytes of a statement as signed and stored as statement.json: compact JSON in the
    models' field order (``_type``, ``subject``, ``predicateType``, ``predicate``), UTF-8,
    a final newline. Verification never re-serialises, so only determinism matters."""
    return statement.model_dump_json(by_alias=True).encode("utf-8") + b"\n"


def parse_statement(payload: bytes) -> Statement:
    """Validate a statement's bytes (raises pydantic ``ValidationError``)."""
    return _statement_adapter().validate_json(payload)


def _scrub_value(value: Any, scrubber: Scrubber, counts: list[Mapping[str, int]]) -> Any:
    if isinstance(value, _Model):
        return _scrub_model(value, scrubber, counts)
    if isinstance(value, str):
        result = scrubber.scrub(value)
        if result.matched:
            counts.append(result.counts)
        return result.text
    if isinstance(value, list):
        return [_scrub_value(v, scrubber, counts) for v in value]
    if isinstance(value, dict):
        # Keys are names (options, phases); only values can be free text.
        return {k: _scrub_value(v, scrubber, counts) for k, v in value.items()}
    return value


def _scrub_model(model: _Model, scrubber: Scrubber, counts: list[Mapping[str, int]]) -> Any:
    updates: dict[str, Any] = {}
    for name in type(model).model_fields:
        if name in model.VERBATIM:
            continue
        value = getattr(model, name)
        new = _scrub_value(value, scrubber, counts)
        if new != value:
            updates[name] = new
    return model.model_copy(update=updates) if updates else model


def scrub_free_text(predicate: P, scrubber: Scrubber) -> tuple[P, dict[str, int]]:
    """``predicate`` with every free-text value scrubbed, and the counts per PHI kind."""
    counts: list[Mapping[str, int]] = []
    scrubbed = _scrub_model(predicate, scrubber, counts)
    assert isinstance(scrubbed, type(predicate))
    return scrubbed, merge_counts(counts)
