"""Runbook guardrails: the schema, the hostile corpus, hostile parameters, the shipped runbooks.

Every hostile runbook starts with a step that creates a marker file (or starts a real unit);
each must be refused before that step runs, with a message that names the runbook, the step
and the parameter or argument. RB-BENIGN-001 has the same first step and does create the
marker, so the marker would have shown a step that ran.
"""

from __future__ import annotations

import os
import re
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import pytest
from fixtures_heal import HealWorld
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from conftest import DATA, REPO
from nixcomply.baseline.load import load_baseline
from nixcomply.errors import InputError
from nixcomply.heal import guard
from nixcomply.heal.config import HealConfig
from nixcomply.heal.executor import ExecutionContext, execute
from nixcomply.heal.rules import load_rules
from nixcomply.heal.runbook import Runbook, Step, load_runbook
from nixcomply.model.outcome import RunOutcome

HOSTILE = DATA / "runbooks" / "hostile"
BENIGN = DATA / "runbooks" / "RB-BENIGN-001.yaml"

# Refused when the file is loaded (schema): file line and message.
AT_LOAD: dict[str, tuple[int, str]] = {
    "RB-HOSTILE-001": (13, "steps[1].action: Input should be 'run_command'"),
    "RB-HOSTILE-010": (15, "refers to ${nobody}, which is not a declared parameter"),
    "RB-HOSTILE-011": (16, "argument path of clean_directory takes a path, but parameter where is a string"),
    "RB-HOSTILE-012": (13, "restart_service has no argument 'exec'"),
}
# Refused by the guard before any step runs: where, and what the message says.
AT_GUARD: dict[str, tuple[str, str]] = {
    "RB-HOSTILE-002": ("steps[1] (run_command), argument argv", "contains the shell metacharacter ';'"),
    "RB-HOSTILE-003": ("steps[1] (clean_directory), argument path", "must not contain '..'"),
    "RB-HOSTILE-004": ("parameter target (used by steps[1] (clean_directory))", "through a symlink, outside"),
    "RB-HOSTILE-005": ("rollback[0] (send_alert), argument message", "2000 characters long; at most 1024"),
    "RB-HOSTILE-006": ("steps[1] (restart_service), argument unit", "contains whitespace or control"),
    "RB-HOSTILE-007": ("steps[1] (restart_service), argument unit", "contains whitespace or control"),
    "RB-HOSTILE-008": ("steps[1] (run_command), argument argv", "rm is not on the binary allowlist"),
    "RB-HOSTILE-009": ("steps[1] (run_command), argument argv (from ${marker})", "must be a bare name"),
    "RB-HOSTILE-013": ("steps[1] (clean_directory), argument path (from ${target})", "is the allowed root"),
    "RB-HOSTILE-014": ("steps[1] (restart_service), argument unit", "sshd.service is not on the allowlist"),
    "RB-HOSTILE-015": ("steps[1] (clean_directory), argument path", "is not under an allowed root"),
    "RB-HOSTILE-016": ("rollback[0] (run_command), argument argv", "contains the shell metacharacter '`'"),
    "RB-HOSTILE-017": ("steps[1] (run_command), argument argv", "contains the shell metacharacter '|'"),
}


def test_every_hostile_runbook_is_covered() -> None:
    assert {p.stem for p in HOSTILE.glob("*.yaml")} == set(AT_LOAD) | set(AT_GUARD)


@pytest.mark.parametrize("rid", sorted(AT_LOAD))
def test_hostile_runbooks_fail_schema_validation_with_file_and_line(rid: str) -> None:
    line, message = AT_LOAD[rid]
    path = HOSTILE / f"{rid}.yaml"
    with pytest.raises(InputError) as e:
        load_runbook(path)
    problem = next(p for p in e.value.problems if message in str(p))
    assert problem.file == path
    assert problem.line == line, str(problem)


def _hostile_params(rid: str, heal: HealWorld, marker: Path) -> dict[str, str]:
    params = {"marker": str(marker)}
    if rid == "RB-HOSTILE-004":
        (heal.allowed / "escape").symlink_to(heal.outside)
        params["target"] = str(heal.allowed / "escape")
    if rid == "RB-HOSTILE-013":
        params["target"] = str(heal.allowed)
    if rid == "RB-HOSTILE-017":
        params["unit"] = "t-never-started.service"
    return params


