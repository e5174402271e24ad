"""Evidence: append throughput, and verify of a large log against raw Ed25519 verification.

Target (DESIGN.md): `nixcomply evidence verify` of a 100,000-entry log within 3x of the
raw Ed25519-verify time of the same 100,000 envelope signatures, measured in the same run.
Verify checks the envelope signatures, every file's digest and the Merkle tree; of the
100,000 checkpoints only the newest needs its log-key signature verified, the others are
checked against the digest the following entry signed (``chain.checkpoint``).
The raw figure is the bare `cryptography` verify call over messages prepared in memory
beforehand (no I/O, no parsing); it is measured before and after the verify run and
averaged, so drift in machine load affects both sides alike.

The 100,000-entry log is built with the real `EvidenceStore.append`, but with non-durable
writes (no fsync) and, when /dev/shm has room, on tmpfs: creating files on this project's
ext4 VMs costs ~0.3 ms each, which would make the build take many minutes without
changing what verify does. Durable append throughput is measured separately, on disk.

    python bench/evidence.py [--entries N] [--dir DIR] [--durable-appends M]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from nixcomply.evidence import dsse
from nixcomply.evidence.keyring import KeyEntry, Keyring
from nixcomply.evidence.keys import Signer, generate
from nixcomply.evidence.statement import CheckRun, ControlResult, FrameworkRefs, Host, KeyRole, Subject
from nixcomply.evidence.store import ENVELOPE_FILE, EvidenceStore
from nixcomply.evidence.verify import default_jobs, verify
from nixcomply.model.outcome import Outcome
from nixcomply.model.status import ControlStatus

TARGET_RATIO = 3.0
SHM = Path("/dev/shm")
BASE_TIME = datetime(2026, 1, 1, tzinfo=UTC)
TOPLEVEL = Subject(
    name="/nix/store/0c9ws1kd6vrsm4kn5xq3c3i0bzjw7dmv-nixos-system-clinic-01-26.05",
    digest={"sha256": "5" * 64},
)


def event(i: int) -> CheckRun:
    """A check-run predicate of a realistic size (a few controls, framework references)."""
    refs = FrameworkRefs(
        hipaa=["164.312(d)"], soc2=["CC6.1"], cis_v8=["6.3"], nist_800_53=["IA-2"], nist_csf=["PR.AA-03"]
    )
    controls = [
        ControlResult(
            id=f"ssh.control-{k}",
            status=ControlStatus.PASS,
            expected={"passwordauthentication": "no"},
            observed={"passwordauthentication": "no"},
            frameworks=refs,
        )
        for k in range(3)
    ]
    return CheckRun(
        event="checks.ran",
        observed_at=BASE_TIME + timedelta(seconds=30 * i),
        host=Host(machine_id="4f" * 16, hostname="clinic-01"),
        outcome=Outcome.SUCCESS,
        controls=controls,
    )


def build(root: Path, n: int, bundle: Signer, log: Signer, *, durable: bool) -> float:
    """Append ``n`` entries; returns the seconds it took."""
    with EvidenceStore.open(root, bundle, log, origin="bench.nixcomply/log", durable=durable) as store:
        start = time.perf_counter()
        for i in range(n):
            store.append(event(i), subjects=[TOPLEVEL])
            if sys.stderr.isatty() and i % 1000 == 0:
                print(f"\rbuilding: {i}/{n}", end="", file=sys.stderr, flush=True)
        elapsed = time.perf_counter() - start
    if sys.stderr.isatty():
        print("\r" + " " * 40 + "\r", end="", file=sys.stderr)
    return elapsed


def raw_verify_seconds(root: Path, key: Ed25519PublicKey) -> tuple[float, int]:
    """Time the bare Ed25519 verification of every envelope's signature."""
    messages: list[tuple[bytes, bytes]] = []
    for directory, _dirs, files in os.walk(root / "evidence"):
        if ENVELOPE_FILE in files:
            envelope = dsse.parse(Path(directory, ENVELOPE_FILE).read_bytes())
            messages.append((envelope.signatures[0].sig, dsse.pae(envelope.payload_type, envelope.payload)))
    start = time.perf_counter()
    for signature, message in messages:
        key.verify(signature, message)
    return time.perf_counter() - start, len(messages)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--durable-appends", type=int, default=200)
    parser.add_argument("--dir", type=Path, default=None, help="where to build the large log")
    args = parser.parse_args()

    bundle, log = generate("bench.nixcomply/bundle"), generate("bench.nixcomply/log")
    keyring = Keyring(
        keys=[
            KeyEntry(vkey=bundle.public.vkey, role=KeyRole.BUNDLE),
            KeyEntry(vkey=log.public.vkey, role=KeyRole.LOG),
        ]
    )

    with tempfile.TemporaryDirectory(prefix="nixcomply-bench-") as disk:
        m = args.durable_appends
        seconds = build(Path(disk) / "durable", m, bundle, log, durable=True)
        print(
            f"append, durable (fsync), on disk:   {m / seconds:8.1f} entries/s  ({seconds / m * 1000:.2f} ms each)"
        )

    parent = args.dir
    if parent is None and SHM.is_dir() and shutil.disk_usage(SHM).free > 8 * args.entries * 4096:
        parent = SHM
    with tempfile.TemporaryDirectory(prefix="nixcomply-bench-", dir=parent) as tmp:
        root = Path(tmp) / "store"
        n = args.entries
        seconds = build(root, n, bundle, log, durable=False)
        where = "tmpfs" if str(tmp).startswith(str(SHM)) else "disk"
        print(
            f"append, non-durable, on {where}:     {n / seconds:8.1f} entries/s  (building the {n}-entry log)"
        )

        key = Ed25519PublicKey.from_public_bytes(bundle.public.raw)
        raw_before, count = raw_verify_seconds(root, key)
        report = verify(root, keyring)
        raw_after, _ = raw_verify_seconds(root, key)
        raw = (raw_before + raw_after) / 2
        if report.exit_code != 0:
            print("verify did not pass:", *report.lines(), sep="\n  ")
            return 1
        ratio = report.duration_s / raw
        print(
            f"raw Ed25519 verify of {count} signatures: {raw:8.2f} s  "
            f"({raw / count * 1e6:.0f} us each; before {raw_before:.2f} s, after {raw_after:.2f} s)"
        )
        print(
            f"nixcomply evidence verify, {n} entries: {report.duration_s:8.2f} s  "
            f"({report.checkpoints_verified} checkpoints: the newest by signature, older ones by the "
            f"digest the next entry signed; {default_jobs()} threads on {os.cpu_count()} CPUs)"
        )
        print(
            f"ratio {ratio:.2f}x  target <= {TARGET_RATIO:.1f}x  {'OK' if ratio <= TARGET_RATIO else 'MISSED'}"
        )
        return 0 if ratio <= TARGET_RATIO else 1


if __name__ == "__main__":
    sys.exit(main())
