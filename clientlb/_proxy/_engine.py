"""The inner HTTP engines: what sends one request to one upstream.

An engine is deliberately small so the proxy shells can drive it directly:

    response = await engine.request(upstream, method, target, headers, body, timeouts)
    response.status, response.headers       # raw bytes pairs, as received
    chunk = await response.read()           # b"" once the body is complete
    await response.aclose()                 # always; aborts an unfinished exchange

``body`` is ``bytes`` (complete, may be sent again) or a ``BodyStream`` (read
once). Every failure is raised as an ``httpx.TransportError`` subclass, so one
map (``clientlb._errors_map.outcome_of``) turns it into a core outcome whatever
engine ran.

Two families live here: the engines over httpcore (the I/O layer under httpx),
async for any anyio backend and sync for the WSGI proxy. The asyncio engine with
the C parser is in ``_h1.py``; ``default_async_engine()`` picks it when it can.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from .._core import Upstream
from .._httpx import httpcore, httpx
from .._tls import default_context
from ._headers import Headers


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds allowed to connect, between reads, per write, and to get a pooled
    connection; ``None`` waits forever."""

    connect: float | None = 5.0
    read: float | None = 60.0
    write: float | None = 60.0
    pool: float | None = 5.0

    @classmethod
    def of(cls, value: object) -> Timeouts:
        """Accept a ``Timeouts``, an ``httpx.Timeout``, a number or ``None``."""
        if isinstance(value, Timeouts):
            return value
        if isinstance(value, httpx.Timeout):
            return cls(value.connect, value.read, value.write, value.pool)
        if value is None:
            return cls(None, None, None, None)
        if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
            return cls(float(value), float(value), float(value), float(value))
        raise ValueError(f"expected a positive number, httpx.Timeout or None, got {value!r}")


DEFAULT_TIMEOUTS = Timeouts()


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

    async def read(self) -> bytes: ...
    async def aclose(self) -> None: ...


class SyncResponse(Protocol):
    status: int
    headers: Headers

    def read(self) -> bytes: ...
    def close(self) -> None: ...


class AsyncEngine(Protocol):
    async def request(
        self,
        upstream: Upstream,
        method: bytes,
        target: bytes,
        headers: Headers,
        body: bytes | BodyStream,
        timeouts: Timeouts,
    ) -> AsyncResponse: ...

    async def aclose(self) -> None: ...


class SyncEngine(Protocol):
    def request(
        self,
        upstream: Upstream,
        method: bytes,
        target: bytes,
        headers: Headers,
        body: bytes | SyncBodyStream,
        timeouts: Timeouts,
    ) -> SyncResponse: ...

    def close(self) -> None: ...


def frame(headers: Headers, body: bytes | BodyStream | SyncBodyStream) -> Headers:
    """Add the request's framing header when the client's was dropped: a body read
    whole gets its Content-Length, a stream of unknown length goes chunked."""
    length = len(body) if isinstance(body, bytes) else body.length
    if length is None:
        headers.append((b"transfer-encoding", b"chunked"))
    elif length and not any(n == b"content-length" for n, _ in headers):
        headers.append((b"content-length", str(length).encode("ascii")))
    return headers


def map_httpcore(exc: Exception) -> httpx.TransportError:
    """httpcore's exception as httpx's class of the same name (httpx mirrors them)."""
    cls = getattr(httpx, type(exc).__name__, None)
    if isinstance(cls, type) and issubclass(cls, httpx.TransportError):
        return cls(str(exc))
    return httpx.TransportError(str(exc) or type(exc).__name__)


def _extensions(timeouts: Timeouts) -> dict[str, Any]:
    return {
        "timeout": {
            "connect": timeouts.connect,
            "read": timeouts.read,
            "write": timeouts.write,
            "pool": timeouts.pool,
        }
    }


def _url(upstream: Upstream, target: bytes) -> httpcore.URL:
    return httpcore.URL(
        scheme=upstream.scheme.encode(),
        host=upstream.host.encode(),
        port=upstream.port,
        target=target,
    )


class _AsyncCoreResponse:
    __slots__ = ("_inner", "_it", "headers", "status")

    def __init__(self, inner: httpcore.Response) -> None:
        self._inner = inner
        self.status = inner.status
        self.headers = list(inner.headers)
        self._it: AsyncIterator[bytes] = inner.aiter_stream()

    async def read(self) -> bytes:
        try:
            async for chunk in self._it:
                if chunk:
                    return chunk
            return b""
        except (httpcore.TimeoutException, httpcore.NetworkError, httpcore.ProtocolError) as exc:
            raise map_httpcore(exc) from exc

    async def aclose(self) -> None:
        await self._inner.aclose()


