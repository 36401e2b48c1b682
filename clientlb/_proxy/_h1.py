"""``H1Engine``: a lean HTTP/1.1 client for the proxy's hot path, on asyncio.

The proxy spends most of its time being an HTTP client, and a general-purpose
client (redirects, cookies, URL objects, per-request models) costs several times
what a forwarding hop needs. This engine keeps what a hop needs and nothing more:
one ``asyncio.Protocol`` per keep-alive connection, the response parsed by
``httptools`` (llhttp, the parser Node.js uses), one write for the request head,
and flow control both ways: reading from the upstream pauses while the client is
slower than the upstream (``HIGH_WATER``), and writing waits for the socket to
drain.

It runs only under asyncio; ``default_async_engine()`` falls back to the
httpcore engine elsewhere. Failures are raised as httpx exceptions.

Keep-alive: a connection goes back to the idle list only after a complete
response to a completely sent request that both sides let live. A request that
fails on a reused connection before any response byte arrived (the upstream
closed it while idle) is sent once more on a fresh connection when its body is
in memory.
"""

from __future__ import annotations

import asyncio
import collections
import ssl

import httptools

from .._core import Upstream
from .._httpx import httpx
from .._tls import default_context
from ._engine import AsyncResponse, BodyStream, Timeouts, frame
from ._headers import Headers

HIGH_WATER = 256 * 1024  # bytes of response body held before reading pauses
LOW_WATER = 64 * 1024
MAX_IDLE = 512  # idle connections kept per upstream
#: Bytes of an upstream's response head (status line and headers) accepted before
#: the response is refused as malformed, as nginx's "upstream sent too big header".
MAX_HEAD = 64 * 1024
CLOSE_TIMEOUT = 1.0  # seconds a connection has to close cleanly at engine shutdown


class _Conn(asyncio.Protocol):
    """One connection: the protocol, the parser state and the response reader."""

    def __init__(self, engine: H1Engine, key: str, loop: asyncio.AbstractEventLoop) -> None:
        self.engine = engine
        self.key = key
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.write_paused = False
        self.drain_waiter: asyncio.Future[None] | None = None
        self.reused = False
        self.lost: asyncio.Future[None] = loop.create_future()
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.headers: Headers = []
        self.chunks: collections.deque[bytes] = collections.deque()
        self.buffered = 0
        self.head_bytes = 0
        self.head_done = False
        self.complete = False
        self.interim = False
        self.keep_alive = False
        self.sent = False
        self.received = False
        self.head_only = False
        self.error: httpx.TransportError | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.reading_paused = False
        self.read_timeout: float | None = None

    # -- asyncio.Protocol -----------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self.received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(httpx.RemoteProtocolError("upstream switched protocols"))
        except httptools.HttpParserError as exc:
            if not self.complete:
                self._fail(httpx.RemoteProtocolError(f"invalid upstream response: {exc}"))
            self._close()
            return
        if not self.head_done and not self.closed:  # still in the head after this read
            self.head_bytes += len(data)
            if self.head_bytes > MAX_HEAD:
                self._fail(httpx.RemoteProtocolError("upstream sent too big a response head"))
                self._close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.lost.done():
            self.lost.set_result(None)
        if not self.complete:
            if self.head_done:
                self._fail(httpx.RemoteProtocolError("upstream closed the connection mid-body"))
            elif self.received:
                self._fail(httpx.RemoteProtocolError("upstream closed the connection mid-head"))
            else:
                self._fail(httpx.ReadError("upstream closed the connection"))
        self._wake_drain()

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        self._wake_drain()

    # -- httptools callbacks --------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if status < 200:
            self.interim = True  # 100 Continue, 103 Early Hints: not passed on
            self.headers = []
            return
        self.status = status
        self.head_done = True
        if self.head_only:  # HEAD: no body follows whatever the headers say
            self.complete = True
            self.keep_alive = False
        self._wake()

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)
        self.buffered += len(body)
        if self.buffered > HIGH_WATER and not self.reading_paused and self.transport is not None:
            self.reading_paused = True
            self.transport.pause_reading()
        if len(self.chunks) == 1:
            self._wake()

    def on_message_complete(self) -> None:
        if self.interim:
            self.interim = False
            return
        if self.complete:
            return
        self.complete = True
        self.keep_alive = self.parser.should_keep_alive()
        self._wake()

    # -- plumbing -------------------------------------------------------------

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _wake_drain(self) -> None:
        waiter = self.drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, error: httpx.TransportError) -> None:
        if self.error is None:
            self.error = error
        self._wake()

    def _close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def _on_timeout(self) -> None:
        self._fail(httpx.ReadTimeout("upstream read timed out"))

    async def _wait(self) -> None:
        waiter = self.loop.create_future()
        self.waiter = waiter
        timeout = self.read_timeout
        handle = self.loop.call_later(timeout, self._on_timeout) if timeout is not None else None
        try:
            await waiter
        finally:
            self.waiter = None
            if handle is not None:
                handle.cancel()

    async def drain(self, timeout: float | None) -> None:
        if self.closed:
            raise httpx.WriteError("upstream closed the connection")
        waiter = self.loop.create_future()
        self.drain_waiter = waiter
        try:
            async with asyncio.timeout(timeout):
                await waiter
        except TimeoutError:
            raise httpx.WriteTimeout("upstream write timed out") from None
        finally:
            self.drain_waiter = None
        if self.closed:
            raise httpx.WriteError("upstream closed the connection")

    # -- the response, as the proxy reads it ------------------------------------

    async def head(self) -> None:
        while not self.head_done:
            if self.error is not None:
                raise self.error
            await self._wait()

    async def read(self) -> bytes:
        """The next piece of the body; ``b""`` once it is complete."""
        chunks = self.chunks
        while not chunks:
            if self.complete:
                return b""
            if self.error is not None:
                raise self.error
            await self._wait()
        chunk = chunks.popleft()
        self.buffered -= len(chunk)
        if self.reading_paused and self.buffered <= LOW_WATER and self.transport is not None:
            self.reading_paused = False
            self.transport.resume_reading()
        return chunk

    async def aclose(self) -> None:
        """Return the connection to the idle list if the exchange finished cleanly,
        else close it (this is how an unfinished exchange is aborted)."""
        if self.complete and self.sent and self.keep_alive and not self.closed and not self.chunks:
            self._reset()
            self.reused = True
            self.engine._release(self)
        elif not self.closed:
            self._close()


