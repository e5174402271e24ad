"""Offline verification of an evidence store or of an auditor's export packet.

What is checked, for every bundle: the DSSE signature by a bundle key the keyring trusts
for that entry's sequence number (a key-rotation entry also by both keys it names), that
``statement.json`` is byte for byte the signed payload and a valid statement, that every
attachment's sha256 is a subject and nothing else lies in the bundle, that the directory
names match the bundle id and date, and that ``chain.prev`` is the sha256 of the previous
envelope. For the log: one bundle per sequence number with none missing, each envelope's
leaf hash equal to the stored leaf, every checkpoint carrying the root of the tree at its
size (in a store every size has its checkpoint), the newest checkpoint signed by a log key
valid for it and covering the whole log, every older checkpoint byte for byte the one the
next entry committed to in its signed ``chain.checkpoint`` (``all_checkpoints`` also
checks each one's log-key signature), the append state agreeing, and — with a pinned
earlier checkpoint — the log still containing exactly the tree the pin describes (a
truncated or rewritten history fails). A packet (``packet.json`` present, or a ``.zip``)
holds only a range of bundles; for those, each inclusion proof is checked against the
newest checkpoint, and the leaf list lets the whole tree be recomputed.

Warnings (exit 3) are states that are legitimate but need a person: an append that was
interrupted and will be finished or undone on the next open of the store, an attestation
whose latest renewal has expired, a keyring that disagrees with a rotation entry.

Verification reads each file once and uses plain ``json`` for the envelope and log files;
pydantic validates each statement. Thanks to the ``chain.checkpoint`` commitments, a log of
n entries costs n + 1 signature verifications, not 2n. Bundles are checked on a few threads
(``cryptography`` releases the GIL while it verifies a signature, so parsing overlaps with
signature checks on an otherwise idle machine); results are merged in order on the main
thread, so findings and the "first bad bundle" do not depend on scheduling.
"""

from __future__ import annotations

import base64
import json
import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date
from hashlib import sha256
from pathlib import Path
from typing import Any, Final, Literal, TypedDict

import pydantic

from nixcomply.errors import EXIT_FAILURE, EXIT_OK, EXIT_WARNINGS, UsageError
from nixcomply.evidence import dsse
from nixcomply.evidence.checkpoint import NoteError, open_checkpoint, parse_checkpoint_text, parse_note
from nixcomply.evidence.index import INDEX_FILE, control_index
from nixcomply.evidence.keyring import Keyring, RangeCache
from nixcomply.evidence.keys import PublicKey
from nixcomply.evidence.log import (
    CHECKPOINTS,
    HASH_SIZE,
    LEAVES,
    PENDING,
    STATE_DIR,
    Pending,
    checkpoint_name,
    parse_state,
    split_leaves,
    state_name,
    state_sizes,
)
from nixcomply.evidence.merkle import Frontier, leaf_hash, proof_document, verify_inclusion
from nixcomply.evidence.statement import (
    GENESIS_PREV,
    Attestation,
    KeyRole,
    KeyRotation,
    Statement,
    parse_statement,
)
from nixcomply.evidence.store import ATTACHMENTS_DIR, ENVELOPE_FILE, EVIDENCE_DIR, KEYRING, STATEMENT_FILE

PACKET_FILE: Final = "packet.json"
PACKET_FORMAT: Final = "nixcomply-evidence-packet/v1"
PROOFS_DIR: Final = "proofs"
MAX_REPORTED: Final = 50

ProblemLevel = Literal["error", "warning"]
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class VerifyProblem:
    severity: ProblemLevel
    message: str
    seq: int | None = None
    path: str | None = None

    def __str__(self) -> str:
        where = []
        if self.seq is not None:
            where.append(f"entry {self.seq}")
        if self.path:
            where.append(self.path)
        prefix = f"{' '.join(where[:1])}{f' ({where[1]})' if len(where) > 1 else ''}: " if where else ""
        return f"{prefix}{self.message}"


class ProblemJson(TypedDict):
    seq: int | None
    path: str | None
    message: str


class PinJson(TypedDict):
    size: int
    consistent: bool


class ReportJson(TypedDict):
    """The stable ``--json`` output of ``nixcomply evidence verify``."""

    ok: bool
    exit_code: int
    kind: Literal["store", "packet"]
    path: str
    origin: str | None
    entries: int
    bundles: int
    tree_size: int
    root: str | None
    checkpoint_size: int
    checkpoints_verified: int
    pinned: PinJson | None
    first_error: ProblemJson | None
    errors: list[ProblemJson]
    warnings: list[ProblemJson]
    duration_s: float


