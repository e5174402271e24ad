"""nixcomply.nixos with the subprocess gateway mocked: exact argv, parsing of captured outputs."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from unittest import mock

import pytest
from boundary import result

from conftest import DATA
from nixcomply.core import process
from nixcomply.errors import CommandError
from nixcomply.nixos import build, flake, generations, git, rebuild, system
from nixcomply.nixos.flake import FlakeRef
from nixcomply.nixos.rebuild import RebuildAction
from nixcomply.nixos.root import Root
from nixcomply.nixos.tools import Tools

NIXDATA = DATA / "nix"
P1 = Path("/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-nixos-system-h-26.05")
P2 = Path("/nix/store/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-nixos-system-h-26.05")


# -- flake references ---------------------------------------------------------------------------


# text -> url, attr, scheme, local_path, rev, ref
FLAKE_REFS: list[tuple[str, str, str | None, str, Path | None, str | None, str | None]] = [
    ("/etc/nixos", "/etc/nixos", None, "", Path("/etc/nixos"), None, None),
    ("./fleet#clinic-01", "./fleet", "clinic-01", "", Path("./fleet"), None, None),
    ("path:/srv/fleet#h", "path:/srv/fleet", "h", "path", Path("/srv/fleet"), None, None),
    ("git+file:///srv/fleet", "git+file:///srv/fleet", None, "git+file", Path("/srv/fleet"), None, None),
    (
        "git+https://git.example/clinic-fleet?ref=main#clinic-01",
        "git+https://git.example/clinic-fleet?ref=main",
        "clinic-01",
        "git+https",
        None,
        None,
        "main",
    ),
    (
        "git+https://git.example/f?ref=main&rev=" + "a" * 40,
        "git+https://git.example/f?ref=main&rev=" + "a" * 40,
        None,
        "git+https",
        None,
        "a" * 40,
        "main",
    ),
    ("github:o/r/" + "b" * 40, "github:o/r/" + "b" * 40, None, "github", None, "b" * 40, None),
    ("github:o/r/nixos-26.05#h", "github:o/r/nixos-26.05", "h", "github", None, None, "nixos-26.05"),
    ("github:o/r", "github:o/r", None, "github", None, None, None),
]


@pytest.mark.parametrize(("text", "expected"), [(case[0], case[1:]) for case in FLAKE_REFS])
def test_flake_ref_parse(text: str, expected: tuple[object, ...]) -> None:
    r = FlakeRef.parse(text)
    assert (r.url, r.attr, r.scheme, r.local_path, r.rev, r.ref) == expected
    assert str(r) == text


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("#host", "empty"),
        ("nixpkgs", "registry"),
        ("flake:nixpkgs", "unsupported flake reference scheme 'flake'"),
        ("svn+https://x/y", "unsupported"),
    ],
)
def test_flake_ref_rejects(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        FlakeRef.parse(text)


def test_toplevel_attr_quotes_the_host() -> None:
    assert flake.toplevel_attr("clinic-01") == 'nixosConfigurations."clinic-01".config.system.build.toplevel'
    with pytest.raises(ValueError, match="invalid host"):
        flake.toplevel_attr('a"b')


# -- nix flake metadata -------------------------------------------------------------------------


def test_flake_metadata_argv_and_clean_tree(run: mock.MagicMock) -> None:
    run.return_value = result(stdout=(NIXDATA / "flake-metadata-clean.json").read_text())
    md = flake.flake_metadata(FlakeRef.parse("git+file:///srv/fleet#clinic-01"))
    run.assert_called_once_with(
        ["nix", "flake", "metadata", "--json", "--no-update-lock-file", "git+file:///srv/fleet"],
        check=True,
        timeout=process.DEFAULT_TIMEOUT,
        extra_env=None,
        cwd=None,
        allowed_returncodes=(0,),
    )
    assert md.revision == "b5158a63950af23bbaca061203fe1e663990ebd5"
    assert not md.dirty
    assert md.rev_count == 3
    assert md.nar_hash == "sha256-yoXjG4HZtwHojjrJe1/GcMLUYvk5CkUnFCQ87cGcMWg="
    assert md.locked_url.endswith("?ref=main&rev=b5158a63950af23bbaca061203fe1e663990ebd5")
    assert md.locked_ref.rev == md.revision
    assert md.original_url == "git+file:///tmp/nixcomply-capture/host/flake"
    assert md.path == Path("/nix/store/j8j7ifa5ckzz5g4w00bmircd57k482c6-source")
    assert md.last_modified == datetime.fromtimestamp(1795436672, UTC)
    assert md.description == "nixcomply sandbox host"


def test_flake_metadata_dirty_tree(run: mock.MagicMock) -> None:
    run.return_value = result(stdout=(NIXDATA / "flake-metadata-dirty.json").read_text())
    md = flake.flake_metadata(FlakeRef.parse("/srv/fleet"), refresh=True, tools=Tools(nix="/x/nix"))
    assert run.call_args.args[0] == [
        "/x/nix",
        "flake",
        "metadata",
        "--json",
        "--no-update-lock-file",
        "--refresh",
        "/srv/fleet",
    ]
    assert md.dirty
    assert md.revision is None
    assert md.rev_count is None
    assert md.dirty_revision is None  # Nix 2.8 has no dirtyRevision
    assert md.locked_url == "git+file:///tmp/nixcomply-capture/host/flake"


def test_flake_metadata_newer_nix_dirty_revision() -> None:
    text = (
        (NIXDATA / "flake-metadata-dirty.json")
        .read_text()
        .replace('"description"', '"dirtyRevision":"' + "c" * 40 + '-dirty","fingerprint":"x","description"')
    )
    md = flake.parse_flake_metadata(text)
    assert md.dirty
    assert md.dirty_revision == "c" * 40 + "-dirty"


def test_flake_metadata_unexpected_output_is_a_command_error(run: mock.MagicMock) -> None:
    run.return_value = result(stdout='{"url": "x"}')
    with pytest.raises(CommandError, match="unexpected `nix flake metadata --json` output"):
        flake.flake_metadata(FlakeRef.parse("/srv/fleet"))


def test_tools_extra_env_is_passed(run: mock.MagicMock) -> None:
    run.return_value = result(stdout=(NIXDATA / "flake-metadata-clean.json").read_text())
    flake.flake_metadata(FlakeRef.parse("/f"), tools=Tools(extra_env={"NIX_CONFIG": "x"}))
    assert run.call_args.kwargs["extra_env"] == {"NIX_CONFIG": "x"}


# -- nix build, diff-closures -------------------------------------------------------------------


def test_build_toplevel_argv_and_output(run: mock.MagicMock) -> None:
    run.return_value = result(stdout=(NIXDATA / "build.json").read_text())
    ref = FlakeRef.parse("git+file:///srv/fleet?ref=main&rev=" + "a" * 40 + "#ignored")
    path = build.build_toplevel(ref, "clinic-01")
    run.assert_called_once_with(
        [
            "nix",
            "build",
            "--json",
            "--no-link",
            "--no-update-lock-file",
            "--no-eval-cache",
            "git+file:///srv/fleet?ref=main&rev="
            + "a" * 40
            + '#nixosConfigurations."clinic-01".config.system.build.toplevel',
        ],
        check=True,
        timeout=build.BUILD_TIMEOUT,
        extra_env=None,
        cwd=None,
        allowed_returncodes=(0,),
    )
    assert path == Path(
        "/nix/store/racpg3al1iz8y9rf2jghj68rimx9is09-nixos-system-clinic-01-26.05.20260501.0123456"
    )


@pytest.mark.parametrize(
    "stdout",
    ["", "[]", '[{"drvPath": "/d", "outputs": {"dev": "/x"}}]', '[{"outputs": {"out": "/x"}}]', "nope"],
)
def test_build_unexpected_output(run: mock.MagicMock, stdout: str) -> None:
    run.return_value = result(stdout=stdout)
    with pytest.raises(CommandError, match="build"):
        build.build_toplevel(FlakeRef.parse("/f"), "h")


def test_diff_closures_argv_and_output(run: mock.MagicMock) -> None:
    captured = (NIXDATA / "diff-closures.txt").read_text()
    run.return_value = result(stdout=captured)
    assert build.diff_closures(P1, P2) == "initrd-linux: 6.12.1 → 6.12.2\nlinux: 6.12.1 → 6.12.2\n"
    run.assert_called_once_with(
        ["nix", "store", "diff-closures", P1, P2],
        check=True,
        timeout=process.DEFAULT_TIMEOUT,
        extra_env=None,
        cwd=None,
        allowed_returncodes=(0,),
    )


def test_diff_closures_removes_colour(run: mock.MagicMock) -> None:
    run.return_value = result(stdout="\x1b[1mlinux\x1b[0m: 6.12.1 → 6.12.2, \x1b[31;1m+9.1 KiB\x1b[0m\n")
    assert build.diff_closures(P1, P2) == "linux: 6.12.1 → 6.12.2, +9.1 KiB\n"


# -- generations and the running system (files, no subprocess) -----------------------------------


def make_generation(root: Root, number: int, target: Path, mtime: float) -> None:
    link = root.generation_link(number)
    link.symlink_to(target)
    os.utime(link, (mtime, mtime), follow_symlinks=False)


def test_generations_from_links(tmp_path: Path, run: mock.MagicMock) -> None:
    root = Root(tmp_path)
    assert generations.list_generations(root) == []
    assert generations.profile_target(root) is None
    root.profiles_dir.mkdir(parents=True)
    make_generation(root, 1, P1, 1_700_000_000)
    make_generation(root, 10, P2, 1_700_000_100)
    (root.profiles_dir / "system-x-link").symlink_to(P1)  # not a generation
    (root.profiles_dir / "per-user").mkdir()
    root.system_profile.symlink_to("system-10-link")
    gens = generations.list_generations(root)
    assert gens == [
        generations.Generation(1, P1, datetime.fromtimestamp(1_700_000_000, UTC), current=False),
        generations.Generation(10, P2, datetime.fromtimestamp(1_700_000_100, UTC), current=True),
    ]
    assert generations.current_generation(root) == gens[1]
    assert generations.profile_target(root) == P2
    run.assert_not_called()


def test_root_paths() -> None:
    root = Root(Path("/tmp/r"))
    assert root.system_profile == Path("/tmp/r/nix/var/nix/profiles/system")
    assert root.generation_link(3) == Path("/tmp/r/nix/var/nix/profiles/system-3-link")
    assert root.current_system == Path("/tmp/r/run/current-system")
    assert root.booted_system == Path("/tmp/r/run/booted-system")
    assert Root().resolve("/etc/nixcomply/x.json") == Path("/etc/nixcomply/x.json")


def fake_system(base: Path, name: str, *, kernel: str, initrd: str, modules: str) -> Path:
    system_dir = base / name
    system_dir.mkdir()
    (system_dir / "kernel").symlink_to(f"/nix/store/k-{kernel}/bzImage")
    (system_dir / "initrd").symlink_to(f"/nix/store/i-{initrd}/initrd")
    (system_dir / "kernel-modules").symlink_to(f"/nix/store/m-{modules}")
    return system_dir


def test_need_reboot_compares_link_targets(tmp_path: Path) -> None:
    root = Root(tmp_path / "root")
    root.current_system.parent.mkdir(parents=True)
    a = fake_system(tmp_path, "a", kernel="1", initrd="1", modules="1")
    b = fake_system(tmp_path, "b", kernel="2", initrd="1", modules="2")
    assert not system.need_reboot(root).needed  # nothing booted: unknown, not needed
    root.booted_system.symlink_to(a)
    root.current_system.symlink_to(a)
    assert system.current_system(root) == a
    assert system.need_reboot(root).changed == ()
    need = system.need_reboot(root, target=b)
    assert (need.kernel, need.initrd, need.kernel_modules) == (True, False, True)
    assert need.changed == ("kernel", "kernel-modules")
    assert need.needed
    assert need.booted == a
    assert need.target == b


def test_kernel_version(tmp_path: Path) -> None:
    (tmp_path / "kernel-modules/lib/modules/6.12.1").mkdir(parents=True)
    assert system.kernel_version(tmp_path) == "6.12.1"
    assert system.kernel_version(tmp_path / "nope") is None


# -- nixos-version --------------------------------------------------------------------------------


def test_nixos_version_argv_and_parse(run: mock.MagicMock) -> None:
    run.return_value = result(stdout=(NIXDATA / "nixos-version.json").read_text())
    v = system.nixos_version(P1)
    run.assert_called_once_with(
        [P1 / "sw/bin/nixos-version", "--json"],
        check=True,
        timeout=30,
        extra_env=None,
        cwd=None,
        allowed_returncodes=(0,),
    )
    assert v == system.NixosVersion(
        "26.05.20260501.0123456",
        "0123456789abcdef0123456789abcdef01234567",
        "b5158a63950af23bbaca061203fe1e663990ebd5",
    )


def test_nixos_version_without_configuration_revision(run: mock.MagicMock) -> None:
    run.return_value = result(stdout=(NIXDATA / "nixos-version-dirty.json").read_text())
    assert system.nixos_version(P1).configuration_revision is None


def test_nixos_version_garbage(run: mock.MagicMock) -> None:
    run.return_value = result(stdout="26.05 (Yarara)\n")
    with pytest.raises(CommandError, match="nixos-version"):
        system.nixos_version(P1)


# -- activation ----------------------------------------------------------------------------------


@pytest.mark.parametrize("action", list(RebuildAction))
def test_nixos_rebuild_argv(run: mock.MagicMock, action: RebuildAction) -> None:
    run.return_value = result(stdout=f"{P1}\n")
    r = rebuild.nixos_rebuild(action, P1, tools=Tools(nixos_rebuild="/sb/bin/nixos-rebuild"))
    run.assert_called_once_with(
        ["/sb/bin/nixos-rebuild", action.value, "--store-path", P1, "--no-reexec"],
        check=True,
        timeout=rebuild.ACTIVATION_TIMEOUT,
        extra_env=None,
        cwd=None,
        allowed_returncodes=(0, 4),
    )
    assert r.action is action
    assert r.system == P1
    assert not r.units_failed


def test_exit_4_is_units_failed_not_an_error(run: mock.MagicMock) -> None:
    run.return_value = result(returncode=4, stderr="warning: the following units failed: bad.service\n")
    r = rebuild.switch_to_configuration(P2, RebuildAction.TEST)
    run.assert_called_once_with(
        [P2 / "bin/switch-to-configuration", "test"],
        check=True,
        timeout=rebuild.ACTIVATION_TIMEOUT,
        extra_env=None,
        cwd=None,
        allowed_returncodes=(0, 4),
    )
    assert r.units_failed
    assert r.returncode == 4
    assert "bad.service" in r.stderr


def test_other_activation_failures_raise(run: mock.MagicMock) -> None:
    run.side_effect = CommandError(["nixos-rebuild", "switch"], returncode=1, stderr="activation failed")
    with pytest.raises(CommandError, match="activation failed"):
        rebuild.nixos_rebuild(RebuildAction.SWITCH, P1)


def test_action_capabilities() -> None:
    assert [a for a in RebuildAction if a.sets_profile] == [RebuildAction.SWITCH, RebuildAction.BOOT]
    assert [a for a in RebuildAction if a.activates] == [RebuildAction.TEST, RebuildAction.SWITCH]


# -- git ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("code", "expected"), [(0, True), (128, None)])
def test_is_ancestor(tmp_path: Path, run: mock.MagicMock, code: int, expected: bool | None) -> None:
    run.return_value = result(returncode=code)
    assert git.is_ancestor(tmp_path, "a" * 40, "b" * 40) is expected
    run.assert_called_once_with(
        ["git", "-C", tmp_path, "merge-base", "--is-ancestor", "a" * 40, "b" * 40],
        check=False,
        timeout=git.GIT_TIMEOUT,
        extra_env=None,
        cwd=None,
        allowed_returncodes=(0,),
    )


@pytest.mark.parametrize(("shallow", "expected"), [("false\n", False), ("true\n", None)])
def test_is_ancestor_no_in_a_shallow_clone_is_unknown(
    tmp_path: Path, run: mock.MagicMock, shallow: str, expected: bool | None
) -> None:
    run.side_effect = [result(returncode=1), result(stdout=shallow)]
    assert git.is_ancestor(tmp_path, "a", "b") is expected
    assert run.call_args_list[1].args[0] == ["git", "-C", tmp_path, "rev-parse", "--is-shallow-repository"]


def test_is_ancestor_without_a_repository(tmp_path: Path, run: mock.MagicMock) -> None:
    assert git.is_ancestor(tmp_path / "absent", "a", "b") is None
    run.assert_not_called()


def test_commit_exists(tmp_path: Path, run: mock.MagicMock) -> None:
    run.return_value = result(returncode=1)
    assert not git.commit_exists(tmp_path, "abc")
    assert run.call_args.args[0] == ["git", "-C", tmp_path, "cat-file", "-e", "abc^{commit}"]


def test_history_dir(tmp_path: Path) -> None:
    (tmp_path / ".git").mkdir()
    assert git.history_dir(FlakeRef.parse(f"git+file://{tmp_path}?ref=main")) == tmp_path
    assert git.history_dir(FlakeRef.parse(str(tmp_path))) == tmp_path
    assert git.history_dir(FlakeRef.parse(f"path:{tmp_path}")) is None
    assert git.history_dir(FlakeRef.parse(f"git+file://{tmp_path}/sub")) is None
    assert git.history_dir(FlakeRef.parse("git+https://git.example/fleet?ref=main")) is None


def test_reactivation_through_systemd_run(run: mock.MagicMock) -> None:
    """On a real host the reconciler re-activates outside its own hardened unit, the way
    nixos-rebuild-ng activates: a transient unit that passes the exit status through."""
    run.return_value = result(returncode=4)
    tools = Tools(systemd_run="systemd-run")
    r = rebuild.switch_to_configuration(P2, RebuildAction.TEST, tools=tools)
    run.assert_called_once_with(
        [
            "systemd-run",
            "-E",
            "LOCALE_ARCHIVE",
            "--collect",
            "--no-ask-password",
            "--pipe",
            "--quiet",
            "--service-type=exec",
            "--unit=nixcomply-switch-to-configuration",
            "--wait",
            P2 / "bin/switch-to-configuration",
            "test",
        ],
        check=True,
        timeout=rebuild.ACTIVATION_TIMEOUT,
        extra_env=None,
        cwd=None,
        allowed_returncodes=(0, 4),
    )
    assert r.units_failed
