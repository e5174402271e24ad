"""The actions one by one, each in a one-step runbook through guard and executor: real files,
real commands, real alerts; ``process.run`` mocked (autospec) only to pin exact argvs."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from fixtures_heal import HealWorld

from nixcomply.core import process
from nixcomply.heal import actions, programs
from nixcomply.heal.actions import ActionEnv, bounded, send_alert
from nixcomply.heal.config import AlertConfig
from nixcomply.heal.executor import ExecutionContext, RunbookRun, StepResult, execute
from nixcomply.heal.runbook import Runbook
from nixcomply.model.outcome import RunOutcome


def one_step(action: str, params: dict[str, Any], *, timeout: float = 30, rollback: bool = False) -> Runbook:
    data: dict[str, Any] = {
        "id": "RB-ACTION-001",
        "name": f"one {action}",
        "version": 1,
        "severity": "low",
        "description": "one step",
        "steps": [
            {
                "action": action,
                "description": f"do {action}",
                "params": params,
                "timeout": timeout,
                "evidence_key": "out",
            }
        ],
    }
    if rollback:
        data["rollback"] = [
            {"action": "send_alert", "description": "say", "params": {"message": "rolled back"}}
        ]
    return Runbook.model_validate(data)


def step(heal: HealWorld, action: str, params: dict[str, Any], **kw: Any) -> tuple[StepResult, RunbookRun]:
    ctx: ExecutionContext = kw.pop("ctx", None) or heal.context()
    run = execute(one_step(action, params, **kw), {}, ctx)
    assert run.outcome != RunOutcome.REJECTED, run.refusals
    return run.steps[0], run


# -- run_command -----------------------------------------------------------------------------


def _program(heal: HealWorld, script: str) -> str:
    """A stand-in for a program's binary (heal.binaries says where a program lives; what it
    is asked to do is still the audited argv)."""
    path = heal.tmp / "program.sh"
    path.write_text(f"#!/bin/sh\n{script}\n")
    path.chmod(0o755)
    return str(path)


def test_run_command_runs_the_rebuilt_argv_without_a_shell_or_the_environment(heal: HealWorld) -> None:
    result = process.Result(("/usr/bin/journalctl",), 0, "", "", 0.01)
    with mock.patch("nixcomply.core.process.run", autospec=True, return_value=result) as run:
        s, _ = step(heal, "run_command", {"argv": ["journalctl", "--vacuum-size=2G", "--rotate"]}, timeout=7)
    argv = ("/usr/bin/journalctl", "--vacuum-size=2G", "--rotate")
    run.assert_called_once_with(argv, check=False, timeout=7, env=programs.ENVIRONMENT)
    assert s.ok and s.command == list(argv) and s.exit_code == 0


def test_a_program_gets_none_of_the_reconcilers_environment(
    heal: HealWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BORG_RSH", "/bin/sh -c id")
    monkeypatch.setenv("LD_PRELOAD", "/tmp/evil.so")
    ctx = heal.context(config=heal.config(binaries={"nft": _program(heal, "env")}))
    s, _ = step(heal, "run_command", {"argv": ["nft", "list", "ruleset"]}, ctx=ctx)
    assert s.ok
    names = {line.partition("=")[0] for line in s.output.splitlines()}
    assert set(programs.ENVIRONMENT) <= names <= {*programs.ENVIRONMENT, "PWD", "SHLVL", "_"}, names


def test_run_command_for_real_captures_bounded_output_and_the_exit_status(heal: HealWorld) -> None:
    printer = _program(heal, "i=0; while [ $i -lt 1000 ]; do printf x; i=$((i+1)); done")
    ctx = heal.context(config=heal.config(max_output_bytes=256, binaries={"nft": printer}))
    s, run = step(heal, "run_command", {"argv": ["nft", "list", "ruleset"]}, ctx=ctx)
    assert s.ok and s.output.startswith("x" * 256) and "744 more bytes not kept" in s.output
    ctx = heal.context(config=heal.config(binaries={"nft": "/bin/false"}))
    s, run = step(heal, "run_command", {"argv": ["nft", "list", "ruleset"]}, ctx=ctx)
    assert not s.ok and s.exit_code == 1 and run.outcome == RunOutcome.FAILED
    assert run.reason.endswith("the runbook has no rollback")


def sleepers(seconds: str) -> list[int]:
    """Pids of `sleep SECONDS` processes on this machine."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")[:2]
        except OSError:
            continue
        if proc.name.isdigit() and argv[-1:] == [seconds.encode()] and argv[0].endswith(b"sleep"):
            found.append(int(proc.name))
    return found


