"""One client connection of the front end: HTTP/1.1 in, ASGI to the app, HTTP/1.1 out.

The sans-IO ``RequestReader`` parses what the client sends, within the size
limits; this protocol adds the clocks and the flow control:

* **Heads** must arrive whole within ``header_timeout`` of the connection's start
  or of the end of the previous response, however slowly they trickle in; a
  keep-alive connection that stays silent for ``keepalive_timeout`` is closed.
  A head cut off by its deadline gets 408, a silent connection just closes.
* **Bodies** stream to the app through ``receive()``; reading pauses while more
  than ``HIGH_WATER`` bytes wait for the app, and a client that sends nothing
  for ``body_timeout`` while the proxy is ready to read gets 408.
* **Responses** are framed here from what the app sends: its Content-Length
  (enforced), else chunked (HTTP/1.1) or close-delimited (HTTP/1.0); no body
  and no framing for HEAD, 204 and 304. ``send()`` waits while the client reads
  slower than the app writes, at most ``send_timeout`` at a time.
* A request the reader refuses gets its status (400, 414, 431, 501, 505) and the
  connection closes: where the next request would start is unknown. An app
  that fails before responding gets a plain 500, after that an aborted
  connection; never a traceback on the wire.

Requests on one connection are served one at a time; pipelined bytes wait in
the reader (bounded: reading pauses) until the response before them is done.
"""

from __future__ import annotations

import asyncio
import collections
import http
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import unquote_to_bytes

from ..._http1 import LAST_CHUNK, ProtocolError, RequestHead, RequestReader, response_head
from .._engines._readable import peer_gone
from .._flow import WriteFlow
from .._limits import WebSocketSettings
from .._outbox import outbox_of
from .._upgrade import wants_websocket
from ._tunnel import End, Tunnel

if TYPE_CHECKING:
    from .._express import Exchange
    from ._server import FrontEnd

log = logging.getLogger("clientlb.proxy")

HIGH_WATER = 256 * 1024  # request body bytes waiting for the app before reading pauses
LOW_WATER = 64 * 1024
DISCONNECT = {"type": "http.disconnect"}
INF = float("inf")


class Upstream(End, Protocol):
    """The upstream connection that answered 101, as the tunnel takes it."""

    headers: list[tuple[bytes, bytes]]


_NO_BODY_STATUS = frozenset({204, 304})
# What this server offers apps beyond ASGI: it cancels a request's task when its
# client goes away (so an app need not watch ``receive()`` for that). Each scope
# gets its own extensions dict: the app records the request's attempts and
# decision there, which must not leak into another request's scope.
_DISCONNECT: dict[str, Any] = {}
_UPGRADE_HOPS = frozenset({b"upgrade", b"connection", b"content-length", b"transfer-encoding"})


def _status_line(status: int) -> bytes:
    try:
        phrase = http.HTTPStatus(status).phrase
    except ValueError:
        phrase = ""
    return b"HTTP/1.1 %d %s" % (status, phrase.encode("ascii"))


_STATUS_LINES = {status: _status_line(status) for status in range(100, 600)}


def plain_response(status: int, text: str, *, head: bool = False) -> bytes:
    """A complete short plain-text response that closes the connection."""
    body = f"{status} {http.HTTPStatus(status).phrase}: {text}\n".encode()
    headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", b"%d" % len(body)),
        (b"connection", b"close"),
    ]
    return response_head(_STATUS_LINES[status], headers) + (b"" if head else body)


