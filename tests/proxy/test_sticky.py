"""Placing clients in the proxies, against real replicas: ``hash_on`` (header,
cookie, callable) and the sticky cookie, in ProxyApp under uvicorn, behind the
``clientlb proxy`` front end, in ProxyMiddleware, and in the WSGI twin."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from clientlb import (
    OutlierDetection,
    ProxyApp,
    ProxyMiddleware,
    StickyCookie,
    WSGIProxy,
    WSGIProxyMiddleware,
)

from ..replicas import Replica
from .fronts import FrontServed
from .servers import Served
from .test_wsgi import WSGIServed

pytestmark = pytest.mark.integration

Start = Callable[..., tuple[ProxyApp, Served]]
SECRET = "a secret shared by every process"
QUICK = OutlierDetection(
    consecutive_local_failures=1, consecutive_gateway_errors=1, base_ejection_time=30.0
)


def replica(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    name: str = json.loads(response.content)["replica"]
    return name


def set_cookies(response: httpx.Response) -> list[str]:
    return response.headers.get_list("set-cookie")


@pytest.fixture
def three() -> Iterator[list[Replica]]:
    started = [Replica(name).start() for name in ("a", "b", "c")]
    yield started
    for r in started:
        r.stop()


@pytest.fixture
def wsgi() -> Iterator[Callable[[Any], WSGIServed]]:
    started: list[WSGIServed] = []

    def start(app: Any) -> WSGIServed:
        served = WSGIServed(app)
        started.append(served)
        return served

    yield start
    for served in started:
        served.close()


def sticks(url: str, requests: int = 12) -> tuple[httpx.Client, str]:
    """A client with a cookie jar, pinned by its first request; every request
    after it lands on the same replica and gets no new cookie."""
    client = httpx.Client(base_url=url)
    first = client.get("/")
    cookies = set_cookies(first)
    assert len(cookies) == 1 and cookies[0].startswith("clientlb="), cookies
    attributes = cookies[0].split("; ")[1:]
    assert {"Path=/", "HttpOnly", "SameSite=Lax"} <= set(attributes)
    where = replica(first)
    for _ in range(requests):
        r = client.get("/")
        assert replica(r) == where
        assert set_cookies(r) == []  # it carried the right one already
    return client, where


def moves(client: httpx.Client, gone: str, requests: int = 8) -> str:
    """The next request lands elsewhere with a new cookie, which then sticks."""
    r = client.get("/")
    where = replica(r)
    assert where != gone
    assert len(set_cookies(r)) == 1
    for _ in range(requests):
        r = client.get("/")
        assert (replica(r), set_cookies(r)) == (where, [])
    return where


# -- hash_on ---------------------------------------------------------------------------------


@pytest.mark.parametrize("hash_on", ["header:x-user", "cookie:session"])
def test_hash_on_keeps_a_key_on_one_replica_and_spreads_keys(
    proxy: Start, three: list[Replica], hash_on: str
) -> None:
    _, served = proxy([r.url for r in three], algorithm="consistent_hash", hash_on=hash_on)
    kind, _, name = hash_on.partition(":")
    placed: dict[int, set[str]] = {}
    with httpx.Client(base_url=served.url) as client:
        for _ in range(2):
            for user in range(24):
                headers = {name: f"u{user}"} if kind == "header" else {"cookie": f"{name}=u{user}"}
                placed.setdefault(user, set()).add(replica(client.get("/", headers=headers)))
    assert all(len(names) == 1 for names in placed.values()), placed
    assert sum(1 for r in three if r.count()) >= 2


def test_without_its_key_a_request_hashes_on_the_client_address(
    proxy: Start, three: list[Replica]
) -> None:
    _, served = proxy(
        [r.url for r in three],
        algorithm="consistent_hash",
        hash_on="cookie:session",
        trusted_proxies=["127.0.0.1"],
    )
    with httpx.Client(base_url=served.url) as client:
        spread = set()
        for i in range(1, 25):
            headers = {"x-forwarded-for": f"198.51.100.{i}"}
            seen = {replica(client.get("/", headers=headers)) for _ in range(3)}
            assert len(seen) == 1  # one client address, one replica
            spread |= seen
    assert len(spread) >= 2


def test_a_callable_gets_the_asgi_scope(proxy: Start, three: list[Replica]) -> None:
    def tenant(scope: Any) -> str | None:
        query: bytes = scope["query_string"]
        return query.decode() or None

    _, served = proxy([r.url for r in three], algorithm="ip_hash", hash_on=tenant)
    with httpx.Client(base_url=served.url) as client:
        for t in range(10):
            assert len({replica(client.get(f"/?t{t}")) for _ in range(3)}) == 1


def test_a_callable_that_raises_falls_back_to_the_client_address(
    proxy: Start, three: list[Replica], caplog: pytest.LogCaptureFixture
) -> None:
    def broken(scope: Any) -> str | None:
        raise KeyError("tenant")

    _, served = proxy([r.url for r in three], algorithm="ip_hash", hash_on=broken)
    with httpx.Client(base_url=served.url) as client:
        answers = [client.get("/") for _ in range(3)]
    assert all(r.status_code == 200 for r in answers)
    assert len({replica(r) for r in answers}) == 1  # one client address, one replica
    assert any("hash_on raised" in r.getMessage() for r in caplog.records)


# -- sticky cookie -----------------------------------------------------------------------------


def test_a_sticky_client_stays_on_one_replica_under_round_robin(
    proxy: Start, three: list[Replica]
) -> None:
    _, served = proxy([r.url for r in three], sticky=StickyCookie())
    client, where = sticks(served.url, requests=30)
    client.close()
    assert next(r for r in three if r.name == where).count() == 31
    # Clients that keep no cookie: round robin as ever.
    assert len({replica(httpx.get(served.url + "/")) for _ in range(6)}) == 3


def test_stopping_ejecting_or_removing_the_pinned_replica_pins_again(
    proxy: Start, three: list[Replica]
) -> None:
    with Replica("d") as fourth:
        four = [*three, fourth]
        app, served = proxy([r.url for r in four], sticky=StickyCookie(), outlier=QUICK)
        by_name = {r.name: r for r in four}
        client, where = sticks(served.url)
        with contextlib.closing(client):
            by_name[where].stop()  # the retry answers elsewhere and re-pins there
            where = moves(client, where)
            app.pool.drain(by_name[where].url)
            where = moves(client, where)
            app.pool.remove(by_name[where].url)
            left = moves(client, where)
            assert by_name[left].count() >= 9


def test_ejected_and_down_replicas_lose_their_clients(proxy: Start, three: list[Replica]) -> None:
    app, served = proxy([r.url for r in three], sticky=StickyCookie(), outlier=QUICK)
    by_name = {r.name: r for r in three}
    client, where = sticks(served.url)
    with contextlib.closing(client):
        sick = by_name[where]
        sick.status = 503  # one gateway error ejects it; the GET is retried
        where = moves(client, where)
        states = {row["url"]: row["state"] for row in app.pool.snapshot()["upstreams"]}
        assert states[sick.url] == "ejected"
        app.pool.report_check(by_name[where].url, False)  # down by active checks
        moves(client, where)


@pytest.mark.parametrize(
    "cookie",
    ["garbage", "x" * 22, "", '"quoted"', "\u00e9" * 22, "Zm9v" * 100],
    ids=["garbage", "token-shaped", "empty", "quoted", "non-ascii", "long"],
)
def test_forged_or_garbage_cookies_are_ignored_and_replaced(
    proxy: Start, three: list[Replica], cookie: str
) -> None:
    _, served = proxy([r.url for r in three], sticky=StickyCookie())
    raw = f"clientlb={cookie}".encode()
    with httpx.Client(base_url=served.url) as client:
        r = client.get("/", headers=[(b"cookie", raw)])
        assert r.status_code == 200
        assert len(set_cookies(r)) == 1


def test_one_secret_pins_across_proxies(proxy: Start, three: list[Replica]) -> None:
    urls = [r.url for r in three]
    _, first = proxy(urls, sticky=StickyCookie(secret=SECRET, max_age=600))
    _, second = proxy(urls, sticky=StickyCookie(secret=SECRET, max_age=600))
    _, other = proxy(urls, sticky=StickyCookie(secret=SECRET + "?"))
    client, where = sticks(first.url)
    with contextlib.closing(client):
        cookie = client.cookies["clientlb"]
    with httpx.Client(base_url=second.url, cookies={"clientlb": cookie}) as c:
        assert {replica(c.get("/")) for _ in range(6)} == {where}
    with httpx.Client(base_url=other.url, cookies={"clientlb": cookie}) as c:
        assert len(set_cookies(c.get("/"))) == 1  # another secret: a stranger's cookie


def test_max_age_and_secure_attributes(proxy: Start, three: list[Replica]) -> None:
    _, served = proxy([three[0].url], sticky=StickyCookie(name="srv", max_age=60, secure=True))
    r = httpx.get(served.url + "/")
    (cookie,) = set_cookies(r)
    name, _, rest = cookie.partition("=")
    assert name == "srv"
    assert rest.split("; ")[1:] == ["Path=/", "Max-Age=60", "HttpOnly", "SameSite=Lax", "Secure"]


def test_hashing_and_stickiness_together(proxy: Start, three: list[Replica]) -> None:
    _, served = proxy(
        [r.url for r in three],
        algorithm="consistent_hash",
        hash_on="header:x-user",
        sticky=StickyCookie(),
    )
    client, where = sticks(served.url)
    with contextlib.closing(client):  # the pin wins over the key while its replica serves
        for user in range(10):
            assert replica(client.get("/", headers={"x-user": f"u{user}"})) == where


def test_the_front_end_of_clientlb_proxy_pins_too(three: list[Replica]) -> None:
    app = ProxyApp([r.url for r in three], sticky=StickyCookie())
    with FrontServed(app) as served:
        client, _ = sticks(served.url)
        client.close()


def test_the_middleware_pins_under_its_prefix(three: list[Replica]) -> None:
    async def inner(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    app = ProxyMiddleware(
        inner, "/api", upstreams=[r.url for r in three], sticky=StickyCookie(path="/api")
    )
    with Served(app, lifespan="on") as served, httpx.Client(base_url=served.url) as client:
        first = client.get("/api/x")
        assert "Path=/api" in set_cookies(first)[0]
        where = replica(first)
        assert {replica(client.get("/api/x")) for _ in range(8)} == {where}


# -- WSGI ---------------------------------------------------------------------------------------


def test_wsgi_proxy_pins_and_pins_again(wsgi: Any, three: list[Replica]) -> None:
    proxy = WSGIProxy([r.url for r in three], sticky=StickyCookie(), outlier=QUICK)
    by_name = {r.name: r for r in three}
    try:
        served = wsgi(proxy)
        client, where = sticks(served.url)
        with contextlib.closing(client):
            by_name[where].stop()
            where = moves(client, where)
            proxy.pool.remove(by_name[where].url)
            moves(client, where)
            r = client.get("/", headers={"cookie": "clientlb=forged"})
            assert r.status_code == 200 and len(set_cookies(r)) == 1
    finally:
        proxy.close()


def test_wsgi_hash_on_header_cookie_and_environ(wsgi: Any, three: list[Replica]) -> None:
    urls = [r.url for r in three]
    proxies = [
        WSGIProxy(urls, algorithm="consistent_hash", hash_on="header:x-user"),
        WSGIProxy(urls, algorithm="consistent_hash", hash_on="cookie:session"),
        WSGIProxy(urls, algorithm="ip_hash", hash_on=lambda environ: environ["QUERY_STRING"]),
    ]
    try:
        for proxy, headers in zip(
            proxies,
            [lambda u: {"x-user": u}, lambda u: {"cookie": f"session={u}"}, lambda u: {}],
            strict=True,
        ):
            served = wsgi(proxy)
            with httpx.Client(base_url=served.url) as client:
                for user in range(8):
                    got = {
                        replica(client.get(f"/?{user}", headers=headers(f"u{user}")))
                        for _ in range(3)
                    }
                    assert len(got) == 1
    finally:
        for proxy in proxies:
            proxy.close()


def test_wsgi_middleware_takes_the_same_options(wsgi: Any, three: list[Replica]) -> None:
    def inner(environ: Any, start_response: Any) -> list[bytes]:
        start_response("404 Not Found", [])
        return [b""]

    app = WSGIProxyMiddleware(
        inner, "/api", upstreams=[r.url for r in three], sticky=StickyCookie()
    )
    try:
        served = wsgi(app)
        with httpx.Client(base_url=served.url) as client:
            where = replica(client.get("/api/"))
            assert {replica(client.get("/api/")) for _ in range(6)} == {where}
    finally:
        app.proxy.close()
