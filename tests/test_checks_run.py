"""Unit tests of each check's run(): nixcomply.core.process.run mocked (autospec) with the exact
argv asserted, captured outputs fed back, and the findings judged (pass, drift, error,
excepted, skipped). File-based checks run against a temporary root."""

from __future__ import annotations

import json
import os
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from boundary import argv_of, result
from fixtures_checks import NOW, FakeSystemd, FakeUnit, context, control, data, manifest

from nixcomply.checks import (
    audit_rules,
    audit_status,
    av_edr,
    backup,
    config_value,
    coredump,
    disk_usage,
    encryption,
    exceptions,
    file_content,
    firewall,
    generation,
    journald_config,
    kernel_modules,
    log_continuity,
    nix_config,
    patch_age,
    restore_test,
    service_health,
    sshd_effective,
    sudo_config,
    sysctl,
    time_sync,
)
from nixcomply.checks.context import AttestationSummary, GenerationStatus
from nixcomply.checks.finding import Finding
from nixcomply.errors import CommandError, CommandNotFoundError

TIMEOUT = 20.0


def one(findings: list[Finding]) -> Finding:
    assert len(findings) == 1, findings
    return findings[0]


def controls_of(m: Any) -> dict[str, Any]:
    return dict(m.controls)


# -- the shared driver: excepted, skipped, unknown expect keys, errors ---------------------------------


def test_excepted_controls_run_nothing(run: mock.MagicMock) -> None:
    m = manifest(
        {
            "ssh.password-auth-disabled": control(
                "sshd_effective", {"PasswordAuthentication": "no"}, status="excepted"
            )
        },
        exceptions={
            "ssh.password-auth-disabled": {
                "justification": "legacy scanner",
                "approvedBy": "so@clinic",
                "expires": "2027-03-01",
                "ticket": "SEC-142",
            }
        },
    )
    f = one(sshd_effective.run(context(manifest=m), controls_of(m)))
    assert f.status == "excepted" and not f.drifted
    assert "SEC-142" in f.message and "2027-03-01" in f.message
    run.assert_not_called()


def test_check_without_control_is_skipped_when_it_needs_one(run: mock.MagicMock) -> None:
    f = one(sshd_effective.run(context(), {}))
    assert f.status == "skipped" and f.control_ids == [] and f.severity == "high"
    run.assert_not_called()


def test_unknown_expect_key_is_an_error(run: mock.MagicMock) -> None:
    m = manifest({"net.fw": control("firewall", {"input_polcy": "drop"})})
    f = one(firewall.run(context(manifest=m), controls_of(m)))
    assert f.status == "error" and "input_polcy" in f.message
    run.assert_not_called()


def test_command_failure_is_an_error_with_its_output(run: mock.MagicMock) -> None:
    run.side_effect = CommandError(
        ["sshd", "-T"], returncode=255, stderr=data("sshd_effective/no-privsep-dir.stderr")
    )
    m = manifest({"ssh.root": control("sshd_effective", {"PermitRootLogin": "no"})})
    f = one(sshd_effective.run(context(manifest=m), controls_of(m)))
    assert f.status == "error" and not f.drifted
    assert "Missing privilege separation directory" in f.message and "\n" not in f.message
    assert "Missing privilege separation" in f.outputs["stderr"]
    assert f.recommended_runbook is None


def test_frameworks_and_severity_merge_across_controls(run: mock.MagicMock) -> None:
    fs = FakeSystemd({"sshd.service": FakeUnit("sshd.service", active_state="failed", sub_state="failed")})
    m = manifest(
        {
            "services.critical-running": control(
                "service_health", {"units": ["sshd.service"]}, severity="medium", remediation="RB-SERVICE-001"
            ),
            "ssh.available": control(
                "service_health",
                {"units": ["sshd"]},
                severity="critical",
                remediation="RB-SERVICE-001",
                frameworks={
                    "hipaa": ["164.312(a)(1)"],
                    "soc2": ["A1.2"],
                    "cis_v8": ["4.1"],
                    "nist_800_53": ["SC-5"],
                    "nist_csf": ["PR.IR-03"],
                },
            ),
        }
    )
    f = one(service_health.run(context(manifest=m, systemd=fs), controls_of(m)))
    assert f.control_ids == ["services.critical-running", "ssh.available"]
    assert f.severity == "critical" and f.status == "drift" and f.drifted
    assert f.frameworks["hipaa"] == ["164.312(a)(1)", "164.312(d)"]
    assert f.frameworks["soc2"] == ["A1.2", "CC6.1"]
    assert f.recommended_runbook == "RB-SERVICE-001" and f.runbook_params == {"unit": "sshd.service"}
    assert fs.asked == ["sshd.service"]  # asked once for both controls


# -- sshd_effective ---------------------------------------------------------------------------------------


def test_sshd_argv_and_pass(run: mock.MagicMock, tmp_path: Path) -> None:
    run.return_value = result(data("sshd_effective/hardened.txt"))
    m = manifest(
        {
            "ssh.password-auth-disabled": control("sshd_effective", {"PasswordAuthentication": "no"}),
            "ssh.ciphers": control(
                "sshd_effective",
                {
                    "Ciphers": [
                        "chacha20-poly1305@openssh.com",
                        "aes256-gcm@openssh.com",
                        "aes128-gcm@openssh.com",
                        "aes256-ctr",
                        "aes192-ctr",
                        "aes128-ctr",
                    ],
                    "LogLevel": "VERBOSE",
                    "MaxAuthTries": 3,
                    "X11Forwarding": False,
                },
            ),
        }
    )
    ctx = context(
        tmp_path, manifest=m, config={"sshd": {"connection": {"user": "backup", "addr": "10.0.0.5"}}}
    )
    findings = sshd_effective.run(ctx, controls_of(m))
    assert [f.status for f in findings] == ["pass", "pass"]
    assert run.call_count == 1  # observed once for both controls
    assert argv_of(run.call_args) == [
        "sshd",
        "-T",
        "-f",
        str(tmp_path / "etc/ssh/sshd_config"),
        "-C",
        "addr=10.0.0.5,user=backup",
    ]
    assert run.call_args.kwargs["timeout"] == TIMEOUT
    assert findings[0].outputs["sshd_t"].startswith("port 22")


