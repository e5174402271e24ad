"""Integration tests: the checks run the real tools (root needed, as in CI).

Nothing is left behind on the machine: rulesets live in private network namespaces
(``unshare -n``), journald runs in a private mount namespace with tmpfs over /run, chronyd
runs with ``-x`` (never touching the clock) on 127.0.0.1 and is stopped, audit rules are
loaded only when none are and removed again.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fixtures_checks import CHECKDATA, context, control, data, manifest, require

from conftest import REPO
from nixcomply.checks import (
    audit_rules,
    audit_status,
    backup,
    disk_usage,
    encryption,
    journald_config,
    kernel_modules,
    nix_config,
    sshd_effective,
    sysctl,
    time_sync,
)
from nixcomply.checks.finding import Finding

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root, as CI has")

# Runs one check in another namespace and prints its findings as JSON lines.
RUNNER = textwrap.dedent(
    """
    import json, sys
    from dataclasses import replace
    from datetime import UTC, datetime
    from pathlib import Path
    from nixcomply.checks import firewall, log_continuity
    from nixcomply.checks.config import ChecksConfig
    from nixcomply.checks.context import FALLBACK_PARAMETERS, CheckContext, GenerationStatus

    what, config = sys.argv[1], ChecksConfig.model_validate(json.loads(sys.argv[2]))
    ctx = CheckContext(root=Path("/"), manifest=None, parameters=FALLBACK_PARAMETERS,
                       now=datetime.now(UTC), config=config)
    if what == "firewall":
        rules, _ = firewall.observe_ruleset(ctx)
        print(json.dumps({"hash": rules.ruleset_hash}))
        gen = GenerationStatus("a" * 40, "a" * 40, firewall_ruleset_hash=sys.argv[3] if len(sys.argv) > 3 else None)
        for f in firewall.run(replace(ctx, generation=gen), {}):
            print(f.model_dump_json())
    elif what == "canary":
        outputs = {}
        result = log_continuity.canary(ctx, outputs)
        print(json.dumps({"written": result.written, "found": result.found, "error": result.error,
                          "attempts": result.attempts, "journal": outputs.get("journalctl", "")}))
    """
)


def in_namespace(
    tmp_path: Path, unshare: list[str], shell: str, *args: str, teardown: str = ""
) -> list[dict[str, Any]]:
    """Run ``shell``, the RUNNER with ``args``, then ``teardown`` inside ``unshare``; the
    RUNNER's JSON lines."""
    runner = tmp_path / "runner.py"
    runner.write_text(RUNNER)
    script = f'set -e\n{shell}\nrc=0\n{sys.executable} {runner} "$@" || rc=$?\n{teardown}\nexit $rc\n'
    env = {**os.environ, "PYTHONPATH": str(REPO / "python")}
    proc = subprocess.run(
        [require("unshare"), *unshare, "sh", "-c", script, "sh", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]


# -- sshd -T ---------------------------------------------------------------------------------------------------


@pytest.fixture
def privsep_dir() -> Iterator[None]:
    """Debian's sshd -T insists on /run/sshd (its unit creates it); remove it if we made it."""
    path = Path("/run/sshd")
    made = not path.exists()
    path.mkdir(mode=0o755, exist_ok=True)
    yield
    if made:
        path.rmdir()


def sshd_root(tmp_path: Path, extra: str = "") -> Path:
    root = tmp_path / "root"
    (root / "etc/ssh").mkdir(parents=True)
    key = tmp_path / "ssh_host_ed25519_key"
    subprocess.run([require("ssh-keygen"), "-q", "-t", "ed25519", "-N", "", "-f", key], check=True)
    text = data("sshd_effective/sshd_config")
    text = text.replace("HostKey /etc/ssh/ssh_host_ed25519\n", f"HostKey {key}\n")
    text = text.replace("HostKey /etc/ssh/ssh_host_rsa\n", "").replace("/run/sshd.pid", str(tmp_path / "pid"))
    (root / "etc/ssh/sshd_config").write_text(text + extra)
    return root


@pytest.mark.usefixtures("privsep_dir")
def test_sshd_effective_real(tmp_path: Path) -> None:
    root = sshd_root(tmp_path)
    sshd = require("sshd")
    m = manifest(
        {
            "ssh.password-auth-disabled": control("sshd_effective", {"PasswordAuthentication": "no"}),
            "ssh.macs": control(
                "sshd_effective",
                {
                    "MACs": [
                        "hmac-sha2-512-etm@openssh.com",
                        "hmac-sha2-256-etm@openssh.com",
                        "umac-128-etm@openssh.com",
                    ]
                },
            ),
            "ssh.macs-reordered": control(
                "sshd_effective",
                {
                    "MACs": [
                        "hmac-sha2-256-etm@openssh.com",
                        "hmac-sha2-512-etm@openssh.com",
                        "umac-128-etm@openssh.com",
                    ]
                },
            ),
        }
    )
    ctx = context(root, manifest=m, config={"sshd": {"binary": sshd}})
    by = {f.control_ids[0]: f for f in sshd_effective.run(ctx, dict(m.controls))}
    assert by["ssh.password-auth-disabled"].status == "pass", by["ssh.password-auth-disabled"].message
    assert by["ssh.macs"].status == "pass"
    assert by["ssh.macs-reordered"].status == "drift"  # order decides the negotiated MAC
    # the Match block for user backup allows passwords
    matched = context(
        root,
        manifest=m,
        config={
            "sshd": {"binary": sshd, "connection": {"user": "backup", "addr": "10.0.0.5", "host": "ws1"}}
        },
    )
    by = {f.control_ids[0]: f for f in sshd_effective.run(matched, dict(m.controls))}
    assert by["ssh.password-auth-disabled"].status == "drift"


@pytest.mark.usefixtures("privsep_dir")
def test_sshd_effective_broken_config_is_an_error(tmp_path: Path) -> None:
    root = sshd_root(tmp_path, "Bogus yes\n")
    m = manifest({"ssh.x": control("sshd_effective", {"PasswordAuthentication": "no"})})
    f = sshd_effective.run(
        context(root, manifest=m, config={"sshd": {"binary": require("sshd")}}), dict(m.controls)
    )[0]
    assert f.status == "error" and "Bad configuration option: Bogus" in f.message


# -- firewall in a private network namespace ----------------------------------------------------------------


def test_firewall_nftables_real(tmp_path: Path) -> None:
    require("nft")
    ruleset = CHECKDATA / "firewall/nixos-fw.nft"
    out = in_namespace(tmp_path, ["-n"], f"nft -f {ruleset}", "firewall", "{}")
    recorded = out[0]["hash"]
    f = Finding.model_validate(out[1])
    assert f.status == "pass" and f.observed["input_policy"] == "drop" and f.observed["log_refused"]
    # a reload (as nftables.service does it: flush, load) gives new handles, the same hash
    reload = f"nft -f {ruleset}\nnft flush ruleset\nnft -f {ruleset}"
    again = in_namespace(tmp_path, ["-n"], reload, "firewall", "{}", recorded)
    assert Finding.model_validate(again[1]).status == "pass"
    # a rule added by hand: drift against the recorded hash
    added = in_namespace(
        tmp_path,
        ["-n"],
        f"nft -f {ruleset}\nnft add rule inet nixos-fw input-allow tcp dport 3389 accept",
        "firewall",
        "{}",
        recorded,
    )
    f = Finding.model_validate(added[1])
    assert f.status == "drift" and "differs from the one recorded" in f.message
    # no firewall at all
    empty = Finding.model_validate(in_namespace(tmp_path, ["-n"], "true", "firewall", "{}")[1])
    assert empty.status == "drift" and empty.observed["enabled"] is False


def test_firewall_iptables_real(tmp_path: Path) -> None:
    require("iptables-save")
    script = CHECKDATA / "firewall/nixos-iptables.sh"
    config = json.dumps({"firewall": {"backend": "iptables"}})
    f = Finding.model_validate(in_namespace(tmp_path, ["-n"], f"sh {script}", "firewall", config)[1])
    assert f.status == "pass", f.message
    assert f.observed["log_refused"] and f.runbook_params == {"unit": "firewall.service"}


# -- journald canary in a private mount namespace ---------------------------------------------------------


def test_logging_canary_against_a_real_journald(tmp_path: Path) -> None:
    require("journalctl")
    journald = "/lib/systemd/systemd-journald"
    if not Path(journald).exists():
        pytest.fail("systemd-journald is required (apt-get install systemd)")
    mounts = textwrap.dedent(
        """
        mount -t tmpfs tmpfs /run
        mkdir -p /run/systemd/journal /run/log
        if [ -d /var/log/journal ]; then mount -t tmpfs tmpfs /var/log/journal; fi
        """
    )
    start = (
        f"{journald} >/dev/null 2>&1 &\nJPID=$!\n"
        "for i in $(seq 50); do [ -S /run/systemd/journal/stdout ] && break; sleep 0.1; done"
    )
    stop = "kill $JPID\nwait $JPID || true"
    config = json.dumps({"logging": {"read_attempts": 20, "read_interval_seconds": 0.1}})
    found = in_namespace(
        tmp_path, ["-m", "--propagation", "private"], mounts + start, "canary", config, teardown=stop
    )[0]
    assert found["written"] and found["found"], found
    assert "nixcomply canary" in found["journal"]
    refused = in_namespace(tmp_path, ["-m", "--propagation", "private"], mounts, "canary", config)[0]
    assert not refused["written"] and not refused["found"]
    assert "Failed to create stream fd" in refused["error"]


# -- chrony: a client chronyd synchronised to a server chronyd on 127.0.0.1 --------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def chrony_pair(tmp_path: Path) -> Iterator[tuple[int, int]]:
    """(command port of a synchronised client, command port of one whose server is silent)."""
    chronyd = require("chronyd")
    ntp, silent = free_port(), free_port()
    ports = {"server": free_port(), "client": free_port(), "lost": free_port()}
    confs = {
        "server": f"local stratum 8\nallow 127.0.0.1\nport {ntp}\nbindaddress 127.0.0.1\n",
        "client": f"server 127.0.0.1 port {ntp} iburst minpoll -4 maxpoll -4\nport 0\n",
        "lost": f"server 127.0.0.1 port {silent} iburst minpoll -4 maxpoll -4\nport 0\n",
    }
    pids = []
    try:
        for name, conf in confs.items():
            d = tmp_path / name
            d.mkdir(mode=0o700)
            (d / "chrony.conf").write_text(
                conf
                + f"cmdport {ports[name]}\nbindcmdaddress 127.0.0.1\npidfile {d}/pid\ndriftfile {d}/drift\n"
            )
            proc = subprocess.Popen(
                [chronyd, "-x", "-d", "-u", "root", "-f", d / "chrony.conf"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            pids.append(proc)
        chronyc = require("chronyc")
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            out = subprocess.run(
                [chronyc, "-h", "127.0.0.1", "-p", str(ports["client"]), "-c", "tracking"],
                capture_output=True,
                text=True,
                check=False,
            ).stdout
            if out.strip().endswith("Normal"):
                break
            time.sleep(0.3)
        yield ports["client"], ports["lost"]
    finally:
        for proc in pids:
            proc.send_signal(signal.SIGTERM)
        for proc in pids:
            proc.wait(timeout=10)


def test_time_sync_real_chrony(chrony_pair: tuple[int, int]) -> None:
    synced, lost = chrony_pair
    f = time_sync.run(context(config={"time": {"chronyc_host": "127.0.0.1", "chronyc_port": synced}}), {})[0]
    assert f.status == "pass", f.message
    assert f.observed["leap_status"] == "Normal" and f.observed["offset_seconds"] < 1
    f = time_sync.run(context(config={"time": {"chronyc_host": "127.0.0.1", "chronyc_port": lost}}), {})[0]
    assert f.status == "drift" and f.observed["leap_status"] == "Not synchronised"


def test_time_sync_no_daemon_is_an_error() -> None:
    require("chronyc")
    f = time_sync.run(
        context(config={"time": {"chronyc_host": "127.0.0.1", "chronyc_port": free_port()}}), {}
    )[0]
    assert f.status == "error" and "506" in f.outputs.get("stdout", "")


# -- backups: real restic and borg repositories ----------------------------------------------------------------


def test_backup_restic_real(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    restic = require("restic")
    monkeypatch.setenv("RESTIC_CACHE_DIR", str(tmp_path / "cache"))
    root = tmp_path / "root"
    (root / "run/keys").mkdir(parents=True)
    (root / "run/keys/restic").write_text("correct horse\n")
    repo = tmp_path / "repo"
    env = {
        **os.environ,
        "RESTIC_PASSWORD_FILE": str(root / "run/keys/restic"),
        "RESTIC_CACHE_DIR": str(tmp_path / "cache"),
    }
    subprocess.run([restic, "-r", repo, "init", "-q"], env=env, check=True)
    cfg = {
        "backup": {"kind": "restic", "repository": str(repo), "password_file": "/run/keys/restic"},
        "executables": {"restic": restic},
    }
    f = backup.run(context(root, config=cfg, now=datetime.now(UTC)), {})[0]
    assert f.status == "drift" and "no backup found" in f.message
    subprocess.run(
        [restic, "-r", repo, "backup", "-q", REPO / "python/nixcomply/checks"], env=env, check=True
    )
    f = backup.run(context(root, config=cfg, now=datetime.now(UTC)), {})[0]
    assert f.status == "pass", f.message
    f = backup.run(context(root, config=cfg, now=datetime.now(UTC) + timedelta(hours=25)), {})[0]
    assert f.status == "drift" and "limit 24 h" in f.message
    (root / "run/keys/restic").write_text("wrong\n")
    f = backup.run(context(root, config=cfg, now=datetime.now(UTC)), {})[0]
    assert f.status == "error" and "wrong password" in f.message


def test_backup_borg_real(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    borg = require("borg")
    monkeypatch.setenv("BORG_BASE_DIR", str(tmp_path / "borgbase"))
    root = tmp_path / "root"
    (root / "run/keys").mkdir(parents=True)
    (root / "run/keys/borg").write_text("correct horse\n")
    repo = tmp_path / "repo"
    env = {**os.environ, "BORG_PASSPHRASE": "correct horse"}
    subprocess.run([borg, "init", "-e", "repokey", repo], env=env, check=True, capture_output=True)
    cfg = {
        "backup": {"kind": "borg", "repository": str(repo), "password_file": "/run/keys/borg"},
        "executables": {"borg": borg},
    }
    assert backup.run(context(root, config=cfg, now=datetime.now(UTC)), {})[0].status == "drift"
    subprocess.run([borg, "create", f"{repo}::first", REPO / "python/nixcomply/checks"], env=env, check=True)
    f = backup.run(context(root, config=cfg, now=datetime.now(UTC)), {})[0]
    assert f.status == "pass", f.message
    assert f.observed["age_hours"] < 0.1  # borg's naive time was read as UTC (TZ=UTC)


# -- audit: read the real kernel state; load rules only when none are loaded -------------------------------


def auditctl(*args: str) -> str:
    return subprocess.run([require("auditctl"), *args], capture_output=True, text=True, check=True).stdout


def test_audit_status_real() -> None:
    status = audit_status.parse_auditctl_status(auditctl("-s"))
    m = manifest({"audit.enabled": control("audit_status", {"enabled": 1, "pid_running": False})})
    f = audit_status.run(context(manifest=m), dict(m.controls))[0]
    assert f.observed["enabled"] == status["enabled"]
    assert f.status == ("pass" if status["enabled"] in (1, 2) else "drift")


def test_audit_rules_real() -> None:
    m = manifest({"audit.identity": control("audit_rules", {"keys": ["identity", "exec"]})})
    if auditctl("-l").strip() != "No rules":
        f = audit_rules.run(context(manifest=m), dict(m.controls))[0]
        assert f.status in ("pass", "drift")  # the machine's own rules: only read them
        return
    f = audit_rules.run(context(manifest=m), dict(m.controls))[0]
    assert f.status == "drift" and "no audit rules are loaded" in f.message
    try:
        auditctl("-R", str(CHECKDATA / "audit_rules/hipaa.rules"))
        f = audit_rules.run(context(manifest=m), dict(m.controls))[0]
        assert f.status == "pass" and f.observed["rule_count"] == 11
    finally:
        auditctl("-D")


# -- lsblk, statvfs, sysctl, systemd-analyze, nix, modprobe, visudo -----------------------------------------


def test_encryption_real_lsblk() -> None:
    lsblk = json.loads(
        subprocess.run(
            [require("lsblk"), "-J", "-o", "NAME,TYPE,MOUNTPOINTS"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    devices = encryption.parse_lsblk(json.dumps(lsblk))
    root = [d for d in devices if "/" in d.mountpoints]
    f = encryption.run(context(), {})[0]
    if not root:
        assert f.status == "error"
        return
    assert f.observed["/"]["device"] == root[0].name
    assert f.status == ("pass" if root[0].crypt_ancestor else "drift")


def test_disk_usage_matches_df(tmp_path: Path) -> None:
    for d in ("nix", "var"):
        (tmp_path / d).mkdir()
    f = disk_usage.run(context(tmp_path), {})[0]
    df = subprocess.run(["df", "--output=pcent", tmp_path], capture_output=True, text=True, check=True).stdout
    assert f"{int(-(-f.observed['used_percent'] // 1))}%" == df.splitlines()[1].strip()


def test_sysctl_real_proc_and_fake_root(tmp_path: Path) -> None:
    value = subprocess.run(
        [require("sysctl"), "-n", "kernel.randomize_va_space"], capture_output=True, text=True, check=True
    ).stdout.strip()
    m = manifest({"kernel.aslr": control("sysctl", {"kernel.randomize_va_space": int(value)})})
    assert sysctl.run(context(manifest=m), dict(m.controls))[0].status == "pass"
    root = tmp_path / "root"
    shutil.copytree(CHECKDATA / "sysctl", root)
    m = manifest(
        {"net.rp": control("sysctl", {"net.ipv4.conf.all.rp_filter": 1, "kernel.dmesg_restrict": 1})}
    )
    f = sysctl.run(context(root, manifest=m), dict(m.controls))[0]
    assert f.status == "drift" and f.message == "net.ipv4.conf.all.rp_filter is 0, expected 1"


def test_journald_config_real_systemd_analyze(tmp_path: Path) -> None:
    require("systemd-analyze")
    root = tmp_path / "root"
    shutil.copytree(CHECKDATA / "journald_config/root", root)
    m = manifest(
        {"logging.persistent": control("journald_config", {"Storage": "persistent", "ForwardToSyslog": True})}
    )
    f = journald_config.run(context(root, manifest=m), dict(m.controls))[0]
    assert f.status == "pass", f.message
    assert f.observed["files"] == [
        f"{root}/etc/systemd/journald.conf",
        f"{root}/etc/systemd/journald.conf.d/50-site.conf",
    ]


def test_nix_config_real(nix_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NIX_CONFIG", nix_env["NIX_CONFIG"])
    m = manifest({"nix.x": control("nix_config", {"sandbox": False, "substituters": []})})
    f = nix_config.run(context(manifest=m), dict(m.controls))[0]
    assert f.status == "pass", f.message


def test_kernel_modules_data_agrees_with_modprobe(tmp_path: Path) -> None:
    shown = subprocess.run(
        [require("modprobe"), "-c", "-C", CHECKDATA / "kernel_modules/nixos.conf"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    blacklisted = {line.split()[1] for line in shown.splitlines() if line.startswith("blacklist ")}
    parsed = kernel_modules.parse_modprobe_conf(data("kernel_modules/nixos.conf"))
    assert parsed.blacklisted <= blacklisted  # modprobe adds its own default configuration
    assert {"cramfs", "freevxfs", "dccp", "sctp", "firewire_core"} <= blacklisted


@pytest.mark.parametrize(
    "name",
    [
        "sudoers-nixos",
        "sudoers-nixos-nopasswd",
        "sudoers-nixos-extrarule",
        "sudoers-includedir",
        "sudoers.d-admins",
    ],
)
def test_sudoers_data_is_valid_sudoers(name: str) -> None:
    proc = subprocess.run(
        [require("visudo"), "-c", "-f", CHECKDATA / "sudo_config" / name],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    bad = subprocess.run(
        [require("visudo"), "-c", "-f", CHECKDATA / "sudo_config/sudoers-malformed"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode != 0