@pytest.mark.parametrize("rid", sorted(AT_GUARD))
def test_hostile_runbooks_are_refused_before_any_step_runs(rid: str, heal: HealWorld) -> None:
    where, message = AT_GUARD[rid]
    marker = heal.allowed / "marker"
    (heal.outside / "keep").write_text("must survive")
    runbook = load_runbook(HOSTILE / f"{rid}.yaml")

    with pytest.raises(guard.GuardError) as e:
        guard.check(runbook, _hostile_params(rid, heal, marker), heal.config())
    text = str(e.value)
    assert f"runbook {rid}, {where}" in text, text
    assert message in text, text

    (heal.allowed / "escape").unlink(missing_ok=True)
    run = execute(runbook, _hostile_params(rid, heal, marker), heal.context())
    assert run.outcome == RunOutcome.REJECTED
    assert run.steps == [] and run.preconditions == [] and run.rollback == []
    assert any(message in r for r in run.refusals)
    assert not marker.exists(), "a step ran although the run was refused"
    assert (heal.outside / "keep").read_text() == "must survive"
    assert heal.alerts.messages() == []


def test_the_benign_control_does_create_its_marker(heal: HealWorld) -> None:
    marker = heal.allowed / "marker"
    scratch = heal.allowed / "scratch"
    scratch.mkdir()
    (scratch / "old").write_text("x")
    run = execute(load_runbook(BENIGN), {"marker": str(marker), "scratch": str(scratch)}, heal.context())
    assert run.outcome == RunOutcome.SUCCESS, run.reason
    assert marker.exists()
    assert list(scratch.iterdir()) == []
    assert set(run.evidence) == {"touched", "cleaned", "disk"}


def test_a_symlinked_path_inside_the_root_that_stays_inside_is_fine(heal: HealWorld) -> None:
    real = heal.allowed / "real"
    real.mkdir()
    (heal.allowed / "alias").symlink_to(real)
    plan = guard.check(
        load_runbook(BENIGN),
        {"marker": str(heal.allowed / "m"), "scratch": str(heal.allowed / "alias")},
        heal.config(),
    )
    assert plan.steps[1].args["path"] == real


# -- hostile parameters ----------------------------------------------------------------------

SERVICE = REPO / "runbooks" / "RB-SERVICE-001.yaml"
DISK = REPO / "runbooks" / "RB-DISK-001.yaml"


def _refusal(runbook: Path, params: dict[str, Any], config: HealConfig) -> str:
    with pytest.raises(guard.GuardError) as e:
        guard.check(load_runbook(runbook), params, config)
    return str(e.value)


@pytest.mark.parametrize(
    ("unit", "message"),
    [
        ("t-a b.service", "contains whitespace or control characters"),
        ("t-a\n.service", "contains whitespace or control characters"),
        ("t-a\x00.service", "contains whitespace or control characters"),
        ("t-a;reboot.service", "only ASCII letters"),
        ("t-$(id).service", "only ASCII letters"),
        ("../t-a.service", "contains '/'"),
        ("t-" + "a" * 300 + ".service", "at most 256 are allowed"),
        ("t-a@.service", "a template"),
        ("t-a.exe", "unknown type suffix"),
        ("sshd.service", "not on the allowlist"),
        ("-t-a.service", "not on the allowlist"),
    ],
)
def test_hostile_unit_parameters(unit: str, message: str, heal: HealWorld) -> None:
    text = _refusal(SERVICE, {"unit": unit}, heal.config(binaries={"journalctl": "/usr/bin/journalctl"}))
    assert text.startswith("runbook RB-SERVICE-001, parameter unit (used by preconditions[0] (capture_state)")
    assert message in text


