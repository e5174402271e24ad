"""Where nixcomply's data (baselines, runbooks) lives: a checkout, or an installed package.

The Nix package installs ``baseline/`` and ``runbooks/`` under ``share/nixcomply`` and sets
``NIXCOMPLY_DATA_DIR``; an editable install from a checkout finds them beside ``python/``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Final

# The host's state directory: the state database, the evidence store and its log. The
# NixOS module's `nixcomply.reconciler.stateDir` defaults to the same path.
DEFAULT_STATE_DIR: Final = Path("/var/lib/nixcomply")

_CHECKOUT: Final = Path(__file__).resolve().parents[3]  # python/nixcomply/core/paths.py


def data_dir() -> Path:
    env = os.environ.get("NIXCOMPLY_DATA_DIR")
    if env:
        return Path(env)
    if (_CHECKOUT / "baseline").is_dir() and (_CHECKOUT / "python").is_dir():
        return _CHECKOUT
    return Path(sys.prefix) / "share" / "nixcomply"


def baseline_dir() -> Path:
    return data_dir() / "baseline"


def runbooks_dir() -> Path:
    return data_dir() / "runbooks"


def default_baseline(baseline_id: str = "hipaa-v1") -> Path:
    return baseline_dir() / f"{baseline_id}.yaml"
