"""The subprocess gateway, against real programs."""

from __future__ import annotations

import pytest

from nixcomply import process
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
