"""accounts: the password fields of the local accounts (``<root>/etc/shadow``).

``expect``: ``no_empty_passwords: true`` (no account's password field is empty: an empty
field lets anyone log in where PAM allows null passwords) and ``locked: [user, ...]`` (those
accounts' password field starts with ``!`` or ``*``: no password login). Only account names
and whether a field is empty or locked are recorded as evidence, never a hash.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from nixcomply.checks.base import (
    CheckError,
    CheckSpec,
    Controls,
    Verdict,
    expect_bool,
    expect_str_list,
    per_control,
)
from nixcomply.checks.context import CheckContext
from nixcomply.checks.finding import Finding

NAME: Final = "accounts"
SPEC: Final = CheckSpec(
    name=NAME,
    severity="high",
    runbook="RB-DRIFT-001",
    expect_keys=frozenset({"no_empty_passwords", "locked"}),
    needs_control=True,
)
SHADOW: Final = "/etc/shadow"


@dataclass(frozen=True)
class Accounts:
    empty: frozenset[str]  # password field empty
    locked: frozenset[str]  # password field starts with ! or *
    names: frozenset[str]


def parse_shadow(text: str) -> Accounts:
    empty: set[str] = set()
    locked: set[str] = set()
    names: set[str] = set()
    for number, raw in enumerate(text.splitlines(), 1):
        if not raw.strip():
            continue
        fields = raw.split(":")
        if len(fields) < 2 or not fields[0]:
            raise ValueError(f"{SHADOW} line {number} is not 'name:password:...'")
        name, password = fields[0], fields[1]
        names.add(name)
        if password == "":
            empty.add(name)
        elif password.startswith(("!", "*")):
            locked.add(name)
    if not names:
        raise ValueError(f"{SHADOW} lists no account")
    return Accounts(frozenset(empty), frozenset(locked), frozenset(names))


def observe(ctx: CheckContext) -> tuple[Accounts, dict[str, str]]:
    path = ctx.host_path(SHADOW)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        raise CheckError(f"{SHADOW} does not exist") from None
    except PermissionError:
        raise CheckError(f"{SHADOW} is not readable: run as root") from None
    return parse_shadow(text), {}  # the file holds password hashes: never kept


def judge(accounts: Accounts, expect: Mapping[str, Any], ctx: CheckContext) -> Verdict:
    no_empty = expect_bool(expect, "no_empty_passwords")
    locked = expect_str_list(expect, "locked") or []
    if not no_empty and not locked:
        raise ValueError("the control's expect asks for nothing (no_empty_passwords, locked)")
    wrong = []
    observed: dict[str, Any] = {}
    if no_empty:
        observed["empty_passwords"] = sorted(accounts.empty)
        if accounts.empty:
            wrong.append(f"empty password: {', '.join(sorted(accounts.empty))}")
    for name in locked:
        state = (
            "locked" if name in accounts.locked else ("absent" if name not in accounts.names else "unlocked")
        )
        observed.setdefault("accounts", {})[name] = state
        if state != "locked":
            wrong.append(f"{name} is {state}, expected a locked password (! or *)")
    expected = {"no_empty_passwords": bool(no_empty), "locked": locked}
    if wrong:
        return Verdict("drift", f"{SHADOW}: " + "; ".join(wrong), observed, expected)
    parts = (["no empty passwords"] if no_empty else []) + [f"{n} locked" for n in locked]
    return Verdict("pass", f"{SHADOW}: " + ", ".join(parts), observed, expected)


def run(ctx: CheckContext, controls: Controls) -> list[Finding]:
    return per_control(ctx, controls, SPEC, observe, judge)
