"""Active health checks against real replicas, with the sync runner (threads) and
the async one (asyncio and trio)."""

from __future__ import annotations

import anyio
import httpx
import pytest

from clientlb import AsyncBalancingTransport, BalancingTransport, OutlierDetection, Pool
from clientlb._background import AsyncBackground, Background
from clientlb._core import HealthCheck

from ..replicas import Replica
from ..waiting import await_for, wait_for
from .conftest import Events

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_leaked_threads")]

FAST = {"interval": 0.03, "timeout": 0.5}


def work(client: httpx.Client, n: int) -> None:
    for _ in range(n):
        client.get("/work").raise_for_status()


def test_fall_takes_an_upstream_out_and_rise_puts_it_back(replicas: list[Replica]) -> None:
    r1 = replicas[1]
    pool = Pool([r.url for r in replicas])
    events = Events(pool, replicas)
    check = HealthCheck(rise=2, fall=3, **FAST)
    with (
        Background(pool, health_check=check),
        httpx.Client(transport=BalancingTransport(pool), base_url="http://svc") as client,
    ):
        wait_for(lambda: r1.count(path="/health") >= 2, what="checks to run")
        r1.health_status = 503
        before = r1.count(path="/health")
        wait_for(lambda: events.first("down", r1.url) is not None, what="r1 down")
        assert (events.first("down", r1.url) or 0) - before in (check.fall - 1, check.fall)
        seen = r1.count(path="/work")
        work(client, 30)
        assert r1.count(path="/work") == seen

        mark = len(events)
        r1.health_status = 200
        before = r1.count(path="/health")
        wait_for(lambda: events.first("healthy", r1.url, mark) is not None, what="r1 back")
        assert (events.first("healthy", r1.url, mark) or 0) - before in (check.rise - 1, check.rise)
        work(client, 30)
        assert r1.count(path="/work") >= seen + 9


def test_a_passing_check_readmits_an_ejected_upstream_at_once(replicas: list[Replica]) -> None:
    r1 = replicas[1]
    r1.status = 502  # its traffic fails; its health path passes
    rules = OutlierDetection(consecutive_gateway_errors=1, base_ejection_time=60)
    pool = Pool([r.url for r in replicas], outlier=rules)
    events = Events(pool, replicas)
    with (
        Background(pool, health_check=HealthCheck(**FAST)),
        httpx.Client(transport=BalancingTransport(pool), base_url="http://svc") as client,
    ):
        while events.first("ejected", r1.url) is None:
            work(client, 1)  # the 502 is retried on another replica
        wait_for(lambda: events.first("healthy", r1.url) is not None, "the next check", timeout=2)
        checks = (events.first("healthy", r1.url) or 0) - (events.first("ejected", r1.url) or 0)
        assert checks <= 1  # the first check after the ejection put it back


def test_fail_back_to_a_recovered_primary_within_one_interval(standby: Replica) -> None:
    primary = Replica("primary").start()
    try:
        pool = Pool([primary.url], [standby.url])
        events = Events(pool, [primary])
        check = HealthCheck(rise=1, fall=1, interval=0.05, timeout=0.5)
        with (
            Background(pool, health_check=check),
            httpx.Client(transport=BalancingTransport(pool), base_url="http://svc") as client,
        ):
            work(client, 5)
            assert primary.count(path="/work") == 5
            primary.stop()
            wait_for(lambda: pool.snapshot()["upstreams"][0]["state"] == "down", what="down")
            work(client, 10)
            assert standby.count(path="/work") == 10

            before = primary.count(path="/health")
            mark = len(events)
            primary.start()
            wait_for(lambda: events.first("healthy", primary.url, mark) is not None, what="up")
            # Back at the first passing check (counted before or after its answer),
            # and the very next request goes to the primary again. How long that
            # takes is measured in benchmarks/discovery_latency.py.
            assert (events.first("healthy", primary.url, mark) or 0) - before in (0, 1)
            work(client, 1)
            assert primary.count(path="/work") == 6
    finally:
        primary.stop()


@pytest.mark.anyio
async def test_async_checks_take_out_and_fail_back(standby: Replica) -> None:
    primary = Replica("primary").start()
    try:
        pool = Pool([primary.url], [standby.url])
        events = Events(pool, [primary, standby])
        check = HealthCheck(rise=2, fall=2, **FAST)
        transport = AsyncBalancingTransport(pool)
        async with (
            AsyncBackground(pool, health_check=check) as background,
            httpx.AsyncClient(transport=transport, base_url="http://svc") as client,
        ):
            await await_for(lambda: background.checker and background.checker.rounds >= 2)
            primary.health_status = 500
            await await_for(lambda: events.first("down", primary.url) is not None, what="down")
            for _ in range(10):
                (await client.get("/work")).raise_for_status()
            assert standby.count(path="/work") == 10

            primary.health_status = 200
            before = primary.count(path="/health")
            await await_for(lambda: events.first("healthy", primary.url) is not None)
            assert (events.first("healthy", primary.url) or 0) - before <= check.rise
            (await client.get("/work")).raise_for_status()
            assert primary.count(path="/work") == 1
        rounds = background.checker.rounds if background.checker else 0
        await anyio.sleep(check.interval * 4)  # quiet: the checks were cancelled
        assert background.checker and background.checker.rounds == rounds
    finally:
        primary.stop()
