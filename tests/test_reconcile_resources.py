"""Resource windows around an activation (issue 12.4, 12.5), on the sandbox host with the
real nix, the real systemd user manager and a real filesystem that fills up.

- 12.4: with the state directory filling up mid-cycle, a revision was test-activated and the
  cycle died; that activation had no evidence record at all. The state directory here is a
  small tmpfs that a child reconcile fills to the last byte right after the health gate; the
  cycle dies on ENOSPC with exit 74, and once there is room again the next cycle records the
  activation. An activation also waits (outcome ``held``) while there is too little room.
- 12.5: a signing key that the keyring does not list as a bundle key was found only after the
  switch. Both keys are now checked before anything is activated.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fixtures_reconcile import ReconcileWorld

from nixcomply.cli import main
from nixcomply.evidence.keys import generate, write_private_key
from nixcomply.host.state import State
from nixcomply.model.outcome import ApplyOutcome
from nixcomply.nixos import generations, system
from nixcomply.reconcile.cycle import Reconciler

FILL_AT = textwrap.dedent(
    """
    import os, sys
    from nixcomply.core import faults
    from nixcomply.cli import main

    def fill(name):
        if name != sys.argv[1]:
            return
        fd = os.open(sys.argv[3], os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            while True:
                os.write(fd, b"\\0" * 65536)
        except OSError:
            pass
        os.close(fd)

    faults.HOOK = fill
    sys.exit(main(["reconcile", "--config", sys.argv[2]]))
    """
)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 8 MiB filesystem (tmpfs) to keep the state directory on."""
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m,mode=0700", "tmpfs", mount], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", mount], check=True)


def generation_changes(state_dir: Path) -> list[dict[str, Any]]:
    found = [json.loads(p.read_text()) for p in (state_dir / "evidence").rglob("statement.json")]
    changes = [s["predicate"] for s in found if s["predicateType"].endswith("/generation-change/v1")]
    return sorted(changes, key=lambda p: p["chain"]["seq"])


def on_small_disk(world: ReconcileWorld, disk: Path, target: str) -> Path:
    state_dir = disk / "state"
    state_dir.mkdir()
    shutil.copy2(world.host.state_dir / "keyring.json", state_dir / "keyring.json")
    world.configure(target, state_dir=str(state_dir), min_free_bytes=1 << 20)
    return state_dir


@pytest.mark.parametrize("target", ["newer", "broken"])
def test_an_activation_whose_first_records_fail_on_a_full_disk_is_recorded_later(
    fresh: ReconcileWorld, small_disk: Path, target: str
) -> None:
    fresh.install("good")
    state_dir = on_small_disk(fresh, small_disk, target)
    filler = small_disk / "filler"
    child = subprocess.run(
        [sys.executable, "-c", FILL_AT, "gated", str(fresh.host.config_path), str(filler)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert child.returncode == 74, child.stderr
    assert "No space left on device" in child.stderr or "the disk is full" in child.stderr, child.stderr
    assert "Traceback" not in child.stderr and "internal error" not in child.stderr
    root = fresh.sandbox.root
    assert generations.profile_target(root) == fresh.systems["good"], "the boot default never moved"

    # still full: the next cycle fails loudly again and activates nothing new
    log = root.path / "activations.log"
    before = log.read_text().splitlines()
    assert main(["reconcile", "--config", str(fresh.host.config_path)]) == 74
    assert log.read_text().splitlines() == before, "nothing was activated on a full disk"

    filler.unlink()
    for _ in range(3):
        report = Reconciler(fresh.host.config).run()
        if report.result.outcome == ApplyOutcome.NOTHING:
            break
    expected = fresh.systems[target] if target == "newer" else fresh.systems["good"]
    assert system.current_system(root) == generations.profile_target(root) == expected
    with State.open(state_dir) as state:
        assert state.in_progress() == []
    changes = generation_changes(state_dir)
    target_path = str(fresh.systems[target])
    activations = [
        line.split()[1]
        for line in log.read_text().splitlines()
        if line.startswith("test ") and line.split()[1] != line.split()[2]
    ]
    records = [c for c in changes if c["generation"]["store_path"] == target_path]
    assert len(records) >= activations.count(target_path) >= 2, (activations, changes)
    keys = [next(a["detail"] for a in c["actions"] if a["name"] == "attempt") for c in records]
    assert len(keys) == len(set(keys))
    assert "(recovered)" in records[0]["actions"][-1]["detail"]


def test_an_activation_waits_while_the_state_directory_has_too_little_room(fresh: ReconcileWorld) -> None:
    fresh.install("good")
    report = fresh.reconcile("newer", min_free_bytes=1 << 50)
    assert report.result.outcome == ApplyOutcome.HELD
    assert "nothing was activated" in report.result.detail and "min_free_bytes" in report.result.detail
    assert report.exit_code == 1
    root = fresh.sandbox.root
    assert system.current_system(root) == generations.profile_target(root) == fresh.systems["good"]
    with State.open(fresh.host.state_dir) as state:
        assert state.attempt(fresh.revs["newer"]) is None, "no attempt was even opened"
    assert fresh.reconcile("newer").result.outcome == ApplyOutcome.SUCCESS


def test_a_heal_still_runs_when_the_state_disk_is_too_full_to_note_it(
    fresh: ReconcileWorld, small_disk: Path
) -> None:
    """A full state disk stopped every heal: the cycle died remembering the services' restart
    counts, before any runbook ran, so none could free room (RB-DISK-001) or restart a
    service. Neither that nor the note that a runbook is under way stops a heal now; the
    cycle still fails loudly (74) on what it cannot record, without a traceback."""
    fresh.install("good")
    on_small_disk(fresh, small_disk, "good")
    assert fresh.systemctl("stop", "app.service").returncode == 0
    child = subprocess.run(
        [sys.executable, "-c", FILL_AT, "closed", str(fresh.host.config_path), str(small_disk / "filler")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert "runs without being noted as under way" in child.stderr, child.stderr
    assert fresh.systemctl("is-active", "app.service").stdout.strip() == "active", child.stderr
    assert child.returncode == 74, child.stderr
    assert "Traceback" not in child.stderr and "internal error" not in child.stderr


def test_a_signing_key_the_keyring_does_not_list_stops_the_cycle_before_anything_changes(
    fresh: ReconcileWorld, tmp_path: Path
) -> None:
    fresh.install("good")
    stranger = tmp_path / "stranger.key"
    write_private_key(stranger, generate("clinic-01/evidence-bundle"), durable=False)
    evidence = json.loads(fresh.host.config_path.read_text())["evidence"]
    fresh.configure("newer", evidence={**evidence, "signing_key": str(stranger)})
    code = main(["reconcile", "--config", str(fresh.host.config_path)])
    assert code == 1
    root = fresh.sandbox.root
    assert system.current_system(root) == generations.profile_target(root) == fresh.systems["good"]
    with State.open(fresh.host.state_dir) as state:
        assert state.attempt(fresh.revs["newer"]) is None
    assert not (fresh.host.state_dir / "evidence").exists() or generation_changes(fresh.host.state_dir) == []
