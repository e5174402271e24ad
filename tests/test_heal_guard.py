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
from nixcomply.heal import guard, programs
from nixcomply.heal.config import HealConfig
from nixcomply.heal.executor import ExecutionContext, execute
from nixcomply.heal.rules import load_rules
from nixcomply.heal.runbook import Action, Runbook, Step, load_runbook, load_runbook_source
from nixcomply.model.outcome import RunOutcome

HOSTILE = DATA / "runbooks" / "hostile"
BENIGN = DATA / "runbooks" / "RB-BENIGN-001.yaml"

# Refused when the file is loaded (schema and the argv builders): file line and message.
AT_LOAD: dict[str, tuple[int, str]] = {
    "RB-HOSTILE-001": (13, "steps[1].action: Input should be 'run_command'"),
    "RB-HOSTILE-002": (13, "--vacuum-size: '1G; rm -rf /' is not a size"),
    "RB-HOSTILE-003": (13, "argument path must be an absolute path without '..'"),
    "RB-HOSTILE-006": (13, "contains whitespace or control characters"),
    "RB-HOSTILE-007": (13, "contains whitespace or control characters"),
    "RB-HOSTILE-008": (13, "rm is not a program runbooks may run"),
    "RB-HOSTILE-009": (13, "'/usr/bin/touch': name the program (like journalctl), not a path"),
    "RB-HOSTILE-010": (15, "refers to ${nobody}, which is not a declared parameter"),
    "RB-HOSTILE-011": (16, "argument path of clean_directory takes a path, but parameter where is a string"),
    "RB-HOSTILE-012": (13, "restart_service has no argument 'exec'"),
    "RB-HOSTILE-016": (17, "echo is not a program runbooks may run"),
    "RB-HOSTILE-018": (13, "borg is not a program runbooks may run"),
    "RB-HOSTILE-019": (13, "restic is not a program runbooks may run"),
    "RB-HOSTILE-020": (14, "a parameter may only fill an option's value"),
    "RB-HOSTILE-021": (13, "'1G --file=/etc/shadow' is not a size"),
    "RB-HOSTILE-022": (13, "'flush ruleset' is not allowed: nft list ruleset"),
    "RB-HOSTILE-023": (10, "constraints.cooldown_seconds: Input should be a finite number"),
}
# Refused by the guard whatever the parameters (so `runbook validate` refuses them too):
# where, and what the message says.
AT_VALIDATE: dict[str, tuple[str, str]] = {
    "RB-HOSTILE-005": ("rollback[0] (send_alert), argument message", "2000 characters long; at most 1024"),
    "RB-HOSTILE-014": ("steps[1] (restart_service), argument unit", "sshd.service is not on the allowlist"),
    "RB-HOSTILE-015": ("steps[1] (clean_directory), argument path", "is not under an allowed root"),
    "RB-HOSTILE-017": ("steps[1] (clean_directory), argument path", "is not under an allowed root"),
}
# Refused by the guard for the parameters a run is given.
AT_RUN: dict[str, tuple[str, str]] = {
    "RB-HOSTILE-004": ("parameter target (used by steps[1] (clean_directory))", "through a symlink, outside"),
    "RB-HOSTILE-013": ("steps[1] (clean_directory), argument path (from ${target})", "is the allowed root"),
}


def test_every_hostile_runbook_is_covered() -> None:
    assert {p.stem for p in HOSTILE.glob("*.yaml")} == set(AT_LOAD) | set(AT_VALIDATE) | set(AT_RUN)


@pytest.mark.parametrize("rid", sorted(AT_LOAD))
def test_hostile_runbooks_fail_schema_validation_with_file_and_line(rid: str) -> None:
    line, message = AT_LOAD[rid]
    path = HOSTILE / f"{rid}.yaml"
    with pytest.raises(InputError) as e:
        load_runbook(path)
    problem = next((p for p in e.value.problems if message in str(p)), None)
    assert problem is not None, str(e.value)
    assert problem.file == path
    assert problem.line == line, str(problem)


@pytest.mark.parametrize("rid", sorted(AT_VALIDATE))
def test_what_a_run_always_refuses_validation_refuses_with_file_and_line(rid: str, heal: HealWorld) -> None:
    where, message = AT_VALIDATE[rid]
    path = HOSTILE / f"{rid}.yaml"
    runbook, source = load_runbook_source(path)
    with pytest.raises(guard.GuardError) as e:
        guard.check_static(runbook, heal.config(), source=source)
    (problem,) = e.value.problems
    assert problem.file == path and problem.line is not None
    assert f"runbook {rid}, {where}: " in str(problem) and message in str(problem), str(problem)


