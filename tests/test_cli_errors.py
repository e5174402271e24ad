"""Bad invocations of every verb group, of both commands: one clear line that names the file,
line, field or option, the documented exit code, no traceback and no "internal error"
(tests/test_hostile_input.py has the hostile files themselves: huge, deep, FIFOs)."""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path

import pytest
from fixtures_server import Served

from conftest import Cli
from nixcomply.errors import EXIT_IO, EXIT_TEMPFAIL, EXIT_USAGE
from nixcomply.server import cli as server_cli
from nixcomply.server.cli import main as server_main


@pytest.fixture
def files(tmp_path: Path) -> Path:
    """Bad inputs of each kind."""
    (tmp_path / "trailing.json").write_text('{"flake": "git+file:///x", "host": "h",}')
    (tmp_path / "garbage.json").write_bytes(b"\x00\xff not text")
    (tmp_path / "broken.yaml").write_text("id: x\ncontrols: [\n")
    (tmp_path / "ring.json").write_text('{"keys": [}')
    (tmp_path / "adir").mkdir()
    os.mkfifo(tmp_path / "fifo")
    return tmp_path


def clean(err: str) -> None:
    assert "Traceback" not in err, err
    assert "internal error" not in err, err


def export(*argv: str) -> list[str]:
    return ["evidence", "export", "--from", "2026-01-01", "--to", "2099-01-01", *argv]


def attest(control: str, *argv: str) -> list[str]:
    what = ["--by", "x", "--evidence-url", "u", "--expires", "2027-01-01", "--statement", "s"]
    return ["evidence", "attest", control, *what, *argv]


HOST_CASES = [
    # (argv with {d} for the directory of bad files, exit code, what the message must name)
    (["status", "--config", "{d}/missing.json"], EXIT_USAGE, "{d}/missing.json: no such file"),
    (["plan", "--config", "{d}/trailing.json"], EXIT_USAGE, "{d}/trailing.json:1: invalid JSON"),
    (["reconcile", "--config", "{d}/adir"], EXIT_USAGE, "{d}/adir: is a directory"),
    (["reset", "--config", "{d}/garbage.json"], EXIT_USAGE, "{d}/garbage.json: not UTF-8"),
    (["daemon", "--config", "{d}/missing.json"], EXIT_USAGE, "{d}/missing.json"),
    (["enroll", "--config", "{d}/missing.json", "--token", "t"], EXIT_USAGE, "{d}/missing.json"),
    (["upload", "--config", "{d}/trailing.json"], EXIT_USAGE, "{d}/trailing.json:1"),
    (["check", "--root", "{d}/nowhere"], EXIT_USAGE, "--root {d}/nowhere: not a directory"),
    (["check", "--only", "nosuch"], EXIT_USAGE, "unknown check(s): nosuch"),
    (["check", "--config", "{d}/broken.yaml"], EXIT_USAGE, "{d}/broken.yaml:3: invalid YAML"),
    (["render", "{d}/broken.yaml"], EXIT_USAGE, "{d}/broken.yaml:3: invalid YAML"),
    (["render", "--nixos-release", "99.99"], EXIT_USAGE, "unknown NixOS release '99.99'"),
    (["render", "-o", "{d}/adir"], EXIT_IO, "{d}/adir: is a directory"),
    (["render", "--check"], EXIT_USAGE, "--check needs -o/--output"),
    (["baseline", "validate", "{d}/broken.yaml", "{d}/missing.yaml"], EXIT_USAGE, "2 problems:"),
    (["baseline", "controls", "{d}/garbage.json"], EXIT_USAGE, "{d}/garbage.json: not UTF-8"),
    (["runbook", "validate", "{d}/broken.yaml"], EXIT_USAGE, "{d}/broken.yaml:3"),
    (["runbook", "run", "RB-NOPE"], EXIT_USAGE, "RB-NOPE: neither a runbook id"),
    (["runbook", "run", "RB-SERVICE-001", "--param", "x"], EXIT_USAGE, "--param 'x': expected NAME=VALUE"),
    (["runbook", "list", "--dir", "{d}/adir"], EXIT_USAGE, "no runbooks (RB-*.yaml) in {d}/adir"),
    (["evidence", "verify", "{d}/nowhere"], EXIT_USAGE, "{d}/nowhere: no such directory or packet"),
    (["evidence", "verify", "{d}/broken.yaml"], EXIT_USAGE, "{d}/broken.yaml: not a readable zip file"),
    (
        ["evidence", "verify", "{s}", "--keyring", "{d}/ring.json"],
        EXIT_USAGE,
        "{d}/ring.json:1: invalid JSON",
    ),
    (["evidence", "verify", "{s}", "--keyring", "{d}/missing.json"], EXIT_USAGE, "{d}/missing.json: keyring"),
    (["evidence", "verify", "{s}", "--jobs", "0"], EXIT_USAGE, "--jobs must be at least 1"),
    (["evidence", "verify", "{s}", "--witness", "{d}/missing.vkey"], EXIT_USAGE, "--witness:"),
    (
        ["evidence", "export", "--from", "2026-02-01", "--to", "2026-01-01", "-o", "{d}/p.zip"],
        EXIT_USAGE,
        "--to 2026-01-01 is before --from 2026-02-01",
    ),
    (export("-o", "{d}/adir", "--state-dir", "{s}"), EXIT_IO, "{d}/adir: is a directory"),
    (export("-o", "{d}/no/p.zip", "--state-dir", "{s}"), EXIT_IO, "{d}/no/p.zip"),
    (export("-o", "p.zip", "--state-dir", "{d}/nowhere"), EXIT_USAGE, "{d}/nowhere: no evidence store here"),
    (
        ["evidence", "keygen", "--role", "bundle", "--out", "{d}/k", "--name", "a b"],
        EXIT_USAGE,
        "--name: key name 'a b'",
    ),
    (["evidence", "keygen", "--role", "bundle", "--out", "{d}/adir"], EXIT_USAGE, "{d}/adir exists"),
    (attest("nosuch"), EXIT_USAGE, "'nosuch' is neither a citation"),
    (attest("164.308(a)(5)(i)", "--state-dir", "{s}"), EXIT_USAGE, "--signing-key is needed"),
    (
        ["evidence", "revoke", "k", "--reason", "r", "--state-dir", "{s}"],
        EXIT_USAGE,
        "--signing-key is needed",
    ),
    (
        ["evidence", "rotate", "--role", "log", "--new-key", "{d}/missing.key", "--state-dir", "{s}"],
        EXIT_USAGE,
        "{d}/missing.key",
    ),
]


