"""What may lie where in a store or a packet, and the log's own bookkeeping files.

Every place has a fixed list of what may be there; anything else fails verification with
its name (a file planted beside the evidence is not evidence, and a reader who trusts the
listing must not be surprised). The one exception is the temporary file of an interrupted
atomic write (``.<name>.<random>.tmp``, ``nixcomply.core.fsutil.atomic_write``) or bundle
(``.<bundle>.tmp``), which a crash leaves behind: a warning, since it needs a person.

A store's root is also the host's state directory, so it holds the host's own files next to
the evidence (:data:`HOST_ENTRIES`); a packet holds only what ``export`` writes.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from nixcomply.evidence.cosignature import WITNESS_KEY_FILE
from nixcomply.evidence.index import INDEX_FILE
from nixcomply.evidence.log import (
    CHECKPOINTS,
    COSIGNATURES,
    HASH_SIZE,
    LEAVES,
    LEFTOVER,
    LOCK,
    LOG_DIR,
    PENDING,
    STATE_DIR,
    LogHead,
    Pending,
    parse_state,
    state_name,
)
from nixcomply.evidence.merkle import Frontier
from nixcomply.evidence.packet import (
    PACKET_FILE,
    PACKET_KEYRING,
    PIN_FILE,
    PROOFS_DIR,
    README_FILE,
    VERIFY_REPORT,
)
from nixcomply.evidence.store import EVIDENCE_DIR, KEYRING, SALT
from nixcomply.evidence.verify.bundle import Claim
from nixcomply.evidence.verify.report import Rank, Report

# The host's own files in its state directory (the store root), by owner. A new file the
# host keeps there must be added here, or every verification of that host fails.
HOST_ENTRIES: Final = frozenset(
    {
        "state.db",  # nixcomply.host.state (SQLite), with its WAL files while it is open
        "state.db-wal",
        "state.db-shm",
        "state.db-journal",
        "lock",  # nixcomply.lock: one reconciler at a time
        "uplink",  # the fleet uplink's state (transport key, outbox position)
        SALT,  # the PHI scrubber's salt (secret, never exported)
    }
)
STORE_ENTRIES: Final = frozenset({EVIDENCE_DIR, LOG_DIR, KEYRING}) | HOST_ENTRIES
LOG_ENTRIES: Final = frozenset(
    name.removeprefix(LOG_DIR + "/") for name in (LEAVES, STATE_DIR, CHECKPOINTS, COSIGNATURES, PENDING, LOCK)
)
PACKET_ENTRIES: Final = frozenset(
    {
        README_FILE,
        PACKET_FILE,
        PIN_FILE,
        PACKET_KEYRING,
        VERIFY_REPORT,
        WITNESS_KEY_FILE,  # informational: the auditor passes the witness key with --witness
        "index",
        EVIDENCE_DIR,
        PROOFS_DIR,
        LOG_DIR,
    }
)
PACKET_LOG_ENTRIES: Final = frozenset(
    name.removeprefix(LOG_DIR + "/") for name in (LEAVES, CHECKPOINTS, COSIGNATURES)
)
SIZE_NAME: Final = re.compile(r"^[0-9]{12}$")
STATE_NAME: Final = re.compile(r"^[0-9]{12}\.json$")
PROOF_NAME: Final = re.compile(r"^(0|[1-9][0-9]*)\.json$")


@dataclass
class Layout:
    """The listing of a store or packet, checked place by place."""

    bundles: list[str] = field(default_factory=list)
    temp_bundles: list[str] = field(default_factory=list)
    checkpoints: list[int] = field(default_factory=list)
    cosignatures: list[int] = field(default_factory=list)
    states: list[int] = field(default_factory=list)
    proofs: list[int] = field(default_factory=list)
    leftovers: list[str] = field(default_factory=list)


def _listing(report: Report, root: Path, rel: str) -> list[os.DirEntry[str]]:
    try:
        return sorted(os.scandir(root / rel if rel else root), key=lambda e: e.name)
    except FileNotFoundError:
        return []
    except OSError as e:
        report.error(f"cannot read directory: {e.strerror}", path=rel or ".", rank=Rank.STORE)
        return []


def _place(report: Report, layout: Layout, rel: str, entry: os.DirEntry[str], what: str) -> None:
    if LEFTOVER.match(entry.name) and entry.is_file(follow_symlinks=False):
        layout.leftovers.append(rel)
    else:
        report.error(
            f"unexpected {'directory' if entry.is_dir() else 'file'} in {what}", path=rel, rank=Rank.STORE
        )


def _numbered(
    report: Report, root: Path, layout: Layout, rel: str, *, pattern: re.Pattern[str], into: list[int]
) -> None:
    for e in _listing(report, root, rel):
        child = f"{rel}/{e.name}"
        if pattern.match(e.name) and e.is_file(follow_symlinks=False):
            into.append(int(e.name.split(".")[0]))
        else:
            _place(report, layout, child, e, rel)
    into.sort()


# The places that are directories; every other evidence entry is a regular file.
DIRECTORIES: Final = frozenset(
    {EVIDENCE_DIR, LOG_DIR, PROOFS_DIR, "index", STATE_DIR, CHECKPOINTS, COSIGNATURES}
)


def _kind(report: Report, rel: str, entry: os.DirEntry[str]) -> bool:
    """Whether an expected entry is what its place holds: a real directory or a regular
    file. A symbolic link is never followed (the evidence would be read from wherever it
    points) and a FIFO or device never read: either is an error naming it."""
    if entry.is_symlink():
        report.error("is a symbolic link (never followed)", path=rel, rank=Rank.STORE)
        return False
    if rel in DIRECTORIES:
        if not entry.is_dir(follow_symlinks=False):
            report.error("is not a directory", path=rel, rank=Rank.STORE)
            return False
    elif not entry.is_file(follow_symlinks=False):
        report.error(
            "is not a regular file (a FIFO, socket or device is never read)", path=rel, rank=Rank.STORE
        )
        return False
    return True


def scan(report: Report, root: Path, *, packet: bool) -> Layout:
    """List ``root`` (a store, or an unpacked packet); everything out of place is an error."""
    layout = Layout()
    allowed = PACKET_ENTRIES if packet else STORE_ENTRIES
    usable = set()
    for e in _listing(report, root, ""):
        if e.name not in allowed:
            _place(report, layout, e.name, e, "the store root" if not packet else "the packet")
        elif e.name in HOST_ENTRIES and not packet:
            usable.add(e.name)  # the host's own files: not evidence, not read here
        elif _kind(report, e.name, e):
            usable.add(e.name)
    if LOG_DIR in usable:
        for e in _listing(report, root, LOG_DIR):
            rel = f"{LOG_DIR}/{e.name}"
            if e.name not in (PACKET_LOG_ENTRIES if packet else LOG_ENTRIES):
                _place(report, layout, rel, e, LOG_DIR)
            elif _kind(report, rel, e):
                usable.add(rel)
    # A place that is not there, or not a directory (said above), is not listed.
    if CHECKPOINTS in usable:
        _numbered(report, root, layout, CHECKPOINTS, pattern=SIZE_NAME, into=layout.checkpoints)
    if COSIGNATURES in usable:
        _numbered(report, root, layout, COSIGNATURES, pattern=SIZE_NAME, into=layout.cosignatures)
    if packet:
        if PROOFS_DIR in usable:
            _numbered(report, root, layout, PROOFS_DIR, pattern=PROOF_NAME, into=layout.proofs)
        if "index" in usable:
            for e in _listing(report, root, "index"):
                if f"index/{e.name}" != INDEX_FILE:
                    _place(report, layout, f"index/{e.name}", e, "index")
    elif STATE_DIR in usable:
        _numbered(report, root, layout, STATE_DIR, pattern=STATE_NAME, into=layout.states)
    for size in sorted(set(layout.cosignatures) - set(layout.checkpoints)):
        report.error(
            "cosignatures of a checkpoint that is not there",
            path=f"{COSIGNATURES}/{size:012d}",
            rank=Rank.STORE,
        )
    if EVIDENCE_DIR in usable:
        _walk(report, root, layout, EVIDENCE_DIR, 0)
    return layout


def _walk(report: Report, root: Path, layout: Layout, rel: str, depth: int) -> None:
    for entry in _listing(report, root, rel):
        child = f"{rel}/{entry.name}"
        if depth == 3:
            if (
                entry.name.startswith(".")
                and entry.name.endswith(".tmp")
                and entry.is_dir(follow_symlinks=False)
            ):
                layout.temp_bundles.append(child)
            elif entry.is_dir(follow_symlinks=False) and not entry.name.startswith("."):
                layout.bundles.append(child)
            else:
                report.error("unexpected file among the bundles", path=child, rank=Rank.STORE)
            continue
        width = 4 if depth == 0 else 2
        if not (entry.is_dir(follow_symlinks=False) and len(entry.name) == width and entry.name.isdigit()):
            report.error("unexpected entry in the evidence tree", path=child, rank=Rank.STORE)
            continue
        _walk(report, root, layout, child, depth + 1)


def check_leftovers(report: Report, layout: Layout, pending: Pending | None) -> None:
    for rel in layout.leftovers:
        report.warn("leftover temporary file of an interrupted write", path=rel, rank=Rank.STORE)
    for rel in layout.temp_bundles:
        if pending is None or not rel.endswith(f".{Path(pending.path).name}.tmp"):
            report.warn("leftover temporary directory of an interrupted append", path=rel, rank=Rank.STORE)


def check_pending(
    report: Report,
    data: bytes,
    *,
    stored: list[bytes],
    torn: int,
    layout: Layout,
    entries: dict[int, tuple[Claim, str]],
    head: LogHead | None,
) -> tuple[Pending, int] | None:
    """An interrupted append's intent record must describe exactly a state a crash in
    ``MerkleLog.commit`` can leave (anything else was forged); returns the record and the
    log's size counting the entry if its bundle is complete."""
    try:
        pending = Pending.parse(data)
    except ValueError as e:
        report.error(f"interrupted-append record is malformed: {e}", path=PENDING, rank=Rank.STORE)
        return None
    if data != pending.to_bytes():
        report.error("not in the form the store writes (edited?)", path=PENDING, rank=Rank.STORE)
    s = pending.seq
    found = entries.get(s)
    done = found is not None and (
        found[1],
        found[0].envelope_sha256,
        found[0].bundle_id,
        found[0].leaf.hex(),
    ) == (
        pending.path,
        pending.envelope_sha256,
        pending.bundle_id,
        pending.leaf,
    )
    elsewhere = [seq for seq, (_c, rel) in entries.items() if rel == pending.path and seq != s]

    def forged(why: str) -> None:
        report.error(f"does not fit an interrupted append of entry {s}: {why}", path=PENDING, rank=Rank.STORE)

    if elsewhere:
        forged(f"it names the bundle of entry {elsewhere[0]}")
    elif found is not None and not done:
        forged("the bundle of that entry is not the one it names")
    elif head is not None and head.size > s:
        forged(f"the host's state database recorded {head.size} entries after a finished append")
    elif not set(layout.states) <= {s, s + 1} or not layout.states:
        forged(f"the append state is at {', '.join(map(str, layout.states)) or 'nothing'}")
    elif len(stored) not in (s, s + 1) or (torn and len(stored) != s):
        forged(f"{len(stored)} leaves (+{torn} bytes) in {LEAVES}")
    elif len(stored) == s + 1 and (not done or stored[s].hex() != pending.leaf):
        forged(f"leaf {s} is there, but not that of a complete bundle it names")
    elif s + 1 in layout.states and len(stored) != s + 1:
        forged(f"the append state counts entry {s}, whose leaf is missing")
    elif layout.checkpoints and layout.checkpoints[-1] > s + 1:
        forged(f"the log already has a checkpoint of tree size {layout.checkpoints[-1]}")
    elif s + 1 in layout.checkpoints and s + 1 not in layout.states:
        forged(f"a checkpoint of tree size {s + 1} without the append state for it")
    report.warn(
        f"the append of entry {s} was interrupted; the next open of the store will "
        + ("finish it" if done else "undo it"),
        seq=s,
        path=PENDING,
        rank=Rank.STORE,
    )
    return pending, s + 1 if done else s