def test_sshd_drift(run: mock.MagicMock) -> None:
    run.return_value = result(data("sshd_effective/weak.txt"))
    m = manifest(
        {
            "ssh.hardening": control(
                "sshd_effective",
                {
                    "passwordauthentication": "no",
                    "permitrootlogin": "no",
                    "ciphers": "chacha20-poly1305@openssh.com,aes128-ctr",
                },
            )
        }
    )
    f = one(sshd_effective.run(context(manifest=m), controls_of(m)))
    assert f.status == "drift" and f.recommended_runbook == "RB-DRIFT-001"
    assert "passwordauthentication is 'yes', expected 'no'" in f.message
    assert "ciphers" in f.message  # same algorithms, wrong order
    assert f.observed["permitrootlogin"] == "yes" and f.expected["passwordauthentication"] == "no"


def test_sshd_unknown_keyword_is_drift_not_pass(run: mock.MagicMock) -> None:
    run.return_value = result(data("sshd_effective/hardened.txt"))
    m = manifest({"ssh.x": control("sshd_effective", {"NoSuchKeyword": "yes"})})
    f = one(sshd_effective.run(context(manifest=m), controls_of(m)))
    assert f.status == "drift" and "not printed by sshd -T" in f.message


# -- sysctl, kernel modules, coredump (files under the root) ---------------------------------------------


def write(root: Path, path: str, text: str) -> Path:
    target = root / path.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)
    return target


def test_sysctl(tmp_path: Path) -> None:
    write(tmp_path, "/proc/sys/kernel/kptr_restrict", "2\n")
    write(tmp_path, "/proc/sys/net/ipv4/tcp_rmem", "4096\t131072\t6291456\n")
    write(tmp_path, "/proc/sys/net/ipv4/ip_forward", "1\n")
    m = manifest(
        {
            "kernel.hardening": control(
                "sysctl", {"kernel.kptr_restrict": 2, "net.ipv4.tcp_rmem": "4096 131072 6291456"}
            ),
            "net.no-forwarding": control("sysctl", {"net.ipv4.ip_forward": False}),
            "kernel.missing": control("sysctl", {"kernel.yama.ptrace_scope": 1}),
        }
    )
    by_id = {f.control_ids[0]: f for f in sysctl.run(context(tmp_path, manifest=m), controls_of(m))}
    assert by_id["kernel.hardening"].status == "pass"
    assert by_id["net.no-forwarding"].status == "drift"
    assert by_id["net.no-forwarding"].message == "net.ipv4.ip_forward is 1, expected 0"
    assert by_id["kernel.missing"].status == "error" and "does not exist" in by_id["kernel.missing"].message


def test_kernel_modules(tmp_path: Path) -> None:
    write(tmp_path, "/etc/modprobe.d/nixos.conf", data("kernel_modules/nixos.conf"))
    write(tmp_path, "/proc/modules", data("kernel_modules/proc-modules.txt"))
    m = manifest(
        {
            "storage.no-usb": control(
                "kernel_modules", {"blacklisted": ["usb-storage", "cramfs"], "not_loaded": ["usb-storage"]}
            ),
            "fs.rare": control(
                "kernel_modules",
                {"blacklisted": ["cramfs", "jffs2", "firewire-core"], "not_loaded": ["cramfs"]},
            ),
            "net.rare": control("kernel_modules", {"blacklisted": ["rds", "tipc"]}),
        }
    )
    by_id = {f.control_ids[0]: f for f in kernel_modules.run(context(tmp_path, manifest=m), controls_of(m))}
    assert (
        by_id["storage.no-usb"].status == "drift"
        and "loaded now: usb-storage" in by_id["storage.no-usb"].message
    )
    assert by_id["fs.rare"].status == "pass"
    assert by_id["fs.rare"].observed["install_disabled"] == ["jffs2"]
    assert by_id["net.rare"].status == "drift" and "not blacklisted: rds, tipc" in by_id["net.rare"].message


def test_kernel_modules_without_module_support(tmp_path: Path) -> None:
    write(tmp_path, "/etc/modprobe.d/nixos.conf", "blacklist cramfs\n")
    m = manifest(
        {"fs.rare": control("kernel_modules", {"blacklisted": ["cramfs"], "not_loaded": ["cramfs"]})}
    )
    assert one(kernel_modules.run(context(tmp_path, manifest=m), controls_of(m))).status == "pass"


def test_coredump(tmp_path: Path) -> None:
    write(tmp_path, "/etc/systemd/coredump.conf", data("coredump/coredump.conf"))
    write(tmp_path, "/proc/sys/kernel/core_pattern", "|/bin/false\n")
    write(tmp_path, "/proc/sys/fs/suid_dumpable", "0\n")
    m = manifest(
        {
            "proc.no-coredumps": control(
                "coredump", {"storage": "none", "core_pattern": "|/bin/false", "suid_dumpable": 0}
            )
        }
    )
    f = one(coredump.run(context(tmp_path, manifest=m), controls_of(m)))
    assert f.status == "pass", f.message
    write(tmp_path, "/etc/systemd/coredump.conf.d/50-override.conf", data("coredump/50-override.conf"))
    f = one(coredump.run(context(tmp_path, manifest=m), controls_of(m)))
    assert f.status == "drift" and "storage is 'external'" in f.message


