"""``FrontEnd``: the listener of ``clientlb proxy``, serving an ASGI app over
HTTP/1.1 with the limits of ``clientlb.Limits``.

It accepts connections itself so that it can stop: at ``client_connections``
open connections (counted from ``accept()``, so a burst cannot overshoot) it
first closes an idle keep-alive one (as nginx reuses idle connections when it
runs short), and when none is idle it stops accepting until one closes or turns
idle, leaving new clients in the kernel's listen backlog instead of resetting
them. Shutdown stops accepting, closes idle connections, lets
requests in flight finish for a grace period, then answers those that have not
started a response with 503 and cuts the rest.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import socket
from typing import Any

from .._express import Express, express_lane
from .._limits import Limits
from ._connection import ClientConnection

log = logging.getLogger("clientlb.proxy")

ACCEPT_BATCH = 64  # connections accepted per readiness event


def _tick(limits: Limits) -> float:
    """One clock for every connection's deadlines, rather than a timer per
    request: a quarter of the shortest timeout is precise enough."""
    shortest = min(limits.header_timeout, limits.keepalive_timeout, limits.body_timeout)
    return min(max(shortest / 4, 0.01), 1.0)


class FrontEnd:
    """Serve ``app`` (ASGI, http scopes) on a bound listening socket."""

    def __init__(
        self,
        app: Any,
        limits: Limits,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.app = app
        #: Requests that need none of the app's coroutine path skip it (see
        #: ``clientlb._proxy._express``); ``None`` when the app is not one for it.
        self.express: Express | None = express_lane(app)
        self.limits = limits
        self.loop = loop
        self.connections: set[ClientConnection] = set()
        self._open = 0  # accepted and not closed, counted towards the cap
        self._waiting: collections.deque[socket.socket] = collections.deque()
        self._sock: socket.socket | None = None
        self._accepting = False
        self._stopped = False
        self._empty = asyncio.Event()
        self._empty.set()
        self._tick = _tick(limits)
        self._ticker: asyncio.TimerHandle | None = None

    @property
    def open_connections(self) -> int:
        """Client connections accepted and not closed yet (the gauge
        ``clientlb_proxy_client_connections``)."""
        return self._open

    def use(self, app: Any, limits: Limits) -> None:
        """Serve every request from now on with ``app``, and connections accepted
        from now on with ``limits`` (a reload: open connections keep theirs,
        except the cap on their number, which holds at once)."""
        self.app = app
        self.express = express_lane(app)
        self.limits = limits
        self._tick = min(self._tick, _tick(limits))
        self._admit()

    def serve(self, sock: socket.socket) -> None:
        """Start accepting on ``sock`` (already bound and listening)."""
        sock.setblocking(False)
        self._sock = sock
        self._resume_accepting()

    def _resume_accepting(self) -> None:
        if not self._accepting and not self._stopped and self._sock is not None:
            self._accepting = True
            self.loop.add_reader(self._sock.fileno(), self._accept)

    def _pause_accepting(self) -> None:
        if self._accepting and self._sock is not None:
            self._accepting = False
            self.loop.remove_reader(self._sock.fileno())

    def _accept(self) -> None:
        assert self._sock is not None
        for _ in range(ACCEPT_BATCH):
            try:
                sock, _ = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE and the like: the backlog keeps them
                log.warning("cannot accept a connection: %s", exc)
                self._pause_accepting()
                self.loop.call_later(0.1, self._resume_accepting)
                return
            if self._open >= self.limits.client_connections and not self._make_room():
                self._waiting.append(sock)  # held as if in the backlog
                self._pause_accepting()
                return
            self._start(sock)

    def _start(self, sock: socket.socket) -> None:
        self._open += 1
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.loop.create_task(self._connect(sock))

    async def _connect(self, sock: socket.socket) -> None:
        try:
            await self.loop.connect_accepted_socket(lambda: ClientConnection(self), sock)
        except OSError:
            sock.close()
            self._open -= 1
            self._admit()

    def _make_room(self) -> bool:
        """Close one idle keep-alive connection, if there is one."""
        for conn in self.connections:
            if conn.counted and conn.cycle is None and conn.served and conn.reader.idle:
                conn.close()
                self._release(conn)
                return True
        return False

    def _release(self, conn: ClientConnection) -> None:
        """``conn`` no longer counts towards ``client_connections``."""
        if conn.counted:
            conn.counted = False
            self._open -= 1

    def _admit(self) -> None:
        """Start the connections held back at the cap while there is room (or an
        idle one to close), then accept again."""
        cap = self.limits.client_connections
        while self._waiting and (self._open < cap or self._make_room()):
            self._start(self._waiting.popleft())
        if not self._waiting and self._open < cap:
            self._resume_accepting()

    def idle(self, conn: ClientConnection) -> None:
        """``conn`` finished a response and waits for the next request: at the
        cap, a connection held back takes its place."""
        if self._waiting:
            self._admit()

    def opened(self, conn: ClientConnection) -> None:
        self.connections.add(conn)
        self._empty.clear()
        if self._ticker is None:
            self._ticker = self.loop.call_later(self._tick, self._on_tick)

    def _on_tick(self) -> None:
        now = self.loop.time()
        for conn in [c for c in self.connections if c.deadline <= now or c.read_paused]:
            if conn.read_paused and conn.tunnel is None:
                conn.check_paused()  # its close would go unnoticed while paused
            if conn.deadline <= now:
                conn.on_deadline(now)
        self._ticker = self.loop.call_later(self._tick, self._on_tick) if self.connections else None

    def closed(self, conn: ClientConnection) -> None:
        self.connections.discard(conn)
        self._release(conn)
        if not self.connections:
            self._empty.set()
        if not self._stopped:
            self._admit()

    async def shutdown(self, grace: float) -> None:
        """Stop accepting, let requests in flight finish for ``grace`` seconds,
        then answer the ones still waiting with 503 and cut the rest."""
        self._stopped = True
        self._pause_accepting()
        while self._waiting:
            self._waiting.popleft().close()
        if self._ticker is not None and not self.connections:
            self._ticker.cancel()
            self._ticker = None
        for conn in list(self.connections):
            conn.shutdown()
        try:
            async with asyncio.timeout(grace):
                await self._empty.wait()
        except TimeoutError:
            pending = [c.task for c in self.connections if c.running and c.task]
            for conn in list(self.connections):
                if conn.running is not None and conn.task is not None:
                    conn.task.cancel()  # answered 503 if no response started
                elif conn.exchange is not None:
                    conn.exchange.cancel()
                    conn.refuse(503, "the proxy is shutting down")
                else:
                    conn.abort()
            if pending:
                await asyncio.wait(pending, timeout=1.0)
            for conn in list(self.connections):
                conn.abort()
