"""nixcomply.nixos and the sandbox host against the real nix, git and nix-env."""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from nixcomply.errors import CommandError
from nixcomply.nixos import build, flake, generations, git, rebuild, system
from nixcomply.nixos.flake import FlakeRef
from nixcomply.nixos.rebuild import RebuildAction
from nixcomply.nixos.tools import Tools
from nixcomply.sandbox.emulated import Sandbox

if TYPE_CHECKING:
    from fixtures_nix import NixWorld

pytestmark = pytest.mark.nix


# -- flake metadata and builds -------------------------------------------------------------------


def test_metadata_of_a_clean_tree_names_the_head(world: NixWorld) -> None:
    sb = world.sandbox
    md = flake.flake_metadata(sb.flake_ref, tools=sb.tools)
    assert md.revision == world.revs.side == sb.head()
    assert not md.dirty
    assert md.rev_count == 3  # skeleton, first, side: second and kernel are not in main's history now
    assert md.nar_hash.startswith("sha256-")
    assert md.locked_ref.rev == world.revs.side
    assert md.path.is_dir()
    assert md.last_modified is not None
    assert datetime.now(UTC) - md.last_modified < timedelta(hours=1)


def test_metadata_of_a_pinned_revision(world: NixWorld) -> None:
    sb = world.sandbox
    md = flake.flake_metadata(sb.flake_ref_at(world.revs.second), tools=sb.tools)
    assert md.revision == world.revs.second
    assert md.rev_count == 3


def test_dirty_tree_has_no_revision_and_builds_without_one(world: NixWorld) -> None:
    sb = world.sandbox
    clean = flake.flake_metadata(sb.flake_ref, tools=sb.tools)
    sb.make_dirty()
    try:
        md = flake.flake_metadata(sb.flake_ref, tools=sb.tools)
        dirty_system = sb.build()
    finally:
        sb.discard_changes()
    assert md.dirty
    assert md.revision is None
    assert md.rev_count is None
    assert md.nar_hash != clean.nar_hash
    assert "rev=" not in md.locked_url
    version = system.nixos_version(dirty_system, tools=sb.tools)
    assert version.configuration_revision is None
    assert flake.flake_metadata(sb.flake_ref, tools=sb.tools) == clean


def test_metadata_of_a_missing_flake_is_a_command_error(tmp_path: Path, world: NixWorld) -> None:
    with pytest.raises(CommandError) as info:
        flake.flake_metadata(FlakeRef.parse(f"git+file://{tmp_path}/absent"), tools=world.sandbox.tools)
    assert info.value.returncode == 1
    assert "absent" in info.value.stderr


def test_build_is_the_locked_revision_and_repeatable(world: NixWorld) -> None:
    sb = world.sandbox
    md = flake.flake_metadata(sb.flake_ref_at(world.revs.kernel), tools=sb.tools)
    path = build.build_toplevel(md.locked_ref, world.sandbox.host, tools=sb.tools)
    assert path == world.systems["kernel"]
    assert path.name.partition("-")[2].startswith(f"nixos-system-{world.sandbox.host}-")
    assert (path / "bin/switch-to-configuration").is_file()
    assert len({*world.systems.values()}) == 4


