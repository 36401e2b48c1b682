"""The transports run their pools' active health checks for their lifetime."""

from __future__ import annotations

import logging
import threading

import httpx
import pytest

import clientlb
from clientlb import HealthCheck

from ..replicas import Replica
from ..waiting import CheckClock, assert_stopped, await_for, wait_for

pytestmark = pytest.mark.integration

FAST = HealthCheck(interval=0.05, timeout=1.0, rise=1, fall=2)


def _state(
    transport: clientlb.BalancingTransport | clientlb.AsyncBalancingTransport, url: str
) -> str:
    return next(u["state"] for u in transport.snapshot()["upstreams"] if u["url"] == url)


def test_sync_transport_checks_until_closed(replicas: list[Replica]) -> None:
    before = set(threading.enumerate())
    transport = clientlb.BalancingTransport([r.url for r in replicas], health_check=FAST)
    sick = replicas[0]
    with httpx.Client(transport=transport, base_url="http://svc") as client:
        sick.health_status = 503
        wait_for(lambda: _state(transport, sick.url) == "down", what="the sick replica down")
        sick.reset()
        for _ in range(30):
            assert client.get("/work").status_code == 200
        assert sick.count(path="/work") == 0
        sick.health_status = 200
        wait_for(lambda: _state(transport, sick.url) == "healthy", what="the replica back")
    assert set(threading.enumerate()) <= before  # no checker thread outlives close()


def _checker_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name == "clientlb-health")


def test_a_shared_pool_is_checked_once(replicas: list[Replica]) -> None:
    pool = clientlb.Pool([r.url for r in replicas], health_check=FAST)
    first = clientlb.BalancingTransport(pool)
    second = clientlb.BalancingTransport(pool)
    try:
        assert _checker_threads() == 1
        wait_for(lambda: replicas[0].count(path="/health") >= 2, what="checks")
    finally:
        first.close()
        second.close()
    assert _checker_threads() == 0


@pytest.mark.anyio
async def test_async_transport_checks_inside_the_client(replicas: list[Replica]) -> None:
    transport = clientlb.AsyncBalancingTransport([r.url for r in replicas], health_check=FAST)
    sick = replicas[1]
    sick.health_status = 500
    async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
        await await_for(lambda: _state(transport, sick.url) == "down", what="the sick replica down")
        sick.reset()
        for _ in range(30):
            assert (await client.get("/work")).status_code == 200
        assert sick.count(path="/work") == 0
    with CheckClock(Replica("clock"), FAST) as clock:
        assert_stopped(lambda: sick.count(path="/health"), clock)  # stopped with the client


def test_passing_checks_say_nothing_at_info(
    replicas: list[Replica], caplog: pytest.LogCaptureFixture
) -> None:
    """A check is not traffic: no httpx request line per check, no event while
    nothing changes; a check that takes an upstream down is one warning."""
    caplog.set_level(logging.INFO)
    transport = clientlb.BalancingTransport([r.url for r in replicas], health_check=FAST)
    try:
        wait_for(lambda: replicas[0].count(path="/health") >= 3, what="checks")
        assert [r for r in caplog.records if r.levelno >= logging.INFO] == []
        replicas[1].health_status = 503
        wait_for(lambda: transport.pool.members[1].state == "down", what="down")
    finally:
        transport.close()
    lines = [(r.name, r.levelno) for r in caplog.records if r.levelno >= logging.INFO]
    assert lines == [("clientlb.events", logging.WARNING)]
