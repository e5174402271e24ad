"""Building a host's system closure and comparing two closures.

Nix 2.8 has no ``--print-out-paths``: ``nix build --json --no-link`` prints the outputs as
JSON, and ``--no-link`` leaves no ``result`` symlink behind in the working directory.

Builds never use Nix's evaluation cache (``--no-eval-cache``). Nix 2.8 keys a flake's cache
entry on its source tree, revision count and last-modified second, not on its revision, so
two commits with one tree (an amended or re-made commit, two checkouts of one configuration
committed in the same second) share an entry: the second build returns the system the first
evaluated, whose ``configurationRevision`` (``self.rev``) is the other commit. The reconciler
would then find the target's "running revision" wrong on every cycle and test-activate a
system that already runs. A cycle builds only on drift, so evaluating afresh costs little.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Final

from pydantic import Field, ValidationError

from nixcomply.model.base import ForeignModel
from nixcomply.nixos.flake import FlakeRef, toplevel_attr
from nixcomply.nixos.tools import DEFAULT_TOOLS, Tools

BUILD_TIMEOUT: Final = 3 * 3600.0  # a full system build from source can take hours
_ANSI_RE: Final = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class _BuildResultJson(ForeignModel):
    """One element of ``nix build --json`` output (Nix's own format; unknown keys ignored)."""

    drv_path: str = Field(alias="drvPath")
    outputs: dict[str, str]


def parse_build_output(text: str) -> Path:
    """The ``out`` path of the single installable ``nix build --json`` built."""
    try:
        data = json.loads(text)
        if not isinstance(data, list) or len(data) != 1:
            raise ValueError(f"expected one build result, got {data!r}")
        result = _BuildResultJson.model_validate(data[0])
    except (json.JSONDecodeError, ValidationError) as e:
        raise ValueError(f"unexpected `nix build --json` output: {e}") from None
    if "out" not in result.outputs:
        raise ValueError(f"the build has no `out` output: {sorted(result.outputs)}")
    return Path(result.outputs["out"])


def build_toplevel(
    ref: FlakeRef, host: str, *, tools: Tools = DEFAULT_TOOLS, timeout: float | None = BUILD_TIMEOUT
) -> Path:
    """Build ``<ref>#nixosConfigurations."<host>".config.system.build.toplevel``; its store path.

    Pass the locked reference from :func:`~nixcomply.nixos.flake.flake_metadata` so the
    revision that was judged is the one that is built. ``--no-update-lock-file`` as there.
    The fragment of ``ref`` is ignored: ``host`` names the configuration. Evaluated without
    the evaluation cache, which may hold another revision's system (module docstring).
    """
    argv = [
        tools.nix,
        "build",
        "--json",
        "--no-link",
        "--no-update-lock-file",
        "--no-eval-cache",
        ref.installable(toplevel_attr(host)),
    ]
    result = tools.run(argv, timeout=timeout)
    return result.parsed(parse_build_output)


def diff_closures(old: Path, new: Path, *, tools: Tools = DEFAULT_TOOLS) -> str:
    """``nix store diff-closures OLD NEW``: one line per package whose version or size changed
    (``linux: 6.12.1 → 6.12.2``), empty when the closures hold the same packages. Colour
    codes are removed so the text can go into evidence as it is."""
    result = tools.run([tools.nix, "store", "diff-closures", old, new])
    return _ANSI_RE.sub("", result.stdout)
