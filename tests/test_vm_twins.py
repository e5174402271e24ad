"""Every NixOS VM test in checks/ has a twin here (tests/vmtwin.py says how the NixOS system
is stood in for). The twins run the scenarios' own scripts, or check what the scripts rely
on, against the configuration the scenarios render, with the real nix and the real tools,
so a script that could never pass on a real NixOS fails CI first: waiting for a unit the
configuration does not define, an assertion on output the real tool never prints, a fleet
flake that cannot be locked offline.
"""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from test_module_options import defaults, rendered_config
from vmtwin import (
    UNITS,
    CliTwin,
    TwinError,
    call_args,
    fleet_node,
    nix_eval,
    node_of_baseline_hipaa,
    parse_command,
    render_node,
    run_script,
    scenario,
    string_calls,
    twin_machine,
)

from conftest import REPO
from nixcomply.errors import CommandError
from nixcomply.nixos.flake import FlakeMetadata, FlakeRef, flake_metadata
from nixcomply.nixos.tools import Tools

CHECKS = REPO / "checks"
SCENARIOS = sorted(p.name for p in CHECKS.glob("*.nix") if p.name not in {"default.nix", "lib.nix"})
RECONCILE = ["heal-service.nix", "reconcile-revert.nix", "reconcile-switch.nix"]
# fleet scenarios (a server node and host nodes) -> the twin that runs the same story here
FLEET = {"fleet-upload.nix": "tests/test_fleet_scenario.py"}


def test_every_scenario_has_a_twin() -> None:
    assert sorted(["baseline-hipaa.nix", *RECONCILE, *FLEET]) == SCENARIOS


@pytest.mark.parametrize("name", sorted(FLEET))
def test_fleet_scenarios_and_their_twins_name_each_other(name: str) -> None:
    twin = REPO / FLEET[name]
    assert twin.exists()
    assert FLEET[name] in (CHECKS / name).read_text(), f"{name} does not name its twin"
    assert f"checks/{name}" in twin.read_text(), f"{twin.name} does not name its scenario"
    # every unit the script starts is one nixcomply's modules define
    modules = "".join(p.read_text() for p in (REPO / "modules").glob("*.nix"))
    started = re.findall(r"systemctl (?:start|restart) ([a-z0-9.-]+)\.service", (CHECKS / name).read_text())
    assert started
    for unit in started:
        assert f"systemd.services.{unit} = " in modules, (
            f"{name} starts {unit}.service, which no module defines"
        )


# -- baseline-hipaa: the script itself, against the rendered configuration --------------------------


@pytest.fixture(scope="module")
def hipaa_scenario(nix_env: dict[str, str]) -> tuple[str, dict[str, Any]]:
    path = CHECKS / "baseline-hipaa.nix"
    return scenario(path, nix_env)["testScript"], node_of_baseline_hipaa(path, nix_env)


def run_twin(script: str, own: dict[str, Any], nix_env: dict[str, str]) -> list[str]:
    machine, tmp = twin_machine(own, nix_env)
    with tmp:
        run_script(script, machine)
    return machine.log


@pytest.mark.host
def test_baseline_hipaa_script_passes_on_its_twin(
    hipaa_scenario: tuple[str, dict[str, Any]], nix_env: dict[str, str]
) -> None:
    script, own = hipaa_scenario
    log = run_twin(script, own, nix_env)
    assert "wait_for_unit nftables.service" in log
    assert "auditctl -l" in log and "sshd -T" in log


# The two mistakes of the script before issue 10, put back one at a time.
OLD_FIREWALL = ('machine.wait_for_unit("nftables.service")', 'machine.wait_for_unit("firewall.service")')
OLD_KEYS = (
    '    for key in ["identity", "sudoers", "time-change", "logins", "session", "system-locale"]:\n'
    '        assert f" -k {key}" in rules',
    '    for key in ["identity", "sudoers", "privileged", "modules", "time-change"]:\n'
    '        assert f"key={key}" in rules',
)


