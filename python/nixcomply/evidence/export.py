"""The auditor's packet: the bundles of a period, with everything needed to verify them offline.

``nixcomply evidence export --from 2026-01-01 --to 2026-03-31 -o packet.zip`` first verifies
the whole store (an export of evidence that does not verify is refused), then writes a zip:

    README.md                       for the auditor: the one command to verify, and the formats
    packet.json                     what is inside (format, origin, period, tree size, entries)
    keyring.json                    the public keys (compare fingerprints out of band)
    verify-report.json              the verification of the whole store at export time
    index/controls.csv              control -> bundle index across hipaa, soc2, cis_v8,
                                    nist_800_53 and nist_csf
    evidence/YYYY/MM/DD/<bundle>/   the bundles of the period, unchanged
    proofs/<seq>.json               RFC 6962 inclusion proof of each bundle's envelope in the
                                    tree of the newest checkpoint
    log/leaves                      every leaf hash of that tree (32 bytes each), so the root
                                    and any earlier checkpoint can be recomputed
    log/checkpoints/<size>          the newest checkpoint and those written during the period
    log/cosignatures/<size>         the witness's cosignatures of those checkpoints, when uploaded
    witness.vkey                    the witness's verifier key (the MSP's server), when enrolled

``packet.json``::

    {"format": "nixcomply-evidence-packet/v1", "origin": "...", "from": "2026-01-01",
     "to": "2026-03-31", "controls": [], "created_at": "...", "tree_size": 1234,
     "checkpoint": "log/checkpoints/000000001234",
     "entries": [{"seq": 17, "bundle_id": "...", "path": "evidence/...", "envelope_sha256": "..."}]}

``proofs/<seq>.json``: ``{"index": 17, "tree_size": 1234, "leaf_hash": "<base64>",
"root": "<base64>", "inclusion_path": ["<base64>", ...]}`` (RFC 9162 §2.1.3 order).
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from hashlib import sha256
from pathlib import Path
from typing import Final

from nixcomply.core.fsutil import atomic_write
from nixcomply.errors import UsageError, VerificationError
from nixcomply.evidence import dsse
from nixcomply.evidence.cosignature import COSIGNATURES, WITNESS_KEY_FILE, WitnessPublicKey
from nixcomply.evidence.index import INDEX_FILE, control_index
from nixcomply.evidence.keyring import Keyring
from nixcomply.evidence.log import CHECKPOINTS, LEAVES, checkpoint_name, read_leaves
from nixcomply.evidence.merkle import Tree, proof_document
from nixcomply.evidence.statement import Attestation, Statement, parse_statement
from nixcomply.evidence.store import ENVELOPE_FILE, EVIDENCE_DIR
from nixcomply.evidence.verify import PACKET_FILE, PACKET_FORMAT, PROOFS_DIR, Report, verify


@dataclass(frozen=True)
class Selected:
    seq: int
    path: str
    bundle_id: str
    envelope_sha256: str
    statement: Statement


@dataclass(frozen=True)
class Exported:
    path: Path
    bundles: int
    tree_size: int
    checkpoints: int
    report: Report


def _days(start: date, end: date) -> Iterator[date]:
    day = start
    while day <= end:
        yield day
        day += timedelta(days=1)


def _mentions(statement: Statement, wanted: set[str]) -> bool:
    p = statement.predicate
    ids = {c.id for c in p.controls}
    refs = {ref for c in p.controls for _fw, ref in c.frameworks.items()}
    if isinstance(p, Attestation):
        ids.add(p.control)
    return bool(wanted & (ids | refs))


def select(root: Path, start: date, end: date, tree_size: int, controls: Sequence[str]) -> list[Selected]:
    """The bundles observed in [start, end] (UTC dates) that a checkpoint covers."""
    wanted = set(controls)
    out = []
    for day in _days(start, end):
        directory = root / EVIDENCE_DIR / f"{day:%Y}" / f"{day:%m}" / f"{day:%d}"
        if not directory.is_dir():
            continue
        for entry in sorted(os.scandir(directory), key=lambda e: e.name):
            if entry.name.startswith(".") or not entry.is_dir():
                continue
            data = Path(entry.path, ENVELOPE_FILE).read_bytes()
            statement = parse_statement(dsse.parse(data).payload)
            chain = statement.predicate.chain
            assert chain is not None  # verify has passed
            if chain.seq >= tree_size or (wanted and not _mentions(statement, wanted)):
                continue
            rel = f"{EVIDENCE_DIR}/{day:%Y}/{day:%m}/{day:%d}/{entry.name}"
            out.append(Selected(chain.seq, rel, entry.name, sha256(data).hexdigest(), statement))
    return sorted(out, key=lambda s: s.seq)


README: Final = """# nixcomply evidence packet

Origin (log): `{origin}`. Period: {start} to {end} (dates of observation, UTC){controls}.
{bundles} bundles; the log held {tree_size} entries when this packet was made ({created}).

## Verify it (one command)

    nixcomply evidence verify {name} --keyring /path/to/your/copy/of/keyring.json

