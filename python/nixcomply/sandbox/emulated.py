"""The sandbox host: an emulated NixOS host built with the real Nix, for the demo and the tests.

What is real: the Nix store and ``nix build`` (each generation is a real store path built
from a real flake), ``nix flake metadata`` (revisions, narHash, dirty trees), git (commits,
branches, non-descendant targets), and the system profile's generations (``nix-env -p
<root>/nix/var/nix/profiles/system --set/--list-generations``). nixcomply observes the
sandbox through exactly the code it uses on a real host, under a different
:class:`~nixcomply.nixos.root.Root`.

What is emulated, because a real NixOS system cannot be evaluated (no nixpkgs) or activated
(it is not this machine's operating system):

* the system toplevel: a ``builtins.derivation`` built with ``/bin/sh`` that has what
  nixcomply reads in a NixOS toplevel and nothing else: ``nixos-version``,
  ``sw/bin/nixos-version`` (``--json``, with ``configurationRevision`` taken from
  ``self.rev``), ``kernel``, ``initrd`` and ``kernel-modules`` (links to small separate store
  paths, so a kernel version change changes them), ``etc/nixcomply/manifest.json`` and
  ``etc/systemd/user/*.service``;
* ``bin/switch-to-configuration``: flips ``<root>/run/current-system`` atomically (``test``,
  ``switch``) and, when the sandbox is attached to a private systemd user manager, runs
  ``systemctl --user daemon-reload``, stops removed units, restarts new or changed ones and
  exits 4 when a unit failed, as NixOS's does. It refuses to run unless
  ``NIXCOMPLY_SANDBOX_ROOT`` names a sandbox root, so it can never touch a real host;
* ``nixos-rebuild`` (``<dir>/bin/nixos-rebuild``, first on the sandbox's PATH): ``test``,
  ``switch``, ``boot``, ``dry-activate`` with ``--store-path`` and ``list-generations
  [--json]`` in nixos-rebuild-ng's shape, implemented with the real ``nix-env`` and the
  system's ``switch-to-configuration``;
* booting: :meth:`Sandbox.install` and :meth:`Sandbox.reboot` set ``<root>/run/booted-system``.

Layout of a sandbox directory::

    sandbox.json              host name and Nix system of this sandbox
    bin/nixos-rebuild         the emulated nixos-rebuild
    flake/                    a git repository: the host's flake
      flake.nix builder.sh nixos-version.sh switch-to-configuration.sh sandbox.json README.md
      generation.json         this revision's label, versions, kernel, user units
      manifest.json           this revision's /etc/nixcomply/manifest.json (when given)
    root/                     the host's "/"
      nixcomply-sandbox-root  marker the emulated programs insist on
      nix/var/nix/profiles/   system, system-N-link (real nix-env profiles)
      run/current-system      the activated system
      run/booted-system       the "booted" system
      activations.log         one line per activation: action, system, the boot default then
"""

from __future__ import annotations

import json
import logging
import os
import platform
import re
import shutil
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Final

from nixcomply.core import process
from nixcomply.errors import UsageError
from nixcomply.nixos.build import build_toplevel
from nixcomply.nixos.flake import FlakeRef
from nixcomply.nixos.generations import profile_target
from nixcomply.nixos.rebuild import ActivationResult, RebuildAction, nixos_rebuild, switch_to_configuration
from nixcomply.nixos.root import Root
from nixcomply.nixos.tools import Tools

logger = logging.getLogger(__name__)

SANDBOX_SCHEMA: Final = 1
ROOT_MARKER: Final = "nixcomply-sandbox-root"
ENV_ROOT: Final = "NIXCOMPLY_SANDBOX_ROOT"
ENV_SYSTEMD: Final = "NIXCOMPLY_SANDBOX_SYSTEMD"

# Nix without a daemon, sandbox or binary cache; appended to any NIX_CONFIG the caller has.
NIX_CONFIG: Final = "\n".join(
    [
        "experimental-features = nix-command flakes",
        "sandbox = false",
        "substituters =",
        "build-users-group =",
    ]
)

DEFAULT_KERNEL: Final = "6.12.1"
DEFAULT_NIXOS_VERSION: Final = "26.05.20260501.0123456"
DEFAULT_NIXPKGS_REVISION: Final = "0123456789abcdef0123456789abcdef01234567"

