"""Every shell hands each request to ``metrics=``: the proxies and their middleware."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from clientlb import Metrics, ProxyApp, ProxyMiddleware, WSGIProxy, WSGIProxyMiddleware

from ..replicas import Replica, closed_port

SHELLS = {
    "ProxyApp": (lambda **o: ProxyApp(**o), "asgi", "/x"),
    "ProxyMiddleware": (lambda **o: ProxyMiddleware(unused, "/api", **o), "asgi", "/api/x"),
    "WSGIProxy": (lambda **o: WSGIProxy(**o), "wsgi", "/x"),
    "WSGIProxyMiddleware": (lambda **o: WSGIProxyMiddleware(unused, "/api", **o), "wsgi", "/api/x"),
}


def unused(*args: Any) -> Any:
    raise AssertionError("the request should have been forwarded")


def count(metrics: Metrics, name: str) -> float:
    for line in metrics.render().splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@pytest.mark.parametrize("shell", list(SHELLS))
@pytest.mark.anyio
async def test_proxies_count_each_request(shell: str, replicas: list[Replica]) -> None:
    make, kind, path = SHELLS[shell]
    metrics = Metrics()
    refusing = closed_port()
    app = make(upstreams=[replicas[0].url, refusing], metrics=metrics)
    if kind == "asgi":
        transport = httpx.ASGITransport(app)
        async with httpx.AsyncClient(transport=transport, base_url="http://proxy") as client:
            statuses = [(await client.get(path)).status_code for _ in range(4)]
        await (app.proxy if shell == "ProxyMiddleware" else app).shutdown()
    else:
        with httpx.Client(transport=httpx.WSGITransport(app), base_url="http://proxy") as client:
            statuses = [client.get(path).status_code for _ in range(4)]
        (app.proxy if shell == "WSGIProxyMiddleware" else app).close()
    assert statuses == [200] * 4
    assert count(metrics, 'clientlb_requests_total{pool="default"}') == 4
    # the closed port refuses: an attempt there fails over to the replica
    failed = (
        f'clientlb_upstream_responses_total{{class="error",pool="default",upstream="{refusing}"}}'
    )
    assert count(metrics, failed) >= 1
    assert count(metrics, 'clientlb_retries_total{pool="default"}') == count(metrics, failed)
    url = replicas[0].url
    ok = f'clientlb_upstream_responses_total{{class="2xx",pool="default",upstream="{url}"}}'
    assert count(metrics, ok) == 4
