"""Witness cosignatures on checkpoints (c2sp.org/tlog-cosignature, ``cosignature/v1``, Ed25519).

A witness (the fleet server) cosigns a host's checkpoint once it has checked that the
checkpoint is consistent with every one it accepted from that host before. The cosignature
is one signed-note signature line::

    — <witness name> base64(key id (4) || timestamp (8, big-endian) || Ed25519 signature (64))

over the message ``cosignature/v1\\ntime <timestamp>\\n`` followed by the whole checkpoint
text. The key id is ``SHA-256(name || 0x0A || 0x04 || public key)[:4]``: the 0x04 keeps a
witness key from ever being mistaken for a log key. The witness's public key is written as
a verifier key with algorithm byte 0x04 (``name+keyid+base64(0x04 || key)``), and its
private key file as ``PRIVATE+KEY+name+keyid+base64(0x04 || seed)`` (mode 0600).

The host keeps the cosignature lines the server returned beside each checkpoint
(``log/cosignatures/<size>``); ``nixcomply evidence verify --witness VKEY`` requires a valid
one on the newest checkpoint.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import stat
import time
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from nixcomply.core.fsutil import read_regular
from nixcomply.core.yamlsource import read_text
from nixcomply.errors import InputError
from nixcomply.evidence.checkpoint import EM_DASH, NoteError, parse_checkpoint_text, parse_note
from nixcomply.evidence.keys import PRIVATE_PREFIX, b64decode_strict, check_key_name
from nixcomply.evidence.log import COSIGNATURES

COSIGNATURE_V1: Final = 0x04
WITNESS_KEY_FILE: Final = "witness.vkey"
HEADER: Final = "cosignature/v1"
MAX_TIMESTAMP: Final = 2**63 - 1
MAX_MEMBER_BYTES: Final = 1024 * 1024
_LINE: Final = re.compile(rf"^{EM_DASH} (\S+) ([A-Za-z0-9+/]+=*)$")


def witness_key_id(name: str, public: bytes) -> int:
    digest = hashlib.sha256(name.encode() + b"\n" + bytes([COSIGNATURE_V1]) + public).digest()
    return int.from_bytes(digest[:4], "big")


def signed_message(checkpoint_text: str, timestamp: int) -> bytes:
    return f"{HEADER}\ntime {timestamp}\n{checkpoint_text}".encode()


@dataclass(frozen=True)
class WitnessPublicKey:
    name: str
    raw: bytes
    key_id: int = field(init=False, compare=False)

    def __post_init__(self) -> None:
        check_key_name(self.name)
        if len(self.raw) != 32:
            raise ValueError(f"an Ed25519 public key is 32 bytes, got {len(self.raw)}")
        object.__setattr__(self, "key_id", witness_key_id(self.name, self.raw))

    @property
    def vkey(self) -> str:
        material = base64.b64encode(bytes([COSIGNATURE_V1]) + self.raw).decode()
        return f"{self.name}+{self.key_id:08x}+{material}"

    @classmethod
    def from_vkey(cls, vkey: str) -> WitnessPublicKey:
        parts = vkey.strip().split("+", 2)
        if len(parts) != 3 or not re.fullmatch(r"[0-9a-f]{8}", parts[1]):
            raise ValueError("a witness key has the form name+keyid+base64(0x04||key)")
        material = b64decode_strict(parts[2])
        if len(material) != 33 or material[0] != COSIGNATURE_V1:
            raise ValueError(
                "the key material is not 0x04 (cosignature/v1) followed by a 32-byte Ed25519 key"
            )
        key = cls(parts[0], material[1:])
        if f"{key.key_id:08x}" != parts[1]:
            raise ValueError(f"key id {parts[1]} does not match the witness key")
        return key


@dataclass(frozen=True)
class Witness:
    """The witness's signing key."""

    name: str
    private_key: Ed25519PrivateKey = field(repr=False)

    @property
    def public(self) -> WitnessPublicKey:
        return WitnessPublicKey(self.name, self.private_key.public_key().public_bytes_raw())

    def cosign(self, checkpoint_text: str, *, timestamp: int | None = None) -> str:
        """The cosignature line (ending in a newline) on a checkpoint's note text."""
        ts = int(time.time()) if timestamp is None else timestamp
        if not 0 <= ts <= MAX_TIMESTAMP:
            raise ValueError("timestamp out of range")
        sig = self.private_key.sign(signed_message(checkpoint_text, ts))
        blob = self.public.key_id.to_bytes(4, "big") + ts.to_bytes(8, "big") + sig
        return f"{EM_DASH} {self.name} {base64.b64encode(blob).decode()}\n"

    def private_text(self) -> str:
        seed = self.private_key.private_bytes_raw()
        material = base64.b64encode(bytes([COSIGNATURE_V1]) + seed).decode()
        return f"{PRIVATE_PREFIX}{self.name}+{self.public.key_id:08x}+{material}\n"


def generate_witness(name: str) -> Witness:
    return Witness(check_key_name(name), Ed25519PrivateKey.generate())


