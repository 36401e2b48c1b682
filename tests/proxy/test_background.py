"""Health checks run for the proxies' lifetime and steer their traffic."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest

from clientlb._core import HealthCheck
from clientlb._proxy import ProxyApp, WSGIProxy

from ..replicas import Replica
from .conftest import wait_until
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
        assert wait_until(down(app.pool, sick.url))
        sick.reset()
        with httpx.Client(base_url=served.url) as client:
            names = {json.loads(client.get("/x").content)["replica"] for _ in range(6)}
        assert names == {"well"}


def test_wsgi_proxy_runs_health_checks_until_closed() -> None:
    with Replica("sick") as sick, Replica("well") as well:
        sick.health_status = 503
        proxy = WSGIProxy([sick.url, well.url], health_check=CHECK)
        try:
            assert wait_until(down(proxy.pool, sick.url))
        finally:
            proxy.close()
