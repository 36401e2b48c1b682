"""The simulated clock and its event queue.

One ``Sim`` is the clock of a whole fleet: every client's ``Pool`` gets it as
``clock=`` (it is callable, like ``clientlb.testing.FakeClock``), and only the
event loop moves it, to the time of the event it runs. Events are
``(time, sequence, callback, argument)`` in a heap; the sequence number keeps
events due at the same time in the order they were scheduled, so a run is
deterministic.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable
from typing import Any

Callback = Callable[[Any], None]


class Sim:
    """A clock that reads the time of the event being run, and the events to come."""

    __slots__ = ("_heap", "_seq", "events", "now")

    def __init__(self) -> None:
        self.now = 0.0
        self._heap: list[tuple[float, int, Callback, Any]] = []
        self._seq = 0
        self.events = 0  # events run so far

    def __call__(self) -> float:
        return self.now

    def at(self, when: float, callback: Callback, argument: Any = None) -> None:
        """Run ``callback(argument)`` at ``when`` (not before now)."""
        self._seq += 1
        heapq.heappush(self._heap, (max(when, self.now), self._seq, callback, argument))

    def run(self, until: float = math.inf) -> None:
        """Run events in time order until none is left or the next is after ``until``."""
        heap, pop = self._heap, heapq.heappop
        count = 0
        while heap and heap[0][0] <= until:
            when, _, callback, argument = pop(heap)
            self.now = when
            callback(argument)
            count += 1
        self.events += count