def check_state(
    report: Report,
    data: bytes | None,
    *,
    layout: Layout,
    frontier: Frontier | None,
    size: int,
    entries: dict[int, tuple[Claim, str]],
    pending: bool,
) -> None:
    """The append state (``log/state/<size>.json``) is the store's own record of the log."""
    sizes = layout.states
    if not sizes:
        if size:
            report.error("missing", path=STATE_DIR, rank=Rank.STORE)
        return
    rel = f"{STATE_DIR}/{state_name(sizes[-1])}"
    if len(sizes) > 1 and not pending:
        report.error(f"{len(sizes)} state files, expected one", path=rel, rank=Rank.STORE)
    data = data or b""
    try:
        state = parse_state(data)
    except ValueError as e:
        report.error(str(e), path=rel, rank=Rank.STORE)
        return
    if data != state.to_bytes():
        # The store writes one canonical form; anything else was edited.
        report.error("not in the form the store writes (edited?)", path=rel, rank=Rank.STORE)
    if state.size != sizes[-1]:
        report.error(f"records {state.size} entries, its name says {sizes[-1]}", path=rel, rank=Rank.STORE)
        return
    if state.size != size and not (pending and state.size == size - 1):
        report.error(f"records {state.size} entries, the log has {size}", path=rel, rank=Rank.STORE)
        return
    if frontier is None or frontier.hashes != state.frontier.hashes:
        report.error("the frontier does not match the log's leaves", path=rel, rank=Rank.STORE)
    last = state.last
    if last is not None:
        item = entries.get(last.seq)
        if item is None or (item[1], item[0].envelope_sha256, item[0].bundle_id) != (
            last.path,
            last.envelope_sha256,
            last.bundle_id,
        ):
            report.error(
                f"the last entry it records is not bundle {last.seq} of the log", path=rel, rank=Rank.STORE
            )


def split_torn(data: bytes) -> tuple[list[bytes], int]:
    """Whole leaves of a leaves file, and the number of bytes after the last whole one."""
    whole = len(data) - len(data) % HASH_SIZE
    return [data[i : i + HASH_SIZE] for i in range(0, whole, HASH_SIZE)], len(data) - whole
