"""Checking one envelope, or one bundle directory, on its own.

This is the part of verification that runs once per entry, in worker processes for a large
log (:mod:`.parallel`), so it shares no state: it reads the files, parses the envelope and
the statement, and finds which of the candidate keys made a valid signature. It does not
decide whether those keys are *trusted* for the entry — that depends on the keyring and on
the rotation entries before it, which only the whole log shows (:mod:`.trust`). Until then
everything the envelope says is a :class:`Claim`: nothing in it is used to judge anything
else before its signature has been judged.
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date
from hashlib import sha256
from typing import Any, Final, NamedTuple, TypeVar

import pydantic

from nixcomply.core.fsutil import read_regular
from nixcomply.evidence import dsse
from nixcomply.evidence.keys import PublicKey
from nixcomply.evidence.log import CHECKPOINTS
from nixcomply.evidence.merkle import leaf_hash
from nixcomply.evidence.statement import (
    Attestation,
    KeyRole,
    KeyRotation,
    Statement,
    Subject,
    parse_statement,
)
from nixcomply.evidence.store import ATTACHMENTS_DIR, ENVELOPE_FILE, EVIDENCE_DIR, STATEMENT_FILE
from nixcomply.evidence.verify.report import ProblemLevel

SEQ_IN_ID: Final = re.compile(r"/\d{8}T\d{6}Z-(\d{8,})-[0-9a-f]{8}$")
BUNDLE_FILES: Final = frozenset({STATEMENT_FILE, ENVELOPE_FILE, ATTACHMENTS_DIR})
_ATTACHED: Final = ATTACHMENTS_DIR + "/"


@dataclass(frozen=True, slots=True)
class RotationClaim:
    """A key-rotation entry's predicate, and which of the two keys it names signed it."""

    action: str
    role: KeyRole
    key: PublicKey
    previous: PublicKey | None
    from_seq: int | None
    reason: str
    signed_by_key: bool
    signed_by_previous: bool


class Claim(NamedTuple):
    """What a parsed envelope says about its place in the log, and who signed it. Trusted
    only once :mod:`.trust` has found one of ``signers`` trusted for ``seq``. (A named
    tuple: one is made per entry, in a worker, and pickled to the parent.)"""

    seq: int
    bundle_id: str
    day: date
    prev: str
    checkpoint: str | None
    envelope_sha256: str
    leaf: bytes
    # Raw public keys (among the candidates) whose signature on the envelope verified.
    signers: frozenset[bytes]
    rotation: RotationClaim | None = None
    attestation: tuple[str, date, str] | None = None
    # When no candidate signed: the signed message and the signatures, so that a key only
    # a rotation entry introduces can still be tried once the rotation is judged.
    unmatched: tuple[bytes, tuple[bytes, ...]] | None = None
    # The checkpoint file ``chain.checkpoint`` commits to (tree size ``seq``), read and
    # hashed beside the bundle so the parent need not open every checkpoint itself.
    committed_file: CommittedFile | None = None


class CommittedFile(NamedTuple):
    """A checkpoint file as read beside the entry that commits to it (:func:`read_committed`).
    Like the claim, used only once the claim is judged authentic."""

    # Whether its sha256 is the claim's ``chain.checkpoint``.
    matches: bool
    origin: str | None
    root: bytes | None
    # Why the text is not a checkpoint of the committing entry's tree size (None: it is).
    problem: str | None


def read_committed(data: bytes, size: int, sha256_hex: str | None) -> CommittedFile:
    """The bytes of a checkpoint file an entry committed to (``sha256_hex``), read as a
    checkpoint of tree size ``size``: the text must still say that size and have a base64
    root (its signature need not be checked: the entry signed its digest)."""
    matches = sha256(data).hexdigest() == sha256_hex
    lines = data.split(b"\n", 3)
    if len(lines) < 4 or lines[1] != str(size).encode():
        return CommittedFile(matches, None, None, f"not a checkpoint for tree size {size}")
    origin = _share(lines[0].decode("utf-8", "replace"))
    try:
        return CommittedFile(matches, origin, base64.b64decode(lines[2], validate=True), None)
    except ValueError:
        return CommittedFile(matches, origin, None, "root hash is not base64")


# Values many claims have in common (the signers, the day, the log's origin), one object
# each: pickle then sends each once per chunk, and the parent keeps one copy.
_SHARED: Final[dict[object, Any]] = {}
T = TypeVar("T")


_last_envelope: Final = [""]


def _share(value: T) -> T:
    if len(_SHARED) > 4096:
        _SHARED.clear()
    shared: T = _SHARED.setdefault(value, value)
    return shared


