"""``AnyioEngine``: the proxy's HTTP/1.1 client for any anyio backend (trio
included), with the same sans-IO reader and the same connection discipline as
``AsyncioEngine`` (see ``clientlb._http1``).

Bytes are read only when the proxy asks for them, so an idle connection's
unsolicited bytes or close are found when it is picked: its socket is readable,
and it is closed instead of reused, before any byte of a request is written.
"""

from __future__ import annotations

import collections
import contextlib
import socket
import ssl
import time

import anyio
import anyio.abc

from ..._core import Upstream
from ..._errors_map import bad_response, connect_error
from ..._http1 import BodyEncoder, ProtocolError, ResponseReader, request_head
from ..._httpx import httpx
from ..._tls import default_context
from .._headers import Headers
from ._base import (
    DEFAULT_UPSTREAM_LIMITS,
    AsyncResponse,
    BodyStream,
    Timeouts,
    UpstreamLimits,
    frame,
)
from ._connections import ConnectionTable, UpstreamConnections
from ._readable import readable

READ_SIZE = 65536


class _Conn:
    """One upstream connection and the response being read from it."""

    def __init__(
        self,
        conns: UpstreamConnections[_Conn],
        engine: AnyioEngine,
        stream: anyio.abc.ByteStream,
    ) -> None:
        self.conns = conns
        self.engine = engine
        self.stream = stream
        self.sock: socket.socket | None = stream.extra(anyio.abc.SocketAttribute.raw_socket, None)
        self.reader = ResponseReader()
        self.closed = False
        self.counted = True
        self.sent = False
        self.status = 0
        self.headers: Headers = []
        self.chunks: collections.deque[bytes] = collections.deque()
        self.read_timeout: float | None = None

    @property
    def usable(self) -> bool:
        if self.closed or self.reader.tainted:
            return False
        return self.sock is None or not readable(self.sock)

    async def _receive(self) -> None:
        """Read once from the upstream and feed the reader."""
        reader = self.reader
        try:
            with anyio.fail_after(self.read_timeout):
                data = await self.stream.receive(READ_SIZE)
        except TimeoutError:
            raise httpx.ReadTimeout("upstream read timed out") from None
        except (anyio.EndOfStream, anyio.BrokenResourceError, OSError) as exc:
            self.closed = True
            try:
                reader.eof()  # ends a body that runs until the upstream closes
            except ProtocolError as error:
                raise httpx.RemoteProtocolError(str(error)) from exc
            return
        except ssl.SSLError as exc:
            raise httpx.ReadError(f"TLS error: {exc}") from None
        try:
            body = reader.feed(data)
        except ProtocolError as exc:
            raise bad_response(exc) from None
        if body:
            self.chunks.append(body)

    async def head(self) -> None:
        while self.reader.head is None:
            await self._receive()
        self.status = self.reader.head.status
        self.headers = self.reader.head.headers

    @property
    def done(self) -> bool:
        """The whole body was read."""
        return self.reader.done and not self.chunks

    async def read(self) -> bytes:
        """The next piece of the body; ``b""`` once it is complete."""
        while not self.chunks:
            if self.reader.done:
                return b""
            await self._receive()
        return self.chunks.popleft()

    async def aclose(self) -> None:
        if self.sent and self.reader.reusable and not self.closed and not self.chunks:
            self.sent = False
            await self.engine._release(self)
        else:
            await self._close()

    async def _close(self) -> None:
        self.closed = True
        if self.counted:
            self.counted = False
            self.conns.closed()
            self.engine._slot_freed(self.conns)
        self.engine._all.discard(self)
        with (
            anyio.CancelScope(shield=True),
            anyio.move_on_after(1.0),
            contextlib.suppress(OSError, anyio.BrokenResourceError, ssl.SSLError),
        ):
            await self.stream.aclose()


