"""The README inside an auditor's packet says the one command that verifies it, and that
command works as written: run by a shell in the unpacked packet (and on the .zip), with only
the placeholder paths of the auditor's own keyring and witness key replaced by real files."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest
from fixtures_evidence import Keys, fill, open_store, write_keyring

from nixcomply.evidence.checkpoint import parse_note
from nixcomply.evidence.cosignature import generate_witness
from nixcomply.evidence.export import YOUR_KEYRING, YOUR_WITNESS, export_packet
from nixcomply.evidence.packet import README_FILE, unpack
from nixcomply.uplink.outbox import checkpoint, store_cosignature

NIXCOMPLY = Path(sys.executable).parent / "nixcomply"


def the_command(readme: str) -> str:
    """The indented command under "Verify it (one command)": exactly one."""
    section = readme.split("## Verify it (one command)", 1)[1].split("\n## ", 1)[0]
    commands: list[str] = re.findall(r"^    (nixcomply .+)$", section, flags=re.MULTILINE)
    assert len(commands) == 1, commands
    return commands[0]


def run(command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    argv = shlex.split(command)
    assert argv[0] == "nixcomply"
    env = {**os.environ, "PATH": f"{NIXCOMPLY.parent}:{os.environ.get('PATH', '')}"}
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.parametrize("witnessed", [True, False], ids=["witnessed", "not-enrolled"])
def test_the_packet_readme_command_verifies_the_unpacked_packet(
    witnessed: bool, keys: Keys, tmp_path: Path
) -> None:
    assert NIXCOMPLY.exists(), NIXCOMPLY
    state = tmp_path / "state"
    with open_store(state, keys) as store:
        fill(store, 3)
    write_keyring(state, keys)
    witness = generate_witness("msp.example/witness")
    if witnessed:
        note = checkpoint(state, 3)
        store_cosignature(state, 3, note, witness.cosign(parse_note(note).text), witness=witness.public)
    zipped = tmp_path / "packet-clinic-01.zip"
    export_packet(
        state,
        keys.keyring,
        zipped,
        start=date(2000, 1, 1),
        end=date(2099, 12, 31),
        witness_key=witness.public.vkey if witnessed else None,
    )
    unpacked = tmp_path / "unpacked"
    unpack(zipped, unpacked)
    readme = (unpacked / README_FILE).read_text()
    command = the_command(readme)
    assert (YOUR_WITNESS in command) == witnessed, command
    assert f"`{zipped.name}`" in readme, "the README names the .zip form too"

    # the auditor's own copies, obtained out of band
    mine = tmp_path / "auditor"
    mine.mkdir()
    shutil.copyfile(state / "keyring.json", mine / "keyring.json")
    (mine / "witness.vkey").write_text(witness.public.vkey + "\n")
    real = command.replace(YOUR_KEYRING, str(mine / "keyring.json")).replace(
        YOUR_WITNESS, str(mine / "witness.vkey")
    )
    assert "/path/to/" not in real

    r = run(real, cwd=unpacked)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.startswith("OK: packet .:"), r.stdout
    assert ("witness: the newest checkpoint (size 3) carries the valid cosignature" in r.stdout) == witnessed

    r = run(real.replace(" . ", f" {zipped.name} ", 1), cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr

    # and it is the auditor's keyring that decides: another one fails the same command
    other = tmp_path / "other.json"
    ours = (mine / "keyring.json").read_text()
    other.write_text(ours.replace(keys.bundle.public.vkey[-8:], "AAAAAAAA"))
    assert other.read_text() != ours
    r = run(real.replace(str(mine / "keyring.json"), str(other)), cwd=unpacked)
    assert r.returncode != 0, r.stdout
