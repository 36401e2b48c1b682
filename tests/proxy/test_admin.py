"""The admin listener's pages, in-process."""

from __future__ import annotations

import json
import threading
from typing import Any

import anyio
import httpx
import pytest

from clientlb import AsyncBalancingTransport, Metrics, Pool, ProxyApp, ProxyMiddleware, admin_app
from clientlb._admin import stats_json

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://admin")


async def test_stats_status_and_metrics() -> None:
    pool = Pool(["http://10.0.0.1:8000", "http://10.0.0.2:8000/v2"], ["http://10.0.0.9:8000"])
    async with client(admin_app(pool, extra={"listen": "127.0.0.1:8080"})) as admin:
        stats = (await admin.get("/stats")).json()
        status = await admin.get("/status")
        metrics = await admin.get("/metrics")
    assert stats["listen"] == "127.0.0.1:8080"
    assert list(stats) == [
        "pool",
        "serving",
        "algorithm",
        "panic",
        "max_connections",
        "max_pending",
        "pending",
        "rejected",
        "upstreams",
        "events",
        "listen",
    ]
    assert [u["tier"] for u in stats["upstreams"]] == ["primary", "primary", "standby"]
    assert stats["upstreams"][0]["p50"] is None and stats["serving"] == "primary"
    assert "http://10.0.0.2:8000/v2" in status.text  # in the stats the page carries
    assert "default-src 'none'" in status.headers["content-security-policy"]
    assert metrics.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    line = (
        'clientlb_upstream_state{pool="default",state="healthy",tier="standby",'
        'upstream="http://10.0.0.9:8000"} 1.0'
    )
    assert line in metrics.text and "clientlb_upstream_up" not in metrics.text


def test_stats_json_is_the_snapshot() -> None:
    pool = Pool(["http://a:1", "http://b:1"])
    lease = pool.pick()
    lease.responded(200)
    body = {**pool.snapshot(), "listen": "127.0.0.1:1"}
    text = stats_json(body)
    assert json.loads(text) == body
    assert text.count("\n") == 13  # one line per pool field and per upstream
    assert json.loads(stats_json({"upstreams": []})) == {"upstreams": []}
    several = {"pools": {"a": body, "b": body}, "events": []}
    assert json.loads(stats_json(several)) == several


async def test_several_sources_by_name() -> None:
    metrics = Metrics()
    users, orders = Pool(["http://u:1"]), Pool(["http://o:1"])
    transport = AsyncBalancingTransport(services={"users": users}, metrics=metrics)
    proxy = ProxyApp(pool=orders)
    async with client(admin_app(transport, {"shop": proxy}, metrics=metrics)) as admin:
        stats = (await admin.get("/stats")).json()
        text = (await admin.get("/metrics")).text
    assert set(stats["pools"]) == {"users", "shop"}
    assert 'clientlb_pool_panic{pool="shop"} 0.0' in text


async def test_the_collector_of_a_source_is_the_one_reported() -> None:
    metrics = Metrics()
    proxy = ProxyMiddleware(object(), prefix="/api", upstreams=["http://a:1"], metrics=metrics)
    app = admin_app(proxy)
    async with client(app) as admin:
        await admin.get("/metrics")
    assert metrics.pools == {"default": proxy.proxy.pool}


class Recording(Pool):
    """A pool that records the thread of every snapshot, and can hold one up."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.threads: list[int] = []
        self.hold: threading.Event | None = None
        self.entered = threading.Event()
        self.cost = 0.0  # seconds the fake clock moves during a snapshot
        self.clock_now = 0.0

    def snapshot(self) -> dict[str, Any]:
        self.threads.append(threading.get_ident())
        self.entered.set()
        if self.hold is not None:
            self.hold.wait(10)
        self.clock_now += self.cost
        return super().snapshot()


@pytest.mark.parametrize("page", ["/stats", "/status", "/metrics"])
async def test_pages_render_off_the_event_loop(page: str) -> None:
    pool = Recording(["http://a:1"])
    pool.hold = threading.Event()
    loop_thread = threading.get_ident()
    ticks = 0
    async with client(admin_app(pool)) as admin, anyio.create_task_group() as tg:
        tg.start_soon(admin.get, page)
        await anyio.to_thread.run_sync(pool.entered.wait, 10)
        # the render is blocked, and the event loop still runs
        for _ in range(3):
            await anyio.sleep(0)
            ticks += 1
        pool.hold.set()
    assert ticks == 3
    assert pool.threads and loop_thread not in pool.threads


@pytest.fixture
def fake_time() -> Recording:
    return Recording(["http://a:1"])


def timed_app(pool: Recording) -> Any:
    return admin_app(pool, clock=lambda: pool.clock_now)


async def test_a_cheap_page_is_rendered_for_every_request(fake_time: Recording) -> None:
    pool = fake_time
    async with client(timed_app(pool)) as admin:
        for _ in range(3):
            await admin.get("/metrics")
    assert len(pool.threads) == 3


async def test_a_costly_page_is_served_again_briefly(fake_time: Recording) -> None:
    pool = fake_time
    pool.cost = 0.0625  # 10x that: served again until 0.625 s after its snapshot
    async with client(timed_app(pool)) as admin:
        first = (await admin.get("/stats")).json()
        pool.add("http://b:1")
        assert (await admin.get("/stats")).json() == first
        pool.clock_now += 0.5  # 0.5625 s after the snapshot
        assert (await admin.get("/stats")).json() == first
        pool.clock_now += 0.0625
        assert len((await admin.get("/stats")).json()["upstreams"]) == 2
        assert len(pool.threads) == 2
        pool.cost = 0.5  # 10x would be 5 s: max_age (1 s) caps it
        pool.clock_now += 1.0
        await admin.get("/metrics")  # its snapshot at t, served until t + 1
        pool.clock_now += 0.25
        await admin.get("/metrics")
        assert len(pool.threads) == 3
        pool.clock_now += 0.25
        await admin.get("/metrics")
        assert len(pool.threads) == 4


async def test_concurrent_requests_share_one_rendering(fake_time: Recording) -> None:
    pool = fake_time
    pool.cost = 0.05
    pool.hold = threading.Event()
    bodies: list[bytes] = []

    async def fetch(admin: httpx.AsyncClient) -> None:
        bodies.append((await admin.get("/metrics")).content)

    async with client(timed_app(pool)) as admin, anyio.create_task_group() as tg:
        for _ in range(5):
            tg.start_soon(fetch, admin)
        await anyio.to_thread.run_sync(pool.entered.wait, 10)
        pool.hold.set()
    assert len(pool.threads) == 1 and len(bodies) == 5 and len(set(bodies)) == 1