def test_missing_unknown_and_wrong_type_parameters_are_all_reported(heal: HealWorld) -> None:
    config = heal.config(binaries={"journalctl": "/usr/bin/journalctl"})
    text = _refusal(SERVICE, {"unti": "t-a.service"}, config)
    assert "parameter unti: is not a parameter of this runbook (it takes: unit)" in text
    assert "parameter unit (used by" in text and "is required but was not given" in text
    assert "2 problems" in text
    text = _refusal(SERVICE, {"unit": ["t-a.service"]}, config)
    assert "must be a string or a whole number, not list" in text


def _disk(heal: HealWorld, **params: str) -> dict[str, str]:
    cache = heal.allowed / "cache"
    cache.mkdir(exist_ok=True)
    return {"path": "/", "cache": str(cache), **params}


@pytest.mark.parametrize(
    ("journal_max", "message"),
    [
        ("2G; rm -rf /", "shell metacharacter ';'"),
        ("$(reboot)", "shell metacharacter '$'"),
        ("`reboot`", "shell metacharacter '`'"),
        ("2G|sh", "shell metacharacter '|'"),
        ("2G && reboot", "shell metacharacter '&'"),
        ("2G\nreboot", "control character '\\n'"),
        ("2G\x00", "control character '\\x00'"),
        ("2G\u202e", "control character"),
        ("   ", "empty or only whitespace"),
        ("--vacuum-time=1s", "must not start with '-'"),
        ("x" * 257, "257 characters long; at most 256"),
    ],
)
def test_hostile_string_parameters(journal_max: str, message: str, heal: HealWorld) -> None:
    text = _refusal(DISK, _disk(heal, journal_max=journal_max), heal.config())
    assert text.startswith("runbook RB-DISK-001, parameter journal_max (used by steps[0] (run_command))")
    assert message in text, text


@pytest.mark.parametrize(
    ("cache", "message"),
    [
        ("{allowed}/../outside", "must not contain '..'"),
        ("relative/cache", "must be an absolute path"),
        ("{outside}", "is not under an allowed root"),
        ("{allowed}/link", "through a symlink, outside the allowed roots"),
        ("{allowed}/cache\n", "control character"),
        ("{allowed}/ca*he", "shell metacharacter '*'"),
    ],
)
def test_hostile_path_parameters(cache: str, message: str, heal: HealWorld) -> None:
    (heal.allowed / "link").symlink_to(heal.outside)
    value = cache.format(allowed=heal.allowed, outside=heal.outside)
    text = _refusal(DISK, _disk(heal, cache=value), heal.config())
    assert text.startswith("runbook RB-DISK-001, parameter cache (used by steps[1] (clean_directory))"), text
    assert message in text


def test_the_root_itself_cannot_be_emptied(heal: HealWorld) -> None:
    text = _refusal(DISK, _disk(heal, cache=str(heal.allowed)), heal.config())
    assert "steps[1] (clean_directory), argument path (from ${cache}): is the allowed root" in text


def test_a_mount_must_exist(heal: HealWorld) -> None:
    text = _refusal(DISK, _disk(heal, path=str(heal.tmp / "nope")), heal.config())
    assert "parameter path (used by preconditions[0] (check_disk_space), steps[2]" in text
    assert "does not exist" in text


def test_ints_and_durations_are_bounded() -> None:
    spec = {"type": "int", "description": "n", "minimum": 1, "maximum": 10}
    runbook = _inline({"n": spec, "d": {"type": "duration", "description": "d", "maximum": 3600}})
    config = HealConfig(allowed_roots=[Path("/var/cache")])
    assert guard.check(runbook, {"n": "7", "d": "15m"}, config).params == {"n": 7, "d": 900}
    for n, d, message in [
        ("0", "1", "0 is out of bounds (1..10)"),
        ("11", "1", "11 is out of bounds"),
        ("7x", "1", "'7x' is not a whole number"),
        ("7", "2h", "7200 is out of bounds (0..3600)"),
        ("7", "5 minutes", "is not a duration"),
    ]:
        with pytest.raises(guard.GuardError, match=re.escape(message)):
            guard.check(runbook, {"n": n, "d": d}, config)


def _inline(params: dict[str, Any]) -> Runbook:
    return Runbook.model_validate(
        {
            "id": "RB-INLINE-001",
            "name": "inline",
            "version": 1,
            "severity": "low",
            "description": "built in a test",
            "params": params,
            "steps": [{"action": "send_alert", "description": "say", "params": {"message": "n=${n} d=${d}"}}],
        }
    )


