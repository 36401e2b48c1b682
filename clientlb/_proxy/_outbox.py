"""Writes held until the event loop's current round of callbacks is over, then
made one after the other.

Every write to a loopback or LAN peer that sleeps wakes it. The proxy's hot path
answers many connections per round of the event loop (one ``epoll`` wake-up), and
writing each answer at once wakes the same client or upstream process again and
again, often just after it went back to sleep; waking a sleeping task on another
core is an inter-processor interrupt, paid by the writer. Holding the writes of
one round and making them when the round is over wakes each peer once per round,
and pipelined answers on one connection go out as one write. This is Netty's
flush consolidation (``FlushConsolidationHandler``: flush at the end of a read
loop), and what uvloop itself did with every write before it wrote at once.

A round here is what the loop runs before it polls again: the flush is a
``call_soon`` callback, which runs after the I/O callbacks of the round that
scheduled it (uvloop), or first thing in the next round (asyncio's own loop).
The connections that hold bytes keep them; the outbox only keeps which ones to
flush. Whatever else a connection does with its transport (another write, a
close) flushes what it holds first, so bytes keep their order."""

from __future__ import annotations

import asyncio
import logging
import weakref
from typing import Protocol

log = logging.getLogger("clientlb.proxy")


class Holder(Protocol):
    """A connection that holds bytes for its transport."""

    def flush(self) -> None:
        """Write what is held, now (nothing if the connection is gone)."""


class Outbox:
    """The connections of one event loop with bytes held this round."""

    __slots__ = ("_holders", "_loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._holders: list[Holder] = []

    def hold(self, holder: Holder) -> None:
        """``holder`` has started holding bytes: flush it when the round is over
        (call once per holder and round: when it holds nothing yet)."""
        holders = self._holders
        if not holders:
            self._loop.call_soon(self.flush)
        holders.append(holder)

    def flush(self) -> None:
        """Flush every connection that holds bytes."""
        holders = self._holders
        self._holders = []
        for holder in holders:
            try:
                holder.flush()
            except Exception:  # one broken transport must not keep the others' bytes
                log.exception("writing to %r failed", holder)


_outboxes: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Outbox] = (
    weakref.WeakKeyDictionary()
)


def outbox_of(loop: asyncio.AbstractEventLoop) -> Outbox:
    """The one outbox of ``loop`` (its client and upstream connections share it,
    so one callback per round flushes both sides)."""
    outbox = _outboxes.get(loop)
    if outbox is None:
        outbox = _outboxes[loop] = Outbox(loop)
    return outbox