@pytest.mark.parametrize("rid", sorted(AT_RUN))
def test_what_depends_on_the_parameters_passes_validation(rid: str, heal: HealWorld) -> None:
    runbook, source = load_runbook_source(HOSTILE / f"{rid}.yaml")
    guard.check_static(runbook, heal.config(), source=source)


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


@pytest.mark.parametrize("rid", sorted(AT_VALIDATE | AT_RUN))
def test_hostile_runbooks_are_refused_before_any_step_runs(rid: str, heal: HealWorld) -> None:
    where, message = {**AT_VALIDATE, **AT_RUN}[rid]
    marker = heal.marker()
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
    assert not heal.touched(marker), "a step ran although the run was refused"
    assert (heal.outside / "keep").read_text() == "must survive"
    assert heal.alerts.messages() == []


def test_the_benign_control_does_remove_its_canary(heal: HealWorld) -> None:
    marker = heal.marker()
    scratch = heal.allowed / "scratch"
    scratch.mkdir()
    (scratch / "old").write_text("x")
    run = execute(load_runbook(BENIGN), {"marker": str(marker), "scratch": str(scratch)}, heal.context())
    assert run.outcome == RunOutcome.SUCCESS, run.reason
    assert heal.touched(marker)
    assert list(scratch.iterdir()) == []
    assert set(run.evidence) == {"touched", "listed", "cleaned", "disk"}


def test_a_symlinked_path_inside_the_root_that_stays_inside_is_fine(heal: HealWorld) -> None:
    real = heal.allowed / "real"
    real.mkdir()
    (heal.allowed / "alias").symlink_to(real)
    plan = guard.check(
        load_runbook(BENIGN),
        {"marker": str(heal.allowed / "m"), "scratch": str(heal.allowed / "alias")},
        heal.config(),
    )
    assert plan.steps[2].args["path"] == real


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
    ("journal_max", "where", "message"),
    [
        ("2G; rm -rf /", "argv", "'2G; rm -rf /' is not a size"),
        ("$(reboot)", "argv", "'$(reboot)' is not a size"),
        ("`reboot`", "argv", "is not a size"),
        ("2G|sh", "argv", "is not a size"),
        ("2G --file=/etc/shadow", "argv", "is not a size"),
        ("--vacuum-time=1s", "argv", "is not a size"),
        ("2G\nreboot", "param", "control character '\\n'"),
        ("2G\x00", "param", "control character '\\x00'"),
        ("2G\u202e", "param", "control character"),
        ("   ", "param", "empty or only whitespace"),
        ("x" * 257, "param", "257 characters long; at most 256"),
    ],
)
def test_hostile_string_parameters(journal_max: str, where: str, message: str, heal: HealWorld) -> None:
    """A string parameter is one line of text; what it may become is the grammar of where it
    goes: here the value of journalctl's --vacuum-size, a size."""
    text = _refusal(DISK, _disk(heal, journal_max=journal_max), heal.config())
    if where == "param":
        assert text.startswith("runbook RB-DISK-001, parameter journal_max (used by steps[0] (run_command))")
    else:
        assert text.startswith(
            "runbook RB-DISK-001, steps[0] (run_command), argument argv (from ${journal_max}): --vacuum-size: "
        ), text
    assert message in text, text


