"""Verifying a store directory or an unpacked packet: the steps, in order.

1. list the directory (:mod:`.layout`): everything out of place is an error;
2. check every bundle on its own (:mod:`.bundle`, on all cores: :mod:`.parallel`);
3. judge which of them are authentic, following the pinned keyring through the rotation
   entries (:mod:`.trust`);
4. check the sequence (:mod:`.chain`), the checkpoints, their witness cosignatures
   (:mod:`.cosignatures`), the pin and the host's record (:mod:`.checkpoint`), then the store's append state and intent record (:mod:`.layout`)
   or the packet's completeness and proofs (:mod:`.packet`);
5. compare the keyring found beside the evidence with the judged history, and say so when
   the keyring was not pinned.
"""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from nixcomply.core.fsutil import read_regular
from nixcomply.errors import InputError, UsageError
from nixcomply.evidence.cosignature import WitnessPublicKey
from nixcomply.evidence.keyring import Keyring, load_keyring
from nixcomply.evidence.log import LEAVES, PENDING, STATE_DIR, LogHead, state_name
from nixcomply.evidence.merkle import frontiers_at
from nixcomply.evidence.packet import PACKET_FILE, PACKET_KEYRING, PIN_FILE, PROOFS_DIR
from nixcomply.evidence.statement import KeyRole, Statement
from nixcomply.evidence.store import KEYRING
from nixcomply.evidence.verify import checkpoint as checkpoints
from nixcomply.evidence.verify.bundle import Candidates, Claim
from nixcomply.evidence.verify.chain import check_chain
from nixcomply.evidence.verify.cosignatures import check_cosignatures, packet_witness
from nixcomply.evidence.verify.layout import check_leftovers, check_pending, check_state, scan, split_torn
from nixcomply.evidence.verify.packet import PacketError, check_packet, parse_packet
from nixcomply.evidence.verify.parallel import Progress, check_all
from nixcomply.evidence.verify.report import Indexed, Rank, Report
from nixcomply.evidence.verify.trust import KeyHistory, compare_keyrings, judge


@dataclass(frozen=True)
class Trust:
    """The keyring verification starts from; ``pinned`` when the auditor supplied it (a copy
    from another channel, or from a pin kept after an earlier pinned verification)."""

    keyring: Keyring
    pinned: bool
    source: str


def unpinned_warning(root: Path, source: str) -> str:
    return (
        f"the keyring is the one inside {root} ({source}), not a pinned copy: this shows the evidence is intact "
        "and consistent, not who made it (whoever can write the directory can replace the keys too); "
        "pass --keyring with a copy from the clinic or its IT provider, or --pin-checkpoint with the "
        "pin.json of an earlier packet"
    )


def inside(file: Path, root: Path) -> bool:
    """Whether ``file`` is part of the directory ``root`` (under it, or the same file as its
    keyring or pin by another name: a hard link). Such a file given as the pinned keyring or
    pin pins nothing: whoever can write the directory can replace it with the evidence."""
    try:
        if file.resolve().is_relative_to(root.resolve()):
            return True
    except (OSError, RuntimeError):  # a symlink loop: the readers refuse the file anyway
        return False
    for rel in (KEYRING, PACKET_KEYRING, PIN_FILE):
        try:
            if os.path.samefile(file, root / rel):
                return True
        except OSError:
            continue
    return False


