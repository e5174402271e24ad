"""Verb declarations, one module per area. Each module has ``register(subparsers)``, declares
arguments only, and imports the machinery it needs inside its handlers (fast start-up)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Final

# nixcomply.reconcile.config.DEFAULT_CONFIG, spelled here for the help text only: importing
# that module (pydantic) would cost every `nixcomply --help` (tests/test_cli.py holds them equal)
RECONCILER_CONFIG: Final = "/etc/nixcomply/reconciler.json"


def config_option(parser: argparse.ArgumentParser, *, if_present: bool = False) -> None:
    """``--config FILE``, the reconciler configuration every host verb reads. With
    ``if_present``, the verb also works without one (``runbook``: the shipped defaults)."""
    default = f"{RECONCILER_CONFIG} when it exists" if if_present else RECONCILER_CONFIG
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        metavar="FILE",
        help=f"reconciler configuration (default: {default})",
    )
