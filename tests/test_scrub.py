"""The PHI scrubber: each of the 14 kinds with values that must be redacted and look-alikes
that must not, and the system identifiers evidence is full of, which must survive."""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nixcomply.errors import InputError
from nixcomply.evidence.scrub import PATTERNS, TAGS, PhiKind, Scrubber, load_or_create_salt, merge_counts

SALT = bytes(range(32))
S = Scrubber(SALT)
TAG = re.compile(r"\[([A-Z-]+)-REDACTED-([0-9a-f]{6})\]")

# kind -> (text, the value that must disappear)
POSITIVES: list[tuple[PhiKind, str, str]] = [
    (PhiKind.SSN, "employee SSN 123-45-6789 on file", "123-45-6789"),
    (PhiKind.SSN, "ssn: 123456789", "123456789"),
    (PhiKind.SSN, "Social Security Number 078 05 1120", "078 05 1120"),
    (PhiKind.MRN, "MRN: 884213", "884213"),
    (PhiKind.MRN, "medical record # A-77120", "A-77120"),
    (PhiKind.PATIENT_ID, "patient_id=P-20331 missing", "P-20331"),
    (PhiKind.PATIENT_ID, "Patient ID: 99812", "99812"),
    (PhiKind.PHONE, "call (555) 201-3344 now", "(555) 201-3344"),
    (PhiKind.PHONE, "tel 555.201.3344", "555.201.3344"),
    (PhiKind.PHONE, "phone +1 555 201 3344", "+1 555 201 3344"),
    (PhiKind.EMAIL, "mail alice.smith+clinic@clinic.example please", "alice.smith+clinic@clinic.example"),
    (PhiKind.CARD, "card 4111 1111 1111 1111 charged", "4111 1111 1111 1111"),
    (PhiKind.CARD, "amex 378282246310005", "378282246310005"),
    (PhiKind.DOB, "DOB: 04/12/1961", "04/12/1961"),
    (PhiKind.DOB, "date of birth 1961-04-12", "1961-04-12"),
    (PhiKind.DOB, "born on March 3, 1950", "March 3, 1950"),
    (PhiKind.ADDRESS, "lives at 1200 Oak Hill Rd, Apt 4", "1200 Oak Hill Rd"),
    (PhiKind.ADDRESS, "ship to 77 Main Street", "77 Main Street"),
    (PhiKind.ZIP, "Springfield, IL 62704", "62704"),
    (PhiKind.ZIP, "zip code: 02139-4307", "02139-4307"),
    (PhiKind.IP, "login from 8.8.8.8 failed", "8.8.8.8"),
    (PhiKind.IP, "peer 2001:4860:4860::8888 connected", "2001:4860:4860::8888"),
    (PhiKind.ACCOUNT, "acct # 00123456", "00123456"),
    (PhiKind.ACCOUNT, "Account number: 4433-2211-99", "4433-2211-99"),
    (PhiKind.INSURANCE_ID, "member id: XGH55120", "XGH55120"),
    (PhiKind.INSURANCE_ID, "insurance #: BCX-88231-01", "BCX-88231-01"),
    (PhiKind.MBI, "MBI 1EG4-TE5-MK73 on claim", "1EG4-TE5-MK73"),
    (PhiKind.MBI, "medicare 1EG4TE5MK73", "1EG4TE5MK73"),
    (PhiKind.DRIVERS_LICENSE, "DL: D1234567", "D1234567"),
    (PhiKind.DRIVERS_LICENSE, "driver's license number F255-921-50-094-0", "F255-921-50-094-0"),
]

# Look-alikes of each kind that are not PHI.
NEGATIVES: list[tuple[PhiKind, str]] = [
    (PhiKind.SSN, "666-12-3456 and 000-12-3456 are never issued"),
    (PhiKind.SSN, "range 123-45-67890"),
    (PhiKind.MRN, "MRN lookup disabled"),
    (PhiKind.PATIENT_ID, "patient id is not logged"),
    (PhiKind.PHONE, "epoch 1705314600 and 123-456-7890"),
    (PhiKind.EMAIL, "flake git+ssh://git@git.example/clinic-fleet?ref=main"),
    (PhiKind.EMAIL, "user@localhost"),
    (PhiKind.CARD, "4111 1111 1111 1112 fails Luhn"),
    (PhiKind.CARD, "epoch ms 1705314600123 and ns 1705314600123456789"),
    (PhiKind.DOB, "backup from 04/12/1961 restored"),
    (PhiKind.ADDRESS, "port 22 Restart policy always"),
    (PhiKind.ZIP, "OK 12345 bytes written"),
    (PhiKind.ZIP, "listening on port 51820"),
    (PhiKind.IP, "listen 127.0.0.1:22 and 10.0.0.0/8 and 192.168.1.20 and 100.64.0.1"),
    (PhiKind.IP, "loopback ::1, link-local fe80::1, ULA fd00::1, unspecified 0.0.0.0"),
    (PhiKind.IP, "version 1.2.3.4.5 and 300.1.1.1"),
    (PhiKind.IP, "time 12:34:56 and mac aa:bb:cc:dd:ee:ff"),
    (PhiKind.ACCOUNT, "account root locked"),
    (PhiKind.INSURANCE_ID, "member id not set"),
    (PhiKind.MBI, "lowercase 1eg4te5mk73 and 1SG4TE5MK73 (S is never used)"),
    (PhiKind.DRIVERS_LICENSE, "license: MIT"),
]

