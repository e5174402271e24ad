"""Verbs for baselines: ``render``, ``baseline validate``, ``baseline controls``, ``baseline schema``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TypedDict

from nixcomply.cli import add_group, add_verb
from nixcomply.errors import EXIT_FAILURE, EXIT_OK, UsageError


class ControlJson(TypedDict):
    """Each item of ``baseline controls --json`` (stable: fields are added, never renamed or
    removed). ``frameworks`` maps ``hipaa``, ``soc2``, ``cis_v8``, ``nist_800_53`` and
    ``nist_csf`` to their references; ``options`` are the NixOS options the control sets."""

    id: str
    title: str
    severity: str
    frameworks: dict[str, list[str]]
    check: str
    remediation: str
    options: list[str]


def _baseline_arg(parser: argparse.ArgumentParser, *, nargs: str | None = "?") -> None:
    parser.add_argument(
        "baseline",
        nargs=nargs,
        type=Path,
        metavar="BASELINE",
        help="baseline YAML file (default: the shipped hipaa-v1)",
    )


def _default_baseline(given: Path | None) -> Path:
    from nixcomply.core.paths import default_baseline

    return given if given is not None else default_baseline()


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    render = add_verb(
        subparsers,
        "render",
        cmd_render,
        help="render a baseline into a NixOS module",
        description=(
            "Render a baseline into a NixOS module (deterministic). With --check, compare with\n"
            "the existing output file instead and fail when it is stale."
        ),
    )
    _baseline_arg(render)
    render.add_argument(
        "-o", "--output", type=Path, metavar="FILE", help="write the module here (default: stdout)"
    )
    render.add_argument(
        "--nixos-release",
        metavar="RELEASE",
        help="spell option names for this NixOS release: 26.05 or unstable (default: the baseline's)",
    )
    render.add_argument(
        "--check", action="store_true", help="fail if FILE is not what rendering gives (needs -o)"
    )

    group = add_group(subparsers, "baseline", help="inspect and validate baselines")
    validate = add_verb(group, "validate", cmd_validate, help="validate baseline files")
    validate.add_argument("files", nargs="+", type=Path, metavar="FILE")
    validate.add_argument("--nixos-release", metavar="RELEASE", help="check option names of this release")

    controls = add_verb(
        group,
        "controls",
        cmd_controls,
        help="list controls with their HIPAA, SOC 2, CIS v8 and NIST references",
    )
    _baseline_arg(controls)
    controls.add_argument("--json", action="store_true", help="machine-readable output")

    schema = add_verb(group, "schema", cmd_schema, help="write the JSON Schema of baseline files")
    schema.add_argument("-o", "--output", type=Path, metavar="FILE", help="write here (default: stdout)")
    schema.add_argument("--check", action="store_true", help="fail if FILE is stale (needs -o)")


def cmd_render(args: argparse.Namespace) -> int:
    from nixcomply.baseline.load import load_baseline
    from nixcomply.baseline.render import render, render_to

    if args.check and args.output is None:
        raise UsageError("--check needs -o/--output: the file to compare with")
    loaded = load_baseline(_default_baseline(args.baseline), release=args.nixos_release)
    if args.output is None:
        sys.stdout.write(render(loaded, release=args.nixos_release))
        return EXIT_OK
    if args.check:
        return _check_fresh(args.output, render(loaded, release=args.nixos_release), "make render")
    changed = render_to(loaded, args.output, release=args.nixos_release)
    print(f"{args.output}: {'written' if changed else 'unchanged'}", file=sys.stderr)
    return EXIT_OK


def _check_fresh(output: Path, expected: str, fix: str) -> int:
    """Compare ``output`` with what rendering gives. Only a regular file is read (never a
    symlink, a FIFO or a device), at most a little more than the expected size, and a diff
    is shown only of a file nixcomply generated: a stale check never echoes another file."""
    import difflib

    from nixcomply.core.yamlsource import read_text

    if output.is_symlink():
        raise UsageError(f"{output}: is a symbolic link; --check compares a regular file only")
    current = read_text(output, limit=len(expected.encode()) * 2 + 4096) if output.exists() else ""
    if current == expected:
        print(f"{output}: up to date", file=sys.stderr)
        return EXIT_OK
    if current and current[:24] != expected[:24]:
        print(
            f"nixcomply: error: {output} is not a file `{fix}` generates (it does not begin like one); "
            "not showing its content",
            file=sys.stderr,
        )
        return EXIT_FAILURE
    diff = list(
        difflib.unified_diff(
            current.splitlines(keepends=True),
            expected.splitlines(keepends=True),
            fromfile=f"{output} (committed)",
            tofile=f"{output} (rendered now)",
            n=1,
        )
    )
    sys.stderr.writelines(diff[:60])
    more = f" ({len(diff) - 60} more diff lines)" if len(diff) > 60 else ""
    print(f"nixcomply: error: {output} is stale{more}; run `{fix}` and commit the result", file=sys.stderr)
    return EXIT_FAILURE


def cmd_validate(args: argparse.Namespace) -> int:
    from nixcomply.baseline.load import load_baseline
    from nixcomply.errors import InputError, Problem

    problems: list[Problem] = []
    for path in args.files:
        try:
            loaded = load_baseline(path, release=args.nixos_release)
        except InputError as e:
            problems.extend(e.problems)
            continue
        b = loaded.baseline
        print(f"{path}: ok ({b.id} version {b.version}, {len(b.controls)} controls, NixOS {b.nixos_release})")
    if problems:
        raise InputError(problems)
    return EXIT_OK


def cmd_controls(args: argparse.Namespace) -> int:
    import json

    from nixcomply.baseline.load import load_baseline
    from nixcomply.baseline.render import FRAMEWORK_LABELS

    baseline = load_baseline(_default_baseline(args.baseline)).baseline
    if args.json:
        rows: list[ControlJson] = [
            {
                "id": c.id,
                "title": c.title,
                "severity": c.severity.value,
                "frameworks": c.frameworks.model_dump(),
                "check": c.verify.check,
                "remediation": c.remediation,
                "options": sorted(c.nixos),
            }
            for c in baseline.controls
        ]
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    for c in baseline.controls:
        print(f"{c.id}  [{c.severity.value}]  {c.title}")
        for key, label in FRAMEWORK_LABELS:
            print(f"    {label:<12} {', '.join(getattr(c.frameworks, key))}")
    return EXIT_OK


def cmd_schema(args: argparse.Namespace) -> int:
    from nixcomply.baseline.schema import schema_text

    text = schema_text()
    if args.check:
        if args.output is None:
            raise UsageError("--check needs -o/--output: the file to compare with")
        return _check_fresh(args.output, text, "make render")
    if args.output is None:
        sys.stdout.write(text)
    else:
        from nixcomply.core.fsutil import write_output

        write_output(args.output, text.encode("utf-8"))
    return EXIT_OK
