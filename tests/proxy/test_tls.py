"""HTTPS and WSS upstreams: ``verify=`` for requests, health checks and WebSockets,
against real uvicorn upstreams serving a certificate from a test CA."""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect

from clientlb import ConfigError, HealthCheck, Pool
from clientlb._core import Health, Upstream
from clientlb._proxy import ProxyApp, WSGIProxy
from clientlb._proxy._config import build
from clientlb._proxy._engines import AnyioEngine, AsyncioEngine, Timeouts

from ..certs import Certs
from ..waiting import wait_for
from .conftest import in_flight
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
    wait_for(lambda: in_flight(app.pool) == 0)


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
    wait_for(lambda: in_flight(app.pool) == 0)


def test_httpcore_engine_takes_the_context(
    https_upstream: tuple[Named, Served], certs: Certs
) -> None:
    _, up = https_upstream
    engine = AnyioEngine(certs.context())
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
    check = HealthCheck(path="/health", interval=0.03, timeout=1.0, rise=1, fall=1)
    pool = Pool([up.url], health_check=check)
    proxy = WSGIProxy(pool=pool, verify=certs.ca_file if trusted else True)
    try:
        if trusted:
            wait_for(lambda: hello.paths.count("/health") >= 3)
            assert pool.members[0].health is Health.HEALTHY
        else:
            wait_for(lambda: pool.members[0].health is Health.DOWN)
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
        wait_for(lambda: in_flight(app.pool) == 0)


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


class SilentAfterAnswer:
    """A TLS server that answers one request, then neither reads nor closes: it
    never answers the client's TLS goodbye (close_notify)."""

    def __init__(self, certs: Certs) -> None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(*certs.tls)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.release = threading.Event()
        self.thread = threading.Thread(target=self._serve, args=(context,), daemon=True)
        self.thread.start()

    def _serve(self, context: ssl.SSLContext) -> None:
        conn, _ = self.listener.accept()
        with context.wrap_socket(conn, server_side=True) as tls:
            head = b""
            while b"\r\n\r\n" not in head:
                head += tls.recv(4096)
            tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            self.release.wait(30)

    def close(self) -> None:
        self.release.set()
        self.thread.join(10)
        self.listener.close()


def test_engine_close_does_not_wait_long_for_a_silent_tls_peer(
    certs: Certs, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("clientlb._proxy._engines._asyncio.CLOSE_TIMEOUT", 0.2)
    server = SilentAfterAnswer(certs)
    try:

        async def exchange() -> tuple[bytes, float, bool]:
            engine = AsyncioEngine(certs.context())
            upstream = Upstream(f"https://127.0.0.1:{server.port}")
            response = await engine.request(
                upstream, b"GET", b"/", [(b"host", b"127.0.0.1")], b"", Timeouts()
            )
            body = await response.read()
            await response.aclose()
            (conn,) = engine._all
            started = time.monotonic()
            await engine.aclose()  # asyncio alone would wait 30 s for the goodbye
            return body, time.monotonic() - started, conn.lost.done()

        body, waited, lost = asyncio.run(exchange())
    finally:
        server.close()
    assert body == b"ok"
    assert lost  # the socket is released, not left for the garbage collector
    assert waited < 10
