"""What the proxy shells ask of an engine, the thing that sends one request to
one upstream:

    response = await engine.request(upstream, method, target, headers, body, timeouts)
    response.status, response.headers       # raw bytes pairs, as received
    chunk = await response.read()           # b"" once the body is complete
    response.done                           # the whole body was read
    await response.aclose()                 # always; aborts an unfinished exchange

``body`` is ``None`` (no body, no framing header), ``bytes`` (complete, sent with
its Content-Length, may be sent again) or a ``BodyStream`` (read once, sent with
its announced length or chunked). The engine writes the framing headers itself:
the caller's headers carry none. Every failure is raised as an
``httpx.TransportError`` subclass, so one map (``clientlb._errors_map``) turns it
into a core outcome whatever engine ran.

An engine never sends a request twice: it may only pick another connection
before the first byte of a request is written.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from ..._core import Upstream
from ..._core._policies import seconds
from ..._httpx import httpx
from .._headers import Headers


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds allowed to connect, between reads, per write, and to wait for a
    connection when the upstream's are all busy (``pool``); ``None`` waits
    forever."""

    connect: float | None = 5.0
    read: float | None = 60.0
    write: float | None = 60.0
    pool: float | None = 5.0

    def __post_init__(self) -> None:
        for name in ("connect", "read", "write", "pool"):
            value = getattr(self, name)
            if value is not None:
                seconds(name, value)

    def within(self, seconds: float | None) -> Timeouts:
        """These timeouts, none longer than ``seconds`` (an attempt's time)."""
        if seconds is None:
            return self

        def bound(value: float | None) -> float:
            return seconds if value is None else min(value, seconds)

        return Timeouts(bound(self.connect), bound(self.read), bound(self.write), bound(self.pool))

    @classmethod
    def of(cls, value: object) -> Timeouts:
        """Accept a ``Timeouts``, an ``httpx.Timeout``, a number or ``None``."""
        if isinstance(value, Timeouts):
            return value
        if isinstance(value, httpx.Timeout):
            return cls(value.connect, value.read, value.write, value.pool)
        if value is None:
            return cls(None, None, None, None)
        if isinstance(value, int | float) and not isinstance(value, bool):
            seconds("timeout", value)
            return cls(float(value), float(value), float(value), float(value))
        raise ValueError(f"expected a positive number, httpx.Timeout or None, got {value!r}")


DEFAULT_TIMEOUTS = Timeouts()


@dataclass(frozen=True, slots=True)
class UpstreamLimits:
    """How many connections an engine keeps per upstream.

    * **max_connections** - open at once, in use or idle (Envoy's circuit
      breaker default, 1024); a request that finds them all busy waits up to
      the ``pool`` timeout for one, then fails without being sent.
    * **max_idle** - idle ones kept for reuse.
    * **idle_timeout** - seconds an idle one is kept: shorter than the usual
      servers' own keep-alive timeouts (uvicorn's and Apache's 5 s), so that the
      proxy, not the upstream, closes it, and a request is never written to a
      connection the upstream is closing.
    """

    max_connections: int | None = 1024
    max_idle: int = 512
    idle_timeout: float = 4.0


DEFAULT_UPSTREAM_LIMITS = UpstreamLimits()


class BodyStream(Protocol):
    """A request body read once, in chunks, while it is sent."""

    length: int | None  # Content-Length, or None to send it chunked
    started: bool  # some of it was read: it can no longer be sent elsewhere

    async def read(self) -> bytes: ...


class SyncBodyStream(Protocol):
    length: int | None
    started: bool

    def read(self) -> bytes: ...


class AsyncResponse(Protocol):
    status: int
    headers: Headers

    @property
    def done(self) -> bool: ...  # the whole body was read
    async def read(self) -> bytes: ...
    async def aclose(self) -> None: ...


class SyncResponse(Protocol):
    status: int
    headers: Headers

    @property
    def done(self) -> bool: ...  # the whole body was read
    def read(self) -> bytes: ...
    def close(self) -> None: ...


class AsyncEngine(Protocol):
    async def request(
        self,
        upstream: Upstream,
        method: bytes,
        target: bytes,
        headers: Headers,
        body: bytes | BodyStream | None,
        timeouts: Timeouts,
        upgrade: bool = False,
    ) -> AsyncResponse: ...

    async def aclose(self) -> None: ...


class SyncEngine(Protocol):
    def request(
        self,
        upstream: Upstream,
        method: bytes,
        target: bytes,
        headers: Headers,
        body: bytes | SyncBodyStream | None,
        timeouts: Timeouts,
    ) -> SyncResponse: ...

    def close(self) -> None: ...


def frame(headers: Headers, body: bytes | BodyStream | SyncBodyStream | None) -> Headers:
    """``headers`` with the framing of ``body``: its Content-Length when it is
    whole or announced, else chunked; nothing when there is no body."""
    if body is None:
        return headers
    length = len(body) if isinstance(body, bytes) else body.length
    if length is None:
        return [*headers, (b"transfer-encoding", b"chunked")]
    return [*headers, (b"content-length", b"%d" % length)]
