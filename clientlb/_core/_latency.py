"""Recent response latencies of a whole pool, and their quantiles.

``LatencyWindow`` keeps the last ``size`` successful latencies in a ring (O(1)
per response) and answers quantiles from a sorted copy made at most once per
``refresh`` seconds, so that a driver may ask for the p95 on every request (a
hedge delay) for the price of a lookup: one sort of at most ``size`` values per
refresh, none in between. Until ``min_samples`` latencies are in, there is no
estimate (``None``). Time is the caller's (the pool's injected clock).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable

#: Latencies kept: the window the quantiles are taken over.
WINDOW = 1024
#: Latencies needed before a quantile is given.
MIN_SAMPLES = 20
#: Seconds a sorted copy serves before the next one is made.
REFRESH = 0.1


class LatencyWindow:
    """The last ``size`` latencies, in seconds, and quantiles of them.

    ``add()`` (a bound ``deque.append``, the cheapest call there is) and
    ``refresh()`` are called under the pool's lock; ``quantile()`` only reads one
    attribute that ``refresh()`` replaces whole, so it needs none.
    """

    __slots__ = ("_ring", "_sorted", "add", "min_samples", "refresh_every", "size")

    def __init__(
        self, size: int = WINDOW, min_samples: int = MIN_SAMPLES, refresh: float = REFRESH
    ) -> None:
        self.size = size
        self.min_samples = min(min_samples, size)
        self.refresh_every = refresh
        self._ring: deque[float] = deque(maxlen=size)
        #: Record one successful response's latency: O(1), the oldest drops out.
        self.add: Callable[[float], None] = self._ring.append
        # (when sorted, the sorted samples); -inf: never
        self._sorted: tuple[float, tuple[float, ...]] = (-math.inf, ())

    def __len__(self) -> int:
        return len(self._ring)

    def stale(self, now: float) -> bool:
        """Whether ``refresh(now)`` is due: the sorted copy is ``refresh`` seconds
        old (or from the future: a clock that went back), or there was no
        estimate and now there is enough for one."""
        at, ordered = self._sorted
        if not ordered:
            return len(self._ring) >= self.min_samples
        return not at <= now < at + self.refresh_every

    def refresh(self, now: float) -> None:
        """Sort the window: O(k log k) for k samples."""
        ring = self._ring
        self._sorted = (now, tuple(sorted(ring)) if len(ring) >= self.min_samples else ())

    def quantile(self, q: float) -> float | None:
        """The ``q`` quantile (nearest rank) of the window as last sorted: the
        smallest latency at least a share ``q`` of the samples are not above."""
        ordered = self._sorted[1]
        if not ordered:
            return None
        rank = math.ceil(q * len(ordered)) - 1
        return ordered[min(max(rank, 0), len(ordered) - 1)]
