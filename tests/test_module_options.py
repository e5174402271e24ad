"""The NixOS modules' options: each has a type and a description, the README's table is the
modules' own, and the options render to a reconciler.json the Python side accepts."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from optionsdoc import all_options, readme_with_table
from pydantic import ValidationError

from conftest import REPO
from nixcomply.baseline.nixattr import nix_value
from nixcomply.reconcile.config import ReconcilerConfig
from nixcomply.server.config import ServerConfig

RECURSIVE_UPDATE = (
    "let recursiveUpdate = a: b: a // builtins.mapAttrs (n: v: "
    "if builtins.isAttrs v && builtins.isAttrs (a.${n} or null) then recursiveUpdate a.${n} v else v) b; in "
)


def test_every_option_has_a_type_and_a_description(nix_env: dict[str, str]) -> None:
    found = all_options()
    names = {o["name"] for o in found}
    assert {"nixcomply.baseline", "nixcomply.exceptions", "nixcomply.reconciler.enable"} <= names
    assert len(found) >= 30
    for o in found:
        assert o["type"], f"{o['name']} has no type"
        assert o["description"] and len(o["description"].split()) >= 3, f"{o['name']} has no real description"


def test_readme_table_is_the_modules_own(nix_env: dict[str, str]) -> None:
    readme = (REPO / "README.md").read_text()
    assert readme_with_table(readme) == readme, "README's options table is stale: run `make render`"


def nest(flat: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in flat.items():
        node = out
        *parents, leaf = name.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


def rendered_config(
    cfg: dict[str, Any], nix_env: dict[str, str], module: str = "reconciler-config.nix"
) -> dict[str, Any]:
    """What ``modules/<module>`` (options -> JSON file) renders ``cfg`` to."""
    expr = (
        RECURSIVE_UPDATE
        + f"import {REPO}/modules/{module} {{ lib = {{ inherit recursiveUpdate; }}; }} ({nix_value(cfg)})"
    )
    r = subprocess.run(
        ["nix-instantiate", "--eval", "--strict", "--json", "-E", expr],
        capture_output=True,
        text=True,
        env=nix_env,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    data: dict[str, Any] = json.loads(r.stdout)
    return data


def defaults() -> dict[str, Any]:
    prefix = "nixcomply.reconciler."
    flat = {
        o["name"][len(prefix) :]: o["defaultValue"]
        for o in all_options()
        if o["name"].startswith(prefix)
        and "*" not in o["name"]
        and o["hasDefault"]
        and not o["name"].startswith(prefix + "maintenanceWindow.")
    }
    flat["hostAttribute"] = "clinic-01"  # defaultText: config.networking.hostName
    flat.pop("package", None)  # defaultText only
    return nest(flat)


def test_module_options_render_to_a_config_the_reconciler_accepts(
    tmp_path: Path, nix_env: dict[str, str]
) -> None:
    cfg = defaults()
    cfg.update(
        {
            "enable": True,
            "flake": "git+https://git.example/clinic-fleet?ref=main",
            "approvedRevision": "4c6abcaa2657f6a2505afabb4946e043995addc6",
            "signingKeyFile": "/run/keys/bundle.key",
            "logKeyFile": "/run/keys/log.key",
            "maintenanceWindow": {"start": "22:00", "end": "02:00", "days": ["sat", "sun"]},
        }
    )
    cfg["healthGate"]["liveness"] = [
        {"name": "portal", "argv": ["curl", "-fsS", "http://127.0.0.1/"], "timeout": 5}
    ]
    cfg["settings"] = {"checks": {"disk": {"mounts": ["/", "/var"]}}, "dry_run": True}
    data = rendered_config(cfg, nix_env)
    path = tmp_path / "reconciler.json"
    path.write_text(json.dumps(data))
    config = ReconcilerConfig.model_validate(data)
    assert config.flake == cfg["flake"]
    assert config.host == "clinic-01"
    assert config.approved_revision == cfg["approvedRevision"]
    assert config.health_gate.critical_units == ["sshd.service"]
    assert config.health_gate.liveness[0].argv == ["curl", "-fsS", "http://127.0.0.1/"]
    assert config.maintenance_window is not None
    assert config.maintenance_window.days == ["sat", "sun"]
    assert str(config.evidence.signing_key) == "/run/keys/bundle.key"
    assert config.poll_interval_seconds == 900
    # the mapping merges settings last; modules/reconciler.nix refuses a settings key that a
    # typed option sets (tests/test_reconciler_unit.py), so this only happens outside NixOS
    assert config.dry_run is True, "settings are merged over the rendered values"
    assert config.checks.disk.mounts == [Path("/"), Path("/var")] or [
        str(m) for m in config.checks.disk.mounts
    ] == ["/", "/var"]


def test_a_misspelt_setting_is_refused_naming_the_field(nix_env: dict[str, str]) -> None:

    cfg = defaults()
    cfg.update({"flake": "git+https://git.example/f", "settings": {"heath_gate": {"timeout": 5}}})
    data = rendered_config(cfg, nix_env)
    with pytest.raises(ValidationError, match="heath_gate"):
        ReconcilerConfig.model_validate(data)


def server_defaults() -> dict[str, Any]:
    prefix = "services.nixcomply-server."
    flat = {
        o["name"][len(prefix) :]: o["defaultValue"]
        for o in all_options()
        if o["name"].startswith(prefix) and o["hasDefault"] and o["name"] != prefix + "package"
    }
    return nest(flat)


def rendered_server_config(cfg: dict[str, Any], nix_env: dict[str, str]) -> dict[str, Any]:
    return rendered_config(cfg, nix_env, "server-config.nix")


def test_server_options_render_to_a_config_the_server_accepts(nix_env: dict[str, str]) -> None:

    cfg = server_defaults()
    cfg["witness"] = {"name": "evidence.msp.example/witness", "keyFile": "/var/lib/keys/witness.key"}
    config = ServerConfig.model_validate(rendered_server_config(cfg, nix_env))
    assert config.database.url == "postgresql+psycopg:///nixcomply-server?host=/run/postgresql"
    assert (config.listen.host, config.listen.port) == ("127.0.0.1", 8443)
    assert config.migrate_on_start is True
    # the path only (the unit reads the key as a credential); never the key itself
    assert str(config.witness.key_file) == "/var/lib/keys/witness.key"
    external = {**cfg, "database": {**cfg["database"], "createLocally": False, "urlFile": "/run/keys/db"}}
    external["settings"] = {"clock_skew_seconds": 120}
    config = ServerConfig.model_validate(rendered_server_config(external, nix_env))
    assert config.database.url is None
    assert config.clock_skew_seconds == 120


def test_upload_options_render_into_the_reconciler_config(nix_env: dict[str, str]) -> None:
    cfg = defaults()
    cfg.update({"flake": "git+https://git.example/f"})
    assert ReconcilerConfig.model_validate(rendered_config(cfg, nix_env)).upload.server is None
    cfg["upload"].update({"enable": True, "server": "https://evidence.msp.example"})
    config = ReconcilerConfig.model_validate(rendered_config(cfg, nix_env))
    assert config.upload.server == "https://evidence.msp.example"
