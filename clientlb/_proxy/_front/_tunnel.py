"""``Tunnel``: the bytes of an upgraded connection (a WebSocket after its 101),
relayed between the client and the upstream as nginx relays them.

Frames are not parsed, so the two ends keep what they negotiated (compression,
pings, their own message limits) and the proxy holds at most one socket buffer
per direction: when one side cannot take more, reading from the other pauses.
A tunnel with no byte in either direction for ``idle_timeout`` seconds (nginx's
``proxy_read_timeout`` applies the same 60 s default to WebSockets) is closed,
and so is each side when the other goes away.
"""

from __future__ import annotations

import asyncio
from typing import Protocol


class End(Protocol):
    """One side of a tunnel: a connection whose bytes now go to the other."""

    transport: asyncio.Transport | None

    def attach(self, tunnel: Tunnel) -> None: ...


class Tunnel:
    """Relays bytes between ``client`` and ``upstream`` until either closes."""

    def __init__(
        self,
        client: End,
        upstream: End,
        idle_timeout: float,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.client = client
        self.upstream = upstream
        self.idle_timeout = idle_timeout
        self.loop = loop
        self.last = loop.time()
        self.done: asyncio.Future[None] = loop.create_future()
        self.timer: asyncio.TimerHandle | None = None

    async def run(self, client_first: bytes = b"") -> None:
        """Relay until one side closes or the tunnel idles out; ``client_first``
        is what the client sent after its upgrade request, before the 101."""
        self.client.attach(self)
        self.upstream.attach(self)  # passes on what the upstream sent after its 101
        if client_first:
            self.data(self.client, client_first)
        self.timer = self.loop.call_at(self.last + self.idle_timeout, self._on_timer)
        try:
            await self.done
        finally:
            self.close()

    def _other(self, end: End) -> End:
        return self.upstream if end is self.client else self.client

    def data(self, source: End, data: bytes) -> None:
        self.last = self.loop.time()
        sink = self._other(source).transport
        if sink is not None and not sink.is_closing():
            sink.write(data)

    def full(self, end: End) -> None:
        """``end`` cannot take more for now: stop reading the other side."""
        source = self._other(end).transport
        if source is not None and not source.is_closing():
            source.pause_reading()

    def drained(self, end: End) -> None:
        source = self._other(end).transport
        if source is not None and not source.is_closing():
            source.resume_reading()

    def lost(self, end: End) -> None:
        """``end`` closed: the tunnel is over."""
        if not self.done.done():
            self.done.set_result(None)

    def close(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        for end in (self.client, self.upstream):
            transport = end.transport
            if transport is not None and not transport.is_closing():
                transport.close()
        if not self.done.done():
            self.done.set_result(None)

    def _on_timer(self) -> None:
        now = self.loop.time()
        if now - self.last >= self.idle_timeout:
            self.timer = None
            self.close()
        else:
            self.timer = self.loop.call_at(self.last + self.idle_timeout, self._on_timer)
