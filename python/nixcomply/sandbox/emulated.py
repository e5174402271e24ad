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

_FLAKE_NIX: Final = r"""# The nixcomply sandbox host's flake (written by nixcomply.sandbox.emulated; see README.md).
# The toplevel is a plain derivation built with /bin/sh, shaped like a NixOS system toplevel
# where nixcomply looks; there is no nixpkgs and nothing here is bootable.
{
  description = "nixcomply sandbox host";

  outputs = { self }:
    let
      sandbox = builtins.fromJSON (builtins.readFile ./sandbox.json);
      gen = builtins.fromJSON (builtins.readFile ./generation.json);
      # what a real client flake passes as system.configurationRevision
      revision = self.rev or self.dirtyRev or null;

      mk = name: script: builtins.derivation {
        inherit name;
        inherit (sandbox) system;
        PATH = sandbox.path;
        builder = "/bin/sh";
        args = [ "-e" "-c" script ];
      };

      kernel = mk "linux-${gen.kernel}" "mkdir $out; echo 'sandbox kernel ${gen.kernel}' > $out/bzImage";
      initrd = mk "initrd-linux-${gen.kernel}" "mkdir $out; echo 'sandbox initrd ${gen.kernel}' > $out/initrd";
      kernelModules = mk "linux-${gen.kernel}-modules" "mkdir -p $out/lib/modules/${gen.kernel}";

      # one store directory per unit, holding a file of the unit's own name (as NixOS does,
      # so systemd never sees a link whose target has another name)
      unitNames = builtins.attrNames gen.units;
      unit = unitName: builtins.derivation {
        name = "unit-" + builtins.replaceStrings [ "@" ":" ] [ "-" "-" ] unitName;
        inherit (sandbox) system;
        inherit unitName;
        PATH = sandbox.path;
        text = gen.units.${unitName};
        builder = "/bin/sh";
        args = [ "-e" "-c" "mkdir $out; printf '%s' \"$text\" > \"$out/$unitName\"" ];
      };

      versionJson = builtins.toJSON (
        { nixosVersion = gen.nixosVersion; }
        // (if gen.nixpkgsRevision == null then { } else { nixpkgsRevision = gen.nixpkgsRevision; })
        // (if revision == null then { } else { configurationRevision = revision; })
      );

      toplevel = builtins.derivation {
        name = "nixos-system-${sandbox.host}-${gen.nixosVersion}";
        inherit (sandbox) system;
        PATH = sandbox.path;
        builder = "/bin/sh";
        args = [ "-e" ./builder.sh ];
        inherit kernel initrd kernelModules versionJson unitNames;
        unitDirs = map unit unitNames;
        label = gen.label;
        nixosVersion = gen.nixosVersion;
        nixpkgsRevision = if gen.nixpkgsRevision == null then "" else gen.nixpkgsRevision;
        configurationRevision = if revision == null then "" else revision;
        manifest = if builtins.pathExists ./manifest.json then ./manifest.json else "";
        nixosVersionScript = ./nixos-version.sh;
        switchScript = ./switch-to-configuration.sh;
      };
    in
    {
      nixosConfigurations.${sandbox.host}.config.system.build.toplevel = toplevel;
    };
}
"""

_BUILDER_SH: Final = r"""# Builds one system toplevel of the nixcomply sandbox host (nix runs `/bin/sh -e builder.sh`;
# PATH comes from sandbox.json). Mirrors a NixOS toplevel where nixcomply looks.
mkdir -p "$out/bin" "$out/sw/bin" "$out/etc/nixcomply" "$out/etc/systemd/user"
printf '%s\n' "$nixosVersion" > "$out/nixos-version"
printf '%s' "$system" > "$out/system"
ln -s "$kernel/bzImage" "$out/kernel"
ln -s "$initrd/initrd" "$out/initrd"
ln -s "$kernelModules" "$out/kernel-modules"
if [ -n "$manifest" ]; then ln -s "$manifest" "$out/etc/nixcomply/manifest.json"; fi
set -- $unitDirs
for name in $unitNames; do
  ln -s "$1/$name" "$out/etc/systemd/user/$name"
  shift
done
printf 'nixcomply sandbox system "%s": an emulated NixOS toplevel, not a bootable system\n' "$label" \
  > "$out/nixcomply-sandbox"
{
  echo '#!/bin/sh'
  printf "version='%s'\nnixpkgs_revision='%s'\nconfiguration_revision='%s'\njson='%s'\n" \
    "$nixosVersion" "$nixpkgsRevision" "$configurationRevision" "$versionJson"
  cat "$nixosVersionScript"
} > "$out/sw/bin/nixos-version"
{
  echo '#!/bin/sh'
  printf "system='%s'\n" "$out"
  cat "$switchScript"
} > "$out/bin/switch-to-configuration"
chmod 0555 "$out/sw/bin/nixos-version" "$out/bin/switch-to-configuration"
"""

