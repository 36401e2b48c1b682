"""The request lifecycle through the proxies: the same driver as the transports,
so the same deadlines, hedges and attempt history, against real upstreams."""

from __future__ import annotations

import json
import logging
import time

import httpx
import pytest

from clientlb import ProxyApp, RetryPolicy, WSGIProxy
from clientlb._proxy._config import build

from ..replicas import Replica
from .conftest import in_flight, wait_until
from .fronts import FrontServed
from .hostile import Hostile
from .test_wsgi import WSGIServed

pytestmark = pytest.mark.integration

DEADLINE = RetryPolicy(timeout=0.5, budget=None)


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
            assert wait_until(lambda: in_flight(app.pool) == 0)
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
        app = ProxyApp([slow.url, fast.url], algorithm="weighted_round_robin", retry=policy)
        with FrontServed(app) as front, httpx.Client(base_url=front.url) as client:
            started = time.monotonic()
            r = client.get("/x")
            elapsed = time.monotonic() - started
            assert json.loads(r.content)["replica"] == "fast"
            assert elapsed < 0.6
            assert slow.count() == 1 and fast.count() == 1
            assert wait_until(lambda: in_flight(app.pool) == 0)


def test_the_config_file_carries_deadlines_and_hedges() -> None:
    settings = build({"retry": {"timeout": 0.5, "per_try_timeout": 0.2, "hedge_after": "p95"}})
    assert settings.retry == RetryPolicy(timeout=0.5, per_try_timeout=0.2, hedge_after="p95")
