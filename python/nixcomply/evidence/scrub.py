"""PHI scrubber: redact protected health information from free text before it is signed.

Evidence must never carry patient data, yet command outputs, journal lines and people's
notes can contain it by accident. Every free-text value passes through :class:`Scrubber`
before the evidence store signs it (and the drift/heal code uses it for its outputs too).
A match is replaced by a tag such as ``[SSN-REDACTED-1a2b3c]``: the kind, and the first six
hex digits of an HMAC-SHA256 of the normalised value under a per-installation salt. Equal
values therefore redact equally within one installation (an auditor can see "the same
e-mail address appears in bundles 12 and 40"), while the salt — kept next to the evidence
store, mode 0600, never exported — stops anyone from confirming a guessed value against
the tag. The result says how many values of each kind were redacted, never the values.

The 14 kinds (:class:`PhiKind`) and what counts as a match:

* ``ssn``: ``123-45-6789`` with the SSA's impossible ranges excluded (000, 666, 9xx area;
  00 group; 0000 serial), or nine digits after an ``SSN`` label.
* ``mrn``, ``patient_id``, ``account``, ``insurance_id``, ``drivers_license``, ``dob``,
  ``zip``: only after their label (``MRN: 884213``, ``patient_id=P-20331``, ``acct #
  00123456``, ``member id: XGH55120``, ``DL: D1234567``, ``DOB 04/12/1961``, ``ZIP 62704``)
  — unlabelled, these shapes are indistinguishable from ports, sizes, pids and versions,
  which evidence is full of. ZIP codes are also recognised in the address form
  ``Springfield, IL 62704``.
* ``phone``: North American numbers with separators (``(555) 201-3344``,
  ``555.201.3344``, ``+1 555 201 3344``); a bare run of ten digits is an epoch timestamp
  far more often than a phone number, so it is left alone.
* ``email``: ``local@domain.tld``; the user part of a URL (``ssh://git@host``) is not an
  e-mail address and is kept.
* ``card``: 13–19 digits (optionally grouped by spaces or dashes) with a card-network
  prefix and a valid Luhn check digit.
* ``address``: a house number, one to four capitalised words and a street suffix
  (``1200 Oak Hill Rd``), with an optional unit.
* ``ip``: IPv4 and IPv6 addresses that are *globally routable*. Loopback, private
  (RFC 1918, ULA), link-local, CGNAT, documentation and unspecified addresses are kept:
  they describe the clinic's own infrastructure (listen addresses, firewall rules), which
  an auditor needs to read, and cannot point at a patient outside that network. A public
  address can be a patient's home connection (a portal login), so it is redacted. A
  dotted four-part version number with parts below 256 is indistinguishable from an IPv4
  address; if it is global it is redacted (a known, harmless false positive).
* ``mbi``: the Medicare Beneficiary Identifier's exact 11-character format (CMS:
  digit, letters without S L O I B Z, positions fixed), optionally dashed ``1EG4-TE5-MK73``.
  Matching is case-sensitive, so lowercase Nix store hashes and hex digests never match.

Everything that identifies the *system* — Nix store paths, sha256 and git revisions,
timestamps, version numbers, ports, unit names — must survive scrubbing; the tests hold a
list of such values.
"""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import os
import re
import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from hashlib import sha256
from pathlib import Path
from typing import Final

from nixcomply.errors import InputError


class PhiKind(StrEnum):
    """The kinds of PHI the scrubber recognises; the value is the name used in results."""

    SSN = "ssn"
    MRN = "mrn"
    PATIENT_ID = "patient_id"
    PHONE = "phone"
    EMAIL = "email"
    CARD = "card"
    DOB = "dob"
    ADDRESS = "address"
    ZIP = "zip"
    IP = "ip"
    ACCOUNT = "account"
    INSURANCE_ID = "insurance_id"
    MBI = "mbi"
    DRIVERS_LICENSE = "drivers_license"


