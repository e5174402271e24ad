"""Witness cosignatures beside the checkpoints (``log/cosignatures/<size>``).

A cosignature file is evidence like any other file of a store or packet, so what a verifier
does with it does not depend on whether it was asked about a witness:

* every file must be well formed: UTF-8, at most :data:`MAX_COSIGNATURE_BYTES`, one or more
  signature lines, each a cosignature/v1 blob (``c2sp.org/tlog-cosignature``), and beside
  a checkpoint of the same size (:func:`~.layout.scan` says so when there is none);
* every cosignature by a witness key the verifier knows — the one given as ``--witness``,
  and the one a packet names in ``witness.vkey`` — must verify over that checkpoint: a
  cosignature that claims a known witness and does not verify is a forgery, an error
  wherever it is (not only on the newest checkpoint);
* cosignatures by other witnesses are kept but cannot be judged (the spec lets a verifier
  ignore keys it does not know);
* with ``--witness`` the newest checkpoint must carry a valid cosignature by that key.

A packet's own ``witness.vkey`` is not pinned (it sits in the directory verified): it only
lets the verifier catch a packet whose cosignatures contradict the key it names. Only
``--witness`` shows the witness saw this history.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from nixcomply.evidence.checkpoint import NoteError, parse_note
from nixcomply.evidence.cosignature import (
    WITNESS_KEY_FILE,
    Cosignature,
    WitnessPublicKey,
    parse_cosignatures,
    verify_cosignature,
)
from nixcomply.evidence.log import COSIGNATURES, checkpoint_name
from nixcomply.evidence.verify.checkpoint import Reader, checkpoint_rel
from nixcomply.evidence.verify.report import Rank, Report

# A few witnesses' lines: a file beyond this is not a cosignature file.
MAX_COSIGNATURE_BYTES: Final = 64 * 1024


def cosignature_rel(size: int) -> str:
    return f"{COSIGNATURES}/{checkpoint_name(size)}"


def packet_witness(report: Report, read: Reader) -> WitnessPublicKey | None:
    """The witness key a packet names (``witness.vkey``), or None; a malformed one is an
    error (export writes it, so nothing else may be there)."""
    data = read(WITNESS_KEY_FILE)
    if data is None:
        return None
    try:
        return WitnessPublicKey.from_vkey(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        report.error(f"not a witness verifier key: {e}", path=WITNESS_KEY_FILE, rank=Rank.STORE)
        return None


def check_cosignatures(
    report: Report,
    read: Reader,
    *,
    sizes: Sequence[int],
    checkpoints: Sequence[int],
    known: Sequence[WitnessPublicKey],
    required: WitnessPublicKey | None,
    newest: int,
) -> None:
    """Check every cosignature file (see the module docstring); ``sizes`` are the files,
    ``checkpoints`` the checkpoint files there are, ``newest`` the newest checkpoint's size
    (0: none)."""
    present = set(checkpoints)
    valid: dict[int, set[tuple[str, int]]] = {}
    for size in sizes:
        if size not in present:
            continue  # said by the layout scan
        rel = cosignature_rel(size)
        cosignatures = _parse(report, read, rel)
        note = read(checkpoint_rel(size))
        if cosignatures is None or note is None:
            continue
        try:
            text = parse_note(note).text
        except NoteError:
            continue  # the checkpoint's own check says what is wrong with it
        for key in known:
            mine = [c for c in cosignatures if (c.name, c.key_id) == (key.name, key.key_id)]
            if not mine:
                continue
            try:
                verify_cosignature(text, mine, key)
            except NoteError as e:
                report.error(
                    f"{e} over checkpoint {size}: forged or for another checkpoint", path=rel, rank=Rank.STORE
                )
            else:
                valid.setdefault(size, set()).add((key.name, key.key_id))
    if required is None:
        return
    who = f"witness {required.name}"
    if newest == 0:
        report.error(f"{who}: no checkpoint to be cosigned", path=COSIGNATURES, rank=Rank.STORE)
    elif newest not in sizes:
        report.error(
            f"{who}: the newest checkpoint is not cosigned by a witness (not uploaded yet?)",
            path=cosignature_rel(newest),
            rank=Rank.STORE,
        )
    elif (required.name, required.key_id) not in valid.get(newest, set()):
        report.error(
            f"{who}: not cosigned by witness {required.name}+{required.key_id:08x}",
            path=cosignature_rel(newest),
            rank=Rank.STORE,
        )


def _parse(report: Report, read: Reader, rel: str) -> list[Cosignature] | None:
    data = read(rel)
    if data is None:
        return None
    problem = None
    if len(data) > MAX_COSIGNATURE_BYTES:
        problem = f"{len(data)} bytes, more than a cosignature file holds ({MAX_COSIGNATURE_BYTES})"
    else:
        try:
            cosignatures = parse_cosignatures(data.decode("utf-8"))
        except UnicodeDecodeError:
            problem = "not valid UTF-8"
        except NoteError as e:
            problem = str(e)
        else:
            if cosignatures:
                return cosignatures
            problem = "holds no cosignature/v1 line"
    report.error(f"not a cosignature file: {problem}", path=rel, rank=Rank.STORE)
    return None
