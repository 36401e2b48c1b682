"""``Tunnel``: a WebSocket after its 101, relayed between the client and the
upstream as nginx relays it: bytes, not messages.

The frames are followed (``FrameCursor``) but never held, unmasked or inflated,
so the two ends keep what they negotiated (compression included) and the proxy
holds at most a socket buffer per direction: when one side cannot take more,
reading from the other pauses. Following the frames is what lets the proxy act
like a WebSocket party where it must:

* it pings each leg every ``ping_interval`` (a ping masked towards the upstream,
  plain towards the client, slipped in between frames; the pong goes on to the
  other end, where an unsolicited pong is allowed); a leg that sends nothing
  for ``ping_timeout`` after a ping is taken for dead, and the other end hears
  1011 (the upstream froze) or 1001 (the client is gone);
* a message over ``max_message`` closes both legs with 1009, a framing error
  with 1002;
* at shutdown both ends hear 1001 Going Away and get ``close_timeout`` to finish.

Either side closing ends the tunnel, noticed at once, or within ``WATCH_PAUSED``
when the proxy had stopped reading that side because the other was full.
"""

from __future__ import annotations

import asyncio
import os
from typing import Protocol

from ..._http1._websocket import (
    GOING_AWAY,
    INTERNAL_ERROR,
    PING,
    FrameCursor,
    FrameError,
    close_frame,
    frame,
)
from .._engines._readable import peer_gone
from .._limits import WebSocketSettings

WATCH_PAUSED = 0.5  # seconds between looks at a paused end's socket


class End(Protocol):
    """One side of a tunnel: a connection whose bytes now go to the other."""

    transport: asyncio.Transport | None

    def attach(self, tunnel: Tunnel) -> None: ...


class _Leg:
    """What the tunnel knows of the bytes going to one end."""

    __slots__ = ("cursor", "end", "heard", "mask", "pending", "pinged")

    def __init__(self, end: End, cursor: FrameCursor, mask: bool, now: float) -> None:
        self.end = end
        self.cursor = cursor  # follows the frames going *to* this end
        self.mask = mask  # frames to this end are masked (it is the server)
        self.pending = b""  # the proxy's own frames, waiting for a frame boundary
        self.pinged = 0.0  # when the last ping went to this end (0: answered)
        self.heard = now  # when this end last sent a byte