TAGS: Final[Mapping[PhiKind, str]] = {
    PhiKind.SSN: "SSN",
    PhiKind.MRN: "MRN",
    PhiKind.PATIENT_ID: "PATIENT-ID",
    PhiKind.PHONE: "PHONE",
    PhiKind.EMAIL: "EMAIL",
    PhiKind.CARD: "CARD",
    PhiKind.DOB: "DOB",
    PhiKind.ADDRESS: "ADDRESS",
    PhiKind.ZIP: "ZIP",
    PhiKind.IP: "IP",
    PhiKind.ACCOUNT: "ACCOUNT",
    PhiKind.INSURANCE_ID: "INSURANCE-ID",
    PhiKind.MBI: "MBI",
    PhiKind.DRIVERS_LICENSE: "DL",
}

SALT_BYTES: Final = 32
TAG_HEX: Final = 6

# A value after a label must contain a digit: "patient id is missing" is not PHI.
_HAS_DIGIT: Final = re.compile(r"\d")


def _label(words: str) -> str:
    """A case-insensitive label followed by an optional ``:``/``#``/``=`` separator."""
    return rf"(?i:\b(?:{words})\s*[:#=]?\s*)"


_MBI_LETTER: Final = "[AC-HJKMNP-RT-Y]"
_MONTHS: Final = "Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Sept|Oct|Nov|Dec"
_DATE: Final = (
    rf"(?:\d{{4}}-\d{{2}}-\d{{2}}|\d{{1,2}}[/.-]\d{{1,2}}[/.-](?:\d{{4}}|\d{{2}})"
    rf"|(?:{_MONTHS})[a-z]*\.?\s+\d{{1,2}},?\s+\d{{4}}|\d{{1,2}}\s+(?:{_MONTHS})[a-z]*\.?\s+\d{{4}})"
)
_STATES: Final = (
    "AL|AK|AZ|AR|CA|CO|CT|DE|DC|FL|GA|HI|ID|IL|IN|IA|KS|KY|LA|ME|MD|MA|MI|MN|MS|MO|MT|NE|NV|NH|NJ|NM|NY"
    "|NC|ND|OH|OK|OR|PA|RI|SC|SD|TN|TX|UT|VT|VA|WA|WV|WI|WY|PR|GU|VI"
)
_STREET: Final = (
    "Street|St|Avenue|Ave|Boulevard|Blvd|Drive|Dr|Road|Rd|Lane|Ln|Way|Court|Ct|Place|Pl|Terrace|Ter"
    "|Circle|Cir|Parkway|Pkwy|Highway|Hwy|Square|Sq|Trail|Trl"
)
# Not inside a longer token: no word character, dot-digit or dash-digit on either side.
_END: Final = r"(?!\w|[.-]\d)"


def _luhn_card(value: str) -> bool:
    digits = re.sub(r"[ -]", "", value)
    if not 13 <= len(digits) <= 19:
        return False
    # Card-network prefixes (Visa, Mastercard, Amex, Discover, JCB, Diners): epoch
    # milliseconds and other long counters start with 1 and never pass this.
    if not re.match(
        r"4|5[1-5]|2(?:2[2-9]|[3-6]\d|7[01]|720)|3[47]|6(?:011|4[4-9]|5)|35|3(?:0[0-5]|[68])", digits
    ):
        return False
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _global_ip(value: str) -> bool:
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return False
    return address.is_global


@dataclass(frozen=True)
class _Pattern:
    kind: PhiKind
    regex: re.Pattern[str]
    # The part to redact: group "v" when the pattern has one (the label stays readable).
    accept: Callable[[str], bool] | None = None


def _p(kind: PhiKind, pattern: str, accept: Callable[[str], bool] | None = None) -> _Pattern:
    return _Pattern(kind, re.compile(pattern), accept)


def _has_digit(value: str) -> bool:
    return _HAS_DIGIT.search(value) is not None


