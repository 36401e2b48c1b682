"""``AsyncioEngine``: the proxy's lean HTTP/1.1 client on asyncio.

A forwarding hop needs little of a general-purpose client (redirects, cookies,
URL objects, per-request models), and that little must be exact. One
``asyncio.Protocol`` per upstream connection feeds the sans-IO
``ResponseReader``; the head is written in one call; flow control runs both ways:
reading pauses while the client is slower than the upstream (``HIGH_WATER``), and
writing waits for the socket to drain.

Connection discipline (see ``clientlb._http1``): a connection returns to the idle
list only when its response ended exactly at its framing, after the whole request
was sent, on a connection both sides let live. A byte that arrives while it is
idle, or past a response's end, closes it. A request is never sent twice: a
connection found closed when it is picked is skipped before any byte is written;
after that, any failure is the caller's to judge (the core decides what may be
resent).

It runs only under asyncio; ``default_async_engine()`` picks the anyio engine
elsewhere. Failures are raised as httpx exceptions.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..._core import Upstream
from ..._errors_map import bad_response, connect_error
from ..._http1 import BodyEncoder, ProtocolError, ResponseReader, request_head
from ..._httpx import httpx
from ..._tls import default_context
from .._flow import WriteFlow
from .._headers import Headers
from .._outbox import outbox_of
from ._base import (
    DEFAULT_UPSTREAM_LIMITS,
    AsyncResponse,
    BodyStream,
    Timeouts,
    UpstreamLimits,
    frame,
)
from ._connections import ConnectionTable, UpstreamConnections
from ._readable import Readable

if TYPE_CHECKING:
    from .._front._tunnel import Tunnel

HIGH_WATER = 256 * 1024  # bytes of response body held before reading pauses
LOW_WATER = 64 * 1024
CLOSE_TIMEOUT = 1.0  # seconds a connection has to close cleanly at engine shutdown
_Waiters = collections.deque[asyncio.Future[None]]


class _Conn(WriteFlow):
    """One upstream connection: the protocol, the reader, and the response the
    proxy reads from it."""

    def __init__(
        self,
        conns: UpstreamConnections[_Conn],
        engine: AsyncioEngine,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.conns = conns
        self.engine = engine
        self.loop = loop
        self.outbox = outbox_of(loop)
        self.held = b""  # a request written when the loop's round is over (``send_soon``)
        self.transport: asyncio.Transport | None = None
        self.peek: Readable | None = None
        self.reader = ResponseReader()
        self.closed = False
        self.counted = True  # still counted as open by ``conns``
        self.write_paused = False
        self.drain_waiter: asyncio.Future[None] | None = None
        self.lost: asyncio.Future[None] = loop.create_future()
        self.tunnel: Tunnel | None = None  # after a 101: where the bytes go
        self.deadline = 0.0  # of the read being waited for
        # Called (instead of waking a waiting task) when the response moves on:
        # the express lane follows an exchange from the loop's callbacks.
        self.listener: Callable[[], None] | None = None
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.headers: Headers = []
        self.chunks: collections.deque[bytes] = collections.deque()
        self._clean()

    def _clean(self) -> None:
        """Ready for the next exchange (``chunks`` is empty, as reuse demands)."""
        self.status = 0
        self.buffered = 0
        self.sent = False
        self.error: httpx.TransportError | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.reading_paused = False
        self.read_timeout: float | None = None

    @property
    def usable(self) -> bool:
        """Still clean while idle: open, and nothing arrived, not even bytes the
        event loop has not delivered yet."""
        if self.closed or self.reader.tainted:
            return False
        return self.peek is None or not self.peek()

    # -- asyncio.Protocol -----------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        sock = transport.get_extra_info("socket")
        self.peek = Readable(sock) if sock is not None else None

    def data_received(self, data: bytes) -> None:
        if self.tunnel is not None:
            self.tunnel.data(self, data)
            return
        reader = self.reader
        if self.status == 101:  # upgraded, the tunnel not yet attached: hold on
            self.chunks.append(data)
            return
        had_head = reader.head is not None
        try:
            body = reader.feed(data)
        except ProtocolError as exc:
            self._fail(bad_response(exc))
            self._close()
            return
        if body:
            self.chunks.append(body)
            self.buffered += len(body)
            if self.buffered > HIGH_WATER and not self.reading_paused and self.transport:
                self.reading_paused = True
                self.transport.pause_reading()
        if reader.tainted:  # bytes that belong to no response: never read them
            self._close()
        head = reader.head
        if head is not None and (body or reader.done or not had_head):
            if not had_head:
                self.status = head.status
                self.headers = head.headers
            self._wake()

    def eof_received(self) -> bool:
        return False  # close the transport; connection_lost settles the response

    def connection_lost(self, exc: Exception | None) -> None:
        if self.tunnel is not None:
            self.tunnel.lost(self)
        self.closed = True
        self._uncount()
        self.engine._all.discard(self)
        if not self.lost.done():
            self.lost.set_result(None)
        if self.reader.awaiting:
            try:
                self.reader.eof()  # ends a body that runs until the upstream closes
            except ProtocolError as error:
                self._fail(httpx.RemoteProtocolError(str(error)))
        self._wake()
        self._wake_drain()

    def attach(self, tunnel: Tunnel) -> None:
        """After a 101: relay this connection's bytes through ``tunnel``."""
        self.tunnel = tunnel
        early = self.reader.rest + b"".join(self.chunks)
        self.chunks.clear()
        if early:
            tunnel.data(self, early)

    # -- plumbing -------------------------------------------------------------

    def _uncount(self) -> None:
        if self.counted:
            self.counted = False
            self.conns.closed()
            self.engine._slot_freed(self.conns)

    def _wake(self) -> None:
        listener = self.listener
        if listener is not None:
            listener()
            return
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, error: httpx.TransportError) -> None:
        if self.error is None:
            self.error = error
        self._wake()

    def _close(self) -> None:
        self.held = b""  # a request not written yet never will be: the exchange is over
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                self.transport.close()

    def _on_timeout(self) -> None:
        self._fail(httpx.ReadTimeout("upstream read timed out"))

    async def _wait(self) -> None:
        waiter = self.loop.create_future()
        self.waiter = waiter
        timeout = self.read_timeout
        if timeout is not None:
            self.engine._read_deadline(self, self.loop.time() + timeout)
        try:
            await waiter
        finally:
            self.waiter = None
            if timeout is not None:
                self.engine._reading.discard(self)

    async def drain(self, timeout: float | None) -> None:
        while self.write_paused and not self.closed:
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

    def send(
        self, request: bytes, method: bytes, read_timeout: float | None, upgrade: bool = False
    ) -> None:
        """Write a whole request (its head and any body) and await its response."""
        transport = self.transport
        assert transport is not None
        self.reader.start(head_request=method == b"HEAD", upgrade=upgrade)
        self.read_timeout = read_timeout
        transport.write(request)
        self.sent = True

    def send_soon(self, request: bytes, method: bytes) -> None:
        """``send()``, the write made when the event loop's round of callbacks is
        over, with the other connections' (see ``clientlb._proxy._outbox``): the
        express lane's requests, which have no body and no read timeout of the
        connection's own. A connection closed meanwhile writes nothing."""
        assert self.transport is not None and not self.held
        self.reader.start(head_request=method == b"HEAD", upgrade=False)
        self.read_timeout = None
        self.held = request
        self.outbox.hold(self)
        self.sent = True

    def flush(self) -> None:
        """Write the request held by ``send_soon()``."""
        held = self.held
        if held:
            self.held = b""
            transport = self.transport
            if transport is not None and not self.closed and not transport.is_closing():
                try:
                    transport.write(held)
                except Exception as exc:  # the transport refused the write
                    self._fail(httpx.WriteError(str(exc)))
                    self._close()

    # -- the response, as the proxy reads it ------------------------------------

    async def head(self) -> None:
        while self.reader.head is None:
            if self.error is not None:
                raise self.error
            if self.closed:
                raise httpx.ReadError("upstream closed the connection")
            await self._wait()

    @property
    def done(self) -> bool:
        """The whole body was read."""
        return self.reader.done and not self.chunks

    async def read(self) -> bytes:
        """The next piece of the body; ``b""`` once it is complete."""
        while not self.chunks:
            if self.reader.done:
                return b""
            if self.error is not None:
                raise self.error
            await self._wait()
        return self.take()

    def take(self) -> bytes:
        """The next piece of the body that arrived (``chunks`` is not empty)."""
        chunk = self.chunks.popleft()
        self.buffered -= len(chunk)
        if self.reading_paused and self.buffered <= LOW_WATER and self.transport is not None:
            self.reading_paused = False
            self.transport.resume_reading()
        return chunk

    def take_all(self) -> bytes:
        """Every piece of the body that arrived, at once."""
        if not self.chunks:
            return b""
        body = b"".join(self.chunks)
        self.chunks.clear()
        self.buffered = 0
        if self.reading_paused and self.transport is not None:
            self.reading_paused = False
            self.transport.resume_reading()
        return body

    async def aclose(self) -> None:
        """Return the connection to the idle list if the exchange ended cleanly,
        else close it (this is how an unfinished exchange is aborted)."""
        self.release()

    def release(self) -> None:
        """``aclose()`` without a coroutine."""
        if self.sent and self.reader.reusable and not self.closed and not self.chunks:
            self._clean()
            self.engine._release(self)
        else:
            self._close()