def test_a_runbook_built_in_code_with_an_undeclared_reference_is_refused() -> None:
    runbook = _inline({"n": {"type": "int", "description": "n"}})
    with pytest.raises(guard.GuardError) as e:
        guard.check(runbook, {"n": 1}, HealConfig())
    assert (
        "runbook RB-INLINE-001, steps[0] (send_alert), parameter d: is referred to but not declared"
        in str(e.value)
    )


def test_too_many_steps_and_a_too_long_argv_are_refused(heal: HealWorld) -> None:
    benign = load_runbook(BENIGN)
    params = {"marker": str(heal.allowed / "m"), "scratch": str(heal.allowed)}
    with pytest.raises(guard.GuardError, match=r"has 4 steps; at most 3 are allowed"):
        guard.check(benign, params, heal.config(max_steps=3))
    long_argv = _inline({"n": {"type": "int", "description": "n"}, "d": {"type": "int", "description": "d"}})
    step = Step.model_validate(
        {"action": "run_command", "description": "long", "params": {"argv": ["echo", *["x"] * 40]}}
    )
    with pytest.raises(guard.GuardError, match=r"has 41 elements; at most 32"):
        guard.check(long_argv.model_copy(update={"steps": [step]}), {"n": 1, "d": 1}, heal.config())


def test_a_configured_binary_that_does_not_exist_is_refused(heal: HealWorld) -> None:
    text = _refusal(DISK, _disk(heal), heal.config(binaries={"journalctl": "/nonexistent/journalctl"}))
    assert "journalctl is configured as /nonexistent/journalctl, which is not an executable file" in text


_SAFE = st.text(
    alphabet=st.characters(whitelist_categories=("Lu", "Ll", "Nd"), whitelist_characters="=.,:/@+%_ "),
    min_size=1,
    max_size=40,
).filter(lambda s: s.strip() != "")


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=1, max_size=40))
def test_string_parameters_property(value: str) -> None:
    """A string is accepted exactly when it is non-blank, printable, free of shell
    metacharacters and does not start with '-'."""
    runbook = _inline(
        {"n": {"type": "string", "description": "n"}, "d": {"type": "string", "description": "d"}}
    )
    acceptable = (
        bool(value.strip())
        and value.isprintable()
        and not set(value) & guard.METACHARACTERS
        and not value.startswith("-")
    )
    if acceptable:
        assert guard.check(runbook, {"n": value, "d": "x"}, HealConfig()).params["n"] == value
    else:
        with pytest.raises(guard.GuardError, match="parameter n"):
            guard.check(runbook, {"n": value, "d": "x"}, HealConfig())


@settings(max_examples=100, deadline=None)
@given(_SAFE, st.sampled_from([*sorted(guard.METACHARACTERS), "\n", "\t", "\x00", "\x1b"]), _SAFE)
def test_argv_elements_with_any_metacharacter_are_refused(left: str, bad: str, right: str) -> None:
    runbook = _inline({"n": {"type": "int", "description": "n"}, "d": {"type": "int", "description": "d"}})
    step = Step.model_validate(
        {
            "action": "run_command",
            "description": "bad",
            "params": {"argv": ["echo", "ok", left + bad + right]},
        }
    )
    config = HealConfig(binaries={"echo": "/bin/echo"})
    with pytest.raises(guard.GuardError, match=r"steps\[0\] \(run_command\), argument argv: argv\[2\]"):
        guard.check(runbook.model_copy(update={"steps": [step]}), {"n": 1, "d": 1}, config)


# -- the shipped runbooks --------------------------------------------------------------------

