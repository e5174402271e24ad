"""Verbs for evidence: ``nixcomply evidence keygen|verify|export|attest|rotate|revoke``.

Exit codes follow ``nixcomply.errors``; ``verify`` in particular: 0 every check passed
against a pinned keyring, 1 evidence tampered with or invalid (the first bad bundle is
named), 2 usage or I/O error, 3 passed with warnings (a keyring that is not pinned, an
expired attestation, an interrupted append).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

from nixcomply import cli
from nixcomply.core.paths import DEFAULT_STATE_DIR
from nixcomply.errors import EXIT_OK, EXIT_WARNINGS

if TYPE_CHECKING:
    from nixcomply.evidence.cosignature import WitnessPublicKey
    from nixcomply.evidence.keys import Signer
    from nixcomply.evidence.log import LogHead
    from nixcomply.evidence.store import EvidenceStore


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date like 2026-03-31") from None


def _store_options(parser: argparse.ArgumentParser, *, keys: bool = True) -> None:
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=DEFAULT_STATE_DIR,
        metavar="DIR",
        help=f"the evidence store's root (default: {DEFAULT_STATE_DIR})",
    )
    parser.add_argument(
        "--keyring", type=Path, metavar="FILE", help="keyring file (default: DIR/keyring.json)"
    )
    if keys:
        parser.add_argument(
            "--signing-key",
            metavar="FILE",
            help="bundle signing key file (ignored under systemd: $CREDENTIALS_DIRECTORY/"
            "nixcomply-evidence-bundle-key)",
        )
        parser.add_argument(
            "--log-key",
            metavar="FILE",
            help="log (checkpoint) key file (under systemd: $CREDENTIALS_DIRECTORY/nixcomply-evidence-log-key)",
        )
        parser.add_argument(
            "--origin", metavar="ORIGIN", help="the log's origin line (default: the log key's name)"
        )


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    group = cli.add_group(
        subparsers, "evidence", help="signed, tamper-evident evidence: keys, verify, export, attest"
    )

    p = cli.add_verb(group, "keygen", _keygen, help="generate an Ed25519 key for signing evidence")
    p.add_argument("--role", choices=("bundle", "log"), required=True, help="what the key signs")
    p.add_argument("--name", help="key name, no spaces or '+' (default HOST/evidence-ROLE)")
    p.add_argument(
        "--out",
        type=Path,
        required=True,
        metavar="FILE",
        help="private key file to write (mode 0600) and FILE.pub",
    )
    p.add_argument(
        "--keyring",
        type=Path,
        metavar="FILE",
        help="also add the public key to this keyring (created if missing)",
    )

    p = cli.add_verb(
        group,
        "verify",
        _verify,
        help="verify an evidence store or an export packet, offline",
        description=(
            "Verify every signature, digest, chain link and checkpoint of an evidence store\n"
            "or an auditor's packet (directory or .zip).\n\n"
            "Pin the keyring (--keyring, a copy obtained out of band, or the pin.json of an\n"
            "earlier packet) and a checkpoint (--pin-checkpoint): without them verification\n"
            "shows the evidence is intact, not who made it or that nothing was cut off.\n\n"
            "exit status: 0 ok, 1 tampered or invalid, 2 usage or I/O error, 3 ok with warnings\n"
            "(among them: the keyring is not pinned)"
        ),
    )
    p.add_argument(
        "path", type=Path, metavar="STORE|PACKET", help="store root, packet directory or packet .zip"
    )
    p.add_argument(
        "--keyring",
        type=Path,
        metavar="FILE",
        help="your copy of the keyring, obtained out of band (default: DIR/keyring.json, not pinned: exit 3)",
    )
    p.add_argument(
        "--pin-checkpoint",
        type=Path,
        metavar="FILE",
        help="an earlier checkpoint the log must still extend, or the pin.json of an earlier packet "
        "(its keyring is then pinned too)",
    )
    p.add_argument(
        "--witness",
        metavar="VKEY",
        help="require the witness's cosignature on the newest checkpoint (its verifier key, or a file holding it)",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument(
        "--all-checkpoints",
        action="store_true",
        help="also verify the log-key signature and recompute the root of every older checkpoint "
        "(by default each is checked against the digest the next entry signed)",
    )
    p.add_argument("--jobs", type=int, metavar="N", help="worker processes (default: one per CPU)")
    p.add_argument(
        "--at", type=_date, metavar="DATE", help="judge expiry as of this date (default: today, UTC)"
    )

    p = cli.add_verb(group, "export", _export, help="write an auditor's packet for a period")
    p.add_argument("--from", dest="start", type=_date, required=True, metavar="DATE", help="first day (UTC)")
    p.add_argument("--to", dest="end", type=_date, required=True, metavar="DATE", help="last day (UTC)")
    p.add_argument("--controls", nargs="+", default=[], metavar="CONTROL", help="only bundles about these")
    p.add_argument("-o", "--output", type=Path, required=True, metavar="FILE", help="packet .zip to write")
    p.add_argument(
        "--witness",
        metavar="VKEY",
        help="the witness key to put in the packet (default: that of the server this host is enrolled with)",
    )
    _store_options(p, keys=False)

    p = cli.add_verb(
        group, "attest", _attest, help="record a signed attestation of an organisational control"
    )
    p.add_argument(
        "control", metavar="CONTROL", help="citation from controls-map.csv or a baseline control id"
    )
    p.add_argument("--by", required=True, metavar="WHO", help="who attests (name or e-mail)")
    p.add_argument(
        "--evidence-url", required=True, metavar="URL", help="link to the evidence (policy, records)"
    )
    p.add_argument(
        "--expires", type=_date, required=True, metavar="DATE", help="date the attestation must be renewed by"
    )
    p.add_argument("--statement", required=True, metavar="TEXT", help="what is attested")
    p.add_argument(
        "--controls-map", type=Path, metavar="FILE", help="controls-map.csv (default: nixcomply's own)"
    )
    p.add_argument(
        "--baseline",
        type=Path,
        metavar="FILE",
        help="baseline YAML, for a control id's framework references (default: hipaa-v1)",
    )
    _store_options(p)

    p = cli.add_verb(
        group, "rotate", _rotate, help="rotate the bundle or log key (signed by old and new key)"
    )
    p.add_argument("--role", choices=("bundle", "log"), required=True, help="which key to replace")
    p.add_argument(
        "--new-key",
        type=Path,
        required=True,
        metavar="FILE",
        help="the new private key (from evidence keygen)",
    )
    p.add_argument(
        "--reason", default="scheduled rotation", metavar="TEXT", help="why (recorded in the rotation entry)"
    )
    _store_options(p)

    p = cli.add_verb(group, "revoke", _revoke, help="revoke a key of the keyring")
    p.add_argument("key", metavar="KEY", help="verifier key, key name, name+keyid or fingerprint")
    p.add_argument("--reason", required=True, metavar="TEXT", help="why (recorded in the revocation entry)")
    p.add_argument(
        "--from-seq",
        type=int,
        metavar="SEQ",
        help="first entry the key may no longer vouch for (default: now)",
    )
    _store_options(p)


def _keyring_path(args: argparse.Namespace) -> Path:
    path: Path | None = args.keyring
    return path if path is not None else args.state_dir / "keyring.json"


def _keygen(args: argparse.Namespace) -> int:
    import socket

    from nixcomply.errors import UsageError
    from nixcomply.evidence.keys import generate, write_private_key
    from nixcomply.evidence.provision import enroll_key, enrollable
    from nixcomply.evidence.statement import KeyRole

    role = KeyRole(args.role)
    name = args.name or f"{socket.gethostname().split('.')[0]}/evidence-{role.value}"
    try:
        signer = generate(name)
    except ValueError as e:
        raise UsageError(f"--name: {e}") from None
    if args.keyring is not None:
        enrollable(args.keyring, role)  # refused before the key is written
    pub = write_private_key(args.out, signer)
    if args.keyring is not None:
        # A first key signs from entry 0: a key trusted from a later entry must be introduced
        # by a signed rotation entry (`evidence rotate`), or verification fails.
        enroll_key(args.keyring, signer, role)
    print(signer.public.vkey)
    print(f"wrote {args.out} (private, 0600) and {pub}", file=sys.stderr)
    print(f"fingerprint (sha256 of the public key): {signer.public.fingerprint}", file=sys.stderr)
    return EXIT_OK


def _progress() -> Callable[[int, int], None]:
    import time

    state = {"last": 0.0}

    def show(done: int, total: int) -> None:
        now = time.monotonic()
        if done == total or now - state["last"] > 0.2:
            state["last"] = now
            print(f"\rverifying: {done}/{total} bundles", end="", file=sys.stderr, flush=True)
            if done == total:
                print("\r" + " " * 40 + "\r", end="", file=sys.stderr, flush=True)

    return show


def _verify(args: argparse.Namespace) -> int:
    import json

    from nixcomply.errors import UsageError
    from nixcomply.evidence.keyring import load_keyring
    from nixcomply.evidence.log import COSIGNATURES
    from nixcomply.evidence.packet import read_pin
    from nixcomply.evidence.verify import VerifyProblem, verify_path
    from nixcomply.evidence.verify.directory import inside

    if args.jobs is not None and args.jobs < 1:
        raise UsageError("--jobs must be at least 1")
    witness = _witness_key(args.witness) if args.witness is not None else None
    keyring = load_keyring(args.keyring) if args.keyring is not None else None
    # A keyring or pin taken from the directory being verified is the directory's own word:
    # checked like any other, but it pins nothing (exit 3, and the warning says why).
    pinned = args.keyring is None or not inside(args.keyring, args.path)
    source = f"--keyring {args.keyring}" if args.keyring is not None else None
    if not pinned:
        source = f"{source}, a file of the directory verified"
    pin = read_pin(args.pin_checkpoint) if args.pin_checkpoint is not None else None
    pin_inside = pin is not None and inside(pin.source, args.path)
    if keyring is None and pin is not None and pin.keyring is not None:
        keyring, source = pin.keyring, f"the keyring of --pin-checkpoint {pin.source}"
        if pin_inside:
            pinned, source = False, f"{source}, a file of the directory verified"
    progress = _progress() if sys.stderr.isatty() and not args.json else None
    report = verify_path(
        args.path,
        keyring,
        pinned=pinned,
        source=source,
        pin=pin.checkpoint if pin is not None else None,
        host_head=_host_head(args.path),
        today=args.at,
        progress=progress,
        jobs=args.jobs,
        all_checkpoints=args.all_checkpoints,
        witness=witness,
    )
    if (
        args.keyring is not None
        and keyring is not None
        and pin is not None
        and pin.keyring is not None
        and pin.keyring.trust() != keyring.trust()
    ):
        # Two pinned keyrings that disagree: the one given now wins, and the auditor is told.
        report.warnings.append(
            VerifyProblem(
                "warning",
                f"--keyring {args.keyring} differs from the keyring pinned in --pin-checkpoint "
                f"{pin.source}: verified against --keyring; unless you expected a key change, "
                "verify with the pin alone",
                None,
                str(args.keyring),
            )
        )
    if pin_inside:
        report.pinned = None  # checked (an inconsistency is still an error), but no pin
        report.warnings.append(
            VerifyProblem(
                "warning",
                f"--pin-checkpoint {args.pin_checkpoint} is a file of the directory verified: it pins "
                "nothing (whoever can roll the directory back or cut it short rewrites it too); pass the "
                "pin kept from an earlier verification",
                None,
                str(args.pin_checkpoint),
            )
        )
    cosigned = None
    if witness is not None and not any((p.path or "").startswith(COSIGNATURES) for p in report.errors):
        cosigned = (
            f"the newest checkpoint (size {report.checkpoint_size}) carries the valid cosignature "
            f"of {witness.name}"
        )
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        for line in report.lines():
            print(line)
        if cosigned is not None:
            print(f"witness: {cosigned}")
    return report.exit_code


def _witness_key(vkey: str) -> WitnessPublicKey:
    """``--witness``: the witness's verifier key (the MSP's server: ``nixcomply-server
    witness key``), or a file holding it."""
    from nixcomply.errors import InputError, UsageError
    from nixcomply.evidence.cosignature import load_witness_key

    try:
        return load_witness_key(vkey)
    except (ValueError, InputError) as e:
        raise UsageError(f"--witness: {e}") from None


def _host_head(path: Path) -> LogHead | None:
    """What the host's state database recorded of the log, when ``path`` is a state
    directory that has one (an auditor's copy of the evidence alone has none)."""
    from nixcomply.host.state import read_evidence_head

    return read_evidence_head(path) if path.is_dir() else None


def _signers(args: argparse.Namespace) -> tuple[Signer, Signer]:
    import os

    from nixcomply.errors import UsageError
    from nixcomply.evidence.keys import BUNDLE_CREDENTIAL, CREDENTIALS_ENV, LOG_CREDENTIAL, load_signer

    if not os.environ.get(CREDENTIALS_ENV):
        for option, given in (("--signing-key", args.signing_key), ("--log-key", args.log_key)):
            if given is None:
                raise UsageError(
                    f"{option} is needed: this verb appends a signed entry to the log",
                    hint="pass both key files (`evidence keygen --role bundle|log` made them)",
                )
    return (
        load_signer(args.signing_key, credential=BUNDLE_CREDENTIAL),
        load_signer(args.log_key, credential=LOG_CREDENTIAL),
    )


def _open_store(args: argparse.Namespace) -> EvidenceStore:
    from nixcomply.evidence.store import EvidenceStore
    from nixcomply.host.state import EvidenceHead

    signer, log_signer = _signers(args)
    return EvidenceStore.open(
        args.state_dir,
        signer,
        log_signer,
        origin=args.origin or log_signer.name,
        head=EvidenceHead(args.state_dir),
    )


def _export(args: argparse.Namespace) -> int:
    from nixcomply.core.display import shown
    from nixcomply.errors import UsageError
    from nixcomply.evidence.export import export_packet
    from nixcomply.evidence.keyring import load_keyring

    if args.end < args.start:  # before the store is touched: a typo needs no keyring
        raise UsageError(f"--to {args.end} is before --from {args.start}")
    if not args.state_dir.is_dir():
        raise UsageError(f"{args.state_dir}: no evidence store here")
    keyring = load_keyring(_keyring_path(args))
    result = export_packet(
        args.state_dir,
        keyring,
        args.output,
        start=args.start,
        end=args.end,
        controls=args.controls,
        host_head=_host_head(args.state_dir),
        witness_key=args.witness or _enrolled_witness(args.state_dir),
    )
    first, end = result.period
    print(
        f"wrote {result.path}: {end - first} bundles from {args.start} to {args.end} "
        f"(entries {first}..{end - 1}; {result.bundles} with the boundary and key-rotation entries), "
        f"tree size {result.tree_size}, {result.checkpoints} checkpoints"
    )
    for w in result.report.warnings[:10]:
        print(shown(f"warning: {w}"), file=sys.stderr)
    return EXIT_OK


def _enrolled_witness(state_dir: Path) -> str | None:
    """The witness key of the MSP's server this host is enrolled with, if any."""
    from nixcomply.uplink.run import overview

    found = overview(state_dir)
    return found.enrollment.witness_key if found else None


def _attest(args: argparse.Namespace) -> int:
    from nixcomply.errors import UsageError
    from nixcomply.evidence.attest import attest, default_baseline, default_controls_map, find_control
    from nixcomply.evidence.statement import Host

    controls_map = args.controls_map or default_controls_map()
    if controls_map is None:
        raise UsageError("no controls-map.csv found", hint="pass --controls-map baseline/controls-map.csv")
    ref = find_control(args.control, controls_map, args.baseline or default_baseline())
    with _open_store(args) as store:
        recorded = attest(
            store,
            ref,
            by=args.by,
            evidence_url=args.evidence_url,
            expires=args.expires,
            statement=args.statement,
            host=Host.local(),
        )
    print(f"recorded attestation of {ref.key} as entry {recorded.seq}: {recorded.path}")
    if recorded.redactions:
        kinds = ", ".join(f"{n} {k}" for k, n in recorded.redactions.items())
        print(f"warning: redacted possible PHI from the statement ({kinds})", file=sys.stderr)
        return EXIT_WARNINGS
    return EXIT_OK


def _rotate(args: argparse.Namespace) -> int:
    from nixcomply.core.actor import invoking_user
    from nixcomply.evidence.keys import read_private_key
    from nixcomply.evidence.rotation import rotate
    from nixcomply.evidence.statement import Host, KeyRole

    new = read_private_key(args.new_key)
    role = KeyRole(args.role)
    with _open_store(args) as store:
        recorded = rotate(
            store,
            _keyring_path(args),
            role=role,
            new=new,
            host=Host.local(),
            actor=invoking_user(),
            reason=args.reason,
        )
    print(f"rotated the {role.value} key to {new.public.name} at entry {recorded.seq}")
    print(
        f"now point the service at {args.new_key} (the old key may not sign later entries)", file=sys.stderr
    )
    return EXIT_OK


def _revoke(args: argparse.Namespace) -> int:
    from nixcomply.core.actor import invoking_user
    from nixcomply.evidence.rotation import revoke
    from nixcomply.evidence.statement import Host

    with _open_store(args) as store:
        recorded = revoke(
            store,
            _keyring_path(args),
            args.key,
            host=Host.local(),
            actor=invoking_user(),
            reason=args.reason,
            from_seq=args.from_seq,
        )
    print(f"revoked {args.key} at entry {recorded.seq}")
    return EXIT_OK
