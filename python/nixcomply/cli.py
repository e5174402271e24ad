"""The ``nixcomply`` command line.

Each area of nixcomply registers its verbs from a module in ``nixcomply.commands``; those
modules only declare arguments and import the heavy machinery inside their handlers, so
``nixcomply --version`` starts fast. ``main`` turns every deliberate error into a one-line
message and an exit code (see ``nixcomply.errors``); ``--debug`` adds tracebacks.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import types
from collections.abc import Callable, Sequence
from typing import Final

from nixcomply import __version__
from nixcomply.errors import (
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_PIPE,
    EXIT_USAGE,
    HELP_EXIT_STATUS,
    HostIOError,
    NixcomplyError,
)

Handler = Callable[[argparse.Namespace], int]

# The verb groups, in the order `nixcomply --help` lists them.
COMMAND_MODULES: Final = ("reconcile", "check", "runbook", "baseline", "evidence", "uplink", "demo")


def common_options() -> argparse.ArgumentParser:
    """Options every verb accepts, before or after the verb name."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help="log everything and show tracebacks",
    )
    common.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=argparse.SUPPRESS,
        help="log progress to stderr",
    )
    return common


COMMON: Final = common_options()


def add_verb(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    handler: Handler,
    *,
    help: str,
    aliases: Sequence[str] = (),
    description: str | None = None,
    common: argparse.ArgumentParser = COMMON,
) -> argparse.ArgumentParser:
    """Add one verb with the common options (``common``: ``nixcomply``'s by default); its
    handler returns the exit code."""
    parser = subparsers.add_parser(
        # a plain str: argparse shows a StrEnum's repr (<Verb.PLAN: 'plan'>) in its errors
        str(name),
        help=help,
        description=description or help,
        aliases=list(aliases),
        parents=[common],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.set_defaults(handler=handler)
    return parser


def add_group(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    *,
    help: str,
    common: argparse.ArgumentParser = COMMON,
) -> argparse._SubParsersAction[argparse.ArgumentParser]:
    """Add a verb that has verbs of its own (``nixcomply evidence verify``); without one it
    prints its help and exits 2."""
    parser = subparsers.add_parser(name, help=help, description=help, parents=[common])
    parser.set_defaults(handler=_group_help(parser))
    return parser.add_subparsers(title="commands", metavar="COMMAND")


def _group_help(parser: argparse.ArgumentParser) -> Handler:
    def show(_args: argparse.Namespace) -> int:
        parser.print_help(sys.stderr)
        return EXIT_USAGE

    return show


def build_parser() -> argparse.ArgumentParser:

    parser = argparse.ArgumentParser(
        prog="nixcomply",
        description="NixOS-native compliance: render baselines, reconcile hosts, keep signed evidence.",
        epilog=HELP_EXIT_STATUS,
        parents=[COMMON],
    )
    parser.add_argument("--version", action="version", version=f"nixcomply {__version__}")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    for name in COMMAND_MODULES:
        module = importlib.import_module(f"nixcomply.commands.{name}")
        module.register(subparsers)
    return parser


def setup_logging(*, debug: bool, verbose: bool) -> None:
    import logging  # noqa: PLC0415 - not needed by `nixcomply --version`

    level = logging.DEBUG if debug else logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    given = sys.argv[1:] if argv is None else list(argv)
    if given == ["--version"]:
        # answered before the verbs' modules load and their parsers are built: a script
        # asking for the version pays for the interpreter and this module only
        try:
            print(f"nixcomply {__version__}", flush=True)
        except BrokenPipeError:
            _discard_stdout()
            return EXIT_PIPE
        return 0
    return run(build_parser(), argv, prog="nixcomply")


def entry(argv: Sequence[str] | None = None) -> int:
    """The ``nixcomply`` program (its console script and ``python -m nixcomply``): :func:`main`
    in a process of its own, which therefore runs without pydantic plugins."""
    without_pydantic_plugins()
    return main(argv)


# pydantic's plugin loader (a private module: pydantic imports it, and asks it for the
# installed plugins, when it builds its first schema).
_PYDANTIC_PLUGIN_LOADER: Final = "pydantic.plugin._loader"


def without_pydantic_plugins() -> None:
    """Run this process without pydantic plugins, as ``PYDANTIC_DISABLE_PLUGINS=__all__``
    would, and without loading the code that looks for them.

    nixcomply uses no pydantic plugins. To find them, pydantic's loader imports
    ``importlib.metadata`` (and with it ``email``, ``zipfile``, ``csv``: 1.3 MB of a reconcile
    cycle's peak memory of ~50 MB, and ~25 ms of CPU) even when the environment variable
    disables them. So the ``nixcomply`` command registers a loader that answers what the
    real one answers when plugins are disabled: none. Only the ``nixcomply`` program does
    this (:func:`entry`; not the server, not a program or test calling :func:`main`), and not when the environment variable names
    plugins to leave out (someone wants the others) or the real loader is already loaded."""
    if _PYDANTIC_PLUGIN_LOADER in sys.modules:
        return
    if os.environ.get("PYDANTIC_DISABLE_PLUGINS", "__all__") not in ("__all__", "1", "true"):
        return
    loader = types.ModuleType(_PYDANTIC_PLUGIN_LOADER, without_pydantic_plugins.__doc__)
    loader.get_plugins = _no_plugins  # type: ignore[attr-defined]
    sys.modules[_PYDANTIC_PLUGIN_LOADER] = loader


def _no_plugins(*_args: object, **_kwargs: object) -> tuple[()]:
    return ()


def run(
    parser: argparse.ArgumentParser,
    argv: Sequence[str] | None,
    *,
    prog: str,
    translate: Callable[[Exception], NixcomplyError | None] | None = None,
    quiet_internal: bool = False,
) -> int:
    """Parse ``argv``, run the verb's handler and turn every error into its one-line message
    and exit code (``nixcomply.errors``); ``--debug`` adds tracebacks. ``translate`` may turn
    a foreign exception into a deliberate error (the server: an unreachable database);
    ``quiet_internal`` leaves an internal error's message out (it may hold a secret)."""
    args = parser.parse_args(argv)
    debug = bool(getattr(args, "debug", False))
    setup_logging(debug=debug, verbose=bool(getattr(args, "verbose", False)))
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        try:
            code = handler(args)
            sys.stdout.flush()  # a closed pipe shows here, not at exit
            return code
        except NixcomplyError:
            raise
        except Exception as e:
            deliberate = translate(e) if translate is not None else None
            if deliberate is None:
                raise
            raise deliberate from e
    except BrokenPipeError:
        _discard_stdout()
        return EXIT_PIPE
    except NixcomplyError as e:
        return _report(e, debug=debug, prog=prog)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except OSError as e:
        # the machine refused something (a full disk, a read-only filesystem, a path that is
        # a directory or does not exist): the environment's problem, not nixcomply's
        return _report(HostIOError.from_os_error(e), debug=debug, prog=prog)
    except Exception as e:
        if debug:
            raise
        what = type(e).__name__ if quiet_internal else f"{type(e).__name__}: {e}"
        print(
            f"{prog}: internal error: {what}\n"
            f"{prog}: this is a bug; run again with --debug for a traceback and report it",
            file=sys.stderr,
        )
        return EXIT_INTERNAL


def _report(e: NixcomplyError, *, debug: bool, prog: str) -> int:
    if debug:
        import logging  # noqa: PLC0415 - see setup_logging

        logging.getLogger(__name__).error("%s", type(e).__name__, exc_info=e)
    print(f"{prog}: error: {e}", file=sys.stderr)
    if e.hint:
        print(f"{prog}: hint: {e.hint}", file=sys.stderr)
    return e.exit_code


def _discard_stdout() -> None:
    """The reader went away (``| head``): end quietly, and keep the interpreter from
    complaining when it flushes stdout at exit."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass  # stdout is not a real file (a test's capture): nothing to flush at exit
    finally:
        os.close(devnull)
