"""Per-upstream connection limits: which upstreams are full, and who waits for
a slot.

An upstream with ``max_connections`` requests in flight is *full*: every pick
excludes it, as it excludes an upstream a retry already tried, so each
algorithm goes on to its next choice (the hashing ones to the next upstream in
the key's order). Full is not unhealthy: it changes no state, counts no
failure, and never makes the pool panic. When every upstream that could serve
is full, ``Pool.pick()`` raises ``Saturated``.

Waiting is the shells' business (it is I/O); the core only keeps the books and
says when to look again. A shell that got ``Saturated`` calls
``Pool.wait_for_slot(wake, seen)``: that refuses at once (``Saturated``, and
one more rejection counted) when ``max_pending`` requests wait already, or
registers ``wake``. ``wake()`` is then called, under the pool's lock and from
whatever thread ends a lease, each time a full upstream drops below its limit
or the membership or health changes; it must not block. ``seen`` (the
``version`` the failed pick saw) closes the gap between that pick and the
registration: a slot freed in between wakes the waiter at once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from ._errors import NoUpstream
from ._member import Member

AT_LIMIT = "every upstream that could serve is at its connection limit (max_connections)"


class Saturated(NoUpstream):
    """Every upstream that could serve this request is at its connection limit.

    ``version`` is the pool's slot version when the pick failed: give it to
    ``Pool.wait_for_slot()``."""

    def __init__(self, message: str = AT_LIMIT, version: int = 0) -> None:
        super().__init__(message)
        self.version = version


class Slots:
    """One pool's limits, under the pool's lock: the full members, the pending
    requests, and the counters ``Pool.snapshot()`` shows."""

    __slots__ = ("full", "max_pending", "rejected", "version", "waiters")

    def __init__(self, max_pending: int) -> None:
        self.full: set[Member] = set()
        self.max_pending = max_pending
        self.waiters: dict[SlotWait, None] = {}  # in arrival order
        self.rejected = 0  # turned away: nothing free and no room to wait, or a wait ran out
        self.version = 0  # bumped whenever a slot may have freed

    @property
    def pending(self) -> int:
        return len(self.waiters)

    def freed(self, member: Member) -> None:
        """``member`` has one request fewer in flight (called while any is full)."""
        if member in self.full:
            limit = member.limit
            if limit is None or member.in_flight < limit:
                self.full.discard(member)
                self.wake()

    def relimit(self, member: Member) -> None:
        """``member``'s limit changed (or it left the pool)."""
        limit = member.limit
        if limit is not None and member.in_flight >= limit:
            self.full.add(member)
        elif member in self.full:
            self.full.discard(member)
            self.wake()

    def wake(self) -> None:
        """A slot may have freed: tell every waiter to look again."""
        self.version += 1
        for waiter in list(self.waiters):
            waiter.wake()


class SlotWait:
    """One request's wait for a slot, from ``Pool.wait_for_slot()`` until
    ``close()``. While it is open it counts against ``max_pending``."""

    __slots__ = ("_lock", "_slots", "closed", "wake")

    def __init__(self, slots: Slots, lock: threading.RLock, wake: Callable[[], None]) -> None:
        self._slots = slots
        self._lock = lock
        self.wake = wake
        self.closed = False

    def expired(self) -> None:
        """The request's time ran out before a slot freed: counted as a
        rejection, and the wait is over."""
        with self._lock:
            if not self.closed:
                self._slots.rejected += 1
            self._close()

    def close(self) -> None:
        """The wait is over (served, failed otherwise, or cancelled)."""
        with self._lock:
            self._close()

    def _close(self) -> None:
        if not self.closed:
            self.closed = True
            self._slots.waiters.pop(self, None)

    def __enter__(self) -> SlotWait:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
