"""Which option names each NixOS release uses, from one small table of renamed options.

A baseline states intent in the canonical (newest) option spelling. Options move between
releases — journald's free-text ``extraConfig`` gives way to ``settings.Journal``, for
example — so the renderer maps every canonical path to the spelling of the release it
targets. Only what differs is listed; everything else is spelled the same everywhere.
Each entry was checked against nixpkgs' own module sources (see tests/data/nixos-options.json
for the record of what was read, and the test that keeps both in step).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from nixcomply.baseline.nixattr import parse_attr_path
from nixcomply.errors import UsageError

AttrPath = tuple[str, ...]


@dataclass(frozen=True)
class Rename:
    """Options under ``canonical`` are spelled under ``spelled`` in the release."""

    canonical: AttrPath
    spelled: AttrPath
    note: str


@dataclass(frozen=True)
class IniLines:
    """``<canonical>.<Key> = value`` becomes the line ``Key=value`` of the lines option
    ``option`` (the release has no structured ``settings`` for this file yet)."""

    canonical: AttrPath
    option: AttrPath
    note: str


Mapping_ = Rename | IniLines


@dataclass(frozen=True)
class Release:
    name: str
    mappings: tuple[Mapping_, ...]


def _p(text: str) -> AttrPath:
    return parse_attr_path(text)


# The table. Keep it small: one entry per moved option family, with the evidence in `note`.
RELEASES: Final[Mapping[str, Release]] = {
    "26.05": Release(name="26.05", mappings=()),
    "unstable": Release(name="unstable", mappings=()),
}


def release(name: str) -> Release:
    try:
        return RELEASES[name]
    except KeyError:
        known = ", ".join(sorted(RELEASES))
        raise UsageError(f"unknown NixOS release {name!r}; nixcomply renders for: {known}") from None


def _starts_with(path: AttrPath, prefix: AttrPath) -> bool:
    return path[: len(prefix)] == prefix


def ini_value(value: Any) -> str:
    """A value as systemd's configuration files write it."""
    if value is True:
        return "yes"
    if value is False:
        return "no"
    if isinstance(value, list):
        return " ".join(ini_value(v) for v in value)
    return str(value)


def spell(settings: Sequence[tuple[AttrPath, Any]], target: Release) -> dict[AttrPath, Any]:
    """Map one control's canonical settings to the option paths and values of ``target``.

    Lines for the same ``IniLines`` option are joined in the order given, so a control that
    sets several journald keys renders one ``extraConfig`` block.
    """
    out: dict[AttrPath, Any] = {}
    lines: dict[AttrPath, list[str]] = {}
    for path, value in settings:
        for m in target.mappings:
            if isinstance(m, Rename) and _starts_with(path, m.canonical):
                out[m.spelled + path[len(m.canonical) :]] = value
                break
            if isinstance(m, IniLines) and _starts_with(path, m.canonical):
                rest = path[len(m.canonical) :]
                if len(rest) != 1:
                    raise ValueError(
                        f"{'.'.join(path)}: expected exactly one key under {'.'.join(m.canonical)}"
                    )
                lines.setdefault(m.option, []).append(f"{rest[0]}={ini_value(value)}")
                break
        else:
            out[path] = value
    for option, text in lines.items():
        out[option] = "\n".join(text) + "\n"
    return out
