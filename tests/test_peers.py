"""baseline/peers.csv: every expectation of dev-sec's ssh-baseline and linux-baseline and of the
audit rules ComplianceAsCode's HIPAA profile maps, and whether hipaa-v1 meets it, is stricter,
or deliberately differs (and why). The table cannot go stale: each row names the controls and
evidence terms that make its claim true, and this test holds every term to the baseline YAML.

Evidence terms (space-separated, all must hold for one of the row's controls):
``sshd:KEYWORD=VALUE``, ``sysctl:KEY=VALUE``, ``cmdline:PARAM=VALUE``, ``auditstatus:KEY=N``
and ``accounts:KEY`` are the control's ``verify.expect``; ``module:NAME`` is in its
kernel_modules ``blacklisted``; ``audit:b64:SYSCALL`` / ``audit:b32:SYSCALL`` /
``audit:watch:PATH`` / ``audit:lock`` are its audit rules or ``security.audit.enable``;
``nixos:PATH=VALUE`` is a NixOS setting it makes.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from typing import Any, Final

import pytest

from conftest import REPO
from nixcomply.baseline.models import Baseline, Control
from nixcomply.checks.audit_rules import canonical_rule

PEERS: Final = REPO / "baseline" / "peers.csv"
COLUMNS: Final = ("suite", "id", "expectation", "hipaa_v1", "controls", "evidence", "why")
SUITES: Final = ("dev-sec/ssh-baseline", "dev-sec/linux-baseline", "SSG controls/hipaa.yml")

# The audit rules ComplianceAsCode's controls/hipaa.yml maps to 164.308(a)(1)(ii)(D) and
# 164.308(a)(3)(ii)(A) (read from the repository; the list is the table's checklist).
SSG_AUDIT_RULES: Final = (
    [f"audit_rules_dac_modification_{s}" for s in ("chmod", "chown", "fchmod", "fchmodat", "fchown", "fchownat",
                                                   "fremovexattr", "fsetxattr", "lchown", "lremovexattr",
                                                   "lsetxattr", "removexattr", "setxattr")]
    + [f"audit_rules_execution_{s}" for s in ("chcon", "restorecon", "semanage", "setsebool")]
    + [f"audit_rules_file_deletion_events_{s}" for s in ("rename", "renameat", "rmdir", "unlink", "unlinkat")]
    + [f"audit_rules_unsuccessful_file_modification_{s}" for s in (
        "creat", "ftruncate", "open", "open_by_handle_at", "open_by_handle_at_o_creat",
        "open_by_handle_at_o_trunc_write", "open_by_handle_at_rule_order", "open_o_creat",
        "open_o_trunc_write", "open_rule_order", "openat", "openat_o_creat", "openat_o_trunc_write",
        "openat_rule_order", "rename", "renameat", "truncate", "unlink", "unlinkat")]
    + [f"audit_rules_kernel_module_loading_{s}" for s in ("delete", "finit", "init")]
    + [f"audit_rules_login_events_{s}" for s in ("faillock", "lastlog", "tallylog")]
    + [f"audit_rules_privileged_commands_{s}" for s in (
        "chage", "chsh", "crontab", "gpasswd", "newgrp", "pam_timestamp_check", "passwd", "postdrop",
        "postqueue", "ssh_keysign", "su", "sudo", "sudoedit", "umount", "unix2_chkpwd", "unix_chkpwd",
        "userhelper")]
    + ["audit_rules_immutable", "audit_rules_mac_modification", "audit_rules_mac_modification_usr_share",
       "audit_rules_media_export", "audit_rules_networkconfig_modification", "audit_rules_session_events",
       "audit_rules_sysadmin_actions", "audit_rules_system_shutdown"]
    + [f"audit_rules_usergroup_modification_{s}" for s in ("group", "gshadow", "opasswd", "passwd", "shadow")]
    + [f"audit_rules_time_{s}" for s in ("adjtimex", "clock_settime", "settimeofday", "stime", "watch_localtime")]
    + ["auditd_audispd_syslog_plugin_activated", "auditd_data_retention_flush", "coreos_audit_option",
       "grub2_audit_argument", "package_audit-audispd-plugins_installed", "package_audit_installed",
       "service_auditd_enabled"]
)  # fmt: skip
# dev-sec ssh-baseline's sshd_spec.rb numbers its controls sshd-01 to sshd-48 (26 is unused).
DEVSEC_SSHD: Final = [f"sshd-{n:02d}" for n in range(1, 49) if n != 26]
DEVSEC_SYSCTL: Final = [f"sysctl-{n:02d}" for n in range(1, 35) if n not in (18, 31)] + [
    "sysctl-31a",
    "sysctl-31b",
]


@pytest.fixture(scope="module")
def rows() -> list[dict[str, str]]:
    with PEERS.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames or ()) == COLUMNS
        return list(reader)


def audit_rules_of(control: Control) -> list[tuple[Any, ...]]:
    value = control.nixos.get("security.audit.rules", [])
    assert isinstance(value, list)
    return [canonical_rule(r) for r in value]


def _fields(rule: tuple[Any, ...]) -> dict[str, str]:
    return {name: value for name, _op, value in rule[3]}


def holds(term: str, control: Control) -> bool:
    kind, _, rest = term.partition(":")
    expect = control.verify.expect
    check = control.verify.check
    key, _, value = rest.partition("=")
    if kind == "sshd":
        return check == "sshd_effective" and str(expect.get(key)) == value
    if kind == "sysctl":
        return check == "sysctl" and str(expect.get(key)) == value
    if kind == "cmdline":
        return check == "kernel_cmdline" and str(expect.get(key)) == value
    if kind == "auditstatus":
        return check == "audit_status" and expect.get(key) == int(value)
    if kind == "accounts":
        return check == "accounts" and bool(expect.get(rest))
    if kind == "module":
        return check == "kernel_modules" and rest in expect.get("blacklisted", [])
    if kind == "nixos":
        try:
            wanted: Any = json.loads(value)
        except json.JSONDecodeError:
            wanted = value
        return bool(control.nixos.get(key) == wanted)
    if kind == "audit":
        arch, _, what = rest.partition(":")
        rules = audit_rules_of(control)
        if arch == "lock":
            return control.nixos.get("security.audit.enable") == "lock"
        if arch == "watch":
            return any(r[0] == "watch" and r[1] == what for r in rules)
        return any(r[0] == "syscall" and _fields(r).get("arch") == arch and what in r[2] for r in rules)
    raise AssertionError(f"unknown evidence term {term!r}")


def test_the_table_covers_every_expectation_of_the_peers(rows: list[dict[str, str]]) -> None:
    ids = Counter((r["suite"], r["id"]) for r in rows)
    assert [k for k, n in ids.items() if n > 1] == [], "a row is listed twice"
    assert {r["suite"] for r in rows} == set(SUITES)
    by_suite = {s: {r["id"] for r in rows if r["suite"] == s} for s in SUITES}
    assert set(DEVSEC_SSHD) <= by_suite["dev-sec/ssh-baseline"]
    assert set(DEVSEC_SYSCTL) <= by_suite["dev-sec/linux-baseline"]
    assert {f"os-{n:02d}" for n in range(1, 11)} <= by_suite["dev-sec/linux-baseline"]
    assert set(SSG_AUDIT_RULES) == by_suite["SSG controls/hipaa.yml"]


def test_every_claim_holds_against_the_baseline(rows: list[dict[str, str]], baseline: Baseline) -> None:
    bad = []
    for row in rows:
        where = f"{row['suite']} {row['id']}"
        status, controls, terms = row["hipaa_v1"], row["controls"].split(), row["evidence"].split()
        controls = [c for part in controls for c in part.split(";") if c]
        if status not in {"meets", "stricter", "differs"}:
            bad.append(f"{where}: hipaa_v1 is {status!r}")
            continue
        if status in {"stricter", "differs"} and not row["why"].strip():
            bad.append(f"{where}: {status}, but says not why")
        if status in {"meets", "stricter"} and not (controls and terms):
            bad.append(f"{where}: {status}, but names no control and evidence")
        if terms and not controls:
            bad.append(f"{where}: evidence without a control")
        for cid in controls:
            try:
                baseline.control(cid)
            except KeyError:
                bad.append(f"{where}: unknown control {cid}")
        known = [baseline.control(c) for c in controls if c in {x.id for x in baseline.controls}]
        for term in terms:
            if not any(holds(term, c) for c in known):
                bad.append(f"{where}: {term} does not hold for {', '.join(controls)}")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize(
    ("term", "control_id", "expected"),
    [
        ("sshd:maxauthtries=2", "ssh.max-auth-tries", True),
        ("sshd:maxauthtries=4", "ssh.max-auth-tries", False),
        ("audit:b32:unlink", "audit.deletions", True),
        ("audit:b64:unlink", "audit.deletions", False),
        ("audit:watch:/etc/shadow", "audit.identity-changes", True),
        ("audit:lock", "audit.rules-immutable", True),
        ("module:vfat", "devices.unused-filesystems-blocked", False),
    ],
)
def test_terms_can_fail(term: str, control_id: str, expected: bool, baseline: Baseline) -> None:
    assert holds(term, baseline.control(control_id)) is expected
