"""The checkpoints: each one's root against the tree recomputed from the leaves, and each
one's authenticity — by the log key's signature, or by the digest the next entry signed.

The entry with sequence number ``s`` commits to the checkpoint of tree size ``s`` in its
signed ``chain.checkpoint``, so an authentic entry makes that checkpoint file authentic
byte for byte and its signature need not be checked again (a log of ``n`` entries costs
``n + 1`` signature checks, not ``2n``). The log key's signature is checked on the newest
checkpoint, on any whose committing entry is missing or not authentic, on those covering a
log-key rotation (which must carry the old and the new key's signatures), and on all of
them with ``all_checkpoints``.

Beyond the log itself, two outside records say how far it reached, and both are checked:
a *pinned* checkpoint (``--pin-checkpoint``: the log must still hold exactly the tree it
describes) and the size the host's state database recorded after its last append
(:class:`~nixcomply.evidence.log.LogHead`: the log must be at least that long and hold the
checkpoint it recorded). Either catches a store rolled back or cut short; the pin also
catches it when the whole state directory was replaced.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from hashlib import sha256

from nixcomply.evidence.checkpoint import NoteError, open_checkpoint, parse_checkpoint_text, parse_note
from nixcomply.evidence.log import CHECKPOINTS, LogHead, checkpoint_name
from nixcomply.evidence.statement import KeyRole
from nixcomply.evidence.verify.bundle import Claim, CommittedFile, read_committed
from nixcomply.evidence.verify.report import Rank, Report
from nixcomply.evidence.verify.trust import KeyHistory

Reader = Callable[[str], bytes | None]
PIN: str = "--pin-checkpoint"


def checkpoint_rel(size: int) -> str:
    return f"{CHECKPOINTS}/{checkpoint_name(size)}"


@dataclass
class Checkpoints:
    """What :func:`check_checkpoints` learnt: the log's origin and its newest checkpoint."""

    origin: str | None = None
    newest: bytes | None = None
    newest_root: bytes | None = None  # the authentic newest checkpoint's root hash


def signed_sizes(
    sizes: list[int], entries: Mapping[int, tuple[Claim, str]], history: KeyHistory, *, all_checkpoints: bool
) -> set[int]:
    """The checkpoints checked by the log key's signature, whose roots are recomputed from
    the leaves: the newest, any no authentic entry committed to, those covering a log-key
    rotation, and with ``all_checkpoints`` every one. The others are authentic by the digest
    the next entry signed; their roots were the store's own at the time."""
    newest = sizes[-1] if sizes else None
    return {
        s for s in sizes if s == newest or all_checkpoints or s in history.double_signed or s not in entries
    }


def check_checkpoints(
    report: Report,
    read: Reader,
    *,
    sizes: list[int],
    signed: set[int],
    roots: Mapping[int, bytes],
    leaves: int,
    size: int,
    entries: Mapping[int, tuple[Claim, str]],
    history: KeyHistory,
    complete: bool,
    pending: bool,
) -> Checkpoints:
    """Check the checkpoint files of ``sizes`` (see the module docstring): those in
    ``signed`` by signature and against ``roots`` (the tree's root at each of those sizes),
    the others by the commitment of the entry after them; ``leaves`` is the number of leaves
    of the log of ``size`` entries; ``complete``: every size must have its checkpoint (a
    store), ``pending``: the newest entry may not be covered yet (an interrupted append)."""
    out = Checkpoints()
    if not sizes:
        if size and not (pending and size == 1):
            report.error("no checkpoint", path=CHECKPOINTS, rank=Rank.LOG)
        return out
    newest = sizes[-1]
    report.checkpoint_size = newest
    mismatched: list[int] = []
    for s in reversed(sizes):
        rel = checkpoint_rel(s)
        committer = entries.get(s)
        # Read beside the committing entry (and hashed there), unless its signature is to
        # be checked: then the bytes are needed here.
        file = committer[0].committed_file if committer is not None and s not in signed else None
        data = None
        if file is None:
            data = read(rel)
            if data is None:
                report.error("cannot read", seq=s - 1, path=rel, rank=Rank.LOG)
                continue
        committed = committer[0].checkpoint if committer is not None else None
        if committed is not None and not (
            file.matches if file else sha256(data or b"").hexdigest() == committed
        ):
            report.error(
                f"differs from the checkpoint entry {s} committed to (chain.checkpoint)",
                seq=s - 1,
                path=rel,
                rank=Rank.LOG,
            )
            continue
        if data is not None and s in signed:
            root = _signed(report, data, s, rel=rel, history=history, out=out)
        else:
            root = _committed(report, file or read_committed(data or b"", s, committed), s, rel, out)
        if root is None:
            continue
        if s == newest:
            out.newest, out.newest_root = data, root
        report.checkpoints_verified += 1
        if s > leaves:
            report.error(
                f"checkpoint of tree size {s}, but the log has {leaves} entries",
                seq=s - 1,
                path=rel,
                rank=Rank.LOG,
            )
        elif s in roots and roots[s] != root:
            mismatched.append(s)
    report.origin = out.origin
    if mismatched:
        first = min(mismatched)
        more = f" (and {len(mismatched) - 1} later checkpoints)" if len(mismatched) > 1 else ""
        report.error(
            f"root hash does not match the log's first {first} entries{more}",
            seq=first - 1,
            path=checkpoint_rel(first),
            rank=Rank.LOG,
        )
    if newest < size:
        if pending and newest == size - 1:
            report.warn(f"entry {size - 1} is not yet covered by a checkpoint", seq=size - 1)
        else:
            report.error(
                f"the newest checkpoint covers {newest} entries, the log has {size}",
                seq=newest,
                path=CHECKPOINTS,
                rank=Rank.LOG,
            )
    if complete:
        present = set(sizes)
        missing = [s for s in range(1, min(newest, size) + 1) if s not in present]
        if missing:
            report.error(
                f"{len(missing)} checkpoint(s) missing, first for tree size {missing[0]}",
                seq=missing[0] - 1,
                path=checkpoint_rel(missing[0]),
                rank=Rank.LOG,
            )
    return out


