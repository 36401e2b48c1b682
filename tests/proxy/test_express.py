"""The front end's express lane (``clientlb._proxy._express``): plain requests go
through it, everything else reaches ``ProxyApp``, and each hand-over keeps the
app's rules (retries, streaming, timeouts, cancellation, shutdown).

Each test counts how requests reached the app: ``handle_http`` (the app from
the start) and ``resume`` (handed over by the lane, with what it had settled).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from clientlb import Metrics, RetryPolicy, StickyCookie
from clientlb._proxy import ProxyApp

from ..replicas import Replica
from ..waiting import wait_for
from .conftest import in_flight
from .fronts import FrontServed
from .hostile import Hostile
from .servers import raw_request, split_response

pytestmark = pytest.mark.integration

TIMEOUT = httpx.Timeout(connect=2.0, read=0.5, write=2.0, pool=2.0)


class Counted:
    """How requests reached ``app``: from the start, or handed over by the lane
    (with the kind of first attempt it had settled: None, "error" or "answer")."""

    def __init__(self, app: ProxyApp) -> None:
        self.from_start = 0
        self.handed: list[str | None] = []
        handle, resume = app.handle_http, app.resume

        async def counting_handle(*args: Any) -> None:
            self.from_start += 1
            await handle(*args)

        async def counting_resume(*args: Any) -> None:
            settled = args[-1]
            self.handed.append(
                None if settled is None else "error" if settled[1] is not None else "answer"
            )
            await resume(*args)

        app.handle_http = counting_handle  # type: ignore[method-assign]
        app.resume = counting_resume  # type: ignore[method-assign]


@contextmanager
def lane(upstreams: list[str], **options: Any) -> Iterator[tuple[ProxyApp, Counted, str]]:
    options.setdefault("timeout", TIMEOUT)
    app = ProxyApp(upstreams, **options)
    counted = Counted(app)
    with FrontServed(app) as front:
        yield app, counted, front.url
    wait_for(lambda: in_flight(app.pool) == 0)


def test_plain_gets_take_the_lane_after_the_first_connection() -> None:
    metrics = Metrics()
    with (
        Replica("a") as a,
        lane([a.url], decision_header="X-Upstream", metrics=metrics) as (app, counted, url),
        httpx.Client(base_url=url) as client,
    ):
        answers = [client.get(f"/n{n}?q={n}", headers={"X-Mine": str(n)}) for n in range(20)]
        heads = [client.head("/h") for _ in range(3)]
    assert [r.status_code for r in answers + heads] == [200] * 23
    # Only the first request found no idle upstream connection: the app connected.
    assert counted.handed == [None] and counted.from_start == 0
    for n, r in enumerate(answers):
        seen = r.json()
        assert seen["path"] == f"/n{n}" and seen["query"] == f"q={n}"
        assert r.headers["x-upstream"].startswith(f"upstream={a.url};")
    for n, seen in enumerate(a.requests[:20]):
        headers = dict(seen["headers"])
        assert headers["x-mine"] == str(n)
        assert headers["host"] == f"127.0.0.1:{a.port}"
        assert headers["x-forwarded-for"] == "127.0.0.1"
    assert [r.content for r in heads] == [b""] * 3
    assert all("content-length" in r.headers for r in heads)
    assert 'clientlb_requests_total{pool="default"} 23' in metrics.render()
    assert app.pool.snapshot()["upstreams"][0]["requests"] == 23


@pytest.mark.parametrize(
    ("options", "request_kwargs"),
    [
        ({}, {"method": "POST", "content": b"body"}),
        ({"access_log": True}, {"method": "GET"}),
        ({"sticky": StickyCookie()}, {"method": "GET"}),
        ({"hash_on": "header:x-user", "algorithm": "ip_hash"}, {"method": "GET"}),
        ({"retry": RetryPolicy(timeout=30.0)}, {"method": "GET"}),
        ({"retry": RetryPolicy(hedge_after=5.0)}, {"method": "GET"}),
    ],
)
def test_what_the_lane_does_not_take_reaches_the_app(
    options: dict[str, Any], request_kwargs: dict[str, Any]
) -> None:
    with (
        Replica("a") as a,
        lane([a.url], **options) as (_, counted, url),
        httpx.Client(base_url=url) as client,
    ):
        method = request_kwargs.pop("method")
        answers = [client.request(method, "/x", **request_kwargs) for _ in range(3)]
    assert [r.status_code for r in answers] == [200] * 3
    assert counted.from_start == 3 and counted.handed == []


def test_a_get_that_failed_in_the_lane_is_retried_by_the_app_elsewhere() -> None:
    with (
        Hostile("reset", bad=10, clean_first=1) as bad,
        Replica("good") as good,
        lane([bad.url, good.url], algorithm="round_robin") as (_, counted, url),
        httpx.Client(base_url=url) as client,
    ):
        answers = [client.get(f"/{n}") for n in range(8)]
    assert [r.status_code for r in answers] == [200] * 8
    assert "error" in counted.handed  # reset on a reused connection: failed in the lane
    at_bad = [r["path"].decode() for r in bad.requests]
    at_good = [r["path"] for r in good.requests]
    assert set(at_bad) | set(at_good) == {f"/{n}" for n in range(8)}
    assert len(set(at_good)) == len(at_good)  # never twice at one upstream


def test_a_status_the_plan_retries_is_retried_by_the_app() -> None:
    with (
        Replica("sick", status=503) as sick,
        Replica("good") as good,
        lane([sick.url, good.url], algorithm="round_robin", outlier=None) as (_, counted, url),
        httpx.Client(base_url=url) as client,
    ):
        answers = [client.get(f"/{n}") for n in range(8)]
    assert [r.status_code for r in answers] == [200] * 8
    assert "answer" in counted.handed  # the 503 arrived in the lane, the app retried
    assert sick.count() >= 2 and good.count() == 8


def test_a_body_still_on_its_way_is_streamed_by_the_app() -> None:
    with (
        Replica("a") as a,
        lane([a.url]) as (_, counted, url),
        httpx.Client(base_url=url, timeout=10) as client,
    ):
        assert client.get("/warm").status_code == 200  # an idle connection for the lane
        threading.Timer(0.2, a.release.set).start()
        with client.stream("GET", "/stream?chunks=3") as r:
            parts = list(r.iter_raw())
    assert r.status_code == 200
    assert len(parts) >= 2 and b"".join(parts) == b"chunk\nchunk\nend\n"
    assert counted.handed == [None, "answer"]


def test_a_client_that_leaves_frees_the_upstream_slot() -> None:
    with (
        Hostile("hang", bad=10, clean_first=1) as up,
        lane([up.url], timeout=httpx.Timeout(5.0)) as (app, counted, url),
    ):
        port = int(url.rsplit(":", 1)[1])
        warm = b"GET /warm HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        assert split_response(raw_request(port, warm))[0] == 200
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(b"GET /left HTTP/1.1\r\nHost: x\r\n\r\n")
            wait_for(lambda: up.count() == 2)
            assert in_flight(app.pool) == 1
        # Freed when the client left, well before the 5 s read timeout would.
        wait_for(lambda: in_flight(app.pool) == 0, "the slot freed", timeout=2.0)
        assert counted.handed == [None]  # the lane held it until the client left
        assert app.pool.snapshot()["upstreams"][0]["state"] == "healthy"


def test_an_upstream_that_never_answers_in_the_lane_is_504() -> None:
    with (
        Hostile("hang", bad=10, clean_first=1) as up,
        lane([up.url]) as (_, counted, url),
        httpx.Client(base_url=url, timeout=10) as client,
    ):
        assert client.get("/warm").status_code == 200
        started = time.monotonic()
        r = client.get("/hang")
        elapsed = time.monotonic() - started
    assert r.status_code == 504 and r.content.startswith(b"504")
    assert TIMEOUT.read is not None and elapsed >= TIMEOUT.read
    assert counted.handed[:2] == [None, "error"]


def test_pipelined_requests_in_the_lane_are_answered_in_order() -> None:
    with Replica("a") as a, lane([a.url]) as (_, counted, url):
        port = int(url.rsplit(":", 1)[1])
        raw_request(port, b"GET /warm HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        paths = [f"/p{n}" for n in range(5)]
        batch = b"".join(f"GET {p} HTTP/1.1\r\nHost: x\r\n\r\n".encode() for p in paths)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(batch + b"GET /last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            raw = b""
            while chunk := sock.recv(65536):
                raw += chunk
    bodies = [part for part in raw.split(b"HTTP/1.1 200 OK")[1:]]
    assert len(bodies) == 6
    for path, body in zip([*paths, "/last"], bodies, strict=True):
        assert f'"path": "{path}"'.encode() in body or f'"path":"{path}"'.encode() in body
    assert counted.from_start == 0


def test_shutdown_answers_a_request_still_in_the_lane_503() -> None:
    up = Hostile("hang", bad=10, clean_first=1)
    with up:
        app = ProxyApp([up.url], timeout=httpx.Timeout(30.0))
        front = FrontServed(app).start()
        stopper = threading.Thread(target=front.stop)
        try:
            raw_request(front.port, b"GET /warm HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            with socket.create_connection(("127.0.0.1", front.port), timeout=10) as sock:
                sock.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
                wait_for(lambda: up.count() == 2)
                stopper.start()  # grace of 1 s, then the unanswered request gets 503
                raw = b""
                while chunk := sock.recv(65536):
                    raw += chunk
                stopper.join(10)
        finally:
            if not stopper.is_alive() and stopper.ident is None:
                front.stop()
    assert split_response(raw)[0] == 503
    assert in_flight(app.pool) == 0


def test_taking_a_whole_body_at_once_resumes_a_paused_connection() -> None:
    """The lane takes a body whole: a connection paused for holding too much
    must read again before it goes back to the idle list."""
    import asyncio

    from clientlb._proxy._engines import AsyncioEngine
    from clientlb._proxy._engines._asyncio import _Conn

    class Transport:
        paused = True

        def resume_reading(self) -> None:
            self.paused = False

    loop = asyncio.new_event_loop()
    try:
        engine = AsyncioEngine()
        conn = _Conn(engine._table.of("k"), engine, loop)
        transport = Transport()
        conn.transport = transport  # type: ignore[assignment]
        conn.chunks.extend([b"ab", b"cd"])
        conn.buffered, conn.reading_paused = 4, True
        assert conn.take_all() == b"abcd"
        assert not transport.paused and not conn.reading_paused and conn.buffered == 0
        assert conn.take_all() == b""
    finally:
        loop.close()


def test_a_path_that_leaves_the_prefix_is_refused_by_the_app_not_sent() -> None:
    with (
        Replica("a") as a,
        lane([a.url + "/api"]) as (_, counted, url),
        httpx.Client(base_url=url) as client,
    ):
        assert client.get("/warm").status_code == 200
        refused = client.get("/%2e%2e/secret")
        after = client.get("/after")
    assert refused.status_code == 400 and refused.content.startswith(b"400")
    assert after.status_code == 200 and after.json()["path"] == "/api/after"
    assert [r["path"] for r in a.requests] == ["/api/warm", "/api/after"]
    assert counted.handed == [None, None] and counted.from_start == 0