@dataclass(slots=True)
class Checked:
    """The result of checking one bundle (or envelope): its claim, if it could be parsed,
    and the problems found with it alone (placed at its sequence number once judged)."""

    rel: str
    hint: int | None
    claim: Claim | None = None
    problems: list[tuple[ProblemLevel, str]] = field(default_factory=list)
    statement: Statement | None = None

    def error(self, message: str) -> None:
        self.problems.append(("error", message))


class Candidates:
    """The public keys a worker tries on every envelope (every key of every keyring given),
    by key id so the hinted key is tried first."""

    def __init__(self, keys: Iterable[PublicKey]) -> None:
        unique: dict[bytes, PublicKey] = {}
        for k in keys:
            unique.setdefault(k.raw, k)
        self.keys: tuple[PublicKey, ...] = tuple(unique.values())
        self.by_id: dict[str, PublicKey] = {k.key_id_hex: k for k in self.keys}
        self.raws: frozenset[bytes] = frozenset(unique)

    def vkeys(self) -> list[str]:
        return [k.vkey for k in self.keys]


def signers_of(
    envelope: dsse.Envelope, message: bytes, keys: Candidates, extra: Sequence[PublicKey] = ()
) -> set[bytes]:
    """Raw keys (of ``keys`` and ``extra``) that made a valid signature over ``message``."""
    found: set[bytes] = set()
    for signature in envelope.signatures:
        sig = signature.sig
        if len(sig) != 64:
            continue
        hinted = keys.by_id.get(signature.keyid)
        if hinted is not None and hinted.raw not in found and hinted.verify(sig, message):
            found.add(hinted.raw)
            continue
        for key in (*keys.keys, *extra):
            if key is not hinted and key.raw not in found and key.verify(sig, message):
                found.add(key.raw)
                break
    return found


def check_envelope(
    out: Checked,
    env_bytes: bytes,
    keys: Candidates,
    *,
    statement_bytes: bytes | None = None,
    keep_statement: bool = False,
) -> Statement | None:
    """Parse and check one envelope into ``out.claim``; the statement is returned for the
    checks that need it (attachments, the directory name)."""
    try:
        envelope = dsse.parse(env_bytes)
    except dsse.EnvelopeError as e:
        out.error(f"{ENVELOPE_FILE}: {e}")
        return None
    if statement_bytes is not None and envelope.payload != statement_bytes:
        out.error(f"{STATEMENT_FILE} differs from the payload signed in {ENVELOPE_FILE}")
    if envelope.payload_type != dsse.IN_TOTO_PAYLOAD_TYPE:
        out.error(
            f"{ENVELOPE_FILE}: payloadType is {envelope.payload_type!r}, expected {dsse.IN_TOTO_PAYLOAD_TYPE!r}"
        )
        return None
    try:
        statement = parse_statement(envelope.payload)
    except pydantic.ValidationError as e:
        err = e.errors(include_url=False)[0]
        loc = ".".join(str(p) for p in err["loc"])
        out.error(f"the signed statement is invalid: {loc}: {err['msg']} ({e.error_count()} errors)")
        return None
    predicate = statement.predicate
    chain = predicate.chain
    if chain is None or predicate.bundle_id is None:
        out.error("the statement has no chain or bundle_id")
        return None
    message = dsse.pae(envelope.payload_type, envelope.payload)
    rotation = None
    extra: list[PublicKey] = []
    if isinstance(predicate, KeyRotation):
        try:
            new = PublicKey.from_vkey(predicate.key)
            old = PublicKey.from_vkey(predicate.previous_key) if predicate.previous_key else None
        except ValueError as e:
            out.error(f"key rotation names a malformed key: {e}")
        else:
            extra = [new] if old is None else [new, old]
    signers = signers_of(envelope, message, keys, extra)
    if extra:
        assert isinstance(predicate, KeyRotation)
        rotation = RotationClaim(
            predicate.action,
            predicate.role,
            extra[0],
            extra[1] if len(extra) > 1 else None,
            predicate.from_seq,
            predicate.reason,
            extra[0].raw in signers,
            len(extra) > 1 and extra[1].raw in signers,
        )
    attestation = None
    if isinstance(predicate, Attestation):
        attestation = (predicate.control, predicate.expires, predicate.attested_by)
    # Bundles are checked in log order: the previous envelope's digest, one object for both.
    prev, envelope_sha256 = chain.prev, sha256(env_bytes).hexdigest()
    if prev == _last_envelope[0]:
        prev = _last_envelope[0]
    _last_envelope[0] = envelope_sha256
    out.claim = Claim(
        chain.seq,
        predicate.bundle_id,
        _share(predicate.observed_at.date()),
        prev,
        chain.checkpoint,
        envelope_sha256,
        leaf_hash(env_bytes),
        _share(frozenset(signers)),
        rotation,
        attestation,
        None if signers & keys.raws else (message, tuple(s.sig for s in envelope.signatures)),
    )
    if keep_statement:
        out.statement = statement
    return statement


