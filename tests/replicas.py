"""Real upstream replicas for integration tests: uvicorn servers on loopback.

Each ``Replica`` runs a uvicorn server in a thread, on an ephemeral 127.0.0.1 port
that it keeps across ``stop()``/``start()`` so a test can kill and revive it. The
app answers every request with a JSON description of what it received and records
it, so tests can count what each replica saw.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import uvicorn

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class Replica:
    """One upstream replica.

    * ``delay`` - seconds every response waits (a slow replica).
    * ``status`` - the status every response has (set it to make a replica sick).
    * ``drop`` - read and record each request, then close the connection without
      answering (a replica that fails after the request reached it).

    Special paths: ``/stream?chunks=N`` streams N chunks, waiting for
    ``replica.release`` (a threading.Event) before the last one; ``/health``
    answers ``health_status``.
    """

    def __init__(
        self, name: str, *, delay: float = 0.0, status: int = 200, drop: bool = False
    ) -> None:
        self.name = name
        self.delay = delay
        self.status = status
        self.drop = drop
        self.health_status = 200
        self.requests: list[dict[str, Any]] = []
        self.release = threading.Event()
        self._lock = threading.Lock()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def count(self, method: str | None = None, path: str | None = None) -> int:
        with self._lock:
            return sum(
                1
                for r in self.requests
                if (method is None or r["method"] == method) and (path is None or r["path"] == path)
            )

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()

    # -- lifecycle ----------------------------------------------------------------

    def start(self) -> Replica:
        # IPPROTO_TCP named explicitly: asyncio sets TCP_NODELAY on accepted sockets only
        # when it sees it, and without it each response waits ~40 ms for a delayed ACK.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        sock.listen(128)
        config = uvicorn.Config(
            self.app,
            log_level="warning",
            lifespan="off",
            timeout_graceful_shutdown=1,
            http="h11",
            loop="asyncio",
            interface="asgi3",
        )
        server = _Server(config)
        server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        self._server = server
        self._sock = sock
        self._thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError(f"replica {self.name} did not start")
            time.sleep(0.005)
        return self

    def stop(self) -> None:
        """Stop the server and close its listening socket: connections are refused."""
        if self._server is None:
            return
        self.release.set()
        self._server.should_exit = True
        assert self._thread is not None
        self._thread.join(10)
        self._sock.close()
        self._server = None

    def __enter__(self) -> Replica:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the app ------------------------------------------------------------------

    async def app(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        record = {
            "replica": self.name,
            "method": scope["method"],
            "path": scope["path"],
            "raw_path": scope.get("raw_path", b"").decode("latin-1"),
            "query": scope["query_string"].decode("latin-1"),
            "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]],
            "body_length": len(body),
        }
        with self._lock:
            self.requests.append(record)
        if scope["path"] == "/health":
            await _respond(send, self.health_status, b"ok")
            return
        if self.drop:
            await _drop_connection(receive, send)
            return
        if self.delay:
            await asyncio.sleep(self.delay)
        if scope["path"] == "/stream":
            chunks = int(dict(_pairs(scope["query_string"])).get("chunks", "3"))
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", b"text/plain")],
                }
            )
            for _ in range(chunks - 1):
                await send({"type": "http.response.body", "body": b"chunk\n", "more_body": True})
            while not self.release.is_set():
                await asyncio.sleep(0.005)
            await send({"type": "http.response.body", "body": b"end\n"})
            return
        payload = json.dumps(record).encode()
        await _respond(send, self.status, payload, b"application/json")


class _Server(uvicorn.Server):
    """uvicorn's server, minus a race in its shutdown: a connection accepted just
    before the listener closed joins after uvicorn told the open ones to close, so
    uvicorn waits its whole graceful timeout for it and then leaves it unclosed (a
    ResourceWarning in whatever test runs next)."""

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()  # stop accepting, then let accepted connections be made
        for _ in range(3):
            await asyncio.sleep(0)
        await super().shutdown(sockets)
        for connection in list(self.server_state.connections):
            connection.transport.close()  # any straggler still open after the timeout
        await asyncio.sleep(0)


async def _drop_connection(receive: Receive, send: Send) -> None:
    """Close the connection without a response. ASGI has no message for this, so
    it reaches uvicorn's transport through ``send`` (a bound method of uvicorn's
    request cycle), then waits for the disconnect so uvicorn adds no 500 of its own."""
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    if transport is None:
        raise RuntimeError("cannot reach the server's transport to drop the connection")
    transport.close()
    while (await receive())["type"] != "http.disconnect":
        pass


def _pairs(query: bytes) -> list[tuple[str, str]]:
    out = []
    for part in query.decode().split("&"):
        if "=" in part:
            k, v = part.split("=", 1)
            out.append((k, v))
    return out


async def _respond(send: Send, status: int, body: bytes, ctype: bytes = b"text/plain") -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", ctype), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


def closed_port() -> str:
    """A loopback URL where nothing listens (connections are refused)."""
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    return f"http://127.0.0.1:{port}"
