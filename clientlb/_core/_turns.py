"""Sharing the interpreter with an event loop, for work on thousands of upstreams.

Such work (parsing a registry's answer, rendering an admin page) runs in a worker
thread so that the event loop keeps serving, but it holds the GIL: a loop that
wakes up then waits for it up to the switch interval (5 ms) per turn, several
turns per request. Loops over many items give it back about every millisecond
instead: ``time.sleep(0)`` lets a waiting thread in at once (``os.sched_yield``
does not, reliably), at a cost of some 50-100 us, so the loop's wait stays near
a millisecond and the work takes under a tenth longer. Harmless on the loop's own
thread.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

#: Seconds of work between two turns.
TURN = 0.001
#: Items between two looks at the clock.
_LOOK = 32


def taking_turns(items: Iterable[T], turn: float = TURN) -> Iterator[T]:
    """``items``, giving other threads the interpreter after every ``turn`` seconds
    spent on them (and on whatever the caller does with them)."""
    clock = time.perf_counter
    due = clock() + turn
    for i, item in enumerate(items, 1):
        yield item
        if i % _LOOK == 0 and clock() >= due:
            time.sleep(0)
            due = clock() + turn