def test_a_command_that_outlives_its_step_timeout_is_killed(heal: HealWorld) -> None:
    # An hour-long sleep: had the step waited for it instead of killing it, the test would
    # hang into pytest's timeout rather than pass late.
    ctx = heal.context(config=heal.config(binaries={"chronyc": _program(heal, "exec sleep 3601")}))
    s, run = step(heal, "run_command", {"argv": ["chronyc", "makestep"]}, timeout=0.3, ctx=ctx, rollback=True)
    assert sleepers("3601") == [], "the timed-out command was killed, not left running"
    assert not s.ok and s.error is not None and "timed out after 0.3 s" in s.error
    assert run.outcome == RunOutcome.ALERT and run.rollback[0].ok


# -- send_alert ------------------------------------------------------------------------------


def test_an_alert_reaches_the_configured_socket(heal: HealWorld) -> None:
    s, _ = step(heal, "send_alert", {"message": "disk full on /var; call me", "priority": "warning"})
    assert s.ok and s.detail == "alert sent via logger (warning)"
    (message,) = heal.alerts.messages(wait=2)
    assert message.startswith("<12>")  # user.warning
    assert message.endswith("nixcomply-alert: disk full on /var; call me")


def _env(heal: HealWorld, **alert: Any) -> ActionEnv:
    def no_systemd() -> Any:
        raise AssertionError("not used")

    return ActionEnv(config=heal.config(alert=AlertConfig(**alert)), systemd=no_systemd, timeout=10)


def test_an_alert_goes_to_the_journal_and_falls_back_to_logger(heal: HealWorld) -> None:
    failed = process.Result(("systemd-cat",), 1, "", "Failed to create stream fd", 0.01)
    ok = process.Result(("logger",), 0, "", "", 0.01)
    with mock.patch("nixcomply.core.process.run", autospec=True, side_effect=[failed, ok]) as run:
        result = send_alert({"message": "hello", "priority": None}, _env(heal))
    assert result.ok and result.data["via"] == "logger"
    assert run.call_args_list == [
        mock.call(
            ["systemd-cat", "-t", "nixcomply-alert", "-p", "crit"],
            check=False,
            timeout=10,
            input="hello\n",
            env=programs.ENVIRONMENT,
        ),
        mock.call(
            ["logger", "--tag", "nixcomply-alert", "--priority", "user.crit", "--socket-errors=on"],
            check=False,
            timeout=10,
            input="hello\n",
            env=programs.ENVIRONMENT,
        ),
    ]


def test_an_alert_nobody_receives_is_a_failed_step(heal: HealWorld) -> None:
    """No journald and no /dev/log here: systemd-cat and logger both fail, for real."""
    if os.path.exists("/dev/log") or os.path.exists("/run/systemd/journal/stdout"):
        pytest.fail("this machine has a syslog or journal socket; the test needs one without")
    result = send_alert({"message": "hello", "priority": "err"}, _env(heal))
    assert not result.ok
    assert "the alert could not be sent" in result.detail
    assert "systemd-cat exited" in result.detail and "logger exited" in result.detail


# -- capture_state ---------------------------------------------------------------------------


