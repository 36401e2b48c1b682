"""Subsets through the transports, against real replicas: three clients with
subsets of one each send only to their own replica, and together cover all
three. Sync, and async under asyncio and trio."""

from __future__ import annotations

import pytest

from clientlb import Subset, Upstream

from ..replicas import Replica
from ._support import Flavour

pytestmark = pytest.mark.anyio


async def test_each_client_sends_to_its_own_subset_only(
    flavour: Flavour, replicas: list[Replica]
) -> None:
    urls = [r.url for r in replicas]
    by_url = {r.url: r for r in replicas}
    owners = []
    for client_index in range(3):
        subset = Subset(1, client_index, 3)
        (mine,) = subset.choose([Upstream(u) for u in urls])
        before = {r.url: r.count() for r in replicas}
        transport = flavour.transport(urls, subset=subset)
        async with flavour.client(transport) as client:
            for _ in range(4):
                assert (await client.request("GET", "/")).status_code == 200
        sent = {r.url: r.count() - before[r.url] for r in replicas}
        assert sent == {u: 4 if u == mine.url else 0 for u in urls}
        assert [row["url"] for row in transport.snapshot()["upstreams"]] == [mine.url]
        owners.append(by_url[mine.url].name)
    assert sorted(owners) == sorted(r.name for r in replicas)
