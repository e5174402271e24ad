"""No runbook can make an allowed program run another program (issue 12.1).

Two runbooks from a hostile campaign ran a program of their choice as root from inside a
reconcile cycle, recorded as a successful heal: ``borg --rsh '/bin/sh X'`` and ``restic -o
'sftp.command=/bin/sh X'``. Each is run here against the real borg and restic with X a
script that leaves a marker: the marker must never appear, and ``runbook validate`` and
``--dry-run`` refuse exactly what a run refuses.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from fixtures_heal import HealWorld

from conftest import Cli
from nixcomply.heal import guard, programs
from nixcomply.heal.executor import execute
from nixcomply.heal.runbook import load_runbook
from nixcomply.model.outcome import RunOutcome

ATTACKS = {
    "borg": [
        "borg",
        "--rsh",
        "/bin/sh {script}",
        "list",
        "ssh://nobody@127.0.0.1/repo",
    ],
    "restic": [
        "restic",
        "-o",
        "sftp.command=/bin/sh {script}",
        "-r",
        "sftp:127.0.0.1:/repo",
        "snapshots",
    ],
    "restic-option": [
        "restic",
        "--option=sftp.command=/bin/sh {script}",
        "-r",
        "sftp:x:/r",
        "snapshots",
    ],
    "journalctl-file": ["journalctl", "--vacuum-size=1G", "--file=/etc/shadow"],
    "nft-file": ["nft", "-f", "{script}"],
    "chronyc-remote": ["chronyc", "-h", "127.0.0.1", "makestep"],
}


def _runbook(tmp: Path, argv: list[str]) -> Path:
    quoted = ", ".join(f'"{a}"' for a in argv)
    path = tmp / "RB-ATTACK-001.yaml"
    path.write_text(
        "id: RB-ATTACK-001\nname: attack\nversion: 1\nseverity: low\ndescription: runs a program\n"
        "steps:\n"
        f"  - {{action: run_command, description: looks harmless, params: {{argv: [{quoted}]}},"
        " continue_on_failure: true}\n"
    )
    return path


@pytest.fixture
def script(tmp_path: Path) -> tuple[Path, Path]:
    marker = tmp_path / "ran"
    script = tmp_path / "x.sh"
    script.write_text(f"#!/bin/sh\ntouch {marker}\nexit 1\n")
    script.chmod(0o755)
    return script, marker


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_an_allowed_program_cannot_be_made_to_run_another(
    attack: str, script: tuple[Path, Path], heal: HealWorld, cli: Cli, tmp_path: Path
) -> None:
    x, marker = script
    argv = [a.format(script=x) for a in ATTACKS[attack]]
    path = _runbook(tmp_path, argv)
    binaries = {
        name: found
        for name in ("borg", "restic", "journalctl", "nft", "chronyc")
        if (found := shutil.which(name))
    }
    config = heal.config(binaries=binaries)

    validated = cli("runbook", "validate", path)
    assert validated.code == 2, validated.out
    assert f"{path}:" in validated.err and "argv" in validated.err and "Traceback" not in validated.err

    settings = tmp_path / "reconciler.json"
    settings.write_text(
        json.dumps(
            {
                "flake": "git+file:///nonexistent",
                "host": "h",
                "heal": {"binaries": binaries},
            }
        )
    )
    dry = cli("runbook", "run", path, "--dry-run", "--config", settings)
    assert dry.code == 2 and "argv" in dry.err, dry.out

    try:
        runbook = load_runbook(path)
    except Exception:  # noqa: BLE001 - refused at load: the run never starts
        runbook = None
    if runbook is not None:
        with pytest.raises(guard.GuardError):
            guard.check(runbook, {}, config)
        run = execute(runbook, {}, heal.context(config=config))
        assert run.outcome == RunOutcome.REJECTED, run.reason
    assert not marker.exists(), f"{attack}: the runbook ran a program of its choice"


def test_the_shipped_runbooks_programs_have_builders() -> None:
    """Every argv the shipped runbooks use is one a builder allows."""
    assert programs.build(["journalctl", "--rotate", "--vacuum-size=2G"]) == (
        "journalctl",
        "--rotate",
        "--vacuum-size=2G",
    )
    assert programs.build(["chronyc", "makestep"]) == ("chronyc", "makestep")
