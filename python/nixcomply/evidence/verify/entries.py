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

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from hashlib import sha256
from pathlib import Path

from nixcomply.evidence.checkpoint import NoteError, SignedCheckpoint, open_checkpoint
from nixcomply.evidence.keyring import Keyring
from nixcomply.evidence.merkle import Frontier, verify_consistency
from nixcomply.evidence.statement import GENESIS_PREV, KeyRole, Statement
from nixcomply.evidence.verify.bundle import Candidates, Checked, check_envelope, check_given_attachments
from nixcomply.evidence.verify.chain import check_chain
from nixcomply.evidence.verify.report import Rank, Report
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


@dataclass
class EntriesResult:
    report: Report
    position: LogPosition
    keyring: Keyring
    checkpoint: SignedCheckpoint | None = None
    statements: list[Statement] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.report.ok


def verify_entries(
    entries: Sequence[Entry],
    keyring: Keyring,
    *,
    start: LogPosition,
    checkpoint: bytes,
    proof: Sequence[bytes] | None = None,
) -> EntriesResult:
    """Verify ``entries`` (sequence numbers ``start.size`` on) and the ``checkpoint`` they
    end at against the pinned ``keyring`` (see the module docstring). ``result.ok`` is the
    verdict; ``result.report.first_error()`` names the first bad entry by sequence number
    (``path`` ``entries[i]``: its index in ``entries``)."""
    report = Report(kind="entries", path=Path("-"), keyring_source="given by the caller")
    keys = Candidates([*keyring.all_keys(KeyRole.BUNDLE)])
    checked: list[Checked] = []
    for i, entry in enumerate(entries):
        out = Checked(f"entries[{i}]", start.size + i)
        statement = check_envelope(out, entry.envelope, keys, keep_statement=True)
        if statement is not None and entry.attachments is not None:
            check_given_attachments(out, statement.subject, dict(entry.attachments))
        checked.append(out)
    history = KeyHistory(keyring)
    judged = judge(checked, history, report, explained_before=start.size)
    end = start.size + len(entries)
    expected = list(range(start.size, end))
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
    report.entries = report.bundles = len(entries)
    frontier = start.tree()
    complete = all(seq in judged for seq in expected)
    if complete:
        for seq in expected:
            frontier.append(judged[seq][0].leaf)
    report.tree_size, report.root = frontier.size, frontier.root()
    linked = complete and not report.errors
    signed = _check_checkpoint(report, checkpoint, end, frontier if complete else None, history)
    if (
        linked
        and entries
        and signed is not None
        and signed.checkpoint.size == end
        and frontier.root() != signed.checkpoint.root
    ):
        # Every envelope before the last is confirmed by its successor's signed chain.prev and
        # the start by the caller: a root that differs means the last one changed (in its
        # unsigned parts, since its signature holds).
        report.error(
            f"envelope.dsse.json is not the one the checkpoint of tree size {end} covers",
            seq=end - 1,
            path=judged[end - 1][1],
        )
    if signed is not None and proof is not None:
        if start.size == 0:
            report.error(
                "a consistency proof from the empty tree proves nothing", path="proof", rank=Rank.LOG
            )
        elif not verify_consistency(start.size, end, start.root, signed.checkpoint.root, list(proof)):
            report.error(
                f"the consistency proof from tree size {start.size} to {end} does not verify",
                seq=start.size,
                path="proof",
                rank=Rank.LOG,
            )
    statements = [c.statement for c in checked if c.statement is not None]
    last = judged[end - 1][0].envelope_sha256 if entries and end - 1 in judged else start.last_envelope_sha256
    position = LogPosition(end, tuple(frontier.hashes), last, sha256(checkpoint).hexdigest())
    return EntriesResult(report, position if report.ok else start, history.keyring, signed, statements)


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
            seq=size - 1,
            path=where,
            rank=Rank.LOG,
        )
    report.checkpoints_verified = 1
    return signed
