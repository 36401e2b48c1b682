"""The inner HTTP/1.1 engines: what sends one request to one upstream.

Three drivers of the one sans-IO reader (``clientlb._http1``), so that every
engine frames, reuses and refuses connections by the same rules:
``AsyncioEngine`` (asyncio, the proxy's fast path), ``AnyioEngine`` (any anyio
backend, trio included) and ``BlockingEngine`` (threads, for the WSGI proxy).
``default_async_engine()`` picks the first that can run.
"""

from __future__ import annotations

import ssl

import sniffio

from ._anyio import AnyioEngine
from ._asyncio import AsyncioEngine
from ._base import (
    DEFAULT_TIMEOUTS,
    DEFAULT_UPSTREAM_LIMITS,
    AsyncEngine,
    AsyncResponse,
    BodyStream,
    SyncBodyStream,
    SyncEngine,
    SyncResponse,
    Timeouts,
    UpstreamLimits,
)
from ._blocking import BlockingEngine

__all__ = [
    "DEFAULT_TIMEOUTS",
    "DEFAULT_UPSTREAM_LIMITS",
    "AnyioEngine",
    "AsyncEngine",
    "AsyncResponse",
    "AsyncioEngine",
    "BlockingEngine",
    "BodyStream",
    "SyncBodyStream",
    "SyncEngine",
    "SyncResponse",
    "Timeouts",
    "UpstreamLimits",
    "default_async_engine",
]


def default_async_engine(
    ssl_context: ssl.SSLContext | None = None, limits: UpstreamLimits = DEFAULT_UPSTREAM_LIMITS
) -> AsyncEngine:
    """The asyncio engine under asyncio, the anyio one elsewhere. Both verify
    HTTPS upstreams with ``ssl_context`` (default: ``verify=True``'s)."""
    try:
        backend = sniffio.current_async_library()
    except sniffio.AsyncLibraryNotFoundError:
        backend = "asyncio"
    if backend == "asyncio":
        return AsyncioEngine(ssl_context, limits)
    return AnyioEngine(ssl_context, limits)
