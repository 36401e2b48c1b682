"""What the proxy answers when no upstream response can be passed on.

One table, read top to bottom, from the failure to the status and the short
plain body the client gets (and the word the log line uses):

    NoUpstream (no upstream may serve)          -> 503 no healthy upstream
    httpx.ConnectError, ConnectTimeout          -> 502 upstream unreachable
    httpx.ReadTimeout, WriteTimeout, PoolTimeout -> 504 upstream timed out
    httpx.RemoteProtocolError, ReadError, ...   -> 502 bad upstream response

Anything else is a fault in the proxy itself: 502 as well, never a traceback.
"""

from __future__ import annotations

from dataclasses import dataclass

from .._core import NoUpstream
from .._httpx import httpx


@dataclass(frozen=True, slots=True)
class ErrorReply:
    """A short plain answer for a failed request."""

    status: int
    body: bytes
    reason: str

    @property
    def headers(self) -> list[tuple[bytes, bytes]]:
        return [
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", str(len(self.body)).encode("ascii")),
        ]


NO_UPSTREAM = ErrorReply(
    503, b"503 Service Unavailable: no healthy upstream\n", "no healthy upstream"
)
UNREACHABLE = ErrorReply(502, b"502 Bad Gateway: upstream unreachable\n", "upstream unreachable")
TIMED_OUT = ErrorReply(504, b"504 Gateway Timeout: upstream timed out\n", "upstream timed out")
BAD_RESPONSE = ErrorReply(502, b"502 Bad Gateway: bad upstream response\n", "bad upstream response")

_TABLE: tuple[tuple[type[BaseException], ErrorReply], ...] = (
    (NoUpstream, NO_UPSTREAM),
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
