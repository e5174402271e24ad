"""The logic of the NixOS modules (issue 10, point 6), with the real Nix evaluator and the
project's stand-ins for nixpkgs: the root-on-LUKS assertion at evaluation and the
`encryption` check at runtime for every root layout, exception fields and dates, the
reconciler options' own example, the state directory, and the runbooks' control lists."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import yaml
from boundary import result
from fixtures_checks import context, control, data, manifest

from conftest import REPO
from nixcomply.baseline.evaluate import definitions
from nixcomply.baseline.load import load_baseline
from nixcomply.baseline.nixattr import nix_value
from nixcomply.checks import encryption
from nixcomply.nixos.tools import Tools
from nixcomply.reconcile.config import ReconcilerConfig

MODULE = REPO / "modules" / "baselines" / "hipaa-v1.nix"
LUKS = {"cryptroot": {"device": "/dev/disk/by-uuid/aaaa-luks"}}

# (root device, LUKS devices, accepted at evaluation, lsblk capture, cryptsetup capture, on LUKS)
LAYOUTS = [
    ("/dev/mapper/cryptroot", LUKS, True, "lsblk-luks-root.json", "cryptsetup-status-cryptroot.txt", True),
    (
        "/dev/mapper/vg-root",
        {"cryptlvm": {"device": "/dev/sda2"}},
        True,
        "lsblk-luks-lvm.json",
        "cryptsetup-status-cryptlvm.txt",
        True,
    ),
    (
        "/dev/disk/by-uuid/0f1e-root",
        LUKS,
        True,
        "lsblk-luks-root.json",
        "cryptsetup-status-cryptroot.txt",
        True,
    ),
    ("/dev/disk/by-label/nixos", LUKS, True, "lsblk-luks-root.json", "cryptsetup-status-cryptroot.txt", True),
    ("/dev/vda", LUKS, False, "lsblk-this-vm.json", None, False),
    ("/dev/nvme0n1p2", LUKS, False, "lsblk-this-vm.json", None, False),
    ("/dev/disk/by-uuid/aaaa-luks", LUKS, False, "lsblk-this-vm.json", None, False),
    ("/dev/mapper/vg-root", {}, False, "lsblk-this-vm.json", None, False),
]
IDS = [
    "plain-luks",
    "lvm-on-luks",
    "by-uuid",
    "by-label",
    "raw-disk",
    "raw-partition",
    "luks-backing",
    "no-luks",
]


@pytest.mark.parametrize(("root", "luks", "accepted", "lsblk", "status", "on_luks"), LAYOUTS, ids=IDS)
def test_root_layout_at_evaluation(  # noqa: PLR0917 - one parameter per column of LAYOUTS
    root: str,
    luks: dict[str, Any],
    accepted: bool,
    lsblk: str,
    status: str | None,
    on_luks: bool,
    nix_env: dict[str, str],
) -> None:
    """Refuse only what is certainly unencrypted; accept every layout where / can be on LUKS."""
    result_ = definitions(
        MODULE,
        "hipaa-v1",
        {"host": {}},
        tools=Tools(extra_env=nix_env),
        fileSystems={"/": {"device": root, "fsType": "ext4"}},
        luksDevices=luks,
    )
    (asserted,) = [d["value"] for d in result_["host"] if d["path"] == ["assertions"]]
    assert [a["assertion"] for a in asserted] == [accepted]


@pytest.mark.parametrize(("root", "luks", "accepted", "lsblk", "status", "on_luks"), LAYOUTS, ids=IDS)
def test_root_layout_at_runtime(  # noqa: PLR0917 - one parameter per column of LAYOUTS
    root: str, luks: dict[str, Any], accepted: bool, lsblk: str, status: str | None, on_luks: bool
) -> None:
    """The runtime check reads the real device tree: a root that is not on a crypt device
    fails, whatever evaluation accepted."""
    replies = [result(data(f"encryption/{lsblk}"))] + (
        [result(data(f"encryption/{status}"))] if status else []
    )
    m = manifest(
        {"encryption.root-on-luks": control("encryption", {"root_on_luks": True}, severity="critical")}
    )
    with mock.patch("nixcomply.core.process.run", autospec=True, side_effect=replies):
        (f,) = encryption.run(context(manifest=m), dict(m.controls))
    assert f.status == ("pass" if on_luks else "drift"), f.message


# -- exceptions --------------------------------------------------------------------------------------


def exception_assertions(
    exceptions: dict[str, Any], nix_env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            "nix-instantiate",
            "--eval",
            "--strict",
            "--json",
            str(REPO / "tests" / "nix" / "exception-assertions.nix"),
            "--arg",
            "exceptions",
            nix_value(exceptions),
        ],
        capture_output=True,
        text=True,
        env=nix_env,
        check=False,
    )


FULL = {
    "justification": "scanner",
    "approvedBy": "so@clinic.example",
    "expires": "2027-03-01",
    "ticket": "SEC-1",
}


@pytest.mark.parametrize("date", ["2027-03-01", "2028-02-29", "2000-02-29", "2027-12-31", "2027-04-30"])
def test_real_dates_are_accepted(date: str, nix_env: dict[str, str]) -> None:
    r = exception_assertions({"ssh.banner": {**FULL, "expires": date}}, nix_env)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == []


@pytest.mark.parametrize(
    "date",
    ["2027-02-31", "2027-02-29", "1900-02-29", "2027-04-31", "2027-13-01", "2027-00-10", "2027-1-1", ""],
)
def test_impossible_dates_are_refused(date: str, nix_env: dict[str, str]) -> None:
    r = exception_assertions({"ssh.banner": {**FULL, "expires": date}}, nix_env)
    assert r.returncode == 0, r.stderr
    messages = json.loads(r.stdout)
    assert any(f"expires is `{date}`, expected a real date" in m for m in messages), messages


@pytest.mark.parametrize("missing", ["justification", "approvedBy", "expires", "ticket"])
def test_a_missing_field_is_an_assertion_naming_it(missing: str, nix_env: dict[str, str]) -> None:
    given = {k: v for k, v in FULL.items() if k != missing}
    r = exception_assertions({"ssh.banner": given}, nix_env)
    assert r.returncode == 0, f"evaluation failed instead of asserting: {r.stderr}"
    assert "has no value defined" not in r.stderr
    messages = json.loads(r.stdout)
    assert messages and all(f'nixcomply.exceptions."ssh.banner".{missing}' in m for m in messages), messages
    assert any(f"{missing} is missing" in m for m in messages)


def test_an_empty_field_is_named_too(nix_env: dict[str, str]) -> None:
    r = exception_assertions({"ssh.banner": {**FULL, "ticket": "  "}}, nix_env)
    assert json.loads(r.stdout) == [
        'nixcomply.exceptions."ssh.banner".ticket is empty: name the ticket that records the decision.'
    ]


# -- the reconciler's options ------------------------------------------------------------------------


def test_the_settings_example_is_a_config_the_reconciler_accepts() -> None:
    text = (REPO / "modules" / "reconciler-options.nix").read_text()
    start = text.index("example = literalExpression ''", text.index("settings = mkOption"))
    example = text[start:].split("''", 2)[1]
    r = subprocess.run(
        ["nix-instantiate", "--eval", "--strict", "--json", "-E", example],
        capture_output=True,
        text=True,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    settings = json.loads(r.stdout)
    ReconcilerConfig.model_validate({"flake": "git+https://git.example/f", "host": "clinic-01", **settings})


def test_a_non_default_state_dir_is_created(nix_env: dict[str, str]) -> None:
    """ProtectSystem=strict makes ReadWritePaths a hard requirement: the unit cannot start if
    the directory is missing, and StateDirectory only creates the default one."""
    units = reconciler_unit(nix_env, {"stateDir": "/srv/nixcomply"})
    assert "/srv/nixcomply" in units["readWritePaths"]
    assert units["stateDirectory"] is None
    assert units["tmpfiles"]["/srv/nixcomply"]["d"] == {"mode": "0700", "user": "root", "group": "root"}
    default = reconciler_unit(nix_env, {})
    assert default["stateDirectory"] == "nixcomply"
    assert "/var/lib/nixcomply" not in default["tmpfiles"]


def reconciler_unit(nix_env: dict[str, str], options: dict[str, Any]) -> dict[str, Any]:
    r = subprocess.run(
        [
            "nix-instantiate",
            "--eval",
            "--strict",
            "--json",
            str(REPO / "tests" / "nix" / "reconciler-unit.nix"),
            "--arg",
            "options",
            nix_value(options),
        ],
        capture_output=True,
        text=True,
        env=nix_env,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    out: dict[str, Any] = json.loads(r.stdout)
    return out


@pytest.mark.parametrize("unit", ["app@.service", "a" * 250 + ".service"])
def test_a_critical_unit_systemd_cannot_start_is_an_assertion(unit: str, nix_env: dict[str, str]) -> None:
    """The option's type takes it, the reconciler refuses the rendered file: the host's
    reconciler would stop at every cycle after the switch."""
    units = {"healthGate": {"criticalUnits": ["sshd.service", unit]}}
    failed = reconciler_unit(nix_env, units)["failedAssertions"]
    assert any("healthGate.criticalUnits" in m and unit in m for m in failed), failed
    fine = {"healthGate": {"criticalUnits": ["sshd.service", "getty@tty1.service"]}}
    assert not [m for m in reconciler_unit(nix_env, fine)["failedAssertions"] if "criticalUnits" in m]


# -- runbooks ----------------------------------------------------------------------------------------


def test_runbooks_list_only_the_controls_that_name_them() -> None:
    baseline = load_baseline(Path(REPO / "baseline" / "hipaa-v1.yaml")).baseline
    remediation = {c.id: c.remediation for c in baseline.controls}
    for path in sorted((REPO / "runbooks").glob("RB-*.yaml")):
        runbook = yaml.safe_load(path.read_text())
        for cid in runbook.get("controls", []):
            assert remediation.get(cid) == runbook["id"], (
                f"{path.name} lists {cid}, whose remediation is {remediation.get(cid)}"
            )
