"""Verbs of the uplink to the MSP's server: ``nixcomply enroll`` and ``nixcomply upload``.

``upload`` exits 0 when the server holds the whole log (or the next attempt is not due
yet), 1 when the attempt failed (it is retried with backoff), 2 when the host is not
enrolled, 75 when another upload is running.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from nixcomply.cli import add_verb
from nixcomply.commands import config_option
from nixcomply.errors import EXIT_FAILURE, EXIT_OK, EXIT_TEMPFAIL, EXIT_USAGE


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    enroll = add_verb(
        subparsers,
        "enroll",
        cmd_enroll,
        help="enroll this host with the MSP's evidence server (token from `nixcomply-server host invite`)",
    )
    config_option(enroll)
    enroll.add_argument(
        "--server", metavar="URL", help="the server's URL (default: upload.server of the configuration)"
    )
    token = enroll.add_mutually_exclusive_group()
    token.add_argument("--token", metavar="TOKEN", help="the single-use enrollment token")
    token.add_argument(
        "--token-file", type=Path, metavar="FILE", help="a file holding it (under systemd: the credential)"
    )
    enroll.add_argument("--if-needed", action="store_true", help="do nothing (exit 0) when already enrolled")
    enroll.add_argument(
        "--hostname", metavar="NAME", help="the host name the token was made for (default: the config's host)"
    )
    upload = add_verb(
        subparsers,
        "upload",
        cmd_upload,
        help="send the evidence the server does not hold yet (the reconciler does this after every cycle)",
    )
    config_option(upload)
    upload.add_argument("--force", action="store_true", help="try now, even while backing off")
    upload.add_argument("--json", action="store_true", help="machine-readable output")


def _load(args: argparse.Namespace) -> object:
    from nixcomply.reconcile.config import DEFAULT_CONFIG, load_config

    return load_config(args.config or DEFAULT_CONFIG)


def _token(args: argparse.Namespace) -> str:
    import os

    from nixcomply.errors import UsageError
    from nixcomply.uplink.settings import TOKEN_CREDENTIAL

    if args.token:
        return str(args.token)
    path: Path | None = args.token_file
    directory = os.environ.get("CREDENTIALS_DIRECTORY")
    if path is None and directory:
        path = Path(directory) / TOKEN_CREDENTIAL
    if path is None:
        raise UsageError("no enrollment token", hint="pass --token or --token-file")
    try:
        return path.read_text().strip()
    except OSError as e:
        raise UsageError(f"{path}: {e.strerror}") from None


def cmd_enroll(args: argparse.Namespace) -> int:
    from nixcomply.errors import UsageError
    from nixcomply.evidence.statement import Host
    from nixcomply.reconcile.config import ReconcilerConfig
    from nixcomply.reconcile.record import origin_for
    from nixcomply.uplink.run import enroll
    from nixcomply.uplink.state import UplinkState

    config = _load(args)
    assert isinstance(config, ReconcilerConfig)
    if args.if_needed:
        with UplinkState.open(config.state_dir) as state:
            current = state.enrollment()
        if current is not None:
            print(f"already enrolled as {current.site}/{current.hostname} with {current.server}")
            return EXIT_OK
    server = args.server or config.upload.server
    if server is None:
        raise UsageError("no server", hint="pass --server or set nixcomply.reconciler.upload.server")
    machine_id = Host.local(etc=config.root / "etc").machine_id
    enrollment = enroll(
        config.state_dir,
        server=server,
        token=_token(args),
        hostname=args.hostname or config.host,
        machine_id=machine_id,
        origin=origin_for(config),
    )
    print(f"enrolled as {enrollment.site}/{enrollment.hostname} with {enrollment.server}")
    print(f"witness key: {enrollment.witness_key}")
    return EXIT_OK


def cmd_upload(args: argparse.Namespace) -> int:
    from nixcomply.reconcile.config import ReconcilerConfig
    from nixcomply.uplink.run import upload

    config = _load(args)
    assert isinstance(config, ReconcilerConfig)
    report = upload(
        config.state_dir,
        force=args.force,
        server=config.upload.server,
        timeout=config.upload.timeout_seconds,
        max_entries=config.upload.max_batch_entries,
    )
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    elif report.outcome == "failed":
        print(
            f"upload failed: {report.error}; next attempt {report.next_attempt_at:%Y-%m-%d %H:%M:%S}",
            file=sys.stderr,
        )
    else:
        print(f"upload: {report.outcome}, {report.sent} entries sent, server holds {report.accepted_size}")
    match report.outcome:
        case "uploaded" | "up-to-date" | "waiting":
            return EXIT_OK
        case "failed":
            return EXIT_FAILURE
        case "busy":
            return EXIT_TEMPFAIL
        case "not-enrolled":
            print("this host is not enrolled: run `nixcomply enroll --server URL --token T`", file=sys.stderr)
            return EXIT_USAGE
