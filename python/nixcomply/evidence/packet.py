"""The auditor's packet format: its file names, ``packet.json``, ``pin.json``, and unpacking.

A packet is a zip (or the directory it unpacks to) that ``nixcomply evidence export``
writes and ``nixcomply evidence verify`` checks (``nixcomply.evidence.verify``); this module
is what both sides share, so neither imports the other::

    README.md                       for the auditor: the one command to verify, the formats
    packet.json                     what is inside (below); not signed: verify checks every
                                    claim in it against the signed evidence
    pin.json                        what to pin next time (below)
    keyring.json                    the public keys (pinned separately by the auditor)
    verify-report.json              the verification of the whole store at export time
    index/controls.csv              control -> bundle index (nixcomply.evidence.index)
    evidence/YYYY/MM/DD/<bundle>/   every entry of the period, the entries just outside it,
                                    and every key-rotation entry of the log, unchanged
    proofs/<seq>.json               RFC 6962 inclusion proof of each bundle's envelope in the
                                    tree of the newest checkpoint
    log/leaves                      every leaf hash of that tree (32 bytes each)
    log/checkpoints/<size>          the newest checkpoint, those written during the period
                                    and those covering a log-key rotation
    log/cosignatures/<size>         witness cosignatures of those checkpoints, when the host
                                    has them (c2sp.org/tlog-cosignature)

``packet.json``::

    {"format": "nixcomply-evidence-packet/v2", "origin": "...", "from": "2026-01-01",
     "to": "2026-03-31", "controls": [], "created_at": "...", "tree_size": 1234,
     "checkpoint": "log/checkpoints/000000001234",
     "period": {"start": 17, "end": 41},
     "entries": [{"seq": 16, "bundle_id": "...", "path": "evidence/...",
                  "envelope_sha256": "...", "role": "before"}, ...]}

``period`` is the half-open range of sequence numbers of the entries observed in
[from, to]: every one of them is in the packet (``role`` ``period``), with the entry just
before (``before``, observed before ``from``) and just after (``after``, observed after
``to``) as boundary evidence unless the period starts at the log's first entry or ends at
its newest. ``key-rotation`` entries outside the period let the verifier follow the keyring
from the auditor's pinned copy. An empty period has ``start == end``.

``pin.json`` is what an auditor keeps after verifying the packet with a pinned keyring, and
passes next time (``--pin-checkpoint pin.json``): the newest checkpoint (the log must
extend it) and the keyring (pinned from then on)::

    {"format": "nixcomply-evidence-pin/v1", "origin": "...", "checkpoint": "<note text>",
     "keyring": {...keyring.json...}}
"""

from __future__ import annotations

import json
import shutil
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Final

import pydantic

from nixcomply.core.yamlsource import read_bytes
from nixcomply.errors import InputError, UsageError, VerificationError
from nixcomply.evidence.checkpoint import NoteError, parse_checkpoint_text, parse_note
from nixcomply.evidence.keyring import Keyring

PACKET_FILE: Final = "packet.json"
PACKET_FORMAT: Final = "nixcomply-evidence-packet/v2"
PIN_FILE: Final = "pin.json"
PIN_FORMAT: Final = "nixcomply-evidence-pin/v1"
PACKET_KEYRING: Final = "keyring.json"
VERIFY_REPORT: Final = "verify-report.json"
README_FILE: Final = "README.md"
PROOFS_DIR: Final = "proofs"
# Entries of a packet by why they are in it.
ROLES: Final = ("period", "before", "after", "key-rotation")
# Files that inform the auditor and are not evidence (verify checks pin.json and
# packet.json against the evidence; these two it leaves alone).
INFORMATIONAL: Final = frozenset({README_FILE, VERIFY_REPORT})
# A pin is one checkpoint and a keyring: a few kilobytes.
MAX_PIN_BYTES: Final = 1024 * 1024
# The largest file a packet may unpack to (an attachment is a command's output: far less).
MAX_MEMBER_BYTES = 1024 * 1024 * 1024


def pin_document(origin: str, checkpoint: bytes, keyring: dict[str, Any]) -> bytes:
    """``pin.json`` in exactly the form nixcomply writes (two-space indent, final newline)."""
    doc = {
        "format": PIN_FORMAT,
        "origin": origin,
        "checkpoint": checkpoint.decode("utf-8"),
        "keyring": keyring,
    }
    return (json.dumps(doc, indent=2) + "\n").encode()


@dataclass(frozen=True)
class Pin:
    """What an auditor pins: a checkpoint the log must extend and, from a ``pin.json``, the
    keyring to trust from then on."""

    checkpoint: bytes
    keyring: Keyring | None
    source: Path


