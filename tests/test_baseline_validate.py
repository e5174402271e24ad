"""Baseline validation: every problem names the file, the line and the field; exit code 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import DATA, REPO, Cli
from nixcomply.baseline.load import load_baseline
from nixcomply.errors import InputError

BASELINES = DATA / "baselines"

# file -> (line, field, words the message must contain)
BROKEN = {
    "broken-duplicate-id.yaml": (27, "controls[1].id", "duplicate control id 'ssh.password-auth-disabled'"),
    "broken-unknown-check.yaml": (37, "controls[1].verify.check", "unknown check 'backup_freshness'"),
    "broken-unknown-runbook.yaml": (38, "controls[1].remediation", "no runbook 'RB-BACKUP-999'"),
    "broken-citation.yaml": (
        18,
        "controls[0].frameworks.hipaa",
        "'312(d)' is not a HIPAA Security Rule citation",
    ),
    "broken-option-path.yaml": (
        24,
        "controls[0].nixos.services.openssh..settings.PasswordAuthentication",
        "is not a valid Nix attribute path",
    ),
    "broken-value-type.yaml": (
        24,
        "controls[0].nixos.services.openssh.settings.PasswordAuthentication",
        'expected null or bool for services.openssh.settings.PasswordAuthentication, got "no"',
    ),
    "broken-severity.yaml": (29, "controls[1].severity", "'critical', 'high', 'medium' or 'low'"),
    "broken-unknown-field.yaml": (38, "controls[1].remedation", "unknown field; did you mean 'remediation'?"),
    "broken-duplicate-key.yaml": (30, "controls[1]", "duplicate key 'severity' (first given on line 29)"),
    "broken-unknown-option.yaml": (
        24,
        "controls[0].nixos.services.openssh.settings.PasswordAuth",
        "is not a verified NixOS 26.05 option",
    ),
    "broken-syntax.yaml": (38, "", "invalid YAML"),
}


def test_valid_minimal_loads() -> None:
    loaded = load_baseline(BASELINES / "valid-minimal.yaml")
    assert [c.id for c in loaded.baseline.controls] == ["ssh.password-auth-disabled", "backup.policy"]
    assert loaded.digest.startswith("sha256:")
    assert len(loaded.digest) == len("sha256:") + 64


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_broken_baseline_names_line_and_field(name: str) -> None:
    line, field, words = BROKEN[name]
    with pytest.raises(InputError) as info:
        load_baseline(BASELINES / name)
    problems = info.value.problems
    assert len(problems) == 1, [str(p) for p in problems]
    (problem,) = problems
    assert problem.file == BASELINES / name
    assert problem.line == line, str(problem)
    assert problem.field == field, str(problem)
    assert words in problem.message, str(problem)


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_cli_reports_broken_baseline_without_traceback(cli: Cli, name: str) -> None:
    line, field, _ = BROKEN[name]
    r = cli("baseline", "validate", BASELINES / name)
    assert r.code == 2
    assert "Traceback" not in r.err
    assert f"{BASELINES / name}:{line}: {field}" in r.err, r.err
    assert r.out == ""


def test_all_problems_reported_at_once(tmp_path: Path) -> None:
    text = (BASELINES / "broken-unknown-check.yaml").read_text()
    text = text.replace("RB-BACKUP-001", "RB-BACKUP-999").replace("RB-DRIFT-001", "RB-NOPE-001")
    bad = tmp_path / "two.yaml"
    bad.write_text(text)
    with pytest.raises(InputError) as info:
        load_baseline(bad)
    fields = sorted(p.field for p in info.value.problems)
    assert fields == ["controls[0].remediation", "controls[1].remediation", "controls[1].verify.check"]


def test_missing_file_is_input_error(cli: Cli, tmp_path: Path) -> None:
    r = cli("baseline", "validate", tmp_path / "nope.yaml")
    assert r.code == 2
    assert "nope.yaml: no such file" in r.err


def test_not_a_mapping(tmp_path: Path) -> None:
    bad = tmp_path / "list.yaml"
    bad.write_text("- just\n- a list\n")
    with pytest.raises(InputError) as info:
        load_baseline(bad)
    assert info.value.problems[0].line == 1


def test_conflicting_values_between_controls(tmp_path: Path) -> None:
    text = (BASELINES / "valid-minimal.yaml").read_text()
    text = text.replace(
        "    verify: { check: backup }",
        "    nixos:\n      services.openssh.settings.PasswordAuthentication: true\n    verify: { check: backup }",
    )
    bad = tmp_path / "conflict.yaml"
    bad.write_text(text)
    with pytest.raises(InputError) as info:
        load_baseline(bad)
    (problem,) = info.value.problems
    assert "would collide" in problem.message
    assert "ssh.password-auth-disabled" in problem.message


def test_shipped_baseline_validates(cli: Cli) -> None:
    r = cli("baseline", "validate", REPO / "baseline" / "hipaa-v1.yaml")
    assert r.code == 0, r.err
    assert "ok (hipaa-v1" in r.out


def test_shipped_baseline_validates_for_unstable(cli: Cli) -> None:
    r = cli("baseline", "validate", "--nixos-release", "unstable", REPO / "baseline" / "hipaa-v1.yaml")
    assert r.code == 0, r.err


def test_unknown_release_is_usage_error(cli: Cli) -> None:
    r = cli("baseline", "validate", "--nixos-release", "24.05", BASELINES / "valid-minimal.yaml")
    assert r.code == 2
    assert "unknown NixOS release '24.05'" in r.err