# Order is priority: when two matches overlap, the earlier pattern wins. Labelled
# patterns come first because the label makes them the most certain.
PATTERNS: Final[tuple[_Pattern, ...]] = (
    _p(
        PhiKind.SSN,
        _label(r"SSN|social[ _-]?security(?:[ _-]?(?:number|no\.?|#))?")
        + r"(?P<v>\d{3}[ -]?\d{2}[ -]?\d{4})\b",
    ),
    _p(
        PhiKind.MRN,
        _label(r"MRN|medical[ _-]?record(?:[ _-]?(?:number|no\.?|num|#))?")
        + r"(?P<v>[A-Za-z0-9][A-Za-z0-9-]{3,19})(?!\w)",
        _has_digit,
    ),
    _p(
        PhiKind.PATIENT_ID,
        _label(r"patient[ _-]?(?:id|no\.?|number|num|#)") + r"(?P<v>[A-Za-z0-9][A-Za-z0-9-]{2,31})(?!\w)",
        _has_digit,
    ),
    _p(
        PhiKind.DOB,
        _label(r"DOB|D\.O\.B\.?|date[ _-]?of[ _-]?birth|birth[ _-]?date|born(?:[ _-]on)?")
        + rf"(?P<v>{_DATE})",
    ),
    _p(
        PhiKind.INSURANCE_ID,
        _label(r"(?:insurance|member|subscriber|medicaid|policy[ _-]?holder)[ _-]?(?:id|no\.?|number|num|#)")
        + r"(?P<v>[A-Za-z0-9][A-Za-z0-9-]{4,19})(?!\w)",
        _has_digit,
    ),
    _p(
        PhiKind.ACCOUNT,
        _label(r"(?:account|acct)(?:[ _-]?(?:number|no\.?|num|#))?") + r"(?P<v>\d(?:[ -]?\d){5,19})(?![\w-])",
    ),
    _p(
        PhiKind.DRIVERS_LICENSE,
        _label(r"driver'?s?[ _-]?licen[cs]e(?:[ _-]?(?:number|no\.?|num|#|id))?|DLN?")
        + r"(?P<v>[A-Za-z0-9][A-Za-z0-9-]{4,15})(?!\w)",
        _has_digit,
    ),
    _p(PhiKind.ZIP, _label(r"zip(?:[ _-]?code)?|postal[ _-]?code") + r"(?P<v>\d{5}(?:-\d{4})?)(?![\w-])"),
    _p(
        PhiKind.EMAIL,
        r"(?<![\w.+%-])(?<!://)[A-Za-z0-9][A-Za-z0-9._%+-]*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}(?![\w-])",
    ),
    _p(PhiKind.CARD, r"(?<![\w.-])\d(?:[ -]?\d){12,18}" + _END, _luhn_card),
    _p(PhiKind.SSN, r"(?<![\w.-])(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}" + _END),
    _p(
        PhiKind.MBI,
        rf"(?<![\w+/-])[1-9]{_MBI_LETTER}[{_MBI_LETTER[1:-1]}\d]\d-?{_MBI_LETTER}[{_MBI_LETTER[1:-1]}\d]\d-?{_MBI_LETTER}{{2}}\d{{2}}(?![\w+/=-])",
    ),
    _p(
        PhiKind.PHONE,
        r"(?<![\w.+/-])(?:\+?1[ .-]?)?(?:\([2-9]\d{2}\)[ ]?|[2-9]\d{2}[ .-])[2-9]\d{2}[ .-]\d{4}" + _END,
    ),
    _p(
        PhiKind.ADDRESS,
        rf"\b\d{{1,6}}\s+(?:[A-Z][A-Za-z]*\.?\s+){{1,4}}(?:{_STREET})\b\.?(?:,?\s*(?:Apt|Suite|Ste|Unit|#)\.?\s*[A-Za-z0-9-]+)?",
    ),
    _p(PhiKind.ZIP, rf",\s*(?:{_STATES})\s+(?P<v>\d{{5}}(?:-\d{{4}})?)(?![\w-])"),
    _p(
        PhiKind.IP,
        r"(?<![\w.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)" + _END,
        _global_ip,
    ),
    _p(PhiKind.IP, r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])", _global_ip),
)


