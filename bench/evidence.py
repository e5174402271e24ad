"""Evidence: append throughput, and verify of a large log against raw Ed25519 verification.

Target (issue 9, DESIGN.md): `nixcomply evidence verify` of a 100,000-entry log within 1.3x
of raw Ed25519 verification of the same 100,000 envelope signatures using all cores,
measured in the same run; the figure is printed for one core and for all cores.

Verify checks the envelope signatures, every file's digest, the statements and the Merkle
tree; of the 100,000 checkpoints only the newest needs its log-key signature verified, the
others are checked against the digest the following entry signed (``chain.checkpoint``).
The raw figure is the bare `cryptography` verify call over messages prepared in memory
beforehand (no I/O, no parsing): on one thread, and on one thread per core (the call
releases the GIL, so threads scale as far as the machine does). Each raw figure is
measured before and after the verify runs and averaged, so drift in machine load affects
both sides alike. Verify's own figure is its in-process duration; the peak memory of the
`nixcomply evidence verify` process (all cores) is printed too.

The 100,000-entry log is built with the real `EvidenceStore.append`, but with non-durable
writes (no fsync) and, when /dev/shm has room, on tmpfs: creating files on this project's
ext4 VMs costs ~0.3 ms each, which would make the build take many minutes without
changing what verify does. Durable append throughput is measured separately, on disk.

    python bench/evidence.py [--entries N] [--dir DIR] [--durable-appends M]

The target is judged from 10,000 entries up (smaller logs do not amortise starting the
worker processes); the exit status is 1 when it is missed or verify fails.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from nixcomply.evidence import dsse
from nixcomply.evidence.keyring import KeyEntry, Keyring, save_keyring
from nixcomply.evidence.keys import Signer, generate
from nixcomply.evidence.statement import CheckRun, ControlResult, FrameworkRefs, Host, KeyRole, Subject
from nixcomply.evidence.store import ENVELOPE_FILE, EvidenceStore
from nixcomply.evidence.verify import default_jobs, verify
from nixcomply.model.outcome import Outcome
from nixcomply.model.status import ControlStatus

TARGET_RATIO = 1.3
JUDGED_FROM = 10_000
SHM = Path("/dev/shm")
BASE_TIME = datetime(2026, 1, 1, tzinfo=UTC)
TOPLEVEL = Subject(
    name="/nix/store/0c9ws1kd6vrsm4kn5xq3c3i0bzjw7dmv-nixos-system-clinic-01-26.05",
    digest={"sha256": "5" * 64},
)
Messages = list[tuple[bytes, bytes]]


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


def messages_of(root: Path) -> Messages:
    """Every envelope's signature and signed message (PAE), prepared in memory."""
    out: Messages = []
    for directory, _dirs, files in os.walk(root / "evidence"):
        if ENVELOPE_FILE in files:
            envelope = dsse.parse(Path(directory, ENVELOPE_FILE).read_bytes())
            out.append((envelope.signatures[0].sig, dsse.pae(envelope.payload_type, envelope.payload)))
    return out


def raw_seconds(messages: Messages, key: Ed25519PublicKey, threads: int) -> float:
    """The bare Ed25519 verification of ``messages`` on ``threads`` threads."""

    def run(part: Messages) -> None:
        for signature, message in part:
            key.verify(signature, message)

    parts = [messages[i::threads] for i in range(threads)]
    start = time.perf_counter()
    if threads == 1:
        run(messages)
    else:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(run, parts))
    return time.perf_counter() - start


def peak_rss_of_verify(root: Path, keyring: Path) -> tuple[float, int]:
    """``nixcomply evidence verify --json`` as its own process: duration and peak RSS (MiB)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "nixcomply",
            "evidence",
            "verify",
            str(root),
            "--keyring",
            str(keyring),
            "--json",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    report = json.loads(r.stdout)
    return float(report["duration_s"]), max(peak, before) // 1024


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
        ring = Path(tmp) / "keyring.json"
        save_keyring(ring, keyring)

        cores = default_jobs()
        # First, before this process holds the messages its forked workers would inherit.
        duration, rss = peak_rss_of_verify(root, ring)
        key = Ed25519PublicKey.from_public_bytes(bundle.public.raw)
        messages = messages_of(root)
        raw1 = [raw_seconds(messages, key, 1)]
        rawn = [raw_seconds(messages, key, cores)]
        one = verify(root, keyring, jobs=1)
        alln = verify(root, keyring, jobs=cores)
        rawn.append(raw_seconds(messages, key, cores))
        raw1.append(raw_seconds(messages, key, 1))
        for report in (one, alln):
            if report.exit_code != 0:
                print("verify did not pass:", *report.lines(), sep="\n  ")
                return 1
        raw_one, raw_all = sum(raw1) / 2, sum(rawn) / 2
        count = len(messages)
        print(
            f"raw Ed25519 verify of {count} signatures, 1 core:  {raw_one:8.2f} s  "
            f"({raw_one / count * 1e6:.0f} us each; before {raw1[0]:.2f} s, after {raw1[1]:.2f} s)"
        )
        print(
            f"raw Ed25519 verify of {count} signatures, {cores} cores: {raw_all:8.2f} s  "
            f"(before {rawn[0]:.2f} s, after {rawn[1]:.2f} s; {raw_one / raw_all:.2f}x one core)"
        )
        ratio_one, ratio_all = one.duration_s / raw_one, alln.duration_s / raw_all
        print(
            f"nixcomply evidence verify, {n} entries, 1 core:  {one.duration_s:8.2f} s  "
            f"ratio {ratio_one:.2f}x raw on 1 core  ({one.checkpoints_verified} checkpoints: the newest by "
            "signature, older ones by the digest the next entry signed)"
        )
        print(
            f"nixcomply evidence verify, {n} entries, {cores} cores: {alln.duration_s:8.2f} s  "
            f"ratio {ratio_all:.2f}x raw on {cores} cores  ({one.duration_s / alln.duration_s:.2f}x one core)"
        )
        print(f"nixcomply evidence verify as a process, {cores} cores: {duration:8.2f} s, peak RSS {rss} MiB")
        if n < JUDGED_FROM:
            print(
                f"ratio {ratio_all:.2f}x  target <= {TARGET_RATIO:.1f}x on all cores: not judged below {JUDGED_FROM} entries"
            )
            return 0
        ok = ratio_all <= TARGET_RATIO
        print(
            f"ratio {ratio_all:.2f}x  target <= {TARGET_RATIO:.1f}x on all cores  {'OK' if ok else 'MISSED'}"
        )
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
