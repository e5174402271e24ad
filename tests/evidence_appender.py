"""A separate process that appends evidence, for the concurrency and crash tests.

    python tests/evidence_appender.py ROOT BUNDLE_KEY LOG_KEY COUNT [TAG [--wait]]

Prints ``ready`` once the store is open (with ``--wait``, then waits for a line on stdin,
so several appenders can be started together), then ``<seq> <bundle_id>`` after each
append *returns* — a printed line is an acknowledged entry, which must survive any crash.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path

from nixcomply.evidence.keys import read_private_key
from nixcomply.evidence.statement import CheckRun, ControlResult, Host, Subject
from nixcomply.evidence.store import EvidenceStore
from nixcomply.model.outcome import Outcome
from nixcomply.model.status import ControlStatus

ORIGIN = "clinic-01.example/evidence-log"


def main() -> int:
    root, bundle_key, log_key, count = (
        Path(sys.argv[1]),
        Path(sys.argv[2]),
        Path(sys.argv[3]),
        int(sys.argv[4]),
    )
    tag = sys.argv[5] if len(sys.argv) > 5 else "child"
    host = Host(machine_id="3d1219c7c4c5404aaa1f6d2a48adfda4", hostname="clinic-01")
    subject = Subject(name="toplevel", digest={"sha256": "9f" * 32})
    with EvidenceStore.open(
        root, read_private_key(bundle_key), read_private_key(log_key), origin=ORIGIN
    ) as store:
        print("ready", flush=True)
        if "--wait" in sys.argv:
            sys.stdin.readline()
        for i in range(count):
            predicate = CheckRun(
                event="checks.ran",
                observed_at=datetime.now(UTC),
                host=host,
                outcome=Outcome.SUCCESS,
                controls=[ControlResult(id=f"test.{tag}-{i}", status=ControlStatus.PASS)],
            )
            recorded = store.append(
                predicate, subjects=[subject], attachments={"out.txt": f"{tag} {i}\n".encode()}
            )
            print(recorded.seq, recorded.bundle_id, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