def test_coredump_default_without_control(tmp_path: Path) -> None:
    f = one(coredump.run(context(tmp_path), {}))
    assert f.status == "drift" and f.observed["storage"] == "external"  # systemd's default


# -- auditctl -------------------------------------------------------------------------------------------------


def test_audit_rules(run: mock.MagicMock) -> None:
    run.return_value = result(data("audit_rules/hipaa.txt"))
    m = manifest(
        {
            "audit.identity": control("audit_rules", {"keys": ["identity", "exec"]}),
            "audit.privileged": control("audit_rules", {"keys": ["privileged", "exec"]}),
        }
    )
    by_id = {f.control_ids[0]: f for f in audit_rules.run(context(manifest=m), controls_of(m))}
    # drift asks whether the loaded rules are locked (this answer is no `auditctl -s`: unknown)
    assert [argv_of(c) for c in run.call_args_list] == [["auditctl", "-l"], ["auditctl", "-s"]]
    assert by_id["audit.identity"].status == "pass"
    assert by_id["audit.privileged"].status == "drift" and "privileged" in by_id["audit.privileged"].message


def test_audit_rules_none_loaded(run: mock.MagicMock) -> None:
    run.return_value = result(data("audit_rules/no-rules.txt"))
    m = manifest({"audit.identity": control("audit_rules", {"keys": ["identity"]})})
    f = one(audit_rules.run(context(manifest=m), controls_of(m)))
    assert f.status == "drift" and "no audit rules are loaded" in f.message


def test_audit_status(run: mock.MagicMock) -> None:
    run.return_value = result(data("audit_status/enabled-no-daemon.txt"))
    m = manifest(
        {"audit.enabled": control("audit_status", {"enabled": 1, "failure": 1}, remediation="RB-SERVICE-001")}
    )
    f = one(audit_status.run(context(manifest=m), controls_of(m)))
    assert argv_of(run.call_args) == ["auditctl", "-s"]
    assert f.status == "drift" and "pid 0" in f.message
    assert f.runbook_params == {"unit": "auditd.service"}
    running = data("audit_status/enabled-no-daemon.txt").replace("pid 0", "pid 812")
    run.return_value = result(running)
    assert one(audit_status.run(context(manifest=m), controls_of(m))).status == "pass"
    run.return_value = result(data("audit_status/disabled.txt").replace("pid 0", "pid 812"))
    f = one(audit_status.run(context(manifest=m), controls_of(m)))
    assert f.status == "drift" and "enabled is 0, expected 1" in f.message


# -- journald.conf ---------------------------------------------------------------------------------------------


def test_journald_config(run: mock.MagicMock, tmp_path: Path) -> None:
    run.return_value = result(data("journald_config/nixos-with-dropin.txt"))
    m = manifest(
        {
            "logging.persistent": control("journald_config", {"Storage": "persistent", "Compress": True}),
            "logging.retention": control(
                "journald_config", {"MaxRetentionSec": "6month", "SystemMaxUse": "1G"}
            ),
            "logging.seal": control("journald_config", {"Seal": "yes"}),
        }
    )
    by_id = {f.control_ids[0]: f for f in journald_config.run(context(tmp_path, manifest=m), controls_of(m))}
    assert argv_of(run.call_args) == [
        "systemd-analyze",
        f"--root={tmp_path}",
        "cat-config",
        "systemd/journald.conf",
    ]
    assert by_id["logging.persistent"].status == "pass"
    assert by_id["logging.retention"].status == "drift"  # the drop-in says 1year
    assert "MaxRetentionSec=1year, expected 6month" in by_id["logging.retention"].message
    assert by_id["logging.seal"].status == "drift" and "not set" in by_id["logging.seal"].message


def test_journald_config_at_real_root_has_no_root_option(run: mock.MagicMock) -> None:
    run.return_value = result(data("journald_config/nixos-with-dropin.txt"))
    m = manifest({"logging.persistent": control("journald_config", {"Storage": "persistent"})})
    journald_config.run(context(manifest=m), controls_of(m))
    assert argv_of(run.call_args) == ["systemd-analyze", "cat-config", "systemd/journald.conf"]


# -- firewall --------------------------------------------------------------------------------------------------


def test_firewall_nft_pass_and_recorded_hash(run: mock.MagicMock) -> None:
    text = data("firewall/nixos.json")
    run.return_value = result(text)
    m = manifest(
        {
            "net.firewall": control(
                "firewall",
                {"enabled": True, "input_policy": "drop", "log_refused": True},
                remediation="RB-FIREWALL-001",
            )
        }
    )
    gen = GenerationStatus(
        "a" * 40, "a" * 40, firewall_ruleset_hash=firewall.ruleset_hash(data("firewall/nixos-tempports.json"))
    )
    f = one(firewall.run(context(manifest=m, generation=gen), controls_of(m)))
    assert argv_of(run.call_args) == ["nft", "-j", "list", "ruleset"]
    # a port opened by hand in temp-ports (nixos-firewall-tool) is not the generation's
    assert f.status == "drift" and "differs from the one recorded" in f.message
    gen = GenerationStatus("a" * 40, "a" * 40, firewall_ruleset_hash=firewall.ruleset_hash(text))
    f = one(firewall.run(context(manifest=m, generation=gen), controls_of(m)))
    assert f.status == "pass", f.message
    assert f.observed["ruleset_hash"] == f.expected["ruleset_hash"]


def test_firewall_hand_added_rule_is_drift(run: mock.MagicMock) -> None:
    run.return_value = result(data("firewall/nixos-handadded.json"))
    m = manifest(
        {"net.firewall": control("firewall", {"input_policy": "drop"}, remediation="RB-FIREWALL-001")}
    )
    gen = GenerationStatus(
        "a" * 40, "a" * 40, firewall_ruleset_hash=firewall.ruleset_hash(data("firewall/nixos.json"))
    )
    f = one(firewall.run(context(manifest=m, generation=gen), controls_of(m)))
    assert f.status == "drift" and f.recommended_runbook == "RB-FIREWALL-001"
    assert f.runbook_params == {"unit": "nftables.service"}


