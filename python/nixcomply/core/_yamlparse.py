"""The YAML half of :mod:`nixcomply.core.yamlsource`, imported on the first YAML document
parsed (PyYAML is not needed by a process that reads only JSON and the memo).

The limits (depth, aliases, values, size) are :mod:`~nixcomply.core.yamlsource`'s.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

import yaml

from nixcomply.core.yamlsource import MAX_ALIASES, MAX_DEPTH, MAX_NODES, Loc, SourceMap, format_loc
from nixcomply.errors import InputError, Problem

# libyaml when PyYAML was built with it (10x faster), the pure-Python parser otherwise
_BASE_LOADER: Final[type[yaml.SafeLoader]] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _LineLoader(_BASE_LOADER):  # type: ignore[valid-type,misc]
    """A safe loader that builds plain Python values and records a line for every path."""


class _Budget:
    """How many values a document may still build (alias expansions included)."""

    def __init__(self, file: Path) -> None:
        self.file = file
        self.left = MAX_NODES

    def spend(self, node: yaml.Node) -> None:
        self.left -= 1
        if self.left < 0:
            raise InputError.single(
                self.file,
                f"the document builds more than {MAX_NODES} values (aliases that expand without end?)",
                line=node.start_mark.line + 1,
            )


def _construct(
    loader: _LineLoader, node: yaml.Node, path: Loc, lines: dict[Loc, int], budget: _Budget
) -> Any:
    budget.spend(node)
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            budget.spend(key_node)
            key = loader.construct_object(key_node, deep=True)
            if not isinstance(key, str | int | float | bool) or key is None:
                raise _DuplicateOrBadKey(
                    key_node.start_mark.line + 1, path, f"unsupported key {format_loc([str(key)])}"
                )
            if key in result:
                raise _DuplicateOrBadKey(
                    key_node.start_mark.line + 1,
                    path,
                    f"duplicate key {format_loc([str(key)])!r} (first given on line {lines[(*path, str(key))]})",
                )
            child = (*path, str(key))
            lines[child] = key_node.start_mark.line + 1
            result[key] = _construct(loader, value_node, child, lines, budget)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_construct(loader, item, (*path, i), lines, budget) for i, item in enumerate(node.value)]
    return loader.construct_object(node, deep=True)


class _DuplicateOrBadKey(Exception):
    def __init__(self, line: int, path: Loc, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.path = path
        self.message = message


def _check_events(text: str, file: Path) -> None:
    """Refuse a document that nests or aliases too much, from its flat event stream,
    before anything is built (composing and building recurse, the events do not)."""
    depth = aliases = nodes = 0
    for event in yaml.parse(text, Loader=_BASE_LOADER):
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            nodes += 1
            if depth > MAX_DEPTH:
                raise InputError.single(file, f"nested more than {MAX_DEPTH} levels deep", line=_line(event))
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1
        elif isinstance(event, yaml.ScalarEvent):
            nodes += 1
        elif isinstance(event, yaml.AliasEvent):
            aliases += 1
            if aliases > MAX_ALIASES:
                raise InputError.single(file, f"uses more than {MAX_ALIASES} aliases", line=_line(event))
        if nodes > MAX_NODES:
            raise InputError.single(file, f"has more than {MAX_NODES} values", line=_line(event))


def _line(event: yaml.Event) -> int | None:
    mark = event.start_mark
    return None if mark is None else mark.line + 1


def parse_yaml(text: str, file: Path) -> tuple[Any, SourceMap]:
    """:func:`nixcomply.core.yamlsource.parse_yaml`."""
    lines: dict[Loc, int] = {}
    try:
        _check_events(text, file)
        loader = _LineLoader(text)
        try:
            node = loader.get_single_node()
            data = None if node is None else _construct(loader, node, (), lines, _Budget(file))
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
    except RecursionError:
        raise InputError.single(file, f"nested more than {MAX_DEPTH} levels deep") from None
    return data, SourceMap(file=file, lines=lines)
