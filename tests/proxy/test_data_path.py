"""The upstream side of the data path against hostile upstreams, for every engine:
one client's bytes never reach another, nothing is resent, bad framing is 502.

Each test runs with the asyncio engine and the anyio engine (``ProxyApp`` behind
the project's front end) and with the blocking engine (``WSGIProxy`` behind a
threaded WSGI server)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from clientlb import Pool
from clientlb._proxy import ProxyApp, WSGIProxy
from clientlb._proxy._engines import AnyioEngine

from ..replicas import Replica
from ..waiting import wait_for
from .conftest import in_flight
from .fronts import FrontServed
from .hostile import Hostile
from .servers import raw_request, split_response
from .test_wsgi import WSGIServed

pytestmark = pytest.mark.integration

ENGINES = ("asyncio", "anyio", "blocking")
TIMEOUT = httpx.Timeout(connect=2.0, read=0.5, write=2.0, pool=2.0)


@contextlib.contextmanager
def proxy(engine: str, upstreams: list[str], **options: Any) -> Iterator[tuple[Pool, int]]:
    """A proxy over ``upstreams`` with ``engine``: its pool and its port."""
    options.setdefault("timeout", TIMEOUT)
    if engine == "blocking":
        wsgi = WSGIProxy(upstreams, **options)
        served = WSGIServed(wsgi)
        try:
            yield wsgi.pool, served.port
        finally:
            served.close()
            wsgi.close()
        return
    if engine == "anyio":
        options["engine"] = AnyioEngine()
    app = ProxyApp(upstreams, **options)
    with FrontServed(app) as front:
        yield app.pool, front.port


def get(port: int, path: str, *, method: str = "GET", auth: str = "", body: bytes = b"") -> bytes:
    """One request on a connection of its own; the raw response."""
    head = f"{method} {path} HTTP/1.1\r\nHost: front.example\r\nConnection: close\r\n"
    if auth:
        head += f"Authorization: Bearer {auth}\r\n"
    if body or method == "POST":
        head += f"Content-Length: {len(body)}\r\n"
    return raw_request(port, head.encode() + b"\r\n" + body)


def header(raw: bytes, name: str) -> list[str]:
    return [v for k, v in split_response(raw)[1] if k == name]


@pytest.mark.parametrize("engine", ENGINES)
def test_bytes_on_an_idle_connection_never_reach_the_next_client(engine: str) -> None:
    with Hostile("late") as up, proxy(engine, [up.url]) as (pool, port):
        first = get(port, "/a", auth="alice")
        assert split_response(first)[0] == 204
        assert up.poisoned.wait(5)
        answers = [get(port, f"/{name}", auth=name) for name in ("bob", "carol")]
        wait_for(lambda: in_flight(pool) == 0)
    for name, raw in zip(("bob", "carol"), answers, strict=True):
        status, _, body = split_response(raw)
        assert (status, body) == (200, f"clean GET /{name} Bearer {name}".encode())
        assert b"POISON" not in raw and b"alice" not in raw
    assert up.accepted == 2  # the poisoned connection was closed, never reused


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("mode", ["extra-204", "extra-304", "extra-head", "extra-cl"])
def test_bytes_past_a_responses_framing_close_its_connection(engine: str, mode: str) -> None:
    method = "HEAD" if mode == "extra-head" else "GET"
    with Hostile(mode) as up, proxy(engine, [up.url]) as (pool, port):
        first = get(port, "/first", method=method, auth="alice")
        second = get(port, "/second", auth="bob")
        wait_for(lambda: in_flight(pool) == 0)
    status, headers, body = split_response(first)
    assert b"POISON" not in first
    names = [name for name, _ in headers]
    assert names.count("content-length") <= 1
    if mode in ("extra-204", "extra-304"):
        assert status == (204 if mode == "extra-204" else 304)
        assert body == b""
        assert "transfer-encoding" not in names
        # wsgiref, the WSGI server here, adds "Content-Length: 0" to any empty body
        assert header(first, "content-length") == ([] if engine != "blocking" else ["0"])
    elif mode == "extra-head":
        assert (status, body) == (200, b"")
        assert header(first, "content-length") == ["6"]  # what a GET would get
    else:
        assert (status, body) == (200, b"ok")
    assert split_response(second)[2] == b"clean GET /second Bearer bob"
    assert up.accepted == 2


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("mode", ["reset", "close", "hang"])
def test_a_post_that_reached_the_upstream_is_never_resent(engine: str, mode: str) -> None:
    with Hostile(mode, bad=10, clean_first=1) as up, proxy(engine, [up.url]) as (pool, port):
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            assert client.get("/warm").status_code == 200  # a keep-alive connection
            # Its lease ends after its connection is idle again: the POST reuses it
            # (the WSGI server may still be closing the GET's response otherwise).
            wait_for(lambda: in_flight(pool) == 0)
            started = time.monotonic()
            r = client.post("/pay", content=b"amount=100")
            elapsed = time.monotonic() - started
        wait_for(lambda: in_flight(pool) == 0)
        assert up.count(b"POST") == 1
    if mode == "hang":
        assert r.status_code == 504
        assert elapsed < 2 * TIMEOUT.read  # one read timeout, not one per try
    else:
        assert r.status_code == 502
    assert r.content.startswith(str(r.status_code).encode())


@pytest.mark.parametrize("engine", ENGINES)
def test_only_the_core_resends_a_get_and_elsewhere(engine: str) -> None:
    with (
        Hostile("reset", bad=10, clean_first=1) as up,
        Replica("good") as good,
        proxy(engine, [up.url, good.url]) as (pool, port),
    ):
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            for n in range(6):
                assert client.get(f"/{n}").status_code == 200
        wait_for(lambda: in_flight(pool) == 0)
    at_hostile = [r["path"].decode() for r in up.requests]
    at_good = [r["path"] for r in good.requests]
    # No upstream got a request twice; a GET reset by the hostile one (its second
    # on each connection) went once more, to the other upstream.
    assert len(set(at_hostile)) == len(at_hostile) and len(set(at_good)) == len(at_good)
    assert set(at_hostile) | set(at_good) == {f"/{n}" for n in range(6)}
    resent = set(at_hostile) & set(at_good)
    assert resent and all(r["bad"] for r in up.requests if r["path"].decode() in resent)


@pytest.mark.parametrize("engine", ENGINES)
def test_a_close_delimited_response_is_relayed_whole(engine: str) -> None:
    with Hostile("close-delimited", bad=10) as up, proxy(engine, [up.url]) as (pool, port):
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            r = client.get("/stream")
        raw10 = raw_request(port, b"GET /old HTTP/1.0\r\n\r\n")
        wait_for(lambda: in_flight(pool) == 0)
    assert (r.status_code, r.content) == (200, b"first second last")
    assert split_response(raw10)[2] == b"first second last"


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("mode", ["bad-status", "huge-head", "cl-te", "two-cl"])
def test_an_unreadable_response_is_502_with_a_body(engine: str, mode: str) -> None:
    with Hostile(mode, bad=10) as up, proxy(engine, [up.url]) as (pool, port):
        raw = get(port, "/x")
        wait_for(lambda: in_flight(pool) == 0)
    status, _, body = split_response(raw)
    assert status == 502
    assert body.startswith(b"502 Bad Gateway")
    assert b"Traceback" not in raw


def test_each_request_has_its_own_scope_extensions() -> None:
    """The app records a request's attempts and decision in its scope's
    extensions: what one request put there never shows in another's."""
    seen: list[dict[str, Any]] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        extensions = scope["extensions"]
        seen.append(dict(extensions))
        extensions["clientlb.attempts"] = [len(seen)]
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    with FrontServed(app) as front, httpx.Client(base_url=front.url) as client:
        for _ in range(3):
            assert client.get("/").status_code == 200
    assert len(seen) == 3
    assert all(set(s) == {"clientlb.disconnect"} for s in seen)
