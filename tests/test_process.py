"""The subprocess gateway, against real programs."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from nixcomply.core import process
from nixcomply.errors import CommandError, CommandNotFoundError, CommandTimeoutError


def test_captures_output_and_status() -> None:
    r = process.run(["sh", "-c", "echo out; echo err >&2; exit 0"])
    assert r.ok
    assert r.stdout == "out\n"
    assert r.stderr == "err\n"
    assert r.argv == ("sh", "-c", "echo out; echo err >&2; exit 0")


def test_nonzero_raises_with_argv_and_stderr() -> None:
    with pytest.raises(CommandError) as info:
        process.run(["sh", "-c", "echo broken pipe dream >&2; exit 3"])
    assert info.value.returncode == 3
    assert info.value.argv[0] == "sh"
    assert "broken pipe dream" in str(info.value)
    assert "exited with status 3" in str(info.value)


def test_check_false_returns_failure() -> None:
    r = process.run(["false"], check=False)
    assert r.returncode == 1
    assert not r.ok


def test_allowed_returncodes() -> None:
    r = process.run(["sh", "-c", "exit 4"], allowed_returncodes=(0, 4))
    assert r.returncode == 4


def test_missing_program_has_hint() -> None:
    with pytest.raises(CommandNotFoundError) as info:
        process.run(["/nonexistent/nix-env", "--version"])
    assert info.value.hint == "install nix-bin"
    assert info.value.exit_code == 2


def test_timeout_kills_and_raises() -> None:
    with pytest.raises(CommandTimeoutError) as info:
        process.run(["sleep", "5"], timeout=0.2, check=False)
    assert "timed out after 0.2 s" in str(info.value)


def test_no_shell_interpretation() -> None:
    r = process.run(["echo", "$HOME; rm -rf /"])
    assert r.stdout == "$HOME; rm -rf /\n"


def test_extra_env_adds_to_environment() -> None:
    r = process.run(["sh", "-c", 'printf %s "$NIXCOMPLY_T"'], extra_env={"NIXCOMPLY_T": "x y"})
    assert r.stdout == "x y"


def test_stdin_is_not_inherited() -> None:
    r = process.run(["cat"], timeout=5)
    assert r.stdout == ""


def test_input_is_passed() -> None:
    assert process.run(["cat"], input="hello").stdout == "hello"


def test_spawn_runs_in_background_and_terminates(tmp_path: Path) -> None:
    log = tmp_path / "log"
    child = process.spawn(
        ["sh", "-c", 'echo "started $GREETING"; exec sleep 30'], env={"GREETING": "hi"}, log_file=log
    )
    deadline = time.monotonic() + 5
    while "started" not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert log.read_text() == "started hi\n"  # env replaced the environment; output in the log
    assert child.poll() is None
    assert process.terminate(child, timeout=5) is True
    assert child.returncode == -signal.SIGTERM


def test_terminate_kills_what_ignores_sigterm(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    child = process.spawn(["sh", "-c", f"trap '' TERM; touch {ready}; while :; do sleep 0.05; done"])
    deadline = time.monotonic() + 5
    while not ready.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert process.terminate(child, timeout=0.3) is False
    assert child.returncode == -signal.SIGKILL


def test_spawn_missing_program_has_hint() -> None:
    with pytest.raises(CommandNotFoundError) as info:
        process.spawn(["/nonexistent/unshare"])
    assert info.value.hint == "install util-linux"
