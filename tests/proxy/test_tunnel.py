"""WebSockets through ``clientlb proxy``'s front end: relayed as bytes after a
checked 101, with the proxy acting as a WebSocket party only where it must
(pings, size limits, framing errors, shutdown)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from clientlb import Metrics, OutlierDetection, ProxyApp, WebSocketSettings

from ..waiting import wait_for
from .conftest import in_flight
from .fronts import FrontServed
from .servers import Served
from .test_websocket import EchoUpstream
from .ws_upstreams import FAILURES, WsUpstream

pytestmark = pytest.mark.integration

FAST_PINGS = WebSocketSettings(ping_interval=0.2, ping_timeout=0.3, close_timeout=0.5)


@contextlib.contextmanager
def tunnelled(upstream: str, settings: WebSocketSettings) -> Iterator[tuple[ProxyApp, str]]:
    """``ProxyApp`` behind the front end: the app and its ws:// URL."""
    app = ProxyApp([upstream], websockets=settings)
    with FrontServed(app) as front:
        yield app, f"ws://127.0.0.1:{front.port}/chat"
        wait_for(lambda: in_flight(app.pool) == 0 and app.open_websockets == 0)


class FrozenUpstream:
    """A raw upstream that completes the handshake, then never reads or writes."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = self.sock.accept()
                self.conns.append(conn)
                data = b""
                while b"\r\n\r\n" not in data:
                    data += conn.recv(65536)
                key = next(
                    line.split(b":", 1)[1].strip()
                    for line in data.split(b"\r\n")
                    if line.lower().startswith(b"sec-websocket-key:")
                )
                guid = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
                accept = base64.b64encode(hashlib.sha1(key + guid).digest())
                conn.sendall(
                    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                    b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
                )

    def close(self) -> None:
        self.sock.close()
        for conn in self.conns:
            conn.close()


def test_pings_keep_a_quiet_websocket_open() -> None:
    with Served(EchoUpstream("a")) as up, tunnelled(up.url, FAST_PINGS) as (_, url):

        async def quiet() -> str:
            async with connect(url, ping_interval=None) as ws:
                await ws.recv()
                await asyncio.sleep(1.2)  # several ping rounds of the proxy's
                await ws.send("still here")
                return str(await ws.recv())

        assert asyncio.run(quiet()) == "still here"


def test_a_frozen_upstream_is_closed_with_1011_within_the_ping_timeout() -> None:
    frozen = FrozenUpstream()
    try:
        with tunnelled(frozen.url, FAST_PINGS) as (_, url):

            async def wait_for_close() -> tuple[int | None, float]:
                async with connect(url, ping_interval=None) as ws:
                    started = time.monotonic()
                    with pytest.raises(ConnectionClosed):
                        await asyncio.wait_for(ws.recv(), 5)
                    return ws.close_code, time.monotonic() - started

            code, elapsed = asyncio.run(wait_for_close())
    finally:
        frozen.close()
    assert code == 1011
    assert elapsed < 2 * (FAST_PINGS.ping_interval + FAST_PINGS.ping_timeout)


def test_a_client_that_stops_answering_is_closed_with_1001_upstream() -> None:
    echo = EchoUpstream("a")
    with Served(echo) as up, tunnelled(up.url, FAST_PINGS) as (_, url):
        port = int(url.split(":")[2].split("/")[0])
        key = base64.b64encode(b"0123456789abcdef")
        with socket.create_connection(("127.0.0.1", port)) as client:
            client.sendall(
                b"GET /chat HTTP/1.1\r\nHost: front\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Key: " + key + b"\r\n"
                b"Sec-WebSocket-Version: 13\r\n\r\n"
            )
            assert client.recv(4096).startswith(b"HTTP/1.1 101")
            # then never reads nor answers a ping
            assert echo.closed.wait(3)
        assert echo.closed_with == [1001]


def test_a_message_over_the_limit_closes_both_legs_with_1009() -> None:
    echo = EchoUpstream("a")
    settings = WebSocketSettings(max_message=1000)
    with Served(echo) as up, tunnelled(up.url, settings) as (_, url):

        async def too_big() -> int | None:
            async with connect(url, compression=None) as ws:
                await ws.recv()
                await ws.send("x" * 2000)
                with pytest.raises(ConnectionClosed):
                    await asyncio.wait_for(ws.recv(), 5)
                return ws.close_code

        assert asyncio.run(too_big()) == 1009
        assert echo.closed.wait(3)
    assert echo.closed_with == [1009]


@pytest.mark.parametrize("deflate", [True, False])
def test_compression_is_negotiated_end_to_end_unless_refused(deflate: bool) -> None:
    settings = WebSocketSettings(deflate=deflate)
    with Served(EchoUpstream("a")) as up, tunnelled(up.url, settings) as (_, url):

        async def chat() -> tuple[str, str]:
            async with connect(url, compression="deflate") as ws:
                await ws.recv()
                await ws.send("z" * 50_000)
                echoed = str(await ws.recv())
                return echoed, ws.response.headers.get("Sec-WebSocket-Extensions", "")

        echoed, extensions = asyncio.run(chat())
    assert echoed == "z" * 50_000
    assert ("permessage-deflate" in extensions) is deflate


def test_websockets_beyond_max_open_are_503() -> None:
    settings = WebSocketSettings(max_open=1)
    with Served(EchoUpstream("a")) as up, tunnelled(up.url, settings) as (_, url):

        async def two() -> int:
            async with connect(url) as first:
                await first.recv()
                with pytest.raises(InvalidStatus) as refused:
                    async with connect(url):
                        pass
            async with connect(url) as again:  # room again once the first closed
                assert str(await again.recv()).startswith("hello")
            return refused.value.response.status_code

        assert asyncio.run(two()) == 503


@pytest.mark.parametrize("server", [FrontServed, Served], ids=["front-end", "uvicorn"])
def test_the_websockets_relayed_now_are_a_gauge(server: Any) -> None:
    """``clientlb_proxy_websockets`` counts the open ones, by either path."""
    metrics = Metrics()
    with Served(EchoUpstream("a")) as up:
        app = ProxyApp([up.url], websockets=FAST_PINGS, metrics=metrics)
        with server(app) as front:
            url = f"ws://127.0.0.1:{front.port}/chat"

            async def two_then_one() -> list[float]:
                seen = []
                async with connect(url) as first:
                    await first.recv()
                    async with connect(url) as second:
                        await second.recv()
                        seen.append(gauge(metrics))
                    # the proxy lets the second go once both its legs closed
                    wait_for(lambda: gauge(metrics) == 1.0)
                    await first.send("still here")
                    assert str(await first.recv()) == "still here"
                    seen.append(gauge(metrics))
                return seen

            assert asyncio.run(two_then_one()) == [2.0, 1.0]
            wait_for(lambda: app.open_websockets == 0)
            assert gauge(metrics) == 0.0
            assert metrics.gauges()["websockets"] == 0


def gauge(metrics: Metrics) -> float:
    """The value of ``clientlb_proxy_websockets{pool="default"}`` in the text."""
    for line in metrics.render().splitlines():
        if line.startswith('clientlb_proxy_websockets{pool="default"} '):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError("no clientlb_proxy_websockets sample")


def test_shutdown_says_going_away_to_both_ends() -> None:
    echo = EchoUpstream("a")
    with Served(echo) as up:
        app = ProxyApp([up.url], websockets=FAST_PINGS)
        front = FrontServed(app).start()
        url = f"ws://127.0.0.1:{front.port}/chat"
        codes: list[int | None] = []
        opened = threading.Event()

        async def hold() -> None:
            async with connect(url) as ws:
                await ws.recv()
                opened.set()
                with contextlib.suppress(ConnectionClosed):
                    await asyncio.wait_for(ws.recv(), 5)
                codes.append(ws.close_code)

        client = threading.Thread(target=asyncio.run, args=(hold(),))
        client.start()
        assert opened.wait(5)
        front.stop()
        client.join(5)
        assert echo.closed.wait(3)
    assert codes == [1001]
    assert echo.closed_with == [1001]


def test_a_client_gone_while_the_upstream_stalls_is_let_go_at_once() -> None:
    """The upstream reads nothing (its buffers fill, the proxy's writes back up);
    the client leaves: lease, sockets and the WebSocket slot are released
    within 2 s, not after a ping round."""
    frozen = FrozenUpstream()
    settings = WebSocketSettings(ping_interval=60, ping_timeout=60)
    try:
        with tunnelled(frozen.url, settings) as (app, url):

            async def push_then_leave() -> None:
                async with connect(url, ping_interval=None, compression=None) as ws:
                    for _ in range(64):  # 4 MiB towards an upstream that reads nothing
                        with contextlib.suppress(asyncio.TimeoutError):
                            await asyncio.wait_for(ws.send(b"x" * 65536), 0.05)
                    assert app.open_websockets == 1
                    ws.transport.abort()  # gone, without a goodbye

            asyncio.run(push_then_leave())
            started = time.monotonic()
            wait_for(lambda: app.open_websockets == 0, timeout=2.0)
            assert time.monotonic() - started < 2.0
    finally:
        frozen.close()


QUICK = httpx.Timeout(connect=2.0, read=0.3, write=2.0, pool=2.0)
EJECT_AFTER_TWO = OutlierDetection(consecutive_local_failures=2, consecutive_gateway_errors=2)


def upstream_state(app: ProxyApp, url: str) -> dict[str, Any]:
    return next(u for u in app.pool.snapshot()["upstreams"] if u["url"] == url)


@pytest.mark.parametrize("mode", sorted(FAILURES))
def test_a_failing_upstream_beside_a_good_one_is_retried_then_ejected(mode: str) -> None:
    with WsUpstream(mode) as bad, Served(EchoUpstream("good")) as up:
        app = ProxyApp([bad.url, up.url], timeout=QUICK, outlier=EJECT_AFTER_TWO)
        with FrontServed(app) as front:

            async def greetings() -> list[str]:
                heard = []
                for _ in range(8):
                    async with connect(f"ws://127.0.0.1:{front.port}/chat") as ws:
                        heard.append(str(await ws.recv()))
                    if upstream_state(app, bad.url)["state"] == "ejected":
                        break
                return heard

            heard = asyncio.run(greetings())
            assert heard and all(h == "hello from good /chat" for h in heard)
            assert upstream_state(app, bad.url)["state"] == "ejected"
            assert upstream_state(app, bad.url)["failures"] >= 2
            wait_for(lambda: in_flight(app.pool) == 0 and app.open_websockets == 0)


@pytest.mark.parametrize(("mode", "status"), sorted(FAILURES.items()))
def test_a_failing_upstream_alone_answers_a_gateway_status(mode: str, status: int) -> None:
    with WsUpstream(mode) as bad:
        app = ProxyApp([bad.url], timeout=QUICK)
        with FrontServed(app) as front:

            async def refused() -> int:
                with pytest.raises(InvalidStatus) as info:
                    async with connect(f"ws://127.0.0.1:{front.port}/chat"):
                        pass
                return info.value.response.status_code

            assert asyncio.run(refused()) == status
            wait_for(lambda: in_flight(app.pool) == 0)
