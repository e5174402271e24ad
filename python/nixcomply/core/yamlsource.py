"""Read YAML and JSON input files so that every later error can name file, line and field.

PyYAML forgets where values came from and silently keeps the last of two equal keys. This
module loads with a loader that remembers the line of every key and list item, refuses
duplicate keys, and turns a pydantic ``ValidationError`` into :class:`~nixcomply.errors.Problem`
values that point at the offending line.

Every input is hostile until loaded. A file is read only when it is a regular file (a FIFO or
a device could block or never end) and at most :data:`MAX_BYTES` long; a document may nest
at most :data:`MAX_DEPTH` levels, use at most :data:`MAX_ALIASES` aliases and build at most
:data:`MAX_NODES` values, counting every expansion of an alias (a 342-byte "billion laughs"
expands to a billion). Each limit is an :class:`~nixcomply.errors.InputError` naming the
file, never a hang, a ``RecursionError`` or memory without bound. YAML is parsed by libyaml
(PyYAML's C parser) when it is installed, else by the pure-Python one, with the same limits:
the depth and alias counts are taken from the parser's events, which are flat, before
anything is built. JSON is parsed as JSON (:func:`parse_json`): no comments, no trailing
commas, no duplicate keys, no ``NaN`` or ``Infinity``, and models are validated strictly.
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TypeVar

import pydantic

from nixcomply.errors import InputError, Problem

MAX_BYTES: Final = 4 * 2**20
MAX_DEPTH: Final = 64
MAX_ALIASES: Final = 256
MAX_NODES: Final = 200_000
Loc = tuple[str | int, ...]
M = TypeVar("M", bound=pydantic.BaseModel)


@dataclass(frozen=True)
class SourceMap:
    """Where each value of a loaded document sits: field path -> 1-based line."""

    file: Path
    lines: Mapping[Loc, int] = field(default_factory=dict)

    def line_of(self, loc: Sequence[str | int]) -> int | None:
        """The line of the deepest known prefix of ``loc`` (pydantic adds union tags and
        such to locations, so an exact match is not always possible)."""
        key = tuple(loc)
        while True:
            if key in self.lines:
                return self.lines[key]
            if not key:
                return None
            key = key[:-1]

    def problem(self, loc: Sequence[str | int], message: str) -> Problem:
        return Problem(file=self.file, line=self.line_of(loc), field=format_loc(loc), message=message)


# A key is shown in a location as it is when it looks like one (field names, NixOS option
# paths, unit names); anything else (a line of /etc/shadow read as a key) is described, not
# echoed: an error must not show the content of a file that is not what it claims to be.
_SHOWN_KEY: Final = re.compile(r'^[A-Za-z0-9_.@+/" -]{1,128}$')


def format_loc(loc: Sequence[str | int]) -> str:
    """``("controls", 3, "severity")`` -> ``controls[3].severity``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            shown = str(part) if _SHOWN_KEY.match(str(part)) else f"<a key of {len(str(part))} characters>"
            out += f".{shown}" if out else shown
    return out


def read_bytes(path: Path, *, limit: int = MAX_BYTES) -> bytes:
    """Read a user-given file: a regular file only (a FIFO, socket or device is refused
    without waiting on it), at most ``limit`` bytes; any failure is an :class:`InputError`
    that names the file and never shows its content."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except FileNotFoundError:
        raise InputError.single(path, "no such file") from None
    except OSError as e:
        raise InputError.single(path, f"cannot read: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise InputError.single(path, "is a directory, expected a file")
        if not stat.S_ISREG(st.st_mode):
            raise InputError.single(
                path,
                f"is not a regular file but a {_kind(st.st_mode)}: refused (reading it could block or never end)",
            )
        if st.st_size > limit:
            raise InputError.single(path, f"is {st.st_size} bytes; at most {limit} are read")
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            chunk = os.read(fd, min(1 << 20, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as e:
        raise InputError.single(path, f"cannot read: {e.strerror}") from None
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > limit:
        raise InputError.single(path, f"grew past {limit} bytes while it was read")
    return data


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISFIFO, "FIFO"),
        (stat.S_ISSOCK, "socket"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
    ):
        if test(mode):
            return name
    return "special file"


def read_text(path: Path, *, limit: int = MAX_BYTES) -> str:
    """Read a user-given text file (see :func:`read_bytes`), UTF-8."""
    data = read_bytes(path, limit=limit)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError.single(path, f"not UTF-8 text ({e.reason} at byte {e.start})") from None


def parse_yaml(text: str, file: Path) -> tuple[Any, SourceMap]:
    """Parse one YAML document from ``text``; return the data and its source map."""
    # PyYAML (1.3 MB, 18 modules) loads with the first YAML document parsed: a reconcile
    # cycle that finds its runbooks and rules in the memo never parses any.
    from nixcomply.core import _yamlparse  # noqa: PLC0415

    return _yamlparse.parse_yaml(text, file)


def load_yaml(path: Path) -> tuple[Any, SourceMap]:
    """Read and parse a YAML file (JSON is YAML too)."""
    return parse_yaml(read_text(path), path)


class _Duplicate(Exception):
    pass


class _NotJson(Exception):
    pass


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _Duplicate(key)
        result[key] = value
    return result


def _no_constant(name: str) -> Any:
    raise _NotJson(name)


def _depth(data: Any) -> int:
    """How deep ``data`` nests (iteratively: it may nest deeper than Python recurses)."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        value, level = stack.pop()
        if isinstance(value, dict | list):
            deepest = max(deepest, level)
            if deepest > MAX_DEPTH:
                return deepest
            stack.extend((v, level + 1) for v in (value.values() if isinstance(value, dict) else value))
    return deepest


