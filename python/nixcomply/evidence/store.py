"""The evidence store on disk, and the one call the reconciler and runbooks make per event.

Layout under the store root (``--state-dir``, ``/var/lib/nixcomply`` on a host)::

    evidence/YYYY/MM/DD/<bundle_id>/      one bundle per event (date of observed_at, UTC)
        statement.json                    the in-toto statement: exactly the signed bytes
        envelope.dsse.json                the DSSE envelope over statement.json (one line)
        attachments/<name>                raw outputs, diffs; each a subject of the statement
    log/                                  the Merkle log and its checkpoints (nixcomply.evidence.log)
    keyring.json                          the public keys (nixcomply.evidence.keyring)
    scrub-salt                            the PHI scrubber's salt (secret, never exported)

Bundle ids are ``<observed_at as YYYYMMDDTHHMMSSZ>-<seq, 8+ digits>-<8 random hex>``:
sortable, and unique even across a store that was reset.

An append takes the lock, then: (1) writes ``log/pending.json`` naming the entry it is
about to add (sequence number, bundle path, envelope digest); (2) writes the bundle into a
hidden temporary directory beside its final place, fsyncs it and renames it into place;
(3) appends the leaf, (4) writes the new append state, (5) writes the new checkpoint and
(6) removes ``pending.json`` (``MerkleLog.commit``). Every step is atomic and durable
(temp file or directory, fsync, rename, fsync of the parent). A crash anywhere leaves
``pending.json`` behind, and the next :meth:`EvidenceStore.open` (under the lock) finishes
the entry if its bundle was completely written, or removes its traces if not: the store is
either the old one or the new one, never a mix, and an append that returned (was
*acknowledged*) is never lost. Appending costs O(log n): only the frontier of the tree is
read and written.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import secrets
import shutil
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from hashlib import sha256
from pathlib import Path
from types import TracebackType
from typing import Final, Protocol

from nixcomply.core.fsutil import ensure_dir, fsync_dir
from nixcomply.evidence import dsse, log
from nixcomply.evidence.keyring import Keyring, load_keyring
from nixcomply.evidence.keys import Signer, check_key_name
from nixcomply.evidence.log import LogHead, LogState, MerkleLog, Pending, StoreError
from nixcomply.evidence.merkle import leaf_hash
from nixcomply.evidence.scrub import Scrubber, load_or_create_salt, merge_counts
from nixcomply.evidence.statement import (
    GENESIS_PREV,
    Chain,
    KeyRole,
    Predicate,
    Statement,
    Subject,
    make_statement,
    parse_statement,
    scrub_free_text,
    statement_bytes,
)

logger = logging.getLogger(__name__)

EVIDENCE_DIR: Final = "evidence"
KEYRING: Final = "keyring.json"
SALT: Final = "scrub-salt"
STATEMENT_FILE: Final = "statement.json"
ENVELOPE_FILE: Final = "envelope.dsse.json"
ATTACHMENTS_DIR: Final = "attachments"

ATTACHMENT_NAME: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class HeadRecord(Protocol):
    """Somewhere outside the store that remembers how far its log reached (the host's state
    database: ``nixcomply.host.state.EvidenceHead``). The store records the head after every
    append and refuses to open a log that is shorter than what was recorded, and ``evidence
    verify`` fails one: a store rolled back or cut short is noticed even without a pin."""

    def evidence_head(self) -> LogHead | None: ...

    def record_evidence_head(self, head: LogHead) -> None: ...


@dataclass(frozen=True)
class Recorded:
    """What an append returns once the entry is durable and covered by a checkpoint."""

    seq: int
    bundle_id: str
    path: Path
    envelope_sha256: str
    checkpoint_size: int
    redactions: Mapping[str, int] = field(default_factory=dict)


@contextlib.contextmanager
def read_locked(root: Path) -> Iterator[None]:
    """Hold the store's append lock shared, so that no append changes the store while it is
    read (export packs exactly what it verified); appends wait, other readers do not."""
    try:
        fd = os.open(root / log.LOCK, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise StoreError(f"{root / log.LOCK}: missing; is {root} an evidence store?") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)


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
        head: HeadRecord | None = None,
    ) -> None:
        self.root = root
        self.signer = signer
        self.log_signer = log_signer
        self.origin = origin
        self.durable = durable
        self.scrubber = scrubber
        self._lock_fd = lock_fd
        self._lock_depth = 0
        self._thread_lock = threading.RLock()
        self._keyring_seen: tuple[int, int] | None = None
        self._keyring: Keyring | None = None
        self.head = head
        self.log = MerkleLog(root, origin=origin, durable=durable)

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
        head: HeadRecord | None = None,
    ) -> EvidenceStore:
        """Open (creating directories if needed) and finish any interrupted append. With
        ``head``, a log shorter than the recorded head is refused (:class:`StoreError`)."""
        check_key_name(origin)
        root = root.absolute()
        for sub in (EVIDENCE_DIR, log.LOG_DIR, log.CHECKPOINTS, log.STATE_DIR):
            ensure_dir(root / sub)
        if scrubber is None:
            scrubber = Scrubber(load_or_create_salt(root / SALT))
        fd = os.open(root / log.LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        store = cls(
            root, signer, log_signer, origin=origin, durable=durable, scrubber=scrubber, lock_fd=fd, head=head
        )
        try:
            with store.locked():
                store._sweep()
                store._check_head(store._recover())
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

    def last_seq(self) -> int | None:
        """The sequence number of the newest entry, or None for an empty store."""
        last = self.tail()
        return None if last is None else last.seq

    def tail(self) -> Recorded | None:
        """The newest entry (as :class:`Recorded`), or None for an empty store."""
        state = self.log.read_state()
        if state.last is None:
            return None
        return Recorded(
            state.last.seq,
            state.last.bundle_id,
            self.root / state.last.path,
            state.last.envelope_sha256,
            state.size,
        )

    def tail_statement(self) -> Statement | None:
        """The newest entry's statement, parsed; None for an empty store or one whose newest
        statement cannot be read back (that is for ``evidence verify`` to report)."""
        last = self.tail()
        if last is None:
            return None
        try:
            return parse_statement((last.path / STATEMENT_FILE).read_bytes())
        except (OSError, ValueError) as e:
            logger.warning("cannot read back the newest evidence statement (%s): %s", last.path, e)
            return None

    def check_keys(self) -> None:
        """Raise :class:`StoreError` unless both keys may sign the next entry (the keyring
        lists the bundle key and the log key, valid for it): a caller that is about to change
        something checks first, so it never acts and then cannot record what it did."""
        with self.locked():
            self._check_keys(self.log.read_state().size)

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

        with self.locked():
            state = self._recover()
            seq = state.size
            self._check_keys(seq)
            prev = state.last.envelope_sha256 if state.last else GENESIS_PREV
            t = scrubbed.observed_at
            bundle_id = f"{t:%Y%m%dT%H%M%SZ}-{seq:08d}-{secrets.token_hex(4)}"
            chain = Chain(seq=seq, prev=prev, checkpoint=self.log.checkpoint_digest(seq))
            filled = scrubbed.model_copy(update={"bundle_id": bundle_id, "chain": chain})
            payload = statement_bytes(make_statement(filled, all_subjects))
            envelope = dsse.sign(payload, [self.signer, *cosigners]).to_bytes()
            env_sha = sha256(envelope).hexdigest()
            relpath = bundle_relpath(filled, bundle_id)
            pending = Pending(seq, relpath, bundle_id, env_sha, leaf_hash(envelope).hex())
            self.log.write_pending(pending)
            log.fault("pending")
            self._write_bundle(relpath, payload, envelope, files)
            log.fault("bundle")
            self.log.commit(state, pending, [self.log_signer, *log_cosigners])
            if self.head is not None:
                self.head.record_evidence_head(LogHead(seq + 1, self.log.checkpoint_digest(seq + 1)))
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
                log.fault("attachment")
            if self.durable:
                fsync_dir(tmp / ATTACHMENTS_DIR)
        self._write_new(tmp / ENVELOPE_FILE, envelope)
        if self.durable:
            fsync_dir(tmp)
        log.fault("bundle-written")
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

    def _check_keys(self, seq: int) -> None:
        """Refuse to sign with a key the store's own keyring does not trust for ``seq``:
        evidence an auditor would reject is worse than a loud failure (typically the key
        file was not switched after a rotation)."""
        path = self.root / KEYRING
        try:
            st = path.stat()
        except FileNotFoundError:
            return
        seen = (st.st_mtime_ns, st.st_size)
        if self._keyring is None or self._keyring_seen != seen:
            self._keyring = load_keyring(path)
            self._keyring_seen = seen
        for role, signer in ((KeyRole.BUNDLE, self.signer), (KeyRole.LOG, self.log_signer)):
            if signer.public not in self._keyring.valid_keys(role, seq):
                entry = self._keyring.entry_for(signer.public, role)
                why = (
                    "is not in it"
                    if entry is None
                    else f"is {entry.status.value}, valid for entries {entry.valid_from}..{entry.valid_until}"
                )
                raise StoreError(
                    f"{path}: the {role.value} key {signer.public.name}+{signer.key_id_hex} {why}; "
                    f"it may not sign entry {seq}",
                    hint="after a rotation, point the service at the new key",
                )

    def _check_head(self, state: LogState) -> None:
        recorded = self.head.evidence_head() if self.head is not None else None
        if recorded is not None and recorded.size > state.size:
            raise StoreError(
                f"{self.root / log.LOG_DIR}: the log has {state.size} entries, but the state database "
                f"recorded {recorded.size}: evidence was removed or the store rolled back",
                hint=f"do not append to it; run `nixcomply evidence verify {self.root}` and restore the evidence",
            )

    def _sweep(self) -> None:
        """Remove the temporary files of atomic writes that a crash interrupted (on open,
        with the lock held: nobody else is writing them; an O(n) listing, so not per append)."""
        for rel in log.SWEPT:
            with contextlib.suppress(FileNotFoundError):
                for entry in os.scandir(self.root / rel):
                    if log.LEFTOVER.match(entry.name) and entry.is_file(follow_symlinks=False):
                        logger.warning("removing %s, left by an interrupted write", entry.path)
                        os.unlink(entry.path)

    def _recover(self) -> LogState:
        """Finish or undo an interrupted append (call with the lock held).

        The intent record names the entry. If its state was already written, only the
        checkpoint may be missing; if its bundle is complete on disk (the envelope has the
        recorded digest), the entry is finished; otherwise its traces are removed.
        """
        state = self.log.read_state()
        pending = self.log.read_pending()
        if pending is None:
            self.log.check_leaves(state)
            return state
        if state.size == pending.seq + 1:
            if state.last is None or state.last.envelope_sha256 != pending.envelope_sha256:
                raise StoreError(
                    f"{self.root / log.PENDING}: names entry {pending.seq}, "
                    "which the append state records differently"
                )
            logger.warning("finishing the interrupted append of entry %d (checkpoint)", pending.seq)
            return self.log.commit(state, pending, [self.log_signer])
        if state.size != pending.seq:
            raise StoreError(
                f"{self.root / log.PENDING}: names entry {pending.seq} but the log has {state.size}"
            )
        bundle = self.root / pending.path
        complete = False
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            complete = sha256((bundle / ENVELOPE_FILE).read_bytes()).hexdigest() == pending.envelope_sha256
        if complete:
            logger.warning("finishing the interrupted append of entry %d (%s)", pending.seq, pending.path)
            return self.log.commit(state, pending, [self.log_signer])
        logger.warning("rolling back the interrupted append of entry %d (%s)", pending.seq, pending.path)
        for leftover in (bundle.parent / f".{bundle.name}.tmp", bundle):
            if leftover.exists():
                shutil.rmtree(leftover)
        self.log.rollback(state)
        return state

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the append lock (re-entrant): key rotation keeps it across its entry and
        the keyring update so no other append slips in between. flock(2) serialises
        processes; threads of this process share the lock's file description, so a
        thread lock serialises them first."""
        with self._thread_lock:
            if self._lock_fd < 0:
                raise ValueError("the store is closed")
            if self._lock_depth:
                self._lock_depth += 1
                try:
                    yield
                finally:
                    self._lock_depth -= 1
                return
            try:
                fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                # Wait in the kernel, not in a sleep loop: a waiter blocked in flock(2) is
                # woken when the lock is released, so a busy appender cannot starve others.
                logger.debug("waiting for %s", self.root / log.LOCK)
                fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
            self._lock_depth = 1
            try:
                yield
            finally:
                self._lock_depth = 0
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
