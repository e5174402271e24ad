"""``nixcomply daemon``: reconcile every ``poll_interval_seconds`` (plus jitter) as a
``Type=notify`` service.

The service tells systemd it is ready once the configuration loaded (``READY=1``), reports
what it is doing (``STATUS=``), and pets the watchdog (``WATCHDOG=1``): between cycles from
the main loop, and during a cycle from a helper thread, but only while the cycle is within
``cycle_timeout_seconds``, so a cycle that hangs (a stuck build, a stuck activation) stops
the petting and systemd restarts the service. SIGTERM ends the loop at once when idle, or
after the current cycle (an activation is never cut in half by nixcomply itself; the unit's
``TimeoutStopSec`` bounds the wait, and a kill mid-cycle is settled by the next run).
"""

from __future__ import annotations

import logging
import random
import signal
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

from nixcomply.errors import EXIT_OK, LockHeldError, NixcomplyError
from nixcomply.host import notify
from nixcomply.reconcile.config import load_config

logger = logging.getLogger(__name__)


class _Watchdog:
    """Pets systemd's watchdog from a thread while the current cycle is within its budget."""

    def __init__(self, interval: float | None) -> None:
        self.interval = interval
        self._deadline = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.interval is None:
            return
        self._thread = threading.Thread(target=self._run, name="nixcomply-watchdog", daemon=True)
        self._thread.start()

    def busy_until(self, deadline: float) -> None:
        self._deadline = deadline

    def idle(self) -> None:
        self._deadline = 0.0

    def _run(self) -> None:
        assert self.interval is not None
        while not self._stop.wait(self.interval / 2):
            if time.monotonic() < self._deadline:
                notify.watchdog()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


def run(config_path: Path, *, cycles: int | None = None) -> int:
    """Reconcile until SIGTERM (or ``cycles`` cycles, for tests)."""
    from nixcomply.reconcile.cycle import Reconciler

    config = load_config(config_path)
    stop = threading.Event()

    def on_term(signum: int, _frame: FrameType | None) -> None:
        logger.info("received %s: stopping after the current step", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    interval = notify.watchdog_interval()
    watchdog = _Watchdog(interval)
    watchdog.start()
    notify.ready(f"watching {config.flake} every {config.poll_interval_seconds:g} s")
    done = 0
    try:
        while not stop.is_set():
            notify.status("reconciling")
            notify.watchdog()
            watchdog.busy_until(time.monotonic() + config.cycle_timeout_seconds)
            try:
                report = Reconciler(config).run()
                status = (
                    f"last run {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC: {report.result.outcome.value}"
                    + (f" ({report.plan.kind.value})" if report.plan else "")
                )
            except LockHeldError as e:
                status = f"skipped a cycle: {e}"
            except NixcomplyError as e:
                logger.error("cycle failed: %s", e)
                status = f"last cycle failed: {e}"
            watchdog.idle()
            notify.watchdog()
            done += 1
            if cycles is not None and done >= cycles:
                break
            wait = config.poll_interval_seconds + random.uniform(0, config.jitter_seconds)  # noqa: S311 - jitter, not crypto
            notify.status(f"{status}; next in {wait:.0f} s")
            _sleep(wait, stop, interval)
    finally:
        notify.stopping("stopping")
        watchdog.stop()
    return EXIT_OK


def _sleep(seconds: float, stop: threading.Event, watchdog: float | None) -> None:
    """Sleep, waking early on stop and often enough to pet the watchdog."""
    deadline = time.monotonic() + seconds
    step = watchdog / 2 if watchdog else seconds
    while not stop.is_set():
        left = deadline - time.monotonic()
        if left <= 0:
            return
        stop.wait(min(step, left))
        notify.watchdog()