@pytest.mark.parametrize(
    ("argv", "code", "names"), HOST_CASES, ids=lambda v: " ".join(v[:3]) if isinstance(v, list) else None
)
def test_bad_invocations_of_nixcomply(
    argv: list[str],
    code: int,
    names: str,
    *,
    files: Path,
    cli: Cli,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    fill_in = {"d": str(files)}
    if any("{s}" in a for a in argv):  # the store is made only for the verbs that read one
        fill_in["s"] = str(request.getfixturevalue("store_copy"))
    r = cli(*(a.format(**fill_in) for a in argv))
    assert r.code == code, r.err
    assert names.format(**fill_in).lower() in r.err.lower(), r.err
    assert r.err.startswith("nixcomply: error: "), r.err
    clean(r.err)


@pytest.mark.parametrize(
    ("argv", "names"),
    [
        (["nosuchverb"], "invalid choice: 'nosuchverb' (choose from 'plan', "),
        (["status", "--bogus"], "unrecognized arguments: --bogus"),
        (["evidence", "verify"], "the following arguments are required: STORE|PACKET"),
        (
            ["evidence", "verify", ".", "--at", "2026-13-01"],
            "--at: '2026-13-01' is not a date like 2026-03-31",
        ),
        (["evidence", "verify", ".", "--jobs", "x"], "--jobs: invalid int value: 'x'"),
        (["evidence", "export", "--from", "2026-01-01"], "required: --to, -o/--output"),
        (["runbook", "run"], "required: ID|FILE"),
        (["evidence"], "usage: nixcomply evidence"),
        ([], "usage: nixcomply"),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else "",
)
def test_usage_errors_exit_2_with_the_verbs_own_words(argv: list[str], names: str, cli: Cli) -> None:
    r = cli(*argv)
    assert r.code == EXIT_USAGE, r.err
    assert "usage: nixcomply" in r.err
    assert names in r.err, r.err
    assert "<Verb." not in r.err, "argparse shows the verbs by name, not their enum's repr"
    clean(r.err)


@pytest.mark.parametrize(
    "argv",
    [
        ["evidence", "verify", "{s}", "--keyring", "{f}"],
        ["evidence", "rotate", "--role", "log", "--new-key", "{f}", "--state-dir", "{s}"],
        ["baseline", "controls", "{f}"],
        ["baseline", "validate", "{f}"],
        ["runbook", "run", "{f}"],
        ["runbook", "validate", "{f}"],
        *([verb, "--config", "{f}"] for verb in ("check", "plan", "reconcile", "reset", "daemon", "upload")),
        ["enroll", "--config", "{f}", "--token", "t"],
        ["render", "--check", "-o", "{f}"],
    ],
    ids=lambda v: " ".join(v[:2]),
)
@pytest.mark.timeout(60)  # a reader that waits on the FIFO fails here, not at the suite's 600 s
def test_a_fifo_for_any_file_argument_is_refused(
    argv: list[str], tmp_path: Path, store_copy: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """tests/test_hostile_input.py runs a few of these as processes (FIFO and device); here
    every verb that reads a file given on the command line, in-process."""
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    fifo = tmp_path / "given"
    os.mkfifo(fifo)
    r = cli(*(a.format(f=fifo, s=store_copy) for a in argv))
    assert r.code == EXIT_USAGE, r.err
    assert str(fifo) in r.err and ("not a regular file" in r.err or "FIFO" in r.err), r.err
    clean(r.err)


SERVER_VERBS = [
    ["status"],
    ["migrate"],
    ["site", "add", "north"],
    ["site", "list"],
    ["host", "invite", "--site", "north", "--host", "h"],
    ["host", "list"],
    ["host", "revoke", "--site", "north", "--host", "h"],
    ["witness", "key"],
    ["serve", "--port", "0"],
]


@pytest.mark.parametrize("verb", SERVER_VERBS, ids=" ".join)
@pytest.mark.timeout(60)
def test_server_verbs_with_a_missing_or_garbage_configuration(
    verb: list[str], files: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for config, names in (
        (files / "missing.json", f"{files}/missing.json: server configuration not found"),
        (files / "garbage.json", f"{files}/garbage.json: not UTF-8"),
        (files / "broken.yaml", f"{files}/broken.yaml:3: invalid YAML"),
        (files / "adir", f"{files}/adir: is a directory"),
        (files / "fifo", f"{files}/fifo: is not a regular file but a FIFO"),
    ):
        assert server_main([*verb, "--config", str(config)]) == EXIT_USAGE
        err = capsys.readouterr().err
        assert names in err, err
        clean(err)


@pytest.mark.parametrize("verb", [v for v in SERVER_VERBS if v[0] not in {"witness", "serve"}], ids=" ".join)
def test_server_verbs_with_an_unreachable_database(
    verb: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Exit 75 (try again later), a hint, and nothing of the URL: it may carry a user name."""
    config = tmp_path / "server.json"
    url = f"postgresql+psycopg://someone@/nixcomply?host={tmp_path}/no-socket-here"
    config.write_text(json.dumps({"database": {"url": url}, "witness": {"name": "w"}}))
    assert server_main([*verb, "--config", str(config)]) == EXIT_TEMPFAIL
    err = capsys.readouterr().err
    assert err.splitlines()[0] == "nixcomply-server: error: cannot reach the database", err
    assert "hint: check that PostgreSQL runs" in err
    assert "someone" not in err and "no-socket-here" not in err
    clean(err)


def test_server_json_outputs_are_their_documented_shapes(
    fleet: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each --json output has exactly the keys of its TypedDict, and times are ISO 8601."""
    config = tmp_path / "server.json"
    config.write_text(fleet.config.model_dump_json())

    def run(*argv: str) -> object:
        assert server_main([*argv, "--config", str(config), "--json"]) == 0
        return json.loads(capsys.readouterr().out)

    added = run("site", "add", "north")
    assert isinstance(added, dict) and set(added) == set(server_cli.SiteJson.__annotations__)
    invited = run("host", "invite", "--site", "north", "--host", "clinic-01")
    assert isinstance(invited, dict) and set(invited) == set(server_cli.InviteJson.__annotations__)
    datetime.fromisoformat(invited["expires_at"])
    sites = run("site", "list")
    assert isinstance(sites, list) and len(sites) == 1
    assert set(sites[0]) == set(server_cli.SiteJson.__annotations__)
    datetime.fromisoformat(sites[0]["created_at"])
    status = run("status")
    assert isinstance(status, dict) and set(status) == set(server_cli.StatusJson.__annotations__)
    with pytest.raises(SystemExit) as e:  # argparse's own exit: no --json where none is printed
        server_main(["migrate", "--json", "--config", str(config)])
    assert e.value.code == EXIT_USAGE
    assert "unrecognized arguments: --json" in capsys.readouterr().err


def test_a_missing_configuration_says_where_it_comes_from(
    files: Path, cli: Cli, capsys: pytest.CaptureFixture[str]
) -> None:
    """A first look at a machine without the NixOS module: the hint says what writes the
    file and how to name another."""
    r = cli("status", "--config", files / "missing.json")
    assert r.code == EXIT_USAGE
    assert r.err.splitlines()[1] == (
        "nixcomply: hint: the NixOS module writes it (nixcomply.reconciler.enable = true); "
        "elsewhere pass --config FILE"
    )
    assert server_main(["host", "list", "--config", str(files / "missing.json")]) == EXIT_USAGE
    assert (
        "hint: the NixOS module writes it (services.nixcomply-server.enable = true)"
        in capsys.readouterr().err
    )
