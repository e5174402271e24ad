"""``nixcomply check``: run the runtime drift checks on this host (or a root directory) and
show what drifted, with the controls and framework references each finding concerns."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nixcomply.cli import add_verb
from nixcomply.errors import EXIT_FAILURE, EXIT_OK, UsageError

if TYPE_CHECKING:
    from nixcomply.checks.config import ChecksConfig

DEFAULT_CONFIG = Path("etc/nixcomply/reconciler.json")  # under the root


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = add_verb(
        subparsers,
        "check",
        cmd_check,
        help="run the runtime drift checks and report findings",
        description=(
            "Run the runtime drift checks (concurrently, each with a timeout) against the running\n"
            "generation's manifest. On a terminal: a table of control, framework references and\n"
            "status; otherwise, or with --json, a JSON report (nixcomply.checks.report.CheckReport).\n"
            "Exit status: 0 nothing drifted, 1 something drifted or could not be checked, 2 bad usage."
        ),
    )
    parser.add_argument("--json", action="store_true", help="print the JSON report even on a terminal")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these checks")
    parser.add_argument(
        "--root", type=Path, metavar="DIR", help="host root to look at (default: the configuration's, or /)"
    )
    parser.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="reconciler configuration (its 'checks' block), or a checks configuration alone "
        "(default: ROOT/etc/nixcomply/reconciler.json when it exists)",
    )
    parser.add_argument("--list", action="store_true", help="list the checks and what they observe")


def _load_config(path: Path) -> tuple[ChecksConfig, dict[str, Any]]:
    """The checks configuration from ``path`` (a full reconciler configuration, validated as
    one, or a checks configuration alone), and the reconciler settings this verb uses."""
    from nixcomply.checks.config import ChecksConfig
    from nixcomply.core.yamlsource import load_json_model, load_yaml, parse_json, read_text, validate
    from nixcomply.reconcile.config import ReconcilerConfig

    if path.suffix == ".json":
        data, _ = parse_json(read_text(path), path)
        if isinstance(data, dict) and "flake" in data:
            config, _ = load_json_model(ReconcilerConfig, path)
            return config.checks, {"root": config.root, **config.systemd.model_dump()}
        checks, _ = load_json_model(ChecksConfig, path)
        return checks, {}
    data, source = load_yaml(path)
    return validate(ChecksConfig, data if data is not None else {}, source), {}


def cmd_check(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from nixcomply.checks.config import ChecksConfig
    from nixcomply.checks.context import CheckContext
    from nixcomply.checks.registry import run_checks, select
    from nixcomply.checks.report import CheckReport, render_table
    from nixcomply.host.systemd import connector_if_installed

    if args.list:
        from nixcomply.baseline.catalog import CHECKS

        for name, (what, expect) in sorted(CHECKS.items()):
            print(f"{name:<16} {what}\n{'':<16} expect: {expect}")
        return EXIT_OK
    if args.root is not None and not args.root.is_dir():
        raise UsageError(f"--root {args.root}: not a directory", hint="give the host's root, / by default")
    names = select(args.only) if args.only else select(None)
    settings: dict[str, Any] = {}
    config_path = args.config
    if config_path is None:
        candidate = (args.root or Path("/")) / DEFAULT_CONFIG
        config_path = candidate if candidate.exists() else None
    config = ChecksConfig()
    if config_path is not None:
        config, settings = _load_config(config_path)
    root: Path = args.root or settings.get("root") or Path("/")
    factory = connector_if_installed(
        user_mode=bool(settings.get("user_mode", False)), bus_address=settings.get("bus_address")
    )
    ctx = CheckContext.for_host(root, config=config, systemd_factory=factory)
    findings = run_checks(ctx, names)
    report = CheckReport.build(
        findings, generated_at=datetime.now(UTC), root=str(root), manifest=ctx.manifest, checks=names
    )
    if args.json or not sys.stdout.isatty():
        sys.stdout.write(report.model_dump_json(indent=2, by_alias=True) + "\n")
    else:
        sys.stdout.write(render_table(report, color=True))
    return EXIT_FAILURE if report.failed else EXIT_OK