_NIXOS_VERSION_SH: Final = r"""# nixcomply sandbox: emulated nixos-version; the values above were fixed when the system was built.
case "${1:-}" in
  --json) printf '%s\n' "$json" ;;
  --hash|--revision)
    if [ -z "$nixpkgs_revision" ]; then echo "$0: Nixpkgs commit hash is unknown" >&2; exit 1; fi
    printf '%s\n' "$nixpkgs_revision" ;;
  --configuration-revision)
    if [ -z "$configuration_revision" ]; then echo "$0: configuration revision is unknown" >&2; exit 1; fi
    printf '%s\n' "$configuration_revision" ;;
  "") printf '%s (nixcomply sandbox)\n' "$version" ;;
  *) echo "usage: $0 [--json | --hash | --revision | --configuration-revision]" >&2; exit 1 ;;
esac
"""

_SWITCH_SH: Final = r"""# nixcomply sandbox: EMULATED switch-to-configuration, not NixOS's. It moves
# $NIXCOMPLY_SANDBOX_ROOT/run/current-system and, when the sandbox is attached to a private
# systemd user manager (NIXCOMPLY_SANDBOX_SYSTEMD=user), reloads it, stops removed units,
# restarts new or changed ones and exits 4 when a unit failed, like the real one.
set -eu
action="${1:-}"
case "$action" in
  switch|boot|test|dry-activate) ;;
  *) echo "Usage: $0 [switch|boot|test|dry-activate]" >&2; exit 1 ;;
esac
root="${NIXCOMPLY_SANDBOX_ROOT:-}"
if [ -z "$root" ] || [ "$root" = / ] || [ ! -f "$root/nixcomply-sandbox-root" ]; then
  echo "$0: refusing to run: this is the nixcomply sandbox's emulated switch-to-configuration" \
    "and NIXCOMPLY_SANDBOX_ROOT does not name a sandbox root" >&2
  exit 1
fi
current="$root/run/current-system"
old=""
if [ -L "$current" ]; then old=$(readlink "$current"); fi
units=etc/systemd/user

list_units() {
  if [ -z "$1" ] || [ ! -d "$1/$units" ]; then return 0; fi
  for f in "$1/$units"/*; do
    if [ -L "$f" ] || [ -e "$f" ]; then printf '%s\n' "${f##*/}"; fi
  done
}

changed=""
for u in $(list_units "$system"); do
  before=""
  if [ -n "$old" ]; then before=$(readlink "$old/$units/$u" 2>/dev/null || true); fi
  if [ "$before" != "$(readlink "$system/$units/$u")" ]; then changed="$changed $u"; fi
done
removed=""
for u in $(list_units "$old"); do
  if [ ! -L "$system/$units/$u" ] && [ ! -e "$system/$units/$u" ]; then removed="$removed $u"; fi
done

case "$action" in
  dry-activate)
    echo "would activate the configuration $system"
    if [ -n "$removed" ]; then echo "would stop the following units:$removed"; fi
    if [ -n "$changed" ]; then echo "would restart the following units:$changed"; fi
    exit 0 ;;
  boot)
    echo "sandbox: no boot loader; the system profile names the next boot ($system)"
    exit 0 ;;
esac

systemd=""
if [ "${NIXCOMPLY_SANDBOX_SYSTEMD:-}" = user ]; then systemd=1; fi

if [ -n "$systemd" ] && [ -n "$removed" ]; then
  echo "stopping the following units:$removed" >&2
  systemctl --user stop $removed || true
fi
echo "activating the configuration $system" >&2
mkdir -p "$root/run"
ln -s "$system" "$root/run/.current-system.$$"
mv -T "$root/run/.current-system.$$" "$current"

status=0
if [ -n "$systemd" ]; then
  systemctl --user daemon-reload
  for u in $changed; do
    case "$u" in
      *.service)
        echo "restarting $u" >&2
        systemctl --user restart "$u" || true ;;
    esac
  done
  failed=$(systemctl --user list-units --state=failed --plain --no-legend | while read -r unit rest; do printf ' %s' "$unit"; done)
  if [ -n "$failed" ]; then
    echo "warning: the following units failed:$failed" >&2
    status=4
  fi
fi
if [ "$action" = switch ]; then echo "sandbox: no boot loader to update" >&2; fi
exit $status
"""