def test_capture_state_records_the_ruleset_and_its_hash(heal: HealWorld) -> None:
    ruleset = "table inet filter {\n\tchain input {\n\t\tpolicy drop;\n\t}\n}\n"
    with mock.patch(
        "nixcomply.core.process.run",
        autospec=True,
        return_value=process.Result(("nft",), 0, ruleset, "", 0.01),
    ) as run:
        s, _ = step(heal, "capture_state", {"ruleset": True})
    run.assert_called_once_with(
        ["/usr/sbin/nft", "list", "ruleset"], check=True, timeout=30, env=programs.ENVIRONMENT
    )
    assert s.ok and s.output == ruleset
    assert "ruleset sha256 " + hashlib.sha256(ruleset.encode()).hexdigest() in s.detail


def test_capture_state_with_the_real_nft(heal: HealWorld) -> None:
    real = subprocess.run(["nft", "list", "ruleset"], capture_output=True, text=True, check=False)
    runbook = one_step("capture_state", {"ruleset": True})
    runbook = runbook.model_copy(
        update={"steps": [runbook.steps[0].model_copy(update={"evidence_key": "fw"})]}
    )
    run = execute(runbook, {}, heal.context())
    data = run.evidence["fw"]
    assert isinstance(data, dict)
    if real.returncode == 0:
        assert data["ruleset_sha256"] == hashlib.sha256(real.stdout.encode()).hexdigest()
        assert run.outcome == RunOutcome.SUCCESS
    else:
        assert "ruleset_error" in data and run.outcome == RunOutcome.FAILED


# -- check_disk_space ------------------------------------------------------------------------


def test_check_disk_space_measures_with_statvfs(heal: HealWorld) -> None:
    s, run = step(heal, "check_disk_space", {"path": str(heal.tmp), "min_free_percent": 1})
    vfs = os.statvfs(heal.tmp)
    data = run.evidence["out"]
    assert s.ok and isinstance(data, dict)
    assert data["path"] == str(heal.tmp) and data["total_bytes"] == vfs.f_blocks * vfs.f_frsize
    assert isinstance(data["used_percent"], float) and 0 <= data["used_percent"] <= 100
    assert data["free_percent"] == round(100 - data["used_percent"], 2)
    s, run = step(heal, "check_disk_space", {"path": str(heal.tmp), "min_free_bytes": 2**61})
    assert not s.ok and s.detail.endswith(f"less than {2**61} bytes free")


# -- clean_directory -------------------------------------------------------------------------


def _tree(base: Path, outside: Path) -> None:
    (base / "sub" / "deeper").mkdir(parents=True)
    for rel in ("old.log", "new.log", "sub/old.bin", "sub/deeper/new.bin"):
        (base / rel).write_text(rel)
    (outside / "precious").write_text("never removed")
    (base / "link-out").symlink_to(outside)
    (base / "sub" / "file-link").symlink_to(outside / "precious")
    month_ago = time.time() - 30 * 86400
    for rel in ("old.log", "sub/old.bin", "link-out"):
        os.utime(base / rel, (month_ago, month_ago), follow_symlinks=False)


def test_clean_directory_with_an_age_removes_only_old_files_and_follows_no_symlink(heal: HealWorld) -> None:
    cache = heal.allowed / "cache"
    _tree(cache, heal.outside)
    s, _ = step(heal, "clean_directory", {"path": str(cache), "older_than_days": 7})
    assert s.ok, s.detail
    left = sorted(str(p.relative_to(cache)) for p in cache.rglob("*"))
    assert left == ["new.log", "sub", "sub/deeper", "sub/deeper/new.bin", "sub/file-link"]
    assert (heal.outside / "precious").read_text() == "never removed"


def test_clean_directory_removes_everything_under_it_but_not_itself(heal: HealWorld) -> None:
    cache = heal.allowed / "cache"
    _tree(cache, heal.outside)
    s, _ = step(heal, "clean_directory", {"path": str(cache)})
    assert s.ok and cache.is_dir() and list(cache.iterdir()) == []
    assert "removed 6 files and 2 directories" in s.detail
    assert sorted(p.name for p in heal.outside.iterdir()) == ["precious"]


