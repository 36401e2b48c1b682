"""Health checks run for the proxies' lifetime and steer their traffic."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable

import httpx
import pytest

from clientlb._core import HealthCheck
from clientlb._proxy import ProxyApp, WSGIProxy

from ..replicas import Replica
from ..waiting import CheckClock, assert_stopped, wait_for
from .fronts import FrontServed
from .servers import Served

pytestmark = pytest.mark.integration

CHECK = HealthCheck(path="/health", interval=0.05, timeout=1.0, rise=1, fall=1)


def down(pool: object, url: str) -> Callable[[], bool]:
    def check() -> bool:
        return any(
            u["url"] == url and u["state"] not in ("healthy", "slow-start")
            for u in pool.snapshot()["upstreams"]  # type: ignore[attr-defined]
        )

    return check


def test_asgi_proxy_runs_health_checks_in_its_lifespan(
    proxy: Callable[..., tuple[ProxyApp, Served]],
) -> None:
    with Replica("sick") as sick, Replica("well") as well:
        sick.health_status = 503
        app, served = proxy([sick.url, well.url], health_check=CHECK)
        wait_for(down(app.pool, sick.url))
        sick.reset()
        with httpx.Client(base_url=served.url) as client:
            names = {json.loads(client.get("/x").content)["replica"] for _ in range(6)}
        assert names == {"well"}


def test_wsgi_proxy_runs_health_checks_until_closed() -> None:
    with Replica("sick") as sick, Replica("well") as well:
        sick.health_status = 503
        proxy = WSGIProxy([sick.url, well.url], health_check=CHECK)
        try:
            wait_for(down(proxy.pool, sick.url))
        finally:
            proxy.close()
        assert not checker_threads()  # close() joined them
        with CheckClock(Replica("clock"), CHECK) as clock:
            assert_stopped(lambda: sick.count(path="/health"), clock)


def test_asgi_proxy_stops_its_checks_with_its_lifespan() -> None:
    with Replica("sick") as sick:
        app = ProxyApp([sick.url], health_check=CHECK)
        with FrontServed(app):
            wait_for(lambda: sick.count(path="/health") >= 2, "checks while serving")
        with CheckClock(Replica("clock"), CHECK) as clock:
            assert_stopped(lambda: sick.count(path="/health"), clock)


def checker_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("clientlb")]
