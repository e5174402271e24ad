"""The NixOS options a baseline may set, per release, with their declared types.

``data/nixos-options.json`` records, for every option path the renderer emits, the type
nixpkgs declares and where it was read. Validation refuses an option path that is not in the
record for the target release (a wrong option name breaks every client's build) and a value
that does not fit the declared type. Adding an option to a baseline therefore means checking
it in nixpkgs and recording it here, which is the point.

Types are small JSON terms:
``"bool" | "int" | "float" | "str" | "lines" | "path" | "anything"`` and
``{"nullOr": T}``, ``{"listOf": T}``, ``{"attrsOf": T}``, ``{"enum": [values]}``,
``{"oneOf": [T, ...]}``, ``{"ints": [min, max]}`` (inclusive, either may be null),
``{"strMatching": regex}``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from nixcomply.baseline.nixattr import format_attr_path, parse_attr_path

NixType = str | dict[str, Any]


@dataclass(frozen=True)
class OptionInfo:
    path: tuple[str, ...]
    type: NixType
    declared_in: str
    commit: str


@cache
def _table() -> dict[str, dict[tuple[str, ...], OptionInfo]]:
    raw = json.loads(resources.files("nixcomply.baseline").joinpath("data/nixos-options.json").read_text())
    table: dict[str, dict[tuple[str, ...], OptionInfo]] = {}
    for release, options in raw["releases"].items():
        entries = {}
        for path_text, info in options.items():
            path = parse_attr_path(path_text)
            entries[path] = OptionInfo(path, info["type"], info["declared_in"], info["commit"])
        table[release] = entries
    return table


def known_releases() -> frozenset[str]:
    return frozenset(_table())


def lookup(release: str, path: tuple[str, ...]) -> OptionInfo | None:
    return _table().get(release, {}).get(path)


def describe(t: NixType) -> str:
    """A type written the way the NixOS manual writes it."""
    if isinstance(t, str):
        return {"lines": 'strings concatenated with "\\n"', "anything": "anything"}.get(t, t)
    ((kind, arg),) = t.items()
    if kind == "enum":
        return "one of " + ", ".join(json.dumps(v) for v in arg)
    if kind == "oneOf":
        return " or ".join(describe(x) for x in arg)
    if kind == "ints":
        lo, hi = arg
        return f"integer between {lo if lo is not None else '-inf'} and {hi if hi is not None else 'inf'}"
    if kind == "strMatching":
        return f"string matching {arg!r}"
    if kind == "nullOr":
        return f"null or {describe(arg)}"
    return f"{'list' if kind == 'listOf' else 'attribute set'} of ({describe(arg)})"


def fits(value: Any, t: NixType) -> bool:
    """Whether a YAML value is accepted by the NixOS option type ``t``."""
    if isinstance(t, str):
        if t == "bool":
            return isinstance(value, bool)
        if t == "int":
            return isinstance(value, int) and not isinstance(value, bool)
        if t == "float":
            return isinstance(value, float)
        if t in {"str", "lines"}:
            return isinstance(value, str)
        if t == "path":
            return isinstance(value, str) and value.startswith("/")
        if t == "anything":
            return True
        raise ValueError(f"unknown type {t!r} in the option table")
    ((kind, arg),) = t.items()
    if kind == "nullOr":
        return value is None or fits(value, arg)
    if kind == "listOf":
        return isinstance(value, list) and all(fits(v, arg) for v in value)
    if kind == "attrsOf":
        return isinstance(value, dict) and all(fits(v, arg) for v in value.values())
    if kind == "enum":
        return any(value == v and type(value) is type(v) for v in arg)
    if kind == "oneOf":
        return any(fits(value, x) for x in arg)
    if kind == "ints":
        lo, hi = arg
        return (
            isinstance(value, int)
            and not isinstance(value, bool)
            and (lo is None or value >= lo)
            and (hi is None or value <= hi)
        )
    if kind == "strMatching":
        return isinstance(value, str) and re.fullmatch(arg, value) is not None
    raise ValueError(f"unknown type {kind!r} in the option table")


def check(release: str, path: tuple[str, ...], value: Any) -> str | None:
    """None when ``value`` may be given to option ``path`` in ``release``, else why not."""
    info = lookup(release, path)
    if info is None:
        return (
            f"{format_attr_path(path)} is not a verified NixOS {release} option "
            "(check the name in nixpkgs' nixos/modules and record it in "
            "python/nixcomply/baseline/data/nixos-options.json)"
        )
    if not fits(value, info.type):
        return f"expected {describe(info.type)} for {format_attr_path(path)}, got {json.dumps(value)}"
    return None
