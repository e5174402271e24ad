"""Every command the README shows is one CI runs, and works as written.

Each line of a fenced ``sh`` or ``text`` block is a command (or a tree of the layout), and
each command is held to one of these, strongest first:

- run as written: the quick start's two make targets (``.ci/run`` runs ``make test``;
  ``make demo`` is ``nixcomply demo``, which tests/test_demo.py runs), the commands to look
  at the demo again (tests/test_demo.py runs them verbatim in a shell, from where the demo
  ran), the evidence-key and the server-operator blocks (run here, with ``/var/lib`` moved
  into a temporary directory, the server's verbs against a real PostgreSQL);
- parsed as written by the real parser, every word of it, for the commands that need a
  provisioned NixOS host (``/etc/nixcomply``, ``/var/lib/nixcomply``): their verbs are run
  by their own tests (tests/test_evidence_cli.py, test_uplink.py, test_reconcile_real.py);
- exempt, with the reason in ``EXEMPT``: commands that are not nixcomply's.

The tables of verbs are generated from the parsers (tests/clidoc.py, ``make render``) and
checked fresh here; the exit-code table is checked against ``nixcomply.errors``.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import subprocess
from pathlib import Path
from typing import Final

import pytest
from clidoc import TABLES, readme_with_tables, verbs
from fixtures_server import Served, make_host

from conftest import REPO, Cli
from nixcomply import errors
from nixcomply.cli import build_parser
from nixcomply.commands import RECONCILER_CONFIG
from nixcomply.reconcile.config import DEFAULT_CONFIG
from nixcomply.server.cli import build_parser as build_server_parser
from nixcomply.server.cli import main as server_main

README: Final = (REPO / "README.md").read_text()

# Commands that are not nixcomply's, and why CI does not run them as written.
EXEMPT: Final = {
    "journalctl -u nixcomply-reconcile": "reads the journal of a NixOS host running the reconciler",
}
TREE: Final = re.compile(r"^([a-z_]+/|cli\.py )")  # the layout blocks


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def commands(block: str) -> list[str]:
    out = []
    for line in block.splitlines():
        command = line.split(" # ", 1)[0].split("  #", 1)[0].strip()
        if command and not command.startswith("#"):
            out.append(command)
    return out


def all_commands() -> list[str]:
    found = []
    for block in blocks("sh") + blocks("text"):
        if not TREE.match(block):
            found.extend(commands(block))
    return found


def block_with(first: str) -> list[str]:
    """The commands of the one fenced block that holds a line starting with ``first``."""
    (found,) = [
        commands(b) for b in blocks("sh") + blocks("text") if any(c.startswith(first) for c in commands(b))
    ]
    return found


def program(command: str) -> str:
    return Path(shlex.split(command)[0]).name


def parse(command: str) -> argparse.Namespace:
    """``command`` as the real parser reads it, or the test fails naming it."""
    argv = shlex.split(command)
    parser = {"nixcomply": build_parser, "nixcomply-server": build_server_parser}[Path(argv[0]).name]()
    try:
        args = parser.parse_args(argv[1:])
    except SystemExit as e:
        pytest.fail(f"the README's `{command}` does not parse (exit {e.code})")
    assert getattr(args, "handler", None) is not None, f"`{command}` names no verb"
    return args


# -- what each command is held to ------------------------------------------------------------------


def test_quick_start_is_two_make_targets() -> None:
    quick = commands(blocks("sh")[0])
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


def test_ci_and_the_makefile_install_the_same_debian_packages() -> None:
    """What `make demo` installs on a fresh machine is what CI installs (and CI adds `make`,
    which a fresh machine needs to run `make`); python3-venv is among them: Debian's python3
    has no venv module without it."""
    ci = (REPO / ".ci" / "run").read_text().replace("\\\n", " ")
    (install,) = [line for line in ci.splitlines() if line.startswith("apt-get install")]
    ci_packages = {w for w in install.split() if re.fullmatch(r"[a-z0-9][a-z0-9.+-]+", w)} - {
        "apt-get",
        "install",
    }
    makefile = (REPO / "Makefile").read_text().replace("\\\n", " ")
    (line,) = [line for line in makefile.splitlines() if line.startswith("APT_PACKAGES :=")]
    make_packages = set(line.split(":=", 1)[1].split())
    assert ci_packages == make_packages | {"make"}, ci_packages ^ (make_packages | {"make"})
    assert {"python3", "python3-venv"} <= make_packages


def test_make_demo_runs_the_demo_verb_the_tests_exercise() -> None:
    """`make demo` is the quick start's first command; its recipe is `nixcomply demo`, which
    tests/test_demo.py runs end to end (and the commands the README shows after it)."""
    makefile = (REPO / "Makefile").read_text()
    recipe = makefile.split("\ndemo:", 1)[1].split("\n\n", 1)[0]
    assert "$(BIN)/nixcomply demo --dir .demo" in recipe
    assert "readme_after_demo" in (REPO / "tests" / "test_demo.py").read_text()


def test_every_fenced_command_is_accounted_for() -> None:
    after_demo = set(readme_after_demo())
    keys, operator = set(key_commands()), set(operator_commands())
    for command in all_commands():
        if command.startswith("make ") or command in after_demo | keys | operator:
            continue  # run as written (see the module's docstring)
        if program(command) in {"nixcomply", "nixcomply-server"}:
            parse(command)
            continue
        assert command in EXEMPT, f"the README's `{command}` is neither run nor parsed by CI, nor exempt"


def test_every_nixcomply_command_parses_as_written() -> None:
    shown = [c for c in all_commands() if program(c) in {"nixcomply", "nixcomply-server"}]
    assert len(shown) >= 20, shown
    for command in shown:
        parse(command)


def readme_after_demo() -> list[str]:
    """The quick start's commands to look at the demo again (tests/test_demo.py runs them)."""
    return commands(blocks("sh")[1])