@dataclass
class Report:
    kind: Literal["store", "packet"]
    path: Path
    origin: str | None = None
    entries: int = 0
    bundles: int = 0
    tree_size: int = 0
    root: bytes | None = None
    checkpoint_size: int = 0
    checkpoints_verified: int = 0
    pinned: PinJson | None = None
    errors: list[VerifyProblem] = field(default_factory=list)
    warnings: list[VerifyProblem] = field(default_factory=list)
    duration_s: float = 0.0

    @property
    def exit_code(self) -> int:
        return EXIT_FAILURE if self.errors else EXIT_WARNINGS if self.warnings else EXIT_OK

    def first_error(self) -> VerifyProblem | None:
        if not self.errors:
            return None
        return min(self.errors, key=lambda f: (f.seq is None, f.seq or 0))

    def to_json(self) -> ReportJson:
        def conv(f: VerifyProblem) -> ProblemJson:
            return {"seq": f.seq, "path": f.path, "message": f.message}

        first = self.first_error()
        return {
            "ok": not self.errors,
            "exit_code": self.exit_code,
            "kind": self.kind,
            "path": str(self.path),
            "origin": self.origin,
            "entries": self.entries,
            "bundles": self.bundles,
            "tree_size": self.tree_size,
            "root": self.root.hex() if self.root is not None else None,
            "checkpoint_size": self.checkpoint_size,
            "checkpoints_verified": self.checkpoints_verified,
            "pinned": self.pinned,
            "first_error": conv(first) if first else None,
            "errors": [conv(f) for f in sorted(self.errors, key=_order)[:MAX_REPORTED]],
            "warnings": [conv(f) for f in self.warnings[:MAX_REPORTED]],
            "duration_s": round(self.duration_s, 3),
        }

    def lines(self) -> list[str]:
        """The human summary: the verdict, then the first error, then the rest."""
        out = []
        first = self.first_error()
        if first is not None:
            out.append(f"FAILED: {first}")
            rest = [f for f in sorted(self.errors, key=_order) if f is not first]
            out.extend(f"  also: {f}" for f in rest[: MAX_REPORTED - 1])
            if len(self.errors) > MAX_REPORTED:
                out.append(f"  ... and {len(self.errors) - MAX_REPORTED} more errors")
        out.extend(f"warning: {w}" for w in self.warnings[:MAX_REPORTED])
        root = self.root.hex() if self.root is not None else "-"
        verdict = "FAILED" if self.errors else "OK with warnings" if self.warnings else "OK"
        out.append(
            f"{verdict}: {self.kind} {self.path}: {self.bundles} bundles, tree size {self.tree_size}, "
            f"root {root}, {self.checkpoints_verified} checkpoints verified"
            + (
                f", consistent with pinned checkpoint of size {self.pinned['size']}"
                if self.pinned and self.pinned["consistent"]
                else ""
            )
        )
        return out


def _order(f: VerifyProblem) -> tuple[bool, int]:
    return (f.seq is None, f.seq or 0)


@dataclass
class _Bundle:
    seq: int
    path: str
    envelope_sha256: str
    leaf: bytes
    prev: str
    bundle_id: str
    checkpoint: str | None


@dataclass
class _Checked:
    """What checking one bundle found (computed in a worker thread, merged in order)."""

    bundle: _Bundle | None = None
    findings: list[VerifyProblem] = field(default_factory=list)
    attestation: tuple[str, int, date, str] | None = None
    statement: Statement | None = None  # kept for packets, to recompute their index

    def error(self, message: str, *, seq: int | None = None, path: str | None = None) -> None:
        self.findings.append(VerifyProblem("error", message, seq, path))

    def warn(self, message: str, *, seq: int | None = None, path: str | None = None) -> None:
        self.findings.append(VerifyProblem("warning", message, seq, path))


@dataclass
class _CheckedCheckpoint:
    size: int
    raw: bytes | None = None
    origin: str | None = None
    cp_size: int | None = None
    root: bytes | None = None
    error: str | None = None


_SEQ_IN_ID: Final = re.compile(r"/\d{8}T\d{6}Z-(\d{8,})-[0-9a-f]{8}$")
_BUNDLE_FILES: Final = frozenset({STATEMENT_FILE, ENVELOPE_FILE, ATTACHMENTS_DIR})
_ATTACHED: Final = ATTACHMENTS_DIR + "/"
# Work is handed to the threads in chunks: one future per item would cost more than
# the parsing it hides. Small logs are checked without threads at all.
_CHUNK: Final = 256
_THREADED_MIN: Final = 2 * _CHUNK


def _read(path: str) -> bytes:
    """A whole small file, with less overhead than ``open().read()``."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = []
        while True:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks)


def default_jobs() -> int:
    """Threads for verification: Ed25519 verification releases the GIL, so while one
    thread waits on a signature another parses the next bundle."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, 4))