def read_pin(path: Path) -> Pin:
    """A bare checkpoint note, or a ``pin.json`` kept from an earlier packet. What is not one
    (garbage, a FIFO, a directory, a huge file) is an :class:`InputError` naming the file
    (exit 2): the auditor gave a wrong file, which says nothing about the evidence."""
    data = read_bytes(path, limit=MAX_PIN_BYTES)
    if data.lstrip().startswith(b"{"):
        try:
            doc = json.loads(data)
            if not isinstance(doc, dict) or doc.get("format") != PIN_FORMAT:
                raise ValueError(f"not a {PIN_FORMAT} document")
            checkpoint = str(doc["checkpoint"]).encode()
            keyring: Keyring | None = Keyring.model_validate(doc["keyring"])
        except (ValueError, KeyError, TypeError, RecursionError) as e:
            raise InputError.single(path, f"not a pin file: {_first_line(e)}") from None
    else:
        checkpoint, keyring = data, None
    try:
        parse_checkpoint_text(parse_note(checkpoint).text)
    except NoteError as e:
        raise InputError.single(
            path, f"not a checkpoint (nor a pin.json): {e}", field="checkpoint" if keyring else ""
        ) from None
    return Pin(checkpoint, keyring, path)


def _first_line(e: Exception) -> str:
    if isinstance(e, pydantic.ValidationError):
        err = e.errors(include_url=False)[0]
        return f"keyring.{'.'.join(str(p) for p in err['loc'])}: {err['msg']}"
    if isinstance(e, KeyError):
        return f"no {e.args[0]!r} field"
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def unpack(packet: Path, into: Path) -> None:
    """Extract a packet zip safely: no absolute paths, no ``..``, no links, no member named
    twice (another zip tool could show the auditor the other one), none under a member
    that is a file, none encrypted or compressed otherwise than export does, none larger
    than :data:`MAX_MEMBER_BYTES` and not more in all than the free space (checked on the
    sizes the zip declares before anything is written; a member is streamed to disk and
    never yields more than it declares). A member whose bytes do not decompress or match
    their CRC is tampering (``VerificationError``, exit 1), named."""
    try:
        zf = zipfile.ZipFile(packet)
    except (zipfile.BadZipFile, OSError) as e:
        raise UsageError(f"{packet}: not a readable zip file ({e})") from None
    with zf:
        infos = zf.infolist()
        into.mkdir(parents=True, exist_ok=True)
        _check_members(packet, infos, into)
        for info in infos:
            target = into / info.filename
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                with zf.open(info) as src, open(target, "xb") as dst:
                    shutil.copyfileobj(src, dst, 1024 * 1024)
            except (zipfile.BadZipFile, zlib.error, EOFError) as e:
                raise VerificationError(f"{packet}: the member {info.filename!r} is corrupt ({e})") from None


def _check_members(packet: Path, infos: list[zipfile.ZipInfo], into: Path) -> None:
    seen: set[str] = set()
    files = {i.filename for i in infos if not i.is_dir()}
    total = 0
    for info in infos:
        name = info.filename
        parts = Path(name).parts
        if name.startswith("/") or ".." in parts or (info.external_attr >> 16) & 0o170000 == 0o120000:
            raise VerificationError(f"{packet}: unsafe member name {name!r}")
        key = name.rstrip("/")
        if key in seen:
            raise VerificationError(
                f"{packet}: the member {name!r} appears twice (a zip tool may show either one)"
            )
        seen.add(key)
        above = next((str(p) for p in PurePosixPath(key).parents if str(p) in files), None)
        if above is not None:
            raise VerificationError(f"{packet}: the member {name!r} lies under {above!r}, which is a file")
        if info.flag_bits & 0x1:
            raise VerificationError(f"{packet}: the member {name!r} is encrypted (export never writes one)")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise VerificationError(
                f"{packet}: the member {name!r} uses compression method {info.compress_type} "
                "(export writes only deflate)"
            )
        if info.file_size > MAX_MEMBER_BYTES:
            raise VerificationError(
                f"{packet}: the member {name!r} unpacks to {info.file_size} bytes, "
                f"more than a packet member may ({MAX_MEMBER_BYTES})"
            )
        total += info.file_size
    free = shutil.disk_usage(into).free
    if total > free:
        raise UsageError(
            f"{packet}: unpacks to {total} bytes, but {into} has only {free} free",
            hint="point TMPDIR at a larger filesystem, or unpack it yourself and verify the directory",
        )
