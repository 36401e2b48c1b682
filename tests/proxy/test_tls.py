"""HTTPS and WSS upstreams: ``verify=`` for requests, health checks and WebSockets,
against real uvicorn upstreams serving a certificate from a test CA."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect

from clientlb import ConfigError, HealthCheck, Pool
from clientlb._core import Health
from clientlb._proxy import ProxyApp, WSGIProxy
from clientlb._proxy._config import build
from clientlb._proxy._engine import HttpcoreEngine

from ..certs import Certs
from .conftest import in_flight, wait_until
from .servers import Named, Served
from .test_websocket import EchoUpstream, ws_url

pytestmark = pytest.mark.integration

Start = Callable[..., tuple[ProxyApp, Served]]


@pytest.fixture
def https_upstream(certs: Certs) -> Iterator[tuple[Named, Served]]:
    app = Named("a")
    with Served(app, tls=certs.tls) as served:
        yield app, served


@pytest.mark.parametrize("verify", ["ca path", "context", "off"])
def test_asgi_proxy_reaches_an_https_upstream(
    proxy: Start, https_upstream: tuple[Named, Served], certs: Certs, verify: str
) -> None:
    _, up = https_upstream
    setting = {"ca path": certs.ca_file, "context": certs.context(), "off": False}[verify]
    app, served = proxy([up.url + "/v1"], verify=setting)
    with httpx.Client() as client:
        for _ in range(3):  # the second and third reuse the kept-alive TLS connection
            r = client.get(served.url + "/x")
            assert (r.status_code, r.text) == (200, "a https /v1/x")
    assert wait_until(lambda: in_flight(app.pool) == 0)


def test_an_untrusted_upstream_certificate_is_a_502(
    proxy: Start, https_upstream: tuple[Named, Served], caplog: pytest.LogCaptureFixture
) -> None:
    hello, up = https_upstream
    app, served = proxy([up.url])  # verify=True: the certifi bundle, without the test CA
    with httpx.Client() as client:
        r = client.get(served.url + "/x")
    assert r.status_code == 502
    assert b"unreachable" in r.content
    assert hello.paths == []
    assert "CERTIFICATE_VERIFY_FAILED" in caplog.text
    assert wait_until(lambda: in_flight(app.pool) == 0)


def test_httpcore_engine_takes_the_context(
    https_upstream: tuple[Named, Served], certs: Certs
) -> None:
    _, up = https_upstream
    engine = HttpcoreEngine(ssl_context=certs.context())
    app = ProxyApp([up.url], engine=engine)

    async def get() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://front") as client:
            response = await client.get("/y")
        await engine.aclose()
        return response

    r = asyncio.run(get())
    assert (r.status_code, r.text) == (200, "a https /y")


def test_wsgi_proxy_verifies_with_the_given_context(
    https_upstream: tuple[Named, Served], certs: Certs
) -> None:
    _, up = https_upstream
    trusted = WSGIProxy([up.url], verify=certs.context())
    untrusted = WSGIProxy([up.url])
    try:
        with httpx.Client(transport=httpx.WSGITransport(app=trusted)) as client:
            r = client.get("http://front/z")
            assert (r.status_code, r.text) == (200, "a https /z")
        with httpx.Client(transport=httpx.WSGITransport(app=untrusted)) as client:
            assert client.get("http://front/z").status_code == 502
    finally:
        trusted.close()
        untrusted.close()


@pytest.mark.parametrize("trusted", [True, False])
def test_health_checks_use_the_same_verification(
    https_upstream: tuple[Named, Served], certs: Certs, trusted: bool
) -> None:
    hello, up = https_upstream
    pool = Pool([up.url])
    check = HealthCheck(path="/health", interval=0.03, timeout=1.0, rise=1, fall=1)
    proxy = WSGIProxy(pool=pool, health_check=check, verify=certs.ca_file if trusted else True)
    try:
        (member,) = pool.members
        if trusted:
            assert wait_until(lambda: hello.paths.count("/health") >= 3)
            assert member.health is Health.HEALTHY
        else:
            assert wait_until(lambda: member.health is Health.DOWN)
            assert hello.paths == []
    finally:
        proxy.close()


def test_websockets_to_a_wss_upstream(proxy: Start, certs: Certs) -> None:
    upstream = EchoUpstream("secure")
    with Served(upstream, tls=certs.tls) as up:
        app, served = proxy([up.url], verify=certs.ca_file)

        async def talk() -> None:
            async with connect(ws_url(served)) as ws:
                assert await ws.recv() == "hello from secure /chat"
                await ws.send("over tls")
                assert await ws.recv() == "over tls"

        asyncio.run(talk())
        assert upstream.closed.wait(5)
        # Stop the upstream only once the relay has closed its side: uvicorn
        # cannot shut down a TLS WebSocket still in its closing handshake.
        assert wait_until(lambda: in_flight(app.pool) == 0)


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


def test_websocket_with_an_unusable_host_is_refused(proxy: Start) -> None:
    upstream = EchoUpstream("a")
    with Served(upstream) as up:
        _, served = proxy([up.url], preserve_host=True)
        handshake = (
            b"GET /chat HTTP/1.1\r\nHost: bad@host:1:2\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            b"Sec-WebSocket-Version: 13\r\n\r\n"
        )
        with socket.create_connection(("127.0.0.1", served.port), timeout=5) as sock:
            sock.sendall(handshake)
            head = sock.recv(4096)
    assert head.startswith(b"HTTP/1.1 400"), head
    assert upstream.headers == []


def test_bad_verify_settings_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="verify"):
        ProxyApp(["http://127.0.0.1:1"], verify=3)  # type: ignore[arg-type]
    missing = str(tmp_path / "missing.pem")
    with pytest.raises(ConfigError, match=r"verify.*cannot load CA certificates"):
        WSGIProxy(["http://127.0.0.1:1"], verify=missing)
    with pytest.raises(ConfigError, match="verify"):
        build({"verify": 1})
    with pytest.raises(ConfigError, match="verify"):
        build({"verify": missing})


def test_config_file_verify_reaches_the_proxy(
    https_upstream: tuple[Named, Served], certs: Certs
) -> None:
    from clientlb._proxy._serve import build_app

    _, up = https_upstream
    settings = build({"upstreams": [up.url], "verify": certs.ca_file})
    assert settings.verify == certs.ca_file
    app = build_app(settings)

    async def get() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://front") as client:
            response = await client.get("/cfg")
        await app.engine.aclose()  # no lifespan here to close it
        return response

    r = asyncio.run(get())
    assert (r.status_code, r.text) == (200, "a https /cfg")