def test_two_commits_of_one_tree_each_build_their_own_revision(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two commits with the same tree, revision count and commit second but other parents
    (two sandbox hosts made at once by two test workers; on a host, a commit made again):
    Nix 2.8's evaluation cache keys a flake on exactly those, not on its revision, so the
    second build returned the first's system, whose configurationRevision is the other commit
    (the reconciler then saw drift on a host running its target, and test-activated it)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # Nix's caches: this test's own
    revs, built = [], []
    for n, skeleton in enumerate(("@1700000000 +0000", "@1700000001 +0000")):
        for var in ("GIT_AUTHOR_DATE", "GIT_COMMITTER_DATE"):
            monkeypatch.setenv(var, skeleton)
        sb = Sandbox.create(tmp_path / f"host{n}", host="twin")
        for var in ("GIT_AUTHOR_DATE", "GIT_COMMITTER_DATE"):
            monkeypatch.setenv(var, "@1700000100 +0000")
        revs.append(sb.commit_generation(label="the same tree"))
        built.append(sb.build(revs[-1]))
        assert flake.flake_metadata(sb.flake_ref_at(revs[-1]), tools=sb.tools).rev_count == 2
    assert revs[0] != revs[1]
    versions = [system.nixos_version(path, tools=sb.tools).configuration_revision for path in built]
    assert versions == revs
    assert built[0] != built[1]


def test_build_of_an_unknown_host_fails(world: NixWorld) -> None:
    sb = world.sandbox
    with pytest.raises(CommandError) as info:
        build.build_toplevel(sb.flake_ref, "no-such-host", tools=sb.tools)
    assert "no-such-host" in info.value.stderr


def test_nixos_version_and_manifest_of_a_built_system(world: NixWorld) -> None:
    sb = world.sandbox
    first = world.systems["first"]
    version = system.nixos_version(first, tools=sb.tools)
    assert version.configuration_revision == world.revs.first
    assert version.nixos_version == (first / "nixos-version").read_text().strip()
    assert version.nixpkgs_revision is not None
    manifest = system.read_manifest(first)
    assert manifest is not None
    assert manifest.baseline.version == 1
    assert system.read_manifest(world.systems["second"]).baseline.version == 2  # type: ignore[union-attr]
    assert system.kernel_version(first) == "6.12.1"
    assert system.kernel_version(world.systems["kernel"]) == "6.12.2"


def test_diff_closures(world: NixWorld) -> None:
    tools = world.sandbox.tools
    diff = build.diff_closures(world.systems["first"], world.systems["kernel"], tools=tools)
    assert "linux: 6.12.1 → 6.12.2" in diff.splitlines()
    assert "initrd-linux: 6.12.1 → 6.12.2" in diff.splitlines()
    assert build.diff_closures(world.systems["first"], world.systems["first"], tools=tools) == ""


# -- generations, activation, reboot -------------------------------------------------------------


def nix_env_generations(sb: Sandbox) -> list[tuple[int, bool]]:
    out = subprocess.run(
        ["nix-env", "-p", sb.root.system_profile, "--list-generations"],
        env=sb.env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [(int(line.split()[0]), "(current)" in line) for line in out.splitlines() if line.strip()]


def test_install_is_the_first_generation_booted_and_running(host: NixWorld) -> None:
    sb = host.sandbox
    assert generations.list_generations(sb.root) == []
    assert system.current_system(sb.root) is None
    result = sb.install(host.revs.first)
    assert result.returncode == 0
    assert not result.units_failed
    first = host.systems["first"]
    [generation] = generations.list_generations(sb.root)
    assert (generation.number, generation.path, generation.current) == (1, first, True)
    assert system.current_system(sb.root) == first
    assert system.booted_system(sb.root) == first


def test_test_activates_without_moving_the_profile(host: NixWorld) -> None:
    sb = host.sandbox
    sb.install(host.revs.first)
    result = rebuild.nixos_rebuild(RebuildAction.TEST, host.systems["second"], tools=sb.tools)
    assert result.returncode == 0
    assert result.stdout.strip() == str(host.systems["second"])
    assert system.current_system(sb.root) == host.systems["second"]
    assert generations.profile_target(sb.root) == host.systems["first"]
    assert len(generations.list_generations(sb.root)) == 1
    # the failed-gate path: re-activate the generation the profile still points at
    back = rebuild.switch_to_configuration(host.systems["first"], RebuildAction.TEST, tools=sb.tools)
    assert not back.units_failed
    assert system.current_system(sb.root) == host.systems["first"]


def test_switch_moves_the_profile_like_nix_env_says(host: NixWorld) -> None:
    sb = host.sandbox
    sb.install(host.revs.first)
    rebuild.nixos_rebuild(RebuildAction.SWITCH, host.systems["second"], tools=sb.tools)
    rebuild.nixos_rebuild(RebuildAction.SWITCH, host.systems["kernel"], tools=sb.tools)
    gens = generations.list_generations(sb.root)
    assert (
        [(g.number, g.current) for g in gens]
        == nix_env_generations(sb)
        == [(1, False), (2, False), (3, True)]
    )
    assert [g.path for g in gens] == [host.systems[n] for n in ("first", "second", "kernel")]
    assert gens[0].date <= gens[1].date <= gens[2].date
    assert system.current_system(sb.root) == host.systems["kernel"]
    # a rollback by hand (what the reconciler must notice as an external change)
    subprocess.run(["nix-env", "-p", sb.root.system_profile, "--rollback"], env=sb.env, check=True)
    current = generations.current_generation(sb.root)
    assert current is not None
    assert current.number == 2
    assert generations.profile_target(sb.root) == host.systems["second"]
    assert nix_env_generations(sb)[1] == (2, True)


def test_boot_and_dry_activate_leave_the_running_system(host: NixWorld) -> None:
    sb = host.sandbox
    sb.install(host.revs.first)
    dry = rebuild.nixos_rebuild(RebuildAction.DRY_ACTIVATE, host.systems["second"], tools=sb.tools)
    assert "would activate" in dry.stdout
    assert generations.profile_target(sb.root) == host.systems["first"]
    rebuild.nixos_rebuild(RebuildAction.BOOT, host.systems["kernel"], tools=sb.tools)
    assert generations.profile_target(sb.root) == host.systems["kernel"]
    assert system.current_system(sb.root) == host.systems["first"]
    assert system.need_reboot(sb.root, target=generations.profile_target(sb.root)).needed


def test_need_reboot_after_a_kernel_change_until_the_reboot(host: NixWorld) -> None:
    sb = host.sandbox
    sb.install(host.revs.first)
    rebuild.nixos_rebuild(RebuildAction.SWITCH, host.systems["second"], tools=sb.tools)
    assert not system.need_reboot(sb.root).needed  # same kernel, initrd and modules
    rebuild.nixos_rebuild(RebuildAction.SWITCH, host.systems["kernel"], tools=sb.tools)
    need = system.need_reboot(sb.root)
    assert need.changed == ("kernel", "initrd", "kernel-modules")
    assert (need.booted, need.target) == (host.systems["first"], host.systems["kernel"])
    sb.reboot()
    assert system.booted_system(sb.root) == host.systems["kernel"]
    assert not system.need_reboot(sb.root).needed


def test_list_generations_json_has_nixos_rebuild_ng_shape(host: NixWorld) -> None:
    sb = host.sandbox
    sb.install(host.revs.first)
    rebuild.nixos_rebuild(RebuildAction.SWITCH, host.systems["kernel"], tools=sb.tools)
    out = subprocess.run(
        ["nixos-rebuild", "list-generations", "--json"],
        env=sb.env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    listed = json.loads(out)
    assert [set(g) for g in listed] == [
        {
            "generation",
            "date",
            "nixosVersion",
            "kernelVersion",
            "configurationRevision",
            "specialisations",
            "current",
        }
    ] * 2
    assert [(g["generation"], g["current"], g["kernelVersion"]) for g in listed] == [
        (2, True, "6.12.2"),
        (1, False, "6.12.1"),
    ]
    assert [g["configurationRevision"] for g in listed] == [host.revs.kernel, host.revs.first]
    ours = generations.list_generations(sb.root)
    assert [g["date"] for g in listed] == [
        g.date.astimezone().strftime("%Y-%m-%d %H:%M:%S") for g in reversed(ours)
    ]


# -- the emulation refuses to touch anything but a sandbox root -----------------------------------


@pytest.mark.parametrize("root", [None, "/", "/tmp"])
def test_switch_to_configuration_refuses_outside_a_sandbox(world: NixWorld, root: str | None) -> None:
    extra = {} if root is None else {"NIXCOMPLY_SANDBOX_ROOT": root}
    with pytest.raises(CommandError) as info:
        rebuild.switch_to_configuration(
            world.systems["first"], RebuildAction.TEST, tools=Tools(extra_env=extra)
        )
    assert info.value.returncode == 1
    assert "refusing to run" in info.value.stderr


def test_emulated_nixos_rebuild_rejects_what_it_does_not_emulate(host: NixWorld) -> None:
    sb = host.sandbox
    with pytest.raises(CommandError, match="is not a NixOS system closure"):
        rebuild.nixos_rebuild(RebuildAction.SWITCH, sb.dir, tools=sb.tools)
    r = subprocess.run(
        [sb.bin_dir / "nixos-rebuild", "switch", "--flake", str(sb.flake_ref)],
        env=sb.env,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 1
    assert "unsupported argument '--flake'" in r.stderr
    assert not sb.root.system_profile.exists()


# -- git history ---------------------------------------------------------------------------------


def test_is_ancestor(world: NixWorld, tmp_path: Path) -> None:
    repo, revs, tools = world.sandbox.flake_dir, world.revs, world.sandbox.tools
    assert git.history_dir(world.sandbox.flake_ref) == repo
    assert git.is_ancestor(repo, revs.first, revs.second, tools=tools) is True
    assert git.is_ancestor(repo, revs.first, revs.first, tools=tools) is True
    assert git.is_ancestor(repo, revs.kernel, revs.second, tools=tools) is False
    assert git.is_ancestor(repo, revs.second, revs.side, tools=tools) is False  # the non-descendant target
    assert git.is_ancestor(repo, revs.first, revs.side, tools=tools) is True
    assert git.is_ancestor(repo, "0" * 40, revs.side, tools=tools) is None
    assert git.is_ancestor(tmp_path, revs.first, revs.side, tools=tools) is None  # not a repository
    assert git.commit_exists(repo, revs.kernel, tools=tools)
    assert not git.commit_exists(repo, "0" * 40, tools=tools)


def test_is_ancestor_in_a_shallow_clone_is_unknown(world: NixWorld, tmp_path: Path) -> None:
    clone = tmp_path / "clone"
    subprocess.run(
        ["git", "clone", "-q", "--depth", "1", f"file://{world.sandbox.flake_dir}", clone], check=True
    )
    assert git.is_shallow(clone)
    assert git.is_ancestor(clone, world.revs.first, world.revs.side) is None
    assert git.is_ancestor(clone, world.revs.side, world.revs.side) is True


def test_sandbox_reopens(world: NixWorld) -> None:
    sb = world.sandbox
    assert Sandbox.open(sb.dir) == sb
    assert "emulated" in sb.describe()
