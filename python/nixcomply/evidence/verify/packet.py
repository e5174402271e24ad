"""A packet holds every entry of its period, and proves it.

``packet.json`` is not signed, so nothing in it is believed; it is checked against the
signed evidence instead:

* the period's entries are a run of consecutive sequence numbers ``[start, end)``, every
  one present and authentic (a missing one is named by its number);
* the entries just outside the run are present too — ``start - 1`` observed before the
  period's first day, ``end`` observed after its last — unless the run starts at the log's
  first entry or ends at its newest: so no entry of the period can lie outside the run
  (as long as the host's clock did not run backwards, which a warning points out);
* every bundle has an RFC 6962 inclusion proof in the tree of the newest checkpoint, which
  is signed by the log key, and ``log/leaves`` recomputes that tree;
* ``packet.json`` lists exactly the bundles present, the index is the one recomputed from
  their statements, and ``pin.json`` is the newest checkpoint with the packet's keyring.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from datetime import date
from typing import Any

from nixcomply.evidence.index import INDEX_FILE, control_index
from nixcomply.evidence.merkle import proof_document, verify_inclusion
from nixcomply.evidence.packet import PACKET_FILE, PACKET_FORMAT, PIN_FILE, PROOFS_DIR, ROLES, pin_document
from nixcomply.evidence.statement import Attestation, Statement
from nixcomply.evidence.verify.bundle import Claim
from nixcomply.evidence.verify.checkpoint import Reader
from nixcomply.evidence.verify.report import Rank, Report


class PacketError(ValueError):
    """``packet.json`` cannot be read as a packet at all."""


def parse_packet(data: bytes) -> dict[str, Any]:
    try:
        packet = json.loads(data)
    except ValueError as e:
        raise PacketError(f"not JSON: {e}") from None
    if not isinstance(packet, dict) or packet.get("format") != PACKET_FORMAT:
        raise PacketError(f"not a {PACKET_FORMAT} packet")
    period = packet.get("period")
    if not (
        isinstance(period, dict)
        and isinstance(period.get("start"), int)
        and isinstance(period.get("end"), int)
        and 0 <= period["start"] <= period["end"]
    ):
        raise PacketError('period: expected {"start": N, "end": M} with 0 <= N <= M')
    for name in ("from", "to"):
        try:
            date.fromisoformat(str(packet.get(name)))
        except ValueError:
            raise PacketError(f"{name}: expected a date like 2026-03-31") from None
    if not isinstance(packet.get("entries"), list) or not isinstance(packet.get("tree_size"), int):
        raise PacketError("entries and tree_size are required")
    return packet


def mentions(statement: Statement, wanted: set[str]) -> bool:
    """Whether a statement is about any of the controls or framework references."""
    p = statement.predicate
    ids = {c.id for c in p.controls}
    refs = {ref for c in p.controls for _fw, ref in c.frameworks.items()}
    if isinstance(p, Attestation):
        ids.add(p.control)
    return bool(wanted & (ids | refs))


def required(packet: Mapping[str, Any]) -> dict[int, str]:
    """The sequence numbers the packet must hold, by role (rotation entries are optional)."""
    start, end, size = packet["period"]["start"], packet["period"]["end"], packet["tree_size"]
    out = dict.fromkeys(range(start, end), "period")
    if start > 0:
        out[start - 1] = "before"
    if end < size:
        out[end] = "after"
    return out


def check_packet(
    report: Report,
    packet: Mapping[str, Any],
    entries: Mapping[int, tuple[Claim, str]],
    statements: Mapping[int, Statement],
    read: Reader,
    *,
    newest: bytes | None,
    newest_root: bytes | None,
    keyring: bytes | None,
) -> None:
    """The checks of the module docstring, after the bundles and checkpoints were checked.
    Proofs are checked against ``newest_root``, the signed newest checkpoint's root (not the
    one recomputed from the bundles: one changed bundle must not fail every proof)."""
    size, root = report.tree_size, newest_root
    start, end = packet["period"]["start"], packet["period"]["end"]
    first_day, last_day = date.fromisoformat(packet["from"]), date.fromisoformat(packet["to"])
    if packet["tree_size"] != size:
        report.error(
            f"{PACKET_FILE} says tree size {packet['tree_size']}, the log has {size}",
            path=PACKET_FILE,
            rank=Rank.STORE,
        )
    if packet.get("origin") != report.origin:
        report.error(
            f"{PACKET_FILE} names log {packet.get('origin')!r}, the checkpoints {report.origin!r}",
            path=PACKET_FILE,
            rank=Rank.STORE,
        )
    if end > size:
        report.error(
            f"the period ends at entry {end}, beyond the log's {size} entries",
            path=PACKET_FILE,
            rank=Rank.STORE,
        )
    roles = required(packet)
    listed: dict[int, Mapping[str, Any]] = {}
    for item in packet["entries"]:
        seq = item.get("seq") if isinstance(item, dict) else None
        if not isinstance(seq, int) or seq in listed:
            report.error(
                f"an entry without a (unique) sequence number: {item!r:.80}",
                path=PACKET_FILE,
                rank=Rank.STORE,
            )
            continue
        listed[seq] = item
    for seq, item in sorted(listed.items()):
        found = entries.get(seq)
        if found is None:
            continue  # reported as missing below, or by the chain check
        claim, rel = found
        role = roles.get(seq, "key-rotation" if claim.rotation is not None else None)
        if (item.get("path"), item.get("envelope_sha256"), item.get("bundle_id"), item.get("role")) != (
            rel,
            claim.envelope_sha256,
            claim.bundle_id,
            role,
        ):
            report.error(f"the packet's index does not match the bundle (role {role})", seq=seq, path=rel)
    for seq, (claim, rel) in sorted(entries.items()):
        if seq not in listed:
            report.error(f"bundle is not listed in {PACKET_FILE}", seq=seq, path=rel)
        if seq not in roles and claim.rotation is None:
            report.error(
                "bundle is neither of the period, nor next to it, nor a key rotation", seq=seq, path=rel
            )
    for seq, role in sorted(roles.items()):
        if seq not in entries:
            report.error(
                f"bundle missing ({role} entry of the period {start}..{end - 1})", seq=seq, path=PACKET_FILE
            )
    before, after = entries.get(start - 1), entries.get(end)
    if start > 0 and before is not None and before[0].day >= first_day:
        report.error(
            f"the entry before the period was observed on {before[0].day}, not before {first_day}: "
            "the period's entries do not start here",
            seq=start - 1,
            path=before[1],
        )
    if end < size and after is not None and after[0].day <= last_day:
        report.error(
            f"the entry after the period was observed on {after[0].day}, not after {last_day}: "
            "the period's entries do not end here",
            seq=end,
            path=after[1],
        )
    for seq in range(start, end):
        item = entries.get(seq)
        if item is not None and not first_day <= item[0].day <= last_day:
            report.warn(
                f"observed on {item[0].day}, outside the period, between entries of it (the host's clock went back?)",
                seq=seq,
                path=item[1],
            )
    report.period = {"start": first_day, "end": last_day, "first_seq": start, "end_seq": end}
    if root is not None:  # else the newest checkpoint failed, and says so
        _check_proofs(report, entries, read, size, root)
    controls = packet.get("controls") or []
    wanted = {str(c) for c in controls} if isinstance(controls, list) else set()
    index = [
        (seq, entries[seq][1], entries[seq][0].bundle_id, st)
        for seq, st in sorted(statements.items())
        if start <= seq < end and seq in entries and (not wanted or mentions(st, wanted))
    ]
    if read(INDEX_FILE) != control_index(index):
        report.error(
            "differs from the index recomputed from the packet's bundles", path=INDEX_FILE, rank=Rank.STORE
        )
    pin = read(PIN_FILE)
    if newest is not None and keyring is not None and report.origin is not None:
        try:
            expected = pin_document(report.origin, newest, json.loads(keyring))
        except ValueError:
            expected = None
        if pin != expected:
            report.error("is not the packet's newest checkpoint and keyring", path=PIN_FILE, rank=Rank.STORE)


def _check_proofs(
    report: Report, entries: Mapping[int, tuple[Claim, str]], read: Reader, size: int, root: bytes | None
) -> None:
    for seq, (claim, _rel) in sorted(entries.items()):
        rel = f"{PROOFS_DIR}/{seq}.json"
        data = read(rel)
        if data is None:
            report.error("inclusion proof missing", seq=seq, path=rel, rank=Rank.LOG)
            continue
        try:
            proof = json.loads(data)
            path = [base64.b64decode(h, validate=True) for h in proof["inclusion_path"]]
            ok = (
                proof["index"] == seq
                and proof["tree_size"] == size
                and root is not None
                and verify_inclusion(claim.leaf, seq, size, path, root)
            )
        except (ValueError, KeyError, TypeError):
            ok = False
        if not ok:
            report.error(
                "inclusion proof does not verify against the newest checkpoint",
                seq=seq,
                path=rel,
                rank=Rank.LOG,
            )
        elif data != proof_document(seq, size, claim.leaf, root or b"", path):
            report.error("not in the form nixcomply writes (edited?)", seq=seq, path=rel, rank=Rank.LOG)


__all__ = ["ROLES", "PacketError", "check_packet", "mentions", "parse_packet", "required"]
