"""C2SP signed notes (c2sp.org/signed-note) and log checkpoints (c2sp.org/tlog-checkpoint).

A checkpoint file is a signed note whose text is three lines — the log's origin, the tree
size in decimal, the base64 RFC 6962 root hash — followed by a blank line and one
signature line per key: ``— <key name> base64(4-byte key id || Ed25519 signature)``.
The key id is ``SHA-256(name || 0x0A || 0x01 || public key)[:4]``, so a checkpoint
verifies with any standard tool given the log's verifier key (``nixcomply.evidence.keys``)::

    nixcomply.example/clinic-01
    17
    u7kS1XvNAbJrzUNfUYg5nzGUVcnF3Qdwo4jkAPxjE4E=

    — nixcomply.example/clinic-01 c2rXH0bPx...

Verification follows the spec: signatures from unknown keys (name and id not both known)
are ignored, a known key whose signature fails rejects the note, and at least one known
key must have signed.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from nixcomply.evidence.keys import PublicKey, Signer

EM_DASH: Final = "\u2014"
MAX_SIGNATURES: Final = 100
_CONTROL: Final = re.compile(r"[\x00-\x09\x0b-\x1f]")


class NoteError(ValueError):
    """A note or checkpoint is malformed or its signatures do not verify."""


@dataclass(frozen=True)
class NoteSignature:
    name: str
    key_id: int
    signature: bytes

    def line(self) -> str:
        blob = base64.b64encode(self.key_id.to_bytes(4, "big") + self.signature).decode()
        return f"{EM_DASH} {self.name} {blob}\n"


@dataclass(frozen=True)
class Note:
    text: str
    signatures: tuple[NoteSignature, ...]

    def to_bytes(self) -> bytes:
        return (self.text + "\n" + "".join(s.line() for s in self.signatures)).encode("utf-8")


def sign_note(text: str, signers: Sequence[Signer]) -> bytes:
    """The signed note of ``text`` (which must end in a newline) by ``signers``."""
    if not text.endswith("\n") or _CONTROL.search(text):
        raise NoteError("note text must end in a newline and contain no control characters")
    data = text.encode("utf-8")
    sigs = tuple(NoteSignature(s.name, s.public.key_id, s.sign(data)) for s in signers)
    return Note(text, sigs).to_bytes()


def parse_note(data: bytes) -> Note:
    """Split a signed note into its text and signature lines (without verifying)."""
    try:
        message = data.decode("utf-8")
    except UnicodeDecodeError:
        raise NoteError("not valid UTF-8") from None
    if _CONTROL.search(message):
        raise NoteError("contains a control character other than newline")
    if not message.endswith("\n"):
        raise NoteError("does not end in a newline")
    split = message.rfind("\n\n")
    if split < 0:
        raise NoteError("no blank line before the signature lines")
    text = message[: split + 1]
    lines = message[split + 2 :].splitlines()
    if not lines:
        raise NoteError("no signature lines")
    if len(lines) > MAX_SIGNATURES:
        raise NoteError(f"more than {MAX_SIGNATURES} signatures")
    sigs = []
    for line in lines:
        if not line.startswith(EM_DASH + " "):
            raise NoteError(f"malformed signature line {line[:40]!r}")
        parts = line[2:].split(" ")
        if len(parts) != 2 or not parts[0]:
            raise NoteError(f"malformed signature line {line[:40]!r}")
        name, blob = parts
        # Standard base64 in its one canonical spelling (c2sp.org/signed-note): a note is
        # checked byte for byte, so two spellings of one signature must not both pass.
        try:
            raw = base64.b64decode(blob, validate=True)
        except ValueError as e:
            raise NoteError(f"signature of {name}: not valid base64: {e}") from None
        if base64.b64encode(raw).decode() != blob:
            raise NoteError(f"signature of {name}: not in canonical base64")
        if len(raw) < 5:
            raise NoteError(f"signature of {name} is too short")
        sigs.append(NoteSignature(name, int.from_bytes(raw[:4], "big"), raw[4:]))
    return Note(text, tuple(sigs))


def verify_note(note: Note, known: Sequence[PublicKey]) -> list[PublicKey]:
    """The known keys whose signatures verify; :class:`NoteError` if none does or if a
    known key's signature fails."""
    by_id = {(k.name, k.key_id): k for k in known}
    data = note.text.encode("utf-8")
    verified: list[PublicKey] = []
    for sig in note.signatures:
        key = by_id.get((sig.name, sig.key_id))
        if key is None:
            continue
        if not key.verify(sig.signature, data):
            raise NoteError(f"signature of {sig.name} ({sig.key_id:08x}) does not verify")
        if key not in verified:
            verified.append(key)
    if not verified:
        names = ", ".join(f"{s.name}+{s.key_id:08x}" for s in note.signatures)
        raise NoteError(f"not signed by a trusted log key (signed by: {names})")
    return verified


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def text(self) -> str:
        lines = [self.origin, str(self.size), base64.b64encode(self.root).decode(), *self.extensions]
        return "\n".join(lines) + "\n"

    def sign(self, signers: Sequence[Signer]) -> bytes:
        return sign_note(self.text(), signers)


def parse_checkpoint_text(text: str) -> Checkpoint:
    lines = text.split("\n")
    if lines[-1] != "" or len(lines) < 4:
        raise NoteError("a checkpoint has at least three lines: origin, size, root")
    origin, size_line, root_line, *extensions = lines[:-1]
    if not origin:
        raise NoteError("empty origin line")
    if not re.fullmatch(r"0|[1-9][0-9]*", size_line):
        raise NoteError(f"tree size {size_line!r} is not a decimal number without leading zeros")
    try:
        root = base64.b64decode(root_line, validate=True)
    except ValueError:
        raise NoteError("root hash is not base64") from None
    if base64.b64encode(root).decode() != root_line:
        raise NoteError("root hash is not in canonical base64")
    if len(root) != 32:
        raise NoteError(f"root hash is {len(root)} bytes, expected 32")
    if any(not e for e in extensions):
        raise NoteError("empty extension line")
    return Checkpoint(origin, int(size_line), root, tuple(extensions))


@dataclass(frozen=True)
class SignedCheckpoint:
    checkpoint: Checkpoint
    note: Note
    verified_by: tuple[PublicKey, ...]


def open_checkpoint(data: bytes, known: Sequence[PublicKey]) -> SignedCheckpoint:
    """Parse and verify a checkpoint file against the trusted log keys."""
    note = parse_note(data)
    keys = verify_note(note, known)
    return SignedCheckpoint(parse_checkpoint_text(note.text), note, tuple(keys))