@pytest.mark.host
@pytest.mark.parametrize(
    ("new", "old", "complaint"),
    [(*OLD_FIREWALL, "firewall.service is not a unit"), (*OLD_KEYS, "key identity missing")],
)
def test_the_old_mistakes_fail_the_twin(
    hipaa_scenario: tuple[str, dict[str, Any]], nix_env: dict[str, str], new: str, old: str, complaint: str
) -> None:
    script, own = hipaa_scenario
    assert new in script
    with pytest.raises(AssertionError, match=complaint):
        run_twin(script.replace(new, old), own, nix_env)


def test_the_twin_refuses_commands_it_cannot_answer(
    hipaa_scenario: tuple[str, dict[str, Any]], nix_env: dict[str, str]
) -> None:
    _, own = hipaa_scenario
    with pytest.raises(TwinError, match="cannot emulate"):
        run_twin('machine.succeed("rm -rf /var/log/audit")', own, nix_env)
    with pytest.raises(TwinError, match="does not know"):
        run_twin('machine.wait_for_unit("ehr.service")', own, nix_env)


def test_the_excepted_setting_is_absent_in_the_rendered_node(
    hipaa_scenario: tuple[str, dict[str, Any]], nix_env: dict[str, str]
) -> None:
    _, own = hipaa_scenario
    node = render_node(own, nix_env)
    assert ("services", "openssh", "settings", "MaxAuthTries") not in node.settings
    assert node.settings[("networking", "nftables", "enable")] is True
    assert node.settings[("security", "audit", "enable")] == "lock"


# -- the reconcile scenarios: the fleet flake and what the scripts rely on ---------------------------


def fleet_flake_files(nix_env: dict[str, str], nixpkgs: Path, nixcomply: Path) -> dict[str, str]:
    expr = (
        f"import {CHECKS}/common/fleet-flake.nix {{"
        f' pkgs = {{ path = "{nixpkgs}"; stdenv.hostPlatform.system = "x86_64-linux"; }};'
        ' lib.boolToString = b: if b then "true" else "false";'
        f' self = "{nixcomply}"; revision = "B"; appHealthy = true; }}'
    )
    files: dict[str, str] = nix_eval(expr, nix_env)
    return files


STAND_IN_NIXPKGS = """{
  # The in-VM nixpkgs, stood in for (the node's closure carries the real one): what the fleet
  # flake and nixcomply's flake call on it, nothing more.
  outputs = { self }: rec {
    lib = {
      genAttrs = names: f: builtins.listToAttrs (map (n: { name = n; value = f n; }) names);
      nixosSystem = args: { inherit (args) system; moduleCount = builtins.length args.modules; };
    };
    legacyPackages = lib.genAttrs [ "x86_64-linux" "aarch64-linux" ] (system: {
      callPackage = path: _: { name = "nixcomply"; inherit path; };
      stdenv.hostPlatform.system = system;
    });
  };
}
"""


def nixcomply_package_through_the_fleet(
    metadata: FlakeMetadata, nix_env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    """What evaluating the node reaches: nixosModules.default takes the reconciler's package
    from nixcomply's own `packages`, which come from nixcomply's nixpkgs input."""
    expr = f'(builtins.getFlake "{metadata.locked_url}").inputs.nixcomply.packages.x86_64-linux.default.name'
    return subprocess.run(
        ["nix", "eval", "--json", "--impure", "--expr", expr],
        capture_output=True,
        text=True,
        env=nix_env,
        check=False,
    )


def lay_out_fleet(tmp_path: Path, nix_env: dict[str, str]) -> tuple[Path, dict[str, str]]:
    """The fleet repository a scenario commits, next to a stand-in nixpkgs and a copy of this
    flake (what `path:${self}` is in the VM); git, since the reconciler follows git+file."""
    nixpkgs = tmp_path / "nixpkgs"
    nixpkgs.mkdir()
    (nixpkgs / "flake.nix").write_text(STAND_IN_NIXPKGS)
    nixcomply = tmp_path / "nixcomply"
    for part in ("flake.nix", "flake.lock", "apps.nix", "modules", "checks", "python/package.nix"):
        source, target = REPO / part, nixcomply / part
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target)
        else:
            shutil.copy(source, target)
    fleet = tmp_path / "fleet"
    fleet.mkdir()
    files = fleet_flake_files(nix_env, nixpkgs, nixcomply)
    return fleet, files


