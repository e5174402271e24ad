"""The runtime checks of the controls issue 10 added, against real tool output: the audit rules
hipaa-v1 sets as ``auditctl -l`` prints them once loaded (both the ``-k`` form of watches and
the ``-F key=`` form of syscall rules), sshd -T of the new SSH settings, auditd.conf,
/proc/cmdline, /proc/self/mountinfo and /etc/shadow.

Where the data files come from is in tests/data/checks/README.md. The host-marked tests load
the baseline's rules into this machine's kernel (as root; only when no rules are loaded, and
removed again) and read them back with the real auditctl.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from boundary import argv_of, result
from fixtures_checks import CHECKDATA, context, control, data, manifest, require

from conftest import REPO
from nixcomply.baseline.evaluate import definitions, manifest_json
from nixcomply.baseline.load import load_baseline
from nixcomply.checks import (
    accounts,
    audit_rules,
    auditd_config,
    kernel_cmdline,
    mounts,
    sshd_effective,
    sysctl,
)
from nixcomply.checks.base import expect_problem
from nixcomply.checks.finding import Finding
from nixcomply.errors import CommandError
from nixcomply.heal.rules import decide
from nixcomply.model.manifest import Manifest
from nixcomply.nixos.tools import Tools
from nixcomply.reconcile.respond import load_policy

HIPAA = REPO / "baseline" / "hipaa-v1.yaml"
MODULE = REPO / "modules" / "baselines" / "hipaa-v1.nix"


@pytest.fixture(scope="module")
def hipaa_manifest(nix_env: dict[str, str]) -> Manifest:
    """The manifest the committed 26.05 module writes, evaluated by the real nix."""
    text = manifest_json(MODULE, "hipaa-v1", tools=Tools(extra_env=nix_env))
    return Manifest.model_validate_json(text)


def by_check(m: Manifest, check: str) -> dict[str, Any]:
    return {cid: c for cid, c in m.controls.items() if c.verify.check == check}


def statuses(findings: list[Finding]) -> dict[str, str]:
    return {f.control_ids[0]: f.status for f in findings}


# -- audit rules ------------------------------------------------------------------------------------


def test_the_rules_file_is_what_the_baseline_sets() -> None:
    baseline = load_baseline(HIPAA).baseline
    rules: list[str] = []
    for c in baseline.controls:
        value = c.nixos.get("security.audit.rules", [])
        assert isinstance(value, list)
        rules += value
    assert data("audit_rules/hipaa-v1.rules").splitlines() == rules


def test_auditctl_prints_watches_with_k_and_syscall_rules_with_key_field() -> None:
    printed = data("audit_rules/hipaa-v1.txt").splitlines()
    watches = [line for line in printed if line.startswith("-w ")]
    syscalls = [line for line in printed if line.startswith("-a ")]
    assert watches and all(" -k " in w and "key=" not in w for w in watches)
    assert syscalls and all(" -F key=" in s and " -k " not in s for s in syscalls)
    assert any("arch=b32" in s for s in syscalls)


def test_every_rule_of_the_baseline_is_found_in_real_auditctl_output() -> None:
    loaded = audit_rules.parse_auditctl_list(data("audit_rules/hipaa-v1.txt")).canonical
    for rule in data("audit_rules/hipaa-v1.rules").splitlines():
        assert audit_rules.canonical_rule(rule) in loaded, rule
    assert len(loaded) == len(data("audit_rules/hipaa-v1.rules").splitlines())


@pytest.mark.parametrize(
    ("written", "printed"),
    [
        ("-w /etc/sudoers.d/ -p aw -k sudoers", "-w /etc/sudoers.d -p wa -k sudoers"),
        (
            "-a exit,always -F arch=b64 -S init_module -S delete_module -k modules",
            "-a always,exit -F arch=b64 -S delete_module,init_module -F key=modules",
        ),
        (
            "-a always,exit -F arch=b64 -S mount -F auid>=1000 -F auid!=unset -k mounts",
            "-a always,exit -F arch=b64 -S mount -F auid>=1000 -F auid!=-1 -F key=mounts",
        ),
    ],
)
def test_spellings_of_one_rule_compare_equal(written: str, printed: str) -> None:
    assert audit_rules.canonical_rule(written) == audit_rules.canonical_rule(printed)


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ("-w /etc/shadow -p wa -k identity", "-w /etc/shadow -p w -k identity"),
        ("-w /etc/shadow -p wa -k identity", "-w /etc/gshadow -p wa -k identity"),
        (
            "-a always,exit -F arch=b64 -S unlinkat -F auid>=1000 -k delete",
            "-a always,exit -F arch=b32 -S unlinkat -F auid>=1000 -k delete",
        ),
        (
            "-a always,exit -F arch=b64 -S openat -F exit=-EACCES -k access",
            "-a always,exit -F arch=b64 -S openat -F exit=-EPERM -k access",
        ),
    ],
)
def test_different_rules_stay_different(one: str, other: str) -> None:
    assert audit_rules.canonical_rule(one) != audit_rules.canonical_rule(other)


def test_a_rule_that_is_not_a_rule_is_refused() -> None:
    for bad in (
        "-D",
        "-a always,exit -F",
        "-a always,exit -F nonsense",
        "-x /etc/passwd",
    ):
        with pytest.raises(ValueError):
            audit_rules.canonical_rule(bad)


def test_hipaa_audit_controls_pass_on_real_output(run: mock.MagicMock, hipaa_manifest: Manifest) -> None:
    run.return_value = result(data("audit_rules/hipaa-v1.txt"))
    controls = by_check(hipaa_manifest, "audit_rules")
    assert len(controls) >= 10
    findings = audit_rules.run(context(manifest=hipaa_manifest), controls)
    assert set(statuses(findings).values()) == {"pass"}, [f.message for f in findings if f.status != "pass"]
    assert any("rule(s) loaded" in f.message for f in findings)


def test_a_missing_32_bit_copy_is_drift_though_its_key_is_there(
    run: mock.MagicMock, hipaa_manifest: Manifest
) -> None:
    """The old check looked at keys only: with the b32 copy gone, key `delete` is still
    present (the b64 rule), and only comparing rules finds the hole."""
    printed = [
        line
        for line in data("audit_rules/hipaa-v1.txt").splitlines()
        if not ("b32" in line and "key=delete" in line)
    ]
    run.return_value = result("\n".join(printed) + "\n")
    findings = audit_rules.run(context(manifest=hipaa_manifest), by_check(hipaa_manifest, "audit_rules"))
    by_id = {f.control_ids[0]: f for f in findings}
    deletions = by_id["audit.deletions"]
    assert deletions.status == "drift"
    assert "arch=b32" in deletions.message and "delete" in deletions.observed["keys"]
    assert {cid for cid, f in by_id.items() if f.status != "pass"} == {"audit.deletions"}


def test_no_rules_loaded_is_drift_for_every_audit_control(
    run: mock.MagicMock, hipaa_manifest: Manifest
) -> None:
    run.return_value = result(data("audit_rules/no-rules.txt"))
    findings = audit_rules.run(context(manifest=hipaa_manifest), by_check(hipaa_manifest, "audit_rules"))
    assert set(statuses(findings).values()) == {"drift"}


def without_deletions() -> str:
    printed = [
        line
        for line in data("audit_rules/hipaa-v1.txt").splitlines()
        if not ("b32" in line and "key=delete" in line)
    ]
    return "\n".join(printed) + "\n"


def test_in_sync_audit_rules_never_ask_whether_they_are_locked(
    run: mock.MagicMock, hipaa_manifest: Manifest
) -> None:
    run.return_value = result(data("audit_rules/hipaa-v1.txt"))
    audit_rules.run(context(manifest=hipaa_manifest), by_check(hipaa_manifest, "audit_rules"))
    assert [argv_of(c) for c in run.call_args_list] == [["auditctl", "-l"]]


def test_locked_audit_rules_need_a_reboot_not_a_runbook(
    run: mock.MagicMock, hipaa_manifest: Manifest
) -> None:
    """security.audit.enable = "lock": missing rules cannot be loaded before the next boot, so
    re-applying the generation (RB-DRIFT-001) would only fail again and again until it is
    suppressed; the finding says a reboot is needed and the rules alert a person instead."""
    run.side_effect = [result(without_deletions()), result(data("audit_status/locked.txt"))]
    findings = audit_rules.run(context(manifest=hipaa_manifest), by_check(hipaa_manifest, "audit_rules"))
    assert [argv_of(c) for c in run.call_args_list] == [["auditctl", "-l"], ["auditctl", "-s"]]
    (locked,) = [f for f in findings if f.status == "drift"]
    assert locked.reboot_needed and locked.recommended_runbook is None
    assert locked.observed["locked"] is True and "enabled 2" in locked.outputs["auditctl_s"]
    assert "locked until the next boot" in locked.message and "reboot" in locked.message
    assert not any(f.reboot_needed for f in findings if f.status == "pass")
    decision = decide(load_policy().rules, locked.model_dump(mode="json"))
    assert decision is not None and decision.rule.id == "L1-AUDIT-003" and decision.runbook is None
    assert decision.alert is not None and decision.alert.startswith("a reboot is needed")


@pytest.mark.parametrize("status", ["with-rules.txt", "malformed.txt", None])
def test_unlocked_or_unknown_audit_rules_are_re_applied(
    run: mock.MagicMock, hipaa_manifest: Manifest, status: str | None
) -> None:
    answer = (
        result(data(f"audit_status/{status}"))
        if status
        else CommandError(("auditctl", "-s"), returncode=1, stderr="Operation not permitted")
    )
    run.side_effect = [result(without_deletions()), answer]
    findings = audit_rules.run(context(manifest=hipaa_manifest), by_check(hipaa_manifest, "audit_rules"))
    (drift,) = [f for f in findings if f.status == "drift"]
    assert not drift.reboot_needed and drift.recommended_runbook == "RB-DRIFT-001"
    assert drift.observed["locked"] is (False if status == "with-rules.txt" else None)
    decision = decide(load_policy().rules, drift.model_dump(mode="json"))
    assert decision is not None and decision.rule.id == "L1-AUDIT-001" and decision.runbook == "RB-DRIFT-001"


def auditctl(*args: str) -> str:
    return subprocess.run([require("auditctl"), *args], capture_output=True, text=True, check=True).stdout


@pytest.mark.host
def test_the_baseline_rules_load_into_the_real_kernel(hipaa_manifest: Manifest, tmp_path: Path) -> None:
    """auditctl -R accepts every rule (one unknown syscall name would make NixOS's
    audit-rules-nixos fail and load nothing), and what the kernel then reports passes."""
    if auditctl("-l").strip() != "No rules":
        pytest.fail("this machine already has audit rules loaded; the test loads and removes its own")
    rules = tmp_path / "audit.rules"
    rules.write_text(data("audit_rules/hipaa-v1.rules"))
    try:
        auditctl("-R", str(rules))
        printed = auditctl("-l")
        findings = audit_rules.run(context(manifest=hipaa_manifest), by_check(hipaa_manifest, "audit_rules"))
    finally:
        auditctl("-D")
    assert printed == data("audit_rules/hipaa-v1.txt"), "auditctl -l output changed: refresh the capture"
    assert set(statuses(findings).values()) == {"pass"}, [f.message for f in findings]


# -- sshd ---------------------------------------------------------------------------------------------


def test_new_ssh_settings_as_real_sshd_prints_them(run: mock.MagicMock, hipaa_manifest: Manifest) -> None:
    """session-limits.txt is OpenSSH 9.2's sshd -T of those settings (its KEX list lacks
    mlkem768x25519-sha256, which 9.2 does not know, so ssh.strong-kex is not judged here)."""
    run.return_value = result(data("sshd_effective/session-limits.txt"))
    ids = [
        "ssh.password-auth-disabled",
        "ssh.max-auth-tries",
        "ssh.idle-timeout",
        "ssh.login-grace-time",
        "ssh.connection-limits",
        "ssh.host-based-auth-disabled",
        "ssh.user-environment-disabled",
    ]
    controls = {cid: hipaa_manifest.controls[cid] for cid in ids}
    findings = sshd_effective.run(context(manifest=hipaa_manifest), controls)
    assert statuses(findings) == dict.fromkeys(ids, "pass"), [f.message for f in findings]


def test_kex_no_longer_offers_group_exchange(hipaa_manifest: Manifest) -> None:
    kex = hipaa_manifest.controls["ssh.strong-kex"].verify.expect["kexalgorithms"]
    assert "diffie-hellman" not in kex


# -- auditd.conf, kernel command line, mounts, shadow -------------------------------------------------


def one_finding(check: Any, root: Path, m: Manifest, cid: str) -> Finding:
    found: list[Finding] = check.run(context(root, manifest=m), {cid: m.controls[cid]})
    assert len(found) == 1, found
    return found[0]


def tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for path, text in files.items():
        target = tmp_path / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    return tmp_path


def test_auditd_config(tmp_path: Path, hipaa_manifest: Manifest) -> None:
    cid = "audit.disk-space-actions"
    good = tree(
        tmp_path / "good",
        {"/etc/audit/auditd.conf": data("auditd_config/nixos-hipaa-v1.conf")},
    )
    assert one_finding(auditd_config, good, hipaa_manifest, cid).status == "pass"
    debian = tree(
        tmp_path / "debian",
        {"/etc/audit/auditd.conf": data("auditd_config/debian-default.conf")},
    )
    f = one_finding(auditd_config, debian, hipaa_manifest, cid)
    assert f.status == "drift" and "space_left is 75" in f.message
    missing = one_finding(auditd_config, tmp_path / "none", hipaa_manifest, cid)
    assert missing.status == "error" and "does not exist" in missing.message
    with pytest.raises(ValueError, match="line 1"):
        auditd_config.parse_auditd_conf("space_left 25%\n")


def test_kernel_cmdline(tmp_path: Path, hipaa_manifest: Manifest) -> None:
    cid = "audit.early-boot"
    booted = tree(tmp_path / "a", {"/proc/cmdline": data("kernel_cmdline/nixos-audit.txt")})
    assert one_finding(kernel_cmdline, booted, hipaa_manifest, cid).status == "pass"
    before = tree(
        tmp_path / "b",
        {"/proc/cmdline": data("kernel_cmdline/nixos-before-reboot.txt")},
    )
    f = one_finding(kernel_cmdline, before, hipaa_manifest, cid)
    assert f.status == "drift"
    assert "audit is not on the kernel command line" in f.message and "audit_backlog_limit=1024" in f.message
    assert kernel_cmdline.parse_cmdline("quiet audit=1 -- audit=0")["audit"] == "1"
    with pytest.raises(ValueError):
        kernel_cmdline.parse_cmdline("  \n")


def test_mounts(tmp_path: Path, hipaa_manifest: Manifest) -> None:
    cid = "storage.temporary-mount-options"
    hardened = tree(tmp_path / "a", {"/proc/self/mountinfo": data("mounts/hardened.mountinfo")})
    assert one_finding(mounts, hardened, hipaa_manifest, cid).status == "pass"
    plain = tree(tmp_path / "b", {"/proc/self/mountinfo": data("mounts/plain.mountinfo")})
    f = one_finding(mounts, plain, hipaa_manifest, cid)
    assert f.status == "drift"
    assert (
        "/tmp is not a mount point" in f.message and "/dev/shm (tmpfs) lacks nodev,noexec,nosuid" in f.message
    )
    with pytest.raises(ValueError, match="separator"):
        mounts.parse_mountinfo("22 27 0:21 / /proc rw,relatime proc proc rw\n")


def test_mountinfo_of_this_machine_parses() -> None:
    table = mounts.parse_mountinfo(Path("/proc/self/mountinfo").read_text())
    assert "/" in table and "/proc" in table


def test_accounts(tmp_path: Path, hipaa_manifest: Manifest) -> None:
    nixos = tree(tmp_path / "a", {"/etc/shadow": data("accounts/shadow-nixos")})
    for cid in ("access.no-empty-passwords", "access.root-login-locked"):
        assert one_finding(accounts, nixos, hipaa_manifest, cid).status == "pass", cid
    empty = tree(tmp_path / "b", {"/etc/shadow": data("accounts/shadow-empty-root")})
    f = one_finding(accounts, empty, hipaa_manifest, "access.no-empty-passwords")
    assert f.status == "drift" and "guest, root" in f.message
    assert "$y$" not in str(f.observed) and not f.outputs, "no hash may reach evidence"
    locked = one_finding(accounts, empty, hipaa_manifest, "access.root-login-locked")
    assert locked.status == "drift" and "root is unlocked" in locked.message
    with pytest.raises(ValueError, match="line 1"):
        accounts.parse_shadow(data("accounts/shadow-malformed"))


def test_new_checks_refuse_unknown_expect_keys() -> None:
    assert expect_problem(accounts.SPEC, {"locked": ["root"], "lockd": True}) is not None
    m = manifest({"c": control("accounts", {"no_empty_passwords": True, "typo": 1})})
    (f,) = accounts.run(context(manifest=m), dict(m.controls))
    assert f.status == "error" and "typo" in f.message


def test_a_router_makes_forwarding_not_applicable(tmp_path: Path, nix_env: dict[str, str]) -> None:

    result_ = definitions(
        MODULE,
        "hipaa-v1",
        {"host": {}},
        tools=Tools(extra_env=nix_env),
        parameters={"router": True},
    )
    text = next(
        d["value"] for d in result_["host"] if d["path"][-1] == "text" and "manifest" in d["path"][-2]
    )
    routed = Manifest.model_validate_json(text)
    assert routed.controls["network.no-ip-forwarding"].status == "not-applicable"
    forwarded = [
        d
        for d in result_["host"]
        if d["path"][:3] == ["boot", "kernel", "sysctl"] and "forward" in d["path"][3]
    ]
    assert forwarded == [], "a router's forwarding sysctls are left alone"
    (f,) = sysctl.run(
        context(manifest=routed),
        {"network.no-ip-forwarding": routed.controls["network.no-ip-forwarding"]},
    )
    assert f.status == "skipped" and "does not apply" in f.message


def test_checkdata_dir_is_the_shared_one() -> None:
    assert CHECKDATA.is_dir()