def verify_directory(*args: Any, **kwargs: Any) -> Report:
    """:func:`_verify_directory` with the cyclic garbage collector off: verification makes
    many short-lived objects and no cycles, and the collector would only rescan the growing
    table of checked entries (a quarter of the time on a large log)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        return _verify_directory(*args, **kwargs)
    finally:
        if enabled:
            gc.enable()


def _verify_directory(
    root: Path,
    trust: Trust | None,
    *,
    pin: bytes | None = None,
    head: LogHead | None = None,
    today: date,
    progress: Progress | None = None,
    jobs: int,
    all_checkpoints: bool = False,
    index: bool = False,
    witness: WitnessPublicKey | None = None,
    witnesses: Sequence[WitnessPublicKey] = (),
) -> Report:
    started = time.perf_counter()
    is_packet = (root / PACKET_FILE).exists()
    report = Report(kind="packet" if is_packet else "store", path=root)
    base = os.fspath(root) + "/"

    def read(rel: str) -> bytes | None:
        try:
            return read_regular(base + rel)
        except FileNotFoundError:
            return None
        except OSError as e:
            report.error(f"cannot read: {e.strerror}", path=rel, rank=Rank.STORE)
            return None

    packet: dict[str, Any] | None = None
    if is_packet:
        try:
            packet = parse_packet(read(PACKET_FILE) or b"")
        except PacketError as e:
            report.error(str(e), path=PACKET_FILE, rank=Rank.STORE)
            return report
    keyring_rel = PACKET_KEYRING if is_packet else KEYRING
    present: Keyring | None = None
    if (root / keyring_rel).exists():
        try:
            present = load_keyring(root / keyring_rel)
        except InputError as e:
            report.error(f"not a valid keyring: {e.problems[0]}", path=keyring_rel, rank=Rank.STORE)
    if trust is None:
        if present is None:
            raise UsageError(
                f"{root}: no usable {keyring_rel} here", hint="pass --keyring with your copy of the keyring"
            )
        trust = Trust(present, pinned=False, source=f"{root / keyring_rel} (inside the directory verified)")
    report.keyring_pinned, report.keyring_source = trust.pinned, trust.source

    layout = scan(report, root, packet=is_packet)
    keys = [*trust.keyring.all_keys(KeyRole.BUNDLE), *(present.all_keys(KeyRole.BUNDLE) if present else [])]
    results = list(
        check_all(
            base, layout.bundles, Candidates(keys), keep_statements=is_packet, jobs=jobs, progress=progress
        )
    )
    history = KeyHistory(trust.keyring)
    entries = judge(results, history, report)
    statements: dict[int, Statement] = {}
    if is_packet:
        for c in results:
            if (
                c.claim is not None
                and c.statement is not None
                and entries.get(c.claim.seq, (None, ""))[1] == c.rel
            ):
                statements[c.claim.seq] = c.statement
    del results

    stored, torn = split_torn(read(LEAVES) or b"")
    pending = None
    if packet is None:
        data = read(PENDING)
        if data is not None:
            pending = check_pending(
                report, data, stored=stored, torn=torn, layout=layout, entries=entries, head=head
            )
        size = pending[1] if pending else len(stored)
        if torn and not pending:
            report.error(
                f"{torn} stray bytes after leaf {len(stored) - 1} (truncated or appended to)",
                path=LEAVES,
                rank=Rank.LOG,
            )
        expected: list[int] = list(range(size))
    else:
        size = len(stored)
        if torn:
            report.error(f"{torn} stray bytes after the last leaf", path=LEAVES, rank=Rank.LOG)
        expected = sorted(entries)
    check_leftovers(report, layout, pending[0] if pending else None)
    report.entries, report.bundles = size, len(layout.bundles)
    check_chain(report, entries, expected, stored, size=size)

    leaves: list[bytes] = []
    for i in range(size):
        item = entries.get(i)
        if item is not None:
            leaves.append(item[0].leaf)
        elif i < len(stored):
            leaves.append(stored[i])
        else:
            break
    signed = checkpoints.signed_sizes(layout.checkpoints, entries, history, all_checkpoints=all_checkpoints)
    pinned_size = checkpoints.pin_size(pin) if pin is not None else None
    state_size = layout.states[-1] if layout.states and packet is None else None
    frontiers = frontiers_at(
        leaves, {*signed, len(leaves), *(s for s in (pinned_size, state_size) if s is not None)}
    )
    roots = {s: f.root() for s, f in frontiers.items()}
    report.tree_size, report.root = len(leaves), roots[len(leaves)]
    cps = checkpoints.check_checkpoints(
        report,
        read,
        sizes=layout.checkpoints,
        signed=signed,
        roots=roots,
        leaves=len(leaves),
        size=size,
        entries=entries,
        history=history,
        complete=packet is None,
        pending=pending is not None,
    )
    known = [
        k for k in (witness, *witnesses, packet_witness(report, read) if is_packet else None) if k is not None
    ]
    check_cosignatures(
        report,
        read,
        sizes=layout.cosignatures,
        checkpoints=layout.checkpoints,
        known=known,
        required=witness,
        newest=report.checkpoint_size,
    )
    if pin is not None:
        checkpoints.check_pin(
            report, pin, roots=roots, leaves=len(leaves), origin=cps.origin, history=history
        )
    if head is not None:
        checkpoints.check_host_head(report, head, read, size)
    if packet is None:
        frontier = frontiers.get(state_size) if state_size is not None else None
        state_data = read(f"{STATE_DIR}/{state_name(state_size)}") if state_size is not None else None
        check_state(
            report,
            state_data,
            layout=layout,
            frontier=frontier,
            size=size,
            entries=entries,
            pending=pending is not None,
        )
    else:
        for seq in layout.proofs:
            if seq not in entries:
                report.error(
                    "inclusion proof of an entry the packet does not hold",
                    path=f"{PROOFS_DIR}/{seq}.json",
                    rank=Rank.STORE,
                )
        check_packet(
            report,
            packet,
            entries,
            statements,
            read,
            newest=cps.newest,
            newest_root=cps.newest_root,
            keyring=read(PACKET_KEYRING),
        )

    if present is not None:
        difference = compare_keyrings(present, history, max(entries) if entries else None)
        if difference is not None:
            (report.warn if difference.crash_window else report.error)(
                difference.message, path=keyring_rel, rank=Rank.STORE
            )
    if not trust.pinned:
        report.warn(unpinned_warning(root, trust.source), path=keyring_rel, rank=Rank.STORE)
    _check_attestations(report, entries, today)
    if index:
        report.index = {
            seq: Indexed(seq, rel, c.bundle_id, c.envelope_sha256, c.day, c.rotation is not None)
            for seq, (c, rel) in entries.items()
        }
    if report.checkpoint_size and (packet is None or trust.pinned):
        report.pin_next = str(
            root / (PIN_FILE if is_packet else checkpoints.checkpoint_rel(report.checkpoint_size))
        )
    report.duration_s = time.perf_counter() - started
    return report


def _check_attestations(report: Report, entries: dict[int, tuple[Claim, str]], today: date) -> None:
    latest: dict[str, tuple[int, date, str, str]] = {}
    for seq, (claim, rel) in entries.items():
        if claim.attestation is not None:
            control, expires, by = claim.attestation
            if control not in latest or latest[control][0] < seq:
                latest[control] = (seq, expires, by, rel)
    for control, (seq, expires, by, rel) in sorted(latest.items()):
        if expires < today:
            report.warn(
                f"attestation of {control} by {by} expired on {expires.isoformat()}", seq=seq, path=rel
            )