def commit_like_the_scenario(
    fleet: Path, files: dict[str, str], nix_env: dict[str, str], *, lock: bool = True
) -> subprocess.CompletedProcess[str]:
    """What scenario.nix's commit() does: copy the revision, git add, nix flake lock, commit."""
    for name, text in files.items():
        (fleet / name).write_text(text)
    git = ["git", "-C", str(fleet), "-c", "user.name=ci", "-c", "user.email=ci@nixcomply.test"]
    subprocess.run([*git, "init", "-q", "-b", "main"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    locked = subprocess.run(
        ["nix", "flake", "lock", str(fleet)], capture_output=True, text=True, env=nix_env, check=False
    )
    if locked.returncode != 0 and lock:
        return locked
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "rev"], check=True)
    return locked


def reconciler_reads(fleet: Path, nix_env: dict[str, str]) -> FlakeMetadata:
    """The reconciler's own call (nixcomply.nixos.flake.flake_metadata, --no-update-lock-file)."""
    return flake_metadata(FlakeRef.parse(f"git+file://{fleet}?ref=main"), tools=Tools(extra_env=nix_env))


@pytest.fixture
def offline_nix(nix_env: dict[str, str]) -> dict[str, str]:
    """nix as in the VM: anything it tries to download goes to a closed port on 127.0.0.1
    (a proxy that is not there), once, so no lookup leaves this machine."""
    closed = "http://127.0.0.1:9"
    return {
        **nix_env,
        "NIX_CONFIG": nix_env["NIX_CONFIG"] + "\ndownload-attempts = 1\nconnect-timeout = 2",
        "http_proxy": closed,
        "https_proxy": closed,
        "all_proxy": closed,
        "no_proxy": "",
    }


def test_the_fleet_flake_locks_and_evaluates_offline(tmp_path: Path, offline_nix: dict[str, str]) -> None:
    """Real nix, no network: the fleet flake locks with only the two path: inputs the VM has,
    because nixcomply's nixpkgs follows the fleet's; the reconciler's metadata call accepts the
    committed lock, and the configuration evaluates through nixcomply's module."""
    fleet, files = lay_out_fleet(tmp_path, offline_nix)
    r = commit_like_the_scenario(fleet, files, offline_nix)
    assert r.returncode == 0, r.stderr
    locked = (fleet / "flake.lock").read_text()
    assert "github" not in locked, "the lock must not need nixcomply's own nixpkgs"
    metadata = reconciler_reads(fleet, offline_nix)
    assert metadata.revision is not None
    count = subprocess.run(
        [
            "nix",
            "eval",
            "--json",
            "--no-update-lock-file",
            f"{metadata.locked_url}#nixosConfigurations.machine.moduleCount",
        ],
        capture_output=True,
        text=True,
        env=offline_nix,
        check=False,
    )
    assert count.returncode == 0, count.stderr
    assert count.stdout.strip() == "5"
    package = nixcomply_package_through_the_fleet(metadata, offline_nix)
    assert package.returncode == 0, package.stderr
    assert package.stdout.strip() == '"nixcomply"'


def test_without_follows_the_fleet_flake_needs_a_second_nixpkgs(
    tmp_path: Path, offline_nix: dict[str, str]
) -> None:
    fleet, files = lay_out_fleet(tmp_path, offline_nix)
    follows = '  inputs.nixcomply.inputs.nixpkgs.follows = "nixpkgs";\n'
    assert follows in files["flake.nix"]
    files["flake.nix"] = files["flake.nix"].replace(follows, "")
    r = commit_like_the_scenario(fleet, files, offline_nix)
    assert r.returncode == 0, r.stderr  # locking reuses nixcomply's own lock entry
    assert "github" in (fleet / "flake.lock").read_text(), "nixcomply's pinned nixpkgs is now a second input"
    package = nixcomply_package_through_the_fleet(reconciler_reads(fleet, offline_nix), offline_nix)
    assert package.returncode != 0, (
        "without follows nix must fetch nixcomply's pinned nixpkgs, which it cannot offline"
    )
    assert "unable to download" in package.stderr and "NixOS/nixpkgs" in package.stderr, package.stderr


