"""WebSocket upgrades through the ASGI proxy, against a real upstream."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.typing import Subprotocol

from clientlb import Pool, StickyCookie
from clientlb._proxy import ProxyApp

from ..waiting import wait_for
from .conftest import in_flight
from .servers import Served

pytestmark = pytest.mark.integration

Start = Callable[..., tuple[ProxyApp, Served]]


class EchoUpstream:
    """Echoes messages; ``close N reason`` closes with that code; records the
    code the client closed with."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.closed_with: list[int] = []
        self.closed = threading.Event()
        self.headers: list[tuple[bytes, bytes]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        assert scope["type"] == "websocket"
        self.headers = scope["headers"]
        await receive()  # websocket.connect
        protocols = scope.get("subprotocols") or []
        await send({"type": "websocket.accept", "subprotocol": protocols[0] if protocols else None})
        await send({"type": "websocket.send", "text": f"hello from {self.name} {scope['path']}"})
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                self.closed_with.append(message.get("code", 0))
                self.closed.set()
                return
            text = message.get("text")
            if text and text.startswith("close "):
                _, code, reason = text.split(" ", 2)
                await send({"type": "websocket.close", "code": int(code), "reason": reason})
                return
            if text is not None:
                await send({"type": "websocket.send", "text": text})
            else:
                await send({"type": "websocket.send", "bytes": message["bytes"]})


def ws_url(served: Served, path: str = "/chat") -> str:
    return f"ws://127.0.0.1:{served.port}{path}"


def test_messages_are_relayed_both_ways(proxy: Start) -> None:
    upstream = EchoUpstream("a")
    with Served(upstream) as up:
        app, served = proxy([up.url + "/base"])

        async def talk() -> None:
            async with connect(
                ws_url(served, "/chat?room=1"), subprotocols=[Subprotocol("chat.v2")]
            ) as ws:
                assert ws.subprotocol == "chat.v2"
                assert await ws.recv() == "hello from a /base/chat"
                await ws.send("text")
                assert await ws.recv() == "text"
                await ws.send(b"\x00\x01binary")
                assert await ws.recv() == b"\x00\x01binary"
                assert in_flight(app.pool) == 1

        asyncio.run(talk())
        assert upstream.closed.wait(5)
        assert upstream.closed_with == [1000]
    names = {k for k, _ in upstream.headers}
    assert b"x-forwarded-for" in names


def test_close_codes_are_propagated(proxy: Start) -> None:
    upstream = EchoUpstream("a")
    with Served(upstream) as up:
        app, served = proxy([up.url])

        async def upstream_closes() -> None:
            async with connect(ws_url(served)) as ws:
                await ws.recv()
                await ws.send("close 4001 going away now")
                with pytest.raises(ConnectionClosed):
                    await ws.recv()
                assert ws.close_code == 4001
                assert ws.close_reason == "going away now"

        async def client_closes() -> None:
            async with connect(ws_url(served)) as ws:
                await ws.recv()
                await ws.close(4002, "client done")

        asyncio.run(upstream_closes())
        upstream.closed.clear()
        asyncio.run(client_closes())
        assert upstream.closed.wait(5)
        assert upstream.closed_with[-1] == 4002
    wait_for(lambda: in_flight(app.pool) == 0)


def test_websockets_are_balanced(proxy: Start) -> None:
    ups = [EchoUpstream("a"), EchoUpstream("b")]
    with Served(ups[0]) as a, Served(ups[1]) as b:
        _, served = proxy([a.url, b.url], algorithm="round_robin")

        async def greetings() -> set[str]:
            seen = set()
            for _ in range(4):
                async with connect(ws_url(served)) as ws:
                    seen.add(str(await ws.recv()).split()[2])
            return seen

        assert asyncio.run(greetings()) == {"a", "b"}


def test_no_upstream_refuses_the_handshake(proxy: Start) -> None:
    _, served = proxy(pool=Pool([], allow_empty=True))

    async def attempt() -> None:
        with pytest.raises(InvalidStatus) as info:
            async with connect(ws_url(served)):
                pass
        assert info.value.response.status_code in (503, 403)

    asyncio.run(attempt())


@pytest.mark.parametrize("preserve_host", [False, True])
def test_websocket_host_follows_preserve_host(proxy: Start, preserve_host: bool) -> None:
    upstream = EchoUpstream("a")
    with Served(upstream) as up:
        _, served = proxy([up.url], preserve_host=preserve_host)

        async def talk() -> None:
            async with connect(ws_url(served)) as ws:
                await ws.recv()

        asyncio.run(talk())
        assert upstream.closed.wait(5)
    hosts = [v.decode() for k, v in upstream.headers if k == b"host"]
    expected = served.port if preserve_host else up.port
    assert hosts == [f"127.0.0.1:{expected}"]


@pytest.mark.parametrize(
    "host",
    [b"bad@host:1:2", b"example.com/admin?", b"u:p@example.com", b"example.com:99999", b"a#b"],
)
def test_websocket_with_an_unusable_host_is_refused(proxy: Start, host: bytes) -> None:
    """A kept Host becomes the authority of the upstream URI: anything but
    host[:port] could move the path or add credentials, so it is refused."""
    upstream = EchoUpstream("a")
    with Served(upstream) as up:
        _, served = proxy([up.url + "/app"], preserve_host=True)
        handshake = (
            b"GET /chat HTTP/1.1\r\nHost: " + host + b"\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            b"Sec-WebSocket-Version: 13\r\n\r\n"
        )
        with socket.create_connection(("127.0.0.1", served.port), timeout=5) as sock:
            sock.sendall(handshake)
            head = sock.recv(4096)
    assert head.startswith(b"HTTP/1.1 400"), head
    assert upstream.headers == []


def test_a_sticky_websocket_is_pinned_by_its_handshake(proxy: Start) -> None:
    ups = [EchoUpstream("a"), EchoUpstream("b")]
    with Served(ups[0]) as a, Served(ups[1]) as b:
        _, served = proxy([a.url, b.url], sticky=StickyCookie())

        async def talk(cookie: str | None) -> tuple[str, str | None]:
            headers = {"cookie": f"clientlb={cookie}"} if cookie else None
            async with connect(ws_url(served), additional_headers=headers) as ws:
                hello = str(await ws.recv())
                assert ws.response is not None
                set_cookie = ws.response.headers.get("set-cookie")
            return hello, set_cookie

        hello, set_cookie = asyncio.run(talk(None))
        assert set_cookie is not None and "HttpOnly" in set_cookie
        token = set_cookie.split(";")[0].partition("=")[2]
        for _ in range(4):  # round robin would alternate; the pin holds
            again, none = asyncio.run(talk(token))
            assert (again, none) == (hello, None)