class _Cycle:
    """One request and its response: the ASGI ``receive`` and ``send`` of it."""

    __slots__ = (
        "body_done",
        "chunked",
        "chunks",
        "closes",
        "complete",
        "conn",
        "continue_expected",
        "final_sent",
        "head",
        "http11",
        "left",
        "no_body",
        "resume",
        "scope",
        "started",
        "status",
        "upgrade",
        "waiter",
    )

    def __init__(self, conn: ClientConnection, scope: dict[str, Any], http11: bool) -> None:
        self.conn = conn
        self.scope = scope
        self.http11 = http11
        self.chunks: collections.deque[bytes] = collections.deque()
        self.body_done = False
        self.final_sent = False
        self.continue_expected = False
        self.waiter: asyncio.Future[None] | None = None
        self.started = False
        self.complete = False
        self.closes = False  # the connection closes after this response
        self.head: bytes | None = None
        self.chunked = False
        self.no_body = False
        self.left: int | None = None  # response bytes still due under its Content-Length
        self.upgrade = False  # answered 101: the connection becomes a tunnel
        self.status = 0
        # What serves the request instead of the app, when the express lane
        # began it and hands it on (see ``clientlb._proxy._express``).
        self.resume: Callable[[], Awaitable[None]] | None = None

    def wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def receive(self) -> dict[str, Any]:
        conn = self.conn
        while True:
            chunks = self.chunks
            if chunks:
                chunk = chunks.popleft()
                conn.consumed(len(chunk))
                more = bool(chunks) or not self.body_done
                self.final_sent = not more
                return {"type": "http.request", "body": chunk, "more_body": more}
            if self.body_done and not self.final_sent:
                self.final_sent = True
                return {"type": "http.request", "body": b"", "more_body": False}
            if conn.lost or self.complete:
                return DISCONNECT
            if self.continue_expected:
                self.continue_expected = False
                if not self.started and conn.transport is not None:
                    conn.write_now(b"HTTP/1.1 100 Continue\r\n\r\n")
            waiter = self.waiter = conn.loop.create_future()
            try:
                await waiter
            finally:
                self.waiter = None

    async def send(self, message: MutableMapping[str, Any]) -> None:
        kind = message["type"]
        conn = self.conn
        if conn.lost or (self.complete and self.started):
            return  # the client is gone, or was answered already: nothing to say
        if not self.started:
            if kind != "http.response.start":
                raise RuntimeError(f"expected http.response.start, got {kind!r}")
            self.start(message["status"], message.get("headers") or [])
            return
        if kind != "http.response.body":
            raise RuntimeError(f"expected http.response.body, got {kind!r}")
        if self.write(message.get("body", b""), message.get("more_body", False)):
            await conn.drain()

    def write(self, body: bytes, more: bool) -> bool:
        """Write a piece of the response's body, framed, after its head (the
        first time); ``True`` when the client has yet to catch up before the
        next piece."""
        if self.complete:
            raise RuntimeError("the response is already complete")
        conn = self.conn
        if self.no_body:
            data = b""
        elif self.chunked:
            data = b"%x\r\n%b\r\n" % (len(body), body) if body else b""
            if not more:
                data += LAST_CHUNK
        else:
            data = body
            if self.left is not None:
                if len(body) > self.left:
                    conn.abort()
                    raise RuntimeError("the response body is longer than its Content-Length")
                self.left -= len(body)
        if self.head is not None:
            data = self.head + data
            self.head = None
        if conn.lost or conn.transport is None:
            return False
        if data:
            conn.write_now(data)
        if not more:
            self.complete = True
            if self.left:  # shorter than announced: only closing can tell the client
                self.closes = True
            self.wake()
            conn.response_done(self)
            return False
        return conn.write_paused

    async def tunnel(self, upstream: Upstream, settings: WebSocketSettings) -> None:
        """After a 101 start: write it, then relay bytes between the client and
        ``upstream`` (the connection that answered 101) until either closes (see
        ``Tunnel``)."""
        conn = self.conn
        if not self.upgrade or self.head is None or conn.transport is None:
            raise RuntimeError("tunnel() follows an http.response.start with status 101")
        conn.write_now(self.head)
        self.head = None
        self.complete = True
        pending, conn.reader.pending = conn.reader.pending, b""
        extensions = any(n == b"sec-websocket-extensions" for n, _ in upstream.headers)
        tunnel = Tunnel(conn, upstream, settings, conn.loop, extensions=extensions)
        await tunnel.run(pending)

    def start(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        """Take the response's status and headers: its head goes out with the
        first piece of its body."""
        self.started = True
        self.status = status
        conn = self.conn
        if status == 101 and "clientlb.tunnel" in self.scope.get("extensions", {}):
            self.upgrade = True
            kept = [(n.lower(), v) for n, v in headers if n.lower() not in _UPGRADE_HOPS]
            kept += [(b"upgrade", b"websocket"), (b"connection", b"upgrade")]
            self.head = response_head(_STATUS_LINES[101], kept)
            return
        if not 200 <= status <= 599:
            raise RuntimeError(f"invalid response status {status!r}")
        out: list[tuple[bytes, bytes]] = []
        length: int | None = None
        for name, value in headers:
            lname = name.lower()
            if lname == b"content-length":
                length = int(value)
                continue
            if lname == b"transfer-encoding" or lname == b"connection":
                if lname == b"connection" and b"close" in value.lower():
                    self.closes = True
                continue
            out.append((lname, value))
        if self.scope["method"] == "HEAD":
            self.no_body = True
            if length is not None:
                out.append((b"content-length", b"%d" % length))
        elif status in _NO_BODY_STATUS:
            self.no_body = True
        elif length is not None:
            self.left = length
            out.append((b"content-length", b"%d" % length))
        elif self.http11:
            self.chunked = True
            out.append((b"transfer-encoding", b"chunked"))
        else:
            self.closes = True  # HTTP/1.0 without a length: the close ends the body
        if self.closes or conn.closing or not conn.reader.keep_alive:
            self.closes = True
            out.append((b"connection", b"close"))
        elif not self.http11:
            out.append((b"connection", b"keep-alive"))
        self.head = response_head(_STATUS_LINES[status], out)

    def whole(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        """``start()`` and ``write(body, False)`` at once, for a relayed response
        that arrived whole: ``headers`` are as ``response_headers()`` gives them
        (lower-case, no hop-by-hop header), with a Content-Length that is
        ``body``'s length, unless the request was HEAD or the status has no body.
        No pass over the headers is needed."""
        self.started = True
        self.status = status
        self.complete = True
        conn = self.conn
        if self.closes or conn.closing or not conn.reader.keep_alive:
            self.closes = True
            headers.append((b"connection", b"close"))
        elif not self.http11:
            headers.append((b"connection", b"keep-alive"))
        if not conn.lost and conn.transport is not None:
            head = response_head(_STATUS_LINES[status], headers)
            conn.write_later(head + body if body and not self.no_body_for(status) else head)
        self.wake()
        conn.response_done(self)

    def no_body_for(self, status: int) -> bool:
        """The response to this request has no body (HEAD, 204, 304)."""
        return status in _NO_BODY_STATUS or self.scope["method"] == "HEAD"


class ClientConnection(WriteFlow):
    """One client connection (see the module doc)."""

    def __init__(self, front: FrontEnd) -> None:
        self.front = front
        self.limits = front.limits
        self.loop = front.loop
        self.outbox = outbox_of(front.loop)
        self.held = b""  # written when the loop's round is over (see ``write_later``)
        self.reader = RequestReader(front.limits.heads)
        self.transport: asyncio.Transport | None = None
        self.cycle: _Cycle | None = None
        # One task per connection runs its requests one after the other (cheaper
        # than a task per request, and pipelined requests keep their order).
        self.task: asyncio.Task[None] | None = None
        self.queued: _Cycle | None = None  # the next request for the task
        self.ready: asyncio.Future[None] | None = None  # the task waits for one
        self.running: _Cycle | None = None  # the request the app is serving
        self.lost = False
        self.closing = False  # close after the response in progress
        self.served = 0
        self.client: tuple[str, int] | None = None
        self.server: tuple[str, int] | None = None
        self.deadline = INF  # when ``on_deadline()`` should look at the clocks
        self.head_deadline = 0.0
        self.idle_deadline = 0.0
        self.last_read = 0.0
        self.buffered = 0
        self.read_paused = False
        self.write_paused = False
        self.drain_waiter: asyncio.Future[None] | None = None
        self.tunnel: Tunnel | None = None
        self.exchange: Exchange | None = None  # a request in the express lane
        self.counted = True  # counts towards ``client_connections``

    def attach(self, tunnel: Tunnel) -> None:
        """After a 101: relay this connection's bytes through ``tunnel``."""
        self._disarm()
        self.tunnel = tunnel
        if self.read_paused:
            self._resume_reading()

    # -- asyncio.Protocol ---------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.client = _address(transport.get_extra_info("peername"))
        self.server = _address(transport.get_extra_info("sockname"))
        now = self.loop.time()
        self.head_deadline = self.idle_deadline = now + self.limits.header_timeout
        self._arm(self.head_deadline)
        self.front.opened(self)

    def data_received(self, data: bytes) -> None:
        if self.tunnel is not None:
            self.tunnel.data(self, data)
            return
        reader = self.reader
        cycle = self.cycle
        if cycle is not None:
            if cycle.body_done:  # pipelined bytes: they wait for this response
                reader.feed(data)
                if len(reader.pending) > self.limits.head and not self.read_paused:
                    self._pause_reading()
                return
            self.last_read = self.loop.time()
            try:
                _, body = reader.feed(data)
            except ProtocolError as exc:
                self._fail_body(exc)
                return
            self._take_body(cycle, body)
            return
        try:
            head, body = reader.feed(data)
        except ProtocolError as exc:
            self.refuse(exc.status, str(exc))
            return
        if head is not None:
            self._start(head, body)

    def eof_received(self) -> bool:
        return False  # a client that stops sending is gone: close

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.held = b""
        self._disarm()
        if self.tunnel is not None:
            self.tunnel.lost(self)
        cycle = self.cycle
        if cycle is not None:
            cycle.wake()
        if self.exchange is not None:
            self.exchange.cancel()
        running = self.running
        if running is not None and not running.complete and self.task is not None:
            self.task.cancel()  # the "clientlb.disconnect" extension
        self._wake_runner()
        self._wake_drain()
        self.front.closed(self)

    # -- requests -----------------------------------------------------------------

    def _start(self, head: RequestHead, body: bytes) -> None:
        self._disarm()
        express = self.front.express
        if express is not None and not body and self.reader.body_done and express.take(self, head):
            return
        scope = self.scope_of(head)
        cycle = self.cycle = _Cycle(self, scope, head.http11)
        method = scope["method"]
        if head.http11 and wants_websocket(method, head.headers):
            scope["extensions"]["clientlb.tunnel"] = cycle
        reader = self.reader
        if reader.body_done:
            cycle.body_done = True
        else:
            cycle.continue_expected = any(
                n == b"expect" and v.lower() == b"100-continue" for n, v in head.headers
            )
            self.last_read = self.loop.time()
            self._arm(self.last_read + self.limits.body_timeout)
        if body:
            self._take_body(cycle, body)
        self.run(cycle)

    def begin(self, method: str, http11: bool) -> _Cycle:
        """The cycle of a request the express lane serves, whole already (its
        scope has only the method, until the lane hands it to the app)."""
        cycle = self.cycle = _Cycle(self, {"method": method}, http11)
        cycle.body_done = True
        return cycle

    def scope_of(self, head: RequestHead) -> dict[str, Any]:
        """The ASGI scope of a request on this connection."""
        raw_path, _, query = head.target.partition(b"?")
        return {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.4"},
            "http_version": "1.1" if head.http11 else "1.0",
            "server": self.server,
            "client": self.client,
            "scheme": "http",
            "method": head.method.decode("ascii"),
            "root_path": "",
            "path": (
                unquote_to_bytes(raw_path).decode("utf-8", "surrogateescape")
                if b"%" in raw_path
                else raw_path.decode("utf-8", "surrogateescape")
            ),
            "raw_path": raw_path,
            "query_string": query,
            "headers": head.headers,
            "state": {},
            "extensions": {"clientlb.disconnect": _DISCONNECT},
        }

    def run(self, cycle: _Cycle) -> None:
        """Have the connection's task serve ``cycle`` (the current request)."""
        self.queued = cycle
        if self.task is None:
            self.task = self.loop.create_task(self._serve())
        else:
            self._wake_runner()

    def _wake_runner(self) -> None:
        ready = self.ready
        if ready is not None and not ready.done():
            ready.set_result(None)

    async def _serve(self) -> None:
        """Run the app for each request of this connection, in order."""
        while not self.lost:
            cycle = self.queued
            if cycle is None:
                ready = self.ready = self.loop.create_future()
                try:
                    await ready
                finally:
                    self.ready = None
                continue
            self.queued = None
            self.running = cycle
            await self._run(cycle)
            self.running = None

    def _take_body(self, cycle: _Cycle, body: bytes) -> None:
        if body:
            cycle.chunks.append(body)
            self.buffered += len(body)
            if self.buffered > HIGH_WATER and not self.read_paused:
                self._pause_reading()
        if self.reader.body_done:
            cycle.body_done = True
            self._disarm()
        cycle.wake()

    def consumed(self, size: int) -> None:
        """The app took ``size`` body bytes: read on when few are left."""
        self.buffered -= size
        cycle = self.cycle
        if self.read_paused and self.buffered <= LOW_WATER and cycle and not cycle.body_done:
            self._resume_reading()

    async def _run(self, cycle: _Cycle) -> None:
        try:
            if cycle.resume is not None:
                await cycle.resume()
            else:
                await self.front.app(cycle.scope, cycle.receive, cycle.send)  # a reload swaps it
        except asyncio.CancelledError:
            if not cycle.started and not self.lost:
                self.refuse(503, "the proxy is shutting down")
            else:
                self.abort()
            return
        except Exception:
            log.exception("error serving %s %s", cycle.scope["method"], cycle.scope["path"])
            if not cycle.started and not self.lost:
                self.refuse(500, "internal error")
            else:
                self.abort()
            return
        if not cycle.complete:
            if cycle.started or self.lost:
                self.abort()  # the body was cut short: never present it as complete
            else:
                self.refuse(500, "no response")

    def response_done(self, cycle: _Cycle) -> None:
        """The response is written: keep the connection for the next request, or
        close it."""
        self.cycle = None
        self.served += 1
        reader = self.reader
        if cycle.closes or self.closing or not reader.body_done or self.lost:
            self.close()
            return
        now = self.loop.time()
        self.head_deadline = now + self.limits.header_timeout
        self.idle_deadline = now + self.limits.keepalive_timeout
        self.buffered = 0
        if self.read_paused:
            self._resume_reading()
        try:
            head, body = reader.next()
        except ProtocolError as exc:
            self.refuse(exc.status, str(exc))
            return
        if head is not None:
            self._start(head, body)
        else:
            self._arm(min(self.head_deadline, self.idle_deadline))
            self.front.idle(self)

    # -- clocks ---------------------------------------------------------------------

    def _arm(self, when: float) -> None:
        self.deadline = when

    def _disarm(self) -> None:
        self.deadline = INF

    def on_deadline(self, now: float) -> None:
        """The front end's clock found ``deadline`` passed: close the connection
        if one of its clocks ran out, else look again later."""
        self.deadline = INF
        if self.lost:
            return
        cycle = self.cycle
        if cycle is None:  # waiting for a head
            if self.reader.idle and self.served and now >= self.idle_deadline:
                self.close()  # a keep-alive connection that stayed silent
            elif now >= self.head_deadline:
                if self.reader.idle:
                    self.close()
                else:
                    self.refuse(408, "the request head took too long")
            else:
                later = self.head_deadline
                if self.reader.idle and self.served:
                    later = min(later, self.idle_deadline)
                self._arm(later)
        elif not cycle.body_done:  # waiting for body bytes
            if self.read_paused:
                self._arm(now + self.limits.body_timeout)
            elif now - self.last_read >= self.limits.body_timeout:
                if cycle.started:
                    self.abort()
                else:
                    self.refuse(408, "the request body took too long")
            else:
                self._arm(self.last_read + self.limits.body_timeout)

    def check_paused(self) -> None:
        """Reading is paused (the app is slower than the client): the event
        loop would not see the client leave, so look at the socket."""
        sock = self.transport.get_extra_info("socket") if self.transport else None
        if sock is not None and peer_gone(sock.fileno()):
            self.abort()

    # -- flow control -----------------------------------------------------------------

    def _pause_reading(self) -> None:
        if self.transport is not None:
            self.read_paused = True
            self.transport.pause_reading()

    def _resume_reading(self) -> None:
        if self.transport is not None and not self.lost:
            self.read_paused = False
            self.last_read = self.loop.time()
            self.transport.resume_reading()

    async def drain(self) -> None:
        """Wait while the client reads slower than the app writes; a client that
        reads nothing for ``send_timeout`` is cut off."""
        while self.write_paused and not self.lost:
            waiter = self.drain_waiter = self.loop.create_future()
            try:
                async with asyncio.timeout(self.limits.send_timeout):
                    await waiter
            except TimeoutError:
                log.info("client %s left a response unread: cut off", self.client)
                self.abort()
            finally:
                self.drain_waiter = None

    # -- writing ------------------------------------------------------------------------

    def write_later(self, data: bytes) -> None:
        """Write ``data`` when the event loop's round of callbacks is over, with
        the other connections' (see ``clientlb._proxy._outbox``): the express
        lane's whole responses."""
        if self.held:
            self.held += data  # in order, should more come this round
        else:
            self.held = data
            self.outbox.hold(self)

    def write_now(self, data: bytes) -> None:
        """Write ``data`` now, after what is held."""
        transport = self.transport
        if transport is None:
            return
        held = self.held
        if held:
            self.held = b""
            data = held + data
        transport.write(data)

    def flush(self) -> None:
        """Write what is held now (the outbox's round is over, or something
        else is about to be written or the connection closes)."""
        held = self.held
        if held:
            self.held = b""
            transport = self.transport
            if transport is not None and not self.lost and not transport.is_closing():
                transport.write(held)

    # -- endings ------------------------------------------------------------------------

    def refuse(self, status: int, text: str) -> None:
        """Answer ``status`` with a short plain body and close the connection."""
        log.debug("client %s: %d %s", self.client, status, text)
        cycle = self.cycle
        head = cycle is not None and cycle.scope["method"] == "HEAD"
        if self.transport is not None and not self.lost:
            self.write_now(plain_response(status, text, head=head))
        if cycle is not None:
            cycle.started = cycle.complete = True
            cycle.wake()
        self.close()

    def _fail_body(self, exc: ProtocolError) -> None:
        """The request body broke its framing mid-way."""
        cycle = self.cycle
        if cycle is not None and not cycle.started:
            self.refuse(exc.status, str(exc))
        else:
            self.abort()

    def close(self) -> None:
        self._disarm()
        if self.transport is not None and not self.transport.is_closing():
            self.flush()
            self.transport.close()

    def abort(self) -> None:
        self._disarm()
        self.held = b""
        if self.transport is not None:
            self.transport.abort()

    def shutdown(self) -> None:
        """Stop taking requests: close now if idle, else after this response; a
        tunnel says 1001 Going Away to both ends."""
        self.closing = True
        if self.tunnel is not None:
            self.tunnel.go_away()
        elif self.cycle is None:
            self.close()


def _address(value: Any) -> tuple[str, int] | None:
    if isinstance(value, tuple) and len(value) >= 2:
        return str(value[0]), int(value[1])
    return None
