"""The exceptions clientlb raises.

    ValueError
     └── ConfigError              bad configuration, raised at construction
    httpx.TransportError
     ├── NoUpstreamAvailable      no upstream may serve the request (proxy: 503)
     └── UnknownService           the request's host names no configured service

Errors of the upstream exchange itself are httpx's own (``httpx.ConnectError``,
``httpx.ReadTimeout``, ...), raised unchanged after the retries are spent, with the
attempts listed in ``exc.attempts`` where clientlb saw them.

``clientlb.httpx2`` has the same two classes under ``httpx2.TransportError``
(each library's ``except`` catches its own); ``CallFailed`` is what both
``NoUpstreamAvailable`` classes share.
"""

from __future__ import annotations

from ._core import Attempt, ConfigError
from ._httpx import httpx


class CallFailed(Exception):
    """A call that ended with no response, with its ``attempts``: the part of
    ``NoUpstreamAvailable`` that does not depend on the client library."""

    def __init__(self, message: str, *, attempts: tuple[Attempt, ...] = ()) -> None:
        super().__init__(message)
        self.attempts = attempts


class NoUpstreamAvailable(CallFailed, httpx.TransportError):
    """Every upstream of the pool is out or was already tried for this request."""


class UnknownService(httpx.TransportError):
    """The request's host is not one of the transport's ``services``."""


__all__ = ["CallFailed", "ConfigError", "NoUpstreamAvailable", "UnknownService"]
