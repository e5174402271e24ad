"""Rendering: deterministic output, freshness checks, and a round trip through the real Nix
evaluator that compares what the module sets, control by control, with the YAML."""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from conftest import DATA, REPO, Cli
from nixcomply.baseline import releases
from nixcomply.baseline.evaluate import definitions
from nixcomply.baseline.load import LoadedBaseline, load_baseline
from nixcomply.baseline.render import control_settings, render
from nixcomply.checks.context import parameters_of
from nixcomply.errors import InputError
from nixcomply.model.manifest import Manifest
from nixcomply.nixos.tools import Tools

HIPAA = REPO / "baseline" / "hipaa-v1.yaml"
MINIMAL = DATA / "baselines" / "valid-minimal.yaml"
EXCEPTION = {
    "justification": "test: prove the control renders to nothing",
    "approvedBy": "tester@example.test",
    "expires": "2030-01-01",
    "ticket": "T-1",
}
INTERNAL = ("nixcomply", "internal")
MANIFEST = ("environment", "etc", "nixcomply/manifest.json", "text")


def leaves(path: tuple[str, ...], value: Any) -> list[tuple[tuple[str, ...], str]]:
    """Definitions as eval-rendered.nix reports them: attribute sets descended to leaves."""
    if isinstance(value, dict) and value:
        return [leaf for k in sorted(value) for leaf in leaves((*path, k), value[k])]
    return [(path, json.dumps(value, sort_keys=True))]


def expected_definitions(
    loaded: LoadedBaseline, release: str, *, root_on_luks: bool, structured: bool = True
) -> dict[str, Counter[Any]]:
    target = releases.release(release)
    out: dict[str, Counter[Any]] = {}
    for control in loaded.baseline.controls:
        defs: Counter[Any] = Counter()
        for option, value in control_settings(control, target).resolved(structured=structured).items():
            defs.update(leaves(option, value))
        if control.requires:
            asserted = [{"assertion": root_on_luks, "message": r.message} for r in control.requires]
            defs.update(leaves(("assertions",), asserted))
        out[control.id] = defs
    return out


def evaluate(
    module: Path, baseline_id: str, scenarios: dict[str, dict[str, Any]], nix_env: dict[str, str], **args: Any
) -> dict[str, list[dict[str, Any]]]:
    return definitions(module, baseline_id, scenarios, tools=Tools(extra_env=nix_env), **args)


def split(definitions: list[dict[str, Any]]) -> tuple[Counter[Any], Manifest | None]:
    settings: Counter[Any] = Counter()
    manifest = None
    for d in definitions:
        path = tuple(d["path"])
        if path == MANIFEST:
            manifest = Manifest.model_validate_json(d["value"])
        elif path[:2] != INTERNAL:
            settings[(path, json.dumps(d["value"], sort_keys=True))] += 1
    return settings, manifest


def rendered_file(tmp_path: Path, loaded: LoadedBaseline, release: str) -> Path:
    module = tmp_path / f"{loaded.baseline.id}-{release}.nix"
    module.write_text(render(loaded, release=release))
    return module


def probed_options(release: str, *, structured: bool) -> dict[str, Any]:
    """A stand-in for `options` in which the probed structured options exist, or not."""
    options: dict[str, Any] = {}
    if structured:
        for mapping in releases.release(release).mappings:
            if isinstance(mapping, releases.Detect):
                node = options
                for name in mapping.probe:
                    node = node.setdefault(name, {})
                node["_type"] = "option"
    return options


ROUND_TRIPS = [
    (MINIMAL, "26.05", True),
    (HIPAA, "26.05", True),
    (HIPAA, "26.05", False),
    (HIPAA, "unstable", True),
    (HIPAA, "unstable", False),
]


