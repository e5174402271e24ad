"""Bad input gets one clear error each: exit 2 (74 for what the machine refuses), the file,
line and field, no traceback, never a hang, never the file's content (issue 12.7-12.10).

The hang and memory cases run the real CLI as a process under a memory limit and a generous
timeout: a "billion laughs" document grew memory without bound and hung even the reconcile
cycle, deep nesting exited 70 with a RecursionError, and a FIFO given as input blocked.
"""

from __future__ import annotations

import json
import os
import resource
import select
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, Cli

MEMORY_LIMIT = 1 << 30  # a document that expands must fail long before this
# Linux's memory devices (major 1): what /dev/null, /dev/zero and /dev/full are
DEVICES = {"null": 3, "zero": 5, "full": 7}


@pytest.fixture
def devices(tmp_path: Path) -> dict[str, Path]:
    """Private copies of /dev/null, /dev/zero and /dev/full in a temporary directory (root
    makes them with mknod), so a regression that replaced or followed an output device
    destroys a test's own file, never this machine's /dev/null."""
    if os.geteuid() != 0:
        pytest.skip("making device nodes needs root (CI runs as root)")
    made = {}
    folder = tmp_path / "dev"
    folder.mkdir()
    for name, minor in DEVICES.items():
        path = folder / name
        os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, minor))
        made[name] = path
    return made


def same_device(path: Path, minor: int) -> bool:
    st = os.lstat(path)
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(1, minor)


def nixcomply(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """The CLI as a process with 1 GiB of address space; a hang fails the test by timeout."""

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))

    return subprocess.run(
        [sys.executable, "-m", "nixcomply", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=limit,
        check=False,
    )


def billion_laughs() -> str:
    """342 bytes that expand to 9**9 strings."""
    text = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    previous = "a"
    for name in "bcdefghi":
        text += f"{name}: &{name} [{','.join([f'*{previous}'] * 9)}]\n"
        previous = name
    return text


YAML_VERBS = [
    ("runbook", "validate"),
    ("baseline", "validate"),
    ("render",),
    ("check", "--only", "backup", "--root", "/", "--config"),
]


@pytest.mark.parametrize("verb", YAML_VERBS, ids=lambda v: " ".join(v[:2]))
def test_a_billion_laughs_is_refused_without_growing(verb: tuple[str, ...], tmp_path: Path) -> None:
    path = tmp_path / "lol.yaml"
    path.write_text(billion_laughs())
    assert len(path.read_bytes()) == 342
    r = nixcomply(*verb, path)
    assert r.returncode == 2, r.stderr
    assert f"{path}:1: the document builds more than 200000 values" in r.stderr
    assert "Traceback" not in r.stderr and "MemoryError" not in r.stderr


@pytest.mark.parametrize("verb", YAML_VERBS, ids=lambda v: " ".join(v[:2]))
def test_deep_yaml_is_refused(verb: tuple[str, ...], tmp_path: Path) -> None:
    for name, text in (
        ("flow.yaml", "[" * 5000 + "]" * 5000),
        ("block.yaml", "".join(f"{' ' * i}k:\n" for i in range(80))),
    ):
        path = tmp_path / name
        path.write_text(text)
        r = nixcomply(*verb, path)
        assert r.returncode == 2, r.stderr
        assert str(path) in r.stderr and (
            "nested more than 64 levels" in r.stderr or "nesting depth" in r.stderr
        )
        assert "RecursionError" not in r.stderr and "Traceback" not in r.stderr


def test_deep_json_config_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "reconciler.json"
    path.write_text('{"a":' * 100_000 + "1" + "}" * 100_000)
    r = nixcomply("reconcile", "--config", path)
    assert r.returncode == 2, r.stderr
    assert f"{path}" in r.stderr and "nested more than 64 levels deep" in r.stderr
    assert "RecursionError" not in r.stderr


@pytest.mark.parametrize(
    "args",
    [
        ("runbook", "validate", "{input}"),
        ("baseline", "validate", "{input}"),
        ("render", "{input}"),
        ("reconcile", "--config", "{input}"),
        ("status", "--config", "{input}"),
    ],
    ids=lambda a: " ".join(a[:2]),
)
def test_a_fifo_or_device_given_as_input_is_refused_not_waited_on(
    args: tuple[str, ...], tmp_path: Path, devices: dict[str, Path]
) -> None:
    fifo = tmp_path / "input.fifo"
    os.mkfifo(fifo)
    for given, kind in ((fifo, "FIFO"), (devices["zero"], "character device")):
        r = nixcomply(*(a.format(input=given) for a in args))
        assert r.returncode == 2, r.stderr
        assert f"{given}: is not a regular file but a {kind}" in r.stderr, r.stderr


def test_an_oversized_input_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_text("# " + "x" * (5 << 20) + "\n")
    r = nixcomply("runbook", "validate", path)
    assert r.returncode == 2 and f"{path}: is 524" in r.stderr and "at most 4194304 are read" in r.stderr


def test_an_error_never_shows_the_content_of_the_file(tmp_path: Path, cli: Cli) -> None:
    secret = tmp_path / "shadow"
    secret.write_text(
        "root:$6$s3cr3tHASH$xyz:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\nplain text line\n"
    )
    link = tmp_path / "looks-like.yaml"
    link.symlink_to(secret)
    for args in (
        ("baseline", "validate", link),
        ("runbook", "validate", link),
        ("render", link),
        ("reconcile", "--config", link),
        ("render", "--check", "-o", secret),
    ):
        r = cli(*args)
        assert r.code in (1, 2), (args, r.err)
        assert "s3cr3t" not in r.err + r.out and "daemon:*" not in r.err + r.out, (args, r.err)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '{"flake": "git+file:///f", "host": "h",}',
            "invalid JSON: Expecting property name enclosed in double quotes",
        ),
        (
            '{"flake": "git+file:///f", "host": "h", "dry_run": "yes"}',
            "dry_run: Input should be a valid boolean",
        ),
        (
            '{"flake": "git+file:///f", "host": "h", "build_timeout": Infinity}',
            "Infinity is not a JSON number",
        ),
        ('{"flake": "git+file:///f", "host": "h", "build_timeout": NaN}', "NaN is not a JSON number"),
        (
            '{"flake": "git+file:///f", "host": "h", "build_timeout": "90"}',
            "build_timeout: Input should be a valid number",
        ),
        (
            '{"flake": "git+file:///f",\n "host": "h",\n "host": "g"}',
            ":3: duplicate key 'host' (first given on line 2)",
        ),
        ("flake: git+file:///f\nhost: h\n", "invalid JSON: Expecting value"),
        (
            '{"flake": "git+file:///f",\n "host": "h",\n "health_gate": {"timeout": 1e999}}',
            "health_gate.timeout",
        ),
    ],
)
def test_the_reconciler_config_is_strict_json(text: str, message: str, tmp_path: Path, cli: Cli) -> None:
    path = tmp_path / "reconciler.json"
    path.write_text(text)
    r = cli("reconcile", "--config", path)
    assert r.code == 2, r.err
    assert r.err.startswith(f"nixcomply: error: {path}:"), r.err
    assert message in r.err, r.err
    assert "Traceback" not in r.err