class H1Engine:
    """HTTP/1.1 over asyncio with keep-alive pools per upstream (see module doc).

    HTTPS upstreams are verified with ``ssl_context`` (default: the context
    httpx's ``verify=True`` means)."""

    def __init__(self, ssl_context: ssl.SSLContext | None = None) -> None:
        self._idle: dict[str, list[_Conn]] = {}
        self._ssl = ssl_context
        self._all: set[_Conn] = set()

    def _release(self, conn: _Conn) -> None:
        idle = self._idle.setdefault(conn.key, [])
        if len(idle) < MAX_IDLE:
            idle.append(conn)
        else:
            conn._close()
            self._all.discard(conn)

    async def _connect(self, upstream: Upstream, timeouts: Timeouts) -> _Conn:
        loop = asyncio.get_running_loop()
        conn = _Conn(self, upstream.key, loop)
        context: ssl.SSLContext | None = None
        if upstream.scheme == "https":
            context = self._ssl or default_context()
        try:
            async with asyncio.timeout(timeouts.connect):
                await loop.create_connection(
                    lambda: conn,
                    upstream.host,
                    upstream.port,
                    ssl=context,
                    server_hostname=upstream.host if context else None,
                )
        except TimeoutError:
            raise httpx.ConnectTimeout(f"connecting to {upstream.netloc} timed out") from None
        except OSError as exc:
            raise httpx.ConnectError(f"cannot connect to {upstream.netloc}: {exc}") from None
        self._all.add(conn)
        return conn

    def _idle_conn(self, key: str) -> _Conn | None:
        idle = self._idle.get(key)
        while idle:
            conn = idle.pop()
            if not conn.closed:
                return conn
            self._all.discard(conn)
        return None

    async def request(
        self,
        upstream: Upstream,
        method: bytes,
        target: bytes,
        headers: Headers,
        body: bytes | BodyStream,
        timeouts: Timeouts,
    ) -> AsyncResponse:
        frame(headers, body)
        parts = [method, b" ", target, b" HTTP/1.1\r\n"]
        for name, value in headers:
            parts += (name, b": ", value, b"\r\n")
        parts.append(b"\r\n")
        head = b"".join(parts)
        conn = self._idle_conn(upstream.key)
        if conn is None:
            conn = await self._connect(upstream, timeouts)
        try:
            try:
                await self._exchange(conn, method, head, body, timeouts)
            except httpx.TransportError:
                if not (conn.reused and not conn.received and isinstance(body, bytes)):
                    raise
                conn._close()  # a keep-alive connection the upstream had closed: once more
                conn = await self._connect(upstream, timeouts)
                await self._exchange(conn, method, head, body, timeouts)
        except BaseException:
            conn._close()
            self._all.discard(conn)
            raise
        return conn

    async def _exchange(
        self, conn: _Conn, method: bytes, head: bytes, body: bytes | BodyStream, timeouts: Timeouts
    ) -> None:
        conn.head_only = method == b"HEAD"
        conn.read_timeout = timeouts.read
        transport = conn.transport
        if conn.closed or transport is None:
            raise httpx.ReadError("upstream closed the connection")
        if isinstance(body, bytes):
            transport.write(head + body if body else head)
        else:
            transport.write(head)
            await _send_stream(conn, transport, body, timeouts.write)
        conn.sent = True
        if conn.write_paused:
            await conn.drain(timeouts.write)
        await conn.head()

    async def aclose(self) -> None:
        """Close every connection and wait until each socket is released: a TLS
        connection says goodbye (close_notify) first, which takes a round trip;
        one that does not finish within ``CLOSE_TIMEOUT`` is aborted."""
        conns = list(self._all)
        self._all.clear()
        self._idle.clear()
        for conn in conns:
            conn._close()
        lost = [conn.lost for conn in conns if not conn.lost.done()]
        if lost:
            await asyncio.wait(lost, timeout=CLOSE_TIMEOUT)
            for conn in conns:
                if not conn.lost.done() and conn.transport is not None:
                    conn.transport.abort()
            await asyncio.wait(lost, timeout=CLOSE_TIMEOUT)


async def _send_stream(
    conn: _Conn, transport: asyncio.Transport, body: BodyStream, write_timeout: float | None
) -> None:
    chunked = body.length is None
    while True:
        if conn.head_done:  # the upstream answered early (413, 401): stop sending
            conn.keep_alive = False
            return
        chunk = await body.read()
        if not chunk:
            break
        if conn.closed:
            raise httpx.WriteError("upstream closed the connection while the body was sent")
        if chunked:
            transport.writelines((b"%x\r\n" % len(chunk), chunk, b"\r\n"))
        else:
            transport.write(chunk)
        if conn.write_paused:
            await conn.drain(write_timeout)
    if chunked:
        transport.write(b"0\r\n\r\n")
