"""Twins of the NixOS VM tests in checks/: the scenario's own test script, run here against
the configuration the scenario renders, with the real tools where this machine has them.

nixpkgs (and KVM) are not available here, so the NixOS system itself is a stand-in, kept as
small and as faithful as the checks allow:

* the script and the node are read from the scenario file with the real nix;
* the node's baseline settings come from the committed rendered module, evaluated by the
  real nix (nixcomply.baseline.evaluate), with the node's exceptions and parameters;
* ``TwinMachine`` answers the commands the script sends: ``sshd -T`` runs the real sshd on
  an sshd_config written the way nixpkgs' sshd.nix writes it, ``auditctl -l`` loads the
  rendered rules into the real kernel (as root) and reads them back, ``nft list ruleset``
  lists NixOS's firewall table with the real nft in a private network namespace,
  ``systemd-analyze cat-config`` reads a journald.conf written as the 26.05 journald.nix
  writes it; ``wait_for_unit`` accepts only units NixOS defines for the configuration
  (``UNITS`` below, read from nixpkgs' modules). A command the twin does not know fails, so a
  changed script needs a changed twin.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conftest import REPO
from nixcomply.baseline.evaluate import definitions
from nixcomply.baseline.nixattr import nix_value
from nixcomply.nixos.tools import Tools

CHECKDATA = REPO / "tests" / "data" / "checks"
MODULE = REPO / "modules" / "baselines" / "hipaa-v1.nix"  # the flake pins nixos-26.05
MANIFEST = ["environment", "etc", "nixcomply/manifest.json", "text"]


def nix_eval(expr: str, nix_env: dict[str, str], *, cwd: Path = REPO) -> Any:
    r = subprocess.run(
        ["nix-instantiate", "--eval", "--strict", "--json", "-E", expr],
        capture_output=True,
        text=True,
        env=nix_env,
        cwd=cwd,
        check=False,
    )
    if r.returncode != 0:
        raise AssertionError(f"nix-instantiate failed: {r.stderr}")
    return json.loads(r.stdout)


def scenario(path: Path, nix_env: dict[str, str]) -> dict[str, Any]:
    """The scenario's name and test script (a scenario file is a function of the test
    framework's arguments; it only reads `lib` lazily)."""
    return dict(
        nix_eval(f"let t = import {path} {{ lib = {{ }}; }}; in {{ inherit (t) name testScript; }}", nix_env)
    )


@dataclass
class Node:
    """The parts of a node's configuration the twin needs, as the node module sets them."""

    settings: dict[tuple[str, ...], Any]  # option path -> value, from the rendered baseline
    manifest: str
    own: dict[str, Any]  # what the node module itself sets (openssh, exceptions, ...)

    def get(self, *path: str, default: Any = None) -> Any:
        if path in self.settings:
            return self.settings[path]
        node: Any = self.own
        for name in path:
            if not isinstance(node, dict) or name not in node:
                return default
            node = node[name]
        return node


def render_node(own: dict[str, Any], nix_env: dict[str, str]) -> Node:
    nixcomply = own.get("nixcomply", {})
    result = definitions(
        MODULE,
        nixcomply.get("baseline", "hipaa-v1"),
        {"node": nixcomply.get("exceptions", {})},
        tools=Tools(extra_env=nix_env),
        parameters=nixcomply.get("parameters", {}),
    )
    settings: dict[tuple[str, ...], Any] = {}
    manifest = ""
    for d in result["node"]:
        path = tuple(d["path"])
        if list(path) == MANIFEST:
            manifest = d["value"]
        elif path in {("security", "audit", "rules"), ("boot", "blacklistedKernelModules")}:
            settings.setdefault(path, []).extend(d["value"])  # lists merge by concatenation
        else:
            settings[path] = d["value"]
    return Node(settings, manifest, own)


def openssh_settings(node: Node) -> dict[str, Any]:
    prefix = ("services", "openssh", "settings")
    return {p[3]: v for p, v in node.settings.items() if p[:3] == prefix and len(p) == 4}


# Units NixOS defines for a configuration, as nixpkgs' modules declare them (the scenario may
# only wait for these). With networking.nftables.enable, firewall-nftables.nix loads the
# firewall through nftables.service; firewall-iptables.nix defines firewall.service only for
# the iptables backend.
UNITS: dict[str, Callable[[Node], bool]] = {
    "multi-user.target": lambda n: True,
    "sshd.service": lambda n: n.get("services", "openssh", "enable", default=False) is True,
    "auditd.service": lambda n: n.get("security", "auditd", "enable", default=False) is True,
    "nftables.service": lambda n: n.get("networking", "nftables", "enable", default=False) is True,
    "firewall.service": lambda n: (
        n.get("networking", "firewall", "enable", default=True) is True
        and n.get("networking", "nftables", "enable", default=False) is not True
    ),
    "chronyd.service": lambda n: n.get("services", "chrony", "enable", default=False) is True,
    "systemd-journald.service": lambda n: True,
}


class TwinError(AssertionError):
    """The script asked for something the configuration does not provide, or that the twin
    cannot answer."""


