"""``FrontEnd``: the listener of ``clientlb proxy``, serving an ASGI app over
HTTP/1.1 with the limits of ``clientlb.Limits``.

It accepts connections itself so that it can stop: at ``client_connections``
open connections it first closes an idle keep-alive one (as nginx reuses idle
connections when it runs short), and when none is idle it stops accepting until
one closes, leaving new clients in the kernel's listen backlog instead of
resetting them. Shutdown stops accepting, closes idle connections, lets
requests in flight finish for a grace period, then answers those that have not
started a response with 503 and cuts the rest.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any

from .._limits import Limits
from ._connection import ClientConnection

log = logging.getLogger("clientlb.proxy")

ACCEPT_BATCH = 64  # connections accepted per readiness event


class FrontEnd:
    """Serve ``app`` (ASGI, http scopes) on a bound listening socket."""

    def __init__(self, app: Any, limits: Limits, loop: asyncio.AbstractEventLoop) -> None:
        self.app = app
        self.limits = limits
        self.loop = loop
        self.connections: set[ClientConnection] = set()
        self._sock: socket.socket | None = None
        self._accepting = False
        self._stopped = False
        self._empty = asyncio.Event()
        self._empty.set()

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
            if len(self.connections) >= self.limits.client_connections and not self._make_room():
                self._pause_accepting()
                return
            try:
                conn, _ = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE and the like: the backlog keeps them
                log.warning("cannot accept a connection: %s", exc)
                self._pause_accepting()
                self.loop.call_later(0.1, self._resume_accepting)
                return
            conn.setblocking(False)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.loop.create_task(self._connect(conn))

    async def _connect(self, conn: socket.socket) -> None:
        try:
            await self.loop.connect_accepted_socket(lambda: ClientConnection(self), conn)
        except OSError:
            conn.close()

    def _make_room(self) -> bool:
        """Close one idle keep-alive connection, if there is one."""
        for conn in self.connections:
            if conn.cycle is None and conn.served and conn.reader.idle:
                conn.close()
                self.connections.discard(conn)
                return True
        return False

    def opened(self, conn: ClientConnection) -> None:
        self.connections.add(conn)
        self._empty.clear()

    def closed(self, conn: ClientConnection) -> None:
        self.connections.discard(conn)
        if not self.connections:
            self._empty.set()
        if len(self.connections) < self.limits.client_connections:
            self._resume_accepting()

    async def shutdown(self, grace: float) -> None:
        """Stop accepting, let requests in flight finish for ``grace`` seconds,
        then answer the ones still waiting with 503 and cut the rest."""
        self._stopped = True
        self._pause_accepting()
        for conn in list(self.connections):
            conn.shutdown()
        try:
            async with asyncio.timeout(grace):
                await self._empty.wait()
        except TimeoutError:
            pending = [c.task for c in self.connections if c.task is not None]
            for conn in list(self.connections):
                if conn.task is not None:
                    conn.task.cancel()  # answered 503 if no response started
                else:
                    conn.abort()
            if pending:
                await asyncio.wait(pending, timeout=1.0)
            for conn in list(self.connections):
                conn.abort()
