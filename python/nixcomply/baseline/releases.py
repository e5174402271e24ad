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
from dataclasses import dataclass, field
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


@dataclass(frozen=True)
class Detect:
    """The release is mid-migration for options under ``canonical``: the rendered module asks
    the evaluation itself (``options`` has ``probe``, the structured option) and uses the
    canonical spelling when it exists, else the ``fallbacks``. Used where the sources could not
    settle which spelling a release's pinned revision has: a guess would break every client."""

    canonical: AttrPath
    probe: AttrPath
    fallbacks: tuple[Rename | IniLines, ...]
    note: str


Mapping_ = Rename | IniLines | Detect


@dataclass(frozen=True)
class Release:
    name: str
    mappings: tuple[Mapping_, ...]


def _p(text: str) -> AttrPath:
    return parse_attr_path(text)


_JOURNALD_OLD: Final = (
    Rename(
        _p("services.journald.settings.Journal.Storage"),
        _p("services.journald.storage"),
        "journald.nix before nixpkgs PR 536538 declares `storage` (enum)",
    ),
    IniLines(
        _p("services.journald.settings.Journal"),
        _p("services.journald.extraConfig"),
        "journald.nix before nixpkgs PR 536538 has no settings.Journal; other keys are extraConfig lines",
    ),
)
_COREDUMP_OLD: Final = (
    IniLines(
        _p("systemd.coredump.settings.Coredump"),
        _p("systemd.coredump.extraConfig"),
        "coredump.nix before nixpkgs PR 497098 has only extraConfig lines under [Coredump]",
    ),
)

# The table. Keep it small: one entry per moved option family, with the evidence in `note`.
RELEASES: Final[Mapping[str, Release]] = {
    # journald: 26.05 branched before PR 536538 (opened 2026-06-29), so it has the old module.
    # coredump: PR 497098 was merged around the branch-off; the module decides by evaluation.
    "26.05": Release(
        name="26.05",
        mappings=(
            *_JOURNALD_OLD,
            Detect(
                _p("systemd.coredump.settings.Coredump"),
                _p("systemd.coredump.settings"),
                _COREDUMP_OLD,
                "settings.Coredump (PR 497098) vs extraConfig, decided by `options`",
            ),
        ),
    ),
    # unstable: coredump's settings are in (the old extraConfig is a removed option there);
    # journald's settings arrive with PR 536538, so the module decides by evaluation.
    "unstable": Release(
        name="unstable",
        mappings=(
            Detect(
                _p("services.journald.settings.Journal"),
                _p("services.journald.settings"),
                _JOURNALD_OLD,
                "settings.Journal (PR 536538) vs storage/extraConfig, decided by `options`",
            ),
        ),
    ),
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


@dataclass(frozen=True)
class Spelled:
    """One control's settings in a release's spelling. ``settings`` always apply; when a
    ``Detect`` mapping is involved, ``structured`` applies if the evaluation has ``probe`` and
    ``fallback`` otherwise."""

    settings: dict[AttrPath, Any]
    probe: AttrPath | None = None
    structured: dict[AttrPath, Any] = field(default_factory=dict)
    fallback: dict[AttrPath, Any] = field(default_factory=dict)

    def variants(self) -> list[dict[AttrPath, Any]]:
        """Every combination a client's evaluation can end up with (one or two)."""
        if self.probe is None:
            return [self.settings]
        return [{**self.settings, **self.structured}, {**self.settings, **self.fallback}]

    def resolved(self, *, structured: bool) -> dict[AttrPath, Any]:
        return {**self.settings, **(self.structured if structured else self.fallback)}


def _apply(
    settings: Sequence[tuple[AttrPath, Any]], mappings: Sequence[Rename | IniLines]
) -> dict[AttrPath, Any]:
    out: dict[AttrPath, Any] = {}
    lines: dict[AttrPath, list[str]] = {}
    for path, value in settings:
        for m in mappings:
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


def spell(settings: Sequence[tuple[AttrPath, Any]], target: Release) -> Spelled:
    """Map one control's canonical settings to the option paths and values of ``target``.

    Lines for the same ``IniLines`` option are joined in the order given, so a control that
    sets several journald keys renders one ``extraConfig`` block. A control may touch at most
    one option family that is decided by evaluation (``Detect``).
    """
    static = [m for m in target.mappings if not isinstance(m, Detect)]
    detects = [m for m in target.mappings if isinstance(m, Detect)]
    plain: list[tuple[AttrPath, Any]] = []
    detected: list[tuple[AttrPath, Any]] = []
    detect: Detect | None = None
    for path, value in settings:
        hit = next((d for d in detects if _starts_with(path, d.canonical)), None)
        if hit is None:
            plain.append((path, value))
            continue
        if detect is not None and hit is not detect:
            raise ValueError("a control may set options of only one family whose spelling is detected")
        detect = hit
        detected.append((path, value))
    if detect is None:
        return Spelled(_apply(plain, static))
    return Spelled(
        settings=_apply(plain, static),
        probe=detect.probe,
        structured=dict(detected),
        fallback=_apply(detected, detect.fallbacks),
    )
