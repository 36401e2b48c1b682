"""WebSockets through ``ProxyApp`` under uvicorn when things go wrong: upstreams
that fail the handshake in every way (beside a good one, and alone), messages
over the limit, clients and upstreams that go quiet, the cap, and shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from clientlb import OutlierDetection, WebSocketSettings
from clientlb._proxy import ProxyApp
from clientlb._proxy._websocket import _RELAYS, close_websockets

from ..waiting import wait_for
from .conftest import in_flight
from .servers import Served
from .test_websocket import EchoUpstream
from .ws_upstreams import FAILURES, RawClient, WsUpstream

pytestmark = pytest.mark.integration

Start = Callable[..., tuple[ProxyApp, Served]]
TIMEOUT = httpx.Timeout(connect=2.0, read=0.3, write=2.0, pool=2.0)
EJECT_AFTER_TWO = {
    "outlier": OutlierDetection(consecutive_local_failures=2, consecutive_gateway_errors=2)
}


def url(served: Served, path: str = "/chat") -> str:
    return f"ws://127.0.0.1:{served.port}{path}"


def settled(app: ProxyApp, timeout: float = 5.0) -> bool:
    """Every lease finished and no relay counted."""
    return wait_for(
        lambda: in_flight(app.pool) == 0 and app.open_websockets == 0, "settled", timeout=timeout
    )


def state(app: ProxyApp, upstream: str) -> dict[str, Any]:
    return next(u for u in app.pool.snapshot()["upstreams"] if u["url"] == upstream)


@contextlib.contextmanager
def uvicorn_logs(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Also capture uvicorn's own error log (it does not propagate to the root;
    attach after every server is configured, since configuring resets it)."""
    logger = logging.getLogger("uvicorn.error")
    logger.addHandler(caplog.handler)
    try:
        yield
    finally:
        logger.removeHandler(caplog.handler)


def no_errors(caplog: pytest.LogCaptureFixture) -> None:
    bad = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not bad, [r.getMessage() for r in bad]


async def refused(address: str) -> int:
    with pytest.raises(InvalidStatus) as info:
        async with connect(address):
            pass
    return info.value.response.status_code


# -- the handshake fails -------------------------------------------------------


