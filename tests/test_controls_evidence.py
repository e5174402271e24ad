"""The evidence sentence of every row of baseline/controls-map.csv claims no more than the
runtime checks verify.

An auditor reads the evidence column as a promise: "signed check-run statements of X (a, b)"
must mean that check X runs for a control of that row and that a and b are what it compares.
The part of a sentence before "signed attestation" is what the host proves by itself; claims
made there are held to the controls' own ``verify.expect``. A row whose evidence needs a
person's attestation cannot be ``automated``.
"""

from __future__ import annotations

import re
from typing import Final

import pytest

from nixcomply.baseline.catalog import CHECK_NAMES
from nixcomply.baseline.controlsmap import MapRow
from nixcomply.baseline.models import Baseline
from nixcomply.model.status import Coverage

ATTESTED: Final = "signed attestation"

# Phrases of the machine-verified part of an evidence sentence, and the expectation a control
# of the row must have for the phrase to be true.
CLAIMS: Final = (
    ("idle ssh sessions are logged off", "sshd_effective", "channeltimeout"),
    ("root file system", "encryption", "root_on_luks"),
    ("password log-in is off", "sshd_effective", "passwordauthentication"),
    ("no empty password", "accounts", "no_empty_passwords"),
    ("usb mass storage", "kernel_modules", "blacklisted"),
)
# Claims the baseline cannot back in the verified part unless a control expects the key.
OVERCLAIMS: Final = (
    (
        re.compile(r"\b(data volumes?|disks are|all volumes|every volume)\b"),
        "encryption",
        "data_on_luks",
    ),
    (re.compile(r"\b(records are|activity is) (examined|reviewed)\b"), "", ""),
)


def verified_part(evidence: str) -> str:
    return evidence.split(ATTESTED, 1)[0].lower()


def expect_keys(baseline: Baseline, row: MapRow, check: str) -> set[str]:
    keys: set[str] = set()
    for control_id in row.controls:
        control = baseline.control(control_id)
        if control.verify.check == check:
            keys.update(k.lower() for k in control.verify.expect)
    return keys


def problems(row: MapRow, baseline: Baseline) -> list[str]:
    """What the row's evidence claims beyond its checks (empty: honest)."""
    text = verified_part(row.evidence)
    found = []
    named = {c for c in CHECK_NAMES if re.search(rf"(?<![\w-]){c}(?![\w-])", text)}
    found += [f"names check {c}, which is not in its checks column" for c in sorted(named - set(row.checks))]
    for check, inside in re.findall(r"\b([a-z_]+) \(([^)]*)\)", text):
        if check not in CHECK_NAMES:
            continue
        keys = expect_keys(baseline, row, check)
        for item in (i.strip() for i in inside.split(",")):
            word = item.split(":")[0].split()[0] if item else ""
            if word not in keys:
                found.append(f"says {check} verifies {word!r}, but no control of the row expects it")
    for phrase, check, key in CLAIMS:
        if phrase in text and key not in expect_keys(baseline, row, check):
            found.append(f"claims {phrase!r}, but no control of the row has {check} expect {key}")
    for pattern, check, key in OVERCLAIMS:
        match = pattern.search(text)
        if match and not (check and key in expect_keys(baseline, row, check)):
            found.append(f"claims {match.group(0)!r}, which no runtime check verifies")
    if row.coverage is Coverage.AUTOMATED and ATTESTED in row.evidence:
        found.append("is automated, but its evidence needs a person's attestation")
    if row.coverage is Coverage.PARTIAL and ATTESTED not in row.evidence:
        found.append("is partial, but says nothing of the part a person attests")
    return found


def test_every_evidence_sentence_claims_only_what_is_verified(
    controls_map: list[MapRow], baseline: Baseline
) -> None:
    bad = [
        f"line {r.line} ({r.citation}): {p}" for r in controls_map if r.checks for p in problems(r, baseline)
    ]
    assert not bad, "\n".join(bad)


def test_the_four_overclaimed_rows_are_partial(controls_map: list[MapRow]) -> None:
    """Issue 10: automatic logoff (client-alive only dropped unresponsive clients), encryption
    (only the root volume is verified), audit controls (nothing automates examining the
    records) and person authentication (sshd, sudo and accounts only) need a person's part."""
    by_citation = {r.citation: r for r in controls_map}
    for citation in (
        "164.312(a)(2)(iii)",
        "164.312(a)(2)(iv)",
        "164.312(b)",
        "164.312(d)",
    ):
        assert by_citation[citation].coverage is Coverage.PARTIAL, citation


@pytest.mark.parametrize(
    ("citation", "evidence", "complaint"),
    [
        # the texts as they stood before issue 10
        (
            "164.312(a)(2)(iii)",
            (
                "signed check-run statements of sshd_effective (clientaliveinterval, clientalivecountmax, "
                "idle) each cycle"
            ),
            "verifies 'idle'",
        ),
        (
            "164.312(a)(2)(iv)",
            "signed check-run statements of encryption (root and data volumes on LUKS) each cycle",
            "verifies 'root'",
        ),
        (
            "164.312(a)(2)(iv)",
            "signed check-run statements that data volumes are on LUKS",
            "'data volumes'",
        ),
        (
            "164.312(b)",
            "signed check-run statements of audit_status each cycle; records are examined daily",
            "'records are examined'",
        ),
        (
            "164.312(d)",
            "signed check-run statements of sshd_effective and sudo_config",
            "is partial, but",
        ),
        (
            "164.312(b)",
            "signed check-run statements of firewall and nix_config",
            "names check nix_config",
        ),
    ],
)
def test_an_overclaiming_sentence_is_caught(
    controls_map: list[MapRow], baseline: Baseline, citation: str, evidence: str, complaint: str
) -> None:
    row = next(r for r in controls_map if r.citation == citation)
    changed = row.model_copy(update={"evidence": evidence})
    assert any(complaint in p for p in problems(changed, baseline)), problems(changed, baseline)


def test_an_automated_row_with_an_attestation_is_caught(
    controls_map: list[MapRow], baseline: Baseline
) -> None:
    row = next(r for r in controls_map if r.citation == "164.312(d)")
    changed = row.model_copy(update={"coverage": Coverage.AUTOMATED})
    assert any("needs a person's attestation" in p for p in problems(changed, baseline))
