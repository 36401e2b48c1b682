"""Each upstream's own inner transport, closed once the upstream leaves."""

from __future__ import annotations

import pytest

from ..replicas import Replica
from ._support import clientlb, httpx

pytestmark = pytest.mark.integration


def test_one_inner_transport_per_upstream_closed_when_it_leaves(
    replicas: list[Replica],
) -> None:
    pool = clientlb.Pool([r.url for r in replicas])
    transport = clientlb.BalancingTransport(pool)
    inners = transport._inners
    with httpx.Client(transport=transport, base_url="http://svc") as client:
        for _ in range(6):
            assert client.get("/").status_code == 200
        assert len(inners._by_key) == 3
        with client.stream("GET", "/stream?chunks=2") as streaming:
            busy = next(m for m in pool.members if m.in_flight)  # its response is open
            idle = next(m for m in pool.members if m.url != busy.url)
            pool.remove(busy.upstream)
            pool.remove(idle.upstream)
            assert client.get("/").status_code == 200
            assert idle.upstream.key not in inners._by_key  # closed at once
            assert busy.upstream.key in inners._by_key  # kept while its request runs
            for replica in replicas:
                replica.release.set()
            streaming.read()
        assert client.get("/").status_code == 200
        assert set(inners._by_key) == {m.upstream.key for m in pool.members}
    assert inners._by_key == {}


@pytest.mark.anyio
async def test_async_inner_transports_closed_with_the_client(replicas: list[Replica]) -> None:
    transport = clientlb.AsyncBalancingTransport([r.url for r in replicas])
    async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
        for _ in range(3):
            assert (await client.get("/")).status_code == 200
        assert len(transport._inners._by_key) == 3
    assert transport._inners._by_key == {}


def test_a_given_inner_is_shared() -> None:
    inner = httpx.MockTransport(lambda request: httpx.Response(200))
    transport = clientlb.BalancingTransport(["http://a:1", "http://b:1"], inner=inner)
    with httpx.Client(transport=transport) as client:
        client.get("http://svc/")
        client.get("http://svc/")
    assert transport._inners._by_key == {}
