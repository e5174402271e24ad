"""A Type=notify daemon for the real-systemd tests, speaking sd_notify through nixcomply.host.notify.

--ready-when FILE   stay "activating" (STATUS=waiting) until FILE exists, then READY=1
--hang-once MARKER  on the first run only (MARKER absent), stop petting the watchdog after
                    a few pets and hang, so systemd's watchdog kills it
--ignore-sigterm    ignore SIGTERM (systemd must escalate after TimeoutStopSec)
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

from nixcomply.host import notify


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ready-when", type=Path)
    parser.add_argument("--hang-once", type=Path)
    parser.add_argument("--ignore-sigterm", action="store_true")
    args = parser.parse_args()

    stop = False

    def on_term(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, signal.SIG_IGN if args.ignore_sigterm else on_term)
    interval = notify.watchdog_interval()
    # Pet at a quarter of the timeout: a loaded CI machine must not miss it by accident.
    tick = interval / 4 if interval else 0.05

    if args.ready_when is not None:
        notify.status(f"waiting for {args.ready_when.name}")
        while not args.ready_when.exists():
            notify.watchdog()
            time.sleep(0.02)

    hang = False
    if args.hang_once is not None and not args.hang_once.exists():
        args.hang_once.write_text("hung once\n")
        hang = True
    notify.ready(status="serving")

    pets = 0
    while not stop:
        if hang and pets >= 3:
            notify.status("hanging: no more watchdog pets")
            while True:
                time.sleep(3600)
        notify.watchdog()
        pets += 1
        time.sleep(tick)
    notify.stopping(status="stopping on SIGTERM")
    return 0


if __name__ == "__main__":
    sys.exit(main())
