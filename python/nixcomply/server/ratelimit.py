"""Rate limits: a token bucket per identity, so one flooding caller is answered 429 (with
``Retry-After``) instead of taking the server and its database from everyone else.

Two identities, two buckets (``rate_limit`` in the configuration):

* every request, by the client's address, before anything else is done with it (the body
  is not even read): an unauthenticated flood, a token guesser, a host gone wild all stop
  here. The address is the one uvicorn gives the app: behind a reverse proxy on this
  machine (127.0.0.1 or ::1, uvicorn's ``forwarded_allow_ips``, ``$FORWARDED_ALLOW_IPS``)
  the client's address from its ``X-Forwarded-For``, so a proxy's clients do not share one
  bucket; a proxy elsewhere must be added there, or every request counts as its own.
* every authenticated request, by the host (its transport key), once its signature and
  counter were accepted: a host that loops is slowed down without touching its neighbours
  behind the same address. A replayed or forged request never counts against the host it
  names (it fails authentication first, and counts against its sender's address).

A bucket holds at most ``burst`` tokens and gains ``per_second`` of them a second; a request
takes one. The table of buckets is bounded (least recently used identities are forgotten,
which only ever lets a forgotten caller start afresh).
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Final

MAX_IDENTITIES: Final = 100_000


class TokenBuckets:
    def __init__(
        self,
        per_second: float,
        burst: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_identities: int = MAX_IDENTITIES,
    ) -> None:
        self.per_second = per_second
        self.burst = burst
        self.clock = clock
        self.max_identities = max_identities
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, identity: str) -> int | None:
        """Take a token for ``identity``: None when there was one, else the whole seconds
        until there is (for ``Retry-After``, at least 1)."""
        now = self.clock()
        with self._lock:
            tokens, then = self._buckets.pop(identity, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - then) * self.per_second)
            wait = None
            if tokens >= 1:
                tokens -= 1
            else:
                wait = max(1, math.ceil((1 - tokens) / self.per_second))
            self._buckets[identity] = (tokens, now)
            while len(self._buckets) > self.max_identities:
                self._buckets.popitem(last=False)
        return wait