# Values that identify the *system*: evidence is full of them; none may change.
SYSTEM_VALUES = [
    "/nix/store/0c9ws1kd6vrsm4kn5xq3c3i0bzjw7dmv-nixos-system-clinic-01-26.05.20260301.1d2e3f4",
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=",
    "1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f6a7b8c9d0e",
    "2026-03-01T09:30:00Z",
    "2026-03-01 09:30:00.123456+00:00",
    "1705314600",
    "1705314600123",
    "nixos-version 26.05.20260301.1d2e3f4 (Yarara)",
    "openssh 9.7p1, kernel 6.6.30, systemd 255.4",
    "sshd listening on port 22, wireguard on port 51820, postgres on 5432",
    "pid 12345 exited with status 1",
    "Mar 01 09:30:00 clinic-01 sshd[1234]: Accepted publickey for admin from 10.0.0.5 port 52214",
    "nixcomply-evidence-bundle+1f2e3d4c+AXx0aGlzIGlzIGJhc2U2NA==",
    "uuid 123e4567-e89b-12d3-a456-426614174000",
    "generation 41 -> 42, 3 units restarted, 12.5 s",
    "RB-DRIFT-001 step 2/3",
    "164.312(a)(2)(iv) CC6.1 PR.AA-03 AC-17(2)",
    "disk /dev/nvme0n1p2 85% used, 1024 MiB free",
]


@pytest.mark.parametrize(
    ("kind", "text", "value"), POSITIVES, ids=[f"{k.value}-{i}" for i, (k, *_r) in enumerate(POSITIVES)]
)
def test_redacts(kind: PhiKind, text: str, value: str) -> None:
    result = S.scrub(text)
    assert value not in result.text, result.text
    assert result.counts == {kind.value: 1}, result.counts
    tags = TAG.findall(result.text)
    assert [t for t, _h in tags] == [TAGS[kind]]
    # The label of a labelled value stays readable.
    assert result.text.startswith(text[: text.index(value)])


@pytest.mark.parametrize(
    ("kind", "text"), NEGATIVES, ids=[f"{k.value}-{i}" for i, (k, _t) in enumerate(NEGATIVES)]
)
def test_leaves_look_alikes(kind: PhiKind, text: str) -> None:
    result = S.scrub(text)
    assert result.text == text
    assert not result.matched


@pytest.mark.parametrize("text", SYSTEM_VALUES)
def test_system_identifiers_survive(text: str) -> None:
    assert S.scrub(text).text == text


def test_every_kind_has_patterns_and_positives() -> None:
    assert len(PhiKind) == 14
    assert {p.kind for p in PATTERNS} == set(PhiKind)
    assert {k for k, _t, _v in POSITIVES} == set(PhiKind)
    assert {k for k, _t in NEGATIVES} == set(PhiKind)


def test_equal_values_redact_equally_and_salt_matters() -> None:
    a = S.scrub("SSN 123-45-6789, again 123 45 6789 and ssn: 123456789").text
    hashes = {h for _t, h in TAG.findall(a)}
    assert len(hashes) == 1, a
    other = Scrubber(bytes(32)).scrub("SSN 123-45-6789").text
    assert TAG.findall(other)[0][1] not in hashes
    different = S.scrub("SSN 123-45-6780").text
    assert TAG.findall(different)[0][1] not in hashes


def test_result_never_contains_values() -> None:
    result = S.scrub("alice@clinic.example 123-45-6789")
    assert result.counts == {"email": 1, "ssn": 1}
    assert result.total == 2
    assert "alice" not in repr(result.counts)


def test_subset_of_kinds() -> None:
    only_email = Scrubber(SALT, kinds=[PhiKind.EMAIL])
    assert only_email.scrub("a@b.example 123-45-6789").text.endswith("123-45-6789")


def test_bytes_scrubbed_only_when_text() -> None:
    data, counts = S.scrub_bytes(b"from 8.8.8.8\n")
    assert counts == {"ip": 1}
    assert b"8.8.8.8" not in data
    binary = bytes([0xFF, 0xFE]) + b"8.8.8.8"
    assert S.scrub_bytes(binary) == (binary, {})


def test_merge_counts() -> None:
    assert merge_counts([{"ssn": 1}, {"ssn": 2, "ip": 1}, {}]) == {"ip": 1, "ssn": 3}


def test_short_salt_refused() -> None:
    with pytest.raises(ValueError, match="at least 16 bytes"):
        Scrubber(b"short")


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from("0123456789-. ()+:@abcxyzABEGKMT/SSNMRNDOB,\n"), max_size=80))
def test_idempotent_and_total(text: str) -> None:
    once = S.scrub(text)
    twice = S.scrub(once.text)
    assert twice.text == once.text
    assert not twice.matched


def test_salt_created_once_private_and_shared(tmp_path: Path) -> None:
    path = tmp_path / "store" / "scrub-salt"
    results: list[bytes] = []
    threads = [threading.Thread(target=lambda: results.append(load_or_create_salt(path))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(results)) == 1
    assert len(results[0]) == 32
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert load_or_create_salt(path) == results[0]
    assert not [p for p in path.parent.iterdir() if p.name != "scrub-salt"]


def test_bad_salt_file_is_input_error(tmp_path: Path) -> None:
    path = tmp_path / "scrub-salt"
    path.write_bytes(b"tiny")
    with pytest.raises(InputError, match="scrub-salt"):
        load_or_create_salt(path)