class Tunnel:
    """Relays bytes between ``client`` and ``upstream`` until either closes."""

    def __init__(
        self,
        client: End,
        upstream: End,
        settings: WebSocketSettings,
        loop: asyncio.AbstractEventLoop,
        *,
        extensions: bool = False,
    ) -> None:
        self.settings = settings
        self.loop = loop
        now = loop.time()
        limit = settings.max_message
        # Frames to the upstream come from the client (masked), and the other way.
        self.to_upstream = _Leg(
            upstream, FrameCursor(masked=True, max_message=limit, extensions=extensions), True, now
        )
        self.to_client = _Leg(
            client, FrameCursor(masked=False, max_message=limit, extensions=extensions), False, now
        )
        self.client, self.upstream = client, upstream
        self.done: asyncio.Future[None] = loop.create_future()
        self.timer: asyncio.TimerHandle | None = None
        self.closing = False
        self.paused: set[End] = set()  # ends whose reading waits for the other
        self.watcher: asyncio.TimerHandle | None = None

    async def run(self, client_first: bytes = b"") -> None:
        """Relay until one side closes; ``client_first`` is what the client sent
        after its upgrade request, before the 101."""
        self.client.attach(self)
        self.upstream.attach(self)  # passes on what the upstream sent after its 101
        if client_first:
            self.data(self.client, client_first)
        self._schedule(self.settings.ping_interval, self._ping)
        try:
            await self.done
        finally:
            self.close()

    # -- bytes ------------------------------------------------------------------

    def _towards(self, source: End) -> _Leg:
        return self.to_upstream if source is self.client else self.to_client

    def data(self, source: End, data: bytes) -> None:
        """Bytes from ``source``: follow their frames and pass them on."""
        leg = self._towards(source)
        (self.to_client if leg is self.to_upstream else self.to_upstream).heard = self.loop.time()
        try:
            boundary = leg.cursor.feed(data)
        except FrameError as exc:
            self.fail(exc.code, str(exc))
            return
        if leg.pending and boundary >= 0:  # our frame goes in between theirs
            data = data[:boundary] + leg.pending + data[boundary:]
            leg.pending = b""
        self._write(leg, data)

    def _write(self, leg: _Leg, data: bytes) -> None:
        transport = leg.end.transport
        if data and transport is not None and not transport.is_closing():
            transport.write(data)

    def _send(self, leg: _Leg, own: bytes) -> None:
        """Send one of the proxy's frames to ``leg``'s end, at a frame boundary."""
        if leg.cursor.at_boundary and not leg.pending:
            self._write(leg, own)
        else:
            leg.pending += own

    def full(self, end: End) -> None:
        """``end`` cannot take more for now: stop reading the other side, and
        watch that side's socket meanwhile (a paused socket's close would go
        unnoticed until reading resumes)."""
        other = self.upstream if end is self.client else self.client
        source = other.transport
        if source is not None and not source.is_closing():
            source.pause_reading()
            self.paused.add(other)
            if self.watcher is None:
                self.watcher = self.loop.call_later(WATCH_PAUSED, self._watch_paused)

    def drained(self, end: End) -> None:
        other = self.upstream if end is self.client else self.client
        self.paused.discard(other)
        source = other.transport
        if source is not None and not source.is_closing():
            source.resume_reading()

    def _watch_paused(self) -> None:
        self.watcher = None
        for end in list(self.paused):
            sock = end.transport.get_extra_info("socket") if end.transport else None
            if sock is None or peer_gone(sock.fileno()):
                self.lost(end)
                return
        if self.paused and not self.done.done():
            self.watcher = self.loop.call_later(WATCH_PAUSED, self._watch_paused)

    def lost(self, end: End) -> None:
        """``end`` closed: the tunnel is over."""
        if not self.done.done():
            self.done.set_result(None)

    # -- the proxy's own frames -----------------------------------------------

    def _schedule(self, delay: float, callback: object) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer = self.loop.call_later(delay, callback)  # type: ignore[arg-type]

    def _ping(self) -> None:
        """Ping both legs that are not closing; check them ``ping_timeout`` later."""
        if self.closing:
            return
        now = self.loop.time()
        for leg in (self.to_upstream, self.to_client):
            if leg.cursor.closed:
                continue
            leg.pinged = now
            self._send(leg, frame(PING, os.urandom(4), mask=leg.mask))
        self._schedule(self.settings.ping_timeout, self._check)

    def _check(self) -> None:
        """A leg silent since its ping is dead; else ping again at the interval."""
        if self.closing:
            return
        for leg, other, code in (
            (self.to_upstream, self.to_client, INTERNAL_ERROR),
            (self.to_client, self.to_upstream, GOING_AWAY),
        ):
            if leg.pinged and leg.heard < leg.pinged:
                reason = "the upstream stopped answering" if code == INTERNAL_ERROR else ""
                self._send(other, close_frame(code, reason, mask=other.mask))
                self._finish()
                return
            leg.pinged = 0.0
        delay = max(self.settings.ping_interval - self.settings.ping_timeout, 0.0)
        self._schedule(delay, self._ping)

    def fail(self, code: int, reason: str) -> None:
        """Close both legs with ``code`` (a framing error, a message too big)."""
        for leg in (self.to_upstream, self.to_client):
            self._send(leg, close_frame(code, reason, mask=leg.mask))
        self._finish()

    def go_away(self) -> None:
        """Shutdown: both ends hear 1001 and get ``close_timeout`` to close."""
        if self.closing:
            return
        for leg in (self.to_upstream, self.to_client):
            if not leg.cursor.closed:
                self._send(leg, close_frame(GOING_AWAY, "shutting down", mask=leg.mask))
        self.closing = True
        self._schedule(self.settings.close_timeout, self.close)

    def _finish(self) -> None:
        """Close the connections once what was written has gone out."""
        self.closing = True
        for end in (self.client, self.upstream):
            transport = end.transport
            if transport is not None and not transport.is_closing():
                transport.close()  # flushes the buffer first
        if not self.done.done():
            self.done.set_result(None)

    def close(self) -> None:
        for timer in (self.timer, self.watcher):
            if timer is not None:
                timer.cancel()
        self.timer = self.watcher = None
        self._finish()
