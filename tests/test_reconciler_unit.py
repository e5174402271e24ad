"""The reconciler's systemd unit as modules/reconciler.nix makes it, evaluated by the real Nix
evaluator (tests/nix/reconciler-unit.nix, the twin of the NixOS VM tests that cannot run here):
its hardening, and the assertion that keeps the freeform `settings` from overriding a typed
option."""

from __future__ import annotations

import re
from typing import Any

import pytest
from test_module_logic import reconciler_unit

from conftest import REPO

KEYS = {"signingKeyFile": "/run/keys/bundle.key", "logKeyFile": "/run/keys/log.key"}
# What STYLE (harmonia) asks of a hardened unit; each is set or named under "Not set, on purpose".
ASKED = [
    "ProtectHostname",
    "RestrictAddressFamilies",
    "SystemCallFilter",
    "RestrictNamespaces",
    "ProtectProc",
    "ProcSubset",
    "PrivateDevices",
    "PrivateNetwork",
    "CapabilityBoundingSet",
    "MemoryDenyWriteExecute",
]


def unit(nix_env: dict[str, str], **options: Any) -> dict[str, Any]:
    return reconciler_unit(nix_env, {**KEYS, **options})


def test_the_unit_is_hardened(nix_env: dict[str, str]) -> None:
    got = unit(nix_env)
    assert got["failedAssertions"] == []
    h = got["hardening"]
    assert h["ProtectHostname"] is True
    assert h["RestrictAddressFamilies"] == ["AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK"]
    assert h["SystemCallFilter"] == ["@system-service"]
    assert h["SystemCallErrorNumber"] == "EPERM"
    assert h["RestrictNamespaces"] is True
    assert h["ProtectProc"] == "invisible"
    assert h["ProtectSystem"] == "strict"
    assert h["NoNewPrivileges"] is True


def test_every_hardening_directive_is_set_or_explained() -> None:
    text = (REPO / "modules" / "reconciler.nix").read_text()
    not_set = text[text.index("# Not set, on purpose:") :].split("}", 1)[0]
    explained = set(re.findall(r"^\s*# - ([A-Za-z]+)", not_set, flags=re.M))
    explained |= set(re.findall(r"/ ([A-Za-z]+):", not_set))
    for directive in ASKED:
        is_set = re.search(rf"^\s*{directive} = ", text, flags=re.M) is not None
        assert is_set != (directive in explained), f"{directive}: set, or explained as not set (exactly one)"


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"dry_run": True}, "dry_run"),
        ({"state_dir": "/tmp/x"}, "state_dir"),
        ({"health_gate": {"timeout": 5, "settle_seconds": 1}}, "health_gate.timeout"),
        ({"evidence": {"signing_key": "/nix/store/x-key"}}, "evidence.signing_key"),
        ({"maintenance_window": {"start": "01:00", "end": "02:00"}}, "maintenance_window"),
    ],
)
def test_settings_may_not_override_a_typed_option(
    settings: dict[str, Any], named: str, nix_env: dict[str, str]
) -> None:
    (message,) = unit(nix_env, settings=settings)["failedAssertions"]
    assert f"settings sets {named}," in message
    assert "set the option instead" in message


def test_settings_may_add_what_no_option_sets(nix_env: dict[str, str]) -> None:
    settings = {
        "health_gate": {"settle_seconds": 1},
        "evidence": {"origin": "clinic.example/log"},
        "checks": {"backup": {"kind": "restic", "repository": "/mnt/r", "password_file": "/run/keys/r"}},
        "heal": {"allowed_units": ["app.service"]},
    }
    assert unit(nix_env, settings=settings)["failedAssertions"] == []
