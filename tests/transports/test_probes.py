"""Fail-back through connect probes, with real replicas: a restarted primary is
back long before its ejection ends, and no request fails on the way."""

from __future__ import annotations

import anyio
import pytest

from ..replicas import Replica
from ._support import Flavour, clientlb

pytestmark = pytest.mark.anyio

#: Ejections that outlast every test: a member back early was probed back.
LONG_EJECTION = clientlb.OutlierDetection(base_ejection_time=60.0)


def state(pool: clientlb.Pool, url: str) -> str:
    return next(m.state for m in pool.members if m.url == url)


async def test_a_restarted_primary_is_back_within_a_probe_interval(
    flavour: Flavour, replicas: list[Replica], standby: Replica
) -> None:
    """The primary stops: requests fail over at once, with no error. It listens
    again: a probe finds it and it serves again, though its ejection has a minute
    to run."""
    primary = replicas[0]
    transport = flavour.transport([primary.url], standbys=[standby.url], outlier=LONG_EJECTION)
    async with flavour.client(transport) as client:
        assert (await client.request("GET", "/")).json()["replica"] == primary.name
        primary.stop()
        for _ in range(10):
            assert (await client.request("GET", "/")).json()["replica"] == standby.name
        assert state(transport.pool, primary.url) == "ejected"
        primary.start()
        served = primary.count()

        async def back() -> bool:
            response = await client.request("GET", "/")
            assert response.status_code == 200
            return primary.count() > served

        deadline = anyio.current_time() + 10
        while not await back():
            assert anyio.current_time() < deadline, "the primary never came back"
            await anyio.sleep(0.01)
        assert state(transport.pool, primary.url) == "healthy"
        assert transport.pool.members[0].ejections == 1
