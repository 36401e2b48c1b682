"""The request lifecycle through the proxies: the same driver as the transports,
so the same deadlines, hedges and attempt history, against real upstreams."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

import httpx
import pytest

from clientlb import Health, HealthCheck, ProxyApp, RetryPolicy, WSGIProxy
from clientlb._proxy._config import build

from ..in_order import InOrder
from ..replicas import Replica, closed_port
from ..waiting import wait_for
from .conftest import in_flight
from .fronts import FrontServed
from .hostile import Hostile
from .test_wsgi import WSGIServed

pytestmark = pytest.mark.integration

DEADLINE = RetryPolicy(timeout=0.5, budget=None)
CHECK = HealthCheck(path="/health", interval=0.05, timeout=1.0, rise=1, fall=1)


class Shell:
    """``ProxyApp`` behind the front end or ``WSGIProxy`` behind wsgiref, with
    an outer middleware that reads what the proxy left in the ASGI scope's
    ``extensions`` or in the WSGI environ."""

    def __init__(
        self, kind: str, upstreams: list[str], standbys: Iterable[str] = (), **options: Any
    ):
        self.kind = kind
        self.seen: list[Any] = []
        self.app: ProxyApp | WSGIProxy
        self.served: FrontServed | WSGIServed
        if kind == "asgi":
            self.app = ProxyApp(upstreams, standbys, **options)
            self.served = FrontServed(_Outer(self.app, self.seen)).start()
        else:
            app = self.app = WSGIProxy(upstreams, standbys, **options)
            seen = self.seen

            def outer(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
                result = app(environ, start_response)
                seen.append(environ.get("clientlb.attempts"))
                return result

            self.served = WSGIServed(outer)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.served.port}"

    def close(self) -> None:
        if isinstance(self.served, FrontServed):
            self.served.stop()
        else:
            self.served.close()
            assert isinstance(self.app, WSGIProxy)
            self.app.close()


class _Outer:
    def __init__(self, app: ProxyApp, seen: list[Any]) -> None:
        self.app = app
        self.seen = seen

    async def startup(self) -> None:
        await self.app.startup()

    async def shutdown(self) -> None:
        await self.app.shutdown()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)
        self.seen.append(scope.get("extensions", {}).get("clientlb.attempts"))


@pytest.mark.parametrize("shell", ["asgi", "wsgi"])
def test_the_call_timeout_bounds_a_proxied_request(
    shell: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Two upstreams that never answer: 504 by 0.5 s and a bit, not one read
    timeout per upstream; the log line lists the attempts."""
    with Hostile("hang", bad=10) as one, Hostile("hang", bad=10) as two:
        upstreams = [one.url, two.url]
        if shell == "asgi":
            app: ProxyApp | WSGIProxy = ProxyApp(upstreams, retry=DEADLINE, outlier=None)
            served: FrontServed | WSGIServed = FrontServed(app).start()
        else:
            app = WSGIProxy(upstreams, retry=DEADLINE, outlier=None)
            served = WSGIServed(app)
        try:
            with caplog.at_level(logging.WARNING, "clientlb.proxy"):
                started = time.monotonic()
                r = httpx.get(f"http://127.0.0.1:{served.port}/x", timeout=10)
                elapsed = time.monotonic() - started
            assert r.status_code == 504 and elapsed < 0.7
            wait_for(lambda: in_flight(app.pool) == 0)
        finally:
            if isinstance(served, FrontServed):
                served.stop()
            else:
                served.close()
                app.close()  # type: ignore[union-attr]
    assert "504 upstream timed out" in caplog.text


def test_a_slow_upstream_is_hedged_through_the_proxy() -> None:
    with Replica("slow", delay=1.0) as slow, Replica("fast") as fast:
        policy = RetryPolicy(hedge_after=0.05, budget=None)
        app = ProxyApp([slow.url, fast.url], algorithm=InOrder, retry=policy)
        with FrontServed(app) as front, httpx.Client(base_url=front.url) as client:
            started = time.monotonic()
            r = client.get("/x")
            elapsed = time.monotonic() - started
            assert json.loads(r.content)["replica"] == "fast"
            assert elapsed < 0.6
            assert slow.count() == 1 and fast.count() == 1
            wait_for(lambda: in_flight(app.pool) == 0)


def test_the_config_file_carries_deadlines_and_hedges() -> None:
    settings = build({"retry": {"timeout": 0.5, "per_try_timeout": 0.2, "hedge_after": "p95"}})
    assert settings.retry == RetryPolicy(timeout=0.5, per_try_timeout=0.2, hedge_after="p95")


@pytest.mark.parametrize("shell", ["asgi", "wsgi"])
def test_checked_down_everywhere_is_503_without_dialing(shell: str) -> None:
    """Active checks have the primary and the standby down: 503 at once, no
    request reaches either; the first replica checked healthy serves again."""
    with Replica("primary") as primary, Replica("standby") as standby:
        primary.health_status = standby.health_status = 503
        proxy = Shell(shell, [primary.url], [standby.url], health_check=CHECK)
        try:
            members = proxy.app.pool
            wait_for(lambda: all(m.health is Health.DOWN for m in members.members), "all down")
            r = httpx.get(proxy.url + "/x", timeout=10)
            assert r.status_code == 503  # at once: no upstream is dialled
            assert primary.count(path="/x") == standby.count(path="/x") == 0
            primary.health_status = 200
            wait_for(lambda: members.members[0].health is Health.HEALTHY, "the primary back")
            r = httpx.get(proxy.url + "/x", timeout=10)
            assert json.loads(r.content)["replica"] == "primary"
        finally:
            proxy.close()


@pytest.mark.parametrize("shell", ["asgi", "wsgi"])
def test_the_attempt_history_reaches_an_outer_middleware(shell: str) -> None:
    with Replica("good") as good:
        dead = closed_port()
        proxy = Shell(shell, [dead, good.url], algorithm=InOrder, outlier=None)
        try:
            r = httpx.get(proxy.url + "/x", timeout=10)
            assert r.status_code == 200
            wait_for(lambda: proxy.seen, "the outer middleware's turn")
        finally:
            proxy.close()
    (attempts,) = proxy.seen
    assert [(a.upstream, a.outcome, a.status) for a in attempts] == [
        (dead, "connect_failure", None),
        (good.url, "response", 200),
    ]