_NIXOS_REBUILD_SH: Final = r"""#!/bin/sh
# nixcomply sandbox: EMULATED nixos-rebuild (written by nixcomply.sandbox.emulated), first on the
# sandbox's PATH. Implements only what nixcomply runs, with the real commands:
#   test|dry-activate --store-path P  ->  P/bin/switch-to-configuration ACTION
#   switch|boot --store-path P        ->  nix-env -p $ROOT/nix/var/nix/profiles/system --set P, then the same
#   list-generations [--json]         ->  nix-env --list-generations, in nixos-rebuild-ng's shape
set -eu
me="nixos-rebuild (nixcomply sandbox)"
die() { echo "$me: $*" >&2; exit 1; }
root="${NIXCOMPLY_SANDBOX_ROOT:-}"
if [ -z "$root" ] || [ "$root" = / ] || [ ! -f "$root/nixcomply-sandbox-root" ]; then
  die "refusing to run: NIXCOMPLY_SANDBOX_ROOT does not name a sandbox root"
fi
profile="$root/nix/var/nix/profiles/system"
action=""; store_path=""; json=""
while [ $# -gt 0 ]; do
  case "$1" in
    switch|boot|test|dry-activate|list-generations)
      if [ -n "$action" ]; then die "more than one action"; fi
      action=$1 ;;
    --store-path)
      if [ $# -lt 2 ]; then die "--store-path needs a path"; fi
      store_path=$2; shift ;;
    --store-path=*) store_path=${1#--store-path=} ;;
    --no-reexec) ;;  # there is nothing to re-execute into here
    --json) json=1 ;;
    *) die "unsupported argument '$1' (emulated: test|switch|boot|dry-activate --store-path PATH, list-generations [--json])" ;;
  esac
  shift
done

json_string() {
  printf '"%s"' "$(printf '%s' "$1" | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g')"
}

case "$action" in
  test|switch|boot|dry-activate)
    if [ -z "$store_path" ]; then die "only --store-path is emulated: the sandbox does not evaluate configurations"; fi
    if [ ! -e "$store_path/nixos-version" ] || [ ! -x "$store_path/bin/switch-to-configuration" ]; then
      die "$store_path is not a NixOS system closure (no nixos-version or bin/switch-to-configuration)"
    fi
    case "$action" in
      switch|boot)
        mkdir -p "${profile%/*}"
        nix-env -p "$profile" --set "$store_path" ;;
    esac
    status=0
    "$store_path/bin/switch-to-configuration" "$action" || status=$?
    if [ "$status" -ne 0 ]; then
      echo "$me: switch-to-configuration $action exited with status $status" >&2
      exit "$status"
    fi
    echo "Done. The new configuration is" >&2
    echo "$store_path" ;;
  list-generations)
    if [ ! -e "$profile" ]; then die "no profile 'system' found"; fi
    if [ -n "$json" ]; then echo "["; else
      printf '%-11s %-20s %-24s %-10s %-41s %s\n' Generation Build-date "NixOS version" Kernel \
        "Configuration Revision" Current
    fi
    nix-env -p "$profile" --list-generations | sort -k1,1nr | {
      first=1
      while read -r number day time flag; do
        link="$profile-$number-link"
        version=$(cat "$link/nixos-version" 2>/dev/null || echo Unknown)
        kernel=$(ls "$link/kernel-modules/lib/modules" 2>/dev/null | head -n 1 || true)
        if [ -z "$kernel" ]; then kernel=Unknown; fi
        revision=$("$link/sw/bin/nixos-version" --configuration-revision 2>/dev/null || echo Unknown)
        current=false
        if [ "${flag:-}" = "(current)" ]; then current=true; fi
        specs=""
        for s in "$link"/specialisation/*; do
          if [ -d "$s" ]; then specs="$specs${specs:+, }$(json_string "${s##*/}")"; fi
        done
        if [ -n "$json" ]; then
          if [ -z "$first" ]; then echo "  },"; fi
          first=""
          printf '  {\n    "generation": %s,\n    "date": %s,\n    "nixosVersion": %s,\n' \
            "$number" "$(json_string "$day $time")" "$(json_string "$version")"
          printf '    "kernelVersion": %s,\n    "configurationRevision": %s,\n' \
            "$(json_string "$kernel")" "$(json_string "$revision")"
          printf '    "specialisations": [%s],\n    "current": %s\n' "$specs" "$current"
        else
          printf '%-11s %-20s %-24s %-10s %-41s %s\n' "$number" "$day $time" "$version" "$kernel" \
            "$revision" "$([ "$current" = true ] && echo '*' || true)"
        fi
      done
      if [ -n "$json" ] && [ -z "$first" ]; then echo "  }"; fi
    }
    if [ -n "$json" ]; then echo "]"; fi ;;
  "") die "no action given" ;;
esac
"""

_README: Final = """# nixcomply sandbox host

An emulated NixOS host made by `nixcomply.sandbox.emulated` for the demo and the tests. Each commit of
this repository is one revision of the host's configuration; `generation.json` and
`manifest.json` say what that revision's system contains. Built with the real Nix; the
system's `switch-to-configuration` and the sandbox's `nixos-rebuild` are emulations that only
act on the sandbox's own root directory.
"""


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
        script.write_text(_NIXOS_REBUILD_SH)
        script.chmod(0o755)
        sandbox._make_root()
        flake = sandbox.flake_dir
        flake.mkdir()
        files = {
            "flake.nix": _FLAKE_NIX,
            "builder.sh": _BUILDER_SH,
            "nixos-version.sh": _NIXOS_VERSION_SH,
            "switch-to-configuration.sh": _SWITCH_SH,
            "README.md": _README,
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
                "             (nixos-version, kernel/initrd links, manifest, user units), not a bootable OS;",
                "             switch-to-configuration and nixos-rebuild are shell emulations that only",
                "             move links under the sandbox root;",
                f"             activation reaches {systemd}; booting is a link change",
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
