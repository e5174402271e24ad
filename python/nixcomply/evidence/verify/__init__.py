"""Offline verification of evidence: a store, an auditor's packet, or a run of envelopes.

What verification proves depends on what the verifier pins, and the report says which:

* **the keyring** (``keyring_pinned``). Signatures only show that the holder of a key made
  a record. With a keyring the auditor obtained through another channel (``--keyring``), or
  the keyring of a ``pin.json`` kept from an earlier packet that verified with a pinned
  keyring, verification shows the records were made by the clinic's keys. With the keyring
  found inside the directory it shows only that the evidence is intact and consistent:
  whoever can write the directory can replace the keys and re-sign everything, so the
  result is a warning (exit 3), never plain OK. A keyring found beside the evidence must be
  exactly the pinned one as changed by the signed rotation entries of the log.
* **how far the log reached** (``pinned``, ``host_size``). On its own a log can be cut
  short or replaced by an older copy of itself and still be consistent. A pinned earlier
  checkpoint (``--pin-checkpoint``; ``nixcomply status`` and every packet say which file
  to keep) proves the log still extends it; the size the host's state database recorded
  after every append proves the log was not rolled back behind it — unless the whole state
  directory was, which only a pin (or a witness's cosignature) catches.

What is checked, for every bundle: the DSSE signature by a bundle key trusted for that
entry's sequence number (a key-rotation entry also by both keys it names), that
``statement.json`` is byte for byte the signed payload and a valid statement, that every
attachment's sha256 is a subject and nothing else lies in the bundle, that the directory
names match the bundle id and date, and that ``chain.prev`` is the sha256 of the previous
envelope. Nothing an envelope says is used to judge anything else before its signature has
been judged, so the first error is always the entry that was changed. For the log: one
authentic bundle per sequence number with none missing, each envelope's leaf equal to the
stored leaf, every checkpoint the root of the tree at its size, authentic by the log key's
signature or by the digest the next entry signed (``chain.checkpoint``), every witness
cosignature beside them well formed and, by a witness key the verifier knows, valid
(:mod:`.cosignatures`), the append state
and intent record agreeing, and nothing in the directory that does not belong there. A
packet must prove it holds every entry of its period (``nixcomply.evidence.verify.packet``).

Warnings (exit 3) are states that are legitimate but need a person: a keyring that is not
pinned, an append that was interrupted and will be finished or undone on the next open of
the store, an attestation whose latest renewal has expired, a rotation the keyring file
does not show yet.

The API:

* :func:`verify_path` — a store directory, an unpacked packet or a packet ``.zip`` (what
  ``nixcomply evidence verify`` calls); :func:`verify` — a directory.
* :func:`verify_entries` — envelopes that continue a log the caller keeps (a fleet server
  re-verifying an upload), against the keyring it pins and a :class:`LogPosition`, with the
  checkpoint they end at and a consistency proof; see :mod:`.entries`.
* :class:`Report` — the findings (``first_error()``, ``exit_code``, ``to_json()``, ``lines()``).

The parts: :mod:`.bundle` (one bundle or envelope), :mod:`.parallel` (all cores),
:mod:`.trust` (keyring history, which claims are authentic), :mod:`.chain` (the sequence),
:mod:`.checkpoint` (checkpoints, pins, the host's record), :mod:`.layout` (what may lie
where, the append state), :mod:`.packet` (completeness), :mod:`.directory` (the steps).
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from datetime import UTC, date, datetime
from pathlib import Path

from nixcomply.errors import UsageError
from nixcomply.evidence.cosignature import WitnessPublicKey
from nixcomply.evidence.keyring import Keyring
from nixcomply.evidence.log import LogHead
from nixcomply.evidence.packet import PIN_FILE, unpack
from nixcomply.evidence.verify.directory import Trust, verify_directory
from nixcomply.evidence.verify.entries import Accepted, EntriesResult, Entry, LogPosition, verify_entries
from nixcomply.evidence.verify.parallel import Progress, default_jobs
from nixcomply.evidence.verify.report import (
    Check,
    PinJson,
    ProblemJson,
    Rank,
    Report,
    ReportJson,
    VerifyProblem,
)

__all__ = [
    "Accepted",
    "Check",
    "EntriesResult",
    "Entry",
    "LogHead",
    "LogPosition",
    "PinJson",
    "ProblemJson",
    "Progress",
    "Rank",
    "Report",
    "ReportJson",
    "Trust",
    "VerifyProblem",
    "default_jobs",
    "verify",
    "verify_entries",
    "verify_path",
]


def verify(
    path: Path,
    keyring: Keyring | None,
    *,
    pinned: bool = True,
    source: str | None = None,
    pin: bytes | None = None,
    host_head: LogHead | None = None,
    today: date | None = None,
    progress: Progress | None = None,
    jobs: int | None = None,
    all_checkpoints: bool = False,
    index: bool = False,
    witness: WitnessPublicKey | None = None,
    witnesses: Sequence[WitnessPublicKey] = (),
) -> Report:
    """Verify a store or an unpacked packet directory (see the module docstring).

    ``keyring`` is the pinned keyring (``pinned=False`` if it is not the auditor's own);
    None uses the one inside ``path``, unpinned. ``pin`` is a checkpoint note the log must
    extend, ``host_head`` what the host's state database recorded (``nixcomply.host.state``);
    ``index`` fills ``Report.index`` (every authentic entry's place, for export);
    ``witness`` must have cosigned the newest checkpoint, and every cosignature by it or by
    one of ``witnesses`` must verify (:mod:`.cosignatures`)."""
    trust = (
        None
        if keyring is None
        else Trust(keyring, pinned, source or ("the keyring given" if pinned else "not pinned"))
    )
    return verify_directory(
        path,
        trust,
        pin=pin,
        head=host_head,
        today=today or datetime.now(UTC).date(),
        progress=progress,
        jobs=default_jobs() if jobs is None else jobs,
        all_checkpoints=all_checkpoints,
        index=index,
        witness=witness,
        witnesses=witnesses,
    )


def verify_path(
    path: Path,
    keyring: Keyring | None,
    *,
    pinned: bool = True,
    source: str | None = None,
    pin: bytes | None = None,
    host_head: LogHead | None = None,
    today: date | None = None,
    progress: Progress | None = None,
    jobs: int | None = None,
    all_checkpoints: bool = False,
    witness: WitnessPublicKey | None = None,
) -> Report:
    """:func:`verify` for a store directory, an unpacked packet or a packet ``.zip``."""
    if path.is_file():
        with tempfile.TemporaryDirectory(prefix="nixcomply-packet-") as tmp:
            unpack(path, Path(tmp))
            report = verify(
                Path(tmp),
                keyring,
                pinned=pinned,
                source=source,
                pin=pin,
                host_head=host_head,
                today=today,
                progress=progress,
                jobs=jobs,
                all_checkpoints=all_checkpoints,
                witness=witness,
            )
            report.path = path
            if report.pin_next is not None:
                report.pin_next = f"{PIN_FILE} (extract it from {path})"
            for findings in (report.errors, report.warnings):
                findings[:] = [
                    f
                    if tmp not in f.message
                    else VerifyProblem(f.severity, f.message.replace(tmp, str(path)), f.seq, f.path, f.rank)
                    for f in findings
                ]
            return report
    if not path.is_dir():
        raise UsageError(f"{path}: no such directory or packet")
    return verify(
        path,
        keyring,
        pinned=pinned,
        source=source,
        pin=pin,
        host_head=host_head,
        today=today,
        progress=progress,
        jobs=jobs,
        all_checkpoints=all_checkpoints,
        witness=witness,
    )
