"""The append-only Merkle log of the evidence store: leaves, append state, checkpoints, and
the intent record that makes an append recoverable after a crash.

Files under ``<root>/log/``::

    leaves                      leaf hash i (32 raw bytes) at offset 32*i, nothing else;
                                leaf = SHA-256(0x00 || bytes of the entry's envelope.dsse.json)
    state/<size, 12 digits>.json  the append state at the newest size (normally one file):
        {"version": 1, "size": 18, "root": "<hex>", "frontier": ["<hex>", ...],
         "last": {"seq": 17, "bundle_id": "...", "path": "evidence/...", "envelope_sha256": "<hex>"}}
    checkpoints/<size, 12 digits>  the C2SP checkpoint of the tree at that size; every one is
                                kept (nixcomply.evidence.checkpoint)
    pending.json                the entry being appended, only while an append is in flight:
        {"seq": 17, "path": "evidence/...", "bundle_id": "...", "envelope_sha256": "<hex>",
         "leaf": "<hex>"}
    append.lock                 flock(2) lock serialising appenders (empty)

The frontier (``nixcomply.evidence.merkle.Frontier``) is what keeps an append O(log n):
the state file holds it, so appending reads and writes O(log n) hashes and never the whole
tree. The state is written under a new name for each size and the previous one removed
afterwards, because replacing a file in place makes ext4 flush it synchronously
(``auto_da_alloc``) even when durability was not asked for.

:meth:`MerkleLog.commit` performs the log's part of an append in crash-safe order — leaf,
new state, removal of the old state, checkpoint, then removal of ``pending.json`` — and is
idempotent: after a crash at any point, running it again with the same intent record
completes the entry. The state and intent files are written in exactly the form shown
(``json.dumps`` defaults, one line); verify treats any other spelling as an edit.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from nixcomply.core.fsutil import atomic_write, fsync_dir
from nixcomply.errors import NixcomplyError
from nixcomply.evidence.checkpoint import Checkpoint
from nixcomply.evidence.keys import Signer
from nixcomply.evidence.merkle import Frontier

LOG_DIR: Final = "log"
LEAVES: Final = "log/leaves"
STATE_DIR: Final = "log/state"
CHECKPOINTS: Final = "log/checkpoints"
PENDING: Final = "log/pending.json"
LOCK: Final = "log/append.lock"
HASH_SIZE: Final = 32
BUNDLE_PATH: Final = re.compile(r"^evidence/\d{4}/\d{2}/\d{2}/[0-9A-Za-z-]+$")

# Tests set this to kill the process at a named step of an append (crash testing).
FAULT_HOOK: Callable[[str], None] | None = None


def fault(step: str) -> None:
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


def split_leaves(data: bytes) -> list[bytes]:
    return [data[i : i + HASH_SIZE] for i in range(0, len(data) - len(data) % HASH_SIZE, HASH_SIZE)]


def read_leaves(root: Path) -> list[bytes]:
    """Every whole leaf hash of the log under ``root`` (an empty list for no log)."""
    try:
        return split_leaves((root / LEAVES).read_bytes())
    except FileNotFoundError:
        return []


class MerkleLog:
    """The log files of one store root. Callers hold the store's append lock."""

    def __init__(self, root: Path, *, origin: str, durable: bool) -> None:
        self.root = root
        self.origin = origin
        self.durable = durable

    def read_state(self) -> LogState:
        # Readers without the lock (tail()) can see a state file vanish between listing and
        # reading when an append replaces it; the next listing has the new one.
        for _attempt in range(5):
            sizes = state_sizes(self.root)
            if not sizes:
                return LogState(Frontier(), None)
            path = self.root / STATE_DIR / state_name(sizes[-1])
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                continue
            try:
                return parse_state(data)
            except ValueError as e:
                raise StoreError(f"{path}: {e}") from None
        raise StoreError(f"{self.root / STATE_DIR}: the append state keeps changing")

    def read_pending(self) -> Pending | None:
        path = self.root / PENDING
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            return Pending.parse(data)
        except ValueError as e:
            raise StoreError(f"{path}: {e}") from None

    def checkpoint_digest(self, size: int) -> str | None:
        """sha256 of the checkpoint file of ``size`` (None for the empty tree): the next
        entry commits to it (``chain.checkpoint``)."""
        if size == 0:
            return None
        path = self.root / CHECKPOINTS / checkpoint_name(size)
        try:
            return hashlib.sha256(path.read_bytes()).hexdigest()
        except FileNotFoundError:
            raise StoreError(f"{path}: missing; the log's newest checkpoint is gone") from None

    def write_pending(self, pending: Pending) -> None:
        atomic_write(self.root / PENDING, pending.to_bytes(), durable=self.durable)

    def check_leaves(self, state: LogState) -> None:
        """Without an append in flight, the leaves file holds exactly the state's leaves."""
        try:
            size = (self.root / LEAVES).stat().st_size
        except FileNotFoundError:
            size = 0
        if size != HASH_SIZE * state.size:
            raise StoreError(
                f"{self.root / LEAVES}: {size} bytes, but the append state records {state.size} entries",
                hint="run `nixcomply evidence verify` on the store to find out what changed",
            )

    def commit(self, state: LogState, pending: Pending, signers: Sequence[Signer]) -> LogState:
        """Add ``pending``'s leaf, the new state and checkpoint, then drop the intent record.
        Idempotent: each step checks whether an interrupted run already did it."""
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
                # Empty, or a torn write of this very leaf: bytes past the last whole leaf are ours.
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
        fault("leaf")
        if state.size == seq:
            state.frontier.append(leaf)
            state.last = LastEntry(seq, pending.bundle_id, pending.path, pending.envelope_sha256)
            atomic_write(
                self.root / STATE_DIR / state_name(state.size), state.to_bytes(), durable=self.durable
            )
        fault("state")
        # Also after a crash between writing the new state and removing the old one.
        for size in state_sizes(self.root):
            if size != state.size:
                (self.root / STATE_DIR / state_name(size)).unlink()
        fault("old-state")
        note = Checkpoint(self.origin, state.size, state.frontier.root()).sign(signers)
        atomic_write(self.root / CHECKPOINTS / checkpoint_name(state.size), note, durable=self.durable)
        fault("checkpoint")
        os.unlink(self.root / PENDING)
        if self.durable:
            fsync_dir(self.root / LOG_DIR)
        return state

    def rollback(self, state: LogState) -> None:
        """Forget an append whose bundle never became complete (its leaf was never added)."""
        leaves = self.root / LEAVES
        with contextlib.suppress(FileNotFoundError):
            if leaves.stat().st_size > HASH_SIZE * state.size:
                os.truncate(leaves, HASH_SIZE * state.size)
        os.unlink(self.root / PENDING)
        if self.durable:
            fsync_dir(self.root / LOG_DIR)
