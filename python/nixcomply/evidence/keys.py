"""Ed25519 keys: the key file formats, key generation and loading a signer safely.

Two roles use Ed25519 keys (``nixcomply.evidence.keyring``): *bundle* keys sign the DSSE
envelope of every statement, the *log* key signs the checkpoints. Both use the text formats
of the C2SP signed-note ecosystem (``golang.org/x/mod/sumdb/note``), so a key carries its
name and standard tools read it:

* private key file, one line, mode 0600:
  ``PRIVATE+KEY+<name>+<key id, 8 hex>+<base64(0x01 || 32-byte Ed25519 seed)>``
* public key ("verifier key", *vkey*), one line, also how the keyring lists keys:
  ``<name>+<key id, 8 hex>+<base64(0x01 || 32-byte Ed25519 public key)>``

The key id is ``SHA-256(name || 0x0A || 0x01 || public key)[:4]`` (c2sp.org/signed-note).
It is a hint for finding the key, never a proof: verification always uses the full key.
A PKCS#8 PEM private key (``openssl genpkey -algorithm ed25519``) is accepted too; its
name is then the file name without extension.

Private keys come from systemd credentials when ``$CREDENTIALS_DIRECTORY`` is set
(``LoadCredential=`` in the unit; nothing secret in the Nix store), else from a path. A key
file that its group or others may read is refused: a leaked evidence key lets anyone forge
the clinic's compliance history.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
import re
import stat
import tempfile
from dataclasses import dataclass, field
from hashlib import sha256
from pathlib import Path
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from nixcomply.core.fsutil import atomic_write, ensure_dir, fsync_dir
from nixcomply.errors import InputError, Problem, UsageError

ED25519: Final = 0x01
PRIVATE_PREFIX: Final = "PRIVATE+KEY+"
CREDENTIALS_ENV: Final = "CREDENTIALS_DIRECTORY"
# The credential names the NixOS module passes with LoadCredential=.
BUNDLE_CREDENTIAL: Final = "nixcomply-evidence-bundle-key"
LOG_CREDENTIAL: Final = "nixcomply-evidence-log-key"

_BAD_NAME: Final = re.compile(r"[\s+\x00-\x1f\x7f]")


def check_key_name(name: str) -> str:
    """A key name is non-empty and has no spaces, ``+`` or control characters (C2SP)."""
    if not name or _BAD_NAME.search(name):
        raise ValueError(f"key name {name!r} must be non-empty, without spaces or '+'")
    return name


def key_id(name: str, public_key: bytes) -> int:
    """The C2SP signed-note key id of an Ed25519 key."""
    digest = sha256(name.encode("utf-8") + b"\n" + bytes([ED25519]) + public_key).digest()
    return int.from_bytes(digest[:4], "big")


def b64decode_strict(text: str) -> bytes:
    """Standard or URL-safe base64, padded or not; anything else is an error."""
    try:
        # The common case, fast: standard alphabet, padded (what nixcomply writes).
        return binascii.a2b_base64(text, strict_mode=True)
    except binascii.Error:
        pass
    text = text.strip()
    if "-" in text or "_" in text:
        text = text.replace("-", "+").replace("_", "/")
    text += "=" * (-len(text) % 4)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as e:
        raise ValueError(f"not valid base64: {e}") from None


@dataclass(frozen=True)
class PublicKey:
    """A named Ed25519 public key (what the keyring lists and verifiers use)."""

    name: str
    raw: bytes
    _key: Ed25519PublicKey = field(init=False, repr=False, compare=False)
    # Computed once: verification looks keys up by id for every entry.
    key_id: int = field(init=False, repr=False, compare=False)
    key_id_hex: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        check_key_name(self.name)
        if len(self.raw) != 32:
            raise ValueError(f"an Ed25519 public key is 32 bytes, got {len(self.raw)}")
        object.__setattr__(self, "_key", Ed25519PublicKey.from_public_bytes(self.raw))
        object.__setattr__(self, "key_id", key_id(self.name, self.raw))
        object.__setattr__(self, "key_id_hex", f"{self.key_id:08x}")

    def __reduce__(self) -> tuple[type[PublicKey], tuple[str, bytes]]:
        # The cryptography key object does not pickle; name and key are all there is.
        return (PublicKey, (self.name, self.raw))

    @property
    def fingerprint(self) -> str:
        """sha256 of the raw public key, hex: what people compare out of band."""
        return sha256(self.raw).hexdigest()

    @property
    def vkey(self) -> str:
        encoded = base64.b64encode(bytes([ED25519]) + self.raw).decode()
        return f"{self.name}+{self.key_id_hex}+{encoded}"

    def verify(self, signature: bytes, data: bytes) -> bool:
        try:
            self._key.verify(signature, data)
        except InvalidSignature:
            return False
        return True

    @classmethod
    def from_vkey(cls, vkey: str) -> PublicKey:
        """Parse ``name+keyid+base64(0x01||key)``; the stated key id must match the key."""
        parts = vkey.strip().split("+", 2)
        if len(parts) != 3:
            raise ValueError("a verifier key has the form name+keyid+base64key")
        name, hex_id, encoded = parts
        if not re.fullmatch(r"[0-9a-f]{8}", hex_id):
            raise ValueError(f"key id {hex_id!r} is not 8 lowercase hex digits")
        material = b64decode_strict(encoded)
        if len(material) != 33 or material[0] != ED25519:
            raise ValueError("the key material is not 0x01 followed by a 32-byte Ed25519 key")
        key = cls(name, material[1:])
        if key.key_id_hex != hex_id:
            raise ValueError(f"key id {hex_id} does not match the key (computed {key.key_id_hex})")
        return key


@dataclass(frozen=True)
class Signer:
    """A loaded Ed25519 private key with its name; ``public`` is its :class:`PublicKey`."""

    name: str
    private_key: Ed25519PrivateKey = field(repr=False)
    public: PublicKey = field(init=False)

    def __post_init__(self) -> None:
        # public_bytes_raw: the Raw/Raw serialization without importing ``serialization``
        # (it loads every cipher and key type cryptography has: ~1.5 MB of a cycle's memory)
        raw = self.private_key.public_key().public_bytes_raw()
        object.__setattr__(self, "public", PublicKey(self.name, raw))

    @property
    def key_id_hex(self) -> str:
        return self.public.key_id_hex

    def sign(self, data: bytes) -> bytes:
        return self.private_key.sign(data)

    def private_text(self) -> str:
        seed = self.private_key.private_bytes_raw()
        encoded = base64.b64encode(bytes([ED25519]) + seed).decode()
        return f"{PRIVATE_PREFIX}{self.name}+{self.key_id_hex}+{encoded}\n"


def generate(name: str) -> Signer:
    return Signer(check_key_name(name), Ed25519PrivateKey.generate())


def parse_private_key(text: str, *, default_name: str) -> Signer:
    """Parse a private key in the signed-note format (or PEM, named ``default_name``)."""
    text = text.strip()
    if text.startswith("-----BEGIN"):
        from cryptography.hazmat.primitives import serialization  # noqa: PLC0415 - see Signer

        try:
            key = serialization.load_pem_private_key(text.encode(), password=None)
        except (ValueError, TypeError) as e:
            raise ValueError(f"not a readable PEM private key: {e}") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError("the PEM key is not an Ed25519 key")
        return Signer(check_key_name(default_name), key)
    if not text.startswith(PRIVATE_PREFIX):
        raise ValueError(f"expected a key starting with {PRIVATE_PREFIX!r} or a PEM block")
    parts = text[len(PRIVATE_PREFIX) :].split("+", 2)
    if len(parts) != 3:
        raise ValueError("a private key has the form PRIVATE+KEY+name+keyid+base64key")
    name, hex_id, encoded = parts
    material = b64decode_strict(encoded)
    if len(material) != 33 or material[0] != ED25519:
        raise ValueError("the key material is not 0x01 followed by a 32-byte Ed25519 seed")
    signer = Signer(check_key_name(name), Ed25519PrivateKey.from_private_bytes(material[1:]))
    if signer.key_id_hex != hex_id:
        raise ValueError(f"key id {hex_id} does not match the key (computed {signer.key_id_hex})")
    return signer


def _input_error(path: Path, message: str, *, hint: str) -> InputError:
    return InputError([Problem(file=path, line=None, field="", message=message)], hint=hint)


MAX_KEY_FILE: Final = 64 * 1024


def read_private_key(path: Path) -> Signer:
    """Read a private key file, refusing one that group or others can read or that another
    user owns. Owner and mode are checked on the open descriptor, so the file checked is
    the file read (a rename between a ``stat`` and an ``open`` cannot slip another in)."""
    try:
        # O_NONBLOCK: a FIFO planted at the path must not hang the reader.
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise InputError.single(path, "key file not found") from None
    except PermissionError:
        raise InputError.single(path, "permission denied reading the key file") from None
    except OSError as e:
        raise InputError.single(path, f"cannot open the key file: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise InputError.single(path, "the key is not a regular file")
        if st.st_uid not in {os.geteuid(), 0}:
            raise _input_error(
                path,
                f"the key file is owned by uid {st.st_uid}, not by this user ({os.geteuid()}) or root",
                hint=f"chown {os.geteuid()} {path}",
            )
        if st.st_mode & 0o077:
            in_store = path.resolve().is_relative_to("/nix/store")
            raise _input_error(
                path,
                f"private key is readable by group or others (mode {stat.S_IMODE(st.st_mode):04o})",
                hint=(
                    "keys never belong in the Nix store (it is world-readable); pass it with LoadCredential="
                    if in_store
                    else f"chmod 600 {path}"
                ),
            )
        if st.st_size > MAX_KEY_FILE:
            raise InputError.single(path, f"{st.st_size} bytes is too large for a key file")
        data = os.read(fd, MAX_KEY_FILE + 1)
    finally:
        os.close(fd)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError.single(path, "the key file is not text") from None
    try:
        return parse_private_key(text, default_name=path.name.split(".")[0])
    except ValueError as e:
        raise InputError.single(path, str(e)) from None


def load_signer(name_or_path: str | Path | None, *, credential: str) -> Signer:
    """The signing key from systemd's ``$CREDENTIALS_DIRECTORY/<credential>`` when that
    variable is set (``LoadCredential=``), else from ``name_or_path``."""
    directory = os.environ.get(CREDENTIALS_ENV)
    if directory:
        path = Path(directory) / credential
        if not path.exists():
            raise _input_error(
                path,
                f"credential {credential!r} not found in ${CREDENTIALS_ENV}",
                hint=f"add LoadCredential={credential}:/path/to/key to the unit",
            )
        return read_private_key(path)
    if name_or_path is None:
        raise UsageError(
            f"no key given for credential {credential!r}",
            hint="pass the key path, or run under systemd with LoadCredential=",
        )
    return read_private_key(Path(name_or_path))


def write_private_key(path: Path, signer: Signer, *, durable: bool = True) -> Path:
    """Write ``signer`` to ``path`` (mode 0600, never over an existing file) and its public
    key to ``path.pub``; returns the public key path (see :func:`write_key_pair`)."""
    return write_key_pair(path, signer.private_text(), signer.public.vkey, durable=durable)


def write_key_pair(path: Path, private_text: str, public_text: str, *, durable: bool = True) -> Path:
    """Write a private key's text to ``path`` (mode 0600, never over an existing file) and
    its public key to ``path.pub``; returns the public key path. Every key file nixcomply
    writes goes through here (evidence keys, the fleet server's witness key).

    The key is written to a temporary file first and then hard-linked to ``path``: the link
    fails if anything exists there by then, so a key that appears between a check and the
    write is never replaced, and a crash never leaves a half-written key at ``path``."""

    if os.path.lexists(path):
        raise UsageError(f"{path} exists; refusing to overwrite a key")
    ensure_dir(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o600)
            f.write(private_text.encode())
            f.flush()
            if durable:
                os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise UsageError(f"{path} exists; refusing to overwrite a key") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    if durable:
        fsync_dir(path.parent)
    pub = path.with_name(path.name + ".pub")
    atomic_write(pub, (public_text + "\n").encode(), mode=0o644, durable=durable)
    return pub
