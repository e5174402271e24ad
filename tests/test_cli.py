from __future__ import annotations

import subprocess
import sys

from nixcomply import __version__


def test_version(cli) -> None:  # type: ignore[no-untyped-def]
    r = cli("--version")
    assert r.code == 0
    assert r.out.strip() == f"nixcomply {__version__}"


def test_no_verb_prints_help_and_exits_2(cli) -> None:  # type: ignore[no-untyped-def]
    r = cli()
    assert r.code == 2
    assert "usage: nixcomply" in r.err


def test_unknown_verb_is_usage_error(cli) -> None:  # type: ignore[no-untyped-def]
    r = cli("frobnicate")
    assert r.code == 2
    assert "invalid choice" in r.err


def test_module_entry_point() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "nixcomply", "--version"], capture_output=True, text=True, check=False
    )
    assert r.returncode == 0
    assert __version__ in r.stdout