@pytest.mark.parametrize("mode", sorted(FAILURES))
def test_a_failing_upstream_beside_a_good_one_is_retried_then_ejected(
    proxy: Start, mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    good = EchoUpstream("good")
    with WsUpstream(mode) as bad, Served(good) as up:
        app, served = proxy([bad.url, up.url], timeout=TIMEOUT, **EJECT_AFTER_TWO)

        async def greetings() -> list[str]:
            heard = []
            for _ in range(8):
                async with connect(url(served)) as ws:
                    heard.append(str(await ws.recv()))
                if state(app, bad.url)["state"] == "ejected":
                    break
            return heard

        with uvicorn_logs(caplog):
            heard = asyncio.run(greetings())
        assert heard and all(h == "hello from good /chat" for h in heard)
        assert state(app, bad.url)["state"] == "ejected"
        assert state(app, bad.url)["failures"] >= 2
        assert bad.handshakes >= 2
        assert settled(app)
    no_errors(caplog)


@pytest.mark.parametrize(("mode", "status"), sorted(FAILURES.items()))
def test_a_failing_upstream_alone_answers_a_gateway_status(
    proxy: Start, mode: str, status: int, caplog: pytest.LogCaptureFixture
) -> None:
    with WsUpstream(mode) as bad:
        app, served = proxy([bad.url], timeout=TIMEOUT)
        with uvicorn_logs(caplog):
            assert asyncio.run(refused(url(served))) == status
            assert settled(app)
    no_errors(caplog)
    lines = [r.getMessage() for r in caplog.records if r.name == "clientlb.proxy"]
    assert len(lines) == 1 and lines[0].startswith(f"WEBSOCKET /chat -> {status}"), lines
    assert "without completing handshake" not in caplog.text


def test_an_unreachable_upstream_is_a_connect_failure(
    proxy: Start, caplog: pytest.LogCaptureFixture
) -> None:
    good = EchoUpstream("good")
    with WsUpstream("close") as gone, Served(good) as up:
        gone.close()  # nothing listens there now
        app, served = proxy([gone.url, up.url], timeout=TIMEOUT, **EJECT_AFTER_TWO)

        async def talk() -> None:
            for _ in range(4):
                async with connect(url(served)) as ws:
                    assert await ws.recv() == "hello from good /chat"

        with uvicorn_logs(caplog):
            asyncio.run(talk())
        assert state(app, gone.url)["state"] == "ejected"
        app2, alone = proxy([gone.url], timeout=TIMEOUT)
        assert asyncio.run(refused(url(alone))) == 502
        assert settled(app) and settled(app2)
    no_errors(caplog)


def test_a_refusal_is_passed_on_with_its_headers_and_not_followed(proxy: Start) -> None:
    redirect = ((b"Location", b"/elsewhere"), (b"Set-Cookie", b"a=1"))
    with WsUpstream("status", status=302, headers=redirect) as up:
        app, served = proxy([up.url], timeout=TIMEOUT)
        client = RawClient(served.port, "/chat")
        try:
            assert client.status == 302
            assert client.fields[b"location"] == b"/elsewhere"
            assert client.fields[b"set-cookie"] == b"a=1"
            assert client.body() == b"upstream says 302\n"
        finally:
            client.sock.close()
        assert up.handshakes == 1  # the redirect went to the client, not followed
        assert state(app, up.url)["failures"] == 0
        assert settled(app)


# -- bounds ----------------------------------------------------------------------


def test_a_deflate_bomb_from_the_upstream_closes_the_client_with_1009(proxy: Start) -> None:
    with WsUpstream("bomb", size=15 * 1024 * 1024) as bomb:  # about 15 KiB on the wire
        app, served = proxy([bomb.url], timeout=TIMEOUT)

        async def receive() -> ConnectionClosed:
            async with connect(url(served)) as ws:
                with pytest.raises(ConnectionClosed) as info:
                    await ws.recv()
            return info.value

        tracemalloc.start()
        try:
            closed = asyncio.run(receive())
            assert settled(app)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert closed.rcvd is not None and closed.rcvd.code == 1009
        assert peak < 8 * 1024 * 1024, f"the proxy held {peak} bytes"
        wait_for(lambda: bomb.ended == ["closed 1009"])


def test_a_client_message_over_max_message_closes_both_legs_with_1009(proxy: Start) -> None:
    upstream = EchoUpstream("a")
    with Served(upstream) as up:
        app, served = proxy([up.url], websockets=WebSocketSettings(max_message=64 * 1024))

        async def send_too_much() -> int | None:
            async with connect(url(served), max_size=None) as ws:
                await ws.recv()
                await ws.send(b"x" * (64 * 1024))  # at the limit: relayed
                assert len(await ws.recv()) == 64 * 1024
                await ws.send(b"x" * (64 * 1024 + 1))
                with pytest.raises(ConnectionClosed):
                    await ws.recv()
                return ws.close_code

        assert asyncio.run(send_too_much()) == 1009
        assert upstream.closed.wait(5)
        assert upstream.closed_with == [1009]
        assert settled(app)


# -- liveness -----------------------------------------------------------------------


def test_a_client_that_leaves_while_the_upstream_stalls_is_released(proxy: Start) -> None:
    """7 MB to an upstream that reads nothing through a 4 KiB socket buffer: the
    proxy's socket buffer (at most tcp_wmem's 4 MiB) cannot take it all, so the
    relay is blocked sending when the client resets its connection."""
    settings = WebSocketSettings(max_message=4 * 1024 * 1024, close_timeout=0.5)
    with WsUpstream("stall", rcvbuf=4096) as stalled:
        app, served = proxy([stalled.url], websockets=settings)
        client = RawClient(served.port, timeout=10)
        assert client.status == 101
        for _ in range(2):
            client.send(b"y" * (3_500_000))
        assert in_flight(app.pool) == 1 and app.open_websockets == 1
        client.vanish()
        started = time.monotonic()
        assert settled(app, timeout=2.0)
        assert time.monotonic() - started < 2.0
        assert state(app, stalled.url)["failures"] == 0  # the client left: not the upstream's fault


def test_an_upstream_that_stops_reading_fails_the_send_after_the_write_timeout(
    proxy: Start,
) -> None:
    settings = WebSocketSettings(max_message=4 * 1024 * 1024, close_timeout=0.2)
    timeout = httpx.Timeout(connect=2.0, read=2.0, write=0.3, pool=2.0)
    with WsUpstream("stall", rcvbuf=4096) as stalled:
        app, served = proxy([stalled.url], websockets=settings, timeout=timeout)

        async def send() -> tuple[int | None, str | None]:
            async with connect(url(served), max_size=None) as ws:
                await ws.send(b"z" * 3_500_000)
                with pytest.raises(ConnectionClosed):
                    await ws.recv()
                return ws.close_code, ws.close_reason

        assert asyncio.run(send()) == (1011, "upstream not reading")
        assert settled(app)
        assert state(app, stalled.url)["failures"] == 1


def test_a_frozen_upstream_is_closed_with_1011_after_its_ping_timeout(proxy: Start) -> None:
    settings = WebSocketSettings(ping_interval=0.2, ping_timeout=0.3, close_timeout=0.2)
    with WsUpstream("stall") as frozen:
        app, served = proxy([frozen.url], websockets=settings)

        async def wait() -> tuple[int | None, float]:
            async with connect(url(served)) as ws:
                started = time.monotonic()
                with pytest.raises(ConnectionClosed):
                    await ws.recv()
                return ws.close_code, time.monotonic() - started

        code, elapsed = asyncio.run(wait())
        assert code == 1011
        assert elapsed < 0.2 + 0.3 + 0.2 + 0.8
        assert settled(app)
        assert state(app, frozen.url)["failures"] == 1  # a timeout: the upstream's


# -- the cap and shutdown ---------------------------------------------------------


def test_max_open_refuses_the_next_handshake_with_503(proxy: Start) -> None:
    upstream = EchoUpstream("a")
    with Served(upstream) as up:
        app, served = proxy([up.url], websockets=WebSocketSettings(max_open=2))

        async def crowd() -> None:
            async with connect(url(served)) as one:
                await one.recv()
                async with connect(url(served)) as two:
                    await two.recv()
                    assert await refused(url(served)) == 503
                wait_for(lambda: app.open_websockets == 1)
                async with connect(url(served)) as three:
                    assert await three.recv() == "hello from a /chat"
                    assert app.open_websockets == 2

        asyncio.run(crowd())
        assert settled(app)
        assert upstream.closed.wait(5)


class WithCloseRoute:
    """The proxy, plus ``GET /close-websockets`` calling ``close_websockets()``
    on the server's loop (as ``ProxyApp.shutdown()`` would)."""

    def __init__(self, app: ProxyApp) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/close-websockets":
            await close_websockets(self.app)
            await send({"type": "http.response.start", "status": 204, "headers": []})
            await send({"type": "http.response.body", "body": b""})
        else:
            await self.app(scope, receive, send)


def test_close_websockets_says_1001_to_clients_and_closes_upstreams() -> None:
    upstream = EchoUpstream("a")
    with Served(upstream) as up:
        app = ProxyApp([up.url], websockets=WebSocketSettings(close_timeout=0.5))
        with Served(WithCloseRoute(app), lifespan="on") as served:

            async def talk() -> tuple[int | None, str | None]:
                async with connect(url(served)) as ws:
                    await ws.recv()
                    async with httpx.AsyncClient() as http:
                        closing = asyncio.create_task(
                            http.get(f"http://127.0.0.1:{served.port}/close-websockets")
                        )
                        with pytest.raises(ConnectionClosed):
                            await ws.recv()
                        assert (await closing).status_code == 204
                    return ws.close_code, ws.close_reason

            assert asyncio.run(talk()) == (1001, "proxy shutting down")
            assert upstream.closed.wait(5)
            assert upstream.closed_with == [1000]
            assert settled(app)


class Recording(ProxyApp):
    """Records what is still open when the lifespan shutdown runs."""

    at_shutdown: tuple[int, int] | None = None

    async def shutdown(self) -> None:
        self.at_shutdown = (len(_RELAYS.get(self, ())), self.open_websockets)
        await super().shutdown()


def test_uvicorn_closes_websockets_with_1012_before_the_lifespan_shutdown() -> None:
    """What ``close_websockets()`` can do under uvicorn: nothing is left for it,
    uvicorn has said 1012 to every client before the lifespan shutdown."""
    upstream = EchoUpstream("a")
    with Served(upstream) as up:
        app = Recording([up.url])
        served = Served(app, lifespan="on").start()
        try:

            async def talk() -> int | None:
                async with connect(url(served)) as ws:
                    await ws.recv()
                    stopping = threading.Thread(target=served.stop)
                    stopping.start()
                    with pytest.raises(ConnectionClosed):
                        await ws.recv()
                    code = ws.close_code
                await asyncio.to_thread(stopping.join, 10)
                return code

            assert asyncio.run(talk()) == 1012
        finally:
            served.stop()
        assert app.at_shutdown == (0, 0)
        assert upstream.closed.wait(5)
        assert upstream.closed_with == [1012]
        assert in_flight(app.pool) == 0