class _Verifier:
    def __init__(
        self,
        root: Path,
        keyring: Keyring,
        *,
        kind: Literal["store", "packet"],
        pin: bytes | None,
        today: date,
        progress: Progress | None,
        jobs: int,
        all_checkpoints: bool = False,
    ) -> None:
        self.root = root
        self.all_checkpoints = all_checkpoints
        # String paths: pathlib's parsing costs more than reading a small file.
        self.base = os.fspath(root) + "/"
        self.keyring = keyring
        self.pin = pin
        self.today = today
        self.progress = progress
        self.jobs = jobs
        self.report = Report(kind=kind, path=root)
        self.bundle_keys = RangeCache(keyring, KeyRole.BUNDLE)
        self.log_keys = RangeCache(keyring, KeyRole.LOG)
        self.bundles: dict[int, _Bundle] = {}
        self.attestations: dict[str, tuple[int, date, str, str]] = {}
        self.temp_dirs: list[str] = []
        self.statements: dict[int, Statement] = {}

    def error(self, message: str, *, seq: int | None = None, path: str | None = None) -> None:
        self.report.errors.append(VerifyProblem("error", message, seq, path))

    def warn(self, message: str, *, seq: int | None = None, path: str | None = None) -> None:
        self.report.warnings.append(VerifyProblem("warning", message, seq, path))

    # -- bundles -------------------------------------------------------------------------

    def scan(self) -> list[str]:
        """Relative paths of all bundle directories; stray entries are errors."""
        found: list[str] = []
        if not (self.root / EVIDENCE_DIR).is_dir():
            return found

        def walk(rel: str, depth: int) -> None:
            try:
                entries = sorted(os.scandir(self.base + rel), key=lambda e: e.name)
            except OSError as e:
                self.error(f"cannot read directory: {e.strerror}", path=rel)
                return
            for entry in entries:
                child = f"{rel}/{entry.name}"
                if depth == 3:
                    if entry.name.startswith(".") and entry.name.endswith(".tmp"):
                        self.temp_dirs.append(child)
                    elif entry.is_dir(follow_symlinks=False):
                        found.append(child)
                    else:
                        self.error("unexpected file among the bundles", path=child)
                    continue
                width = 4 if depth == 0 else 2
                if not (
                    entry.is_dir(follow_symlinks=False) and len(entry.name) == width and entry.name.isdigit()
                ):
                    self.error("unexpected entry in the evidence tree", path=child)
                    continue
                walk(child, depth + 1)

        walk(EVIDENCE_DIR, 0)
        return found

    def check_bundles(self, rels: list[str]) -> list[_Checked]:
        return [self.check_bundle(rel) for rel in rels]

    def check_bundle(self, rel: str) -> _Checked:
        """Check one bundle on its own (no shared state: runs in worker threads)."""
        out = _Checked()
        base = self.base + rel + "/"
        # Until the signed statement says otherwise, the sequence number in the directory
        # name locates the bundle, so even an unreadable one is reported in order.
        m = _SEQ_IN_ID.search(rel)
        hint = int(m.group(1)) if m else None
        try:
            names = set(os.listdir(base))
        except OSError as e:
            out.error(f"cannot read bundle: {e.strerror}", seq=hint, path=rel)
            return out
        extra = names - _BUNDLE_FILES
        if extra:
            out.error(f"unexpected file(s) in bundle: {', '.join(sorted(extra))}", seq=hint, path=rel)
        try:
            env_bytes = _read(base + ENVELOPE_FILE)
            stmt_bytes = _read(base + STATEMENT_FILE)
        except OSError as e:
            out.error(f"{os.path.basename(e.filename or '')}: {e.strerror}", seq=hint, path=rel)
            return out
        try:
            envelope = dsse.parse(env_bytes)
        except dsse.EnvelopeError as e:
            out.error(f"{ENVELOPE_FILE}: {e}", seq=hint, path=rel)
            return out
        if envelope.payload != stmt_bytes:
            out.error(
                f"{STATEMENT_FILE} differs from the payload signed in {ENVELOPE_FILE}", seq=hint, path=rel
            )
        try:
            statement = parse_statement(envelope.payload)
        except pydantic.ValidationError as e:
            err = e.errors(include_url=False)[0]
            loc = ".".join(str(p) for p in err["loc"])
            out.error(
                f"the signed statement is invalid: {loc}: {err['msg']} ({e.error_count()} errors)",
                seq=hint,
                path=rel,
            )
            return out
        predicate = statement.predicate
        chain = predicate.chain
        if chain is None or predicate.bundle_id is None:
            out.error("the statement has no chain or bundle_id", seq=hint, path=rel)
            return out
        seq = chain.seq
        try:
            signers = dsse.verified_keys(envelope, self.bundle_keys(seq))
        except dsse.EnvelopeError as e:
            out.error(f"{ENVELOPE_FILE}: {e}", seq=seq, path=rel)
            return out
        if not signers:
            out.error(
                f"no valid signature by a bundle key the keyring trusts for entry {seq} "
                f"(keyids in envelope: {', '.join(s.keyid for s in envelope.signatures)})",
                seq=seq,
                path=rel,
            )
        if isinstance(predicate, KeyRotation):
            self.check_rotation(out, predicate, envelope, seq, rel)
        elif isinstance(predicate, Attestation):
            out.attestation = (predicate.control, seq, predicate.expires, predicate.attested_by)
        t = predicate.observed_at
        parts = rel.split("/")
        if (
            len(parts) != 5
            or parts[4] != predicate.bundle_id
            or (int(parts[1]), int(parts[2]), int(parts[3])) != (t.year, t.month, t.day)
        ):
            expected = f"{EVIDENCE_DIR}/{t:%Y}/{t:%m}/{t:%d}/{predicate.bundle_id}"
            out.error(
                f"bundle {predicate.bundle_id} observed at {t:%Y-%m-%d} belongs at {expected}",
                seq=seq,
                path=rel,
            )
        if ATTACHMENTS_DIR in names or any(s.name.startswith(_ATTACHED) for s in statement.subject):
            self.check_attachments(out, statement.subject, rel, seq)
        out.bundle = _Bundle(
            seq,
            rel,
            sha256(env_bytes).hexdigest(),
            leaf_hash(env_bytes),
            chain.prev,
            predicate.bundle_id,
            chain.checkpoint,
        )
        if self.report.kind == "packet":
            out.statement = statement
        return out

    def check_attachments(self, out: _Checked, subjects: list[Any], rel: str, seq: int) -> None:
        wanted = {
            s.name[len(_ATTACHED) :]: s.digest["sha256"] for s in subjects if s.name.startswith(_ATTACHED)
        }
        directory = self.base + rel + "/" + ATTACHMENTS_DIR + "/"
        try:
            present = set(os.listdir(directory))
        except FileNotFoundError:
            present = set()
        except OSError as e:
            out.error(f"cannot read attachments: {e.strerror}", seq=seq, path=rel)
            return
        for name in sorted(present - set(wanted)):
            out.error(f"attachment {name} is not a subject of the signed statement", seq=seq, path=rel)
        for name, digest in sorted(wanted.items()):
            if name not in present:
                out.error(f"attachment {name} is missing", seq=seq, path=rel)
                continue
            try:
                actual = sha256(_read(directory + name)).hexdigest()
            except OSError as e:
                out.error(f"attachment {name}: {e.strerror}", seq=seq, path=rel)
                continue
            if actual != digest:
                out.error(
                    f"attachment {name}: sha256 {actual} but the statement says {digest}", seq=seq, path=rel
                )

    def check_rotation(
        self, out: _Checked, predicate: KeyRotation, envelope: dsse.Envelope, seq: int, rel: str
    ) -> None:
        try:
            new = PublicKey.from_vkey(predicate.key)
            old = PublicKey.from_vkey(predicate.previous_key) if predicate.previous_key else None
        except ValueError as e:
            out.error(f"key rotation names a malformed key: {e}", seq=seq, path=rel)
            return
        role = predicate.role
        if predicate.action == "rotate":
            if old is None:
                out.error("a rotation must name the previous key", seq=seq, path=rel)
                return
            if len(dsse.verified_keys(envelope, [old, new])) != 2:
                out.error("the key rotation is not signed by both the old and the new key", seq=seq, path=rel)
            new_entry = self.keyring.entry_for(new, role)
            old_entry = self.keyring.entry_for(old, role)
            if new_entry is None or new_entry.valid_from != seq:
                out.warn(
                    f"the keyring does not list {new.name} as a {role.value} key valid from entry {seq}",
                    seq=seq,
                    path=rel,
                )
            if old_entry is None or old_entry.valid_until != seq:
                out.warn(f"the keyring does not end {old.name}'s range at entry {seq}", seq=seq, path=rel)
        else:
            entry = self.keyring.entry_for(new, role)
            limit = (predicate.from_seq if predicate.from_seq is not None else seq) - 1
            if entry is None or entry.valid_until is None or entry.valid_until > limit:
                out.warn(f"the keyring does not revoke {new.name} from entry {limit + 1}", seq=seq, path=rel)

    def merge(self, checked: _Checked, rel: str) -> None:
        for f in checked.findings:
            (self.report.errors if f.severity == "error" else self.report.warnings).append(f)
        b = checked.bundle
        if b is None:
            return
        if b.seq in self.bundles:
            self.error(
                f"two bundles claim entry {b.seq}: {self.bundles[b.seq].path} and {rel}", seq=b.seq, path=rel
            )
            return
        self.bundles[b.seq] = b
        if checked.statement is not None:
            self.statements[b.seq] = checked.statement
        if checked.attestation is not None:
            control, seq, expires, by = checked.attestation
            current = self.attestations.get(control)
            if current is None or current[0] < seq:
                self.attestations[control] = (seq, expires, by, rel)

    # -- checkpoints -------------------------------------------------------------------

    def checkpoint_sizes(self) -> list[int]:
        sizes = []
        try:
            entries = list(os.scandir(self.root / CHECKPOINTS))
        except FileNotFoundError:
            return []
        for e in entries:
            if not e.name.isdigit() or len(e.name) != 12:
                if not e.name.startswith("."):
                    self.error("unexpected file among the checkpoints", path=f"{CHECKPOINTS}/{e.name}")
                continue
            sizes.append(int(e.name))
        return sorted(sizes)

    def check_checkpoint_file(self, size: int) -> _CheckedCheckpoint:
        out = _CheckedCheckpoint(size)
        try:
            data = _read(f"{self.base}{CHECKPOINTS}/{checkpoint_name(size)}")
            signed = open_checkpoint(data, self.log_keys(size - 1) if size > 0 else [])
        except OSError as e:
            out.error = f"cannot read: {e.strerror}"
            return out
        except NoteError as e:
            out.error = str(e)
            return out
        cp = signed.checkpoint
        out.raw, out.origin, out.cp_size, out.root = data, cp.origin, cp.size, cp.root
        return out

    # -- the log ---------------------------------------------------------------------------

    def read(self, rel: str) -> bytes | None:
        try:
            return _read(self.base + rel)
        except FileNotFoundError:
            return None
        except OSError as e:
            self.error(f"cannot read: {e.strerror}", path=rel)
            return None

    def run(self, *, packet: Mapping[str, Any] | None) -> Report:
        started = time.perf_counter()
        rels = self.scan()
        self.check_files(rels)
        leaves_data = self.read(LEAVES) or b""
        stored = split_leaves(leaves_data)
        torn = len(leaves_data) % HASH_SIZE
        pending = self.check_pending(stored, torn) if packet is None else None
        if packet is None:
            n = pending[1] if pending else len(stored)
            if torn and not pending:
                self.error(
                    f"{torn} stray bytes after leaf {len(stored) - 1} (truncated or appended to)", path=LEAVES
                )
            expected_seqs: range | list[int] = range(n)
        else:
            n = len(stored)
            if torn:
                self.error(f"{torn} stray bytes after the last leaf", path=LEAVES)
            expected_seqs = self.packet_seqs(packet)
        for rel in self.temp_dirs:
            if pending is None or not rel.endswith(f".{Path(pending[0].path).name}.tmp"):
                self.warn("leftover temporary directory of an interrupted append", path=rel)
        self.report.entries = n
        self.report.bundles = len(self.bundles)
        self.check_sequence(n, stored, expected_seqs)
        leaves = [
            self.bundles[i].leaf if i in self.bundles else (stored[i] if i < len(stored) else b"")
            for i in range(n)
        ]
        if b"" in leaves:
            leaves = leaves[: leaves.index(b"")]
        state_size = self.state_size() if packet is None else None
        frontiers = self.check_checkpoints(
            leaves,
            n,
            self.checkpoint_sizes(),
            complete=packet is None,
            pending=pending is not None,
            state_size=state_size,
        )
        if packet is None:
            self.check_state(
                frontiers.get(state_size) if state_size is not None else None, n, pending is not None
            )
        else:
            self.check_proofs(packet)
        self.check_attestations()
        self.report.duration_s = time.perf_counter() - started
        return self.report

    def check_files(self, rels: list[str]) -> None:
        """Check every bundle, on ``jobs`` threads when it pays; merge in order."""
        total = len(rels)
        if self.jobs <= 1 or total < _THREADED_MIN:
            for done, rel in enumerate(rels, 1):
                self.merge(self.check_bundle(rel), rel)
                if self.progress is not None and (done % 500 == 0 or done == total):
                    self.progress(done, total)
            return
        from concurrent.futures import ThreadPoolExecutor

        chunks = [rels[i : i + _CHUNK] for i in range(0, total, _CHUNK)]
        done = 0
        with ThreadPoolExecutor(max_workers=self.jobs, thread_name_prefix="verify") as pool:
            for chunk, results in zip(chunks, pool.map(self.check_bundles, chunks), strict=True):
                for rel, checked in zip(chunk, results, strict=True):
                    self.merge(checked, rel)
                done += len(chunk)
                if self.progress is not None:
                    self.progress(done, total)

    def state_size(self) -> int | None:
        sizes = state_sizes(self.root)
        return sizes[-1] if sizes else None

    def check_pending(self, stored: list[bytes], torn: int) -> tuple[Pending, int] | None:
        data = self.read(PENDING)
        if data is None:
            return None
        try:
            pending = Pending.parse(data)
        except ValueError as e:
            self.error(f"interrupted-append record is malformed: {e}", path=PENDING)
            return None
        if data != pending.to_bytes():
            self.error("not in the form the store writes (edited?)", path=PENDING)
        done = (
            pending.seq in self.bundles
            and self.bundles[pending.seq].envelope_sha256 == pending.envelope_sha256
        )
        n = pending.seq + 1 if done else pending.seq
        self.warn(
            f"the append of entry {pending.seq} was interrupted; the next open of the store will "
            + ("finish it" if done else "undo it"),
            seq=pending.seq,
            path=PENDING,
        )
        if len(stored) not in (pending.seq, pending.seq + 1) or (torn and len(stored) != pending.seq):
            self.error(
                f"{len(stored)} leaves do not fit an interrupted append of entry {pending.seq}", path=LEAVES
            )
        elif len(stored) == pending.seq + 1 and stored[-1].hex() != pending.leaf:
            self.error(f"leaf {pending.seq} differs from the interrupted append's", path=LEAVES)
        return pending, n

    def packet_seqs(self, packet: Mapping[str, Any]) -> list[int]:
        seqs = []
        entries = packet.get("entries", [])
        for item in entries if isinstance(entries, list) else []:
            seq = item.get("seq") if isinstance(item, dict) else None
            if not isinstance(seq, int):
                self.error("an entry without a sequence number", path=PACKET_FILE)
                continue
            seqs.append(seq)
            bundle = self.bundles.get(seq)
            if bundle is not None and (
                bundle.path != item.get("path") or bundle.envelope_sha256 != item.get("envelope_sha256")
            ):
                self.error("the packet's index does not match the bundle", seq=seq, path=bundle.path)
        listed = set(seqs)
        for seq, bundle in self.bundles.items():
            if seq not in listed:
                self.error("bundle is not listed in packet.json", seq=seq, path=bundle.path)
        return sorted(listed)

    def check_sequence(self, n: int, stored: list[bytes], expected: range | list[int]) -> None:
        expected_set = set(expected)
        for seq in sorted(set(self.bundles) - expected_set):
            if seq >= n:
                path = self.bundles[seq].path
                self.error(f"bundle claims entry {seq} but the log has {n} entries", seq=seq, path=path)
        prev_seq: int | None = None
        for seq in expected:
            b = self.bundles.get(seq)
            if b is None:
                self.error(
                    "bundle missing (the log has its leaf)" if seq < len(stored) else "bundle missing",
                    seq=seq,
                )
                prev_seq = None
                continue
            if seq < len(stored) and stored[seq] != b.leaf:
                self.error(f"the envelope does not match leaf {seq} in {LEAVES}", seq=seq, path=b.path)
            if (b.checkpoint is None) != (seq == 0):
                self.error("chain.checkpoint must name the checkpoint before the entry", seq=seq, path=b.path)
            if seq == 0:
                if b.prev != GENESIS_PREV:
                    self.error("the first entry's chain.prev is not all zeros", seq=seq, path=b.path)
            elif prev_seq == seq - 1 and b.prev != self.bundles[seq - 1].envelope_sha256:
                self.error(
                    f"chain.prev is not the sha256 of entry {seq - 1}'s envelope", seq=seq, path=b.path
                )
            prev_seq = seq

    def check_checkpoints(
        self,
        leaves: list[bytes],
        n: int,
        sizes: list[int],
        *,
        complete: bool,
        pending: bool,
        state_size: int | None,
    ) -> dict[int, Frontier]:
        """Compare every checkpoint with the tree recomputed from the leaves; returns the
        frontier at the append state's size (for :meth:`check_state`).

        The newest checkpoint (and any no statement commits to) is verified by the log
        key's signature. Every other one was committed to by the next entry's signed
        ``chain.checkpoint``, so its bytes are checked against that digest; with
        ``all_checkpoints`` every signature is verified as well."""
        wanted = set(sizes)
        roots: dict[int, bytes] = {}
        frontiers: dict[int, Frontier] = {}
        frontier = Frontier()
        if state_size == 0:
            frontiers[0] = frontier.copy()
        for leaf in leaves:
            frontier.append(leaf)
            if frontier.size in wanted:
                roots[frontier.size] = frontier.root()
            if frontier.size == state_size:
                frontiers[state_size] = frontier.copy()
        self.report.tree_size = len(leaves)
        self.report.root = frontier.root()
        if not sizes:
            if n and not (pending and n == 1):
                self.error("no checkpoint", path=CHECKPOINTS)
            return frontiers
        newest = sizes[-1]
        self.report.checkpoint_size = newest
        head = self.check_checkpoint_file(newest)
        origin = head.origin
        self.report.origin = origin
        mismatched: list[int] = []
        for size in reversed(sizes):
            rel = f"{CHECKPOINTS}/{checkpoint_name(size)}"
            committed = self.bundles[size].checkpoint if size in self.bundles else None
            if size == newest or committed is None or self.all_checkpoints:
                c = head if size == newest else self.check_checkpoint_file(size)
                if c.error is not None:
                    self.error(f"checkpoint: {c.error}", seq=size - 1, path=rel)
                    continue
                if c.origin != origin:
                    self.error(
                        f"origin {c.origin!r} differs from the newest checkpoint's {origin!r}", path=rel
                    )
                if c.cp_size != size:
                    self.error(
                        f"file name says tree size {size} but the checkpoint says {c.cp_size}", path=rel
                    )
                    continue
                if committed is not None and c.raw is not None and sha256(c.raw).hexdigest() != committed:
                    self.error(
                        f"differs from the checkpoint entry {size} committed to", seq=size - 1, path=rel
                    )
                    continue
                root = c.root
            else:
                try:
                    data = _read(self.base + rel)
                except OSError as e:
                    self.error(f"cannot read: {e.strerror}", seq=size - 1, path=rel)
                    continue
                if sha256(data).hexdigest() != committed:
                    self.error(
                        f"differs from the checkpoint entry {size} committed to (chain.checkpoint)",
                        seq=size - 1,
                        path=rel,
                    )
                    continue
                # The digest makes the bytes authentic; the text must still be the right head.
                lines = data.split(b"\n", 3)
                if len(lines) < 4 or lines[1] != str(size).encode():
                    self.error(f"not a checkpoint for tree size {size}", seq=size - 1, path=rel)
                    continue
                found_origin = lines[0].decode("utf-8", "replace")
                if origin is None:
                    origin = found_origin  # the newest one is unreadable; this one is authentic
                elif found_origin != origin:
                    self.error(
                        f"origin {found_origin!r} differs from the newest checkpoint's {origin!r}", path=rel
                    )
                try:
                    root = base64.b64decode(lines[2], validate=True)
                except ValueError:
                    root = None
            self.report.checkpoints_verified += 1
            if size > len(leaves):
                self.error(
                    f"checkpoint of tree size {size}, but the log has {len(leaves)} entries",
                    seq=size - 1,
                    path=rel,
                )
            elif roots.get(size) != root:
                mismatched.append(size)
        if mismatched:
            first = min(mismatched)
            more = f" (and {len(mismatched) - 1} later checkpoints)" if len(mismatched) > 1 else ""
            self.error(
                f"root hash does not match the log's first {first} entries{more}",
                seq=first - 1,
                path=f"{CHECKPOINTS}/{checkpoint_name(first)}",
            )
        if newest < n:
            if pending and newest == n - 1:
                self.warn(f"entry {n - 1} is not yet covered by a checkpoint", seq=n - 1)
            else:
                self.error(
                    f"the newest checkpoint covers {newest} entries, the log has {n}",
                    seq=newest,
                    path=CHECKPOINTS,
                )
        if complete:
            missing = [s for s in range(1, min(newest, n) + 1) if s not in wanted]
            if missing:
                self.error(
                    f"{len(missing)} checkpoint(s) missing, first for tree size {missing[0]}",
                    seq=missing[0] - 1,
                    path=f"{CHECKPOINTS}/{checkpoint_name(missing[0])}",
                )
        if self.pin is not None:
            self.check_pin(leaves, origin)
        return frontiers

    def check_pin(self, leaves: list[bytes], origin: str | None) -> None:
        assert self.pin is not None
        try:
            size = parse_checkpoint_text(parse_note(self.pin).text).size
            signed = open_checkpoint(self.pin, self.log_keys(size - 1) if size > 0 else [])
        except NoteError as e:
            self.error(f"pinned checkpoint: {e}", path="--pin-checkpoint")
            return
        cp = signed.checkpoint
        if origin is not None and cp.origin != origin:
            self.error(f"pinned checkpoint is for log {cp.origin!r}, not {origin!r}", path="--pin-checkpoint")
            return
        consistent = False
        if cp.size > len(leaves):
            self.error(
                f"the log has {len(leaves)} entries but the pinned checkpoint has {cp.size}: it was truncated",
                seq=len(leaves),
                path="--pin-checkpoint",
            )
        else:
            frontier = Frontier()
            frontier.extend(leaves[: cp.size])
            if frontier.root() != cp.root:
                self.error(
                    f"the log's first {cp.size} entries differ from the pinned checkpoint: history was rewritten",
                    path="--pin-checkpoint",
                )
            else:
                consistent = True
        self.report.pinned = {"size": cp.size, "consistent": consistent}

    def check_state(self, frontier: Frontier | None, n: int, pending: bool) -> None:
        sizes = state_sizes(self.root)
        if not sizes:
            if n:
                self.error("missing", path=STATE_DIR)
            return
        rel = f"{STATE_DIR}/{state_name(sizes[-1])}"
        if len(sizes) > 1 and not pending:
            self.error(f"{len(sizes)} state files, expected one", path=rel)
        data = self.read(rel) or b""
        try:
            state = parse_state(data)
        except ValueError as e:
            self.error(str(e), path=rel)
            return
        if data != state.to_bytes():
            # The store writes one canonical form; anything else was edited.
            self.error("not in the form the store writes (edited?)", path=rel)
        if state.size != sizes[-1]:
            self.error(f"records {state.size} entries, its name says {sizes[-1]}", path=rel)
            return
        if state.size != n and not (pending and state.size == n - 1):
            self.error(f"records {state.size} entries, the log has {n}", path=rel)
            return
        if frontier is None or frontier.hashes != state.frontier.hashes:
            self.error("the frontier does not match the log's leaves", path=rel)
        last = state.last
        if last is not None:
            b = self.bundles.get(last.seq)
            if b is None or (b.path, b.envelope_sha256, b.bundle_id) != (
                last.path,
                last.envelope_sha256,
                last.bundle_id,
            ):
                self.error(f"the last entry it records is not bundle {last.seq} of the log", path=rel)

    def check_proofs(self, packet: Mapping[str, Any]) -> None:
        root = self.report.root
        size = self.report.tree_size
        if packet.get("tree_size") != size:
            self.error(
                f"packet.json says tree size {packet.get('tree_size')}, the log has {size}", path=PACKET_FILE
            )
        if packet.get("origin") != self.report.origin:
            self.error(
                f"packet.json names log {packet.get('origin')!r}, the checkpoints {self.report.origin!r}",
                path=PACKET_FILE,
            )
        for seq, b in sorted(self.bundles.items()):
            rel = f"{PROOFS_DIR}/{seq}.json"
            data = self.read(rel)
            if data is None:
                self.error("inclusion proof missing", seq=seq, path=rel)
                continue
            try:
                proof = json.loads(data)
                path = [base64.b64decode(h, validate=True) for h in proof["inclusion_path"]]
                ok = (
                    proof["index"] == seq
                    and proof["tree_size"] == size
                    and root is not None
                    and verify_inclusion(b.leaf, seq, size, path, root)
                )
            except (ValueError, KeyError, TypeError):
                ok = False
            if not ok:
                self.error("inclusion proof does not verify against the newest checkpoint", seq=seq, path=rel)
            elif data != proof_document(seq, size, b.leaf, root or b"", path):
                self.error("not in the form nixcomply writes (edited?)", seq=seq, path=rel)
        index = [
            (seq, self.bundles[seq].path, self.bundles[seq].bundle_id, st)
            for seq, st in self.statements.items()
        ]
        if self.read(INDEX_FILE) != control_index(index):
            self.error("differs from the index recomputed from the packet's bundles", path=INDEX_FILE)

    def check_attestations(self) -> None:
        for control, (seq, expires, by, rel) in sorted(self.attestations.items()):
            if expires < self.today:
                self.warn(
                    f"attestation of {control} by {by} expired on {expires.isoformat()}", seq=seq, path=rel
                )


