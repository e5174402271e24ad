"""Load a baseline YAML file and check what the models alone cannot.

Model validation catches wrong types, unknown fields and malformed citations. The checks
here need the whole document or outside knowledge: duplicate control ids, check names that
no check implements, runbook ids with no runbook, option paths that the target NixOS release
does not have, values that do not fit the option's type, and two controls that give the same
option different values (they would collide in every client's evaluation). Every problem
names the file, the line and the field; all of them are reported at once.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nixcomply.baseline import nixos_options, releases
from nixcomply.baseline.catalog import CHECK_NAMES
from nixcomply.baseline.models import Baseline
from nixcomply.baseline.nixattr import format_attr_path, parse_attr_path
from nixcomply.core.paths import runbooks_dir
from nixcomply.core.yamlsource import SourceMap, load_yaml, raise_problems, read_text, validate
from nixcomply.errors import Problem


@dataclass(frozen=True)
class LoadedBaseline:
    baseline: Baseline
    path: Path
    source: SourceMap
    digest: str  # "sha256:<hex>" of the file's bytes, carried into every manifest


def known_runbook_ids(directory: Path | None = None) -> frozenset[str]:
    """Runbook ids are their file names: ``runbooks/RB-DRIFT-001.yaml`` is RB-DRIFT-001."""
    directory = directory or runbooks_dir()
    return frozenset(p.stem for p in directory.glob("RB-*.yaml"))


def load_baseline(
    path: Path, *, runbook_ids: frozenset[str] | None = None, release: str | None = None
) -> LoadedBaseline:
    """Read, validate and cross-check a baseline; raise ``InputError`` listing every problem."""
    text = read_text(path)
    data, source = load_yaml(path)
    baseline = validate(Baseline, data, source)
    runbook_ids = known_runbook_ids() if runbook_ids is None else runbook_ids
    raise_problems(semantic_problems(baseline, source, runbook_ids, release or baseline.nixos_release))
    digest = "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()
    return LoadedBaseline(baseline=baseline, path=path, source=source, digest=digest)


def semantic_problems(
    baseline: Baseline, source: SourceMap, runbook_ids: frozenset[str], release: str
) -> Iterator[Problem]:
    seen: dict[str, int] = {}
    for i, control in enumerate(baseline.controls):
        if control.id in seen:
            first = source.line_of(("controls", seen[control.id], "id"))
            yield source.problem(
                ("controls", i, "id"), f"duplicate control id {control.id!r} (first defined on line {first})"
            )
        else:
            seen[control.id] = i
        if control.verify.check not in CHECK_NAMES:
            yield source.problem(
                ("controls", i, "verify", "check"),
                f"unknown check {control.verify.check!r}; known checks: {', '.join(sorted(CHECK_NAMES))}",
            )
        if control.remediation not in runbook_ids:
            known = ", ".join(sorted(runbook_ids)) or "none found"
            yield source.problem(
                ("controls", i, "remediation"), f"no runbook {control.remediation!r} (known: {known})"
            )
    yield from _option_problems(baseline, source, release)


def _option_problems(baseline: Baseline, source: SourceMap, release_name: str) -> Iterator[Problem]:
    target = releases.release(release_name)
    owners: dict[tuple[str, ...], tuple[str, Any]] = {}
    for i, control in enumerate(baseline.controls):
        for path_text, value in control.nixos.items():
            path = parse_attr_path(path_text)
            loc = ("controls", i, "nixos", path_text)
            try:
                variants = releases.spell([(path, value)], target).variants()
            except ValueError as e:
                yield source.problem(loc, str(e))
                continue
            # where the evaluation decides the spelling, both spellings must be right
            for variant in variants:
                for option, option_value in variant.items():
                    why = nixos_options.check(release_name, option, option_value)
                    if why is not None:
                        yield source.problem(loc, why)
                        continue
                    if option in owners and not _merges(release_name, option):
                        other, other_value = owners[option]
                        if other != control.id and other_value != option_value:
                            yield source.problem(
                                loc,
                                f"{control.id} and {other} give {format_attr_path(option)} different values "
                                f"({json.dumps(option_value)} vs {json.dumps(other_value)}); they would collide",
                            )
                    owners.setdefault(option, (control.id, option_value))


def _merges(release: str, option: tuple[str, ...]) -> bool:
    """Lists and lines concatenate across definitions, so two controls may both add to them."""
    info = nixos_options.lookup(release, option)
    if info is None:
        return False
    t = info.type
    if isinstance(t, dict) and "nullOr" in t:
        t = t["nullOr"]
    return t == "lines" or (isinstance(t, dict) and ("listOf" in t or "attrsOf" in t))
