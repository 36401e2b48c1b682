"""``BlockingEngine``: the WSGI proxy's HTTP/1.1 client, on plain sockets, safe to
share between worker threads.

The same sans-IO reader and connection discipline as the async engines (see
``clientlb._http1``): an idle connection whose socket became readable (bytes
nobody asked for, or the upstream's close) is closed when it is picked, before
any byte of a request is written; a response that does not end exactly at its
framing leaves its connection closed, not idle.
"""

from __future__ import annotations

import collections
import socket
import ssl
import threading
import time

from ..._core import Upstream
from ..._errors_map import bad_response, connect_error
from ..._http1 import BodyEncoder, ProtocolError, ResponseReader, request_head
from ..._httpx import httpx
from ..._tls import default_context
from .._headers import Headers
from ._base import (
    DEFAULT_UPSTREAM_LIMITS,
    SyncBodyStream,
    SyncResponse,
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
        self, conns: UpstreamConnections[_Conn], engine: BlockingEngine, sock: socket.socket
    ) -> None:
        self.conns = conns
        self.engine = engine
        self.sock = sock
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
        return not self.closed and not self.reader.tainted and not readable(self.sock)

    def _receive(self) -> None:
        reader = self.reader
        try:
            self.sock.settimeout(self.read_timeout)
            data = self.sock.recv(READ_SIZE)
        except TimeoutError:
            raise httpx.ReadTimeout("upstream read timed out") from None
        except OSError as exc:
            raise httpx.ReadError(f"upstream read failed: {exc}") from None
        if not data:
            self.closed = True
            try:
                reader.eof()  # ends a body that runs until the upstream closes
            except ProtocolError as error:
                raise httpx.RemoteProtocolError(str(error)) from None
            return
        try:
            body = reader.feed(data)
        except ProtocolError as exc:
            raise bad_response(exc) from None
        if body:
            self.chunks.append(body)

    def head(self) -> None:
        while self.reader.head is None:
            self._receive()
        self.status = self.reader.head.status
        self.headers = self.reader.head.headers

    @property
    def done(self) -> bool:
        """The whole body was read."""
        return self.reader.done and not self.chunks

    def read(self) -> bytes:
        """The next piece of the body; ``b""`` once it is complete."""
        while not self.chunks:
            if self.reader.done:
                return b""
            self._receive()
        return self.chunks.popleft()

    def close(self) -> None:
        """Back to the idle list after a clean exchange, else closed."""
        if self.sent and self.reader.reusable and not self.closed and not self.chunks:
            self.sent = False
            self.engine._release(self)
        else:
            self._close()

    def _close(self) -> None:
        self.closed = True
        try:
            self.sock.close()
        finally:
            self.engine._closed(self)


class BlockingEngine:
    """HTTP/1.1 over blocking sockets with a keep-alive pool per upstream. HTTPS
    upstreams are verified with ``ssl_context`` (default: ``verify=True``'s)."""

    def __init__(
        self,
        ssl_context: ssl.SSLContext | None = None,
        limits: UpstreamLimits = DEFAULT_UPSTREAM_LIMITS,
    ) -> None:
        self._ssl = ssl_context
        self._table: ConnectionTable[_Conn] = ConnectionTable(limits)
        self._lock = threading.Lock()
        self._freed = threading.Condition(self._lock)
        self._all: set[_Conn] = set()

    def _checkout(self, upstream: Upstream, timeouts: Timeouts) -> _Conn:
        deadline = None if timeouts.pool is None else time.monotonic() + timeouts.pool
        with self._lock:
            conns = self._table.of(upstream.key)
            while True:
                stale: list[_Conn] = []
                conn = conns.take_idle(time.monotonic(), stale)
                for old in stale:
                    old.closed = True
                    old.sock.close()
                    self._forget(old)
                if conn is not None:
                    return conn
                if conns.reserve():
                    break
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise httpx.PoolTimeout("every connection to the upstream is busy")
                conns.waiting += 1
                try:
                    self._freed.wait(remaining)
                finally:
                    conns.waiting -= 1
        try:
            return self._connect(conns, upstream, timeouts)
        except BaseException:
            with self._lock:
                conns.closed()
                self._freed.notify()
            raise

    def _connect(
        self, conns: UpstreamConnections[_Conn], upstream: Upstream, timeouts: Timeouts
    ) -> _Conn:
        try:
            sock = socket.create_connection((upstream.host, upstream.port), timeouts.connect)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if upstream.scheme == "https":
                context = self._ssl or default_context()
                try:
                    sock = context.wrap_socket(sock, server_hostname=upstream.host)
                except BaseException:
                    sock.close()
                    raise
        except (OSError, TimeoutError) as exc:
            raise connect_error(upstream.netloc, exc) from None
        conn = _Conn(conns, self, sock)
        with self._lock:
            self._all.add(conn)
        return conn

    def _forget(self, conn: _Conn) -> None:
        """(Under the lock.) A connection is gone: its slot is free."""
        if conn.counted:
            conn.counted = False
            conn.conns.closed()
            self._freed.notify()
        self._all.discard(conn)

    def _closed(self, conn: _Conn) -> None:
        with self._lock:
            self._forget(conn)

    def _release(self, conn: _Conn) -> None:
        now = time.monotonic()
        with self._lock:
            expired = self._table.expire(now) if self._table.sweep_due(now) else []
            for old in expired:
                old.closed = True
                self._forget(old)
            kept = conn.conns.put_idle(conn, now)
            if kept:
                self._freed.notify()
        for old in expired:
            old.sock.close()
        if not kept:
            conn._close()

    def request(
        self,
        upstream: Upstream,
        method: bytes,
        target: bytes,
        headers: Headers,
        body: bytes | SyncBodyStream | None,
        timeouts: Timeouts,
    ) -> SyncResponse:
        head = request_head(method, target, frame(headers, body))
        conn = self._checkout(upstream, timeouts)
        try:
            conn.reader.start(head_request=method == b"HEAD")
            conn.read_timeout = timeouts.read
            if body is None or isinstance(body, bytes):
                _send(conn, head + body if body else head, timeouts.write)
                conn.sent = True
            else:
                _send(conn, head, timeouts.write)
                conn.sent = _send_stream(conn, body, timeouts.write)
            conn.head()
        except BaseException:
            conn._close()
            raise
        return conn

    def close(self) -> None:
        with self._lock:
            conns = list(self._all)
            self._all.clear()
            self._table.forget_idle()
        for conn in conns:
            conn.closed = True
            conn.sock.close()


def _send(conn: _Conn, data: bytes, timeout: float | None) -> None:
    try:
        conn.sock.settimeout(timeout)
        conn.sock.sendall(data)
    except TimeoutError:
        raise httpx.WriteTimeout("upstream write timed out") from None
    except OSError as exc:
        raise httpx.WriteError(f"upstream write failed: {exc}") from None


def _send_stream(conn: _Conn, body: SyncBodyStream, timeout: float | None) -> bool:
    """Send a streamed body; ``False`` if the upstream answered before the end."""
    encoder = BodyEncoder(body.length)
    try:
        while chunk := body.read():
            if readable(conn.sock):
                return False  # an early answer (or a close): stop sending
            _send(conn, encoder.encode(chunk), timeout)
        _send(conn, encoder.end(), timeout)
    except ProtocolError as exc:
        raise httpx.LocalProtocolError(str(exc)) from None
    return True