def key_commands() -> list[str]:
    return block_with("nixcomply evidence keygen")


def operator_commands() -> list[str]:
    return block_with("nixcomply-server site add")


# -- run as written ----------------------------------------------------------------------------------


def moved(command: str, root: Path) -> list[str]:
    """``command``'s argv with ``/var/lib`` inside ``root`` (the only change)."""
    return [w.replace("/var/lib/", f"{root}/var/lib/") for w in shlex.split(command)]


def test_the_evidence_key_commands_run_as_written(cli: Cli, tmp_path: Path) -> None:
    ran = []
    for command in key_commands():
        argv = moved(command, tmp_path)
        if argv[0] == "nixcomply":
            r = cli(*argv[1:])
            assert r.code == 0, f"{command}: {r.err}"
        else:
            subprocess.run(argv, check=True)
        ran.append(argv[0])
    assert ran == ["install", "nixcomply", "nixcomply"]
    keys = tmp_path / "var/lib/nixcomply-keys"
    assert keys.stat().st_mode & 0o777 == 0o700
    assert {p.name for p in keys.iterdir()} == {"bundle.key", "bundle.key.pub", "log.key", "log.key.pub"}
    ring = json.loads((tmp_path / "var/lib/nixcomply/keyring.json").read_text())
    assert sorted(k["role"] for k in ring["keys"]) == ["bundle", "log"]


