"""What happened to one attempt, as the shells report it to the core."""

from __future__ import annotations

import enum


class Outcome(enum.Enum):
    """The result of one attempt at an upstream.

    ``CONNECT_FAILURE`` means the connection was never established, so the upstream
    cannot have seen the request. ``RESET`` and ``TIMEOUT`` happened after the request
    may have reached it. ``CANCELLED`` is the caller giving up: it says nothing about
    the upstream's health.
    """

    SUCCESS = "success"
    CONNECT_FAILURE = "connect_failure"
    RESET = "reset"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"

    @property
    def is_failure(self) -> bool:
        return self in FAILURES


FAILURES = frozenset({Outcome.CONNECT_FAILURE, Outcome.RESET, Outcome.TIMEOUT})
