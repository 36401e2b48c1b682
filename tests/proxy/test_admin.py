"""The admin listener's pages, in-process."""

from __future__ import annotations

import httpx
import pytest

from clientlb import Pool
from clientlb._proxy._admin import admin_app, metrics_text

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_stats_status_and_metrics() -> None:
    pool = Pool(["http://10.0.0.1:8000", "http://10.0.0.2:8000/v2"], ["http://10.0.0.9:8000"])
    transport = httpx.ASGITransport(admin_app(pool, {"listen": "127.0.0.1:8080"}))
    async with httpx.AsyncClient(transport=transport, base_url="http://admin") as client:
        stats = (await client.get("/stats")).json()
        status = (await client.get("/status")).text
        metrics = (await client.get("/metrics")).text
    assert stats["listen"] == "127.0.0.1:8080"
    assert [u["tier"] for u in stats["upstreams"]] == ["primary", "primary", "standby"]
    assert status.count("<tr>") == 4 and "http://10.0.0.2:8000/v2" in status
    assert 'clientlb_upstream_up{state="healthy",upstream="http://10.0.0.9:8000"}' in metrics


def test_plain_exposition_without_prometheus_client() -> None:
    snapshot = Pool(["http://a:1/x"]).snapshot()
    snapshot["upstreams"][0]["url"] = 'http://a:1/x"y'  # a quote to escape (URLs have none)
    text = metrics_text(snapshot)
    assert "# TYPE clientlb_upstream_requests_total counter" in text
    assert 'clientlb_upstream_requests_total{upstream="http://a:1/x\\"y",tier="primary"} 0' in text
    assert text.endswith("clientlb_pool_panic 0\n")