def test_firewall_open_ruleset(run: mock.MagicMock) -> None:
    run.return_value = result(data("firewall/open.json"))
    f = one(firewall.run(context(), {}))  # the check on its own: enabled, policy drop
    assert f.status == "drift" and "input policy is accept, expected drop" in f.message
    assert f.control_ids == [] and f.severity == "high" and f.recommended_runbook == "RB-FIREWALL-001"


def test_firewall_iptables(run: mock.MagicMock) -> None:
    run.return_value = result(data("firewall/ipt-nixos.txt"))
    m = manifest(
        {"net.firewall": control("firewall", {"enabled": True, "input_policy": "drop", "log_refused": True})}
    )
    f = one(firewall.run(context(manifest=m, config={"firewall": {"backend": "iptables"}}), controls_of(m)))
    assert argv_of(run.call_args) == ["iptables-save"]
    assert f.status == "pass" and f.runbook_params == {"unit": "firewall.service"}


def test_firewall_not_root(run: mock.MagicMock) -> None:
    run.side_effect = CommandError(["nft"], returncode=1, stderr=data("firewall/not-permitted.stderr"))
    f = one(firewall.run(context(), {}))
    assert f.status == "error" and "Operation not permitted" in f.message


# -- encryption ----------------------------------------------------------------------------------------------


def test_encryption_luks_root_and_data(run: mock.MagicMock) -> None:
    run.side_effect = [
        result(data("encryption/lsblk-luks-lvm.json")),
        result(data("encryption/cryptsetup-status-cryptlvm.txt")),
    ]
    m = manifest(
        {
            "crypto.at-rest": control(
                "encryption", {"root_on_luks": True, "data_on_luks": True}, severity="critical"
            )
        }
    )
    ctx = context(manifest=m, config={"encryption": {"data_mounts": ["/var/lib/ehr"]}})
    f = one(encryption.run(ctx, controls_of(m)))
    assert [argv_of(c) for c in run.call_args_list] == [
        ["lsblk", "-J", "-o", "NAME,TYPE,FSTYPE,MOUNTPOINTS,PKNAME"],
        ["cryptsetup", "status", "cryptlvm"],
    ]
    assert f.status == "pass", f.message
    assert f.observed["/var/lib/ehr"]["path"] == ["sda", "sda2", "cryptlvm", "vg-data"]
    assert f.observed["/"]["luks_type"] == "LUKS2"


def test_encryption_plain_data_mount_and_unencrypted_vm(run: mock.MagicMock) -> None:
    run.side_effect = [
        result(data("encryption/lsblk-luks-root.json")),
        result(data("encryption/cryptsetup-status-cryptroot.txt")),
    ]
    m = manifest({"crypto.at-rest": control("encryption", {"mounts_on_luks": ["/", "/srv/imaging"]})})
    f = one(encryption.run(context(manifest=m), controls_of(m)))
    assert (
        f.status == "drift"
        and "/srv/imaging (sda > sda1)" in f.message
        and f.recommended_runbook == "RB-DRIFT-001"
    )
    run.side_effect = [result(data("encryption/lsblk-this-vm.json"))]
    f = one(encryption.run(context(), {}))
    assert f.status == "drift" and f.recommended_runbook is None  # the check's own: a human's job


def test_encryption_plain_dm_crypt_is_not_luks(run: mock.MagicMock) -> None:
    run.side_effect = [
        result(data("encryption/lsblk-old-mountpoint.json")),
        result(data("encryption/cryptsetup-status-plain.txt")),
    ]
    f = one(encryption.run(context(), {}))
    assert f.status == "drift" and f.observed["/"]["luks_type"] == "PLAIN"


def test_encryption_root_not_a_block_device_is_an_error(run: mock.MagicMock) -> None:
    run.side_effect = [result('{"blockdevices": []}')]
    f = one(encryption.run(context(), {}))
    assert f.status == "error" and "not mounted from a block device" in f.message


# -- time sync -----------------------------------------------------------------------------------------------


def test_time_sync_chrony(run: mock.MagicMock) -> None:
    run.return_value = result(data("time_sync/chrony-synced.csv"))
    ctx = context(config={"time": {"chronyc_host": "127.0.0.1", "chronyc_port": 11124}})
    f = one(time_sync.run(ctx, {}))
    assert argv_of(run.call_args) == ["chronyc", "-h", "127.0.0.1", "-p", "11124", "-c", "tracking"]
    assert f.status == "pass" and f.observed["stratum"] == 9
    run.return_value = result(data("time_sync/chrony-offset-120s.csv"))
    f = one(time_sync.run(ctx, {}))
    assert f.status == "drift" and "120.512 s exceeds 90 s" in f.message
    assert f.recommended_runbook == "RB-TIMESYNC-001" and f.runbook_params == {"unit": "chronyd.service"}
    run.return_value = result(data("time_sync/chrony-unsynced.csv"))
    f = one(time_sync.run(ctx, {}))
    assert f.status == "drift" and "Not synchronised" in f.message


def test_time_sync_timesyncd(run: mock.MagicMock) -> None:
    run.return_value = result(data("time_sync/timedatectl-synced.txt"))
    ctx = context(config={"time": {"source": "timesyncd"}})
    f = one(time_sync.run(ctx, {}))
    assert argv_of(run.call_args) == ["timedatectl", "show"]
    assert f.status == "pass" and "does not report its offset" in f.message
    run.return_value = result(data("time_sync/timedatectl-unsynced.txt"))
    f = one(time_sync.run(ctx, {}))
    assert f.status == "drift" and f.runbook_params == {"unit": "systemd-timesyncd.service"}