def test_without_a_committed_lock_the_reconciler_refuses_the_revision(
    tmp_path: Path, offline_nix: dict[str, str]
) -> None:
    """The scenarios' commit() before issue 10 committed no flake.lock."""
    fleet, files = lay_out_fleet(tmp_path, offline_nix)
    commit_like_the_scenario(fleet, files, offline_nix, lock=False)
    subprocess.run(["git", "-C", str(fleet), "rm", "-q", "--cached", "flake.lock"], check=True)
    subprocess.run(
        [
            "git",
            "-C",
            str(fleet),
            "-c",
            "user.name=ci",
            "-c",
            "user.email=ci@nixcomply.test",
            "commit",
            "-qm",
            "no lock",
        ],
        check=True,
    )
    with pytest.raises(CommandError):
        reconciler_reads(fleet, offline_nix)


def script_calls(script: str) -> list[tuple[str, str]]:
    """(method, first string argument) of every machine.<method>("...") call of a script,
    f-strings with their placeholders left in."""
    calls = []
    for node in ast.walk(ast.parse(script)):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == "machine"
            and node.args
        ):
            arg = node.args[0]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                calls.append((node.func.attr, arg.value))
            elif isinstance(arg, ast.JoinedStr):
                text = "".join(str(v.value) if isinstance(v, ast.Constant) else "{}" for v in arg.values)
                calls.append((node.func.attr, text))
    return calls


@pytest.mark.parametrize("name", RECONCILE)
def test_reconcile_scripts_rely_only_on_what_the_node_defines(name: str, nix_env: dict[str, str]) -> None:
    """The reconcile flows themselves are the sandbox host's (make demo, test_reconcile_real);
    here every unit a script starts or waits for, every /etc file it reads and every state
    path it names must be one the node's configuration provides."""
    script = scenario(CHECKS / name, nix_env)["testScript"]
    own = fleet_node(nix_env)
    node = render_node(own, nix_env)
    units = {u for u, defined in UNITS.items() if defined(node)}
    units |= {f"{s}.service" for s in own.get("systemd", {}).get("services", {})}
    reconciler = own["nixcomply"]["reconciler"]
    if reconciler.get("enable"):
        units.add("nixcomply-reconcile.service")
    etc = set(own.get("environment", {}).get("etc", {})) | {"nixcomply/manifest.json"}
    state_dir = reconciler.get("stateDir", "/var/lib/nixcomply")
    metrics = reconciler.get("metrics", {}).get(
        "path", "/var/lib/prometheus-node-exporter-text-files/nixcomply.prom"
    )
    calls = script_calls(script)
    assert calls, "no machine calls found"
    for method, text in calls:
        for unit in (
            re.findall(r"[\w@.-]+\.(?:service|target|timer)", text)
            if method in {"wait_for_unit", "succeed", "fail"}
            else []
        ):
            assert unit in units, f"{name}: {method}({text!r}) names {unit}, which the node does not define"
        for etc_path in re.findall(r"cat (/etc/\S+)", text):
            assert etc_path.removeprefix("/etc/") in etc, (
                f"{name}: reads {etc_path}, which the node does not create"
            )
        for found in re.findall(r"(/var/lib/\S+)", text):
            path = found.rstrip("'\"")
            assert (
                path.startswith((state_dir, "/var/lib/fleet", "/var/lib/nixcomply-keys")) or path == metrics
            ), f"{name}: names {path}, which is neither the state directory nor the metrics file"


def test_the_static_twin_catches_an_undefined_unit(nix_env: dict[str, str]) -> None:
    script = scenario(CHECKS / "heal-service.nix", nix_env)["testScript"]
    assert 'wait_for_unit("app.service")' in script
    own = fleet_node(nix_env)
    own["systemd"]["services"].pop("app")
    node = render_node(own, nix_env)
    units = {u for u, defined in UNITS.items() if defined(node)}
    assert "app.service" not in units


# -- every nixcomply command a scenario runs, against the real CLI -------------------------------

HELPERS = {"operator": "runuser -u nixcomply-server -- nixcomply-server "}  # fleet-upload's helper


