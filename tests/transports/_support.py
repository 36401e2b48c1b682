"""Typed helpers shared by the transport tests.

``httpx`` and ``clientlb`` here are the library the tests run on
(``pytest --library``, see ``tests/library.py``): httpx and ``clientlb``, or
httpx2 and ``clientlb.httpx2``. ``MockRouter`` is respx's on httpx; respx does
not speak httpx2 (its handlers answer with httpx responses), so on httpx2 it is
``Router``, the part of respx's API these tests use.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import respx

from .. import library

httpx = library.httpx
clientlb = library.clientlb


class Route:
    """A respx-like route: what it matches, how it answers, how often it was hit."""

    def __init__(self, lookups: dict[str, Any]) -> None:
        self.lookups = lookups
        self.effect: Any = None
        self.status = 200
        self.call_count = 0

    def matches(self, request: Any) -> bool:
        host = request.url.host
        return all(
            host == value if name == "host" else host in value
            for name, value in self.lookups.items()
        )

    def mock(self, side_effect: Any) -> Route:
        self.effect = side_effect
        return self

    def respond(self, status: int = 200) -> Route:
        self.status = status
        return self

    def answer(self, request: Any) -> Any:
        self.call_count += 1
        effect = self.effect
        if isinstance(effect, BaseException):
            raise effect
        if isinstance(effect, type):
            raise effect("Mock Error", request=request)
        if effect is not None:
            return effect(request)
        return httpx.Response(self.status)


class Router:
    """A respx-like router for httpx2: ``route(host=..., host__in=...)``."""

    def __init__(self, assert_all_called: bool = True) -> None:
        self.routes: list[Route] = []

    def route(self, **lookups: Any) -> Route:
        assert set(lookups) <= {"host", "host__in"}, lookups
        self.routes.append(Route(lookups))
        return self.routes[-1]

    def handler(self, request: Any) -> Any:
        for route in self.routes:
            if route.matches(request):
                response = route.answer(request)
                if isinstance(response.stream, httpx.ByteStream):
                    response.read()  # as respx does
                return response
        raise AssertionError(f"no route for {request.url}")

    async def async_handler(self, request: Any) -> Any:
        return self.handler(request)


MockRouter: Callable[..., Any] = respx.MockRouter if httpx.__name__ == "httpx" else Router


class Flavour:
    """The sync or the async transport behind one awaitable API, so that a test
    written once checks both twins. The sync flavour makes blocking calls: it is
    used with in-memory inner transports, or with servers in other threads."""

    def __init__(self, name: str) -> None:
        assert name in ("sync", "async")
        self.name = name

    @property
    def is_async(self) -> bool:
        return self.name == "async"

    def transport(self, *args: Any, **kwargs: Any) -> Any:
        """A ``BalancingTransport`` or an ``AsyncBalancingTransport``."""
        if self.is_async:
            return clientlb.AsyncBalancingTransport(*args, **kwargs)
        return clientlb.BalancingTransport(*args, **kwargs)

    def mock(self, router: Any) -> httpx.MockTransport:
        """An inner transport answered by a respx router."""
        return httpx.MockTransport(router.async_handler if self.is_async else router.handler)

    def chunks(self, parts: Iterable[bytes]) -> Iterator[bytes] | AsyncIterator[bytes]:
        """A request body as a generator: a stream that cannot be replayed."""
        items = list(parts)
        if not self.is_async:
            return iter(items)

        async def produce() -> AsyncIterator[bytes]:
            for item in items:
                yield item

        return produce()

    @asynccontextmanager
    async def client(
        self, transport: Any, base_url: str = "http://svc", **kwargs: Any
    ) -> AsyncIterator[Client]:
        if self.is_async:
            async with httpx.AsyncClient(
                transport=transport, base_url=base_url, **kwargs
            ) as aclient:
                yield Client(None, aclient)
        else:
            with httpx.Client(transport=transport, base_url=base_url, **kwargs) as sclient:
                yield Client(sclient, None)


class Client:
    """``request`` on an ``httpx.Client`` or an ``httpx.AsyncClient``."""

    def __init__(self, sync: httpx.Client | None, async_: httpx.AsyncClient | None) -> None:
        self.sync = sync
        self.async_ = async_

    async def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """Send, read the body and close the response."""
        if self.sync is not None:
            return self.sync.request(method, url, **kwargs)
        assert self.async_ is not None
        return await self.async_.request(method, url, **kwargs)

    async def send_streaming(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """Send and return the response with its body unread: the caller closes it."""
        if self.sync is not None:
            return self.sync.send(self.sync.build_request(method, url, **kwargs), stream=True)
        assert self.async_ is not None
        return await self.async_.send(self.async_.build_request(method, url, **kwargs), stream=True)

    async def close_response(self, response: httpx.Response) -> None:
        if self.sync is not None:
            response.close()
        else:
            await response.aclose()


class WatchedBody(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A response body that records whether it was closed."""

    def __init__(self, data: bytes = b"") -> None:
        self.data = data
        self.closed = False

    def __iter__(self) -> Iterator[bytes]:
        yield self.data

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self.data

    def close(self) -> None:
        self.closed = True

    async def aclose(self) -> None:
        self.closed = True


class Refusing(httpx.BaseTransport, httpx.AsyncBaseTransport):
    """An inner transport that refuses connections to some hosts *before* touching
    the request body (as a real connect failure does) and answers the others with
    200 after reading the body in full. ``seen`` lists (host, body) received."""

    def __init__(self, refuse: Iterable[str]) -> None:
        self.refuse = set(refuse)
        self.seen: list[tuple[str, bytes]] = []
        self.refused: list[str] = []

    def _refuse(self, request: httpx.Request) -> None:
        if request.url.host in self.refuse:
            self.refused.append(request.url.host)
            raise httpx.ConnectError("connection refused", request=request)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self._refuse(request)
        assert isinstance(request.stream, httpx.SyncByteStream)
        body = b"".join(request.stream)
        self.seen.append((request.url.host, body))
        return httpx.Response(200, content=body)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self._refuse(request)
        assert isinstance(request.stream, httpx.AsyncByteStream)
        body = b"".join([part async for part in request.stream])
        self.seen.append((request.url.host, body))
        return httpx.Response(200, content=body)


def in_flight(transport: Any) -> dict[str, int]:
    """In-flight count by upstream URL (single-pool transports)."""
    snapshot: dict[str, Any] = transport.snapshot()
    return {u["url"]: u["in_flight"] for u in snapshot["upstreams"]}


def assert_idle(transport: Any) -> None:
    """Every upstream of every pool of ``transport`` has nothing in flight."""
    for name, pool in transport.pools.items():
        busy = {m.upstream.url: m.in_flight for m in pool.members if m.in_flight}
        assert not busy, f"{name}: requests still in flight: {busy}"


def hosts(attempts: Iterable[clientlb.Attempt]) -> list[str]:
    """The upstream host of each attempt."""
    return [httpx.URL(a.upstream).host for a in attempts]