def test_time_sync_no_daemon(run: mock.MagicMock) -> None:
    run.side_effect = CommandError(
        ["chronyc"], returncode=1, stdout=data("time_sync/chrony-no-daemon.stdout")
    )
    f = one(time_sync.run(context(), {}))
    assert f.status == "error" and f.outputs["stdout"].startswith("506")


# -- backups -------------------------------------------------------------------------------------------------


def test_backup_restic(run: mock.MagicMock, tmp_path: Path) -> None:
    write(tmp_path, "/run/keys/restic", "pw\n")
    write(
        tmp_path,
        "/etc/nixcomply/restic.env",
        "# object store\nAWS_ACCESS_KEY_ID=AKIA\nexport AWS_SECRET_ACCESS_KEY='s e c'\n",
    )
    run.return_value = result(data("backup/restic-latest.json"))
    cfg = {
        "backup": {
            "kind": "restic",
            "repository": "s3:https://store.example/clinic",
            "password_file": "/run/keys/restic",
            "environment_file": "/etc/nixcomply/restic.env",
            "unit": "restic-backups-clinic.service",
        }
    }
    ctx = context(tmp_path, config=cfg, now=datetime(2026, 11, 24, 2, 0, tzinfo=UTC))
    f = one(backup.run(ctx, {}))
    assert argv_of(run.call_args) == [
        "restic",
        "-r",
        "s3:https://store.example/clinic",
        "--password-file",
        str(tmp_path / "run/keys/restic"),
        "snapshots",
        "--json",
        "--latest",
        "1",
        "--no-lock",
    ]
    assert run.call_args.kwargs["extra_env"] == {
        "AWS_ACCESS_KEY_ID": "AKIA",
        "AWS_SECRET_ACCESS_KEY": "s e c",
    }
    assert run.call_args.kwargs["timeout"] == 120
    assert f.status == "pass" and f.observed["age_hours"] == pytest.approx(13.44, abs=0.01)
    f = one(backup.run(context(tmp_path, config=cfg, now=datetime(2026, 11, 25, 2, 0, tzinfo=UTC)), {}))
    assert f.status == "drift" and f.recommended_runbook == "RB-BACKUP-001"
    assert f.runbook_params == {"unit": "restic-backups-clinic.service"}
    run.return_value = result(data("backup/restic-no-snapshots.json"))
    f = one(backup.run(ctx, {}))
    assert f.status == "drift" and "no backup found" in f.message


def test_backup_restic_wrong_password_is_an_error(run: mock.MagicMock, tmp_path: Path) -> None:
    run.side_effect = CommandError(
        ["restic"], returncode=1, stderr=data("backup/restic-wrong-password.stderr")
    )
    cfg = {"backup": {"kind": "restic", "repository": "/srv/restic", "password_file": "/run/keys/restic"}}
    f = one(backup.run(context(tmp_path, config=cfg), {}))
    assert f.status == "error" and "wrong password" in f.message


def test_backup_borg(run: mock.MagicMock, tmp_path: Path) -> None:
    run.return_value = result(data("backup/borg-latest.json"))
    cfg = {
        "backup": {
            "kind": "borg",
            "repository": "ssh://backup@nas/./clinic",
            "password_file": "/run/keys/borg pass",
        }
    }
    f = one(backup.run(context(tmp_path, config=cfg), {}))
    assert argv_of(run.call_args) == ["borg", "list", "--json", "--last", "1", "ssh://backup@nas/./clinic"]
    assert run.call_args.kwargs["extra_env"] == {
        "TZ": "UTC",
        "BORG_PASSCOMMAND": f"cat '{tmp_path}/run/keys/borg pass'",
    }
    assert f.status == "pass"


def test_backup_timestamp(tmp_path: Path) -> None:
    f = one(backup.run(context(tmp_path), {}))
    assert f.status == "drift" and "no backup found" in f.message
    write(tmp_path, "/var/lib/nixcomply/backup/last-success", data("backup/timestamp-iso.txt"))
    assert one(backup.run(context(tmp_path), {})).status == "pass"
    write(tmp_path, "/var/lib/nixcomply/backup/last-success", data("backup/timestamp-malformed.txt"))
    f = one(backup.run(context(tmp_path), {}))
    assert f.status == "error" and "not an ISO 8601 time" in f.message


def test_restore_test(tmp_path: Path) -> None:
    m = manifest(
        {"backup.restore-tested": control("restore_test", remediation="RB-RESTORE-001", severity="medium")}
    )
    ctx = context(tmp_path, manifest=m)
    f = one(restore_test.run(ctx, controls_of(m)))
    assert f.status == "drift" and f.runbook_params == {
        "restore_unit": "nixcomply-restore-test.service",
        "scratch": "/var/lib/nixcomply/restore-test/scratch",
        "sample": "/var/lib/nixcomply/restore-test/sample",
    }
    path = tmp_path / "var/lib/nixcomply/restore-test/result.json"
    restore_test.write_result(
        path, restore_test.RestoreTestResult(finished_at=NOW - timedelta(days=3), ok=True, files_compared=5)
    )
    assert one(restore_test.run(ctx, controls_of(m))).status == "pass"
    assert (
        one(
            restore_test.run(context(tmp_path, manifest=m, now=NOW + timedelta(days=30)), controls_of(m))
        ).status
        == "drift"
    )
    path.write_text(data("restore_test/result-failed.json"))
    f = one(restore_test.run(ctx, controls_of(m)))
    assert f.status == "drift" and "failed" in f.message
    path.write_text(data("restore_test/result-malformed.json"))
    assert one(restore_test.run(ctx, controls_of(m))).status == "error"
    restore_test.write_result(
        path, restore_test.RestoreTestResult(finished_at=NOW, ok=True, files_compared=0)
    )
    assert "compared no files" in one(restore_test.run(ctx, controls_of(m))).message