class AsyncioEngine:
    """HTTP/1.1 over asyncio with a keep-alive pool per upstream (see the module
    doc). HTTPS upstreams are verified with ``ssl_context`` (default: what
    httpx's ``verify=True`` means). A request sent with ``upgrade=True`` may be
    answered 101; its response then carries the connection to ``Tunnel``."""

    tunnels = True

    def __init__(
        self,
        ssl_context: ssl.SSLContext | None = None,
        limits: UpstreamLimits = DEFAULT_UPSTREAM_LIMITS,
    ) -> None:
        self._ssl = ssl_context
        self._table: ConnectionTable[_Conn] = ConnectionTable(limits)
        self._waiters: dict[UpstreamConnections[_Conn], _Waiters] = {}
        self._all: set[_Conn] = set()
        self._sweeper: asyncio.TimerHandle | None = None
        # Read timeouts: the connections waiting, and one timer for the earliest
        # deadline among them (a timer per read would cost more than the read).
        self._reading: set[_Conn] = set()
        self._read_timer: asyncio.TimerHandle | None = None
        self._read_timer_at = 0.0

    def take_idle(self, upstream: Upstream) -> _Conn | None:
        """A clean idle connection to ``upstream``, without waiting; ``None`` if
        there is none (stale ones met on the way are closed)."""
        conns = self._table.of(upstream.key)
        if not conns.idle:
            return None
        stale: list[_Conn] = []
        conn = conns.take_idle(time.monotonic(), stale)
        for old in stale:
            old._close()
            old._uncount()
        return conn

    async def _checkout(self, upstream: Upstream, timeouts: Timeouts) -> _Conn:
        conns = self._table.of(upstream.key)
        deadline: float | None = None
        while True:
            conn = self.take_idle(upstream)
            if conn is not None:
                return conn
            if conns.reserve():
                try:
                    return await self._connect(conns, upstream, timeouts)
                except BaseException:
                    conns.closed()
                    self._slot_freed(conns)
                    raise
            if deadline is None and timeouts.pool is not None:
                deadline = time.monotonic() + timeouts.pool
            await self._wait_for_slot(conns, deadline)

    async def _wait_for_slot(
        self, conns: UpstreamConnections[_Conn], deadline: float | None
    ) -> None:
        waiter = asyncio.get_running_loop().create_future()
        queue = self._waiters.setdefault(conns, collections.deque())
        queue.append(waiter)
        conns.waiting += 1
        try:
            async with asyncio.timeout(None if deadline is None else deadline - time.monotonic()):
                await waiter
        except TimeoutError:
            raise httpx.PoolTimeout("every connection to the upstream is busy") from None
        finally:
            conns.waiting -= 1
            if waiter in queue:
                queue.remove(waiter)

    def _slot_freed(self, conns: UpstreamConnections[_Conn]) -> None:
        """A connection to this upstream closed or became idle: wake one waiter."""
        queue = self._waiters.get(conns)
        while queue:
            waiter = queue.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def _connect(
        self, conns: UpstreamConnections[_Conn], upstream: Upstream, timeouts: Timeouts
    ) -> _Conn:
        loop = asyncio.get_running_loop()
        conn = _Conn(conns, self, loop)
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
        except (OSError, TimeoutError) as exc:
            conn.counted = False  # the caller gives the slot back
            raise connect_error(upstream.netloc, exc) from None
        self._all.add(conn)
        return conn

    def _read_deadline(self, conn: _Conn, deadline: float) -> None:
        conn.deadline = deadline
        self._reading.add(conn)
        if self._read_timer is None or deadline < self._read_timer_at:
            if self._read_timer is not None:
                self._read_timer.cancel()
            self._read_timer_at = deadline
            self._read_timer = conn.loop.call_at(deadline, self._expire_reads, conn.loop)

    def _expire_reads(self, loop: asyncio.AbstractEventLoop) -> None:
        """Fail the reads past their deadline; wake again at the next one."""
        self._read_timer = None
        now = loop.time()
        following = float("inf")
        for conn in list(self._reading):
            if conn.deadline <= now:
                self._reading.discard(conn)
                conn._on_timeout()
            elif conn.deadline < following:
                following = conn.deadline
        if self._reading:
            self._read_timer_at = following
            self._read_timer = loop.call_at(following, self._expire_reads, loop)

    def _release(self, conn: _Conn) -> None:
        if conn.conns.put_idle(conn, time.monotonic()):
            self._slot_freed(conn.conns)
            if self._sweeper is None:
                self._schedule_sweep(conn.loop)
        else:
            conn._close()

    def _schedule_sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        self._sweeper = loop.call_later(self._table.limits.idle_timeout / 2, self._sweep, loop)

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        """Close idle connections kept longer than ``idle_timeout``."""
        self._sweeper = None
        for conn in self._table.expire(time.monotonic()):
            conn._close()
            conn._uncount()
        for conns in [conns for conns, queue in self._waiters.items() if not queue]:
            del self._waiters[conns]
        if self._table.any_idle():
            self._schedule_sweep(loop)

    async def request(
        self,
        upstream: Upstream,
        method: bytes,
        target: bytes,
        headers: Headers,
        body: bytes | BodyStream | None,
        timeouts: Timeouts,
        upgrade: bool = False,
    ) -> AsyncResponse:
        head = request_head(method, target, frame(headers, body))
        conn = await self._checkout(upstream, timeouts)
        try:
            if body is None or isinstance(body, bytes):
                conn.send(head + body if body else head, method, timeouts.read, upgrade)
            else:
                transport = conn.transport
                assert transport is not None
                conn.reader.start(head_request=method == b"HEAD", upgrade=upgrade)
                conn.read_timeout = timeouts.read
                transport.write(head)
                conn.sent = await _send_stream(conn, transport, body, timeouts.write)
            if conn.write_paused:
                await conn.drain(timeouts.write)
            await conn.head()
        except BaseException:
            conn._close()
            raise
        return conn

    async def aclose(self) -> None:
        """Close every connection and wait until each socket is released: a TLS
        connection says goodbye (close_notify) first, which takes a round trip;
        one that does not finish within ``CLOSE_TIMEOUT`` is aborted."""
        for timer in (self._sweeper, self._read_timer):
            if timer is not None:
                timer.cancel()
        self._sweeper = self._read_timer = None
        self._reading.clear()
        conns = list(self._all)
        self._all.clear()
        self._table.forget_idle()
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
) -> bool:
    """Send a streamed body; ``False`` if the upstream answered before the end
    (a 413 or 401 that needs no more), which leaves the connection unusable."""
    encoder = BodyEncoder(body.length)
    try:
        while chunk := await body.read():
            if conn.reader.head is not None:
                return False
            if conn.closed:
                raise httpx.WriteError("upstream closed the connection while the body was sent")
            transport.write(encoder.encode(chunk))
            if conn.write_paused:
                await conn.drain(write_timeout)
        transport.write(encoder.end())
    except ProtocolError as exc:
        raise httpx.LocalProtocolError(str(exc)) from None
    return True
