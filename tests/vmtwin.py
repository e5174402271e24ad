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

import ast
import contextlib
import io
import json
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conftest import REPO
from nixcomply.baseline.evaluate import definitions
from nixcomply.baseline.nixattr import nix_value
from nixcomply.cli import build_parser
from nixcomply.nixos.tools import Tools
from nixcomply.server.cli import build_parser as server_parser

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


# -- the nixcomply commands of a scenario, against the real CLI ---------------------------------


def call_args(script: str, *, helpers: Mapping[str, str] | None = None) -> list[tuple[str, str, list[str]]]:
    """(receiver, method, commands) of every ``<name>.<method>(...)`` call of a script, in the
    order they appear, with its string arguments (f-string placeholders left as ``{}``); a
    call of a helper function named in ``helpers`` counts as ``succeed`` of its prefix plus
    the argument (fleet-upload's ``operator("site add north")`` runs a server verb), and the
    helper's own body is left out."""
    found: list[tuple[int, int, str, str, list[str]]] = []
    bodies = {
        helpers[n.name] + "{}"
        for n in ast.walk(ast.parse(script))
        if isinstance(n, ast.FunctionDef) and helpers and n.name in helpers
    }
    for node in ast.walk(ast.parse(script)):
        if not isinstance(node, ast.Call):
            continue
        if isinstance(node.func, ast.Attribute) and isinstance(node.func.value, ast.Name):
            receiver, method, prefix = node.func.value.id, node.func.attr, ""
        elif isinstance(node.func, ast.Name) and helpers and node.func.id in helpers:
            receiver, method, prefix = node.func.id, "succeed", helpers[node.func.id]
        else:
            continue
        texts = []
        for arg in node.args:
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                text = arg.value
            elif isinstance(arg, ast.JoinedStr):
                text = "".join(str(v.value) if isinstance(v, ast.Constant) else "{}" for v in arg.values)
            else:
                continue
            if prefix + text not in bodies:
                texts.append(prefix + text)
        if texts:
            found.append((node.lineno, node.col_offset, receiver, method, texts))
    return [(r, m, t) for _, _, r, m, t in sorted(found, key=lambda f: (f[0], f[1]))]


def string_calls(script: str, *, helpers: Mapping[str, str] | None = None) -> list[tuple[str, str, str]]:
    """:func:`call_args`, one (receiver, method, command) per string argument."""
    return [(r, m, c) for r, m, texts in call_args(script, helpers=helpers) for c in texts]


# where the VM's paths live in the twin's directory (longest first: nixcomply-keys before nixcomply)
VM_PATHS = (
    "/var/lib/prometheus-node-exporter-text-files",
    "/var/lib/nixcomply-keys",
    "/var/lib/nixcomply",
    "/var/lib/fleet",
    "/tmp",
)


