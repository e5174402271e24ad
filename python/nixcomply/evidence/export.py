"""The auditor's packet: every entry of a period, with everything needed to verify it offline.

``nixcomply evidence export --from 2026-01-01 --to 2026-03-31 -o packet.zip`` takes the
store's append lock (shared: appends wait, readers do not), verifies the whole store (an
export of evidence that does not verify is refused), and packs exactly what it verified
while still holding the lock. The format (``packet.json``, ``pin.json``, the files) is
described in :mod:`nixcomply.evidence.packet`; ``nixcomply evidence verify`` checks it.

The period is a run of sequence numbers: from the first entry observed on or after
``--from`` to the last observed on or before ``--to``, every entry in between, plus the
entries just outside (boundary evidence) and every key-rotation entry of the log (so the
auditor's keyring can be followed to the one the packet carries). ``--controls`` narrows
the index to the bundles about those controls; the packet still holds the whole period,
since only then can it prove that nothing was left out.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Final

from nixcomply.core.fsutil import check_output, write_output
from nixcomply.errors import UsageError, VerificationError
from nixcomply.evidence.cosignature import WITNESS_KEY_FILE, WitnessPublicKey
from nixcomply.evidence.index import INDEX_FILE, control_index
from nixcomply.evidence.keyring import Keyring
from nixcomply.evidence.log import CHECKPOINTS, COSIGNATURES, LEAVES, LogHead, checkpoint_name, read_leaves
from nixcomply.evidence.merkle import Tree, proof_document
from nixcomply.evidence.packet import (
    PACKET_FILE,
    PACKET_FORMAT,
    PACKET_KEYRING,
    PIN_FILE,
    PROOFS_DIR,
    README_FILE,
    VERIFY_REPORT,
    pin_document,
)
from nixcomply.evidence.statement import KeyRole, parse_statement
from nixcomply.evidence.store import STATEMENT_FILE, read_locked
from nixcomply.evidence.verify import Report, verify
from nixcomply.evidence.verify.packet import mentions


@dataclass(frozen=True)
class Exported:
    path: Path
    bundles: int
    tree_size: int
    checkpoints: int
    report: Report
    period: tuple[int, int]


# The auditor's own copies, which the command in the packet's README names; the test that
# runs that command (tests/test_evidence_export.py) puts real files there.
YOUR_KEYRING: Final = "/path/to/your/keyring.json"
YOUR_WITNESS: Final = "/path/to/your/witness.vkey"

WITNESS_TEXT: Final = """With `--witness` (the verifier key of the IT provider's evidence server, which cosigns
every checkpoint it accepted; `witness.vkey` in this packet is it, but take yours out of
band, as the keyring), verify requires the witness's cosignature on the newest checkpoint:
the host cannot have shown anyone another history."""

NO_WITNESS_TEXT: Final = """This host was not enrolled with an evidence server when the packet was made: there is no
witness cosignature to require (`--witness`)."""

README: Final = """# nixcomply evidence packet

Origin (log): `{origin}`. Period: {start} to {end} (dates of observation, UTC){controls}:
entries {first_seq} to {last_seq} of the log, every one of them, with the entries just
outside the period and the log's key rotations ({bundles} bundles in all). The log held
{tree_size} entries when this packet was made ({created}).

## Verify it (one command)

In the directory that holds this README (the packet unpacked):

    nixcomply evidence verify . --keyring {keyring}{witness_option}

