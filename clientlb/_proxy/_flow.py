"""Write flow control shared by the proxy's two kinds of asyncio connection.

A client connection (the front end) and an upstream connection (the asyncio
engine) both write through a transport that may push back, and both may end up
as one side of a WebSocket tunnel after a 101. asyncio's ``pause_writing`` /
``resume_writing`` then mean the same for both: whoever waits to write is held
or woken, and a tunnel stops or resumes reading from the other side.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._front._tunnel import Tunnel


class WriteFlow(asyncio.Protocol):
    """The writing half of a connection's state, for subclasses that set
    ``transport``, ``write_paused``, ``drain_waiter`` and ``tunnel`` in their
    ``__init__`` and define ``attach()`` (a tunnel's ``End``)."""

    transport: asyncio.Transport | None
    write_paused: bool
    drain_waiter: asyncio.Future[None] | None
    tunnel: Tunnel | None

    if TYPE_CHECKING:

        def attach(self, tunnel: Tunnel) -> None: ...

    def pause_writing(self) -> None:
        self.write_paused = True
        if self.tunnel is not None:
            self.tunnel.full(self)

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.tunnel is not None:
            self.tunnel.drained(self)
        self._wake_drain()

    def _wake_drain(self) -> None:
        waiter = self.drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
