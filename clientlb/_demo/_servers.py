"""The demo's servers: replicas and the status page, each a uvicorn server on a
loopback port of its own, run in a thread of this process.

A replica keeps its port when it is stopped and started again, as a restarted
process would, so the pool sees the same upstream come back.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import anyio
import anyio.to_thread
import uvicorn

#: Seconds to wait for a server to start or stop.
WAIT = 10.0


class LoopbackServer:
    """An ASGI app served on ``127.0.0.1`` at a free port chosen once.

    The port stays bound from the start (the socket the first ``start()``
    listens on): a port released between choosing and serving could be handed
    to the next server too."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self._reserved: socket.socket | None = self._socket(0)
        self.port: int = self._reserved.getsockname()[1]
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None

    @staticmethod
    def _socket(port: int) -> socket.socket:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        return sock

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> None:
        """Listen and serve; returns once the server accepts connections."""
        sock, self._reserved = self._reserved or self._socket(self.port), None
        # log_config=None: uvicorn would otherwise reset its loggers to INFO for
        # each server it configures, and a server starting beside one being
        # configured would log its start-up.
        config = uvicorn.Config(
            self.app, log_level="error", log_config=None, lifespan="off", interface="asgi3"
        )
        server = uvicorn.Server(config)
        self._server, self._sock = server, sock
        self._thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + WAIT
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.005)

    def stop(self) -> None:
        """Stop listening and serving (requests in progress finish first)."""
        if self._reserved is not None:  # never started
            self._reserved.close()
            self._reserved = None
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(WAIT)
            if self._sock is not None:
                self._sock.close()
            self._server = None

    async def astart(self) -> None:
        """``start()`` without blocking the event loop."""
        await anyio.to_thread.run_sync(self.start)

    async def astop(self) -> None:
        """``stop()`` without blocking the event loop."""
        await anyio.to_thread.run_sync(self.stop)


class Replica(LoopbackServer):
    """A replica that answers with its name (``x-replica``) after ``delay`` seconds;
    the story changes ``delay`` while it runs."""

    def __init__(self, name: str, delay: float = 0.0) -> None:
        super().__init__(self.serve)
        self.name = name
        self.delay = delay

    async def serve(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if self.delay:
            await anyio.sleep(self.delay)
        body = self.name.encode()
        headers = [(b"content-length", str(len(body)).encode()), (b"x-replica", body)]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})
