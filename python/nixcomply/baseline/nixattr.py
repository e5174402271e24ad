"""Nix attribute paths and values: parse ``boot.kernel.sysctl."kernel.kptr_restrict"`` and write
Python data as Nix expressions, deterministically."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from typing import Any, Final

_IDENT: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_'-]*")
# Nix keywords cannot be bare attribute names.
_KEYWORDS: Final = frozenset({"if", "then", "else", "assert", "with", "let", "in", "rec", "inherit", "or"})


def parse_attr_path(text: str) -> tuple[str, ...]:
    """Split a dotted Nix attribute path into its names.

    Bare names follow Nix's identifier grammar; names with other characters are written in
    double quotes (``"kernel.kptr_restrict"``). Raises ``ValueError`` saying what is wrong.
    """
    parts: list[str] = []
    i = 0
    n = len(text)
    if not text:
        raise ValueError("empty attribute path")
    while True:
        if i < n and text[i] == '"':
            j = i + 1
            name = []
            while j < n and text[j] != '"':
                if text[j] == "\\" and j + 1 < n:
                    name.append(text[j + 1])
                    j += 2
                    continue
                if text.startswith("${", j):
                    raise ValueError(f"{text!r}: interpolation is not allowed in an attribute path")
                name.append(text[j])
                j += 1
            if j >= n:
                raise ValueError(f"{text!r}: unterminated quoted attribute name")
            if not name:
                raise ValueError(f"{text!r}: empty quoted attribute name")
            parts.append("".join(name))
            i = j + 1
        else:
            m = _IDENT.match(text, i)
            if m is None:
                raise ValueError(
                    f"{text!r} is not a valid Nix attribute path (at character {i + 1}: "
                    "names are identifiers or double-quoted strings, joined by dots)"
                )
            if m.group(0) in _KEYWORDS:
                raise ValueError(f"{text!r}: {m.group(0)!r} is a Nix keyword; quote it")
            parts.append(m.group(0))
            i = m.end()
        if i == n:
            return tuple(parts)
        if text[i] != ".":
            raise ValueError(
                f"{text!r} is not a valid Nix attribute path (unexpected {text[i]!r} at {i + 1})"
            )
        i += 1
        if i == n:
            raise ValueError(f"{text!r}: attribute path ends with a dot")


def attr_name(name: str) -> str:
    """One attribute name as Nix source: bare when possible, quoted otherwise."""
    if _IDENT.fullmatch(name) and name not in _KEYWORDS:
        return name
    return nix_string(name)


def format_attr_path(parts: Sequence[str]) -> str:
    return ".".join(attr_name(p) for p in parts)


def nix_string(value: str) -> str:
    """A Nix double-quoted string literal that means exactly ``value``."""
    escaped = (
        value.replace("\\", "\\\\")
        .replace('"', '\\"')
        .replace("${", "\\${")
        .replace("\n", "\\n")
        .replace("\r", "\\r")
        .replace("\t", "\\t")
    )
    return f'"{escaped}"'


def nix_value(value: Any, indent: int = 0) -> str:
    """Python data (from YAML/JSON) as a Nix expression; attribute sets are sorted by key.

    Short lists and sets stay on one line; longer ones get one element per line.
    """
    pad = "  " * indent
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value!r} has no Nix representation")
        text = json.dumps(value)
        return text if ("." in text or "e" in text) else text + ".0"
    if isinstance(value, str):
        return nix_string(value)
    if isinstance(value, list):
        if not value:
            return "[ ]"
        items = [nix_value(v, indent + 1) for v in value]
        one_line = "[ " + " ".join(_parenthesise(i) for i in items) + " ]"
        if len(one_line) <= 72 and "\n" not in one_line:
            return one_line
        inner = "\n".join(f"{pad}  {_parenthesise(i)}" for i in items)
        return f"[\n{inner}\n{pad}]"
    if isinstance(value, dict):
        if not value:
            return "{ }"
        entries = [f"{attr_name(str(k))} = {nix_value(value[k], indent + 1)};" for k in sorted(value)]
        one_line = "{ " + " ".join(entries) + " }"
        if len(one_line) <= 72 and "\n" not in one_line:
            return one_line
        inner = "\n".join(f"{pad}  {e}" for e in entries)
        return f"{{\n{inner}\n{pad}}}"
    raise TypeError(f"cannot write {type(value).__name__} as Nix")


def _parenthesise(expr: str) -> str:
    # list elements are separated by spaces: a negative number must be parenthesised
    return f"({expr})" if expr.startswith("-") else expr
