from __future__ import annotations

import argparse
import re
import subprocess
import sys

import pytest

from conftest import REPO, Cli
from nixcomply import __version__, errors
from nixcomply import cli as cli_module
from nixcomply.checks.base import CheckError
from nixcomply.errors import EXIT_INTERRUPTED, NixcomplyError


def test_version(cli: Cli) -> None:
    r = cli("--version")
    assert r.code == 0
    assert r.out.strip() == f"nixcomply {__version__}"


def test_no_verb_prints_help_and_exits_2(cli: Cli) -> None:
    r = cli()
    assert r.code == 2
    assert "usage: nixcomply" in r.err


def test_unknown_verb_is_usage_error(cli: Cli) -> None:
    r = cli("frobnicate")
    assert r.code == 2
    assert "invalid choice" in r.err


def test_module_entry_point() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "nixcomply", "--version"], capture_output=True, text=True, check=False
    )
    assert r.returncode == 0
    assert __version__ in r.stdout


def test_exit_codes_are_one_table_the_readme_states() -> None:

    table = {name: value for name, value in vars(errors).items() if name.startswith("EXIT_")}
    assert len(set(table.values())) == len(table), table
    assert set(table.values()) == {0, 1, 2, 3, 70, 74, 75, 130, 141}
    readme = (REPO / "README.md").read_text()
    sentence = readme[readme.index("Exit codes: ") :].split("\n\n")[0]
    assert {int(n) for n in re.findall(r"\b(\d+) ", sentence)} == set(table.values())
    doc = errors.__doc__ or ""
    assert all(f"``{name}``" in doc for name in table), "every code is documented in errors.py"


def test_interrupt_exits_130_and_check_errors_are_deliberate(monkeypatch: pytest.MonkeyPatch) -> None:

    def interrupted(_args: argparse.Namespace) -> int:
        raise KeyboardInterrupt

    def check_failed(_args: argparse.Namespace) -> int:
        raise CheckError("sysctl kernel.x does not exist")

    for handler, code in ((interrupted, EXIT_INTERRUPTED), (check_failed, 1)):
        parser = argparse.ArgumentParser()
        parser.set_defaults(handler=handler)
        monkeypatch.setattr(cli_module, "build_parser", lambda parser=parser: parser)
        assert cli_module.main([]) == code
    assert issubclass(CheckError, NixcomplyError)