def parse_witness_key(text: str) -> Witness:
    text = text.strip()
    if not text.startswith(PRIVATE_PREFIX):
        raise ValueError(f"a witness key starts with {PRIVATE_PREFIX!r}")
    parts = text[len(PRIVATE_PREFIX) :].split("+", 2)
    if len(parts) != 3:
        raise ValueError("a witness key has the form PRIVATE+KEY+name+keyid+base64(0x04||seed)")
    material = b64decode_strict(parts[2])
    if len(material) != 33 or material[0] != COSIGNATURE_V1:
        raise ValueError("the key material is not 0x04 followed by a 32-byte Ed25519 seed")
    witness = Witness(check_key_name(parts[0]), Ed25519PrivateKey.from_private_bytes(material[1:]))
    if f"{witness.public.key_id:08x}" != parts[1]:
        raise ValueError(f"key id {parts[1]} does not match the key")
    return witness


def read_witness_key(path: Path) -> Witness:
    """A witness key file, refused when group or others may read it (checked on the open
    descriptor, so the file checked is the file read)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ValueError("not a regular file")
        if st.st_mode & 0o077:
            raise ValueError(f"readable by group or others (mode {stat.S_IMODE(st.st_mode):04o}); chmod 600")
        data = os.read(fd, 4096)
    finally:
        os.close(fd)
    return parse_witness_key(data.decode("utf-8", "replace"))


@dataclass(frozen=True)
class Cosignature:
    name: str
    key_id: int
    timestamp: int
    signature: bytes

    def line(self) -> str:
        blob = self.key_id.to_bytes(4, "big") + self.timestamp.to_bytes(8, "big") + self.signature
        return f"{EM_DASH} {self.name} {base64.b64encode(blob).decode()}\n"


def parse_cosignatures(data: str) -> list[Cosignature]:
    """Signature lines (as a witness returns them, or as the host stores them). Lines whose
    blob is not a cosignature/v1 Ed25519 blob are skipped (they may be other kinds)."""
    out = []
    for line in data.splitlines():
        m = _LINE.match(line)
        if m is None:
            raise NoteError(f"malformed cosignature line {line[:40]!r}")
        try:
            raw = base64.b64decode(m.group(2), validate=True)
        except ValueError:
            raise NoteError(f"cosignature of {m.group(1)}: not base64") from None
        if len(raw) != 4 + 8 + 64:
            continue
        out.append(
            Cosignature(
                m.group(1), int.from_bytes(raw[:4], "big"), int.from_bytes(raw[4:12], "big"), raw[12:]
            )
        )
    return out


def verify_cosignature(
    checkpoint_text: str, cosignatures: Sequence[Cosignature], witness: WitnessPublicKey
) -> Cosignature:
    """The cosignature by ``witness`` on the checkpoint; :class:`NoteError` if there is
    none or it does not verify. Cosignatures by other keys are ignored (as the spec says)."""
    parse_checkpoint_text(checkpoint_text)  # it must be a checkpoint at all
    public = Ed25519PublicKey.from_public_bytes(witness.raw)
    for c in cosignatures:
        if c.name != witness.name or c.key_id != witness.key_id:
            continue
        try:
            public.verify(c.signature, signed_message(checkpoint_text, c.timestamp))
        except InvalidSignature:
            raise NoteError(f"the cosignature of {witness.name} does not verify") from None
        return c
    raise NoteError(f"not cosigned by witness {witness.name}+{witness.key_id:08x}")


def check_newest(location: Path, witness: WitnessPublicKey, newest: int) -> str | None:
    """Why the newest checkpoint (tree size ``newest``) of the store, unpacked packet or
    packet ``.zip`` at ``location`` lacks a valid cosignature by ``witness``, or None when it
    has one. The cosignature lines live in ``log/cosignatures/<size>`` beside
    ``log/checkpoints/<size>``."""

    name = f"{newest:012d}"
    note_path, cos_path = f"log/checkpoints/{name}", f"{COSIGNATURES}/{name}"
    try:
        note, lines = _read_member(location, note_path), _read_member(location, cos_path)
    except (OSError, NoteError, zipfile.BadZipFile) as e:
        return str(e)
    if note is None:
        return f"{note_path}: missing"
    if lines is None:
        return f"{cos_path}: the newest checkpoint is not cosigned by a witness (not uploaded yet?)"
    try:
        verify_cosignature(parse_note(note).text, parse_cosignatures(lines.decode("utf-8")), witness)
    except (NoteError, UnicodeDecodeError) as e:
        return f"{cos_path}: {e}"
    return None


def _read_member(location: Path, name: str) -> bytes | None:
    """A small file of a store, unpacked packet or packet ``.zip``: never through a
    symbolic link, never a FIFO or device (``NotRegularFile``, an ``OSError``), never more
    than :data:`MAX_MEMBER_BYTES` of a zip member."""
    if location.is_file():
        with zipfile.ZipFile(location) as zf:
            try:
                info = zf.getinfo(name)
            except KeyError:
                return None
            if info.file_size > MAX_MEMBER_BYTES:
                raise NoteError(f"{name}: {info.file_size} bytes, too large")
            return zf.read(info)[: MAX_MEMBER_BYTES + 1]
    try:
        return read_regular(location / name)
    except FileNotFoundError:
        return None


def load_witness_key(text_or_path: str) -> WitnessPublicKey:
    """A witness verifier key given as itself or as a file that holds it (``witness.vkey``)."""
    candidate = Path(text_or_path)
    if "+" not in text_or_path or candidate.exists():
        # a file: read as user input (a FIFO or a device is refused, not waited on)
        text = read_text(candidate, limit=4096).strip()
        try:
            return WitnessPublicKey.from_vkey(text)
        except ValueError as e:
            raise InputError.single(candidate, f"not a witness verifier key: {e}") from None
    return WitnessPublicKey.from_vkey(text_or_path)