def verify_path(
    path: Path,
    keyring: Keyring | None,
    *,
    pin: bytes | None = None,
    today: date | None = None,
    progress: Progress | None = None,
    jobs: int | None = None,
    all_checkpoints: bool = False,
) -> Report:
    """Verify a store directory, an unpacked packet or a packet ``.zip``. Without a
    keyring, the one inside the directory or packet is used (the caller says so)."""
    import tempfile

    from nixcomply.evidence.keyring import load_keyring

    if path.is_file():
        from nixcomply.evidence.export import unpack

        with tempfile.TemporaryDirectory(prefix="nixcomply-packet-") as tmp:
            unpack(path, Path(tmp))
            report = verify_path(
                Path(tmp),
                keyring,
                pin=pin,
                today=today,
                progress=progress,
                jobs=jobs,
                all_checkpoints=all_checkpoints,
            )
            report.path = path
            return report
    if not path.is_dir():
        raise UsageError(f"{path}: no such directory or packet")
    if keyring is None:
        keyring = load_keyring(path / KEYRING)
    return verify(
        path, keyring, pin=pin, today=today, progress=progress, jobs=jobs, all_checkpoints=all_checkpoints
    )


def verify(
    path: Path,
    keyring: Keyring,
    *,
    pin: bytes | None = None,
    today: date | None = None,
    progress: Progress | None = None,
    jobs: int | None = None,
    all_checkpoints: bool = False,
) -> Report:
    """Verify a store or an unpacked packet directory (see the module docstring)."""
    import gc
    from datetime import UTC, datetime

    today = today or datetime.now(UTC).date()
    packet: dict[str, Any] | None = None
    packet_file = path / PACKET_FILE
    if packet_file.exists():
        try:
            packet = json.loads(packet_file.read_bytes())
        except ValueError as e:
            report = Report(kind="packet", path=path)
            report.errors.append(VerifyProblem("error", f"not JSON: {e}", None, PACKET_FILE))
            return report
        if not isinstance(packet, dict) or packet.get("format") != PACKET_FORMAT:
            report = Report(kind="packet", path=path)
            report.errors.append(VerifyProblem("error", f"not a {PACKET_FORMAT} packet", None, PACKET_FILE))
            return report
    verifier = _Verifier(
        path,
        keyring,
        kind="store" if packet is None else "packet",
        pin=pin,
        today=today,
        progress=progress,
        jobs=default_jobs() if jobs is None else jobs,
        all_checkpoints=all_checkpoints,
    )
    # Verification allocates many short-lived objects and no cycles; the cyclic
    # collector would only rescan the growing table of checked bundles.
    enabled = gc.isenabled()
    gc.disable()
    try:
        return verifier.run(packet=packet)
    finally:
        if enabled:
            gc.enable()
