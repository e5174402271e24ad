"""What a runbook may ask a program to do: one typed argv builder per program.

``run_command`` takes no free argv. Its first element names a program of :data:`PROGRAMS`
(run from the absolute path ``heal.binaries`` gives it), and the rest must be one of the
*forms* listed for that program: its fixed words (a subcommand), then options from the
form's allow-list, each ``--name`` or ``--name=value`` with a typed value. The argv that
runs is rebuilt from what was parsed (always ``--name=value``), so a value can never become
an option or an argument of its own, and nothing a runbook writes reaches a program
unparsed. A program runs with a fixed environment (:data:`ENVIRONMENT`), so no variable of
the reconciler's own (``BORG_RSH``, ``RESTIC_*``, ``GIT_*``, ``PAGER``, ``LD_PRELOAD``) reaches
it either.

A program is listed here only after an audit of everything it accepts: options and
environment variables that run another program, load plugins or configuration, or read or
write files outside what the runbook declares. The audit is written down in
``runbooks/README.md`` ("What runbooks may run"); the programs it refused (borg, restic,
systemctl, nix, git, logger, ...) have no entry, so no runbook can run them, whatever
``heal.binaries`` lists.

Literal arguments are checked when the runbook is loaded (``runbook validate``), values
that come from parameters by the guard before any step runs: :func:`static_problems` and
:func:`build` apply the same rules.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

# The only environment a runbook's program gets: nothing inherited.
ENVIRONMENT: Final[Mapping[str, str]] = {
    "PATH": "/run/current-system/sw/bin:/usr/bin:/bin",
    "LC_ALL": "C.UTF-8",
    "SYSTEMD_PAGER": "",
    "PAGER": "cat",
}

_REF: Final = re.compile(r"\$\{[^}]*\}")


class ValueType(StrEnum):
    """The value of an option, each with a grammar that leaves nothing to interpret."""

    SIZE = "size"  # journald sizes: 512M, 2G (K, M, G, T; 1024-based)
    TIMESPAN = "timespan"  # journald time spans: 30d, 2weeks, 6months
    COUNT = "count"  # a positive whole number

    def check(self, text: str) -> str | None:
        """None when ``text`` is a valid value, else what is wrong."""
        if not _VALUES[self].fullmatch(text):
            return f"{text!r} is not a {self.value} ({_EXAMPLES[self]})"
        return None


_VALUES: Final[Mapping[ValueType, re.Pattern[str]]] = {
    ValueType.SIZE: re.compile(r"[1-9][0-9]{0,11}[KMGT]?"),
    ValueType.TIMESPAN: re.compile(r"[1-9][0-9]{0,8}(s|min|h|d|weeks|months|years)"),
    ValueType.COUNT: re.compile(r"[1-9][0-9]{0,5}"),
}
_EXAMPLES: Final[Mapping[ValueType, str]] = {
    ValueType.SIZE: "digits with K, M, G or T, like 2G",
    ValueType.TIMESPAN: "digits with s, min, h, d, weeks, months or years, like 30d",
    ValueType.COUNT: "a whole number from 1",
}


@dataclass(frozen=True)
class Option:
    """``--name`` (a flag) or ``--name=VALUE`` with a typed value."""

    name: str
    value: ValueType | None = None


@dataclass(frozen=True)
class Form:
    """One thing a program may be asked to do: its fixed words, then any of its options
    (each at most once; at least one when the form has no words)."""

    words: tuple[str, ...]
    options: tuple[Option, ...] = ()
    help: str = ""

    def option(self, name: str) -> Option | None:
        return next((o for o in self.options if o.name == name), None)

    def usage(self) -> str:
        opts = " ".join(f"[{o.name}{'=' + o.value.value.upper() if o.value else ''}]" for o in self.options)
        return " ".join(p for p in (" ".join(self.words), opts) if p)


@dataclass(frozen=True)
class Program:
    name: str
    forms: tuple[Form, ...]

    def usage(self) -> str:
        return "; ".join(f"{self.name} {f.usage()}" for f in self.forms)


PROGRAMS: Final[Mapping[str, Program]] = {
    p.name: p
    for p in (
        Program(
            "journalctl",
            (
                Form(
                    (),
                    (
                        Option("--rotate"),
                        Option("--vacuum-size", ValueType.SIZE),
                        Option("--vacuum-time", ValueType.TIMESPAN),
                        Option("--vacuum-files", ValueType.COUNT),
                        Option("--sync"),
                        Option("--flush"),
                    ),
                    "rotate, flush or vacuum the journal (archived files in journald's own directories)",
                ),
            ),
        ),
        Program(
            "chronyc",
            (
                Form(("makestep",), help="step the clock now (chronyd's own thresholds)"),
                Form(("tracking",), help="show the clock's offset"),
                Form(("sources",), help="show the time sources"),
                Form(("sourcestats",), help="show the time sources' statistics"),
            ),
        ),
        Program("nft", (Form(("list", "ruleset"), help="print the loaded ruleset"),)),
    )
}


class ArgvError(ValueError):
    """An argv that no form of its program allows; the message says what is wrong."""


def program_of(name: str) -> Program:
    program = PROGRAMS.get(name)
    if "/" in name:
        raise ArgvError(f"{name!r}: name the program (like journalctl), not a path")
    if program is None:
        raise ArgvError(
            f"{name} is not a program runbooks may run (nixcomply runs only the audited programs "
            f"{', '.join(sorted(PROGRAMS))}; see runbooks/README.md)"
        )
    return program


def _split(token: str) -> tuple[str, str | None]:
    name, sep, value = token.partition("=")
    return name, (value if sep else None)


def _match(program: Program, args: Sequence[str]) -> tuple[Form, int]:
    """The form whose words ``args`` starts with (the longest), and how many words it used."""
    best: tuple[Form, int] | None = None
    for form in program.forms:
        n = len(form.words)
        if tuple(args[:n]) == form.words and (best is None or n > best[1]):
            best = (form, n)
    if best is None:
        raise ArgvError(f"{' '.join(args[:2]) or '(nothing)'!r} is not allowed: {program.usage()}")
    return best


def build(argv: Sequence[str]) -> tuple[str, ...]:
    """The argv to run (program name first, not yet its path), rebuilt from ``argv`` if a
    form of its program allows every element; else :class:`ArgvError` naming the element."""
    if not argv:
        raise ArgvError("is empty")
    program = program_of(argv[0])
    args = list(argv[1:])
    form, used = _match(program, args)
    out: list[str] = [program.name, *form.words]
    seen: set[str] = set()
    for token in args[used:]:
        name, value = _split(token)
        option = form.option(name) if name.startswith("--") else None
        if option is None:
            raise ArgvError(f"{token!r} is not allowed: {program.usage()}")
        if name in seen:
            raise ArgvError(f"{name} is given twice")
        seen.add(name)
        if option.value is None:
            if value is not None:
                raise ArgvError(f"{name} takes no value")
            out.append(name)
            continue
        if value is None:
            raise ArgvError(f"{name} needs a value: {name}={option.value.value.upper()}")
        bad = option.value.check(value)
        if bad is not None:
            raise ArgvError(f"{name}: {bad}")
        out.append(f"{name}={value}")
    if not form.words and not seen:
        raise ArgvError(f"{program.name} needs one of its options: {program.usage()}")
    return tuple(out)


def static_problems(argv: Sequence[object]) -> list[str]:
    """What is wrong with a runbook's argv before its parameters are known (the first
    problem): the program, the words and the option names must be literal and allowed; a
    parameter may only fill an option's value (``--vacuum-size=${size}``), and a literal
    value must be valid."""
    if not argv:
        return ["argv is empty"]
    texts = [str(a) for a in argv]
    head = texts[0]
    if _REF.search(head):
        return ["argv[0] must name the program literally, not through a parameter"]
    try:
        program = program_of(head)
    except ArgvError as e:
        return [f"argv[0]: {e}"]
    args = texts[1:]
    literal_words = []
    for token in args:
        if token.startswith("--") or _REF.search(token):
            break
        literal_words.append(token)
    try:
        form, used = _match(program, literal_words)
    except ArgvError as e:
        return [f"argv[1]: {e}"]
    concrete: list[str] = [program.name, *form.words]
    for i, token in enumerate(args[used:], start=used + 1):
        name, value = _split(token)
        if _REF.search(name):
            return [
                f"argv[{i}] {token!r}: a parameter may only fill an option's value (--name=${{param}}), "
                "never a whole argument or an option's name"
            ]
        option = form.option(name) if name.startswith("--") else None
        if option is None:
            return [f"argv[{i}] {token!r} is not allowed: {program.usage()}"]
        if value is not None and _REF.search(value):
            if option.value is None:
                return [f"argv[{i}]: {name} takes no value"]
            concrete.append(f"{name}={_placeholder(option.value)}")
        else:
            concrete.append(token)
    try:
        build(concrete)
    except ArgvError as e:
        return [str(e)]
    return []


def _placeholder(value: ValueType) -> str:
    return {ValueType.SIZE: "1G", ValueType.TIMESPAN: "1d", ValueType.COUNT: "1"}[value]