_VERSION_RE: Final = re.compile(r"^[0-9A-Za-z][0-9A-Za-z._+-]*$")
_UNIT_RE: Final = re.compile(r"^[0-9A-Za-z][0-9A-Za-z@._:-]*\.(service|socket|timer|target|path)$")
_HOST_RE: Final = re.compile(r"^[0-9A-Za-z][0-9A-Za-z_-]*$")
_BRANCH_RE: Final = re.compile(r"^[0-9A-Za-z][0-9A-Za-z._/-]*$")
_BUILDER_TOOLS: Final = ("mkdir", "ln", "chmod", "cat")
_GIT_ENV: Final = {
    "GIT_AUTHOR_NAME": "nixcomply sandbox",
    "GIT_AUTHOR_EMAIL": "sandbox@nixcomply.invalid",
    "GIT_COMMITTER_NAME": "nixcomply sandbox",
    "GIT_COMMITTER_EMAIL": "sandbox@nixcomply.invalid",
}

# What a new sandbox is made of: the flake and the emulated programs, kept as data files
# (data/) so that the .nix parse test and shellcheck read them like any other source.
_DATA: Final = resources.files("nixcomply.sandbox") / "data"
FLAKE_FILES: Final = (
    "flake.nix",
    "builder.sh",
    "nixos-version.sh",
    "switch-to-configuration.sh",
    "README.md",
)
NIXOS_REBUILD: Final = "nixos-rebuild.sh"


def data_file(name: str) -> str:
    """The text of one of the sandbox's data files (``data/NAME``)."""
    return (_DATA / name).read_text(encoding="utf-8")


def nix_system() -> str:
    """This machine's Nix system double (``builtins.currentSystem`` is unavailable in flakes)."""
    machine = platform.machine()
    arch = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}.get(machine)
    if arch is None:
        raise UsageError(f"the sandbox host supports x86_64 and aarch64 Linux, not {machine}")
    return f"{arch}-linux"


def _builder_path() -> str:
    dirs: list[str] = []
    for tool in _BUILDER_TOOLS:
        found = shutil.which(tool)
        if found is None:
            raise UsageError(f"the sandbox host's builder needs {tool!r} on PATH")
        directory = str(Path(found).parent)
        if directory not in dirs:
            dirs.append(directory)
    return ":".join(dirs)