def pin_size(pin: bytes) -> int | None:
    """The tree size a pinned checkpoint claims (None if it is not a checkpoint at all)."""
    try:
        return parse_checkpoint_text(parse_note(pin).text).size
    except NoteError:
        return None


def _origin(report: Report, out: Checkpoints, origin: str, rel: str) -> None:
    if out.origin is None:
        out.origin = origin
    elif origin != out.origin:
        report.error(
            f"origin {origin!r} differs from the newest checkpoint's {out.origin!r}", path=rel, rank=Rank.LOG
        )


def _signed(
    report: Report, data: bytes, size: int, *, rel: str, history: KeyHistory, out: Checkpoints
) -> bytes | None:
    """A checkpoint checked by its log-key signature(s); its root, or None if it fails."""
    try:
        signed = open_checkpoint(data, history.keys(KeyRole.LOG, size - 1))
    except NoteError as e:
        report.error(f"checkpoint: {e}", seq=size - 1, path=rel, rank=Rank.LOG)
        return None
    cp = signed.checkpoint
    _origin(report, out, cp.origin, rel)
    if cp.size != size:
        report.error(
            f"file name says tree size {size} but the checkpoint says {cp.size}", path=rel, rank=Rank.LOG
        )
        return None
    both = history.double_signed.get(size)
    if both is not None and not all(k in signed.verified_by for k in both):
        old, new = both
        report.error(
            f"the checkpoint covering the log-key rotation at entry {size - 1} must be signed by both "
            f"{old.name}+{old.key_id_hex} and {new.name}+{new.key_id_hex}",
            seq=size - 1,
            path=rel,
            rank=Rank.LOG,
        )
    return cp.root


def _committed(report: Report, file: CommittedFile, size: int, rel: str, out: Checkpoints) -> bytes | None:
    """A checkpoint whose bytes an authentic entry committed to: the text must still be a
    checkpoint of the right size and log (:func:`~.bundle.read_committed`)."""
    if file.origin is not None:
        _origin(report, out, file.origin, rel)
    if file.problem is not None:
        report.error(file.problem, seq=size - 1, path=rel, rank=Rank.LOG)
    return file.root


def check_pin(
    report: Report,
    pin: bytes,
    *,
    roots: Mapping[int, bytes],
    leaves: int,
    origin: str | None,
    history: KeyHistory,
) -> None:
    """The log still holds exactly the tree of the pinned checkpoint (``roots`` has the
    tree's root at the pin's size, when the log is that long)."""
    try:
        size = parse_checkpoint_text(parse_note(pin).text).size
        signed = open_checkpoint(pin, history.keys(KeyRole.LOG, size - 1) if size > 0 else [])
    except NoteError as e:
        report.error(f"pinned checkpoint: {e}", path=PIN, rank=Rank.STORE)
        return
    cp = signed.checkpoint
    if origin is not None and cp.origin != origin:
        report.error(f"pinned checkpoint is for log {cp.origin!r}, not {origin!r}", path=PIN, rank=Rank.STORE)
        return
    consistent = False
    if cp.size > leaves:
        report.error(
            f"the log has {leaves} entries but the pinned checkpoint has {cp.size}: it was truncated",
            seq=leaves,
            path=PIN,
            rank=Rank.STORE,
        )
    elif roots.get(cp.size) != cp.root:
        report.error(
            f"the log's first {cp.size} entries differ from the pinned checkpoint: history was rewritten",
            path=PIN,
            rank=Rank.STORE,
        )
    else:
        consistent = True
    report.pinned = {"size": cp.size, "consistent": consistent}


HOST_STATE = "state.db"


def check_host_head(report: Report, head: LogHead, read: Reader, size: int) -> None:
    """The log reaches as far as the host's state database says it did, with the same
    checkpoint there."""
    report.host_size = head.size
    if head.size > size:
        report.error(
            f"the host's state database records {head.size} entries, the log has {size}: "
            "entries were removed or the store was rolled back",
            seq=size,
            path=HOST_STATE,
            rank=Rank.STORE,
        )
        return
    if head.size == 0 or head.checkpoint_sha256 is None:
        return
    rel = checkpoint_rel(head.size)
    data = read(rel)
    if data is None or sha256(data).hexdigest() != head.checkpoint_sha256:
        report.error(
            f"the checkpoint of tree size {head.size} is not the one the host's state database recorded "
            "after that append: history was rewritten",
            seq=head.size - 1,
            path=rel,
            rank=Rank.STORE,
        )
