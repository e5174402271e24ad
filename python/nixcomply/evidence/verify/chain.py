"""The entries as a sequence: one authentic bundle per sequence number, none missing, each
matching its leaf, each linked to the one before by ``chain.prev``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from nixcomply.evidence.log import LEAVES
from nixcomply.evidence.statement import GENESIS_PREV
from nixcomply.evidence.store import ENVELOPE_FILE
from nixcomply.evidence.verify.bundle import Claim
from nixcomply.evidence.verify.report import Report


def check_chain(
    report: Report,
    entries: Mapping[int, tuple[Claim, str]],
    expected: Sequence[int],
    stored: Sequence[bytes] | None,
    *,
    size: int,
    prev_of_first: str | None = None,
) -> None:
    """Check the ``expected`` sequence numbers (ascending) against the authentic
    ``entries``; ``stored`` are the log's leaves (None: none to compare with), ``size`` the
    log's size, and ``prev_of_first`` the envelope digest the first expected entry must
    link to when its predecessor is not among the entries (an upload continuing a log)."""
    wanted = set(expected)
    for seq in sorted(set(entries) - wanted):
        if seq >= size:
            report.error(
                f"bundle claims entry {seq} but the log has {size} entries", seq=seq, path=entries[seq][1]
            )
    first = expected[0] if expected else None
    for seq in expected:
        item = entries.get(seq)
        if item is None:
            report.error(
                "bundle missing (the log has its leaf)"
                if stored is not None and seq < len(stored)
                else "bundle missing",
                seq=seq,
            )
            continue
        claim, rel = item
        if stored is not None and seq < len(stored) and stored[seq] != claim.leaf:
            report.error(f"the envelope does not match leaf {seq} in {LEAVES}", seq=seq, path=rel)
        if (claim.checkpoint is None) != (seq == 0):
            report.error("chain.checkpoint must name the checkpoint before the entry", seq=seq, path=rel)
        if seq == 0:
            if claim.prev != GENESIS_PREV:
                report.error("the first entry's chain.prev is not all zeros", seq=seq, path=rel)
            continue
        before = entries.get(seq - 1)
        if before is not None:
            if claim.prev != before[0].envelope_sha256:
                # Both are authentic, and this one signed the digest of the one before: it is
                # the earlier envelope that changed (in its unsigned parts: the keyid hints,
                # its JSON spelling).
                report.error(
                    f"{ENVELOPE_FILE} is not the one entry {seq} links to (its signed chain.prev)",
                    seq=seq - 1,
                    path=before[1],
                )
        elif seq == first and prev_of_first is not None and claim.prev != prev_of_first:
            report.error(f"chain.prev is not the sha256 of entry {seq - 1}'s envelope", seq=seq, path=rel)