def test_the_server_operator_commands_run_as_written(
    fleet: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The technician's block, in order, against a real server and database; the host of
    `host invite` enrolls in between (as the README's host block does), so `host revoke`
    has a host to revoke."""
    config = tmp_path / "server.json"
    config.write_text(fleet.config.model_dump_json())
    outputs: dict[str, str] = {}
    for command in operator_commands():
        argv = moved(command, tmp_path)
        if argv[0] != "nixcomply-server":
            subprocess.run(argv, check=True)
            continue
        code = server_main([*argv[1:], "--config", str(config)])
        out = capsys.readouterr()
        assert code == 0, f"{command}: {out.err}"
        verb = " ".join(argv[1:3])
        outputs[verb] = out.out
        if verb == "host invite":
            token = out.out.splitlines()[0]
            make_host(fleet, tmp_path, argv[argv.index("--host") + 1]).enroll(token)
    assert outputs["witness key"].strip() == fleet.witness.public.vkey
    assert "north-clinic/clinic-01: 0 entries" in outputs["host list"]
    assert "north-clinic/clinic-01 revoked" in outputs["host revoke"]
    assert (tmp_path / "var/lib/nixcomply-server-keys/witness.key").stat().st_mode & 0o777 == 0o600


# -- generated and checked tables ------------------------------------------------------------------


def test_the_tables_of_verbs_are_the_parsers_own() -> None:
    assert readme_with_tables(README) == README, "README's tables of verbs are stale: run `make render`"


def test_help_of_every_verb_is_accurate() -> None:
    """Every verb and option has a help text (no bare argparse defaults), option names
    follow one spelling, and `--config` says the default the verb really reads."""
    assert str(DEFAULT_CONFIG) == RECONCILER_CONFIG
    for prog, (build, _common) in TABLES.items():
        for words, parser, help, _aliases in verbs(build()):
            assert help, f"{prog} {' '.join(words)} has no help line"
            for action in parser._actions:
                name = "/".join(action.option_strings) or action.dest
                if action.option_strings:
                    assert action.help, f"{prog} {' '.join(words)} {name}: no help"
                    assert all(re.fullmatch(r"-[a-z]|--[a-z][a-z-]*", o) for o in action.option_strings), name
                if action.metavar is not None:
                    assert re.fullmatch(r"[A-Z][A-Z_=|.]*", str(action.metavar)), (name, action.metavar)


EXIT_ROW: Final = re.compile(r"^\| (\d+) \| `(EXIT_[A-Z]+)` \| (.+) \|$", flags=re.M)


def test_the_exit_code_table_is_errors_py() -> None:
    table = {name: value for name, value in vars(errors).items() if name.startswith("EXIT_")}
    section = README.split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    rows = {name: int(code) for code, name, _meaning in EXIT_ROW.findall(section)}
    assert rows == table, "README's exit-code table and nixcomply.errors differ"
    assert len(set(table.values())) == len(table), table
    doc = errors.__doc__ or ""
    assert all(f"``{name}``" in doc for name in table), "every code is documented in errors.py"
    assert README.count("| Code | Name | Meaning |") == 1, "one table of exit codes"
    # and both commands' --help end with it, in one line
    said = [int(n) for n in re.findall(r"(\d+) [a-z]", errors.HELP_EXIT_STATUS)]
    assert said == sorted(table.values()), errors.HELP_EXIT_STATUS
    for build in (build_parser, build_server_parser):
        assert build().epilog == errors.HELP_EXIT_STATUS


def test_the_package_tree_lists_every_folder() -> None:
    tree = next(b for b in blocks("text") if b.startswith("cli.py errors.py"))
    listed = {m.group(1) for line in tree.splitlines() if (m := re.match(r"([a-z_]+)/\s", line))}
    package = REPO / "python" / "nixcomply"
    present = {p.parent.name for p in package.glob("*/__init__.py")}
    assert present == listed, f"README's package tree: missing {present - listed}, stale {listed - present}"


def test_no_stale_references() -> None:
    """Every repository path the README names in backquotes exists."""
    for path in re.findall(r"`((?:python|tests|baseline|modules|runbooks|checks|bench)/[^`\s]*)`", README):
        found = list(REPO.glob(path)) if "*" in path else [REPO / path.rstrip("/")]
        assert "<" in path or any(p.exists() for p in found), f"README names {path}, which does not exist"
