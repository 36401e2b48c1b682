"""Writes held until the event loop's current round of callbacks is over.

Writing each answer the moment it is ready wakes the same sleeping client or
upstream process again and again within one round (one ``epoll`` wake-up), and
waking a task on another core is an inter-processor interrupt, paid by the
writer. Held to the end of the round, the writes wake each peer about once per
round: Netty's flush consolidation, and what uvloop did with small writes
before it made them at once (MagicStack/uvloop#619).

The flush is one ``call_soon`` callback per round: under uvloop it runs after
the round's I/O callbacks, under asyncio's own loop first thing in the next
round. Connections keep the bytes they hold; the outbox only keeps which ones to
flush. Anything else a connection does with its transport (another write, a
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
        # Weak: the outbox is the value of a weak-keyed table by loop, and a
        # value that held its key would keep every loop alive.
        self._loop = weakref.ref(loop)
        self._holders: list[Holder] = []

    def hold(self, holder: Holder) -> None:
        """``holder`` has started holding bytes: flush it when the round is over
        (call once per holder and round: when it holds nothing yet)."""
        holders = self._holders
        if not holders:
            loop = self._loop()
            if loop is None:  # pragma: no cover - a connection outlived its loop
                holder.flush()
                return
            loop.call_soon(self.flush)
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
