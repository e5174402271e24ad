"""Every .nix file parses, and the flake's lock pins the nixos-26.05 revision nix accepts as is."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import REPO

PIN = {
    "lastModified": 1787101114,
    "narHash": "sha256-gwrPcFf/rDjHPaVflbDZ040ZDmBTRj/7+s8ZmE2SaIM=",
    "owner": "NixOS",
    "repo": "nixpkgs",
    "rev": "b18a4b905f8d028dc4476412e6d6891728695379",
    "type": "github",
}


def nix_files() -> list[str]:
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "*.nix"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return sorted(line for line in out.splitlines() if (REPO / line).exists())


def test_there_are_nix_files() -> None:
    files = nix_files()
    assert "flake.nix" in files
    assert "modules/baselines/hipaa-v1.nix" in files
    assert any(f.startswith("checks/") for f in files)
    assert "python/nixcomply/sandbox/data/flake.nix" in files  # the sandbox host's flake


@pytest.mark.parametrize("path", nix_files())
def test_parses(path: str, nix_env: dict[str, str]) -> None:
    r = subprocess.run(
        ["nix-instantiate", "--parse", str(REPO / path)],
        capture_output=True,
        text=True,
        env=nix_env,
        check=False,
    )
    assert r.returncode == 0, f"{path}: {r.stderr}"


def test_lock_pins_nixos_26_05() -> None:
    lock = json.loads((REPO / "flake.lock").read_text())
    node = lock["nodes"]["nixpkgs"]
    assert node["locked"] == PIN
    assert node["original"] == {"owner": "NixOS", "ref": "nixos-26.05", "repo": "nixpkgs", "type": "github"}
    assert lock["nodes"]["root"] == {"inputs": {"nixpkgs": "nixpkgs"}}


def test_nix_accepts_the_lock_without_changing_it(tmp_path: Path, nix_env: dict[str, str]) -> None:
    """`--no-update-lock-file` makes nix refuse a lock that does not match flake.nix; with no
    network it would also fail if it had to fetch anything to complete the lock."""
    copy = tmp_path / "flake"
    copy.mkdir()
    for name in ("flake.nix", "flake.lock"):
        shutil.copy(REPO / name, copy / name)
    r = subprocess.run(
        ["nix", "flake", "metadata", "--json", "--no-update-lock-file", f"path:{copy}"],
        capture_output=True,
        text=True,
        env=nix_env,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    locks = json.loads(r.stdout)["locks"]
    assert locks["nodes"]["nixpkgs"]["locked"] == PIN
    assert (copy / "flake.lock").read_text() == (REPO / "flake.lock").read_text()


def test_flake_lists_the_outputs_clients_use() -> None:
    text = (REPO / "flake.nix").read_text()
    for output in [
        "nixosModules.default",
        "nixosModules.nixcomply",
        "overlays.default",
        "packages = ",
        "apps = ",
        "checks = ",
        "formatter = ",
    ]:
        assert output in text, output
    for system in ["x86_64-linux", "aarch64-linux"]:
        assert f'"{system}"' in text