@dataclass(frozen=True)
class ScrubResult:
    """The scrubbed text and how many values of each kind were redacted (never the values)."""

    text: str
    counts: Mapping[str, int] = field(default_factory=dict)

    @property
    def matched(self) -> bool:
        return bool(self.counts)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def merge_counts(results: Iterable[Mapping[str, int]]) -> dict[str, int]:
    """Add up the per-kind counts of several results."""
    total: dict[str, int] = {}
    for counts in results:
        for kind, n in counts.items():
            total[kind] = total.get(kind, 0) + n
    return dict(sorted(total.items()))


class Scrubber:
    """Redacts PHI with a per-installation salt; see the module docstring for the rules."""

    def __init__(self, salt: bytes, *, kinds: Iterable[PhiKind] | None = None) -> None:
        if len(salt) < 16:
            raise ValueError("the scrubber salt must be at least 16 bytes")
        self._salt = salt
        wanted = set(PhiKind) if kinds is None else set(kinds)
        self._patterns = tuple(p for p in PATTERNS if p.kind in wanted)

    def tag(self, kind: PhiKind, value: str) -> str:
        """The redaction tag of ``value``: separators and case do not change it."""
        normal = re.sub(r"[^0-9A-Za-z@.:]", "", value).lower()
        digest = hmac.new(self._salt, f"{kind.value}\0{normal}".encode(), sha256).hexdigest()
        return f"[{TAGS[kind]}-REDACTED-{digest[:TAG_HEX]}]"

    def scrub(self, text: str) -> ScrubResult:
        spans: list[tuple[int, int, PhiKind]] = []
        for pattern in self._patterns:
            for m in pattern.regex.finditer(text):
                group = "v" if "v" in pattern.regex.groupindex else 0
                start, end = m.span(group)
                if pattern.accept is not None and not pattern.accept(m.group(group)):
                    continue
                if any(start < e and s < end for s, e, _ in spans):
                    continue
                spans.append((start, end, pattern.kind))
        if not spans:
            return ScrubResult(text)
        spans.sort()
        out: list[str] = []
        counts: dict[str, int] = {}
        pos = 0
        for start, end, kind in spans:
            out.append(text[pos:start])
            out.append(self.tag(kind, text[start:end]))
            counts[kind.value] = counts.get(kind.value, 0) + 1
            pos = end
        out.append(text[pos:])
        return ScrubResult("".join(out), dict(sorted(counts.items())))

    def scrub_bytes(self, data: bytes) -> tuple[bytes, dict[str, int]]:
        """Scrub ``data`` if it is UTF-8 text; binary data is returned unchanged."""
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            return data, {}
        result = self.scrub(text)
        if not result.matched:
            return data, {}
        return result.text.encode("utf-8"), dict(result.counts)


def load_or_create_salt(path: Path) -> bytes:
    """The installation's salt at ``path``, created (0600, durably) on first use.

    The new salt is written to a temporary file and hard-linked into place, which fails if
    the name exists: two processes creating it at once agree on one salt, and nobody ever
    sees a half-written file.
    """
    import tempfile

    from nixcomply.core.fsutil import ensure_dir, fsync_dir

    try:
        data = path.read_bytes()
    except FileNotFoundError:
        ensure_dir(path.parent)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                os.fchmod(f.fileno(), 0o600)
                f.write(secrets.token_bytes(SALT_BYTES))
                f.flush()
                os.fsync(f.fileno())
            with contextlib.suppress(FileExistsError):
                os.link(tmp, path)
        finally:
            os.unlink(tmp)
        fsync_dir(path.parent)
        return load_or_create_salt(path)
    except OSError as e:
        raise InputError.single(path, f"cannot read the scrubber salt: {e.strerror}") from e
    if len(data) < 16:
        raise InputError.single(path, f"scrubber salt is {len(data)} bytes, expected {SALT_BYTES}")
    return data
