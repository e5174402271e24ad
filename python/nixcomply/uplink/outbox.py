"""The outbox: the suffix of the host's own Merkle log the server has not accepted. There is
no second queue: what to send is read from the evidence store itself (``log/leaves``, the
bundles, ``log/checkpoints/<size>``), so nothing can be lost between the log and the
uplink, and the order is the log's.

A batch is entries ``old .. end-1`` with the checkpoint the host signed at size ``end`` and
the RFC 6962 consistency proof from ``old`` to ``end``; batches respect an entry count and a
byte budget so every request stays under the server's body limit.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from nixcomply.core.fsutil import atomic_write, ensure_dir, read_regular
from nixcomply.errors import NixcomplyError
from nixcomply.evidence.checkpoint import NoteError, parse_note
from nixcomply.evidence.cosignature import WitnessPublicKey, parse_cosignatures, verify_cosignature
from nixcomply.evidence.log import CHECKPOINTS, COSIGNATURES, checkpoint_name, read_leaves
from nixcomply.evidence.merkle import Tree, leaf_hash
from nixcomply.evidence.store import ATTACHMENTS_DIR, ENVELOPE_FILE, EVIDENCE_DIR
from nixcomply.model.fleet import MAX_ENTRIES, UploadEntry, UploadRequest, b64encode

_SEQ: Final = re.compile(r"^\d{8}T\d{6}Z-(\d{8,})-[0-9a-f]{8}$")
DEFAULT_BUDGET: Final = 8 * 1024 * 1024


class OutboxError(NixcomplyError):
    """The store does not hold what its log says (an entry's bundle or checkpoint is
    missing or differs); nothing is sent, ``nixcomply evidence verify`` tells more."""


@dataclass(frozen=True)
class Batch:
    request: UploadRequest
    end: int
    size_bytes: int


def bundle_paths(root: Path, first: int) -> dict[int, Path]:
    """Bundle directories with sequence number ``first`` or later, from their names."""
    found: dict[int, Path] = {}
    base = root / EVIDENCE_DIR
    for year in _dirs(base):
        for month in _dirs(year):
            for day in _dirs(month):
                for entry in os.scandir(day):
                    m = _SEQ.match(entry.name)
                    if m and int(m.group(1)) >= first and entry.is_dir(follow_symlinks=False):
                        found[int(m.group(1))] = Path(entry.path)
    return found


def _dirs(path: Path) -> list[Path]:
    try:
        return sorted(
            Path(e.path) for e in os.scandir(path) if e.is_dir(follow_symlinks=False) and e.name.isdigit()
        )
    except FileNotFoundError:
        return []


def read_entry(seq: int, bundle: Path, leaf: bytes) -> UploadEntry:
    """Entry ``seq`` as it is sent. Only regular files are read, never through a symbolic
    link: a FIFO planted in the store would block the upload (and the end of every reconcile
    run) for ever, and a link would send whatever it points at to the server."""
    envelope = _read(bundle / ENVELOPE_FILE)
    if leaf_hash(envelope) != leaf:
        raise OutboxError(f"{bundle}: the envelope is not leaf {seq} of the log")
    attachments = {}
    directory = bundle / ATTACHMENTS_DIR
    if directory.is_dir() and not directory.is_symlink():
        for item in sorted(directory.iterdir()):
            attachments[item.name] = b64encode(_read(item))
    elif directory.is_symlink():
        raise OutboxError(f"{directory}: is a symbolic link (never followed)")
    return UploadEntry(seq=seq, envelope=b64encode(envelope), attachments=attachments)


def _read(path: Path) -> bytes:
    try:
        return read_regular(path)
    except OSError as e:
        raise OutboxError(f"{path}: {e.strerror or e}") from None


def checkpoint(root: Path, size: int) -> bytes:
    path = root / CHECKPOINTS / checkpoint_name(size)
    try:
        return read_regular(path)
    except FileNotFoundError:
        raise OutboxError(f"{path}: missing; the log keeps a checkpoint per size") from None
    except OSError as e:
        raise OutboxError(f"{path}: {e.strerror or e}") from None


def log_size(root: Path) -> int:
    return len(read_leaves(root))


def batches(
    root: Path, accepted: int, *, max_entries: int = MAX_ENTRIES, budget: int = DEFAULT_BUDGET
) -> Iterator[Batch]:
    """The outbox as requests, in log order, from the server's ``accepted`` size."""
    leaves = read_leaves(root)
    n = len(leaves)
    if accepted >= n:
        return
    tree = Tree(leaves)
    paths = bundle_paths(root, accepted)
    old = accepted
    while old < n:
        entries: list[UploadEntry] = []
        used = 0
        seq = old
        while seq < n and len(entries) < max_entries:
            bundle = paths.get(seq)
            if bundle is None:
                raise OutboxError(f"entry {seq}: no bundle in {root / EVIDENCE_DIR}")
            entry = read_entry(seq, bundle, leaves[seq])
            cost = len(entry.envelope) + sum(len(v) for v in entry.attachments.values()) + 256
            if entries and used + cost > budget:
                break
            entries.append(entry)
            used += cost
            seq += 1
        end = old + len(entries)
        proof = tree.consistency_proof(old, end) if old > 0 else []
        request = UploadRequest(
            old_size=old,
            entries=entries,
            checkpoint=checkpoint(root, end).decode(),
            proof=[b64encode(h) for h in proof],
        )
        yield Batch(request, end, used)
        old = end


def store_cosignature(
    root: Path, size: int, note: bytes, cosignature: str, *, witness: WitnessPublicKey
) -> Path:
    """Keep the witness's cosignature beside the checkpoint it signs (``log/cosignatures/
    <size>``), once the checkpoint it names is the host's own, byte for byte, and the
    cosignature verifies by the witness key the host enrolled with: what a server (or
    whoever answers in its name) returns is never kept unchecked, since a bad cosignature
    file makes the host's own evidence fail verification."""

    if checkpoint(root, size) != note:
        raise OutboxError(f"the server cosigned a checkpoint of size {size} that is not this host's")
    try:
        lines = parse_cosignatures(cosignature)
        verify_cosignature(parse_note(note).text, lines, witness)
    except NoteError as e:
        raise OutboxError(f"the server's cosignature of checkpoint {size} is not valid: {e}") from None
    path = ensure_dir(root / COSIGNATURES) / checkpoint_name(size)
    data = "".join(c.line() for c in lines).encode()
    try:
        if read_regular(path) == data:
            return path  # kept already (every pass shows the newest one): no write
    except OSError:
        pass
    atomic_write(path, data, mode=0o644)
    return path


def newest_cosignature(root: Path) -> tuple[int, bytes] | None:
    """The newest stored cosignature: (size, its lines)."""
    try:
        names = sorted(e.name for e in os.scandir(root / COSIGNATURES) if e.name.isdigit())
    except FileNotFoundError:
        return None
    if not names:
        return None
    return int(names[-1]), (root / COSIGNATURES / names[-1]).read_bytes()
