"""coredump: core dumps cannot leak ePHI from process memory.

Three places decide: systemd-coredump's ``[Coredump]`` settings (``coredump.conf`` and its
drop-ins under ``/etc``, ``/run``, ``/usr/lib``; NixOS writes ``/etc/systemd/coredump.conf``,
``Storage=none`` keeps nothing), ``kernel.core_pattern`` (NixOS sets ``|/bin/false`` when
``systemd.coredump.enable = false``) and ``fs.suid_dumpable`` (0: setuid programs never
dump). Files are read under the root in systemd's order (drop-ins sorted by name across
the directories, a name in an earlier directory hiding the same name later); the last
assignment wins. ``Storage`` unset means systemd's default, ``external``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, Final

from nixcomply.checks.base import CheckSpec, Controls, Outputs, Verdict, per_control
from nixcomply.checks.context import CheckContext
from nixcomply.checks.finding import Finding
from nixcomply.checks.journald_config import parse_cat_config
from nixcomply.checks.sysctl import read_key

NAME: Final = "coredump"
SPEC: Final = CheckSpec(
    name=NAME,
    severity="medium",
    runbook="RB-DRIFT-001",
    expect_keys=frozenset({"storage", "process_size_max", "core_pattern", "suid_dumpable"}),
)
DEFAULT_EXPECT: Final[Mapping[str, Any]] = {"storage": "none"}
CONFIG_DIRS: Final = ("/etc/systemd", "/run/systemd", "/usr/local/lib/systemd", "/usr/lib/systemd")
DEFAULT_STORAGE: Final = "external"


@dataclass(frozen=True)
class CoredumpObservation:
    settings: dict[str, str]
    files: tuple[str, ...]
    core_pattern: str | None
    suid_dumpable: str | None


def config_files(ctx: CheckContext) -> list[PurePosixPath]:
    """coredump.conf (first found) then the drop-ins, as systemd orders them."""
    files: list[PurePosixPath] = []
    for directory in CONFIG_DIRS:
        main = PurePosixPath(directory) / "coredump.conf"
        if ctx.host_path(main).is_file():
            files.append(main)
            break
    dropins: dict[str, PurePosixPath] = {}
    for directory in CONFIG_DIRS:
        base = PurePosixPath(directory) / "coredump.conf.d"
        host = ctx.host_path(base)
        if host.is_dir():
            for entry in host.glob("*.conf"):
                dropins.setdefault(entry.name, base / entry.name)
    return files + [dropins[name] for name in sorted(dropins)]


def _proc(ctx: CheckContext, key: str) -> str | None:
    path = ctx.host_path("/proc/sys") / key.replace(".", "/")
    if not path.exists():
        return None
    return read_key(ctx, key) if path.read_text(encoding="utf-8").strip() else ""


def observe(ctx: CheckContext) -> tuple[CoredumpObservation, Outputs]:
    listing = []
    for path in config_files(ctx):
        listing.append(f"# {path}\n{ctx.host_path(path).read_text(encoding='utf-8', errors='replace')}\n")
    text = "".join(listing) or "# no coredump.conf\n"
    parsed = parse_cat_config(text, section="Coredump")
    observation = CoredumpObservation(
        parsed.settings, parsed.files, _proc(ctx, "kernel.core_pattern"), _proc(ctx, "fs.suid_dumpable")
    )
    return observation, {"coredump_conf": text}


def judge(obs: CoredumpObservation, expect: Mapping[str, Any], ctx: CheckContext) -> Verdict:
    expect = expect or DEFAULT_EXPECT
    have: dict[str, Any] = {
        "storage": obs.settings.get("Storage", DEFAULT_STORAGE).lower(),
        "process_size_max": obs.settings.get("ProcessSizeMax"),
        "core_pattern": obs.core_pattern,
        "suid_dumpable": obs.suid_dumpable,
    }
    expected = {k: str(v).lower() if k == "storage" else str(v) for k, v in expect.items()}
    wrong = [f"{k} is {have[k]!r}, expected {v!r}" for k, v in sorted(expected.items()) if str(have[k]) != v]
    observed = {**have, "files": list(obs.files)}
    if wrong:
        return Verdict("drift", "core dumps: " + "; ".join(wrong), observed, expected)
    return Verdict(
        "pass",
        "core dumps: " + ", ".join(f"{k} {v}" for k, v in sorted(expected.items())),
        observed,
        expected,
    )


def run(ctx: CheckContext, controls: Controls) -> list[Finding]:
    return per_control(ctx, controls, SPEC, observe, judge)