def test_a_baseline_number_nix_cannot_hold_is_refused(tmp_path: Path, cli: Cli) -> None:
    text = (REPO / "baseline" / "hipaa-v1.yaml").read_text()
    for old, new, where in (
        ("\nversion: 1\n", "\nversion: 100000000000000000000000000000000000000\n", "version"),
        (
            "backup_max_age_hours: 24",
            "backup_max_age_hours: 99999999999999999999",
            "parameters.backup_max_age_hours",
        ),
        ("time_max_drift_seconds: 90", "time_max_drift_seconds: .inf", "parameters.time_max_drift_seconds"),
    ):
        assert old in text, old
        path = tmp_path / "hipaa-v1.yaml"
        path.write_text(text.replace(old, new, 1))
        for verb in (("baseline", "validate"), ("render",)):
            r = cli(*verb, path)
            assert r.code == 2, (verb, where, r.err)
            assert f"{where}: " in r.err, r.err


def test_a_value_nix_cannot_hold_is_refused_in_an_option(tmp_path: Path, cli: Cli) -> None:
    text = (REPO / "baseline" / "hipaa-v1.yaml").read_text()
    option = """'boot.kernel.sysctl."kernel.dmesg_restrict"': 1\n"""
    assert option in text
    path = tmp_path / "hipaa-v1.yaml"
    path.write_text(text.replace(option, option.replace(": 1", ": 18446744073709551616"), 1))
    r = cli("baseline", "validate", path)
    assert r.code == 2 and "does not fit in a Nix integer (signed 64-bit)" in r.err, r.err
    assert f"{path}:" in r.err and 'kernel.dmesg_restrict"' in r.err