or, without unpacking, the same with `{name}` in place of `.`. Use a keyring you obtained
from the clinic or its IT provider independently of this packet (or compare the
fingerprints below with theirs): the signatures prove only that the holders of these keys
made the records. Exit status 0 means every check passed, 3 that it
passed with warnings (for example an attestation that has expired), 1 that something was
altered or is missing (the first bad bundle is named), 2 that the command could not run.
Without nixcomply installed: `nix shell github:<org>/nixcomply -c nixcomply evidence verify ...`.
Without `--keyring` (or with the packet's own `keyring.json` or `pin.json`) verify uses the
keyring inside the packet, which proves only that the packet is intact, not who made it: it
then says so and exits 3. Keep `pin.json` outside the unpacked packet.

Keep `pin.json` once this packet verified with your keyring, and pass it next time:
`nixcomply evidence verify next.zip --pin-checkpoint pin.json`. It holds this packet's
newest checkpoint (the next packet's log must extend it: nothing removed or rewritten
since) and its keyring (trusted from then on; a key change must come with signed rotation
entries, which every packet carries).

{witness_text}

Key fingerprints (sha256 of the Ed25519 public key):

{fingerprints}

## What is inside

- `evidence/YYYY/MM/DD/<bundle>/`: one bundle per event. `statement.json` is an in-toto
  Statement v1 (https://in-toto.io/Statement/v1); its `predicateType` names the schema
  (`https://nixcomply.dev/evidence/<kind>/v1`: generation-change, remediation, check-run,
  attestation, key-rotation). `envelope.dsse.json` is a DSSE envelope
  (https://github.com/secure-systems-lab/dsse) whose payload is exactly `statement.json`,
  signed with Ed25519 over `PAE(payloadType, payload)`. `attachments/` holds raw outputs;
  each is a subject of the statement by sha256. Free text was passed through a PHI
  scrubber before signing: values like `[EMAIL-REDACTED-1a2b3c]` are redactions.
- `predicate.chain`: `seq` is the entry's position in the log (from 0), `prev` the sha256
  of the previous entry's envelope file (the entries form a hash chain), and `checkpoint`
  the sha256 of the checkpoint file the log had just before the entry.
- `log/leaves`: the RFC 6962 Merkle tree's leaves, 32 bytes each, leaf i =
  SHA-256(0x00 || bytes of entry i's envelope.dsse.json); nodes are
  SHA-256(0x01 || left || right).
- `log/checkpoints/<size>`: C2SP checkpoints (https://c2sp.org/tlog-checkpoint): origin,
  tree size and base64 root hash, signed as a C2SP signed note by the log key.
- `proofs/<seq>.json`: the inclusion proof of each bundle in the newest checkpoint's tree.
- `packet.json`: what the packet holds; `period` gives the sequence numbers of the period's
  entries (start inclusive, end exclusive), `entries` every bundle with its role (period,
  before, after, key-rotation). It is not signed: verify checks it against the evidence.
- `log/cosignatures/<size>`: witness cosignatures of a checkpoint, when the host has them.
- `index/controls.csv`: for each framework reference (HIPAA, SOC 2, CIS Controls v8,
  NIST SP 800-53, NIST CSF) the controls and the bundles that show them.
- `verify-report.json`: the result of verifying the whole store when the packet was made.
- `keyring.json`: the public keys with their role (bundle or log) and the range of entries
  each may sign.
"""


def _bundle_files(root: Path, rel: str) -> dict[str, bytes]:
    out = {}
    for path in sorted((root / rel).rglob("*")):
        if path.is_file():
            out[path.relative_to(root).as_posix()] = path.read_bytes()
    return out


def export_packet(
    root: Path,
    keyring: Keyring,
    out: Path,
    *,
    start: date,
    end: date,
    controls: Sequence[str] = (),
    jobs: int | None = None,
    host_head: LogHead | None = None,
    witness_key: str | None = None,
) -> Exported:
    """Verify the store, then write the packet for [start, end] to ``out`` (atomically,
    through :func:`~nixcomply.core.fsutil.write_output`: a directory, a symlink or a missing
    parent directory is refused before anything is verified).
    The witness's cosignatures of the packed checkpoints go with them, and its verifier key
    (``witness_key``, the MSP's server's) into ``witness.vkey``."""
    if end < start:
        raise UsageError(f"--to {end} is before --from {start}")
    check_output(out)  # before the verification: a directory as -o is refused at once
    try:
        witness = WitnessPublicKey.from_vkey(witness_key) if witness_key is not None else None
    except ValueError as e:
        raise UsageError(f"--witness: {e}") from None
    with read_locked(root):
        # The host's cosignatures by the witness the packet will name must verify by it.
        report = verify(
            root,
            keyring,
            source="the store's keyring",
            host_head=host_head,
            jobs=jobs,
            index=True,
            witnesses=[witness] if witness is not None else [],
        )
        first = report.first_error()
        if first is not None:
            raise VerificationError(
                f"the store does not verify, refusing to export: {first}",
                hint=f"run `nixcomply evidence verify {root}` for the full report",
            )
        packed = _pack(root, report, keyring, start=start, end=end, controls=controls)
    files, period = packed.files, packed.period
    if witness is not None:
        files[WITNESS_KEY_FILE] = (witness.vkey + "\n").encode()
    created = datetime.now(UTC).replace(microsecond=0)
    size = report.checkpoint_size
    packet: dict[str, Any] = {
        "format": PACKET_FORMAT,
        "origin": report.origin,
        "from": start.isoformat(),
        "to": end.isoformat(),
        "controls": list(controls),
        "created_at": created.isoformat().replace("+00:00", "Z"),
        "tree_size": size,
        "checkpoint": f"{CHECKPOINTS}/{checkpoint_name(size)}" if size else None,
        "period": {"start": period[0], "end": period[1]},
        "entries": packed.entries,
    }
    files[PACKET_FILE] = (json.dumps(packet, indent=2) + "\n").encode()
    entries: list[dict[str, Any]] = packet["entries"]
    fingerprints = "\n".join(
        f"- {e.role.value:6} {e.key.name}  {e.key.fingerprint}  (entries {e.valid_from}..{'' if e.valid_until is None else e.valid_until}, {e.status.value})"
        for e in keyring.keys
    )
    files[README_FILE] = README.format(
        origin=report.origin,
        start=start,
        end=end,
        controls=f", controls {', '.join(controls)}" if controls else "",
        first_seq=period[0],
        last_seq=period[1] - 1,
        bundles=len(entries),
        tree_size=size,
        created=packet["created_at"],
        name=out.name,
        keyring=YOUR_KEYRING,
        witness_option=f" --witness {YOUR_WITNESS}" if witness_key is not None else "",
        witness_text=WITNESS_TEXT if witness_key is not None else NO_WITNESS_TEXT,
        fingerprints=fingerprints,
    ).encode()
    buf = io.BytesIO()
    stamp = (created.year, created.month, created.day, created.hour, created.minute, created.second)
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name in sorted(files):
            info = zipfile.ZipInfo(name, date_time=stamp)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, files[name])
    write_output(out, buf.getvalue())
    return Exported(out, len(entries), size, packed.checkpoints, report, period)


@dataclass(frozen=True)
class _Packed:
    files: dict[str, bytes]
    entries: list[dict[str, Any]]
    period: tuple[int, int]
    checkpoints: int


def _pack(
    root: Path, report: Report, keyring: Keyring, *, start: date, end: date, controls: Sequence[str]
) -> _Packed:
    """Every file of the packet but packet.json and the README (read under the lock)."""
    size = report.checkpoint_size  # not the leaves: an append in flight is not covered yet
    index = {seq: e for seq, e in report.index.items() if seq < size}
    inside = sorted(seq for seq, e in index.items() if start <= e.day <= end)
    if inside:
        first, stop = inside[0], inside[-1] + 1
    else:
        first = stop = min((seq for seq, e in index.items() if e.day > end), default=size)
    roles = dict.fromkeys(range(first, stop), "period")
    if first > 0:
        roles[first - 1] = "before"
    if stop < size:
        roles[stop] = "after"
    for seq, e in index.items():
        if e.rotation:
            roles.setdefault(seq, "key-rotation")
    leaves = read_leaves(root)[:size]
    tree = Tree(leaves)
    root_hash = tree.root()
    files: dict[str, bytes] = {}
    listed: list[dict[str, Any]] = []
    wanted = set(controls)
    selected = []
    for seq in sorted(roles):
        e = index[seq]
        files.update(_bundle_files(root, e.path))
        files[f"{PROOFS_DIR}/{seq}.json"] = proof_document(
            seq, size, leaves[seq], root_hash, tree.inclusion_proof(seq)
        )
        listed.append(
            {
                "seq": seq,
                "bundle_id": e.bundle_id,
                "path": e.path,
                "envelope_sha256": e.envelope_sha256,
                "role": roles[seq],
            }
        )
        if roles[seq] == "period":
            statement = parse_statement(files[f"{e.path}/{STATEMENT_FILE}"])
            if not wanted or mentions(statement, wanted):
                selected.append((seq, e.path, e.bundle_id, statement))
    sizes = {size} if size else set()
    sizes |= set(range(first + 1, stop + 1))
    for seq, e in index.items():
        if e.rotation and _is_log_rotation(files, e.path) and seq + 1 <= size:
            sizes.add(seq + 1)
    for cp in sorted(sizes):
        for directory in (CHECKPOINTS, COSIGNATURES):
            path = root / directory / checkpoint_name(cp)
            if path.exists():
                files[f"{directory}/{checkpoint_name(cp)}"] = path.read_bytes()
    files[LEAVES] = b"".join(leaves)
    files[PACKET_KEYRING] = keyring.to_bytes()
    files[VERIFY_REPORT] = (json.dumps(report.to_json(), indent=2) + "\n").encode()
    files[INDEX_FILE] = control_index(selected)
    if size and report.origin is not None:
        files[PIN_FILE] = pin_document(
            report.origin, files[f"{CHECKPOINTS}/{checkpoint_name(size)}"], json.loads(keyring.to_bytes())
        )
    return _Packed(files, listed, (first, stop), len(sizes))


def _is_log_rotation(files: dict[str, bytes], path: str) -> bool:
    statement = parse_statement(files[f"{path}/{STATEMENT_FILE}"])
    return getattr(statement.predicate, "role", None) is KeyRole.LOG