@dataclass
class TwinMachine:
    node: Node
    workdir: Path
    log: list[str] = field(default_factory=list)

    # -- the test driver's API, as far as the scenarios use it --------------------------------

    def wait_for_unit(self, unit: str) -> None:
        self.log.append(f"wait_for_unit {unit}")
        known = UNITS.get(unit)
        if known is None:
            raise TwinError(f"the twin does not know whether NixOS defines {unit}")
        if not known(self.node):
            raise TwinError(f"{unit} is not a unit of this configuration: wait_for_unit would time out")

    def succeed(self, *commands: str) -> str:
        return "".join(self._run(c) for c in commands)

    def fail(self, command: str) -> str:
        raise TwinError(f"the twin does not emulate failing commands: {command}")

    # -- commands -----------------------------------------------------------------------------

    def _run(self, command: str) -> str:
        self.log.append(command)
        handlers: dict[str, Callable[[], str]] = {
            "sshd -T": self._sshd_t,
            "auditctl -l": self._auditctl_l,
            "auditctl -s": self._auditctl_s,
            "cat /proc/cmdline": self._cmdline,
            "nft list ruleset": self._nft,
            "test -d /var/log/journal": self._journal_dir,
            "systemd-analyze cat-config systemd/journald.conf": self._journald_conf,
            "cat /etc/nixcomply/manifest.json": lambda: self.node.manifest,
            "/run/current-system/bin/switch-to-configuration test": lambda: "",
        }
        handler = handlers.get(command)
        if handler is None:
            raise TwinError(f"the twin cannot emulate {command!r}: extend tests/vmtwin.py")
        return handler()

    def _sshd_t(self) -> str:
        """The real sshd -T on sshd_config as nixpkgs writes it (keyValue, yes/no, comma lists).
        The local OpenSSH may not know every KEX name the baseline lists: unknown ones are
        dropped from the twin's file only, since sshd refuses the whole file otherwise."""
        sshd = shutil.which("sshd") or "/usr/sbin/sshd"
        key = self.workdir / "ssh_host_ed25519_key"
        if not key.exists():
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        ssh = shutil.which("ssh") or "/usr/bin/ssh"  # sshd has no -Q; both use one algorithm table
        known_kex = set(
            subprocess.run([ssh, "-Q", "kex"], capture_output=True, text=True, check=False).stdout.split()
        )
        lines = [f"HostKey {key}"]
        for name, value in sorted(openssh_settings(self.node).items()):
            if value is not None:
                lines.append(f"{name} {self._sshd_value(name, value, known_kex)}")
        config = self.workdir / "sshd_config"
        config.write_text("\n".join(lines) + "\n")
        Path("/run/sshd").mkdir(exist_ok=True)
        r = subprocess.run([sshd, "-T", "-f", str(config)], capture_output=True, text=True, check=False)
        if r.returncode != 0:
            raise TwinError(f"sshd -T refused the rendered configuration: {r.stderr}")
        return r.stdout.replace(str(key), "/etc/ssh/ssh_host_ed25519_key")

    @staticmethod
    def _sshd_value(name: str, value: Any, known_kex: set[str]) -> str:
        if isinstance(value, list):
            if name == "KexAlgorithms" and known_kex:
                value = [v for v in value if v in known_kex]
            return ",".join(value)
        if isinstance(value, bool):
            return "yes" if value else "no"
        return str(value)

    def _rules(self) -> list[str]:
        return list(self.node.settings.get(("security", "audit", "rules"), []))

    def _auditctl_l(self) -> str:
        """Load the node's rules into this machine's kernel with the real auditctl (as root,
        when no rules are loaded) and read them back; then remove them again."""
        auditctl = shutil.which("auditctl") or "/usr/sbin/auditctl"
        loaded = subprocess.run([auditctl, "-l"], capture_output=True, text=True, check=True).stdout
        if loaded.strip() != "No rules":
            raise TwinError("this machine already has audit rules loaded; the twin loads and removes its own")
        rules = self.workdir / "audit.rules"
        rules.write_text("\n".join(self._rules()) + "\n")
        try:
            r = subprocess.run([auditctl, "-R", str(rules)], capture_output=True, text=True, check=False)
            if r.returncode != 0:
                raise TwinError(
                    f"auditctl -R refused the rendered rules (audit-rules-nixos would fail): {r.stderr}"
                )
            return subprocess.run([auditctl, "-l"], capture_output=True, text=True, check=True).stdout
        finally:
            subprocess.run([auditctl, "-D"], capture_output=True, check=True)

    def _auditctl_s(self) -> str:
        """What audit.nix's rules file leaves behind: -e 2 for "lock", -f from failureMode."""
        enable = self.node.get("security", "audit", "enable", default=False)
        failure = {"silent": 0, "printk": 1, "panic": 2}[
            self.node.get("security", "audit", "failureMode", default="printk")
        ]
        enabled = 2 if enable == "lock" else 1 if enable is True else 0
        backlog = self.node.get("security", "audit", "backlogLimit", default=1024)
        return f"enabled {enabled}\nfailure {failure}\npid 412\nrate_limit 0\nbacklog_limit {backlog}\nlost 0\nbacklog 0\n"

    def _cmdline(self) -> str:
        """audit.nix adds audit=1 and audit_backlog_limit=<backlogLimit> to boot.kernelParams."""
        enable = self.node.get("security", "audit", "enable", default=False)
        params = ["init=/nix/store/0000-nixos-system-machine/init", "console=ttyS0"]
        if enable in (True, "lock"):
            backlog = self.node.get("security", "audit", "backlogLimit", default=1024)
            params += ["audit=1", f"audit_backlog_limit={backlog}"]
        return " ".join(params) + "\n"

    def _nft(self) -> str:
        """NixOS's nixos-fw table (tests/data/checks/firewall/nixos-fw.nft, as
        firewall-nftables.nix renders it), listed by the real nft in a network namespace; the
        refused-connection log rule only when logRefusedConnections is on."""
        if self.node.get("networking", "nftables", "enable", default=False) is not True:
            raise TwinError("nft list ruleset: this configuration does not use nftables")
        ruleset = (CHECKDATA / "firewall" / "nixos-fw.nft").read_text()
        if self.node.get("networking", "firewall", "logRefusedConnections", default=False) is not True:
            ruleset = (
                "\n".join(line for line in ruleset.splitlines() if "refused connection" not in line) + "\n"
            )
        path = self.workdir / "ruleset.nft"
        path.write_text(ruleset)
        nft = shutil.which("nft") or "/usr/sbin/nft"
        script = f'{nft} -f "$1" && {nft} list ruleset'
        r = subprocess.run(
            ["unshare", "-n", "sh", "-c", script, "sh", str(path)],
            capture_output=True,
            text=True,
            check=False,
        )
        if r.returncode != 0:
            raise TwinError(f"nft refused NixOS's ruleset: {r.stderr}")
        return r.stdout

    def _journald(self) -> dict[str, str]:
        values: dict[str, str] = {}
        storage = self.node.get("services", "journald", "storage")
        if storage is not None:
            values["Storage"] = str(storage)
        for line in str(self.node.get("services", "journald", "extraConfig", default="")).splitlines():
            key, _, value = line.partition("=")
            if key:
                values[key] = value
        return values

    def _journal_dir(self) -> str:
        if self._journald().get("Storage") != "persistent":
            raise TwinError("/var/log/journal exists only with persistent journal storage")
        return ""

    def _journald_conf(self) -> str:
        """journald.conf as 26.05's journald.nix writes it ([Journal], Storage=, extraConfig),
        read back by the real systemd-analyze under a private root."""
        root = self.workdir / "root"
        conf = root / "etc" / "systemd" / "journald.conf"
        conf.parent.mkdir(parents=True, exist_ok=True)
        lines = ["[Journal]", *(f"{k}={v}" for k, v in self._journald().items())]
        conf.write_text("\n".join(lines) + "\n")
        r = subprocess.run(
            ["systemd-analyze", f"--root={root}", "cat-config", "systemd/journald.conf"],
            capture_output=True,
            text=True,
            check=False,
        )
        if r.returncode != 0:
            raise TwinError(f"systemd-analyze cat-config failed: {r.stderr}")
        return r.stdout