def _atomic_symlink(link: Path, target: Path) -> None:
    tmp = link.with_name(f".{link.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(target)
    tmp.replace(link)


@dataclass(frozen=True)
class Sandbox:
    """A sandbox host in ``dir`` (see the module docstring for what is real and what is not).

    ``user_runtime_dir``: the ``XDG_RUNTIME_DIR`` of a private systemd user manager whose
    ``SYSTEMD_UNIT_PATH`` starts with :attr:`user_unit_path`; when set, activation reloads it
    and restarts the generation's units (see :meth:`with_user_manager`).
    """

    dir: Path
    host: str
    system: str
    user_runtime_dir: Path | None = None

    # -- creating and opening ---------------------------------------------------------------

    @classmethod
    def create(cls, dir: Path, host: str = "sandbox") -> Sandbox:
        """Make a new sandbox in ``dir`` (absent or empty): the flake repository with a first
        commit holding no generation yet, the emulated nixos-rebuild, an empty host root."""
        if not _HOST_RE.match(host):
            raise UsageError(f"invalid sandbox host name {host!r} (letters, digits, - and _)")
        dir = dir.absolute()
        if dir.exists() and any(dir.iterdir()):
            raise UsageError(f"{dir} is not empty; a sandbox is created in a new or empty directory")
        sandbox = cls(dir=dir, host=host, system=nix_system())
        dir.mkdir(parents=True, exist_ok=True)
        (dir / "sandbox.json").write_text(
            json.dumps({"schema": SANDBOX_SCHEMA, "host": host, "system": sandbox.system}, indent=2) + "\n"
        )
        sandbox.bin_dir.mkdir()
        script = sandbox.bin_dir / "nixos-rebuild"
        script.write_text(data_file(NIXOS_REBUILD))
        script.chmod(0o755)
        sandbox._make_root()
        flake = sandbox.flake_dir
        flake.mkdir()
        files = {
            **{name: data_file(name) for name in FLAKE_FILES},
            "sandbox.json": json.dumps(
                {"host": host, "system": sandbox.system, "path": _builder_path()}, indent=2
            )
            + "\n",
        }
        for name, text in files.items():
            (flake / name).write_text(text)
        sandbox._git("init", "-q", "--initial-branch=main")
        # a commit left behind by `parent=` (main moved elsewhere) stays buildable by revision
        sandbox._git("config", "gc.auto", "0")
        sandbox._git("add", "-A")
        sandbox._git("commit", "-q", "-m", "sandbox host: flake skeleton, no generation yet")
        logger.info("created sandbox host %s in %s", host, dir)
        return sandbox

    @classmethod
    def open(cls, dir: Path) -> Sandbox:
        """Re-attach to a sandbox made by :meth:`create` (``nixcomply demo --dir DIR``)."""
        dir = dir.absolute()
        try:
            data = json.loads((dir / "sandbox.json").read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise UsageError(f"{dir} is not a nixcomply sandbox: {e}") from None
        if data.get("schema") != SANDBOX_SCHEMA:
            raise UsageError(
                f"{dir}/sandbox.json has schema {data.get('schema')!r}, expected {SANDBOX_SCHEMA}"
            )
        return cls(dir=dir, host=str(data["host"]), system=str(data["system"]))

    def with_user_manager(self, runtime_dir: Path | None) -> Sandbox:
        """The same sandbox, with activation reaching the systemd user manager whose
        ``XDG_RUNTIME_DIR`` is ``runtime_dir`` (None: no systemd)."""
        return replace(self, user_runtime_dir=runtime_dir)

    # -- where things are -------------------------------------------------------------------

    @property
    def root(self) -> Root:
        return Root(self.dir / "root")

    @property
    def flake_dir(self) -> Path:
        return self.dir / "flake"

    @property
    def bin_dir(self) -> Path:
        return self.dir / "bin"

    @property
    def flake_ref(self) -> FlakeRef:
        """``git+file://<dir>/flake``: follows the checked-out branch, dirty changes included."""
        return FlakeRef(f"git+file://{self.flake_dir}")

    def flake_ref_at(self, rev: str) -> FlakeRef:
        """The flake at one revision (``?rev=``)."""
        return FlakeRef(f"git+file://{self.flake_dir}?rev={rev}")

    @property
    def user_unit_path(self) -> Path:
        """The directory a private user manager's ``SYSTEMD_UNIT_PATH`` should name:
        ``<root>/run/current-system/etc/systemd/user``. After activation flips the link, a
        daemon-reload shows the new generation's units."""
        return self.root.current_system / "etc/systemd/user"

    @property
    def extra_env(self) -> dict[str, str]:
        """What the sandbox adds to the environment: its bin/ first on PATH, NIX_CONFIG,
        NIXCOMPLY_SANDBOX_ROOT, and the user manager's XDG_RUNTIME_DIR when attached."""
        inherited_config = os.environ.get("NIX_CONFIG", "")
        env = {
            "PATH": f"{self.bin_dir}{os.pathsep}{os.environ.get('PATH', os.defpath)}",
            "NIX_CONFIG": f"{inherited_config}\n{NIX_CONFIG}" if inherited_config else NIX_CONFIG,
            # the local store directly: Debian's nix-bin sets NIX_REMOTE=daemon for user
            # services (environment.d), and the sandbox needs no daemon
            "NIX_REMOTE": "local",
            ENV_ROOT: str(self.root.path),
        }
        if self.user_runtime_dir is not None:
            env[ENV_SYSTEMD] = "user"
            env["XDG_RUNTIME_DIR"] = str(self.user_runtime_dir)
        return env

    @property
    def env(self) -> dict[str, str]:
        """The whole environment for running commands against the sandbox."""
        return {**os.environ, **self.extra_env}

    @property
    def tools(self) -> Tools:
        """Pass this to :mod:`nixcomply.nixos` functions to act on the sandbox."""
        return Tools(nixos_rebuild=str(self.bin_dir / "nixos-rebuild"), extra_env=self.extra_env)

    # -- the flake ---------------------------------------------------------------------------

    def commit_generation(
        self,
        *,
        label: str,
        manifest_json: str | None = None,
        units: Mapping[str, str] | None = None,
        kernel: str = DEFAULT_KERNEL,
        nixos_version: str = DEFAULT_NIXOS_VERSION,
        nixpkgs_revision: str | None = DEFAULT_NIXPKGS_REVISION,
        parent: str | None = None,
        branch: str = "main",
    ) -> str:
        """Commit a new revision of the host's configuration on ``branch``; its revision.

        ``manifest_json`` becomes ``etc/nixcomply/manifest.json`` of the built system (any JSON
        text; None: the system carries no manifest). ``units`` maps user unit file names to
        their text. ``parent``: first point ``branch`` at this revision (like a force-push),
        so the new commit is not a descendant of commits made after ``parent``. Everything in
        the flake directory is committed, a :meth:`make_dirty` change included.
        """
        units = dict(units or {})
        if not label or "\n" in label:
            raise ValueError("a generation label is one non-empty line")
        for value, what in ((kernel, "kernel"), (nixos_version, "nixos_version")):
            if not _VERSION_RE.match(value):
                raise ValueError(f"invalid {what} {value!r}")
        if nixpkgs_revision is not None and not _VERSION_RE.match(nixpkgs_revision):
            raise ValueError(f"invalid nixpkgs_revision {nixpkgs_revision!r}")
        for name in units:
            if not _UNIT_RE.match(name):
                raise ValueError(f"invalid unit file name {name!r}")
        if not _BRANCH_RE.match(branch):
            raise ValueError(f"invalid branch name {branch!r}")
        if manifest_json is not None:
            json.loads(manifest_json)  # a JSONDecodeError (a ValueError) names the position

        if parent is not None:
            self._git("checkout", "-q", "-B", branch, parent)
        elif self._git("rev-parse", "--abbrev-ref", "HEAD").stdout.strip() != branch:
            exists = self._git("rev-parse", "--verify", "-q", f"refs/heads/{branch}", check=False).ok
            self._git("checkout", "-q", *([] if exists else ["-b"]), branch)

        generation = {
            "label": label,
            "kernel": kernel,
            "nixosVersion": nixos_version,
            "nixpkgsRevision": nixpkgs_revision,
            "units": units,
        }
        (self.flake_dir / "generation.json").write_text(
            json.dumps(generation, indent=2, sort_keys=True) + "\n"
        )
        manifest = self.flake_dir / "manifest.json"
        if manifest_json is None:
            manifest.unlink(missing_ok=True)
        else:
            manifest.write_text(manifest_json)
        self._git("add", "-A")
        self._git("commit", "-q", "--allow-empty", "-m", f"generation: {label}")
        return self.head()

    def head(self) -> str:
        """The revision checked out in the flake."""
        return self._git("rev-parse", "HEAD").stdout.strip()

    def make_dirty(self, note: str = "an uncommitted change") -> None:
        """Change a tracked file without committing: Nix then reports no revision."""
        with (self.flake_dir / "README.md").open("a") as f:
            f.write(f"\n{note}\n")

    def discard_changes(self) -> None:
        """Undo :meth:`make_dirty` and anything else uncommitted."""
        self._git("reset", "-q", "--hard")

    # -- the host ----------------------------------------------------------------------------

    def build(self, rev: str | None = None) -> Path:
        """Build the host's toplevel at ``rev`` (default: the working tree) with the real nix."""
        ref = self.flake_ref if rev is None else self.flake_ref_at(rev)
        return build_toplevel(ref, self.host, tools=self.tools)

    def install(self, rev: str) -> ActivationResult:
        """What installing NixOS and booting it does: build ``rev``, make it the profile's
        generation (``nixos-rebuild switch --store-path``, emulated), activate it and record it
        as the booted system."""
        system = self.build(rev)
        result = nixos_rebuild(RebuildAction.SWITCH, system, tools=self.tools)
        _atomic_symlink(self.root.booted_system, system)
        return result

    def reboot(self) -> ActivationResult:
        """Emulate a reboot into the boot default: booted-system and current-system become the
        profile's generation (activated with ``switch-to-configuration test``)."""
        target = profile_target(self.root)
        if target is None:
            raise UsageError("the sandbox host has no system profile yet; install a generation first")
        _atomic_symlink(self.root.booted_system, target)
        return switch_to_configuration(target, RebuildAction.TEST, tools=self.tools)

    def reset_host(self) -> None:
        """Forget every generation and the running system (the flake and the store stay)."""
        shutil.rmtree(self.root.path)
        self._make_root()

    def describe(self) -> str:
        """A plain statement of what this sandbox is, for the demo to print."""
        systemd = (
            f"a private systemd user manager ({self.user_runtime_dir})"
            if self.user_runtime_dir is not None
            else "no systemd (units are declared but not started)"
        )
        return "\n".join(
            [
                f"Sandbox host {self.host!r} in {self.dir}",
                "  real:      the Nix store and nix build, nix flake metadata, git history,",
                f"             the system profile's generations (nix-env) under {self.root.path}",
                "  emulated:  each system is a small derivation shaped like a NixOS toplevel",
                "             (nixos-version, kernel/initrd links, manifest, user units), not a",
                "             bootable OS; switch-to-configuration and nixos-rebuild are shell",
                "             emulations that only move links under the sandbox root, and booting",
                "             is a link change; activation reaches",
                f"             {systemd}",
                f"  flake:     {self.flake_ref}",
            ]
        )

    # -- internals ---------------------------------------------------------------------------

    def _make_root(self) -> None:
        root = self.root
        root.profiles_dir.mkdir(parents=True)
        root.current_system.parent.mkdir(parents=True, exist_ok=True)
        # a machine identity of its own, as /etc/machine-id gives a real host (evidence names it)
        (root.path / "etc").mkdir(exist_ok=True)
        (root.path / "etc/machine-id").write_text(uuid.uuid4().hex + "\n")
        (root.path / ROOT_MARKER).write_text(
            "The root directory of a nixcomply sandbox host; the emulated nixos-rebuild and\n"
            "switch-to-configuration act only on a directory holding this file.\n"
        )

    def _git(self, *args: str, check: bool = True) -> process.Result:
        return process.run(
            ["git", "-c", "commit.gpgsign=false", "-C", self.flake_dir, *args],
            check=check,
            extra_env=_GIT_ENV,
            timeout=60,
        )
