"""What happened to one attempt, as the shells report it to the core."""

from __future__ import annotations

import enum


class Outcome(enum.Enum):
    """The result of one attempt at an upstream.

    ``CONNECT_FAILURE`` means the connection was never established, so the upstream
    cannot have seen the request. ``RESET`` and ``TIMEOUT`` happened after the request
    may have reached it. ``CANCELLED`` is the caller giving up: it says nothing about
    the upstream's health. ``BUSY`` means the attempt never left the caller: every
    connection it may open to the upstream stayed in use for the whole wait (a
    connection pool's limit). Like a connect failure it may go elsewhere whatever
    the method; like a cancellation it says nothing about the upstream's health
    (a limit of the caller's own must not eject a healthy upstream, as Envoy does
    not count a pool's overflow as an outlier).
    """

    SUCCESS = "success"
    CONNECT_FAILURE = "connect_failure"
    RESET = "reset"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"
    BUSY = "busy"

    @property
    def is_failure(self) -> bool:
        return self in FAILURES


FAILURES = frozenset({Outcome.CONNECT_FAILURE, Outcome.RESET, Outcome.TIMEOUT})
#: Outcomes of attempts that never reached the upstream: any method may go elsewhere.
NEVER_SENT = frozenset({Outcome.CONNECT_FAILURE, Outcome.BUSY})
