"""Sharing the interpreter with other threads, for work on thousands of upstreams.

Such work (parsing a registry's answer, a change of membership, rendering an
admin page) runs in a worker thread so that the event loop or the request
threads keep serving, but it holds the GIL: a thread that wants it back waits up
to the switch interval (5 ms), and one preempted in the middle of a pick waits
as long as the worker then runs. Loops over many items give it back about every
half millisecond instead: ``time.sleep(0)`` lets a waiting thread in at once
(``os.sched_yield`` does not, reliably), at a cost of some 50-100 us, so a
waiting thread's wait stays under a millisecond. Harmless on the loop's own
thread. When the other threads never wait (they are busy), each turn costs the
worker up to a switch interval of wall time: it takes longer, they do not.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

#: Seconds of work between two turns.
TURN = 0.0005
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
