"""The README's commands are real: make targets exist, every CLI verb it shows parses, and CI
runs exactly the README's test command."""

from __future__ import annotations

import re

import pytest

from conftest import REPO, Cli
from nixcomply.server.cli import main as server_main

README = (REPO / "README.md").read_text()


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def commands(language: str) -> list[str]:
    lines = []
    for block in blocks(language):
        for line in block.splitlines():
            command = line.split("#", 1)[0].strip()
            if command:
                lines.append(command)
    return lines


def test_quick_start_is_two_make_targets() -> None:
    quick = commands("sh")[:2]
    assert quick == ["make demo", "make test"], quick
    makefile = (REPO / "Makefile").read_text()
    for command in quick:
        target = command.split()[1]
        assert re.search(rf"^{target}:", makefile, flags=re.M), f"Makefile has no target {target}"


def test_ci_runs_exactly_the_readme_test_command() -> None:
    ci = (REPO / ".ci" / "run").read_text()
    ci_commands = [
        line.strip() for line in ci.splitlines() if line.strip() and not line.strip().startswith("#")
    ]
    assert ci_commands[-1] == "make test"
    assert "make test" in commands("sh")


def test_every_cli_verb_shown_exists(cli: Cli) -> None:
    shown = [c for c in commands("text") if c.startswith("nixcomply ")]
    assert len(shown) >= 10
    for command in shown:
        words = command.split()[1:]
        verb = [w for w in words[:2] if re.fullmatch(r"[a-z]+", w)]
        if verb and verb[0] == "evidence":
            subs = words[1].split("|")
            for sub in subs:
                r = cli("evidence", sub, "--help")
                assert r.code == 0, f"`nixcomply evidence {sub}` from the README does not exist"
            continue
        r = cli(*verb[:1], "--help") if verb[0] != "baseline" else cli(*verb[:2], "--help")
        assert r.code == 0, f"`{command}` from the README does not parse: {r.err}"


def test_make_demo_runs_the_demo_verb_the_tests_exercise() -> None:
    """`make demo` is the quick start's first command; its recipe is `nixcomply demo`, which
    tests/test_demo.py runs end to end."""
    makefile = (REPO / "Makefile").read_text()
    recipe = makefile.split("\ndemo:", 1)[1].split("\n\n", 1)[0]
    assert "nixcomply demo --dir .demo" in recipe
    assert (REPO / "tests" / "test_demo.py").exists()


def test_every_server_verb_shown_exists(capsys) -> None:  # type: ignore[no-untyped-def]

    shown = [c for c in commands("text") if c.startswith("nixcomply-server ")]
    assert len(shown) >= 8
    for command in shown:
        words = [w for w in command.split()[1:3] if re.fullmatch(r"[a-z]+", w)]
        with pytest.raises(SystemExit) as e:
            server_main([*words, "--help"])
        assert e.value.code == 0, f"`{command}` from the README does not parse"
    capsys.readouterr()


def test_the_package_tree_lists_every_folder() -> None:
    tree = next(b for b in blocks("text") if b.startswith("cli.py errors.py"))
    listed = {m.group(1) for line in tree.splitlines() if (m := re.match(r"([a-z_]+)/\s", line))}
    package = REPO / "python" / "nixcomply"
    present = {p.parent.name for p in package.glob("*/__init__.py")}
    assert present <= listed, f"README's package tree misses {sorted(present - listed)}"
    assert listed - present <= {"server", "uplink"}, (
        f"README lists folders that do not exist: {listed - present}"
    )
