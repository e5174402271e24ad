"""The shipped hipaa-v1 baseline is internally consistent and every option path it sets is one
whose existence (and spelling per release) was verified against nixpkgs sources.

`python/nixcomply/baseline/data/nixos-options.json` records that verification: per release
the option paths the renderer may emit, with their declared type and the source read;
`nixcomply.baseline.releases` maps canonical paths to each release's spelling. A path that is
missing there has not been verified, and a wrong option name breaks every client's build.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Final

import pytest

from nixcomply.baseline import releases
from nixcomply.baseline.catalog import CHECK_NAMES
from nixcomply.baseline.models import Baseline
from nixcomply.baseline.nixattr import format_attr_path, parse_attr_path

REPO: Final = Path(__file__).resolve().parent.parent
BASELINE: Final = REPO / "baseline" / "hipaa-v1.yaml"
OPTIONS: Final = REPO / "python" / "nixcomply" / "baseline" / "data" / "nixos-options.json"
RUNBOOKS: Final = frozenset(
    {
        "RB-SERVICE-001",
        "RB-BACKUP-001",
        "RB-RESTORE-001",
        "RB-TIMESYNC-001",
        "RB-DRIFT-001",
        "RB-DISK-001",
        "RB-CERT-001",
        "RB-FIREWALL-001",
    }
)
RELEASES: Final = ("26.05", "unstable")


@pytest.fixture(scope="module")
def options() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(OPTIONS.read_text(encoding="utf-8"))
    return data


def emitted_paths(control_nixos: dict[str, Any], release: str) -> set[str]:
    """Every option path the renderer can emit for these settings on `release` (both sides of
    an option family whose spelling the evaluation decides)."""

    spelled = releases.spell(
        [(parse_attr_path(p), v) for p, v in control_nixos.items()], releases.release(release)
    )
    return {format_attr_path(path) for variant in spelled.variants() for path in variant}


def test_baseline_has_unique_controls(baseline: Baseline) -> None:
    ids = [c.id for c in baseline.controls]
    assert len(ids) >= 40, f"expected at least 40 controls, got {len(ids)}"
    assert len(set(ids)) == len(ids), "control ids must be unique"
    assert baseline.id == "hipaa-v1"
    assert baseline.nixos_release == "26.05"


def test_checks_and_runbooks_are_known(baseline: Baseline) -> None:
    for control in baseline.controls:
        assert control.verify.check in CHECK_NAMES, f"{control.id}: unknown check"
        assert control.remediation in RUNBOOKS, f"{control.id}: unknown runbook"


def test_sshd_expectations_use_sshd_t_keywords(baseline: Baseline) -> None:
    sshd = [c for c in baseline.controls if c.verify.check == "sshd_effective"]
    assert len(sshd) >= 5, "the baseline's sshd controls"
    for control in sshd:
        for keyword, value in control.verify.expect.items():
            assert keyword == keyword.lower(), f"{control.id}: sshd -T prints {keyword.lower()}"
            assert isinstance(value, str), f"{control.id}: {keyword} must be the printed string"


def test_every_option_path_is_verified_for_each_release(baseline: Baseline, options: dict[str, Any]) -> None:
    for release in RELEASES:
        known = options["releases"][release]
        for control in baseline.controls:
            for emitted in emitted_paths(dict(control.nixos), release):
                assert emitted in known, f"{control.id}: {emitted} ({release}) is not in {OPTIONS.name}"


def test_verified_entries_name_their_source(options: dict[str, Any]) -> None:
    for release in RELEASES:
        for path, entry in options["releases"][release].items():
            assert entry["declared_in"].startswith("nixos/modules/"), path
            for field in ("type", "commit", "evidence"):
                assert entry[field], f"{release} {path}: empty {field}"


def test_console_and_ssh_banner_share_one_text(baseline: Baseline) -> None:
    ssh = baseline.control("ssh.banner").nixos['environment.etc."issue.net".text']
    console = baseline.control("access.login-banner").nixos["services.getty.greetingLine"]
    assert ssh == console
    expected = baseline.control("access.login-banner").verify.expect["contains"]
    assert isinstance(ssh, str)
    assert expected in ssh
    assert "\\" not in ssh, "agetty would interpret backslash escapes in /etc/issue"


def test_luks_assertion_points_to_the_exception(baseline: Baseline) -> None:
    control = baseline.control("encryption.root-on-luks")
    assert control.nixos == {}
    [requirement] = control.requires
    assert 'nixcomply.exceptions."encryption.root-on-luks"' in requirement.message


def test_runtime_policy_controls_set_no_options(baseline: Baseline) -> None:
    runtime_only = {
        "patching.security-updates": "patch_age",
        "backup.policy": "backup",
        "backup.restore-tested": "restore_test",
        "services.critical-running": "service_health",
        "system.generation-approved": "generation",
        "storage.disk-capacity": "disk_usage",
        "logging.continuity": "logging",
        "compliance.exceptions-current": "exceptions",
    }
    for control_id, check in runtime_only.items():
        control = baseline.control(control_id)
        assert control.nixos == {}, control_id
        assert control.verify.check == check, control_id


def test_sysctl_values_match_their_expectations(baseline: Baseline) -> None:
    prefix = 'boot.kernel.sysctl."'
    sysctl = [c for c in baseline.controls if c.verify.check == "sysctl"]
    assert len(sysctl) >= 3, "the baseline's sysctl controls"
    for control in sysctl:
        set_here = {
            path[len(prefix) : -1]: str(value)
            for path, value in control.nixos.items()
            if path.startswith(prefix)
        }
        assert set_here == control.verify.expect, control.id


def test_data_file_is_valid_json_with_both_releases() -> None:
    data = json.loads(Path(OPTIONS).read_text(encoding="utf-8"))
    assert set(RELEASES) <= set(data["releases"])
    assert data["sources"], "sources read must be recorded"
    assert "renames" not in data, "the release table lives in nixcomply.baseline.releases"


# References that fit only indirectly unless a note says why they are cited (issue 10, point 5).
CATCH_ALL: Final = {"cis_v8": {"4.1"}, "soc2": {"CC6.8", "A1.1"}, "nist_800_53": {"SI-11", "AC-7"}}


def test_catch_all_references_carry_a_note(baseline: Baseline) -> None:
    missing = []
    for control in baseline.controls:
        cited = {
            (k, ref) for k, refs in CATCH_ALL.items() for ref in getattr(control.frameworks, k) if ref in refs
        }
        if cited and not control.framework_notes:
            missing.append(f"{control.id}: {sorted(cited)}")
    assert not missing, "add framework_notes (why the reference fits) or a better reference:\n" + "\n".join(
        missing
    )


def test_weak_fits_named_by_the_issue_are_gone(baseline: Baseline) -> None:
    assert "AC-7" not in baseline.control("ssh.login-grace-time").frameworks.nist_800_53
    assert "A1.1" not in baseline.control("services.critical-running").frameworks.soc2
    for cid in ("kernel.kptr-restrict", "kernel.dmesg-restrict"):
        assert "CC6.8" not in baseline.control(cid).frameworks.soc2
    cis_41 = [c.id for c in baseline.controls if "4.1" in c.frameworks.cis_v8]
    assert len(cis_41) <= len(baseline.controls) // 3, cis_41
