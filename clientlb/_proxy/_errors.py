"""What the proxy answers when no upstream response can be passed on.

One table, read top to bottom, from the failure to the status and the short
plain body the client gets (and the word the log line uses):

    NoUpstream (no upstream may serve)          -> 503 no healthy upstream
    httpx.PoolTimeout (every connection busy)   -> 503 upstream busy
    httpx.ConnectError, ConnectTimeout          -> 502 upstream unreachable
    httpx.ReadTimeout, WriteTimeout             -> 504 upstream timed out
    httpx.RemoteProtocolError, ReadError, ...   -> 502 bad upstream response

Anything else is a fault in the proxy itself: 502 as well, never a traceback.
A request the proxy refuses (``clientlb._http1.ProtocolError``: bad framing, a
missing Host, a path leaving its prefix ...) gets ``refusal()``: its status, and
the connection closed after it, since what follows it cannot be trusted.
"""

from __future__ import annotations

import http
from dataclasses import dataclass

from .._core import NoUpstream
from .._http1 import ProtocolError
from .._httpx import httpx


@dataclass(frozen=True, slots=True)
class ErrorReply:
    """A short plain answer for a failed request."""

    status: int
    body: bytes
    reason: str
    close: bool = False  # the client connection must not carry another request

    @property
    def headers(self) -> list[tuple[bytes, bytes]]:
        headers = [
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", str(len(self.body)).encode("ascii")),
        ]
        if self.status == 405:
            headers.append((b"allow", b"GET, HEAD, POST, PUT, DELETE, OPTIONS, PATCH, TRACE"))
        if self.close:
            headers.append((b"connection", b"close"))
        return headers


NO_UPSTREAM = ErrorReply(
    503, b"503 Service Unavailable: no healthy upstream\n", "no healthy upstream"
)
UNREACHABLE = ErrorReply(502, b"502 Bad Gateway: upstream unreachable\n", "upstream unreachable")
TIMED_OUT = ErrorReply(504, b"504 Gateway Timeout: upstream timed out\n", "upstream timed out")
BAD_RESPONSE = ErrorReply(502, b"502 Bad Gateway: bad upstream response\n", "bad upstream response")
BUSY = ErrorReply(503, b"503 Service Unavailable: upstream busy\n", "upstream busy")
TOO_MANY_WEBSOCKETS = ErrorReply(
    503, b"503 Service Unavailable: too many WebSockets open\n", "too many WebSockets"
)

_TABLE: tuple[tuple[type[BaseException], ErrorReply], ...] = (
    (NoUpstream, NO_UPSTREAM),
    (httpx.PoolTimeout, BUSY),
    (httpx.ConnectError, UNREACHABLE),
    (httpx.ConnectTimeout, UNREACHABLE),
    (httpx.TimeoutException, TIMED_OUT),  # read, write and pool timeouts
    (httpx.TransportError, BAD_RESPONSE),
)


def reply_for(exc: BaseException) -> ErrorReply:
    """The answer for a request that failed with ``exc``."""
    for cls, reply in _TABLE:
        if isinstance(exc, cls):
            return reply
    return BAD_RESPONSE


def refusal(exc: ProtocolError) -> ErrorReply:
    """The answer to a request the proxy will not forward; the connection closes
    after it."""
    phrase = http.HTTPStatus(exc.status).phrase
    return ErrorReply(exc.status, f"{exc.status} {phrase}: {exc}\n".encode(), str(exc), True)
