"""Everything a runbook run will touch is validated before its first step runs.

:func:`check` takes a runbook, the parameters it was given and the host's
:class:`~nixcomply.heal.config.HealConfig`, and returns a :class:`BoundRunbook`: every step of every
section (preconditions, steps, rollback) with its arguments substituted, typed and checked.
Rollback steps are checked too, so a run can never discover half-way that its way back is
refused. Anything wrong raises :class:`GuardError` listing every problem, each naming the
runbook, the step and the parameter or argument; nothing has run at that point.

The rules, by kind of value:

* unit: systemd's unit-name grammar (:func:`nixcomply.host.systemd.validate_unit_name`) and one
  of the ``allowed_units`` globs;
* path: absolute, no ``..`` component, resolved with ``os.path.realpath`` (so a symlink
  that leads out is caught) and inside one of the ``allowed_roots``; the directory
  ``clean_directory`` empties must lie strictly below a root, never be the root;
* mount (``check_disk_space``): absolute, no ``..``, existing; only measured, so not confined;
* string and every argv element: no control characters (newline, tab, NUL...), not blank,
  bounded; what a string may then become is decided by where it goes, never by a list of
  characters: an alert's one line of text, one of a choice's values, or an option value
  whose grammar the argv builder checks;
* ``run_command``: the argv is rebuilt by :func:`nixcomply.heal.programs.build` (the
  program's allowed forms and typed option values, nothing else), ``argv[0]`` is replaced
  by the absolute path ``binaries`` gives the program, which must be an executable file;
  the argv is never given to a shell and the program gets a fixed environment;
* int and duration: whole numbers within bounds.

:func:`check_static` applies every rule that does not depend on the parameters given (the
step count, literal arguments, parameter defaults, the allowlists): ``runbook validate``
runs it, and :func:`check` runs it first, so validation refuses whatever a run refuses for
reasons in the runbook itself.

An empty string given for a parameter counts as not given (rules substitute ``""`` for a
finding field that is missing), so the default applies or, when required, it is missing.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, Final, assert_never

from pydantic import JsonValue

from nixcomply.core.yamlsource import Loc, SourceMap, format_loc
from nixcomply.errors import InputError, Problem
from nixcomply.heal import programs
from nixcomply.heal.config import BINARY_NAME, HealConfig
from nixcomply.heal.runbook import (
    ACTION_ARGS,
    PARAM_REF,
    Action,
    ArgKind,
    ArgSpec,
    ParamSpec,
    ParamType,
    Runbook,
    Step,
)
from nixcomply.host.systemd import InvalidUnitNameError, validate_unit_name

MAX_PATH: Final = 4096
_INT: Final = re.compile(r"^-?\d{1,18}$")
_DURATION: Final = re.compile(r"^(\d{1,9})([smhd]?)$")
_UNITS_OF_TIME: Final = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


class Section(StrEnum):
    PRECONDITION = "preconditions"
    STEP = "steps"
    ROLLBACK = "rollback"


@dataclass
class _Refusals:
    """The refusals of one check, each naming the runbook, where, the parameter or argument,
    and (when the runbook's source is known) its file and line."""

    runbook: str
    source: SourceMap | None = None
    found: list[Problem] = field(default_factory=list)

    def add(self, where: str | None, param: str | None, message: str, loc: Loc = ()) -> None:
        field_ = ", ".join(p for p in (f"runbook {self.runbook}", where, param) if p)
        if self.source is None:
            self.found.append(Problem(None, None, field_, message))
        else:
            self.found.append(Problem(self.source.file, self.source.line_of(loc), field_, message))

    def raise_any(self) -> None:
        if self.found:
            raise GuardError(self.found)


class GuardError(InputError):
    """Raised by :func:`check` and :func:`check_static` when a runbook run would touch
    something it may not, or was given bad parameters. Nothing has run. Exit code 2; the
    message lists every refusal (each names the runbook, the step and the argument)."""

    @property
    def refusals(self) -> tuple[Problem, ...]:
        return self.problems


@dataclass(frozen=True)
class BoundStep:
    """A step with its arguments substituted and checked (``args``: typed values the action
    uses; ``shown``: the same for reports and evidence)."""

    section: Section
    index: int
    step: Step
    args: Mapping[str, Any]
    shown: Mapping[str, JsonValue]

    @property
    def where(self) -> str:
        return f"{self.section.value}[{self.index}]"

    @property
    def label(self) -> str:
        return f"{self.where} ({self.step.action.value})"


@dataclass(frozen=True)
class BoundRunbook:
    """A runbook ready to run: typed parameters and every step bound."""

    runbook: Runbook
    params: Mapping[str, str | int]
    preconditions: tuple[BoundStep, ...]
    steps: tuple[BoundStep, ...]
    rollback: tuple[BoundStep, ...]

    def all_steps(self) -> tuple[BoundStep, ...]:
        return (*self.preconditions, *self.steps, *self.rollback)


class _Bad(Exception):
    """A value was refused; the message says why (the caller adds where)."""


def check_static(
    runbook: Runbook, config: HealConfig, *, root: Path | None = Path("/"), source: SourceMap | None = None
) -> None:
    """Raise :class:`GuardError` for everything :func:`check` would refuse whatever
    parameters it is given: too many steps, problems between the runbook's parts, literal
    arguments and parameter defaults the allowlists and limits refuse. With the runbook's
    ``source``, every refusal names its file and line. ``root=None`` checks away from the
    host: what exists there (programs, mounts, symlinks) is not looked at."""
    refusals = _Refusals(runbook.id, source)
    _runbook_problems(runbook, config, root, refusals, defaults=True)
    for section, index, step in _steps(runbook):
        _bind(step, _Scope(None, set(), config, root, refusals, section, index))
    refusals.raise_any()


def _steps(runbook: Runbook) -> list[tuple[Section, int, Step]]:
    return [(s, i, step) for s in Section for i, step in enumerate(getattr(runbook, s.value))]


def _runbook_problems(
    runbook: Runbook, config: HealConfig, root: Path | None, refusals: _Refusals, *, defaults: bool
) -> None:
    """The problems of the runbook as a whole (with ``defaults``, also every parameter
    default that would be refused where it is used)."""
    total = len(runbook.preconditions) + len(runbook.steps) + len(runbook.rollback)
    if total > config.max_steps:
        refusals.add(
            None, None, f"has {total} steps; at most {config.max_steps} are allowed (heal.max_steps)"
        )
    for loc, message in runbook.semantic_problems():
        refusals.add(format_loc(loc), None, message, loc)
    for name in sorted(runbook.referenced_params() - set(runbook.params)):
        users = _users(runbook, name)
        refusals.add(users[0] if users else None, f"parameter {name}", "is referred to but not declared")
    if not defaults:
        return
    for name, spec in runbook.params.items():
        if spec.default is None or spec.default == "":
            continue
        try:
            _param(spec.default, spec, config, root)
        except _Bad as e:
            refusals.add(
                None, _param_label(runbook, name), f"default {_show(spec.default)}: {e}", ("params", name)
            )


def check(
    runbook: Runbook, given: Mapping[str, object], config: HealConfig, *, root: Path = Path("/")
) -> BoundRunbook:
    """Validate ``given`` and every step of ``runbook`` against ``config``; raise
    :class:`GuardError` naming every problem, or return the :class:`BoundRunbook`.

    ``root`` is the host root paths are taken relative to (``/`` on a host; a sandbox
    uses a directory): ``/var/cache`` means ``root/var/cache``.
    """
    refusals = _Refusals(runbook.id)
    _runbook_problems(runbook, config, root, refusals, defaults=False)
    params: dict[str, str | int] = {}
    bad_params: set[str] = set()
    for name in sorted(set(given) - set(runbook.params)):
        known = ", ".join(sorted(runbook.params)) or "none"
        refusals.add(None, f"parameter {name}", f"is not a parameter of this runbook (it takes: {known})")
    for name, spec in runbook.params.items():
        value = given.get(name)
        if value is None or value == "":
            if spec.default is None:
                if spec.required:
                    refusals.add(None, _param_label(runbook, name), "is required but was not given")
                    bad_params.add(name)
                continue
            value = spec.default
        try:
            params[name] = _param(value, spec, config, root)
        except _Bad as e:
            refusals.add(None, _param_label(runbook, name), f"{_show(value)}: {e}")
            bad_params.add(name)

    sections: dict[Section, list[BoundStep]] = {s: [] for s in Section}
    for section, index, step in _steps(runbook):
        bound = _bind(step, _Scope(params, bad_params, config, root, refusals, section, index))
        if bound is not None:
            args, shown = bound
            sections[section].append(BoundStep(section, index, step, args, shown))
    refusals.raise_any()
    return BoundRunbook(
        runbook=runbook,
        params=params,
        preconditions=tuple(sections[Section.PRECONDITION]),
        steps=tuple(sections[Section.STEP]),
        rollback=tuple(sections[Section.ROLLBACK]),
    )


# -- parameters ------------------------------------------------------------------------------


def _param(value: object, spec: ParamSpec, config: HealConfig, root: Path | None) -> str | int:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise _Bad(f"must be a string or a whole number, not {type(value).__name__}")
    if isinstance(value, str) and len(value) > spec.max_length:
        raise _Bad(f"is {len(value)} characters long; at most {spec.max_length} are allowed")
    match spec.type:
        case ParamType.INT:
            return _int(value, spec.bounds())
        case ParamType.DURATION:
            return _duration(value, spec.bounds())
        case ParamType.UNIT:
            return _unit(str(value), config)
        case ParamType.PATH:
            _confine(str(value), config, root, strictly_inside=False)
            return os.path.normpath(str(value))
        case ParamType.MOUNT:
            _mount(str(value), root)
            return os.path.normpath(str(value))
        case ParamType.STRING:
            _line(str(value))
            return str(value)
        case unreachable:
            assert_never(unreachable)


def _users(runbook: Runbook, name: str) -> list[str]:
    return [
        f"{where} ({step.action.value})"
        for where, step in runbook.sections()
        if name in {m for v in _strings(step.params) for m in PARAM_REF.findall(v)}
    ]


def _param_label(runbook: Runbook, name: str) -> str:
    users = _users(runbook, name)
    return f"parameter {name}" + (f" (used by {', '.join(users)})" if users else "")


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    return []


# -- steps -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Scope:
    """``params`` None: only the literal arguments are checked (:func:`check_static`)."""

    params: Mapping[str, str | int] | None
    bad_params: set[str]
    config: HealConfig
    root: Path | None
    refusals: _Refusals
    section: Section
    index: int


def _bind(step: Step, scope: _Scope) -> tuple[dict[str, Any], dict[str, JsonValue]] | None:
    bad_params, config = scope.bad_params, scope.config

    def refuse(arg: str, label: str, message: str) -> None:
        where = f"{scope.section.value}[{scope.index}] ({step.action.value})"
        scope.refusals.add(where, label, message, (scope.section.value, scope.index, "params", arg))

    args: dict[str, Any] = {}
    shown: dict[str, JsonValue] = {}
    ok = True
    specs = ACTION_ARGS[step.action]
    for name in step.params:
        if name not in specs:  # the schema refuses these; a Runbook built in code might not
            refuse(name, f"argument {name}", f"{step.action.value} has no such argument")
            ok = False
    for name, spec in specs.items():
        if name not in step.params:
            if spec.required:
                refuse(name, f"argument {name}", "is required")
                ok = False
            args[name] = spec.default
            continue
        raw = step.params[name]
        refs = sorted({m for v in _strings(raw) for m in PARAM_REF.findall(v)})
        label = f"argument {name}" + (f" (from {', '.join('${' + r + '}' for r in refs)})" if refs else "")
        if scope.params is None:
            if refs:
                ok = False  # known only once the parameters are given
                continue
            params: Mapping[str, str | int] = {}
        else:
            params = scope.params
        if any(r in bad_params for r in refs):
            ok = False  # already reported against the parameter
            continue
        missing = [r for r in refs if r not in params]
        if missing:
            refuse(name, label, f"refers to {', '.join(missing)}, which was not given and has no default")
            ok = False
            continue
        try:
            value = _substitute(raw, params)
            args[name], shown[name] = _arg(spec, value, config, scope.root)
        except _Bad as e:
            refuse(name, label, str(e))
            ok = False
    if step.action == Action.CAPTURE_STATE and ok:
        needs = (["nft"] if args.get("ruleset") else []) + (
            ["journalctl"] if args.get("journal_lines") else []
        )
        for binary in needs:
            try:
                _binary(binary, config, on_host=scope.root is not None)
            except _Bad as e:
                arg = "ruleset" if binary == "nft" else "journal_lines"
                refuse(arg, f"argument {arg}", str(e))
                ok = False
    return (args, shown) if ok else None


def _substitute(value: Any, params: Mapping[str, str | int]) -> Any:
    """``"${p}"`` becomes the typed value of p; ``"a-${p}"`` interpolates its text."""
    if isinstance(value, str):
        whole = PARAM_REF.fullmatch(value)
        if whole:
            return params[whole.group(1)]
        return PARAM_REF.sub(lambda m: str(params[m.group(1)]), value)
    if isinstance(value, list):
        return [_substitute(v, params) for v in value]
    return value


def _arg(spec: ArgSpec, value: Any, config: HealConfig, root: Path | None) -> tuple[Any, JsonValue]:
    match spec.kind:
        case ArgKind.UNIT:
            unit = _unit(_text(value), config)
            return unit, unit
        case ArgKind.PATH:
            path = _confine(_text(value), config, root, strictly_inside=spec.strictly_inside)
            return path, str(path)
        case ArgKind.MOUNT:
            path = _mount(_text(value), root)
            return path, str(path)
        case ArgKind.TEXT:
            text = _text(value)
            if not text.strip():
                raise _Bad("is empty")
            if len(text) > config.alert.max_length:
                raise _Bad(f"is {len(text)} characters long; at most {config.alert.max_length} are allowed")
            bad = next((c for c in text if not c.isprintable()), None)
            if bad is not None:
                raise _Bad(f"contains the control character {bad!r}; an alert is one line")
            return text, text
        case ArgKind.ARGV:
            argv = _argv(value, config, on_host=root is not None)
            return argv, list(argv)
        case ArgKind.INT:
            number = _int(value, spec.bounds)
            return number, number
        case ArgKind.BOOL:
            if not isinstance(value, bool):
                raise _Bad("must be true or false")
            return value, value
        case ArgKind.CHOICE:
            text = _text(value)
            if text not in spec.choices:
                raise _Bad(f"{_show(text)} is not one of {', '.join(spec.choices)}")
            return text, text
        case unreachable:
            assert_never(unreachable)


def _text(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise _Bad(f"must be a string, not {type(value).__name__}")
    return str(value)


# -- values ----------------------------------------------------------------------------------


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _line(text: str) -> None:
    """One line of printable text: what a terminal or a log line cannot misread. What the
    text may become beyond that is decided where it goes (an option value's grammar, a
    choice, a unit name, a path), never by a list of forbidden characters."""
    if not text.strip():
        raise _Bad("is empty or only whitespace")
    bad = next((c for c in text if not c.isprintable()), None)
    if bad is not None:
        raise _Bad(f"contains the control character {bad!r}")


def _unit(text: str, config: HealConfig) -> str:
    try:
        validate_unit_name(text)
    except InvalidUnitNameError as e:
        raise _Bad(str(e)) from None
    if not any(fnmatchcase(text, glob) for glob in config.allowed_units):
        raise _Bad(f"unit {text} is not on the allowlist (heal.allowed_units)")
    return text


def _absolute(text: str) -> None:
    if len(text) > MAX_PATH:
        raise _Bad(f"is {len(text)} characters long; a path has at most {MAX_PATH}")
    _line(text)
    if not text.startswith("/"):
        raise _Bad("must be an absolute path")
    if ".." in text.split("/"):
        raise _Bad("must not contain '..'")


def _host(text: str, root: Path) -> str:
    return os.path.normpath(os.path.join(root, text.lstrip("/")))


def _confine(text: str, config: HealConfig, root: Path | None, *, strictly_inside: bool) -> Path:
    """The resolved host path of ``text`` if it lies inside an allowed root (away from the
    host, ``root=None``: the path as written)."""
    _absolute(text)
    resolve = os.path.realpath if root is not None else os.path.normpath
    host = _host(text, root or Path("/"))
    real = resolve(host)
    roots = [(r, resolve(_host(str(r), root or Path("/")))) for r in config.allowed_roots]
    for given_root, real_root in roots:
        if real == real_root:
            if strictly_inside:
                raise _Bad(
                    f"is the allowed root {given_root} itself; only a directory below it may be emptied"
                )
            return Path(real)
        if real.startswith(real_root.rstrip("/") + "/"):
            return Path(real)
    listed = ", ".join(str(r) for r, _ in roots) or "none"
    lexical = [_host(str(r), root or Path("/")) for r in config.allowed_roots]
    if any(host == r or host.startswith(r.rstrip("/") + "/") for r in lexical):
        raise _Bad(f"resolves to {real} through a symlink, outside the allowed roots ({listed})")
    raise _Bad(f"is not under an allowed root (heal.allowed_roots: {listed})")


def _mount(text: str, root: Path | None) -> Path:
    _absolute(text)
    if root is None:
        return Path(os.path.normpath(text))
    host = _host(text, root)
    if not os.path.exists(host):
        raise _Bad("does not exist")
    return Path(os.path.realpath(host))


def _int(value: object, bounds: tuple[int, int]) -> int:
    if isinstance(value, bool):
        raise _Bad("must be a whole number")
    if isinstance(value, str) and _INT.match(value.strip()):
        value = int(value.strip())
    if not isinstance(value, int):
        raise _Bad(f"{_show(value)} is not a whole number")
    if not bounds[0] <= value <= bounds[1]:
        raise _Bad(f"{value} is out of bounds ({bounds[0]}..{bounds[1]})")
    return value


def _duration(value: object, bounds: tuple[int, int]) -> int:
    if isinstance(value, str):
        m = _DURATION.match(value.strip())
        if m is None:
            raise _Bad(f"{_show(value)} is not a duration (seconds, or a number with s, m, h or d)")
        value = int(m.group(1)) * _UNITS_OF_TIME[m.group(2)]
    return _int(value, bounds)


def _binary(name: str, config: HealConfig, *, on_host: bool = True) -> str:
    """The configured path of an audited program (:data:`nixcomply.heal.programs.PROGRAMS`)."""
    if not BINARY_NAME.match(name):
        raise _Bad(f"{_show(name)}: the program must be a bare name listed in heal.binaries, not a path")
    try:
        programs.program_of(name)
    except programs.ArgvError as e:
        raise _Bad(str(e)) from None
    path = config.binaries.get(name)
    if path is None:
        listed = ", ".join(sorted(config.binaries)) or "none"
        raise _Bad(f"{name} is not on the binary allowlist (heal.binaries: {listed})")
    real = os.path.realpath(path)
    if on_host and (not os.path.isfile(real) or not os.access(real, os.X_OK)):
        raise _Bad(f"{name} is configured as {path}, which is not an executable file here")
    return path


def _argv(value: Any, config: HealConfig, *, on_host: bool = True) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise _Bad("must be a non-empty list")
    if len(value) > config.max_argv:
        raise _Bad(f"has {len(value)} elements; at most {config.max_argv} are allowed (heal.max_argv)")
    out: list[str] = []
    for i, element in enumerate(value):
        try:
            text = _text(element)
            if len(text) > config.max_arg_length:
                raise _Bad(f"is {len(text)} characters long; at most {config.max_arg_length} are allowed")
            _line(text)
        except _Bad as e:
            raise _Bad(f"argv[{i}] {_show(element)}: {e}") from None
        out.append(text)
    if not BINARY_NAME.match(out[0]):
        raise _Bad(f"{_show(out[0])}: the program must be a bare name listed in heal.binaries, not a path")
    try:
        built = programs.build(out)
    except programs.ArgvError as e:
        raise _Bad(str(e)) from None
    return (_binary(built[0], config, on_host=on_host), *built[1:])