def test_clean_directory_refuses_a_directory_swapped_for_a_symlink_after_the_check(
    heal: HealWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = heal.allowed / "cache"
    cache.mkdir()
    (heal.outside / "precious").write_text("never removed")

    original = actions.clean_directory

    def swap_then_clean(args: Any, env: ActionEnv) -> Any:
        cache.rmdir()
        cache.symlink_to(heal.outside)  # after the guard resolved it, before the action opens it
        return original(args, env)

    monkeypatch.setitem(actions.ACTIONS, actions.Action.CLEAN_DIRECTORY, swap_then_clean)  # type: ignore[attr-defined]
    s, _ = step(heal, "clean_directory", {"path": str(cache)})
    assert not s.ok and s.error is not None and "became a symlink since it was checked" in s.error
    assert (heal.outside / "precious").read_text() == "never removed"


@pytest.fixture
def deep(heal: HealWorld) -> Iterator[Callable[[Path, int], Path]]:
    """``deep(top, n)``: ``top`` with n nested directories in it and a file at the bottom
    (made through directory descriptors: the path is longer than PATH_MAX); removed with
    rm -rf at the end (shutil.rmtree recurses too)."""
    made: list[Path] = []

    def make(top: Path, levels: int) -> Path:
        top.mkdir(parents=True, exist_ok=True)
        made.append(top)
        fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
        try:
            for _ in range(levels):
                os.mkdir("d", dir_fd=fd)
                sub = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
                os.close(fd)
                fd = sub
            with open(os.open("file", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd), "w") as f:
                f.write("deep down\n")
        finally:
            os.close(fd)
        return top

    yield make
    for top in made:
        subprocess.run(["rm", "-rf", str(top)], check=True)


def test_clean_directory_of_a_tree_deeper_than_it_descends_is_a_bounded_refusal(
    heal: HealWorld, deep: Callable[[Path, int], Path]
) -> None:
    """Whoever writes inside an allowed root can nest directories thousands deep: that was a
    RecursionError (an internal error, and the disk never freed); now the levels below
    MAX_DEPTH are left alone and named, and a shallower tree is removed whole."""
    cache = deep(heal.allowed / "cache", 2000)
    (cache / "old.log").write_text("x" * 1000)
    s, run = step(heal, "clean_directory", {"path": str(cache)})
    assert s.error is None, s.error
    assert not s.ok and "could not be removed" in s.detail
    assert not (cache / "old.log").exists(), "what is within reach is removed"
    out = run.evidence["out"]
    assert isinstance(out, dict)
    errors = out["errors"]
    assert isinstance(errors, list) and any(
        f"nested more than {actions.MAX_DEPTH} directories deep; left alone" in str(e) for e in errors
    ), errors
    shallow = deep(heal.allowed / "shallow", 100)
    s, _ = step(heal, "clean_directory", {"path": str(shallow)})
    assert s.ok, s.detail
    assert list(shallow.iterdir()) == []


def test_checksums_of_trees_deeper_than_it_descends_never_verify(
    heal: HealWorld, deep: Callable[[Path, int], Path]
) -> None:
    reference = deep(heal.allowed / "reference", 1500)
    restored = deep(heal.allowed / "restored", 1500)
    for d in (reference, restored):
        (d / "a.txt").write_text("alpha")
    s = _verify(heal, reference, restored)
    assert s.error is None, s.error
    assert not s.ok and "could not be compared" in s.detail and "nested more than" in s.detail


def test_checksumming_a_huge_sparse_file_keeps_to_the_step_timeout(heal: HealWorld) -> None:
    reference, restored = _pair(heal)
    for d in (reference, restored):
        with (d / "sparse.img").open("wb") as f:
            f.truncate(1 << 40)  # a terabyte of holes: hours of reading
    s, _ = step(
        heal, "verify_checksums", {"restored": str(restored), "reference": str(reference)}, timeout=0.5
    )
    assert not s.ok and s.error is not None and "took longer than the step's timeout" in s.error


# -- verify_checksums ------------------------------------------------------------------------


def _pair(heal: HealWorld) -> tuple[Path, Path]:
    reference, restored = heal.allowed / "reference", heal.allowed / "restored"
    for d in (reference, restored):
        (d / "sub").mkdir(parents=True)
        (d / "a.txt").write_text("alpha")
        (d / "sub" / "b.bin").write_bytes(b"\0" * 5000)
        (d / "link").symlink_to("a.txt")
    return reference, restored


def _verify(heal: HealWorld, reference: Path, restored: Path, **extra: str) -> StepResult:
    s, _ = step(heal, "verify_checksums", {"restored": str(restored), "reference": str(reference), **extra})
    return s


def test_the_result_file_is_never_written_through_a_symlink_put_there_after_the_check(
    heal: HealWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whoever may write inside an allowed root (a backup job, a service's cache) swaps a
    directory of the result file's path for a symlink after the guard resolved it: the
    write must not follow it out of the root (as root, that would replace any file)."""
    reference, restored = _pair(heal)
    state = heal.allowed / "state"
    (state / "sub").mkdir(parents=True)
    victim = heal.outside / "result.json"
    victim.write_text("precious\n")
    original = actions.verify_checksums

    def swap_then_verify(args: Any, env: ActionEnv) -> Any:
        (state / "sub").rmdir()
        (state / "sub").symlink_to(heal.outside)  # after the guard, before the write
        return original(args, env)

    monkeypatch.setitem(actions.ACTIONS, actions.Action.VERIFY_CHECKSUMS, swap_then_verify)  # type: ignore[attr-defined]
    s = _verify(heal, reference, restored, result_file=str(state / "sub" / "result.json"))
    assert not s.ok and s.error is not None and "symlink" in s.error, (s.error, s.detail)
    assert victim.read_text() == "precious\n"
    assert sorted(p.name for p in heal.outside.iterdir()) == ["result.json"], (
        "a temporary file was left outside"
    )


def test_the_result_file_directories_are_made_inside_the_root(heal: HealWorld) -> None:
    reference, restored = _pair(heal)
    result_file = heal.allowed / "new" / "deeper" / "result.json"
    s = _verify(heal, reference, restored, result_file=str(result_file))
    assert s.ok, s.error
    assert json.loads(result_file.read_text())["ok"] is True


def test_identical_trees_match_and_the_result_is_recorded(heal: HealWorld) -> None:
    reference, restored = _pair(heal)
    result_file = heal.allowed / "state" / "result.json"
    s = _verify(heal, reference, restored, result_file=str(result_file))
    assert s.ok and s.detail == "2 files match"
    recorded = json.loads(result_file.read_text())
    assert recorded["ok"] is True and recorded["files_compared"] == 2
    assert set(recorded) == {"finished_at", "ok", "files_compared"}


@pytest.mark.parametrize(
    ("damage", "detail"),
    [
        (lambda r: (r / "a.txt").write_text("alphA"), "0 missing, 0 extra, 1 differing of 2 compared"),
        (lambda r: (r / "sub" / "b.bin").unlink(), "1 missing, 0 extra, 0 differing of 1 compared"),
        (lambda r: (r / "sub" / "c").write_text("new"), "0 missing, 1 extra, 0 differing of 2 compared"),
        (lambda r: ((r / "link").unlink(), (r / "link").symlink_to("/etc/passwd")), "1 differing"),
        (lambda r: ((r / "a.txt").unlink(), (r / "a.txt").symlink_to("sub/b.bin")), "1 differing"),
    ],
)
def test_any_difference_fails(heal: HealWorld, damage: Any, detail: str) -> None:
    reference, restored = _pair(heal)
    damage(restored)
    s = _verify(heal, reference, restored)
    assert not s.ok and detail in s.detail


def test_an_empty_restore_fails(heal: HealWorld) -> None:
    (heal.allowed / "r1").mkdir()
    (heal.allowed / "r2").mkdir()
    s = _verify(heal, heal.allowed / "r1", heal.allowed / "r2")
    assert not s.ok and s.detail == "no file was compared (the restore produced nothing)"


def test_bounded() -> None:
    assert bounded("abc", 10) == "abc"
    assert bounded("é" * 10, 5) == "éé\n[... 15 more bytes not kept]"
