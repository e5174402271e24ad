"""Git history questions the plan asks before it moves a host.

"Is the target a descendant of the running revision?" is answered only when the history is
there: the local clone of a ``git+file`` flake (or any clone the caller names). An unknown
revision, a directory that is not a repository, or a shallow clone that cannot see far
enough back give None ("cannot tell"), never a guessed False.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Final

from nixcomply.nixos.flake import FlakeRef
from nixcomply.nixos.tools import DEFAULT_TOOLS, Tools

logger = logging.getLogger(__name__)

GIT_TIMEOUT: Final = 60.0


def history_dir(ref: FlakeRef) -> Path | None:
    """The local git repository holding ``ref``'s history: the directory of a ``git+file:``
    flake or of a plain path inside a work tree (``.git`` directory or file). None for remote
    flakes: their history is only in Nix's private fetcher cache, so a caller that wants the
    descendant check for them keeps its own clone and passes that directory."""
    path = ref.local_path
    if path is None or ref.scheme == "path":  # path: flakes are copied without history
        return None
    return path if (path / ".git").exists() else None


def is_ancestor(repo_dir: Path, older: str, newer: str, *, tools: Tools = DEFAULT_TOOLS) -> bool | None:
    """True when ``older`` is an ancestor of (or equal to) ``newer`` in ``repo_dir``; False
    when it is not; None when the history needed to tell is not available."""
    if not repo_dir.is_dir():
        return None
    r = tools.run(
        [tools.git, "-C", repo_dir, "merge-base", "--is-ancestor", older, newer],
        check=False,
        timeout=GIT_TIMEOUT,
    )
    if r.returncode == 0:
        return True
    if r.returncode == 1:
        # In a shallow clone a missing link in the history also answers "no".
        return None if is_shallow(repo_dir, tools=tools) else False
    logger.debug("git merge-base in %s: %s", repo_dir, r.stderr.strip())
    return None


def is_shallow(repo_dir: Path, *, tools: Tools = DEFAULT_TOOLS) -> bool:
    r = tools.run([tools.git, "-C", repo_dir, "rev-parse", "--is-shallow-repository"], timeout=GIT_TIMEOUT)
    return r.stdout.strip() == "true"


def commit_exists(repo_dir: Path, rev: str, *, tools: Tools = DEFAULT_TOOLS) -> bool:
    """Whether ``rev`` names a commit present in ``repo_dir``."""
    if not repo_dir.is_dir():
        return False
    r = tools.run(
        [tools.git, "-C", repo_dir, "cat-file", "-e", f"{rev}^{{commit}}"], check=False, timeout=GIT_TIMEOUT
    )
    return r.returncode == 0