# -- systemd-based -------------------------------------------------------------------------------------------


def test_service_health_defaults_from_parameters() -> None:
    fs = FakeSystemd(
        {
            "sshd.service": FakeUnit("sshd.service"),
            "chronyd.service": FakeUnit("chronyd.service", n_restarts=7),
            "auditd.service": FakeUnit(
                "auditd.service", active_state="failed", sub_state="failed", result="exit-code"
            ),
        }
    )
    findings = service_health.run(context(systemd=fs, previous_restarts={"chronyd.service": 2}), {})
    by_unit = {f.subject: f for f in findings}
    assert [f.subject for f in findings] == ["auditd.service", "chronyd.service", "sshd.service"]
    assert (
        by_unit["auditd.service"].status == "drift"
        and by_unit["auditd.service"].message == "auditd.service is failed/failed (exit-code)"
    )
    assert (
        by_unit["chronyd.service"].status == "drift"
        and "restarted 5 times" in by_unit["chronyd.service"].message
    )
    assert by_unit["chronyd.service"].observed["n_restarts"] == 7
    assert by_unit["sshd.service"].status == "pass"


def test_service_health_unreadable_unit_and_no_systemd() -> None:
    findings = service_health.run(context(systemd=FakeSystemd()), {})
    assert len(findings) == 3 and all(f.status == "error" and "not found" in f.message for f in findings)
    findings = service_health.run(context(), {})
    assert {f.status for f in findings} == {"error"} and "systemd cannot be reached" in findings[0].message


def test_logging_canary(run: mock.MagicMock) -> None:
    fs = FakeSystemd(
        {
            "systemd-journald.service": FakeUnit("systemd-journald.service"),
            "auditd.service": FakeUnit("auditd.service"),
        }
    )
    written: list[str] = []

    def fake(argv: list[str], **kwargs: Any) -> Any:
        if argv[0] == "systemd-cat":
            written.append(kwargs["input"].strip())
            return result("", argv=argv)
        token = written[-1]
        entry = {"MESSAGE": token, "SYSLOG_IDENTIFIER": "nixcomply-canary"}
        return result(json.dumps(entry) + "\n", argv=argv)

    run.side_effect = fake
    f = one(log_continuity.run(context(systemd=fs), {}))
    assert f.status == "pass", f.message
    write_call, read_call = run.call_args_list
    assert argv_of(write_call) == ["systemd-cat", "-t", "nixcomply-canary", "-p", "notice"]
    assert argv_of(read_call)[:4] == ["journalctl", "-t", "nixcomply-canary", "--since"]
    assert argv_of(read_call)[4].startswith("@") and argv_of(read_call)[5:] == [
        "-o",
        "json",
        "--no-pager",
        "-q",
    ]


def test_logging_canary_refused_or_lost(run: mock.MagicMock) -> None:
    fs = FakeSystemd(
        {
            "systemd-journald.service": FakeUnit("systemd-journald.service"),
            "auditd.service": FakeUnit("auditd.service"),
        }
    )
    run.side_effect = CommandError(
        ["systemd-cat"], returncode=1, stderr=data("logging/systemd-cat-no-journald.stderr")
    )
    f = one(log_continuity.run(context(systemd=fs), {}))
    assert f.status == "drift" and "Failed to create stream fd" in f.message
    assert f.runbook_params == {"unit": "systemd-journald.service"}
    run.side_effect = None
    run.reset_mock()
    run.return_value = result(data("logging/canary-absent.json"))
    ctx = context(systemd=fs, config={"logging": {"read_attempts": 2, "read_interval_seconds": 0.01}})
    f = one(log_continuity.run(ctx, {}))
    assert f.status == "drift" and "not found in the journal after 2" in f.message
    assert run.call_count == 3  # one write, two reads


def test_logging_auditd_down() -> None:
    fs = FakeSystemd(
        {
            "systemd-journald.service": FakeUnit("systemd-journald.service"),
            "auditd.service": FakeUnit("auditd.service", active_state="inactive", sub_state="dead"),
        }
    )
    with mock.patch("nixcomply.core.process.run", autospec=True, return_value=result("")):
        f = one(log_continuity.run(context(systemd=fs, config={"logging": {"read_attempts": 1}}), {}))
    assert f.status == "drift" and f.runbook_params == {"unit": "auditd.service"}


def test_logging_tool_missing_is_an_error(run: mock.MagicMock) -> None:
    fs = FakeSystemd(
        {
            "systemd-journald.service": FakeUnit("systemd-journald.service"),
            "auditd.service": FakeUnit("auditd.service"),
        }
    )
    run.side_effect = CommandNotFoundError(["systemd-cat"], returncode=None, reason="could not be started")
    assert one(log_continuity.run(context(systemd=fs), {})).status == "error"


def test_av_edr(tmp_path: Path) -> None:
    sigs = tmp_path / "var/lib/clamav"
    sigs.mkdir(parents=True)
    for name, days in (("main.cvd", 40), ("daily.cld", 2), ("bytecode.cvd", 9)):
        path = sigs / name
        path.write_bytes(b"x")
        stamp = (NOW - timedelta(days=days)).timestamp()
        os.utime(path, (stamp, stamp))
    units = {u: FakeUnit(u) for u in ("clamav-daemon.service", "clamav-freshclam.service")}
    f = one(av_edr.run(context(tmp_path, systemd=FakeSystemd(units)), {}))
    assert f.status == "pass" and f.observed["newest_signature"] == "daily.cld"
    f = one(av_edr.run(context(tmp_path, systemd=FakeSystemd(units), now=NOW + timedelta(days=6)), {}))
    assert f.status == "drift" and f.runbook_params == {"unit": "clamav-freshclam.service"}
    units["clamav-daemon.service"] = FakeUnit(
        "clamav-daemon.service", active_state="inactive", sub_state="dead"
    )
    f = one(av_edr.run(context(tmp_path, systemd=FakeSystemd(units)), {}))
    assert f.status == "drift" and f.runbook_params == {"unit": "clamav-daemon.service"}
    f = one(av_edr.run(context(tmp_path, config={"antivirus": {"units": []}}), {}))
    assert f.status == "skipped" and "no antivirus" in f.message


