"""Parser unit tests: real tool outputs from tests/data/checks (see its README), plus malformed
and empty outputs, which must raise ValueError (an error finding), never parse as a pass."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from fixtures_checks import data

from nixcomply.checks import (
    audit_rules,
    audit_status,
    backup,
    encryption,
    firewall,
    journald_config,
    kernel_modules,
    log_continuity,
    nix_config,
    patch_age,
    restore_test,
    sshd_effective,
    sudo_config,
    sysctl,
    time_sync,
)

# -- sshd -T ---------------------------------------------------------------------------------


def test_sshd_t_hardened() -> None:
    s = sshd_effective.parse_sshd_t(data("sshd_effective/hardened.txt"))
    assert s["passwordauthentication"] == ["no"]
    assert s["permitrootlogin"] == ["no"]
    assert s["loglevel"] == ["VERBOSE"]
    assert s["allowgroups"] == ["wheel", "ssh-users"]
    assert s["hostkey"] == ["/etc/ssh/ssh_host_ed25519", "/etc/ssh/ssh_host_rsa"]
    assert s["ciphers"][0].startswith("chacha20-poly1305@openssh.com,aes256-gcm@openssh.com")


def test_sshd_t_match_block_applies_with_connection_spec() -> None:
    s = sshd_effective.parse_sshd_t(data("sshd_effective/hardened-match-backup.txt"))
    assert s["passwordauthentication"] == ["yes"]


def test_sshd_t_weak() -> None:
    s = sshd_effective.parse_sshd_t(data("sshd_effective/weak.txt"))
    assert s["passwordauthentication"] == ["yes"]
    assert s["permitrootlogin"] == ["yes"]
    assert s["ciphers"] == ["aes128-ctr,chacha20-poly1305@openssh.com"]


@pytest.mark.parametrize(
    "name", ["sshd_effective/malformed.txt", "sshd_effective/empty.txt", "sshd_effective/bad-keyword.stderr"]
)
def test_sshd_t_rejects(name: str) -> None:
    with pytest.raises(ValueError):
        sshd_effective.parse_sshd_t(data(name))


def test_sshd_lists_compare_in_order_and_values_case_insensitively() -> None:
    assert sshd_effective.matches(["a,b"], ["a", "b"])
    assert not sshd_effective.matches(["a,b"], ["b", "a"])
    assert sshd_effective.matches(["wheel", "ssh-users"], ["ssh-users", "wheel"])
    assert sshd_effective.matches(["VERBOSE"], "verbose")
    assert not sshd_effective.matches(["/etc/Issue"], "/etc/issue")


# -- sysctl ----------------------------------------------------------------------------------


def test_sysctl_value_and_key_paths() -> None:
    assert sysctl.parse_value(data("sysctl/proc/sys/net/ipv4/tcp_rmem")) == "4096 131072 33554432"
    assert sysctl.parse_value(data("sysctl/proc/sys/kernel/dmesg_restrict")) == "1"
    assert str(sysctl.key_path("net.ipv4.conf.all.rp_filter")) == "net/ipv4/conf/all/rp_filter"
    assert str(sysctl.key_path("net/ipv4/conf/eth0.100/rp_filter")) == "net/ipv4/conf/eth0.100/rp_filter"
    assert sysctl.expected_text(True) == "1"
    assert sysctl.expected_text([4096, 131072, 33554432]) == "4096 131072 33554432"


@pytest.mark.parametrize("key", ["../etc/passwd", "a..b", "", "kernel.foo bar"])
def test_sysctl_rejects_bad_keys(key: str) -> None:
    with pytest.raises(ValueError):
        sysctl.key_path(key)


def test_sysctl_empty_value_is_an_error() -> None:
    with pytest.raises(ValueError):
        sysctl.parse_value("\n")


# -- modprobe.d and /proc/modules ----------------------------------------------------------------


def test_modprobe_conf() -> None:
    conf = kernel_modules.parse_modprobe_conf(data("kernel_modules/nixos.conf"))
    assert conf.blacklisted == {"cramfs", "freevxfs", "dccp", "sctp", "firewire_core"}
    # install with false/true disables; an install that runs modprobe does not
    assert conf.install_disabled == {"usb_storage", "jffs2"}
    assert "rds" not in conf.disabled


def test_modprobe_conf_malformed() -> None:
    with pytest.raises(ValueError, match="line 2"):
        kernel_modules.parse_modprobe_conf(data("kernel_modules/malformed.conf"))


def test_proc_modules() -> None:
    loaded = kernel_modules.parse_proc_modules(data("kernel_modules/proc-modules.txt"))
    assert loaded == {"nf_tables", "usb_storage", "dm_crypt", "nvidia"}
    assert kernel_modules.parse_proc_modules("") == frozenset()  # nothing loaded is valid
    with pytest.raises(ValueError):
        kernel_modules.parse_proc_modules(data("kernel_modules/proc-modules-malformed.txt"))


# -- auditctl ----------------------------------------------------------------------------------


def test_auditctl_list() -> None:
    rules = audit_rules.parse_auditctl_list(data("audit_rules/hipaa.txt"))
    assert len(rules.rules) == 11
    assert rules.keys == {
        "identity",
        "scope",
        "logins",
        "exec",
        "time-change",
        "delete",
        "modules",
        "access",
        "mounts",
    }
    none = audit_rules.parse_auditctl_list(data("audit_rules/no-rules.txt"))
    assert none.rules == () and none.keys == frozenset()


@pytest.mark.parametrize("name", ["audit_rules/malformed.txt", "audit_rules/empty.txt"])
def test_auditctl_list_rejects(name: str) -> None:
    with pytest.raises(ValueError):
        audit_rules.parse_auditctl_list(data(name))


def test_auditctl_status() -> None:
    off = audit_status.parse_auditctl_status(data("audit_status/disabled.txt"))
    assert off["enabled"] == 0 and off["failure"] == 1 and off["pid"] == 0
    assert off["loginuid_immutable"] == 0
    on = audit_status.parse_auditctl_status(data("audit_status/enabled-no-daemon.txt"))
    assert on["enabled"] == 1


@pytest.mark.parametrize(
    "name", ["audit_status/malformed.txt", "audit_status/empty.txt", "audit_status/not-permitted.stderr"]
)
def test_auditctl_status_rejects(name: str) -> None:
    with pytest.raises(ValueError):
        audit_status.parse_auditctl_status(data(name))


# -- journald.conf ---------------------------------------------------------------------------------


def test_cat_config_last_value_wins_across_dropins() -> None:
    config = journald_config.parse_cat_config(data("journald_config/nixos-with-dropin.txt"))
    assert config.settings["Storage"] == "persistent"
    assert config.settings["MaxRetentionSec"] == "1year"
    assert config.settings["ForwardToSyslog"] == "yes"
    assert config.files == (
        "/etc/systemd/journald.conf",
        "/etc/systemd/journald.conf.d/50-site.conf",
    )


def test_cat_config_defaults_only() -> None:
    assert journald_config.parse_cat_config(data("journald_config/debian-default.txt")).settings == {}
    assert journald_config.parse_cat_config(data("journald_config/not-found.txt")).settings == {}


@pytest.mark.parametrize("name", ["journald_config/malformed.txt", "journald_config/empty.txt"])
def test_cat_config_rejects(name: str) -> None:
    with pytest.raises(ValueError):
        journald_config.parse_cat_config(data(name))


def test_journald_booleans_compare_as_booleans() -> None:
    assert journald_config.same_value("true", "yes")
    assert not journald_config.same_value("no", "yes")
    assert not journald_config.same_value("1G", "2G")


# -- firewall --------------------------------------------------------------------------------------


def test_nft_nixos_firewall() -> None:
    rules = firewall.parse_nft_json(data("firewall/nixos.json"))
    assert rules.enabled and rules.input_policy == "drop" and rules.log_refused
    assert rules.input_chains == ("inet nixos-fw input",)


def test_nft_open_ruleset() -> None:
    rules = firewall.parse_nft_json(data("firewall/open.json"))
    assert rules.enabled and rules.input_policy == "accept" and not rules.log_refused


def test_nft_empty_ruleset() -> None:
    rules = firewall.parse_nft_json(data("firewall/empty.json"))
    assert not rules.enabled and rules.input_policy == "none"


def test_nft_hash_ignores_counters_handles_and_set_contents_order() -> None:
    assert firewall.ruleset_hash(data("firewall/counters-0.json")) == firewall.ruleset_hash(
        data("firewall/counters-1.json")
    )
    assert data("firewall/counters-0.json") != data("firewall/counters-1.json")
    nixos = firewall.ruleset_hash(data("firewall/nixos.json"))
    assert nixos != firewall.ruleset_hash(data("firewall/nixos-handadded.json"))
    assert nixos != firewall.ruleset_hash(data("firewall/open.json"))
    assert nixos.startswith("sha256:") and len(nixos) == 7 + 64


def test_text_ruleset_hash_ignores_handles_and_counters() -> None:
    assert firewall.ruleset_hash(data("firewall/nixos.txt")) == firewall.ruleset_hash(
        data("firewall/nixos-handles.txt")
    )
    assert firewall.ruleset_hash(data("firewall/ipt-nixos.txt")) == firewall.ruleset_hash(
        data("firewall/ipt-nixos-counters.txt")
    )


@pytest.mark.parametrize(
    "name",
    ["firewall/malformed-truncated.json", "firewall/empty-output.json", "firewall/not-permitted.stderr"],
)
def test_nft_rejects(name: str) -> None:
    with pytest.raises(ValueError):
        firewall.parse_nft_json(data(name))


def test_iptables_nixos_firewall_follows_unconditional_jumps() -> None:
    rules = firewall.parse_iptables_save(data("firewall/ipt-nixos.txt"))
    assert rules.enabled and rules.input_policy == "drop" and rules.log_refused
    counted = firewall.parse_iptables_save(data("firewall/ipt-nixos-counters.txt"))
    assert counted.input_policy == "drop"


def test_iptables_empty() -> None:
    rules = firewall.parse_iptables_save(data("firewall/ipt-empty.txt"))
    assert not rules.enabled and rules.input_policy == "accept"
    assert firewall.parse_iptables_save("").input_policy == "none"  # no table loaded at all


def test_iptables_rejects_truncated_output() -> None:
    with pytest.raises(ValueError, match="COMMIT"):
        firewall.parse_iptables_save(data("firewall/ipt-malformed.txt"))


# -- lsblk / cryptsetup ----------------------------------------------------------------------------


def test_lsblk_unencrypted_vm() -> None:
    devices = encryption.parse_lsblk(data("encryption/lsblk-this-vm.json"))
    root = [d for d in devices if "/" in d.mountpoints]
    assert [d.name for d in root] == ["vda"] and root[0].crypt_ancestor is None


def test_lsblk_luks_root_and_lvm() -> None:
    devices = {d.name: d for d in encryption.parse_lsblk(data("encryption/lsblk-luks-root.json"))}
    assert devices["cryptroot"].crypt_ancestor == "cryptroot"
    assert devices["cryptroot"].ancestors == ("nvme0n1", "nvme0n1p2")
    assert devices["cryptroot"].mountpoints == ("/nix/store", "/")
    assert devices["sda1"].crypt_ancestor is None
    lvm = {d.name: d for d in encryption.parse_lsblk(data("encryption/lsblk-luks-lvm.json"))}
    assert lvm["vg-data"].crypt_ancestor == "cryptlvm" and lvm["vg-data"].mountpoints == ("/var/lib/ehr",)
    old = {d.name: d for d in encryption.parse_lsblk(data("encryption/lsblk-old-mountpoint.json"))}
    assert old["root"].mountpoints == ("/",) and old["root"].crypt_ancestor == "root"


@pytest.mark.parametrize("name", ["encryption/lsblk-malformed.json", "encryption/lsblk-empty.json"])
def test_lsblk_rejects(name: str) -> None:
    with pytest.raises(ValueError):
        encryption.parse_lsblk(data(name))


def test_cryptsetup_status() -> None:
    status = encryption.parse_cryptsetup_status(data("encryption/cryptsetup-status-cryptroot.txt"))
    assert status["state"] == "active" and status["type"] == "LUKS2"
    assert status["cipher"] == "aes-xts-plain64" and status["device"] == "/dev/nvme0n1p2"
    plain = encryption.parse_cryptsetup_status(data("encryption/cryptsetup-status-plain.txt"))
    assert plain["type"] == "PLAIN"


@pytest.mark.parametrize(
    "name", ["encryption/cryptsetup-malformed.txt", "encryption/cryptsetup-inactive.stderr"]
)
def test_cryptsetup_rejects(name: str) -> None:
    with pytest.raises(ValueError):
        encryption.parse_cryptsetup_status(data(name))
    with pytest.raises(ValueError):
        encryption.parse_cryptsetup_status("")


# -- chrony / timedatectl ----------------------------------------------------------------------------


def test_chrony_synced_csv_and_text_agree() -> None:
    csv = time_sync.parse_chrony_tracking(data("time_sync/chrony-synced.csv"))
    text = time_sync.parse_chrony_tracking(data("time_sync/chrony-synced.txt"))
    assert csv.synchronized_flag and text.synchronized_flag
    assert csv.stratum == text.stratum == 9
    assert csv.leap_status == text.leap_status == "Normal"
    # CSV signs the offset as a correction (-), the text says "fast": the same magnitude
    assert csv.offset_seconds == text.offset_seconds == pytest.approx(0.000001510)
    assert text.reference == "localhost"


def test_chrony_unsynced() -> None:
    for name in ("time_sync/chrony-unsynced.csv", "time_sync/chrony-unsynced.txt"):
        obs = time_sync.parse_chrony_tracking(data(name))
        assert not obs.synchronized_flag and obs.leap_status == "Not synchronised" and obs.stratum == 0


def test_chrony_offset() -> None:
    obs = time_sync.parse_chrony_tracking(data("time_sync/chrony-offset-120s.csv"))
    assert obs.synchronized_flag and obs.offset_seconds == pytest.approx(120.512)


@pytest.mark.parametrize(
    "name",
    ["time_sync/chrony-malformed.csv", "time_sync/chrony-empty.csv", "time_sync/chrony-no-daemon.stdout"],
)
def test_chrony_rejects(name: str) -> None:
    with pytest.raises(ValueError):
        time_sync.parse_chrony_tracking(data(name))


def test_timedatectl() -> None:
    assert time_sync.parse_timedatectl_show(data("time_sync/timedatectl-synced.txt")).synchronized_flag
    assert not time_sync.parse_timedatectl_show(data("time_sync/timedatectl-unsynced.txt")).synchronized_flag
    for bad in (data("time_sync/timedatectl-malformed.txt"), "", "NTP=yes\n"):
        with pytest.raises(ValueError):
            time_sync.parse_timedatectl_show(bad)


# -- backups -------------------------------------------------------------------------------------------


def test_restic() -> None:
    newest = backup.parse_restic_snapshots(data("backup/restic-latest.json"))
    assert newest == datetime(2026, 11, 23, 12, 33, 42, 560835, tzinfo=UTC)
    every = backup.parse_restic_snapshots(data("backup/restic-all.json"))
    assert every == newest  # the newest of several
    assert backup.parse_restic_snapshots(data("backup/restic-no-snapshots.json")) is None


@pytest.mark.parametrize(
    "name",
    ["backup/restic-malformed.json", "backup/restic-empty.json", "backup/restic-wrong-password.stderr"],
)
def test_restic_rejects(name: str) -> None:
    with pytest.raises(ValueError):
        backup.parse_restic_snapshots(data(name))


def test_borg() -> None:
    assert backup.parse_borg_list(data("backup/borg-latest.json")) == datetime(
        2026, 11, 23, 12, 33, 51, tzinfo=UTC
    )
    assert backup.parse_borg_list(data("backup/borg-empty.json")) is None
    for name in ("backup/borg-malformed.json", "backup/borg-wrong-passphrase.stderr"):
        with pytest.raises(ValueError):
            backup.parse_borg_list(data(name))


def test_timestamps() -> None:
    assert backup.parse_time(data("backup/timestamp-iso.txt")) == datetime(2026, 11, 23, 2, 0, 4, tzinfo=UTC)
    assert backup.parse_time(data("backup/timestamp-epoch.txt")) == datetime(
        2026, 11, 23, 2, 0, 4, tzinfo=UTC
    )
    for name in (
        "backup/timestamp-malformed.txt",
        "backup/timestamp-empty.txt",
        "backup/timestamp-naive.txt",
    ):
        with pytest.raises(ValueError):
            backup.parse_time(data(name))


def test_restore_result_format() -> None:
    ok = restore_test.parse_result(data("restore_test/result-ok.json"))
    assert (
        ok.ok and ok.files_compared == 412 and ok.finished_at == datetime(2026, 11, 20, 3, 12, 9, tzinfo=UTC)
    )
    assert not restore_test.parse_result(data("restore_test/result-failed.json")).ok
    for name in ("restore_test/result-malformed.json", "restore_test/result-empty.json"):
        with pytest.raises(ValueError):
            restore_test.parse_result(data(name))


# -- journal canary ------------------------------------------------------------------------------------


def test_journal_json() -> None:
    assert log_continuity.parse_journal_json(data("logging/canary-found.json")) == [
        "nixcomply canary 6f1c2d7e-3b0a-4f4e-9a52-1d2c3b4a5f60"
    ]
    assert log_continuity.parse_journal_json(data("logging/canary-absent.json")) == []
    assert log_continuity.parse_journal_json('{"MESSAGE":[104,105]}\n') == ["hi"]  # non-UTF-8 form
    with pytest.raises(ValueError):
        log_continuity.parse_journal_json(data("logging/malformed.json"))


# -- nix configuration -----------------------------------------------------------------------------------


def test_nix_show_config_2_8() -> None:
    settings = nix_config.parse_nix_config_json(data("nix_config/nix-2.8-show-config.json"))
    assert settings["sandbox"] == "true"
    assert settings["allowed-users"] == "@wheel"
    assert settings["trusted-users"] == "root"
    assert settings["substituters"] == ""
    assert settings["require-sigs"] == "true"


def test_nix_config_show_newer() -> None:
    settings = nix_config.parse_nix_config_json(data("nix_config/nix-config-show-newer.json"))
    assert settings["experimental-features"] == "flakes nix-command"
    assert settings["trusted-users"] == "root @wheel"


@pytest.mark.parametrize("name", ["nix_config/empty.json", "nix_config/malformed.json"])
def test_nix_config_rejects(name: str) -> None:
    with pytest.raises(ValueError):
        nix_config.parse_nix_config_json(data(name))


# -- nixos-version ---------------------------------------------------------------------------------------


def test_nixos_version() -> None:
    version = patch_age.parse_nixos_version_json(data("patch_age/nixos-version.json"))
    assert version.configuration_revision == "b5158a63950af23bbaca061203fe1e663990ebd5"
    assert patch_age.nixpkgs_date(version.nixos_version) == date(2026, 8, 19)
    dirty = patch_age.parse_nixos_version_json(data("patch_age/nixos-version-dirty.json"))
    assert dirty.configuration_revision is None
    assert patch_age.nixpkgs_date("24.11pre20240801.abcdef1") == date(2024, 8, 1)


def test_nixos_version_rejects() -> None:
    with pytest.raises(ValueError):
        patch_age.parse_nixos_version_json(data("patch_age/malformed.json"))
    with pytest.raises(ValueError):
        patch_age.parse_nixos_version_json("")
    nodate = patch_age.parse_nixos_version_json(data("patch_age/nixos-version-nodate.json"))
    with pytest.raises(ValueError, match="no nixpkgs date"):
        patch_age.nixpkgs_date(nodate.nixos_version)
    with pytest.raises(ValueError, match="not a date"):
        patch_age.nixpkgs_date("26.05.20261345.b18a4b9")


# -- sudoers -----------------------------------------------------------------------------------------------


def test_sudoers_nixos_default_requires_password() -> None:
    parsed, includes = sudo_config.parse_sudoers(data("sudo_config/sudoers-nixos"))
    assert parsed.wheel_requires_password and includes == []
    assert parsed.wheel_rules == ["%wheel\tALL=(ALL:ALL)\tSETENV: ALL"]


@pytest.mark.parametrize(
    "name", ["sudo_config/sudoers-nixos-nopasswd", "sudo_config/sudoers-nixos-extrarule"]
)
def test_sudoers_nopasswd(name: str) -> None:
    parsed, _ = sudo_config.parse_sudoers(data(name))
    assert not parsed.wheel_requires_password


def test_sudoers_aliases_and_includes() -> None:
    parsed, includes = sudo_config.parse_sudoers(data("sudo_config/sudoers-includedir"))
    assert parsed.wheel_requires_password and includes == ["includedir /etc/sudoers.d"]
    parsed, _ = sudo_config.parse_sudoers(data("sudo_config/sudoers.d-admins"), parsed)
    assert not parsed.wheel_requires_password  # User_Alias ADMINS holds %wheel
    defaults, _ = sudo_config.parse_sudoers("Defaults:%wheel !authenticate\n")
    assert not defaults.wheel_requires_password


def test_sudoers_rejects() -> None:
    with pytest.raises(ValueError):
        sudo_config.parse_sudoers(data("sudo_config/sudoers-malformed"))
    with pytest.raises(ValueError):
        sudo_config.parse_sudoers("# only comments\n\n")