class _LazyLines(Mapping[Loc, int]):
    """The lines of a JSON document's values, found (by the YAML loader: JSON is YAML)
    only when an error needs one: reading a valid file costs no second parse."""

    def __init__(self, text: str, file: Path) -> None:
        self._text = text
        self._file = file
        self._lines: dict[Loc, int] | None = None

    def _load(self) -> dict[Loc, int]:
        if self._lines is None:
            try:
                self._lines = dict(parse_yaml(self._text, self._file)[1].lines)
            except InputError:
                self._lines = {}
        return self._lines

    def __getitem__(self, key: Loc) -> int:
        return self._load()[key]

    def __iter__(self) -> Iterator[Loc]:
        return iter(self._load())

    def __len__(self) -> int:
        return len(self._load())


def parse_json(text: str, file: Path) -> tuple[Any, SourceMap]:
    """Parse a JSON document strictly: no comments, trailing commas, duplicate keys, ``NaN``
    or ``Infinity``; nesting bounded like YAML's. Problems name file and line."""
    source = SourceMap(file=file, lines=_LazyLines(text, file))
    try:
        data = json.loads(text, object_pairs_hook=_pairs, parse_constant=_no_constant)
    except json.JSONDecodeError as e:
        raise InputError.single(file, f"invalid JSON: {e.msg} (column {e.colno})", line=e.lineno) from None
    except _Duplicate as e:
        problem = _first_problem(text, file)
        raise InputError([problem or Problem(file, None, "", f"invalid JSON: duplicate key {e}")]) from None
    except _NotJson as e:
        raise InputError.single(
            file, f"invalid JSON: {e} is not a JSON number", line=_token_line(text, str(e))
        ) from None
    except RecursionError:
        raise InputError.single(file, f"nested more than {MAX_DEPTH} levels deep") from None
    if _depth(data) > MAX_DEPTH:
        raise InputError.single(file, f"nested more than {MAX_DEPTH} levels deep")
    return data, source


def _first_problem(text: str, file: Path) -> Problem | None:
    try:
        parse_yaml(text, file)
    except InputError as e:
        return e.problems[0]
    return None


def _token_line(text: str, token: str) -> int | None:
    m = re.search(rf"(?<![\w\"]){re.escape(token)}(?![\w\"])", text)
    return None if m is None else text.count("\n", 0, m.start()) + 1


def load_json_model(model: type[M], path: Path) -> tuple[M, SourceMap]:
    """Load a JSON file and validate it as ``model`` strictly (``"yes"`` is not a boolean,
    ``"90"`` not a number); problems name file, line and field."""
    text = read_text(path)
    _, source = parse_json(text, path)
    try:
        return model.model_validate_json(text, strict=True), source
    except pydantic.ValidationError as e:
        raise InputError(problems_from_validation(e, source)) from None


def problems_from_validation(error: pydantic.ValidationError, source: SourceMap) -> list[Problem]:
    """One :class:`Problem` per pydantic error, located through ``source``.

    A misspelt field shows up twice in pydantic (an unknown field and a missing one); the two
    are reported once, as the unknown field with the likely intended name.
    """

    errors = [
        (tuple(p for p in e["loc"] if not _is_union_tag(p)), e) for e in error.errors(include_url=False)
    ]
    missing = {loc: e for loc, e in errors if e["type"] == "missing"}
    absorbed: set[Loc] = set()
    problems = []
    for loc, err in errors:
        message = err["msg"]
        if err["type"] == "extra_forbidden":
            siblings = [str(m[-1]) for m in missing if m[:-1] == loc[:-1] and m not in absorbed]
            guess = _close_matches(str(loc[-1]), siblings)
            if guess:
                absorbed.add((*loc[:-1], guess[0]))
                message = f"unknown field; did you mean {guess[0]!r}?"
            else:
                message = "unknown field (not allowed here; check the spelling)"
        elif err["type"] == "value_error":
            message = message.removeprefix("Value error, ")
        if err["type"] not in ("missing", "extra_forbidden") and "input" in err:
            message += _got(loc, err["input"])
        problems.append((loc, message))
    return [source.problem(loc, message) for loc, message in problems if loc not in absorbed]


def validate(model: type[M], data: Any, source: SourceMap) -> M:
    """Validate ``data`` as ``model``; on failure raise an :class:`InputError` naming lines."""
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as e:
        raise InputError(problems_from_validation(e, source)) from None


def load_model(model: type[M], path: Path) -> tuple[M, SourceMap]:
    """Load a YAML or JSON file and validate it as ``model``."""
    data, source = load_yaml(path)
    return validate(model, data, source), source


def raise_problems(problems: Iterable[Problem]) -> None:
    """Raise an :class:`InputError` if ``problems`` is not empty."""
    found = list(problems)
    if found:
        raise InputError(found)


def _is_union_tag(part: str | int) -> bool:
    # pydantic inserts the member type of a union ("bool", "function-after[...]") into loc
    return isinstance(part, str) and (part in {"str", "int", "float", "bool", "list", "dict"} or "[" in part)


def _got(loc: Loc, value: Any) -> str:
    """`` (got 'tape')`` for a short value of one field. Never for the whole document, an
    object or list (it says nothing more than the message), or text of several lines: the
    file given may not be what it claims to be (``/etc/shadow`` behind a symlink), and an
    error must not show its content."""
    if not loc or isinstance(value, dict | list) or (isinstance(value, str) and "\n" in value):
        return f" (got {type(value).__name__})" if not isinstance(value, dict | list) else ""
    return f" (got {_short(value)})"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _close_matches(word: str, candidates: Sequence[str]) -> list[str]:
    import difflib  # noqa: PLC0415 - only an error message needs it

    return difflib.get_close_matches(word, candidates, n=1)
