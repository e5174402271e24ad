"""``nixcomply demo``: the whole reconcile cycle on a sandbox host (see nixcomply.sandbox.demo)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from nixcomply.cli import add_verb
from nixcomply.errors import EXIT_FAILURE, EXIT_OK


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo = add_verb(
        subparsers,
        "demo",
        cmd_demo,
        help="run the whole cycle on a sandbox host: render, switch, revert, verify",
    )
    demo.add_argument(
        "--dir", type=Path, help="keep the sandbox host, its state and evidence here (a new directory)"
    )
    demo.add_argument("--json", action="store_true", help="print a JSON summary instead of progress")


def cmd_demo(args: argparse.Namespace) -> int:
    import logging
    import tempfile  # not at the top: `nixcomply --version` must not pay for it (random)

    from nixcomply.sandbox.demo import run_demo

    if not (getattr(args, "verbose", False) or getattr(args, "debug", False)):
        # the demo tells what happens itself; the reconciler's warnings (a revert, an upload
        # to a server not yet up) would only say it twice
        logging.getLogger("nixcomply").setLevel(logging.ERROR)
    directory = args.dir or Path(tempfile.mkdtemp(prefix="nixcomply-demo-"))
    if args.json:
        result = run_demo(directory, say=lambda line: print(line, file=sys.stderr), bin=_bin())
        print(json.dumps(result.as_json(), indent=2))
    else:
        result = run_demo(directory, bin=_bin())
    return EXIT_OK if result.ok else EXIT_FAILURE


def _bin() -> str:
    """How the reader ran nixcomply, for the commands the demo prints: ``.venv/bin/`` after
    ``make demo``, nothing when ``nixcomply`` on PATH is this one."""
    import shutil

    argv0 = Path(sys.argv[0])
    if argv0.name != "nixcomply":
        return ""  # run in-process (the tests) or as `python -m nixcomply`
    found = shutil.which("nixcomply")
    if found is not None and Path(found).resolve() == argv0.resolve():
        return ""
    return f"{argv0.parent}/"