REPRESENTATIVE: dict[str, dict[str, str]] = {
    "RB-BACKUP-001": {"unit": "restic-backups-clinic.service"},
    "RB-CERT-001": {"acme_unit": "acme-portal.clinic.example.service", "service": "nginx.service"},
    "RB-DISK-001": {"path": "/var"},
    "RB-DRIFT-001": {},
    "RB-FIREWALL-001": {},
    "RB-RESTORE-001": {
        "restore_unit": "nixcomply-restore-test.service",
        "scratch": "/var/lib/nixcomply/restore-test/scratch",
        "sample": "/var/lib/nixcomply/restore-test/sample",
    },
    "RB-SERVICE-001": {"unit": "sshd.service"},
    "RB-TIMESYNC-001": {},
}


def test_every_shipped_runbook_validates_and_has_representative_params() -> None:
    ids = {load_runbook(p).id for p in sorted((REPO / "runbooks").glob("RB-*.yaml"))}
    assert ids == set(REPRESENTATIVE)


@pytest.mark.parametrize("rid", sorted(REPRESENTATIVE))
def test_every_shipped_runbook_passes_the_default_guard_in_a_dry_run(rid: str, tmp_path: Path) -> None:
    """The default allowlists (units, roots) fit the shipped runbooks; paths are taken under
    a host root, here a temporary directory."""
    root = tmp_path / "host"
    for d in (
        "var/cache/nixcomply",
        "var/lib/nixcomply/restore-test/scratch",
        "var/lib/nixcomply/restore-test/sample",
    ):
        (root / d).mkdir(parents=True)
    defaults = HealConfig()
    config = defaults.model_copy(
        update={
            "binaries": {
                name: os.path.join("/usr/bin", name) for name in ("chronyc", "journalctl", "restic", "borg")
            }
            | {"nft": "/usr/sbin/nft"}
        }
    )

    runbook = load_runbook(REPO / "runbooks" / f"{rid}.yaml")
    run = execute(runbook, REPRESENTATIVE[rid], ExecutionContext(config=config, root=root), dry_run=True)
    assert run.outcome == RunOutcome.PLANNED, run.refusals
    assert len(run.all_steps()) == len(runbook.preconditions) + len(runbook.steps) + len(runbook.rollback)
    for step in run.all_steps():
        assert step.would and step.outcome == "planned" and step.attempts == 0
        for value in step.params.values():
            if isinstance(value, str) and value.startswith("/") and not value.startswith("/usr"):
                assert value.startswith(str(root)), (
                    f"{step.section}[{step.index}]: {value} is not under the host root"
                )
    for name, spec in runbook.params.items():
        assert name in run.params or spec.default is None


def test_the_default_rules_pass_only_parameters_the_runbooks_declare() -> None:

    runbooks = {p.stem: load_runbook(p) for p in (REPO / "runbooks").glob("RB-*.yaml")}
    rules = load_rules([REPO / "runbooks" / "rules" / "default.yaml"], runbook_ids=frozenset(runbooks))
    for rule in rules:
        if rule.action.runbook is not None:
            declared = set(runbooks[rule.action.runbook].params)
            assert set(rule.action.params) <= declared, rule.id
            required = {
                k for k, v in runbooks[rule.action.runbook].params.items() if v.required and v.default is None
            }
            assert required <= set(rule.action.params), rule.id


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"allowed_roots": ["/"]}, "/ cannot be an allowed root"),
        ({"allowed_roots": ["var/cache"]}, "must be absolute"),
        ({"allowed_roots": ["/var/cache/../.."]}, "must not contain '..'"),
        ({"binaries": {"bin/sh": "/bin/sh"}}, "a bare file name"),
        ({"binaries": {"sh": "sh"}}, "must be an absolute path"),
        ({"allowed_units": ["foo bar.service"]}, "is not a unit name or glob"),
        ({"alowed_units": ["x.service"]}, "Extra inputs are not permitted"),
    ],
)
def test_heal_config_refuses_what_would_loosen_the_guard(settings: dict[str, Any], message: str) -> None:

    with pytest.raises(ValidationError, match=re.escape(message)):
        HealConfig.model_validate(settings)


def test_heal_config_defaults_cover_the_baseline_critical_services() -> None:

    config = HealConfig()
    assert config.enable
    critical = load_baseline(REPO / "baseline" / "hipaa-v1.yaml").baseline.parameters.critical_services
    for unit in critical:
        assert any(fnmatchcase(unit, glob) for glob in config.allowed_units), unit
