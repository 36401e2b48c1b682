"""Servers for the proxy tests: any ASGI app under uvicorn in a thread, special
upstreams (streams, sinks, a socket that dies mid-response), and raw-socket
helpers to talk HTTP/1.1 byte by byte."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any, Literal

import uvicorn


class Served:
    """An ASGI app served by uvicorn on an ephemeral loopback port, in a thread;
    over TLS when ``tls`` gives a certificate file and its key file."""

    def __init__(
        self,
        app: Any,
        *,
        http: Literal["h11", "httptools"] = "httptools",
        lifespan: Literal["on", "off"] = "off",
        tls: tuple[str, str] | None = None,
    ) -> None:
        self.app = app
        self.scheme = "https" if tls else "http"
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen(512)
        self.sock = sock
        self.port: int = sock.getsockname()[1]
        config = uvicorn.Config(
            app,
            log_level="warning",
            lifespan=lifespan,
            http=http,
            loop="asyncio",
            timeout_graceful_shutdown=1,
            ws="websockets-sansio",
            proxy_headers=False,
            ssl_certfile=tls[0] if tls else None,
            ssl_keyfile=tls[1] if tls else None,
        )
        self.server = uvicorn.Server(config)
        self.server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [sock]}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def start(self) -> Served:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("server did not start")
            time.sleep(0.002)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()

    def __enter__(self) -> Served:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def serve(app: Any, **options: Any) -> Iterator[Served]:
    with Served(app, **options) as served:
        yield served


# -- special upstreams ------------------------------------------------------------


class Named:
    """Answers every request with ``NAME SCHEME PATH``; records the paths."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.paths: list[str] = []
        self.lock = threading.Lock()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        with self.lock:
            self.paths.append(scope["path"])
        body = f"{self.name} {scope['scheme']} {scope['path']}".encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})


class Special:
    """An upstream app with behaviours chosen by path:

    * ``/cookies`` - two Set-Cookie headers.
    * ``/status/N`` - status N, with a body unless N forbids one.
    * ``/download?mib=N`` - N MiB streamed in 64 KiB chunks.
    * ``/upload`` - reads the body and answers its length.
    * ``/hang`` - waits until the client goes away, then sets ``disconnected``.
    * ``/echo-headers`` - the received headers as lines.
    """

    def __init__(self) -> None:
        self.disconnected = threading.Event()
        self.started = threading.Event()
        self.received: list[dict[str, Any]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        self.received.append({"path": path, "method": scope["method"], "headers": scope["headers"]})
        if path == "/cookies":
            await _send(send, 200, [(b"set-cookie", b"a=1"), (b"set-cookie", b"b=2")], b"ok")
        elif path.startswith("/status/"):
            status = int(path.rsplit("/", 1)[1])
            await _send(send, status, [(b"etag", b'"x"')], b"" if status in (204, 304) else b"body")
        elif path == "/download":
            mib = int(scope["query_string"].decode().partition("=")[2] or "1")
            chunk = b"x" * 65536
            length = str(mib * 1024 * 1024).encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-length", length)],
                }
            )
            for _ in range(mib * 16):
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        elif path == "/upload":
            total = 0
            while True:
                message = await receive()
                total += len(message.get("body", b""))
                if not message.get("more_body"):
                    break
            await _send(send, 200, [], str(total).encode())
        elif path == "/hang":
            self.started.set()
            while (await receive())["type"] != "http.disconnect":
                pass
            self.disconnected.set()
        else:
            body = b"".join(n + b": " + v + b"\n" for n, v in scope["headers"])
            await _send(send, 200, [], body)


async def _send(send: Any, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    if status not in (204, 304):
        headers = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class Dying:
    """A raw TCP upstream that answers each request with headers promising
    ``length`` bytes, sends ``sent`` of them, then closes the connection.
    ``chunked`` sends a chunked body instead, without the last chunk; with
    ``answer=False`` it closes as soon as it has read the request head."""

    def __init__(
        self, *, length: int = 1000, sent: int = 100, chunked: bool = False, answer: bool = True
    ) -> None:
        self.length, self.sent, self.chunked, self.answer = length, sent, chunked, answer
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _run(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    more = conn.recv(65536)
                    if not more:
                        break
                    data += more
                self._respond(conn)

    def _respond(self, conn: socket.socket) -> None:
        if not self.answer:
            return
        if self.chunked:
            conn.sendall(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                + b"%x\r\n" % self.sent
                + b"y" * self.sent
                + b"\r\n"
            )
        else:
            conn.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % self.length + b"y" * self.sent
            )

    def close(self) -> None:
        self.sock.close()


class HugeHead(Dying):
    """A raw TCP upstream whose response head carries ``size`` bytes of headers."""

    def __init__(self, size: int) -> None:
        self.size = size
        super().__init__()

    def _respond(self, conn: socket.socket) -> None:
        head = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n"
        head += b"X-Filler: " + b"f" * self.size + b"\r\n\r\nok"
        with contextlib.suppress(OSError):  # the proxy hangs up on a huge head
            conn.sendall(head)


# -- raw HTTP/1.1 over a socket --------------------------------------------------------


def raw_request(port: int, data: bytes, *, timeout: float = 10.0) -> bytes:
    """Send raw bytes, read until the server closes (send ``Connection: close``)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


def split_response(raw: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = [
        (k.strip().lower(), v.strip()) for k, _, v in (line.partition(":") for line in lines[1:])
    ]
    return status, headers, body


# -- the CLI in a subprocess -------------------------------------------------------


class Running:
    """The CLI in a subprocess, with the addresses it announced."""

    def __init__(self, args: list[str]) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "clientlb", "proxy", "--listen", "127.0.0.1:0", *args],
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.lines: list[str] = []
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)
            found = re.search(
                r"listening on (http://[\d.:]+)(?:, admin on (http://[\d.:]+))?", line
            )
            if found:
                self.url, self.admin = found.group(1), found.group(2)
                break
        else:
            raise RuntimeError("the proxy did not start: " + "".join(self.lines))
        self._drain = threading.Thread(target=self._read_rest, daemon=True)
        self._drain.start()

    def _read_rest(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(15)
        self._drain.join(5)
        assert self.proc.stderr is not None
        self.proc.stderr.close()
        return code
