"""The evidence store on disk, and the one call the reconciler and runbooks make per event.

Layout under the store root (``--state-dir``, ``/var/lib/nixcomply`` on a host)::

    evidence/YYYY/MM/DD/<bundle_id>/      one bundle per event (date of observed_at, UTC)
        statement.json                    the in-toto statement: exactly the signed bytes
        envelope.dsse.json                the DSSE envelope over statement.json (one line)
        attachments/<name>                raw outputs, diffs; each a subject of the statement
    log/leaves                            the Merkle log: leaf hash i (32 bytes) at offset 32*i,
                                          leaf = SHA-256(0x00 || bytes of envelope.dsse.json)
    log/state/<size, 12 digits>.json      append state at the newest size (one file): frontier,
                                          root, last entry
    log/checkpoints/<size, 12 digits>     a C2SP checkpoint per tree size, every one kept
    log/pending.json                      only while an append is in flight (intent record)
    log/append.lock                       flock(2) lock serialising appenders
    keyring.json                          the public keys (nixcomply.evidence.keyring)
    scrub-salt                            the PHI scrubber's salt (secret, never exported)

Bundle ids are ``<observed_at as YYYYMMDDTHHMMSSZ>-<seq, 8+ digits>-<8 random hex>``:
sortable, unique even across a reset store. The append state is::

    {"version": 1, "size": 18, "root": "<hex>", "frontier": ["<hex>", ...],
     "last": {"seq": 17, "bundle_id": "...", "path": "evidence/...", "envelope_sha256": "<hex>"}}

An append takes the lock, then: (1) writes ``pending.json`` naming the entry it is about
to add (sequence number, bundle path, envelope digest); (2) writes the bundle into a
hidden temporary directory, fsyncs it and renames it into place; (3) appends the leaf;
(4) writes the state for the new size and removes the old one (a new name each time:
replacing one file in place makes ext4 flush it synchronously on every append); (5) writes the new checkpoint; (6) removes ``pending.json``.
Every step is atomic and durable (``nixcomply.fsutil``: temp file, fsync, rename, fsync
directory). A crash anywhere leaves ``pending.json`` behind, and the next ``open`` (under
the lock) finishes the entry if its bundle was completely written, or removes its traces
if not — so the log is either the old one or the new one, never a mix, and an append
that returned (was *acknowledged*) is never lost. Appending costs O(log n): only the
frontier is read and written, never the whole tree.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import re
import secrets
import shutil
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from hashlib import sha256
from pathlib import Path
from types import TracebackType
from typing import Final

from nixcomply.errors import LockHeldError, NixcomplyError
from nixcomply.evidence import dsse
from nixcomply.evidence.checkpoint import Checkpoint
from nixcomply.evidence.keys import Signer, check_key_name
from nixcomply.evidence.merkle import Frontier, leaf_hash
from nixcomply.evidence.statement import (
    GENESIS_PREV,
    Chain,
    Predicate,
    Subject,
    make_statement,
    scrub_free_text,
    statement_bytes,
)
from nixcomply.fsutil import atomic_write, ensure_dir, fsync_dir
from nixcomply.scrub import Scrubber, load_or_create_salt, merge_counts

logger = logging.getLogger(__name__)

EVIDENCE_DIR: Final = "evidence"
LOG_DIR: Final = "log"
LEAVES: Final = "log/leaves"
STATE_DIR: Final = "log/state"
CHECKPOINTS: Final = "log/checkpoints"
PENDING: Final = "log/pending.json"
LOCK: Final = "log/append.lock"
KEYRING: Final = "keyring.json"
SALT: Final = "scrub-salt"
STATEMENT_FILE: Final = "statement.json"
ENVELOPE_FILE: Final = "envelope.dsse.json"
ATTACHMENTS_DIR: Final = "attachments"
HASH_SIZE: Final = 32
LOCK_TIMEOUT_S: Final = 60.0

ATTACHMENT_NAME: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
BUNDLE_PATH: Final = re.compile(r"^evidence/\d{4}/\d{2}/\d{2}/[0-9A-Za-z-]+$")

# Tests set this to kill the process at a named step of an append (crash testing).
FAULT_HOOK: Callable[[str], None] | None = None


def _fault(step: str) -> None:
    if FAULT_HOOK is not None:
        FAULT_HOOK(step)


class StoreError(NixcomplyError):
    """The store's files contradict each other in a way no crash can produce (tampering or
    disk corruption); appending stops and ``nixcomply evidence verify`` says where."""


def checkpoint_name(size: int) -> str:
    return f"{size:012d}"


def state_name(size: int) -> str:
    return f"{size:012d}.json"


def state_sizes(root: Path) -> list[int]:
    """The sizes of the state files present (normally one; two after a crash mid-commit)."""
    sizes = []
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(root / STATE_DIR):
            stem, dot, ext = entry.name.partition(".")
            if dot and ext == "json" and len(stem) == 12 and stem.isdigit():
                sizes.append(int(stem))
    return sorted(sizes)


@dataclass(frozen=True)
class Recorded:
    """What an append returns once the entry is durable and covered by a checkpoint."""

    seq: int
    bundle_id: str
    path: Path
    envelope_sha256: str
    checkpoint_size: int
    redactions: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class LastEntry:
    seq: int
    bundle_id: str
    path: str
    envelope_sha256: str

    def to_json(self) -> dict[str, object]:
        return {
            "seq": self.seq,
            "bundle_id": self.bundle_id,
            "path": self.path,
            "envelope_sha256": self.envelope_sha256,
        }


@dataclass
class LogState:
    frontier: Frontier
    last: LastEntry | None

    @property
    def size(self) -> int:
        return self.frontier.size

    def to_bytes(self) -> bytes:
        data = {
            "version": 1,
            "size": self.size,
            "root": self.frontier.root().hex(),
            "frontier": [h.hex() for h in self.frontier.hashes],
            "last": self.last.to_json() if self.last else None,
        }
        return (json.dumps(data) + "\n").encode()


def parse_state(data: bytes) -> LogState:
    """Parse an append state file (``log/state/<size>.json``); raises ``ValueError`` saying what is wrong."""
    try:
        obj = json.loads(data)
        size = obj["size"]
        frontier = Frontier(size, [bytes.fromhex(h) for h in obj["frontier"]])
        if frontier.root().hex() != obj["root"]:
            raise ValueError("root does not match the frontier")
        last_obj = obj["last"]
        last = None
        if last_obj is not None:
            last = LastEntry(
                int(last_obj["seq"]),
                str(last_obj["bundle_id"]),
                str(last_obj["path"]),
                str(last_obj["envelope_sha256"]),
            )
        if (last is None) != (size == 0) or (last is not None and last.seq != size - 1):
            raise ValueError("last entry does not match the size")
    except (KeyError, TypeError, json.JSONDecodeError) as e:
        raise ValueError(f"malformed: {e}") from None
    return LogState(frontier, last)


@dataclass(frozen=True)
class Pending:
    seq: int
    path: str
    bundle_id: str
    envelope_sha256: str
    leaf: str

    def to_bytes(self) -> bytes:
        return (json.dumps(self.__dict__) + "\n").encode()

    @classmethod
    def parse(cls, data: bytes) -> Pending:
        try:
            obj = json.loads(data)
            pending = cls(
                int(obj["seq"]),
                str(obj["path"]),
                str(obj["bundle_id"]),
                str(obj["envelope_sha256"]),
                str(obj["leaf"]),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"malformed: {e}") from None
        if not BUNDLE_PATH.match(pending.path):
            raise ValueError(f"bad bundle path {pending.path!r}")
        return pending


def bundle_relpath(predicate: Predicate, bundle_id: str) -> str:
    t = predicate.observed_at
    return f"{EVIDENCE_DIR}/{t:%Y}/{t:%m}/{t:%d}/{bundle_id}"


class EvidenceStore:
    """An open evidence store. Use :meth:`open`; every :meth:`append` is safe against other
    processes appending at the same time (they are serialised by an exclusive flock)."""

    def __init__(
        self,
        root: Path,
        signer: Signer,
        log_signer: Signer,
        *,
        origin: str,
        durable: bool,
        scrubber: Scrubber,
        lock_fd: int,
    ) -> None:
        self.root = root
        self.signer = signer
        self.log_signer = log_signer
        self.origin = origin
        self.durable = durable
        self.scrubber = scrubber
        self._lock_fd = lock_fd

    @classmethod
    def open(
        cls,
        root: Path,
        signer: Signer,
        log_signer: Signer,
        *,
        origin: str,
        durable: bool = True,
        scrubber: Scrubber | None = None,
    ) -> EvidenceStore:
        """Open (creating directories if needed) and finish any interrupted append."""
        check_key_name(origin)
        root = root.absolute()
        for sub in (EVIDENCE_DIR, LOG_DIR, CHECKPOINTS, STATE_DIR):
            ensure_dir(root / sub)
        if scrubber is None:
            scrubber = Scrubber(load_or_create_salt(root / SALT))
        fd = os.open(root / LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        store = cls(root, signer, log_signer, origin=origin, durable=durable, scrubber=scrubber, lock_fd=fd)
        try:
            with store._locked():
                store._recover()
        except BaseException:
            store.close()
            raise
        return store

    def close(self) -> None:
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    def __enter__(self) -> EvidenceStore:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- reading -----------------------------------------------------------------------

    def _read_state(self) -> LogState:
        sizes = state_sizes(self.root)
        if not sizes:
            return LogState(Frontier(), None)
        path = self.root / STATE_DIR / state_name(sizes[-1])
        data = path.read_bytes()
        try:
            return parse_state(data)
        except ValueError as e:
            raise StoreError(f"{path}: {e}") from None

    def last_seq(self) -> int | None:
        """The sequence number of the newest entry, or None for an empty store."""
        last = self.tail()
        return None if last is None else last.seq

    def tail(self) -> Recorded | None:
        """The newest entry (as :class:`Recorded`), or None for an empty store."""
        state = self._read_state()
        if state.last is None:
            return None
        return Recorded(
            state.last.seq,
            state.last.bundle_id,
            self.root / state.last.path,
            state.last.envelope_sha256,
            state.size,
        )

    # -- appending ---------------------------------------------------------------------

    def append(
        self,
        predicate: Predicate,
        *,
        subjects: Sequence[Subject] = (),
        attachments: Mapping[str, bytes] | None = None,
        cosigners: Sequence[Signer] = (),
        log_cosigners: Sequence[Signer] = (),
    ) -> Recorded:
        """Scrub, sign and durably record one event; returns once a checkpoint covers it.

        ``predicate.chain`` and ``predicate.bundle_id`` are filled in here. Attachments
        (UTF-8 text is scrubbed like every other free text) become subjects by sha256.
        ``cosigners`` add signatures to the envelope and ``log_cosigners`` to the checkpoint
        covering it (key rotation: the old and the new key both sign).
        """
        if predicate.chain is not None or predicate.bundle_id is not None:
            raise ValueError("leave chain and bundle_id unset: the store assigns them")
        attachments = attachments or {}
        scrubbed, counts = scrub_free_text(predicate, self.scrubber)
        all_counts = [counts]
        files: dict[str, bytes] = {}
        all_subjects = list(subjects)
        for name, data in sorted(attachments.items()):
            if not ATTACHMENT_NAME.match(name):
                raise ValueError(f"attachment name {name!r}: use letters, digits, '.', '_' and '-'")
            clean, c = self.scrubber.scrub_bytes(data)
            all_counts.append(c)
            files[name] = clean
            all_subjects.append(
                Subject(name=f"{ATTACHMENTS_DIR}/{name}", digest={"sha256": sha256(clean).hexdigest()})
            )
        if not all_subjects:
            raise ValueError("a statement needs at least one subject or attachment")
        names = [s.name for s in all_subjects]
        if len(set(names)) != len(names):
            raise ValueError("two subjects have the same name")

        with self._locked():
            state = self._recover()
            seq = state.size
            prev = state.last.envelope_sha256 if state.last else GENESIS_PREV
            t = scrubbed.observed_at
            bundle_id = f"{t:%Y%m%dT%H%M%SZ}-{seq:08d}-{secrets.token_hex(4)}"
            filled = scrubbed.model_copy(update={"bundle_id": bundle_id, "chain": Chain(seq=seq, prev=prev)})
            payload = statement_bytes(make_statement(filled, all_subjects))
            envelope = dsse.sign(payload, [self.signer, *cosigners]).to_bytes()
            env_sha = sha256(envelope).hexdigest()
            relpath = bundle_relpath(filled, bundle_id)
            pending = Pending(seq, relpath, bundle_id, env_sha, leaf_hash(envelope).hex())
            atomic_write(self.root / PENDING, pending.to_bytes(), durable=self.durable)
            _fault("pending")
            self._write_bundle(relpath, payload, envelope, files)
            _fault("bundle")
            self._commit(state, pending, [self.log_signer, *log_cosigners])
        logger.debug("evidence entry %d recorded at %s", seq, relpath)
        return Recorded(seq, bundle_id, self.root / relpath, env_sha, seq + 1, merge_counts(all_counts))

    def _write_bundle(
        self, relpath: str, payload: bytes, envelope: bytes, files: Mapping[str, bytes]
    ) -> None:
        final = self.root / relpath
        day = final.parent
        ensure_dir(day)
        tmp = day / f".{final.name}.tmp"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        self._write_new(tmp / STATEMENT_FILE, payload)
        if files:
            (tmp / ATTACHMENTS_DIR).mkdir()
            for name, data in files.items():
                self._write_new(tmp / ATTACHMENTS_DIR / name, data)
                _fault("attachment")
            if self.durable:
                fsync_dir(tmp / ATTACHMENTS_DIR)
        self._write_new(tmp / ENVELOPE_FILE, envelope)
        if self.durable:
            fsync_dir(tmp)
        _fault("bundle-written")
        os.rename(tmp, final)
        if self.durable:
            fsync_dir(day)

    def _write_new(self, path: Path, data: bytes) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            if self.durable:
                os.fsync(fd)
        finally:
            os.close(fd)

    def _commit(self, state: LogState, pending: Pending, log_signers: Sequence[Signer]) -> LogState:
        """Steps 3–6 of an append (also run by recovery): leaf, state, checkpoint, done."""
        seq = pending.seq
        leaf = bytes.fromhex(pending.leaf)
        leaves = self.root / LEAVES
        fd = os.open(leaves, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            size = os.fstat(fd).st_size
            if size == HASH_SIZE * (seq + 1):
                if os.pread(fd, HASH_SIZE, HASH_SIZE * seq) != leaf:
                    raise StoreError(f"{leaves}: leaf {seq} differs from the interrupted append's")
            elif HASH_SIZE * seq <= size < HASH_SIZE * (seq + 1):
                # A torn write of this very leaf: the bytes beyond the last whole leaf are ours.
                os.ftruncate(fd, HASH_SIZE * seq)
                os.pwrite(fd, leaf, HASH_SIZE * seq)
                if self.durable:
                    os.fsync(fd)
            else:
                raise StoreError(
                    f"{leaves}: holds {size // HASH_SIZE} leaves (+{size % HASH_SIZE} bytes), "
                    f"expected {seq} or {seq + 1}"
                )
        finally:
            os.close(fd)
        _fault("leaf")
        if state.size == seq:
            state.frontier.append(leaf)
            state.last = LastEntry(seq, pending.bundle_id, pending.path, pending.envelope_sha256)
            self._write_state(state)
        _fault("state")
        note = Checkpoint(self.origin, state.size, state.frontier.root()).sign(log_signers)
        atomic_write(self.root / CHECKPOINTS / checkpoint_name(state.size), note, durable=self.durable)
        _fault("checkpoint")
        os.unlink(self.root / PENDING)
        if self.durable:
            fsync_dir(self.root / LOG_DIR)
        return state

    def _write_state(self, state: LogState) -> None:
        directory = self.root / STATE_DIR
        atomic_write(directory / state_name(state.size), state.to_bytes(), durable=self.durable)
        for size in state_sizes(self.root):
            if size != state.size:
                (directory / state_name(size)).unlink()

    def _recover(self) -> LogState:
        """Finish or undo an interrupted append (call with the lock held)."""
        state = self._read_state()
        pending_path = self.root / PENDING
        try:
            data = pending_path.read_bytes()
        except FileNotFoundError:
            self._check_leaves(state)
            return state
        try:
            pending = Pending.parse(data)
        except ValueError as e:
            raise StoreError(f"{pending_path}: {e}") from None
        if state.size == pending.seq + 1:
            if state.last is None or state.last.envelope_sha256 != pending.envelope_sha256:
                raise StoreError(
                    f"{pending_path}: names entry {pending.seq}, which the append state records differently"
                )
            logger.warning("finishing the interrupted append of entry %d (checkpoint)", pending.seq)
            return self._commit(state, pending, [self.log_signer])
        if state.size != pending.seq:
            raise StoreError(f"{pending_path}: names entry {pending.seq} but the log has {state.size}")
        bundle = self.root / pending.path
        envelope = bundle / ENVELOPE_FILE
        complete = False
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            complete = sha256(envelope.read_bytes()).hexdigest() == pending.envelope_sha256
        if complete:
            logger.warning("finishing the interrupted append of entry %d (%s)", pending.seq, pending.path)
            return self._commit(state, pending, [self.log_signer])
        logger.warning("rolling back the interrupted append of entry %d (%s)", pending.seq, pending.path)
        tmp = bundle.parent / f".{bundle.name}.tmp"
        for leftover in (tmp, bundle):
            if leftover.exists():
                shutil.rmtree(leftover)
        leaves = self.root / LEAVES
        with contextlib.suppress(FileNotFoundError):
            if leaves.stat().st_size > HASH_SIZE * state.size:
                os.truncate(leaves, HASH_SIZE * state.size)
        pending_path.unlink()
        if self.durable:
            fsync_dir(self.root / LOG_DIR)
        return state

    def _check_leaves(self, state: LogState) -> None:
        try:
            size = (self.root / LEAVES).stat().st_size
        except FileNotFoundError:
            size = 0
        if size != HASH_SIZE * state.size:
            raise StoreError(
                f"{self.root / LEAVES}: {size} bytes, but the append state records {state.size} entries",
                hint="run `nixcomply evidence verify` on the store to find out what changed",
            )

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        if self._lock_fd < 0:
            raise ValueError("the store is closed")
        deadline = time.monotonic() + LOCK_TIMEOUT_S
        while True:
            try:
                fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as e:
                if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise
                if time.monotonic() > deadline:
                    raise LockHeldError(f"{self.root / LOCK}: another process keeps appending") from None
                time.sleep(0.005)
        try:
            yield
        finally:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)


def read_leaves(root: Path) -> list[bytes]:
    data = (root / LEAVES).read_bytes()
    return [data[i : i + HASH_SIZE] for i in range(0, len(data) - len(data) % HASH_SIZE, HASH_SIZE)]
