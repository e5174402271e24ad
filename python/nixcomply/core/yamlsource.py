"""Read YAML and JSON input files so that every later error can name file, line and field.

PyYAML forgets where values came from and silently keeps the last of two equal keys. This
module loads with a loader that remembers the line of every key and list item, refuses
duplicate keys, and turns a pydantic ``ValidationError`` into :class:`~nixcomply.errors.Problem`
values that point at the offending line.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pydantic
import yaml

from nixcomply.errors import InputError, Problem

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


def format_loc(loc: Sequence[str | int]) -> str:
    """``("controls", 3, "severity")`` -> ``controls[3].severity``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


class _LineLoader(yaml.SafeLoader):
    """SafeLoader that builds plain Python values and records a line for every path."""


def _construct(loader: _LineLoader, node: yaml.Node, path: Loc, lines: dict[Loc, int]) -> Any:
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if not isinstance(key, str | int | float | bool) or key is None:
                raise _DuplicateOrBadKey(key_node.start_mark.line + 1, path, f"unsupported key {key!r}")
            if key in result:
                raise _DuplicateOrBadKey(
                    key_node.start_mark.line + 1,
                    path,
                    f"duplicate key {key!r} (first given on line {lines[(*path, str(key))]})",
                )
            child = (*path, str(key))
            lines[child] = key_node.start_mark.line + 1
            result[key] = _construct(loader, value_node, child, lines)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_construct(loader, item, (*path, i), lines) for i, item in enumerate(node.value)]
    return loader.construct_object(node, deep=True)


class _DuplicateOrBadKey(Exception):
    def __init__(self, line: int, path: Loc, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.path = path
        self.message = message


def read_text(path: Path) -> str:
    """Read a user-given text file, turning I/O errors into an :class:`InputError`."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError.single(path, "no such file") from None
    except IsADirectoryError:
        raise InputError.single(path, "is a directory, expected a file") from None
    except UnicodeDecodeError as e:
        raise InputError.single(path, f"not UTF-8 text ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise InputError.single(path, f"cannot read: {e.strerror}") from None


def parse_yaml(text: str, file: Path) -> tuple[Any, SourceMap]:
    """Parse one YAML document from ``text``; return the data and its source map."""
    lines: dict[Loc, int] = {}
    try:
        loader = _LineLoader(text)
        try:
            node = loader.get_single_node()
            data = None if node is None else _construct(loader, node, (), lines)
        finally:
            loader.dispose()
    except _DuplicateOrBadKey as e:
        raise InputError([Problem(file, e.line, format_loc(e.path), e.message)]) from None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark is not None else None
        what = " ".join(x for x in (e.context, e.problem) if x)
        raise InputError([Problem(file, line, "", f"invalid YAML: {what}")]) from None
    except yaml.YAMLError as e:
        raise InputError([Problem(file, None, "", f"invalid YAML: {e}")]) from None
    return data, SourceMap(file=file, lines=lines)


def load_yaml(path: Path) -> tuple[Any, SourceMap]:
    """Read and parse a YAML file (JSON is YAML too)."""
    return parse_yaml(read_text(path), path)


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
            guess = difflib.get_close_matches(str(loc[-1]), siblings, n=1)
            if guess:
                absorbed.add((*loc[:-1], guess[0]))
                message = f"unknown field; did you mean {guess[0]!r}?"
            else:
                message = "unknown field (not allowed here; check the spelling)"
        elif err["type"] == "value_error":
            # a validator's own message says what is wrong; the input it got is the whole
            # object, which says nothing more
            message = message.removeprefix("Value error, ")
            if not isinstance(err.get("input"), dict | list):
                message = f"{message} (got {_short(err['input'])})"
        elif err["type"] != "missing" and "input" in err:
            message = f"{message} (got {_short(err['input'])})"
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


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
