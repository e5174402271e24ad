"""Verifying a run of envelopes that continues a log, without any directory: what a server
(or any verifier that keeps its own copy of a host's log) does with an upload.

The caller holds a :class:`LogPosition` for the log as far as it accepted it, and the
keyring it pins for the host (from enrollment, followed through the rotation entries it
accepted: :attr:`EntriesResult.keyring`). :func:`verify_entries` checks the next envelopes
exactly as ``nixcomply evidence verify`` checks a store's bundles — the same code
(:func:`~.bundle.check_envelope`, :func:`~.trust.judge`, :func:`~.chain.check_chain`) — and
the checkpoint they end at:

* every envelope: DSSE signature by a bundle key trusted for its sequence number (key
  rotations also by both keys they name), the statement valid, ``chain.seq`` its position,
  ``chain.prev`` the previous envelope's sha256, the first one's ``chain.checkpoint`` the
  checkpoint the caller accepted at ``start`` (when it recorded its digest), and, when the
  attachments are given, every attachment a subject with its sha256 and none missing;
* the checkpoint: signed by a log key trusted for its size (both keys when it covers a
  log-key rotation), of tree size ``start.size + len(entries)``, and its root the tree of
  the caller's frontier plus the new leaves;
* the consistency proof from ``start`` to the checkpoint (RFC 6962 §2.1.2), when given
  (a witness cosigning the checkpoint needs it; the root check above already implies it).

Nothing is judged on anything an envelope says before its signature is judged, and the
first error is always the first entry that is wrong. The result says where the log stands
afterwards (:attr:`EntriesResult.position`), to keep for the next upload.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from hashlib import sha256
from pathlib import Path
from typing import Final

from nixcomply.evidence.checkpoint import NoteError, SignedCheckpoint, open_checkpoint
from nixcomply.evidence.keyring import Keyring
from nixcomply.evidence.merkle import Frontier, verify_consistency
from nixcomply.evidence.statement import GENESIS_PREV, KeyRole, Statement
from nixcomply.evidence.verify.bundle import Candidates, Checked, check_envelope, check_given_attachments
from nixcomply.evidence.verify.chain import check_chain
from nixcomply.evidence.verify.parallel import default_jobs
from nixcomply.evidence.verify.report import Check, Rank, Report
from nixcomply.evidence.verify.trust import KeyHistory, judge


@dataclass(frozen=True)
class LogPosition:
    """What a verifier keeps of a log it accepted, to verify what follows: the tree's size
    and frontier (at most 64 hashes: ``nixcomply.evidence.merkle.Frontier``), the newest
    envelope's sha256 (the next entry's ``chain.prev``) and the sha256 of the checkpoint
    file of that size (the next entry's ``chain.checkpoint``; None if not recorded)."""

    size: int = 0
    frontier: tuple[bytes, ...] = ()
    last_envelope_sha256: str | None = None
    checkpoint_sha256: str | None = None

    def tree(self) -> Frontier:
        return Frontier(self.size, self.frontier)

    @property
    def root(self) -> bytes:
        return self.tree().root()


@dataclass(frozen=True)
class Entry:
    """One uploaded entry: the bytes of its ``envelope.dsse.json`` and, if the caller has
    them, its attachments by name (None: not checked)."""

    envelope: bytes
    attachments: Mapping[str, bytes] | None = None


@dataclass(frozen=True)
class Accepted:
    """An authentic entry of the run: what a server stores and indexes."""

    seq: int
    envelope_sha256: str
    leaf: bytes
    statement: Statement


@dataclass
class EntriesResult:
    report: Report
    position: LogPosition
    keyring: Keyring
    checkpoint: SignedCheckpoint | None = None
    statements: list[Statement] = field(default_factory=list)
    accepted: list[Accepted] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.report.ok


def verify_entries(
    entries: Sequence[Entry],
    keyring: Keyring,
    *,
    start: LogPosition,
    checkpoint: bytes | None,
    proof: Sequence[bytes] | None = None,
) -> EntriesResult:
    """Verify ``entries`` (sequence numbers ``start.size`` on) and the ``checkpoint`` they
    end at against the pinned ``keyring`` (see the module docstring). ``result.ok`` is the
    verdict; ``result.report.first_error()`` names the first bad entry by sequence number
    (``path`` ``entries[i]``: its index in ``entries``) and says which kind of check failed
    (:class:`~.report.Check`). Without a ``checkpoint`` only the entries are checked (is
    this envelope authentic at this position?) and the position does not move on."""
    report = Report(kind="entries", path=Path("-"), keyring_source="given by the caller")
    keys = Candidates([*keyring.all_keys(KeyRole.BUNDLE)])
    numbered = list(enumerate(entries))
    if len(numbered) < THREADED_MIN:
        checked = _check_run(numbered, start.size, keys)
    else:
        chunks = [numbered[i : i + THREAD_CHUNK] for i in range(0, len(numbered), THREAD_CHUNK)]
        parts = _pool().map(_check_run, chunks, [start.size] * len(chunks), [keys] * len(chunks))
        checked = [c for part in parts for c in part]
    history = KeyHistory(keyring)
    judged = judge(checked, history, report, explained_before=start.size)
    end = start.size + len(entries)
    expected = list(range(start.size, end))
    _tag(report, 0, Check.ENTRY)
    mark = len(report.errors)
    prev = start.last_envelope_sha256 if start.size else GENESIS_PREV
    check_chain(report, judged, expected, None, size=end, prev_of_first=prev)
    first = judged.get(start.size)
    recorded = start.checkpoint_sha256 if start.size else None
    if first is not None and recorded is not None and first[0].checkpoint != recorded:
        report.error(
            f"chain.checkpoint is not the checkpoint of tree size {start.size} accepted before",
            seq=start.size,
            path=first[1],
        )
    _tag(report, mark, Check.LINK)
    report.entries = report.bundles = len(entries)
    complete = all(seq in judged for seq in expected)
    accepted = [
        Accepted(seq, judged[seq][0].envelope_sha256, judged[seq][0].leaf, statement)
        for seq, statement in zip(expected, (c.statement for c in checked), strict=True)
        if seq in judged and statement is not None
    ]
    statements = [a.statement for a in accepted]
    if checkpoint is None:
        return EntriesResult(report, start, history.keyring, None, statements, accepted)
    frontier = start.tree()
    if complete:
        for seq in expected:
            frontier.append(judged[seq][0].leaf)
    report.tree_size, report.root = frontier.size, frontier.root()
    linked = complete and not report.errors
    mark = len(report.errors)
    signed = _check_checkpoint(report, checkpoint, end, frontier if complete else None, history)
    _tag(report, mark, Check.CHECKPOINT)
    if (
        linked
        and entries
        and signed is not None
        and signed.checkpoint.size == end
        and frontier.root() != signed.checkpoint.root
    ):
        # Every envelope before the last is confirmed by its successor's signed chain.prev and
        # the start by the caller: a root that differs means the last one changed (in its
        # unsigned parts, since its signature holds), or the host signed two histories.
        report.error(
            f"envelope.dsse.json is not the one the checkpoint of tree size {end} covers",
            seq=end - 1,
            path=judged[end - 1][1],
            check=Check.LINK,
        )
    mark = len(report.errors)
    if signed is not None and proof is not None:
        if start.size == 0:
            if proof:
                report.error(
                    "a consistency proof from the empty tree must be empty", path="proof", rank=Rank.LOG
                )
        elif not verify_consistency(start.size, end, start.root, signed.checkpoint.root, list(proof)):
            report.error(
                f"the consistency proof from tree size {start.size} to {end} does not verify",
                seq=start.size,
                path="proof",
                rank=Rank.LOG,
            )
    _tag(report, mark, Check.PROOF)
    last = judged[end - 1][0].envelope_sha256 if entries and end - 1 in judged else start.last_envelope_sha256
    position = LogPosition(end, tuple(frontier.hashes), last, sha256(checkpoint).hexdigest())
    return EntriesResult(
        report, position if report.ok else start, history.keyring, signed, statements, accepted
    )


# An upload is checked in the caller's process (a server has no business forking), on a few
# threads for a large one: cryptography releases the GIL while it verifies a signature, so
# one thread parses while another verifies.
THREADED_MIN: Final = 64
THREAD_CHUNK: Final = 32
_POOL: list[ThreadPoolExecutor] = []
_POOL_LOCK: Final = threading.Lock()


def _pool() -> ThreadPoolExecutor:
    with _POOL_LOCK:
        if not _POOL:
            _POOL.append(ThreadPoolExecutor(max_workers=min(default_jobs(), 4), thread_name_prefix="verify"))
        return _POOL[0]


def _check_run(numbered: Sequence[tuple[int, Entry]], first: int, keys: Candidates) -> list[Checked]:
    out = []
    for i, entry in numbered:
        index = first + i
        checked = Checked(f"entries[{i}]", index)
        statement = check_envelope(checked, entry.envelope, keys, keep_statement=True)
        if checked.claim is not None and checked.claim.seq != index:
            checked.error(f"the statement says it is entry {checked.claim.seq}, sent as entry {index}")
            checked.claim = None
        elif statement is not None and entry.attachments is not None:
            check_given_attachments(checked, statement.subject, dict(entry.attachments))
        out.append(checked)
    return out


def _tag(report: Report, since: int, check: Check) -> None:
    """Say which kind of check the errors found since ``since`` come from (unless said)."""
    report.errors[since:] = [
        e if e.check is not None else replace(e, check=check) for e in report.errors[since:]
    ]


def _check_checkpoint(
    report: Report, data: bytes, size: int, frontier: Frontier | None, history: KeyHistory
) -> SignedCheckpoint | None:
    where = "checkpoint"
    try:
        signed = open_checkpoint(data, history.keys(KeyRole.LOG, size - 1) if size else [])
    except NoteError as e:
        report.error(f"checkpoint: {e}", seq=max(size - 1, 0), path=where, rank=Rank.LOG)
        return None
    cp = signed.checkpoint
    report.origin, report.checkpoint_size = cp.origin, cp.size
    if cp.size != size:
        report.error(
            f"the checkpoint is of tree size {cp.size}, the entries end at {size}",
            seq=max(size - 1, 0),
            path=where,
            rank=Rank.LOG,
        )
        return None
    both = history.double_signed.get(size)
    if both is not None and not all(k in signed.verified_by for k in both):
        report.error(
            f"the checkpoint covering the log-key rotation at entry {size - 1} must be signed by both log keys",
            seq=size - 1,
            path=where,
            rank=Rank.LOG,
        )
    if frontier is not None and frontier.root() != cp.root:
        report.error(
            "the checkpoint's root is not the tree of the accepted entries and these",
            check=Check.ROOT,
            seq=size - 1,
            path=where,
            rank=Rank.LOG,
        )
    report.checkpoints_verified = 1
    return signed