def _with_context(pool_options: dict[str, Any]) -> dict[str, Any]:
    """httpcore pool options with ``verify=True``'s shared context unless one is
    given (httpcore alone would build one per connection)."""
    if pool_options.get("ssl_context") is None:
        pool_options = {**pool_options, "ssl_context": default_context()}
    return pool_options


class HttpcoreEngine:
    """The async engine over ``httpcore.AsyncConnectionPool``: any anyio backend
    (asyncio or trio), HTTP/1.1 and TLS as httpx does them."""

    def __init__(self, max_connections: int | None = None, **pool_options: Any) -> None:
        self._pool = httpcore.AsyncConnectionPool(
            max_connections=max_connections,
            max_keepalive_connections=max_connections or 1000,
            **_with_context(pool_options),
        )

    async def request(
        self,
        upstream: Upstream,
        method: bytes,
        target: bytes,
        headers: Headers,
        body: bytes | BodyStream,
        timeouts: Timeouts,
    ) -> AsyncResponse:
        content: bytes | AsyncIterator[bytes] = (
            body if isinstance(body, bytes) else _aiter_body(body)
        )
        request = httpcore.Request(
            method,
            _url(upstream, target),
            headers=frame(headers, body),
            content=content,
            extensions=_extensions(timeouts),
        )
        try:
            return _AsyncCoreResponse(await self._pool.handle_async_request(request))
        except (
            httpcore.TimeoutException,
            httpcore.NetworkError,
            httpcore.ProtocolError,
            httpcore.UnsupportedProtocol,
        ) as exc:
            raise map_httpcore(exc) from exc

    async def aclose(self) -> None:
        await self._pool.aclose()


async def _aiter_body(body: BodyStream) -> AsyncIterator[bytes]:
    while chunk := await body.read():
        yield chunk


class _SyncCoreResponse:
    __slots__ = ("_inner", "_it", "headers", "status")

    def __init__(self, inner: httpcore.Response) -> None:
        self._inner = inner
        self.status = inner.status
        self.headers = list(inner.headers)
        self._it: Iterator[bytes] = inner.iter_stream()

    def read(self) -> bytes:
        try:
            for chunk in self._it:
                if chunk:
                    return chunk
            return b""
        except (httpcore.TimeoutException, httpcore.NetworkError, httpcore.ProtocolError) as exc:
            raise map_httpcore(exc) from exc

    def close(self) -> None:
        self._inner.close()


class SyncHttpcoreEngine:
    """The sync engine over ``httpcore.ConnectionPool``, for the WSGI proxy."""

    def __init__(self, max_connections: int | None = None, **pool_options: Any) -> None:
        self._pool = httpcore.ConnectionPool(
            max_connections=max_connections,
            max_keepalive_connections=max_connections or 1000,
            **_with_context(pool_options),
        )

    def request(
        self,
        upstream: Upstream,
        method: bytes,
        target: bytes,
        headers: Headers,
        body: bytes | SyncBodyStream,
        timeouts: Timeouts,
    ) -> SyncResponse:
        content: bytes | Iterator[bytes] = body if isinstance(body, bytes) else _iter_body(body)
        request = httpcore.Request(
            method,
            _url(upstream, target),
            headers=frame(headers, body),
            content=content,
            extensions=_extensions(timeouts),
        )
        try:
            return _SyncCoreResponse(self._pool.handle_request(request))
        except (
            httpcore.TimeoutException,
            httpcore.NetworkError,
            httpcore.ProtocolError,
            httpcore.UnsupportedProtocol,
        ) as exc:
            raise map_httpcore(exc) from exc

    def close(self) -> None:
        self._pool.close()


def _iter_body(body: SyncBodyStream) -> Iterator[bytes]:
    while chunk := body.read():
        yield chunk


def default_async_engine(ssl_context: ssl.SSLContext | None = None) -> AsyncEngine:
    """The fastest engine that can run here: the asyncio one with the C parser
    under asyncio when ``httptools`` is installed, else the httpcore one. Both
    verify HTTPS upstreams with ``ssl_context`` (default: ``verify=True``'s)."""
    import sniffio

    try:
        backend = sniffio.current_async_library()
    except sniffio.AsyncLibraryNotFoundError:
        backend = "asyncio"
    if backend == "asyncio":
        try:
            from ._h1 import H1Engine
        except ImportError:
            pass
        else:
            return H1Engine(ssl_context)
    return HttpcoreEngine(ssl_context=ssl_context)
