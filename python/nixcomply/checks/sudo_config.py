"""sudo_config: whether wheel members need a password for sudo, and whether only wheel
members can execute sudo at all.

NixOS's ``security.sudo`` writes ``/etc/sudoers`` with the rule
``%wheel ALL=(ALL:ALL) SETENV: ALL``, or ``NOPASSWD:SETENV: ALL`` when
``wheelNeedsPassword = false``; ``extraRules`` and ``extraConfig`` add lines. The file is
parsed here (``#include``/``@includedir`` followed under the root): a user specification
that applies to wheel (``%wheel``, ``ALL``, ``%#GID``, or a ``User_Alias`` holding them) with a
``NOPASSWD`` tag, or ``Defaults`` with ``!authenticate`` for them, means wheel does not need
a password.

``security.sudo.execWheelOnly`` does not change sudoers: it installs the setuid wrapper
``/run/wrappers/bin/sudo`` with group ``wheel`` and permissions ``u+rx,g+x`` (mode 4510)
instead of ``o+x`` as well (4511). Only wheel can execute it when it is setuid, group wheel,
and not executable by others.
"""

from __future__ import annotations

import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Final

from nixcomply.checks.base import CheckSpec, Controls, Outputs, Verdict, expect_bool, per_control
from nixcomply.checks.context import CheckContext
from nixcomply.checks.finding import Finding

NAME: Final = "sudo_config"
SPEC: Final = CheckSpec(
    name=NAME,
    severity="high",
    runbook="RB-DRIFT-001",
    expect_keys=frozenset({"wheel_requires_password", "exec_wheel_only"}),
    needs_control=True,
)
SUDOERS: Final = PurePosixPath("/etc/sudoers")
WRAPPER: Final = PurePosixPath("/run/wrappers/bin/sudo")
_MAX_INCLUDE_DEPTH: Final = 8
_ALIAS: Final = re.compile(r"^(User_Alias|Runas_Alias|Host_Alias|Cmnd_Alias|Cmd_Alias)\s+(.*)$")
_INCLUDE: Final = re.compile(r"^[#@](include|includedir)\s+(\S.*)$")
_DEFAULTS: Final = re.compile(r"^Defaults([:@!>]\S+)?\s*(.*)$")


@dataclass
class Sudoers:
    """What the sudoers files say about wheel."""

    wheel_rules: list[str] = field(default_factory=list)
    nopasswd_rules: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    user_aliases: dict[str, list[str]] = field(default_factory=dict)

    @property
    def wheel_requires_password(self) -> bool:
        return not self.nopasswd_rules


def _logical_lines(text: str) -> list[str]:
    lines = []
    for raw in text.replace("\\\n", " ").splitlines():
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#") and not _INCLUDE.match(line) and not re.match(r"^#\d", line):
            continue
        line = re.sub(r"\s+#(?!\d).*$", "", line)  # a trailing comment (not a #uid)
        if line:
            lines.append(line)
    return lines


def _split_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def _applies_to_wheel(
    users: list[str], aliases: Mapping[str, list[str]], wheel_gid: int | None, depth: int = 0
) -> bool:
    for user in users:
        name = user.lstrip("!")  # a negation still names wheel, keep it conservative
        if name in ("ALL", "%wheel", "%:wheel") or (wheel_gid is not None and name == f"%#{wheel_gid}"):
            return True
        if (
            name in aliases
            and depth < _MAX_INCLUDE_DEPTH
            and _applies_to_wheel(aliases[name], aliases, wheel_gid, depth + 1)
        ):
            return True
    return False


def parse_sudoers(
    text: str, sudoers: Sudoers | None = None, *, wheel_gid: int | None = None
) -> tuple[Sudoers, list[str]]:
    """Parse one sudoers file into ``sudoers``; returns it and the include directives found
    (``include PATH`` / ``includedir PATH``) for the caller to follow."""
    result = sudoers if sudoers is not None else Sudoers()
    includes: list[str] = []
    lines = _logical_lines(text)
    if not lines:
        raise ValueError("no sudoers directive at all")
    for line in lines:
        include = _INCLUDE.match(line)
        if include:
            includes.append(f"{include.group(1)} {include.group(2).strip()}")
            continue
        alias = _ALIAS.match(line)
        if alias:
            kind, body = alias.groups()
            for definition in body.split(":"):
                name, sep, members = definition.partition("=")
                if not sep or not re.fullmatch(r"[A-Z][A-Z0-9_]*", name.strip()):
                    raise ValueError(f"malformed {kind}: {line[:80]!r}")
                if kind == "User_Alias":
                    result.user_aliases[name.strip()] = _split_list(members)
            continue
        defaults = _DEFAULTS.match(line)
        if defaults and line.startswith("Defaults"):
            scope, settings = defaults.groups()
            applies = scope is None or (
                scope.startswith(":")
                and _applies_to_wheel(_split_list(scope[1:]), result.user_aliases, wheel_gid)
            )
            if applies and "!authenticate" in settings.replace(" ", ""):
                result.nopasswd_rules.append(line)
                result.wheel_rules.append(line)
            continue
        left, sep, right = line.partition("=")
        if not sep:
            raise ValueError(f"not a sudoers directive: {line[:80]!r}")
        who = re.sub(r"\s*,\s*", ",", left.strip()).split()
        if len(who) != 2 or not right.strip():
            raise ValueError(f"malformed user specification: {line[:80]!r}")
        if _applies_to_wheel(_split_list(who[0]), result.user_aliases, wheel_gid):
            result.wheel_rules.append(line)
            if re.search(r"(?<![A-Z_])NOPASSWD\s*:", right):
                result.nopasswd_rules.append(line)
    return result, includes


