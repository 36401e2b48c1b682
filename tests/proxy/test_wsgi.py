"""The WSGI twin: the same rules over the sync engine, in a threaded server."""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterator
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import httpx
import pytest

from clientlb import Pool
from clientlb._proxy import WSGIProxy, WSGIProxyMiddleware
from clientlb._proxy._wsgi import UpstreamAborted

from ..replicas import Replica, closed_port
from ..waiting import wait_for
from .conftest import in_flight
from .servers import Dying, Served, Special

pytestmark = pytest.mark.integration


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass


class _Threaded(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class WSGIServed:
    def __init__(self, app: Any) -> None:
        self.httpd = make_server("127.0.0.1", 0, app, server_class=_Threaded, handler_class=_Quiet)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@pytest.fixture
def wsgi() -> Iterator[Any]:
    started: list[WSGIServed] = []

    def start(app: Any) -> WSGIServed:
        served = WSGIServed(app)
        started.append(served)
        return served

    yield start
    for served in started:
        served.close()


def environ(raw_uri: str, **extra: Any) -> dict[str, Any]:
    path, _, query = raw_uri.partition("?")
    env = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "RAW_URI": raw_uri,
        "SERVER_NAME": "front",
        "SERVER_PORT": "80",
        "REMOTE_ADDR": "192.0.2.9",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(b""),
        "HTTP_HOST": "front.example",
    }
    env.update(extra)
    return env


def call(app: Any, env: dict[str, Any]) -> tuple[str, list[tuple[str, str]], bytes]:
    got: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        got["status"], got["headers"] = status, headers

    result = app(env, start_response)
    try:
        body = b"".join(result)
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    return got["status"], got["headers"], body


def test_raw_path_query_and_headers_follow_the_rules() -> None:
    with Replica("a") as up:
        proxy = WSGIProxy([up.url + "/v2"])
        status, _, _ = call(
            proxy,
            environ(
                "/a%2Fb/%2e%2e/c?k=1&k=2",
                HTTP_CONNECTION="close, X-Private",
                HTTP_X_PRIVATE="1",
                HTTP_X_FORWARDED_FOR="6.6.6.6",
                HTTP_PROXY_AUTHORIZATION="Basic eA==",
            ),
        )
        proxy.close()
        record = up.requests[-1]
    assert status == "200 OK"
    assert record["raw_path"] == "/v2/a%2Fb/%2e%2e/c"
    assert record["query"] == "k=1&k=2"
    headers = dict(record["headers"])
    assert "x-private" not in headers and "proxy-authorization" not in headers
    assert headers["x-forwarded-for"] == "192.0.2.9"
    assert headers["x-forwarded-host"] == "front.example"
    assert headers["host"] == f"127.0.0.1:{up.port}"


def test_served_proxy_streams_and_keeps_repeated_headers(wsgi: Any) -> None:
    special = Special()
    with Served(special) as up:
        proxy = WSGIProxy([up.url], retry_body_limit=1024)
        try:
            served = wsgi(proxy)
            with httpx.Client() as client:
                r = client.get(served.url + "/cookies")
                assert r.headers.get_list("set-cookie") == ["a=1", "b=2"]
                r = client.post(served.url + "/upload", content=b"z" * 300_000)
                assert r.text == "300000"
                r = client.get(served.url + "/download?mib=4")
                assert len(r.content) == 4 * 1024 * 1024
            # The server thread closes the response iterable (which releases the
            # lease) only after the last byte is written, so the client may
            # finish reading first.
            wait_for(lambda: in_flight(proxy.pool) == 0)
        finally:
            proxy.close()


def test_errors_are_plain_statuses() -> None:
    empty = WSGIProxy(pool=Pool([], allow_empty=True))
    status, headers, body = call(empty, environ("/x"))
    assert status.startswith("503") and b"no healthy upstream" in body
    assert ("content-type", "text/plain; charset=utf-8") in headers
    refused = WSGIProxy([closed_port()])
    status, _, body = call(refused, environ("/x"))
    assert status.startswith("502") and b"unreachable" in body
    with Replica("slow", delay=0.5) as up:
        slow = WSGIProxy([up.url], timeout=httpx.Timeout(5.0, read=0.1))
        status, _, _ = call(slow, environ("/x"))
    assert status.startswith("504")
    for proxy in (empty, refused, slow):
        proxy.close()


def test_upstream_dying_mid_body_raises_from_the_iterator() -> None:
    dying = Dying(length=1000, sent=100)
    proxy = WSGIProxy([dying.url])
    try:
        with pytest.raises(UpstreamAborted):
            call(proxy, environ("/x"))
        assert in_flight(proxy.pool) == 0
    finally:
        proxy.close()
        dying.close()


def test_middleware_forwards_only_under_the_prefix() -> None:
    def app(env: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("content-type", "text/plain")])
        return [b"local"]

    with Replica("a") as up:
        middleware = WSGIProxyMiddleware(app, "/api", upstreams=[up.url])
        assert call(middleware, environ("/home"))[2] == b"local"
        assert call(middleware, environ("/apiary"))[2] == b"local"
        _, _, body = call(middleware, environ("/api/users?id=1"))
        middleware.proxy.close()
    record = json.loads(body)
    assert (record["raw_path"], record["query"]) == ("/users", "id=1")
