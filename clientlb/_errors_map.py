"""The one place where httpx's exceptions become core outcomes.

httpx.ConnectError, ConnectTimeout, PoolTimeout -> CONNECT_FAILURE
    the request never left: any method may go to another upstream
httpx.ReadTimeout, WriteTimeout                  -> TIMEOUT
httpx.ReadError, WriteError, RemoteProtocolError,
httpx.CloseError                                 -> RESET
    the upstream may have acted on the request: only idempotent methods
    are resent
anything else (LocalProtocolError, UnsupportedProtocol, ...) -> CANCELLED
    a fault on our side says nothing about the upstream's health and is
    not retried
"""

from __future__ import annotations

from ._core import Outcome
from ._httpx import httpx

_OUTCOMES: tuple[tuple[type[httpx.TransportError], Outcome], ...] = (
    (httpx.ConnectError, Outcome.CONNECT_FAILURE),
    (httpx.ConnectTimeout, Outcome.CONNECT_FAILURE),
    (httpx.PoolTimeout, Outcome.CONNECT_FAILURE),
    (httpx.TimeoutException, Outcome.TIMEOUT),
    (httpx.ReadError, Outcome.RESET),
    (httpx.WriteError, Outcome.RESET),
    (httpx.CloseError, Outcome.RESET),
    (httpx.RemoteProtocolError, Outcome.RESET),
)


def outcome_of(exc: BaseException) -> Outcome:
    """The core outcome that ``exc``, raised by an upstream exchange, stands for."""
    for cls, outcome in _OUTCOMES:
        if isinstance(exc, cls):
            return outcome
    return Outcome.CANCELLED