def read_file(path: str, *, dir_fd: int | None = None) -> bytes:
    """A whole small file of the store or packet: a regular one only (a symbolic link, a
    FIFO or a device planted there is an ``OSError`` naming what it is, never followed or
    read: :func:`nixcomply.core.fsutil.read_regular`)."""
    return read_regular(path, dir_fd=dir_fd)


def check_bundle(base: str, rel: str, keys: Candidates, *, keep_statement: bool = False) -> Checked:
    """Check one bundle directory ``base + rel`` on its own (see the module docstring)."""
    # Until its signature is judged, only the directory name locates a bundle.
    m = SEQ_IN_ID.search(rel)
    out = Checked(rel, int(m.group(1)) if m else None)
    try:
        fd = os.open(base + rel, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as e:
        out.error(f"cannot read bundle: {e.strerror}")
        return out
    try:
        names = set(os.listdir(fd))
        extra = names - BUNDLE_FILES
        if extra:
            out.error(f"unexpected file(s) in bundle: {', '.join(sorted(extra))}")
        env_bytes = read_file(ENVELOPE_FILE, dir_fd=fd)
        stmt_bytes = read_file(STATEMENT_FILE, dir_fd=fd)
    except OSError as e:
        out.error(f"{os.path.basename(e.filename or '') or 'bundle'}: {e.strerror}")
        return out
    finally:
        os.close(fd)
    statement = check_envelope(
        out, env_bytes, keys, statement_bytes=stmt_bytes, keep_statement=keep_statement
    )
    if statement is None:
        return out
    predicate = statement.predicate
    t = predicate.observed_at
    parts = rel.split("/")
    if (
        len(parts) != 5
        or parts[4] != predicate.bundle_id
        or (int(parts[1]), int(parts[2]), int(parts[3])) != (t.year, t.month, t.day)
    ):
        expected = f"{EVIDENCE_DIR}/{t:%Y}/{t:%m}/{t:%d}/{predicate.bundle_id}"
        out.error(f"bundle {predicate.bundle_id} observed at {t:%Y-%m-%d} belongs at {expected}")
    if ATTACHMENTS_DIR in names or any(s.name.startswith(_ATTACHED) for s in statement.subject):
        check_attachments(out, statement.subject, base + rel + "/")
    claim = out.claim
    if claim is not None and claim.checkpoint is not None:
        # Missing or unreadable: the checkpoint check reads it again and says so.
        with contextlib.suppress(OSError):
            data = read_file(f"{base}{CHECKPOINTS}/{claim.seq:012d}")
            out.claim = claim._replace(committed_file=read_committed(data, claim.seq, claim.checkpoint))
    return out


def check_attachments(out: Checked, subjects: Sequence[Subject], directory: str) -> None:
    """Every file in ``attachments/`` is a subject with its sha256, and every attachment
    subject is there."""
    wanted = {s.name[len(_ATTACHED) :]: s.digest["sha256"] for s in subjects if s.name.startswith(_ATTACHED)}
    folder = directory + ATTACHMENTS_DIR + "/"
    try:
        present = set(os.listdir(folder))
    except FileNotFoundError:
        present = set()
    except OSError as e:
        out.error(f"cannot read attachments: {e.strerror}")
        return
    for name in sorted(present - set(wanted)):
        out.error(f"attachment {name} is not a subject of the signed statement")
    for name, digest in sorted(wanted.items()):
        if name not in present:
            out.error(f"attachment {name} is missing")
            continue
        try:
            actual = sha256(read_file(folder + name)).hexdigest()
        except OSError as e:
            out.error(f"attachment {name}: {e.strerror}")
            continue
        if actual != digest:
            out.error(f"attachment {name}: sha256 {actual} but the statement says {digest}")


def check_given_attachments(out: Checked, subjects: Sequence[Subject], attachments: dict[str, bytes]) -> None:
    """:func:`check_attachments` for attachments handed over in memory (an upload)."""
    wanted = {s.name[len(_ATTACHED) :]: s.digest["sha256"] for s in subjects if s.name.startswith(_ATTACHED)}
    for name in sorted(set(attachments) - set(wanted)):
        out.error(f"attachment {name} is not a subject of the signed statement")
    for name, digest in sorted(wanted.items()):
        data = attachments.get(name)
        if data is None:
            out.error(f"attachment {name} is missing")
        elif (actual := sha256(data).hexdigest()) != digest:
            out.error(f"attachment {name}: sha256 {actual} but the statement says {digest}")