def read_sudoers(ctx: CheckContext, wheel_gid: int | None) -> tuple[Sudoers | None, Outputs]:
    """All sudoers files under the root, includes followed; None when there is no sudoers."""
    sudoers = Sudoers()
    outputs: Outputs = {}
    todo: list[tuple[PurePosixPath, int]] = [(SUDOERS, 0)]
    if not ctx.host_path(SUDOERS).exists():
        return None, {}
    while todo:
        path, depth = todo.pop(0)
        host = ctx.host_path(path)
        text = host.read_text(encoding="utf-8", errors="replace")
        try:
            _, includes = parse_sudoers(text, sudoers, wheel_gid=wheel_gid)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None
        sudoers.files.append(str(path))
        outputs[f"sudoers{'' if depth == 0 else '_' + str(len(outputs))}"] = f"# {path}\n{text}"
        if depth >= _MAX_INCLUDE_DEPTH:
            continue
        for directive in includes:
            kind, _, target = directive.partition(" ")
            target_path = PurePosixPath(target) if target.startswith("/") else path.parent / target
            if kind == "include":
                if ctx.host_path(target_path).exists():
                    todo.append((target_path, depth + 1))
            else:
                directory = ctx.host_path(target_path)
                if directory.is_dir():
                    # sudo skips names with a dot or ending in ~ (editor backups)
                    for entry in sorted(directory.iterdir()):
                        if "." not in entry.name and not entry.name.endswith("~") and entry.is_file():
                            todo.append((target_path / entry.name, depth + 1))
    return sudoers, outputs


def group_of(ctx: CheckContext, gid: int) -> str | None:
    try:
        text = ctx.host_path("/etc/group").read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    for line in text.splitlines():
        fields = line.split(":")
        if len(fields) >= 3 and fields[2] == str(gid):
            return fields[0]
    return None


def gid_of(ctx: CheckContext, group: str) -> int | None:
    try:
        text = ctx.host_path("/etc/group").read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    for line in text.splitlines():
        fields = line.split(":")
        if len(fields) >= 3 and fields[0] == group and fields[2].isdigit():
            return int(fields[2])
    return None


@dataclass(frozen=True)
class Wrapper:
    exists: bool
    mode: str | None = None  # octal, e.g. "4510"
    group: str | None = None

    @property
    def wheel_only(self) -> bool:
        if not self.exists or self.mode is None:
            return False
        mode = int(self.mode, 8)
        return (
            bool(mode & stat.S_ISUID)
            and self.group == "wheel"
            and not mode & stat.S_IXOTH
            and bool(mode & stat.S_IXGRP)
        )


def read_wrapper(ctx: CheckContext, path: Path) -> Wrapper:
    try:
        st = path.stat()
    except FileNotFoundError:
        return Wrapper(False)
    return Wrapper(True, f"{stat.S_IMODE(st.st_mode):o}", group_of(ctx, st.st_gid) or str(st.st_gid))


@dataclass(frozen=True)
class SudoObservation:
    sudoers: Sudoers | None
    wrapper: Wrapper


def observe(ctx: CheckContext) -> tuple[SudoObservation, Outputs]:
    sudoers, outputs = read_sudoers(ctx, gid_of(ctx, "wheel"))
    return SudoObservation(sudoers, read_wrapper(ctx, ctx.host_path(WRAPPER))), outputs


def judge(obs: SudoObservation, expect: Mapping[str, Any], ctx: CheckContext) -> Verdict:
    want_password = expect_bool(expect, "wheel_requires_password")
    want_wheel_only = expect_bool(expect, "exec_wheel_only")
    if want_password is None and want_wheel_only is None:
        raise ValueError("the control's expect has neither wheel_requires_password nor exec_wheel_only")
    if obs.sudoers is None and not obs.wrapper.exists:
        return Verdict("skipped", "sudo is not installed on this host (no /etc/sudoers, no sudo wrapper)")
    wrapper = obs.wrapper
    observed: dict[str, Any] = {
        "wheel_requires_password": obs.sudoers.wheel_requires_password if obs.sudoers else None,
        "exec_wheel_only": wrapper.wheel_only,
        "wrapper": {
            "path": str(WRAPPER),
            "exists": wrapper.exists,
            "mode": wrapper.mode,
            "group": wrapper.group,
        },
        "nopasswd_rules": obs.sudoers.nopasswd_rules if obs.sudoers else [],
        "files": obs.sudoers.files if obs.sudoers else [],
    }
    expected = {
        k: v
        for k, v in (("wheel_requires_password", want_password), ("exec_wheel_only", want_wheel_only))
        if v is not None
    }
    wrong = []
    if want_password is not None:
        if obs.sudoers is None:
            wrong.append(f"{SUDOERS} is missing")
        elif obs.sudoers.wheel_requires_password != want_password:
            if want_password:
                wrong.append(f"wheel can sudo without a password ({obs.sudoers.nopasswd_rules[0][:80]})")
            else:
                wrong.append("wheel needs a password for sudo")
    if want_wheel_only is not None and wrapper.wheel_only != want_wheel_only:
        if not wrapper.exists:
            wrong.append(f"{WRAPPER} is missing")
        else:
            wrong.append(
                f"{WRAPPER} is mode {wrapper.mode} group {wrapper.group}, "
                + ("not wheel-only (expected 4510 group wheel)" if want_wheel_only else "wheel-only")
            )
    if wrong:
        return Verdict("drift", "sudo: " + "; ".join(wrong), observed, expected)
    return Verdict("pass", "sudo: " + ", ".join(f"{k} {v}" for k, v in expected.items()), observed, expected)


def run(ctx: CheckContext, controls: Controls) -> list[Finding]:
    return per_control(ctx, controls, SPEC, observe, judge)