@contextmanager
def subtest(name: str) -> Iterator[None]:
    try:
        yield
    except AssertionError as e:
        raise AssertionError(f"subtest {name!r}: {e}") from e


def run_script(script: str, machine: TwinMachine) -> None:
    """The test script, as the NixOS test driver runs it: Python with `machine` and `subtest`."""
    exec(compile(script, "<testScript>", "exec"), {"machine": machine, "subtest": subtest})


def node_of_baseline_hipaa(path: Path, nix_env: dict[str, str]) -> dict[str, Any]:
    """What the node module of a self-contained scenario sets (its `imports` are nixcomply's
    module, which the rendered baseline stands for)."""
    expr = (
        f"let t = import {path} {{ lib = {{ }}; }}; n = t.nodes.machine {{ self.nixosModules.default = null; }};"
        ' in builtins.removeAttrs n [ "imports" ]'
    )
    own: dict[str, Any] = nix_eval(expr, nix_env)
    return own


def twin_machine(
    own: dict[str, Any], nix_env: dict[str, str]
) -> tuple[TwinMachine, tempfile.TemporaryDirectory[str]]:
    tmp = tempfile.TemporaryDirectory(prefix="vmtwin-")
    return TwinMachine(render_node(own, nix_env), Path(tmp.name)), tmp


def fleet_node(nix_env: dict[str, str], **args: Any) -> dict[str, Any]:
    """checks/common/fleet-node.nix for a revision, with stand-in pkgs (store paths by name)."""
    expr = (
        f"(import {REPO}/checks/common/fleet-node.nix {nix_value(args)}) {{ lib = {{ }};"
        ' pkgs = { coreutils = "/nix/store/0000-coreutils"; git = "/nix/store/0000-git"; }; }'
    )
    node: dict[str, Any] = nix_eval(expr, nix_env)
    return node