@pytest.mark.parametrize(
    ("cache", "message"),
    [
        ("{allowed}/../outside", "must not contain '..'"),
        ("relative/cache", "must be an absolute path"),
        ("{outside}", "is not under an allowed root"),
        ("{allowed}/link", "through a symlink, outside the allowed roots"),
        ("{allowed}/cache\n", "control character"),
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
    params = {"marker": str(heal.marker()), "scratch": str(heal.allowed)}
    with pytest.raises(guard.GuardError, match=r"has 5 steps; at most 3 are allowed"):
        guard.check(benign, params, heal.config(max_steps=3))
    with pytest.raises(guard.GuardError, match=r"has 5 steps; at most 3 are allowed"):
        guard.check_static(benign, heal.config(max_steps=3))
    long_argv = _inline({"n": {"type": "int", "description": "n"}, "d": {"type": "int", "description": "d"}})
    # no form allows that many elements, so only a step built in code, past the schema, can
    # have them; the guard still counts
    step = Step.model_construct(
        action=Action.RUN_COMMAND, description="long", params={"argv": ["chronyc", "makestep", *["x"] * 40]}
    )
    with pytest.raises(guard.GuardError, match=r"has 42 elements; at most 32"):
        guard.check(long_argv.model_copy(update={"steps": [step]}), {"n": 1, "d": 1}, heal.config())


def test_a_runbook_of_more_steps_than_any_host_allows_is_refused_at_load(tmp_path: Path) -> None:
    steps = "".join("  - {action: sync_generation, description: again}\n" for _ in range(300))
    path = tmp_path / "RB-MANY-001.yaml"
    path.write_text(
        "id: RB-MANY-001\nname: many\nversion: 1\nseverity: low\ndescription: d\nsteps:\n" + steps
    )
    with pytest.raises(InputError, match=r"RB-MANY-001.yaml:6: steps: List should have at most 200 items"):
        load_runbook(path)


def test_a_configured_binary_that_does_not_exist_is_refused(heal: HealWorld) -> None:
    text = _refusal(DISK, _disk(heal), heal.config(binaries={"journalctl": "/nonexistent/journalctl"}))
    assert "journalctl is configured as /nonexistent/journalctl, which is not an executable file" in text


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=1, max_size=40))
def test_string_parameters_property(value: str) -> None:
    """A string parameter is accepted exactly when it is one non-blank line of printable
    text; a shell never sees it, so no character is forbidden for what it means to one."""
    runbook = _inline(
        {"n": {"type": "string", "description": "n"}, "d": {"type": "string", "description": "d"}}
    )
    if value.strip() and value.isprintable():
        assert guard.check(runbook, {"n": value, "d": "x"}, HealConfig()).params["n"] == value
    else:
        with pytest.raises(guard.GuardError, match="parameter n"):
            guard.check(runbook, {"n": value, "d": "x"}, HealConfig())


@settings(max_examples=300, deadline=None)
@given(st.text(min_size=1, max_size=30))
def test_an_option_value_from_a_parameter_is_its_grammar_or_refused(value: str) -> None:
    """Whatever a parameter holds, it becomes exactly one argv element ``--vacuum-size=V``
    with V a size, or the run is refused."""
    runbook = _inline(
        {
            "n": {"type": "string", "description": "n", "max_length": 64},
            "d": {"type": "int", "description": "d"},
        }
    )
    step = Step.model_validate(
        {
            "action": "run_command",
            "description": "vacuum",
            "params": {"argv": ["journalctl", "--vacuum-size=${n}"]},
        }
    )
    config = HealConfig(binaries={"journalctl": "/usr/bin/journalctl"})
    bound = runbook.model_copy(update={"steps": [step]})
    if value.strip() and value.isprintable() and re.fullmatch(r"[1-9][0-9]{0,11}[KMGT]?", value):
        plan = guard.check(bound, {"n": value, "d": 1}, config)
        assert plan.steps[0].args["argv"] == ("/usr/bin/journalctl", f"--vacuum-size={value}")
    else:
        with pytest.raises(guard.GuardError):
            guard.check(bound, {"n": value, "d": 1}, config)


_TOKENS = st.sampled_from(
    [
        "--rotate", "--vacuum-size=1G", "--vacuum-time=2d", "--vacuum-files=3", "--sync", "--flush",
        "--file=/etc/shadow", "--directory=/", "--root=/", "-D", "/", "--output=cat", "--rotate=x",
        "makestep", "tracking", "list", "ruleset", "flush", "-f", "/tmp/x", "-h", "127.0.0.1",
        "--rsh", "/bin/sh", "-o", "sftp.command=/bin/sh", "--vacuum-size", "1G", "",
    ]
)  # fmt: skip


@settings(max_examples=500, deadline=None)
@given(st.sampled_from(sorted(programs.PROGRAMS)), st.lists(_TOKENS, max_size=6))
def test_whatever_argv_is_built_every_element_is_an_allowed_word_or_option(
    name: str, args: list[str]
) -> None:
    try:
        built = programs.build([name, *args])
    except programs.ArgvError:
        return
    program = programs.PROGRAMS[name]
    form = next(f for f in program.forms if tuple(built[1 : 1 + len(f.words)]) == f.words)
    assert built[0] == name
    for token in built[1 + len(form.words) :]:
        option = form.option(token.partition("=")[0])
        assert option is not None, token
        assert ("=" in token) == (option.value is not None), token


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
            "binaries": {name: os.path.join("/usr/bin", name) for name in ("chronyc", "journalctl")}
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