@pytest.mark.parametrize(
    ("path", "release", "structured"),
    ROUND_TRIPS,
    ids=[f"{p.stem}-{r}-{'structured' if s else 'fallback'}" for p, r, s in ROUND_TRIPS],
)
def test_round_trip_through_nix(
    path: Path, release: str, structured: bool, tmp_path: Path, nix_env: dict[str, str]
) -> None:
    """Every control's settings reach the evaluated module value for value (on both sides of
    an option family whose spelling the evaluation decides); excepting a control removes
    exactly its settings and records the exception in the manifest."""
    loaded = load_baseline(path, release=release)
    module = rendered_file(tmp_path, loaded, release)
    expected = expected_definitions(loaded, release, root_on_luks=True, structured=structured)
    ids = [c.id for c in loaded.baseline.controls]
    scenarios: dict[str, dict[str, Any]] = {"none": {}}
    scenarios.update({f"except-{i}": {cid: EXCEPTION} for i, cid in enumerate(ids)})
    result = evaluate(
        module, loaded.baseline.id, scenarios, nix_env, options=probed_options(release, structured=structured)
    )

    everything, manifest = split(result["none"])
    assert everything == sum(expected.values(), Counter())
    assert manifest is not None
    assert manifest.baseline.id == loaded.baseline.id
    assert manifest.baseline.digest == loaded.digest
    assert manifest.nixos_release == release
    assert manifest.parameters == json.loads(json.dumps(loaded.baseline.parameters.model_dump()))
    assert manifest.exceptions == {}
    target = releases.release(release)
    for control in loaded.baseline.controls:
        entry = manifest.controls[control.id]
        assert entry.status == "enforced"
        assert entry.title == control.title
        assert entry.severity == control.severity.value
        assert entry.remediation == control.remediation
        assert entry.frameworks == control.frameworks.model_dump()
        assert entry.verify.model_dump() == control.verify.model_dump()
        spelled = {
            ".".join(p): v
            for p, v in control_settings(control, target).resolved(structured=structured).items()
        }
        assert {k.replace('"', ""): v for k, v in entry.settings.items()} == spelled

    for i, cid in enumerate(ids):
        settings, manifest = split(result[f"except-{i}"])
        assert settings == everything - expected[cid], f"excepting {cid} must remove exactly its settings"
        assert manifest is not None
        assert manifest.controls[cid].status == "excepted"
        assert set(manifest.exceptions) == {cid}
        assert manifest.exceptions[cid].approved_by == EXCEPTION["approvedBy"]
        others = {k for k, c in manifest.controls.items() if c.status == "excepted"}
        assert others == {cid}


def test_root_on_luks_assertion_fails_without_luks(tmp_path: Path, nix_env: dict[str, str]) -> None:
    loaded = load_baseline(HIPAA)
    module = rendered_file(tmp_path, loaded, "26.05")
    for fs, luks, holds in [
        ({"/": {"device": "/dev/sda2", "fsType": "ext4"}}, {}, False),
        (  # LVM on LUKS looks like this too: evaluation cannot tell (tests/test_module_logic.py)
            {"/": {"device": "/dev/mapper/other", "fsType": "ext4"}},
            {"cryptroot": {"device": "/dev/sda2"}},
            True,
        ),
        (
            {"/": {"device": "/dev/mapper/cryptroot", "fsType": "ext4"}},
            {"cryptroot": {"device": "/dev/sda2"}},
            True,
        ),
        (
            {"/": {"device": "/dev/disk/by-label/nixos", "fsType": "ext4"}},
            {"crypt": {"device": "/dev/sda2"}},
            True,
        ),
    ]:
        result = evaluate(module, "hipaa-v1", {"none": {}}, nix_env, fileSystems=fs, luksDevices=luks)
        asserted = [d["value"] for d in result["none"] if d["path"] == ["assertions"]]
        assert asserted, "encryption.root-on-luks renders an assertion"
        (assertions,) = asserted
        assert [a["assertion"] for a in assertions] == [holds], (fs, luks)
        assert "nixcomply.exceptions" in assertions[0]["message"]