def nixcomply_calls(script: str) -> list[tuple[str, str, str]]:
    return [
        (r, m, c)
        for r, m, c in string_calls(script, helpers=HELPERS)
        if re.search(r"(^|-- )nixcomply(-server)? ", c) and m in {"succeed", "fail", "wait_until_succeeds"}
    ]


@pytest.mark.parametrize("name", SCENARIOS)
def test_every_nixcomply_command_of_a_scenario_parses(name: str, nix_env: dict[str, str]) -> None:
    calls = nixcomply_calls(scenario(CHECKS / name, nix_env)["testScript"])
    if name != "baseline-hipaa.nix":
        assert calls, f"{name} runs no nixcomply command"
    for _, _, command in calls:
        parse_command(command)


def provisioning(script: str) -> list[str]:
    """The arguments of the first call that makes the evidence keys (one node's provisioning)."""
    return next(texts for _, _, texts in call_args(script) if any("evidence keygen" in t for t in texts))


def node_config(nix_env: dict[str, str]) -> dict[str, Any]:
    """The reconciler.json the fleet node's options render to (modules/reconciler-config.nix)."""
    cfg = defaults()

    def merge(into: dict[str, Any], over: dict[str, Any]) -> None:
        for k, v in over.items():
            if isinstance(v, dict) and isinstance(into.get(k), dict):
                merge(into[k], v)
            else:
                into[k] = v

    merge(cfg, fleet_node(nix_env)["nixcomply"]["reconciler"])
    return rendered_config(cfg, nix_env)


def run_cli_commands(script: str, root: Path, nix_env: dict[str, str]) -> CliTwin:
    twin = CliTwin(root, config=root / "reconciler.json")
    twin.provision(provisioning(script))
    assert twin.config is not None
    twin.config.write_text(twin.path(json.dumps(node_config(nix_env))))
    calls = [(m, c) for _, m, c in nixcomply_calls(script)]
    assert any("evidence verify" in c for _, c in calls)
    for method, command in calls:
        if command.startswith("nixcomply evidence ") and "evidence keygen" not in command:
            twin.evidence(method, command)
        elif command.split()[:2] in (["nixcomply", "status"], ["nixcomply", "reset"]):
            twin.reconciler(method, command)
    return twin


@pytest.mark.parametrize("name", [*RECONCILE, *FLEET])
def test_the_nixcomply_commands_of_a_scenario_pass_on_the_real_cli(
    name: str, nix_env: dict[str, str], tmp_path: Path
) -> None:
    """The node is provisioned as the script provisions it (keygen, the keyring's copy made
    there and then), an entry is recorded with those keys, and every `nixcomply evidence`,
    `status` and `reset` command the script runs exits as succeed()/fail() needs, `status`
    with the reconciler.json the node's options render to: `evidence verify` without a
    pinned keyring exits 3, which would fail the VM test."""
    script = scenario(CHECKS / name, nix_env)["testScript"]
    twin = run_cli_commands(script, tmp_path, nix_env)
    assert any("evidence verify" in c and "--keyring" in c for c in twin.log), twin.log
    if name != "heal-service.nix":  # its script asks for no status
        assert any(" status " in c for c in twin.log), twin.log


def test_the_cli_twin_catches_a_verify_without_a_pinned_keyring(
    nix_env: dict[str, str], tmp_path: Path
) -> None:
    script = scenario(CHECKS / "reconcile-switch.nix", nix_env)["testScript"]
    old = re.sub(r" --keyring /var/lib/nixcomply-keys/keyring.json", "", script)
    assert old != script
    with pytest.raises(TwinError, match="exited 3, succeed"):
        run_cli_commands(old, tmp_path, nix_env)


def test_the_cli_twin_catches_an_argument_the_cli_does_not_know(nix_env: dict[str, str]) -> None:
    script = scenario(CHECKS / "reconcile-revert.nix", nix_env)["testScript"]
    assert 'nixcomply reset"' in script
    (reset,) = [c for _, _, c in nixcomply_calls(script) if c.startswith("nixcomply reset")]
    parse_command(reset)
    with pytest.raises(TwinError, match="refuses"):
        parse_command(reset + " --all")
