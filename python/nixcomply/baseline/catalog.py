"""The names of the runtime checks a baseline control can ask for, and what each observes.

This is the contract between ``baseline/*.yaml`` (``verify.check`` / ``verify.expect``) and
the check implementations: baseline validation rejects a name that is not listed here.
"""

from __future__ import annotations

from typing import Final

# name -> (what it observes, the shape of `expect`)
CHECKS: Final[dict[str, tuple[str, str]]] = {
    "generation": ("running generation and flake revision vs the approved one", "{}"),
    "patch_age": ("age of the running nixpkgs revision", "{} (parameters.critical_patch_max_age_days)"),
    "service_health": (
        "systemd units active, not failed, not restarting (pystemd)",
        "{units: [unit, ...]} or {} for parameters.critical_services",
    ),
    "sshd_effective": ("effective sshd configuration (sshd -T)", "{keyword: value as sshd -T prints it}"),
    "sysctl": ("kernel parameters (/proc/sys)", "{key: value as sysctl prints it}"),
    "kernel_modules": (
        "module blacklist and loaded modules",
        "{blacklisted: [module], not_loaded: [module]}",
    ),
    "audit_rules": (
        "loaded audit rules (auditctl -l): every rule the control sets, and its keys",
        "{keys: [rule key]}",
    ),
    "audit_status": ("audit subsystem status (auditctl -s)", "{enabled: n, failure: n}"),
    "auditd_config": ("audit daemon settings (/etc/audit/auditd.conf)", "{key: value}"),
    "kernel_cmdline": ("the running kernel's command line (/proc/cmdline)", "{parameter: value or true}"),
    "accounts": (
        "account password fields (/etc/shadow; no hash kept)",
        "{no_empty_passwords: true, locked: [user]}",
    ),
    "mounts": ("options of mount points (/proc/self/mountinfo)", "{/mount/point: [option, ...]}"),
    "journald_config": ("effective journald.conf [Journal] settings", "{Key: value}"),
    "firewall": (
        "firewall state and ruleset hash (nft list ruleset)",
        "{enabled: bool, input_policy: drop, log_refused: bool}",
    ),
    "encryption": ("root and data volumes on LUKS (lsblk -J, cryptsetup status)", "{root_on_luks: true}"),
    "time_sync": ("clock synchronised within parameters.time_max_drift_seconds", "{synchronized: true}"),
    "backup": ("newest backup age vs parameters.backup_max_age_hours", "{}"),
    "restore_test": ("last restore test age vs parameters.restore_test_max_age_days", "{}"),
    "logging": ("journald and auditd active; a canary message written and read back", "{}"),
    "sudo_config": ("effective sudo policy", "{wheel_requires_password: bool, exec_wheel_only: bool}"),
    "nix_config": ("effective Nix settings (nix show-config)", "{setting: value as nix prints it}"),
    "coredump": ("core dump policy (coredump.conf, ulimit, kernel.core_pattern)", "{storage: none}"),
    "file_content": ("a file's content", "{path: /etc/issue, contains: text}"),
    "config_value": (
        "the running generation's manifest carries the control's settings (configuration evidence only)",
        "{}",
    ),
    "av_edr": ("antivirus/EDR daemon active and signature age", "{units: [unit]}"),
    "disk_usage": ("filesystem usage vs parameters.disk_usage_max_percent", "{mounts: [path]} or {}"),
    "exceptions": ("expired or soon-expiring exceptions and attestations", "{}"),
}

CHECK_NAMES: Final = frozenset(CHECKS)
