"""The one map of failures, read left to right: the error an attempt ended with,
what it says of the upstream (the core's outcome), what a proxy answers, and
what a transport raises when the call ends on it.

    error                                  outcome          proxy answers
    Saturated (every upstream at its
      max_connections, no room to wait)    -                503 upstreams at connection limit
    NoUpstream (nothing may serve)         -                503 no healthy upstream
    httpx.PoolTimeout (every conn. busy)   BUSY             503 upstream busy
    httpx.ConnectError, ConnectTimeout     CONNECT_FAILURE  502 upstream unreachable
    httpx.ReadTimeout, WriteTimeout        TIMEOUT          504 upstream timed out
    httpx.ReadError, WriteError, CloseError,
    RemoteProtocolError                    RESET            502 bad upstream response
    anything else (a fault on our side)    CANCELLED        502, never a traceback

A connect failure never reached the upstream, so any method may go elsewhere,
and so may an attempt that found every connection busy (``BUSY``: the caller's
own limit, which says nothing of the upstream's health);
after a timeout or a reset the upstream may have acted, so only idempotent
methods are resent (the core decides, ``AttemptPlan.retry_after``).

A transport raises, when a call ends with no response: ``NoUpstreamAvailable``
when nothing could be tried, else the last attempt's error as an instance of a
class that is both ``NoUpstreamAvailable`` and that error's httpx class
(``except httpx.ConnectError`` and ``except clientlb.NoUpstreamAvailable`` both
catch it), carrying ``attempts``.

The errors of the proxy's own I/O become httpx's classes first, here too:
``connect_error()`` (a failed dial), ``bad_response()`` (bytes that break
HTTP/1.1) and ``opening_error()`` (a WebSocket upstream leg that failed to open).

httpx2 (``clientlb.httpx2``) has httpx's classes under its own names: importing
it adds its rows to the first column (``add_library``), so the same errors of
either library say the same of an upstream.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType

from ._core import Attempt, NoUpstream, Outcome, Saturated
from ._exceptions import CallFailed, NoUpstreamAvailable
from ._http1 import ProtocolError
from ._httpx import httpx

_OUTCOMES: list[tuple[type[BaseException], Outcome]] = []
_TRANSPORT_ERRORS: list[type[BaseException]] = []


def add_library(module: ModuleType) -> None:
    """Map the errors of ``module`` (httpx, or a library with its API) too."""
    if module.TransportError in _TRANSPORT_ERRORS:
        return
    _TRANSPORT_ERRORS.append(module.TransportError)
    _OUTCOMES.extend(
        [
            (module.ConnectError, Outcome.CONNECT_FAILURE),
            (module.ConnectTimeout, Outcome.CONNECT_FAILURE),
            (module.PoolTimeout, Outcome.BUSY),
            (module.TimeoutException, Outcome.TIMEOUT),
            (module.ReadError, Outcome.RESET),
            (module.WriteError, Outcome.RESET),
            (module.CloseError, Outcome.RESET),
            (module.RemoteProtocolError, Outcome.RESET),
        ]
    )


add_library(httpx)


def outcome_of(exc: BaseException) -> Outcome:
    """What an attempt that ended with ``exc`` says of its upstream."""
    for cls, outcome in _OUTCOMES:
        if isinstance(exc, cls):
            return outcome
    return Outcome.CANCELLED


def is_transport_error(exc: BaseException) -> bool:
    """Whether ``exc`` is a failed exchange with an upstream (a ``TransportError``
    of a library in use), the kind of error a plan may retry."""
    return any(isinstance(exc, cls) for cls in _TRANSPORT_ERRORS)


# -- what a proxy answers -------------------------------------------------------------


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
AT_LIMIT = ErrorReply(
    503,
    b"503 Service Unavailable: upstreams at their connection limit\n",
    "upstreams at their connection limit",
)
UNREACHABLE = ErrorReply(502, b"502 Bad Gateway: upstream unreachable\n", "upstream unreachable")
TIMED_OUT = ErrorReply(504, b"504 Gateway Timeout: upstream timed out\n", "upstream timed out")
BAD_RESPONSE = ErrorReply(502, b"502 Bad Gateway: bad upstream response\n", "bad upstream response")
BUSY = ErrorReply(503, b"503 Service Unavailable: upstream busy\n", "upstream busy")
TOO_MANY_WEBSOCKETS = ErrorReply(
    503, b"503 Service Unavailable: too many WebSockets open\n", "too many WebSockets"
)

_ANSWERS: tuple[tuple[type[BaseException], ErrorReply], ...] = (
    (Saturated, AT_LIMIT),
    (NoUpstream, NO_UPSTREAM),
    (httpx.PoolTimeout, BUSY),
    (httpx.ConnectError, UNREACHABLE),
    (httpx.ConnectTimeout, UNREACHABLE),
    (httpx.TimeoutException, TIMED_OUT),  # read and write timeouts
    (httpx.TransportError, BAD_RESPONSE),
)


def reply_for(exc: BaseException) -> ErrorReply:
    """What a proxy answers a request that failed with ``exc``."""
    if isinstance(exc, NoUpstreamAvailable) and not exc.attempts:
        return AT_LIMIT if isinstance(exc.__cause__, Saturated) else NO_UPSTREAM
    for cls, reply in _ANSWERS:
        if isinstance(exc, cls):
            return reply
    return BAD_RESPONSE


def refusal(exc: ProtocolError) -> ErrorReply:
    """What a proxy answers a request it will not forward; the connection closes
    after it, since what follows the request cannot be trusted."""
    import http

    phrase = http.HTTPStatus(exc.status).phrase
    return ErrorReply(exc.status, f"{exc.status} {phrase}: {exc}\n".encode(), str(exc), True)


# -- what a transport raises ------------------------------------------------------------


_BOTH: dict[tuple[type[CallFailed], type[BaseException]], type[CallFailed]] = {}


def _both(base: type[CallFailed], cls: type[BaseException]) -> type[CallFailed]:
    """A class that is ``base`` (a ``NoUpstreamAvailable``) and ``cls`` at once
    (made once)."""
    both = _BOTH.get((base, cls))
    if both is None:
        both = _BOTH[base, cls] = type(f"NoUpstream{cls.__name__}", (base, cls), {})
    return both


def call_failed(
    error: BaseException | None,
    attempts: Sequence[Attempt],
    no_upstream: type[CallFailed] = NoUpstreamAvailable,
    transport_error: type[BaseException] = httpx.TransportError,
) -> CallFailed:
    """The error a call ends with when no attempt gave a response: plain
    ``no_upstream`` (the ``NoUpstreamAvailable`` of the transport's library) when
    nothing was tried (``error`` the core's ``NoUpstream``, if any, whose message
    it keeps and which is its cause), else one that is also the last attempt's
    class (a ``transport_error`` of that library)."""
    if isinstance(error, NoUpstream):
        failed = no_upstream(str(error), attempts=tuple(attempts))
        failed.__cause__ = error
        return failed
    if error is None or not isinstance(error, transport_error):
        message = "no upstream available" if not attempts else "every attempt failed"
        return no_upstream(message, attempts=tuple(attempts))
    if isinstance(error, no_upstream):
        error.attempts = tuple(attempts)
        return error
    raised = _both(no_upstream, type(error))(str(error), attempts=tuple(attempts))
    raised.__cause__ = error
    return raised


# -- the proxy's own I/O, as httpx's classes ------------------------------------------------


def connect_error(netloc: str, exc: BaseException) -> httpx.TransportError:
    """A failed connection attempt."""
    if isinstance(exc, TimeoutError):
        return httpx.ConnectTimeout(f"connecting to {netloc} timed out")
    reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return httpx.ConnectError(f"cannot connect to {netloc}: {reason}")


def bad_response(exc: ProtocolError) -> httpx.RemoteProtocolError:
    """A response that breaks HTTP/1.1."""
    return httpx.RemoteProtocolError(f"invalid upstream response: {exc}")


def opening_error(exc: Exception, connected: bool) -> httpx.TransportError | None:
    """A WebSocket upstream leg that failed to open (the ``websockets`` client's
    errors): refused or unreachable before TCP and TLS were up is a connect
    failure, no answer in time a timeout, a broken answer (closed, malformed,
    a wrong accept key, an extension or subprotocol never offered) a reset;
    ``None`` for anything else (a fault on our side)."""
    from websockets.exceptions import InvalidHandshake
    from websockets.exceptions import ProtocolError as FrameError

    detail = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, OSError) and not connected:  # TimeoutError is an OSError
        return httpx.ConnectError(detail)
    if isinstance(exc, TimeoutError):
        return httpx.ReadTimeout(detail)
    if isinstance(exc, OSError | EOFError | InvalidHandshake | FrameError):
        return httpx.RemoteProtocolError(detail)
    return None