def test_rendering_is_deterministic() -> None:
    loaded = load_baseline(HIPAA)
    assert render(loaded) == render(load_baseline(HIPAA))
    text = render(loaded)
    assert text.startswith("# Generated by `nixcomply render baseline/hipaa-v1.yaml --nixos-release 26.05`")
    assert "Do not edit" in text.splitlines()[1]


@pytest.mark.parametrize("release", ["26.05", "unstable"])
def test_rendered_module_parses(release: str, tmp_path: Path, nix_env: dict[str, str]) -> None:
    module = rendered_file(tmp_path, load_baseline(HIPAA, release=release), release)
    r = subprocess.run(
        ["nix-instantiate", "--parse", str(module)], capture_output=True, text=True, check=False
    )
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize(
    ("output", "release"),
    [("modules/baselines/hipaa-v1.nix", "26.05"), ("modules/baselines/hipaa-v1.unstable.nix", "unstable")],
)
def test_committed_modules_are_fresh(cli: Cli, output: str, release: str) -> None:
    r = cli("render", HIPAA, "--nixos-release", release, "-o", REPO / output, "--check")
    assert r.code == 0, r.err


def test_check_detects_stale_output(cli: Cli, tmp_path: Path) -> None:
    out = tmp_path / "out.nix"
    assert cli("render", MINIMAL, "-o", out).code == 0
    assert cli("render", MINIMAL, "-o", out, "--check").code == 0
    out.write_text(out.read_text().replace("PasswordAuthentication = false", "PasswordAuthentication = true"))
    r = cli("render", MINIMAL, "-o", out, "--check")
    assert r.code == 1
    assert "is stale" in r.err
    assert "-      services.openssh.settings.PasswordAuthentication = true;" in r.err


def test_render_to_stdout(cli: Cli) -> None:
    r = cli("render", MINIMAL)
    assert r.code == 0
    assert '(lib.mkIf (applies "ssh.password-auth-disabled") {' in r.out


def test_check_without_output_is_usage_error(cli: Cli) -> None:
    r = cli("render", MINIMAL, "--check")
    assert r.code == 2
    assert "--check needs -o" in r.err


def test_every_baseline_is_listed_for_both_releases(nix_env: dict[str, str]) -> None:
    expr = "builtins.mapAttrs (_: builtins.attrNames) (import ./modules/baselines)"
    r = subprocess.run(
        ["nix-instantiate", "--eval", "--strict", "--json", "-E", expr],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=nix_env,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    listed = json.loads(r.stdout)
    shipped = {p.stem for p in (REPO / "baseline").glob("*.yaml")}
    assert set(listed) == shipped
    for releases_listed in listed.values():
        assert sorted(releases_listed) == sorted(releases.RELEASES)


def test_json_schema_is_fresh(cli: Cli) -> None:
    r = cli("baseline", "schema", "-o", REPO / "baseline" / "baseline.schema.json", "--check")
    assert r.code == 0, r.err


def test_site_parameters_override_the_baselines(tmp_path: Path, nix_env: dict[str, str]) -> None:

    loaded = load_baseline(HIPAA)
    module = rendered_file(tmp_path, loaded, "26.05")
    site = {"critical_services": ["sshd.service", "ehr.service"], "backup_max_age_hours": 12}
    result = evaluate(module, "hipaa-v1", {"none": {}}, nix_env, parameters=site)
    _, manifest = split(result["none"])
    assert manifest is not None
    assert manifest.parameters["critical_services"] == ["sshd.service", "ehr.service"]
    assert manifest.parameters["backup_max_age_hours"] == 12
    assert (
        manifest.parameters["restore_test_max_age_days"]
        == loaded.baseline.parameters.restore_test_max_age_days
    )
    assert parameters_of(manifest).backup_max_age_hours == 12

    bad = evaluate(module, "hipaa-v1", {"none": {}}, nix_env, parameters={"backup_max_age_hour": 12})
    _, manifest = split(bad["none"])
    assert manifest is not None
    with pytest.raises(InputError, match="backup_max_age_hour"):
        parameters_of(manifest)
