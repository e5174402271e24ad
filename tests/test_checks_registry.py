"""The registry, the concurrent runner (failures, hangs, concurrency, order) and the
``nixcomply check`` verb."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fixtures_checks import FakeSystemd, FakeUnit, context, control, manifest
from pydantic import ValidationError

from nixcomply.baseline.catalog import CHECK_NAMES, CHECKS
from nixcomply.baseline.load import load_baseline
from nixcomply.checks import registry
from nixcomply.checks.base import CheckSpec, Controls, Verdict, expect_problem, make_finding
from nixcomply.checks.config import ChecksConfig
from nixcomply.checks.context import CheckContext
from nixcomply.checks.finding import Finding
from nixcomply.checks.registry import RunFunction
from nixcomply.checks.report import CheckReport, render_table
from nixcomply.core.paths import default_baseline
from nixcomply.errors import UsageError
from nixcomply.host.systemd import InvalidUnitNameError, validate_unit_name


def test_registry_matches_catalog() -> None:
    assert set(registry.REGISTRY) == CHECK_NAMES == set(CHECKS)
    for name, check in registry.REGISTRY.items():
        assert check.spec.name == name


def test_select() -> None:
    assert registry.select(None) == sorted(CHECK_NAMES)
    assert registry.select(["sysctl", "backup", "sysctl"]) == ["backup", "sysctl"]
    with pytest.raises(UsageError, match="nope"):
        registry.select(["nope"])


@pytest.fixture
def release() -> Iterator[threading.Event]:
    """Set at the end of a test so abandoned (hung) check threads finish."""
    event = threading.Event()
    yield event
    event.set()


def fake(monkeypatch: pytest.MonkeyPatch, name: str, run: RunFunction) -> None:
    spec = registry.REGISTRY[name].spec
    monkeypatch.setitem(registry.REGISTRY, name, registry.Check(spec, run))


def passing(spec_name: str, delay: float = 0.0) -> RunFunction:
    def run(ctx: CheckContext, controls: Controls) -> list[Finding]:
        time.sleep(delay)
        spec = registry.REGISTRY[spec_name].spec
        return [make_finding(spec, sorted(controls.items()), Verdict("pass", f"{spec_name} ok"))]

    return run


def test_a_raising_check_is_an_error_for_its_controls(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(ctx: CheckContext, controls: Controls) -> list[Finding]:
        raise KeyError("surprise")

    fake(monkeypatch, "sysctl", boom)
    m = manifest(
        {
            "kernel.a": control("sysctl", {"kernel.kptr_restrict": 2}),
            "kernel.b": control("sysctl", {"kernel.dmesg_restrict": 1}, status="excepted"),
        }
    )
    findings = registry.run_checks(context(manifest=m), ["sysctl"])
    assert [(f.control_ids, f.status) for f in findings] == [
        (["kernel.a"], "error"),
        (["kernel.b"], "excepted"),
    ]
    assert "internal error in sysctl: KeyError" in findings[0].message


def test_a_hanging_check_times_out_promptly(
    monkeypatch: pytest.MonkeyPatch, release: threading.Event
) -> None:
    started, finished = threading.Event(), threading.Event()

    def hang(ctx: CheckContext, controls: Controls) -> list[Finding]:
        started.set()
        release.wait(60)
        finished.set()
        return []

    fake(monkeypatch, "backup", hang)
    fake(monkeypatch, "sysctl", passing("sysctl", 0.1))
    findings = registry.run_checks(context(), ["backup", "sysctl"], timeout_per_check=0.5)
    # the run came back while the hung check still hangs: it did not wait for it
    assert started.is_set() and not finished.is_set()
    assert [(f.check, f.status) for f in findings] == [("backup", "error"), ("sysctl", "pass")]
    assert "did not finish within 0.5 s" in findings[0].message
    assert findings[0].recommended_runbook is None


def test_hung_checks_do_not_block_the_others(
    monkeypatch: pytest.MonkeyPatch, release: threading.Event
) -> None:
    def hang(ctx: CheckContext, controls: Controls) -> list[Finding]:
        release.wait(60)
        return []

    fake(monkeypatch, "backup", hang)
    fake(monkeypatch, "av_edr", hang)
    for name in ("sysctl", "coredump", "disk_usage"):
        fake(monkeypatch, name, passing(name))
    findings = registry.run_checks(
        context(),
        ["av_edr", "backup", "coredump", "disk_usage", "sysctl"],
        timeout_per_check=0.4,
        max_workers=2,
    )
    assert [(f.check, f.status) for f in findings] == [
        ("av_edr", "error"),
        ("backup", "error"),
        ("coredump", "pass"),
        ("disk_usage", "pass"),
        ("sysctl", "pass"),
    ]


def test_checks_run_concurrently_up_to_max_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    lock = threading.Lock()
    active = [0]
    peak = [0]
    # three checks must be inside run() at once to pass: sequential runs would break it
    together = threading.Barrier(3, timeout=30)

    def tracked(name: str) -> RunFunction:
        def run(ctx: CheckContext, controls: Controls) -> list[Finding]:
            with lock:
                active[0] += 1
                peak[0] = max(peak[0], active[0])
            together.wait()
            with lock:
                active[0] -= 1
            return passing(name)(ctx, controls)

        return run

    names = ["audit_rules", "audit_status", "backup", "coredump", "sysctl", "time_sync"]
    for name in names:
        fake(monkeypatch, name, tracked(name))
    findings = registry.run_checks(context(), names, max_workers=3)
    assert peak[0] == 3
    assert [f.status for f in findings] == ["pass"] * 6  # two rounds of three met at the barrier
    assert [f.check for f in findings] == names


def test_result_order_is_deterministic(tmp_path: Path) -> None:
    for d in ("nix", "var"):
        (tmp_path / d).mkdir()
    fs = FakeSystemd({u: FakeUnit(u) for u in ("sshd.service", "chronyd.service", "auditd.service")})
    ctx = context(tmp_path, systemd=fs)
    names = ["disk_usage", "service_health", "exceptions", "restore_test"]
    first = registry.run_checks(ctx, names)
    second = registry.run_checks(ctx, names, max_workers=1)
    key = [(f.check, f.control_ids, f.subject, f.status) for f in first]
    assert key == [(f.check, f.control_ids, f.subject, f.status) for f in second]
    assert [f.check for f in first] == sorted(f.check for f in first)
    assert [f.subject for f in first if f.check == "service_health"] == [
        "auditd.service",
        "chronyd.service",
        "sshd.service",
    ]


def test_skipped_by_configuration() -> None:
    m = manifest({"kernel.a": control("sysctl", {"kernel.kptr_restrict": 2})})
    f = registry.run_checks(context(manifest=m, config={"skip": ["sysctl"]}), ["sysctl"])
    assert [(x.status, x.control_ids) for x in f] == [("skipped", ["kernel.a"])]
    assert "checks.skip" in f[0].message


def test_finding_invariants() -> None:
    spec = CheckSpec("sysctl", "medium", None)
    f = make_finding(spec, [], Verdict("drift", "two\nlines"))
    assert f.drifted and f.message == "two lines"
    with pytest.raises(ValueError):
        Finding.model_validate({**f.model_dump(), "drifted": False})
    with pytest.raises(ValueError):
        Finding.model_validate({**f.model_dump(), "frameworks": {"iso27001": ["A.5"]}})
    assert set(f.frameworks) == {"hipaa", "soc2", "cis_v8", "nist_800_53", "nist_csf"}


# -- nixcomply check -------------------------------------------------------------------------------------------


def host_root(tmp_path: Path, controls: dict[str, Any]) -> Path:
    root = tmp_path / "root"
    system = tmp_path / "system"
    (system / "etc/nixcomply").mkdir(parents=True)
    m = manifest(controls)
    (system / "etc/nixcomply/manifest.json").write_text(m.model_dump_json(by_alias=True))
    (root / "run").mkdir(parents=True)
    (root / "run/current-system").symlink_to(system)
    (root / "proc/sys/kernel").mkdir(parents=True)
    (root / "proc/sys/kernel/kptr_restrict").write_text("2\n")
    for d in ("nix", "var"):
        (root / d).mkdir()
    return root


def test_cli_check_json_pass(cli: Any, tmp_path: Path) -> None:
    root = host_root(tmp_path, {"kernel.kptr": control("sysctl", {"kernel.kptr_restrict": 2})})
    r = cli("check", "--json", "--root", root, "--only", "sysctl", "exceptions")
    assert r.code == 0, r.out + r.err
    report = json.loads(r.out)
    assert report["schema"] == 1 and report["baseline"]["id"] == "test-v1"
    assert report["checks"] == ["exceptions", "sysctl"] and report["failed"] is False
    assert report["summary"] == {"pass": 2, "drift": 0, "error": 0, "excepted": 0, "skipped": 0}
    CheckReport.model_validate(report)  # the documented model reads it back
    sysctl = next(f for f in report["findings"] if f["check"] == "sysctl")
    assert sysctl["control_ids"] == ["kernel.kptr"] and sysctl["frameworks"]["hipaa"] == ["164.312(d)"]


def test_cli_check_drift_exits_1(cli: Any, tmp_path: Path) -> None:
    root = host_root(tmp_path, {"kernel.kptr": control("sysctl", {"kernel.kptr_restrict": 1})})
    r = cli("check", "--root", root, "--only", "sysctl")  # not a TTY: JSON
    assert r.code == 1
    finding = json.loads(r.out)["findings"][0]
    assert finding["status"] == "drift" and finding["drifted"] is True


def test_cli_check_usage_errors(cli: Any, tmp_path: Path) -> None:
    r = cli("check", "--only", "nope")
    assert r.code == 2 and "unknown check(s): nope" in r.err
    bad = tmp_path / "checks.yaml"
    bad.write_text("backup:\n  kind: tape\n")
    r = cli("check", "--config", bad, "--root", tmp_path, "--only", "backup")
    assert r.code == 2 and f"{bad}:2" in r.err and "backup.kind" in r.err


def test_cli_check_config_files(cli: Any, tmp_path: Path) -> None:
    root = host_root(tmp_path, {})
    bare = tmp_path / "checks.yaml"
    bare.write_text("skip: [backup]\n")
    r = cli("check", "--config", bare, "--root", root, "--only", "backup")
    assert r.code == 0 and json.loads(r.out)["findings"][0]["status"] == "skipped"
    reconciler = root / "etc/nixcomply/reconciler.json"
    reconciler.parent.mkdir(parents=True)
    reconciler.write_text(
        json.dumps({"flake": "git+file:///fleet", "host": "h", "checks": {"skip": ["restore_test"]}})
    )
    r = cli("check", "--root", root, "--only", "restore_test")  # found under the root by default
    assert r.code == 0 and json.loads(r.out)["findings"][0]["status"] == "skipped"


def test_cli_check_list(cli: Any) -> None:
    r = cli("check", "--list")
    assert r.code == 0 and all(name in r.out for name in CHECK_NAMES)


def test_table(tmp_path: Path) -> None:
    m = manifest({"kernel.kptr": control("sysctl", {"kernel.kptr_restrict": 1})})
    root = host_root(tmp_path, {})
    ctx = context(root, manifest=m)
    findings = registry.run_checks(ctx, ["sysctl", "exceptions"])
    report = CheckReport.build(
        findings, generated_at=ctx.now, root=str(root), manifest=m, checks=["exceptions", "sysctl"]
    )
    table = render_table(report)
    lines = table.splitlines()
    assert lines[0].split() == ["STATUS", "CONTROL", "CHECK", "FRAMEWORKS"]
    assert any(
        line.startswith("drift") and "kernel.kptr" in line and "HIPAA 164.312(d)" in line for line in lines
    )
    assert "kernel.kptr_restrict is 2, expected 1" in table
    assert lines[-1] == "2 finding(s) from 2 check(s): 1 pass, 1 drift"


def test_every_shipped_control_speaks_its_checks_language() -> None:
    """Each hipaa-v1 control's expect uses keys its check knows (the contract with the baseline)."""

    baseline = load_baseline(default_baseline()).baseline
    problems = []
    for c in baseline.controls:
        spec = registry.REGISTRY[c.verify.check].spec
        problem = expect_problem(spec, c.verify.expect)
        if problem:
            problems.append(f"{c.id}: {problem}")
    assert problems == []


@pytest.mark.parametrize(
    "unit",
    ["x" * 250 + ".service", "backup@.service", "app.service\n", "ümlaut.service", "a b.service", "app"],
)
def test_the_checks_configuration_knows_units_by_systemds_grammar(unit: str) -> None:
    """One unit-name grammar (nixcomply.host.systemd.validate_unit_name) for the checks'
    configuration, the runbooks and the guard: the checks' own regex took a 254-character
    name or a template that the runbook guard then refused."""
    with pytest.raises(InvalidUnitNameError):
        validate_unit_name(unit)
    for config in (
        {"backup": {"unit": unit}},
        {"logging": {"units": ["systemd-journald.service", unit]}},
        {"time": {"unit": unit}},
    ):
        with pytest.raises(ValidationError, match="invalid unit name"):
            ChecksConfig.model_validate(config)
    assert ChecksConfig.model_validate({"time": {"unit": "chrony-wait.service"}}).time.effective_unit == (
        "chrony-wait.service"
    )