Use a keyring you obtained from the clinic or its IT provider independently of this packet
(or compare the fingerprints below with theirs): the signatures prove only that the
holders of these keys made the records. Exit status 0 means every check passed, 3 that it
passed with warnings (for example an attestation that has expired), 1 that something was
altered or is missing (the first bad bundle is named), 2 that the command could not run.
`nixcomply` runs from its flake: `nix run github:<org>/nixcomply -- evidence verify ...`.
With `--pin-checkpoint FILE`, verify also proves that the log still extends a checkpoint
you kept from an earlier packet (nothing was removed or rewritten since). With
`--witness witness.vkey` (the key of the IT provider's evidence server, which cosigns every
checkpoint it accepted; compare it out of band too), verify requires the witness's
cosignature on the newest checkpoint: the host cannot have shown anyone another history.

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
- `index/controls.csv`: for each framework reference (HIPAA, SOC 2, CIS Controls v8,
  NIST SP 800-53, NIST CSF) the controls and the bundles that show them.
- `verify-report.json`: the result of verifying the whole store when the packet was made.
- `keyring.json`: the public keys with their role (bundle or log) and the range of entries
  each may sign.
"""


def export_packet(
    root: Path,
    keyring: Keyring,
    out: Path,
    *,
    start: date,
    end: date,
    controls: Sequence[str] = (),
    jobs: int | None = None,
    witness_key: str | None = None,
) -> Exported:
    """Verify the store, then write the packet for [start, end] to ``out`` (atomically).
    The witness's cosignatures of the packed checkpoints go with them, and its verifier key
    (``witness_key``, the MSP's server's) into ``witness.vkey``."""
    if end < start:
        raise UsageError(f"--to {end} is before --from {start}")
    report = verify(root, keyring, jobs=jobs)
    first = report.first_error()
    if first is not None:
        raise VerificationError(
            f"the store does not verify, refusing to export: {first}",
            hint=f"run `nixcomply evidence verify {root}` for the full report",
        )
    # The newest checkpoint, not the leaves: an append in flight is not covered yet.
    size = report.checkpoint_size
    selected = select(root, start, end, size, controls)
    leaves = read_leaves(root)[:size]
    tree = Tree(leaves)
    root_hash = tree.root()
    files: dict[str, bytes] = {}
    for s in selected:
        for path in sorted((root / s.path).rglob("*")):
            if path.is_file():
                files[path.relative_to(root).as_posix()] = path.read_bytes()
        files[f"{PROOFS_DIR}/{s.seq}.json"] = proof_document(
            s.seq, size, leaves[s.seq], root_hash, tree.inclusion_proof(s.seq)
        )
    sizes = {size} if size else set()
    if selected:
        sizes |= set(range(selected[0].seq + 1, selected[-1].seq + 2))
    for cp in sorted(sizes):
        rel = f"{CHECKPOINTS}/{checkpoint_name(cp)}"
        files[rel] = (root / rel).read_bytes()
        cosigned = root / COSIGNATURES / checkpoint_name(cp)
        if cosigned.is_file():
            files[f"{COSIGNATURES}/{checkpoint_name(cp)}"] = cosigned.read_bytes()
    if witness_key is not None:
        files[WITNESS_KEY_FILE] = (WitnessPublicKey.from_vkey(witness_key).vkey + "\n").encode()
    files[LEAVES] = b"".join(leaves)
    files["keyring.json"] = keyring.to_bytes()
    files["verify-report.json"] = (json.dumps(report.to_json(), indent=2) + "\n").encode()
    files[INDEX_FILE] = control_index([(x.seq, x.path, x.bundle_id, x.statement) for x in selected])
    created = datetime.now(UTC).replace(microsecond=0)
    packet = {
        "format": PACKET_FORMAT,
        "origin": report.origin,
        "from": start.isoformat(),
        "to": end.isoformat(),
        "controls": list(controls),
        "created_at": created.isoformat().replace("+00:00", "Z"),
        "tree_size": size,
        "checkpoint": f"{CHECKPOINTS}/{checkpoint_name(size)}" if size else None,
        "entries": [
            {"seq": s.seq, "bundle_id": s.bundle_id, "path": s.path, "envelope_sha256": s.envelope_sha256}
            for s in selected
        ],
    }
    files[PACKET_FILE] = (json.dumps(packet, indent=2) + "\n").encode()
    fingerprints = "\n".join(
        f"- {e.role.value:6} {e.key.name}  {e.key.fingerprint}  (entries {e.valid_from}..{'' if e.valid_until is None else e.valid_until}, {e.status.value})"
        for e in keyring.keys
    )
    files["README.md"] = README.format(
        origin=report.origin,
        start=start,
        end=end,
        controls=f", controls {', '.join(controls)}" if controls else "",
        bundles=len(selected),
        tree_size=size,
        created=packet["created_at"],
        name=out.name,
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
    atomic_write(out, buf.getvalue())
    return Exported(out, len(selected), size, len(sizes), report)


def unpack(packet: Path, into: Path) -> None:
    """Extract a packet zip safely (no absolute paths, no ``..``, no links)."""
    try:
        zf = zipfile.ZipFile(packet)
    except (zipfile.BadZipFile, OSError) as e:
        raise UsageError(f"{packet}: not a readable zip file ({e})") from None
    with zf:
        for info in zf.infolist():
            name = info.filename
            parts = Path(name).parts
            if name.startswith("/") or ".." in parts or (info.external_attr >> 16) & 0o170000 == 0o120000:
                raise VerificationError(f"{packet}: unsafe member name {name!r}")
            target = into / name
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(zf.read(info))