def test_disk_usage(tmp_path: Path) -> None:
    for d in ("nix", "var"):
        (tmp_path / d).mkdir()
    findings = disk_usage.run(context(tmp_path), {})
    assert [f.subject for f in findings] == ["/", "/nix", "/var"]
    st = os.statvfs(tmp_path)
    used = st.f_blocks - st.f_bfree
    expected = -(-used * 1000 // (used + st.f_bavail)) / 10
    assert findings[0].observed["used_percent"] == expected
    assert findings[0].status == ("drift" if expected > 85 else "pass")
    assert findings[0].runbook_params == {"path": "/"}
    m = manifest(
        {"disk.space": control("disk_usage", {"mounts": ["/missing"]})},
        parameters={**context().parameters.model_dump(), "disk_usage_max_percent": 1},
    )
    f = one(disk_usage.run(context(tmp_path, manifest=m), controls_of(m)))
    assert f.status == "error" and "/missing" in f.message


def test_disk_usage_arithmetic_like_df() -> None:
    st = os.statvfs_result((4096, 4096, 1000, 100, 50, 10, 5, 5, 0, 255))
    usage = disk_usage.usage_of(st)
    assert usage.percent == 94.8  # used 900 / (900 + 50), rounded up like df
    assert usage.inodes_percent == 50.0


# -- exceptions, config_value, generation, patch_age ---------------------------------------------------------


def test_exceptions() -> None:
    exc = {"justification": "j", "approvedBy": "so@clinic", "ticket": "SEC-1"}
    m = manifest(
        {
            "ssh.password-auth-disabled": control("sshd_effective", status="excepted"),
            "av.running": control("av_edr", status="excepted"),
            "crypto.root": control("encryption", status="excepted"),
            "governance.exceptions": control("exceptions", severity="medium", remediation="RB-DRIFT-001"),
        },
        exceptions={
            "ssh.password-auth-disabled": {**exc, "expires": "2026-11-20"},
            "av.running": {**exc, "expires": "2026-12-01"},
            "crypto.root": {**exc, "expires": "2027-06-01"},
        },
    )
    attest = AttestationSummary(
        "workforce-training", "annual HIPAA training", date(2026, 11, 22), ("people.training",)
    )
    findings = exceptions.run(
        context(manifest=m, attestations=(attest,)),
        {"governance.exceptions": m.controls["governance.exceptions"]},
    )
    by = {f.subject: f for f in findings}
    expired = by["exception:ssh.password-auth-disabled"]
    assert expired.status == "drift" and expired.severity == "high" and expired.recommended_runbook is None
    assert expired.control_ids == ["governance.exceptions", "ssh.password-auth-disabled"]
    assert "expired on 2026-11-20" in expired.message
    soon = by["exception:av.running"]
    assert soon.status == "drift" and soon.severity == "low" and "in 8 d" in soon.message
    assert by["exception:crypto.root"].status == "pass"
    assert by["attestation:workforce-training"].status == "drift"
    assert one(exceptions.run(context(manifest=manifest({})), {})).status == "pass"


def test_config_value() -> None:
    settings = {"security.pam.services.passwd.rules.password.pwquality.settings.minlen": 14}
    m = manifest(
        {
            "auth.password-quality": control("config_value", settings=settings),
            "auth.nothing": control("config_value"),
        }
    )
    by = {f.control_ids[0]: f for f in config_value.run(context(manifest=m), controls_of(m))}
    assert by["auth.password-quality"].status == "pass"
    assert by["auth.password-quality"].message.startswith("configuration evidence only")
    assert by["auth.nothing"].status == "error"
    assert one(config_value.run(context(), {})).status == "skipped"


def test_generation_from_the_reconciler() -> None:
    rev, other = "b" * 40, "c" * 40
    approved = GenerationStatus(
        rev, rev, current_system=Path("/nix/store/a"), booted_system=Path("/nix/store/b")
    )
    f = one(generation.run(context(generation=approved), {}))
    assert f.status == "pass" and "reboot pending" in f.message
    pending = GenerationStatus(other, rev, approved_since=NOW - timedelta(hours=2))
    assert one(generation.run(context(generation=pending), {})).status == "pass"
    late = GenerationStatus(other, rev, approved_since=NOW - timedelta(hours=30))
    f = one(generation.run(context(generation=late), {}))
    assert f.status == "drift" and f.recommended_runbook == "RB-DRIFT-001" and "for 30 h" in f.message
    f = one(generation.run(context(generation=GenerationStatus(None, rev)), {}))
    assert f.status == "drift" and "no configurationRevision" in f.message


def test_generation_and_patch_age_read_the_running_system(run: mock.MagicMock, tmp_path: Path) -> None:
    store = tmp_path / "store-system"
    store.mkdir()
    (tmp_path / "run").mkdir()
    (tmp_path / "run/current-system").symlink_to(store)
    run.return_value = result(data("patch_age/nixos-version.json"))
    f = one(generation.run(context(tmp_path), {}))
    assert argv_of(run.call_args) == [str(tmp_path / "run/current-system/sw/bin/nixos-version"), "--json"]
    assert (
        f.status == "skipped" and f.observed["running_revision"] == "b5158a63950af23bbaca061203fe1e663990ebd5"
    )
    f = one(patch_age.run(context(tmp_path, now=datetime(2026, 8, 25, tzinfo=UTC)), {}))
    assert f.status == "pass" and f.observed["age_days"] == 6
    f = one(patch_age.run(context(tmp_path), {}))
    assert f.status == "drift" and f.observed["age_days"] == 96 and f.recommended_runbook is None
    run.return_value = result(data("patch_age/nixos-version-nodate.json"))
    assert one(patch_age.run(context(tmp_path), {})).status == "error"


def test_generation_without_a_nixos_system(tmp_path: Path) -> None:
    f = one(generation.run(context(tmp_path), {}))
    assert f.status == "error" and "not a NixOS system" in f.message


# -- sudo, nix, file_content -------------------------------------------------------------------------------------


def sudo_root(tmp_path: Path, sudoers: str, mode: int, gid: int) -> None:
    write(tmp_path, "/etc/sudoers", sudoers)
    write(tmp_path, "/etc/group", f"root:x:0:\nwheel:x:{gid}:alice\n")
    wrapper = write(tmp_path, "/run/wrappers/bin/sudo", "")
    if os.geteuid() == 0:
        os.chown(wrapper, -1, gid)
    wrapper.chmod(mode)


def test_sudo_config(tmp_path: Path) -> None:
    gid = 1 if os.geteuid() == 0 else os.getegid()
    sudo_root(tmp_path, data("sudo_config/sudoers-nixos"), 0o4510, gid)
    m = manifest(
        {"access.sudo": control("sudo_config", {"wheel_requires_password": True, "exec_wheel_only": True})}
    )
    f = one(sudo_config.run(context(tmp_path, manifest=m), controls_of(m)))
    assert f.observed["wrapper"]["mode"] == "4510"
    assert f.status == "pass", f.message
    (tmp_path / "run/wrappers/bin/sudo").chmod(0o4511)
    f = one(sudo_config.run(context(tmp_path, manifest=m), controls_of(m)))
    assert f.status == "drift" and "mode 4511" in f.message
    sudo_root(tmp_path, data("sudo_config/sudoers-nixos-extrarule"), 0o4510, gid)
    f = one(sudo_config.run(context(tmp_path, manifest=m), controls_of(m)))
    assert f.status == "drift" and "without a password" in f.message and "nixos-rebuild" in f.message


def test_sudo_config_follows_includedir(tmp_path: Path) -> None:
    write(tmp_path, "/etc/sudoers", data("sudo_config/sudoers-includedir"))
    write(tmp_path, "/etc/sudoers.d/admins", data("sudo_config/sudoers.d-admins"))
    write(tmp_path, "/etc/sudoers.d/README.txt", "ignored: has a dot\n")
    m = manifest({"access.sudo": control("sudo_config", {"wheel_requires_password": True})})
    f = one(sudo_config.run(context(tmp_path, manifest=m), controls_of(m)))
    assert f.status == "drift" and f.observed["files"] == ["/etc/sudoers", "/etc/sudoers.d/admins"]
    assert one(sudo_config.run(context(tmp_path / "nothing", manifest=m), controls_of(m))).status == "skipped"


def test_nix_config_falls_back_to_show_config(run: mock.MagicMock) -> None:
    run.side_effect = [
        CommandError(["nix"], returncode=1, stderr=data("nix_config/nix-2.8-config-show.stderr")),
        result(data("nix_config/nix-2.8-show-config.json")),
    ]
    m = manifest(
        {
            "nix.hardening": control(
                "nix_config", {"sandbox": True, "allowed-users": ["@wheel"], "require-sigs": "true"}
            )
        }
    )
    f = one(nix_config.run(context(manifest=m), controls_of(m)))
    assert [argv_of(c) for c in run.call_args_list] == [
        ["nix", "--extra-experimental-features", "nix-command", "config", "show", "--json"],
        ["nix", "--extra-experimental-features", "nix-command", "show-config", "--json"],
    ]
    assert f.status == "pass", f.message
    run.side_effect = [result(data("nix_config/nix-config-show-newer.json"))]
    m = manifest({"nix.trust": control("nix_config", {"trusted-users": ["root"]})})
    f = one(nix_config.run(context(manifest=m), controls_of(m)))
    assert run.call_count == 3 and f.status == "drift" and "trusted-users" in f.message


def test_nix_config_other_failure_is_not_retried(run: mock.MagicMock) -> None:
    run.side_effect = CommandError(["nix"], returncode=1, stderr="error: cannot connect to daemon")
    m = manifest({"nix.hardening": control("nix_config", {"sandbox": True})})
    assert one(nix_config.run(context(manifest=m), controls_of(m))).status == "error"
    assert run.call_count == 1


def test_file_content(tmp_path: Path) -> None:
    write(tmp_path, "/etc/issue", "Authorized use only. Activity is monitored.\n")
    m = manifest(
        {
            "banner.issue": control(
                "file_content", {"path": "/etc/issue", "contains": "Authorized use only"}
            ),
            "banner.exact": control("file_content", {"path": "/etc/issue", "equals": "Welcome"}),
            "legacy.rhosts": control("file_content", {"path": "/root/.rhosts", "exists": False}),
            "bad.path": control("file_content", {"path": "../etc/shadow", "contains": "x"}),
        }
    )
    by = {f.control_ids[0]: f for f in file_content.run(context(tmp_path, manifest=m), controls_of(m))}
    assert by["banner.issue"].status == "pass" and "sha256" in by["banner.issue"].observed
    assert by["banner.exact"].status == "drift"
    assert by["legacy.rhosts"].status == "pass"
    assert by["bad.path"].status == "error"