class AnyioEngine:
    """HTTP/1.1 over anyio streams, a keep-alive pool per upstream. HTTPS
    upstreams are verified with ``ssl_context`` (default: ``verify=True``'s)."""

    def __init__(
        self,
        ssl_context: ssl.SSLContext | None = None,
        limits: UpstreamLimits = DEFAULT_UPSTREAM_LIMITS,
    ) -> None:
        self._ssl = ssl_context
        self._table: ConnectionTable[_Conn] = ConnectionTable(limits)
        self._waiters: dict[UpstreamConnections[_Conn], collections.deque[anyio.Event]] = {}
        self._all: set[_Conn] = set()

    async def _checkout(self, upstream: Upstream, timeouts: Timeouts) -> _Conn:
        conns = self._table.of(upstream.key)
        deadline = None if timeouts.pool is None else time.monotonic() + timeouts.pool
        while True:
            stale: list[_Conn] = []
            conn = conns.take_idle(time.monotonic(), stale)
            for old in stale:
                await old._close()
            if conn is not None:
                return conn
            if conns.reserve():
                try:
                    return await self._connect(conns, upstream, timeouts)
                except BaseException:
                    conns.closed()
                    self._slot_freed(conns)
                    raise
            event = anyio.Event()
            queue = self._waiters.setdefault(conns, collections.deque())
            queue.append(event)
            conns.waiting += 1
            try:
                with anyio.fail_after(None if deadline is None else deadline - time.monotonic()):
                    await event.wait()
            except TimeoutError:
                raise httpx.PoolTimeout("every connection to the upstream is busy") from None
            finally:
                conns.waiting -= 1
                if event in queue:
                    queue.remove(event)

    def _slot_freed(self, conns: UpstreamConnections[_Conn]) -> None:
        queue = self._waiters.get(conns)
        if queue:
            queue.popleft().set()

    async def _connect(
        self, conns: UpstreamConnections[_Conn], upstream: Upstream, timeouts: Timeouts
    ) -> _Conn:
        try:
            with anyio.fail_after(timeouts.connect):
                stream: anyio.abc.ByteStream
                if upstream.scheme == "https":
                    stream = await anyio.connect_tcp(
                        upstream.host,
                        upstream.port,
                        ssl_context=self._ssl or default_context(),
                        tls_hostname=upstream.host,
                        tls_standard_compatible=False,
                    )
                else:
                    stream = await anyio.connect_tcp(upstream.host, upstream.port)
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            raise connect_error(upstream.netloc, exc) from None
        conn = _Conn(conns, self, stream)
        self._all.add(conn)
        return conn

    async def _release(self, conn: _Conn) -> None:
        now = time.monotonic()
        if self._table.sweep_due(now):  # anyio has no timers outside a task
            for old in self._table.expire(now):
                await old._close()
            for conns in [conns for conns, queue in self._waiters.items() if not queue]:
                del self._waiters[conns]
        if conn.conns.put_idle(conn, now):
            self._slot_freed(conn.conns)
        else:
            await conn._close()

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
        if upgrade:
            raise NotImplementedError("AnyioEngine does not relay upgraded connections")
        head = request_head(method, target, frame(headers, body))
        conn = await self._checkout(upstream, timeouts)
        try:
            conn.reader.start(head_request=method == b"HEAD")
            conn.read_timeout = timeouts.read
            if body is None or isinstance(body, bytes):
                await _send(conn, head + body if body else head, timeouts.write)
                conn.sent = True
            else:
                await _send(conn, head, timeouts.write)
                conn.sent = await _send_stream(conn, body, timeouts.write)
            await conn.head()
        except BaseException:
            await conn._close()
            raise
        return conn

    async def aclose(self) -> None:
        conns = list(self._all)
        self._all.clear()
        self._table.forget_idle()
        for conn in conns:
            await conn._close()


async def _send(conn: _Conn, data: bytes, timeout: float | None) -> None:
    try:
        with anyio.fail_after(timeout):
            await conn.stream.send(data)
    except TimeoutError:
        raise httpx.WriteTimeout("upstream write timed out") from None
    except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError, ssl.SSLError) as exc:
        raise httpx.WriteError(f"upstream write failed: {exc}") from None


async def _send_stream(conn: _Conn, body: BodyStream, timeout: float | None) -> bool:
    """Send a streamed body; ``False`` if the upstream answered before the end."""
    encoder = BodyEncoder(body.length)
    try:
        while chunk := await body.read():
            if conn.sock is not None and readable(conn.sock):
                return False  # an early answer (or a close): stop sending
            await _send(conn, encoder.encode(chunk), timeout)
        await _send(conn, encoder.end(), timeout)
    except ProtocolError as exc:
        raise httpx.LocalProtocolError(str(exc)) from None
    return True