@pytest.mark.parametrize(
    ("output", "code", "message"),
    [
        ("{tmp}", 74, "{tmp}: is a directory"),
        ("/nonexistent/x.nix", 74, "/nonexistent/x.nix: the directory /nonexistent does not exist"),
        ("{dev}/full", 74, "{dev}/full: No space left on device"),
        ("{tmp}/link", 74, "is a symbolic link; refusing to replace or follow it"),
        ("{tmp}/to-null", 74, "is a symbolic link; refusing to replace or follow it"),
    ],
)
def test_render_output_refusals(
    output: str, code: int, message: str, tmp_path: Path, devices: dict[str, Path]
) -> None:
    (tmp_path / "target").write_text("keep me\n")
    (tmp_path / "link").symlink_to(tmp_path / "target")
    (tmp_path / "to-null").symlink_to(devices["null"])
    given = output.format(tmp=tmp_path, dev=devices["null"].parent)
    r = nixcomply("render", "-o", given)
    assert r.returncode == code, r.stderr
    assert message.format(tmp=tmp_path, dev=devices["null"].parent) in r.stderr
    assert "internal error" not in r.stderr
    assert (tmp_path / "link").is_symlink() and (tmp_path / "target").read_text() == "keep me\n"
    assert (tmp_path / "to-null").is_symlink() and os.readlink(tmp_path / "to-null") == str(devices["null"])
    assert all(same_device(path, DEVICES[name]) for name, path in devices.items())


def test_render_writes_through_a_device_and_never_replaces_it(
    tmp_path: Path, devices: dict[str, Path]
) -> None:
    r = nixcomply("render", "-o", devices["null"])
    assert r.returncode == 0, r.stderr
    assert same_device(devices["null"], DEVICES["null"]), "the device was replaced"
    assert sorted(p.name for p in devices["null"].parent.iterdir()) == sorted(DEVICES), "a temp file was left"
    fifo = tmp_path / "out.fifo"
    os.mkfifo(fifo)
    r = nixcomply("render", "-o", fifo)
    assert r.returncode == 74 and "a FIFO nobody reads" in r.stderr
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        child = subprocess.Popen(
            [sys.executable, "-m", "nixcomply", "render", "-o", str(fifo)], stderr=subprocess.PIPE
        )
        received = b""
        while True:  # until the writer is gone and everything is read
            select.select([reader], [], [], 1.0)
            chunk = os.read(reader, 1 << 16)
            received += chunk
            if not chunk and child.poll() is not None:
                break
        assert child.wait(timeout=120) == 0
        assert received.startswith(b"# Generated by `nixcomply render") and received.endswith(b"}\n")
    finally:
        os.close(reader)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_a_read_only_state_directory_is_an_environment_error(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    ro = tmp_path / "ro"
    ro.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", ro], check=True)
    try:
        config = tmp_path / "reconciler.json"
        config.write_text(json.dumps({"flake": "git+file:///nonexistent", "host": "h", "state_dir": str(ro)}))
        r = nixcomply("reconcile", "--config", config)
        assert r.returncode == 74, r.stderr
        assert (str(ro) in r.stderr and "Read-only file system" in r.stderr) or "read-only" in r.stderr
        assert "internal error" not in r.stderr
    finally:
        subprocess.run(["umount", ro], check=True)


def test_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    """The reader is gone before the first write (``| head`` that has seen enough): no
    traceback, no "internal error", exit 141 like a tool killed by SIGPIPE."""
    server = ("-c", "import sys; from nixcomply.server.cli import main; sys.exit(main())")
    for args in (
        ("-m", "nixcomply", "baseline", "controls"),
        ("-m", "nixcomply", "render"),
        ("-m", "nixcomply", "runbook", "list"),
        ("-m", "nixcomply", "--version"),  # answered before the parsers are built
        (*server, "witness", "keygen", "--name", "w.example/x", "--out", str(tmp_path / "w.key")),
    ):
        child = subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert child.stdout is not None and child.stderr is not None
        child.stdout.close()
        err = child.stderr.read()
        child.stderr.close()
        assert child.wait(timeout=60) == 141, err
        assert err == b"", err
