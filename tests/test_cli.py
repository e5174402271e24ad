from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from conftest import Cli
from nixcomply import __version__
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