@dataclass
class CliTwin:
    """A node's evidence commands run by the real CLI in a directory of its own: the
    provisioning call (keygen, the keyring's copy), a signed entry in the store (what a
    reconcile cycle would record: a real ``nixcomply evidence attest``), then every
    ``nixcomply evidence`` command of the script, with the exit status ``succeed`` (0) or
    ``fail`` (not 0) needs. Other nixcomply and nixcomply-server commands are parsed by the
    real parsers. A witness (``--witness``) needs the MSP's server: those commands run here
    without it (what remains, the keyring, must pass) and tests/test_fleet_scenario.py runs
    the witness itself."""

    root: Path
    config: Path | None = None  # the node's /etc/nixcomply/reconciler.json, its paths moved here
    log: list[str] = field(default_factory=list)

    def path(self, command: str) -> str:
        """``command`` with the VM's paths (where a word or a ``--opt=`` value starts) moved
        into the twin's directory."""
        pattern = "|".join(re.escape(vm) for vm in VM_PATHS)  # longest first
        return re.sub(
            rf"(?<![^\s'\"=])({pattern})(?=/|\b)",
            lambda m: str(self.root / m[1].strip("/").replace("/", "_")),
            command,
        )

    def run(self, command: str, *extra: str) -> subprocess.CompletedProcess[str]:
        argv = [*shlex.split(self.path(command.replace("{}", "machine"))), *extra]
        self.log.append(" ".join(argv))
        if argv[0] == "nixcomply":
            argv = [sys.executable, "-m", "nixcomply", *argv[1:]]
            return subprocess.run(argv, capture_output=True, text=True, check=False)
        return subprocess.run(["sh", "-c", shlex.join(argv)], capture_output=True, text=True, check=False)

    def provision(self, commands: list[str]) -> None:
        """Run the node's provisioning (every argument of the call that makes the keys, except
        the fleet repository's), then record one signed entry with those keys."""
        for vm in VM_PATHS:
            (self.root / vm.strip("/").replace("/", "_")).mkdir(parents=True, exist_ok=True)
        keys: dict[str, str] = {}
        for command in commands:
            if "/fleet" in command:
                continue
            r = self.run(command)
            if r.returncode != 0:
                raise TwinError(f"provisioning: {command!r} exited {r.returncode}: {r.stderr}")
            words = shlex.split(command)
            if words[:3] == ["nixcomply", "evidence", "keygen"]:
                keys[words[words.index("--role") + 1]] = words[words.index("--out") + 1]
        if set(keys) != {"bundle", "log"}:
            raise TwinError(f"provisioning made keys for {sorted(keys)}, not bundle and log")
        r = self.run(
            "nixcomply evidence attest 164.308(a)(5)(i) --by ci --evidence-url https://ci.example/training"
            " --expires 2099-01-01 --statement trained --state-dir /var/lib/nixcomply"
            f" --signing-key {keys['bundle']} --log-key {keys['log']}"
        )
        if r.returncode != 0:
            raise TwinError(f"recording an entry with the provisioned keys failed: {r.stderr}")

    def evidence(self, method: str, command: str) -> None:
        if "--witness" in command:
            if method == "fail":
                return  # fails for want of a cosignature: the fleet twin shows that
            command = re.sub(r" --witness '[^']*'", "", command)
        r = self.run(command)
        if method == "succeed" and r.returncode != 0:
            raise TwinError(f"{command!r} exited {r.returncode}, succeed() needs 0: {r.stdout}{r.stderr}")
        if method == "fail" and r.returncode == 0:
            raise TwinError(f"{command!r} exited 0, fail() needs another status")
        if method == "succeed" and "--json" in shlex.split(command):
            report = json.loads(r.stdout)
            if "ok" in report and report["ok"] is not True:
                raise TwinError(f"{command!r}: the report is not ok: {report}")

    def reconciler(self, method: str, command: str) -> None:
        """A verb that reads the reconciler's configuration (status, reset), with the node's."""
        assert self.config is not None
        r = self.run(command, "--config", str(self.config))
        if method == "succeed" and r.returncode != 0:
            raise TwinError(f"{command!r} exited {r.returncode}, succeed() needs 0: {r.stdout}{r.stderr}")
        if method == "fail" and r.returncode == 0:
            raise TwinError(f"{command!r} exited 0, fail() needs another status")
        if "--json" in shlex.split(command):
            json.loads(r.stdout)


def parse_command(command: str) -> None:
    """Parse a nixcomply or nixcomply-server command line with the real parser (a placeholder
    stands for a word); TwinError when the parser refuses it."""
    words = shlex.split(command.replace("{}", "x"))
    words = words[words.index("--") + 1 :] if "--" in words else words  # runuser -u USER -- ...
    shell = next((i for i, w in enumerate(words) if w in {">", "&", "2>&1", "&&", "|"}), len(words))
    words = [w for w in words[:shell] if not w.startswith(">")]
    parsers = {"nixcomply": build_parser, "nixcomply-server": server_parser}
    if words[0] not in parsers:
        raise TwinError(f"not a nixcomply command: {command!r}")
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            parsers[words[0]]().parse_args(words[1:])
    except SystemExit as e:
        raise TwinError(f"{words[0]} refuses {command!r}: {err.getvalue().strip()}") from e
