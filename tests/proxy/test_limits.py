"""Per-upstream connection limits through the proxies, against a real replica
that holds its requests (``/stream`` waits for ``replica.release``): a request
that finds every upstream full is answered 503 at once, or waits for a slot
within ``max_pending``; the counts return to zero."""

from __future__ import annotations

import io
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from clientlb import Upstream, WSGIProxy
from clientlb._proxy import ProxyApp

from ..replicas import Replica
from ..waiting import wait_for
from .conftest import in_flight
from .servers import Served

pytestmark = pytest.mark.integration

StartProxy = Callable[..., tuple[ProxyApp, Served]]


@pytest.fixture
def replica() -> Iterator[Replica]:
    with Replica("held") as started:
        yield started


def test_asgi_answers_503_when_every_upstream_is_full(proxy: StartProxy, replica: Replica) -> None:
    app, served = proxy([Upstream(replica.url, max_connections=2)])
    with httpx.Client(base_url=served.url) as client:
        held = [client.send(client.build_request("GET", "/stream"), stream=True) for _ in range(2)]
        refused = client.get("/")
        assert refused.status_code == 503
        assert b"connection limit" in refused.content
        assert replica.count(path="/") == 0 and replica.count(path="/stream") == 2
        snapshot = app.snapshot()
        assert (snapshot["pending"], snapshot["rejected"]) == (0, 1)
        assert snapshot["upstreams"][0]["failures"] == 0
        for response in held:
            response.close()
        wait_for(lambda: in_flight(app.pool) == 0, "the held requests to end")
        assert client.get("/").status_code == 200


def test_asgi_request_waits_for_a_slot(proxy: StartProxy, replica: Replica) -> None:
    app, served = proxy([replica.url], max_connections=1, max_pending=1)
    with httpx.Client(base_url=served.url) as client, ThreadPoolExecutor(1) as pool:
        held = client.send(client.build_request("GET", "/stream"), stream=True)
        waited = pool.submit(client.get, "/waited")
        wait_for(lambda: app.snapshot()["pending"] == 1, "the request to wait")
        assert client.get("/").status_code == 503  # no room left to wait
        held.close()
        assert waited.result(10).status_code == 200
        assert app.snapshot()["pending"] == 0
    wait_for(lambda: in_flight(app.pool) == 0, "the requests to end")
    assert replica.count(path="/waited") == 1


def environ(path: str) -> dict[str, Any]:
    return {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "front",
        "SERVER_PORT": "80",
        "REMOTE_ADDR": "192.0.2.9",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(b""),
        "HTTP_HOST": "front.example",
    }


def call(app: WSGIProxy, path: str) -> tuple[str, Any]:
    """Call the WSGI app: its status line and its (unread) body."""
    status: list[str] = []
    body = app(environ(path), lambda s, headers, exc_info=None: status.append(s))
    return status[0], body


def test_wsgi_fails_fast_then_waits(replica: Replica) -> None:
    app = WSGIProxy([replica.url], max_connections=1, max_pending=1)
    try:
        status, held = call(app, "/stream")
        assert status.startswith("200")
        with ThreadPoolExecutor(1) as pool:
            waited = pool.submit(call, app, "/waited")
            wait_for(lambda: app.snapshot()["pending"] == 1, "the request to wait")
            status, body = call(app, "/")
            assert status.startswith("503") and b"connection limit" in b"".join(body)
            held.close()
            status, body = waited.result(10)
            assert status.startswith("200")
            body.close()
        snapshot = app.snapshot()
        assert (snapshot["pending"], snapshot["rejected"]) == (0, 1)
        assert in_flight(app.pool) == 0
    finally:
        replica.release.set()
        app.close()


def test_one_pool_limit_for_threads_and_loops(replica: Replica) -> None:
    """The limit holds across the threads of a WSGI server: many callers at once
    never put more than ``max_connections`` requests in flight."""
    app = WSGIProxy([replica.url], max_connections=3, max_pending=64)
    peak = 0
    lock = threading.Lock()

    def one(i: int) -> str:
        nonlocal peak
        status, body = call(app, f"/n{i}")
        with lock:
            peak = max(peak, in_flight(app.pool))
        b"".join(body)
        body.close()
        return status

    try:
        with ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(one, range(40)))
        assert all(s.startswith("200") for s in statuses), statuses
        assert peak <= 3
        assert in_flight(app.pool) == 0 and app.snapshot()["pending"] == 0
    finally:
        app.close()


def test_a_subset_proxy_forwards_to_its_subset_only(proxy: StartProxy) -> None:
    from clientlb import Subset

    with Replica("a") as a, Replica("b") as b:
        subset = Subset(1, 1, 2)
        (mine,) = subset.choose([Upstream(a.url), Upstream(b.url)])
        app, served = proxy([a.url, b.url], subset=subset)
        with httpx.Client(base_url=served.url) as client:
            for _ in range(4):
                assert client.get("/").status_code == 200
        assert {a.url: a.count(), b.url: b.count()} == {
            a.url: 4 if mine.url == a.url else 0,
            b.url: 4 if mine.url == b.url else 0,
        }
        assert app.pool.subset == subset
