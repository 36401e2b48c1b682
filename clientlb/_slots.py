"""Waiting for a slot when every upstream is at its ``max_connections``: the
I/O half of ``clientlb._core._slots``, for the sync and the async drivers.

The core keeps the books (``Pool.wait_for_slot``) and calls a waiter's
``wake()`` under the pool's lock, from whichever thread ends a lease: a worker
thread of the sync transport, another event loop's thread, or this loop's own.
So ``wake()`` never blocks and never touches a loop from a foreign thread:

* sync: a ``threading.Event`` (``set()`` is safe from any thread);
* async: an ``anyio.Event``, set directly when ``wake()`` runs on the loop's own
  thread, else handed to the loop with its thread-safe, non-blocking
  ``call_soon``: asyncio's ``loop.call_soon_threadsafe`` or trio's
  ``TrioToken.run_sync_soon`` (anyio's ``from_thread`` would block the waking
  thread, under the pool's lock, until the loop ran it).

A woken waiter picks again; it may lose the slot to another and wait on. Every
waiter is woken per freed slot, so ``max_pending`` also bounds that work. The
wait is bounded by the call's deadline (``RetryPolicy.timeout``) and by the
shell's pool timeout (httpx's ``timeout.pool``, the proxy's ``timeout.pool``),
whichever ends first; when it ends, the call fails with ``Saturated``.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable

import anyio
import sniffio

from ._core import AttemptPlan, Lease, Saturated


def _budget(plan: AttemptPlan, limit: float | None) -> float | None:
    """Seconds this call may wait for a slot: the least of what is left of its
    time and ``limit`` (``None``: no bound)."""
    left = plan.remaining()
    if left is None:
        return limit
    left = max(left, 0.0)
    return left if limit is None else min(left, limit)


def _timed_out(seconds: float | None) -> Saturated:
    return Saturated(
        f"every upstream that could serve stayed at its connection limit "
        f"(max_connections) for the {seconds or 0:.3g} s this request could wait"
    )


def first_lease(plan: AttemptPlan, limit: float | None) -> Lease:
    """``plan.first()``, waiting for a slot when every upstream is full (see the
    module doc); raises ``Saturated`` when it cannot wait or the wait ran out."""
    try:
        return plan.first()
    except Saturated as full:
        seen = full.version
    budget = _budget(plan, limit)
    freed = threading.Event()
    with plan.pool.wait_for_slot(freed.set, seen) as waiting:
        deadline = None if budget is None else time.monotonic() + budget
        while True:
            left = None if deadline is None else deadline - time.monotonic()
            if (left is not None and left <= 0) or not freed.wait(left):
                waiting.expired()
                raise _timed_out(budget)
            freed.clear()
            try:
                return plan.first()
            except Saturated:
                continue


class _Wakeup:
    """An ``anyio.Event`` that any thread may set without blocking."""

    __slots__ = ("_event", "_soon", "_thread")

    def __init__(self) -> None:
        self._event = anyio.Event()
        self._thread = threading.get_ident()
        self._soon = _call_soon()

    def wake(self) -> None:
        """Called under the pool's lock, from any thread."""
        if threading.get_ident() == self._thread:
            self._event.set()
            return
        with contextlib.suppress(RuntimeError):  # a closed loop (trio's RunFinishedError)
            self._soon(self._set)

    def _set(self) -> None:
        self._event.set()

    async def wait(self) -> None:
        """Until woken; then ready for the next wake-up (a wake-up that comes
        while the caller picks again is kept for its next ``wait()``)."""
        await self._event.wait()
        self._event = anyio.Event()


def _call_soon() -> Callable[[Callable[[], None]], object]:
    """This event loop's thread-safe, non-blocking way to run a callback on it."""
    if sniffio.current_async_library() == "trio":
        import trio

        return trio.lowlevel.current_trio_token().run_sync_soon
    import asyncio

    return asyncio.get_running_loop().call_soon_threadsafe


async def afirst_lease(plan: AttemptPlan, limit: float | None) -> Lease:
    """The async twin of ``first_lease()``; cancellation leaves the queue too."""
    try:
        return plan.first()
    except Saturated as full:
        return await await_slot(plan, limit, full.version)


async def await_slot(plan: AttemptPlan, limit: float | None, seen: int) -> Lease:
    """The rest of ``afirst_lease()`` once ``plan.first()`` raised ``Saturated``
    (of slot version ``seen``): for a driver that takes the first lease itself,
    without a coroutine while slots are free."""
    budget = _budget(plan, limit)
    wakeup = _Wakeup()
    with plan.pool.wait_for_slot(wakeup.wake, seen) as waiting:
        lease = None
        with anyio.move_on_after(budget):
            while lease is None:
                await wakeup.wait()
                try:
                    lease = plan.first()
                except Saturated:
                    continue
        if lease is None:
            waiting.expired()
            raise _timed_out(budget)
        return lease
