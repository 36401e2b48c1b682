"""Per-upstream connection limits through the transports, against real uvicorn
replicas: a replica that holds its requests (``/stream`` waits for
``replica.release``) never has more than its ``max_connections`` in flight; the
next request goes elsewhere, fails fast, or waits within ``max_pending``; and
every count is back to zero after waits that ended, timed out or were
cancelled. Each test runs with the sync transport and the async one under
asyncio and trio."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from clientlb import Pool, Upstream

from ..replicas import Replica
from ..waiting import await_for
from ._support import Client, Flavour, clientlb, httpx, in_flight

pytestmark = pytest.mark.anyio


def limits(transport: Any) -> tuple[int, int]:
    snapshot = transport.snapshot()
    return snapshot["pending"], snapshot["rejected"]


async def get(flavour: Flavour, client: Client, path: str, **kwargs: Any) -> httpx.Response:
    """``client.request``, in a worker thread for the sync flavour (so that the
    test's loop goes on while it blocks)."""
    if flavour.is_async:
        return await client.request("GET", path, **kwargs)
    sync = client.sync
    assert sync is not None
    return await anyio.to_thread.run_sync(lambda: sync.get(path, **kwargs))


async def test_a_full_replica_gets_no_more_and_the_next_request_goes_elsewhere(
    flavour: Flavour, replicas: list[Replica]
) -> None:
    a, b = replicas[0], replicas[1]
    transport = flavour.transport([Upstream(a.url, max_connections=2), b.url])
    async with flavour.client(transport) as client:
        held = [await client.send_streaming("GET", "/stream") for _ in range(5)]
        assert (a.count(path="/stream"), b.count(path="/stream")) == (2, 3)
        assert in_flight(transport) == {a.url: 2, b.url: 3}
        assert limits(transport) == (0, 0)
        for response in held:
            await client.close_response(response)
    assert in_flight(transport) == {a.url: 0, b.url: 0}


async def test_every_replica_full_fails_fast(flavour: Flavour, replicas: list[Replica]) -> None:
    a = replicas[0]
    transport = flavour.transport([a.url], max_connections=2)
    async with flavour.client(transport) as client:
        held = [await client.send_streaming("GET", "/stream") for _ in range(2)]
        with pytest.raises(clientlb.NoUpstreamAvailable, match="connection limit") as caught:
            await client.request("GET", "/")
        assert caught.value.attempts == ()
        assert a.count(path="/") == 0 and a.count(path="/stream") == 2
        assert limits(transport) == (0, 1)
        for response in held:
            await client.close_response(response)
        assert in_flight(transport) == {a.url: 0}
        assert (await client.request("GET", "/")).status_code == 200
    row = transport.snapshot()["upstreams"][0]
    assert (row["state"], row["failures"], row["max_connections"]) == ("healthy", 0, 2)


async def test_one_request_waits_for_a_slot_and_the_next_fails_fast(
    flavour: Flavour, replicas: list[Replica]
) -> None:
    a = replicas[0]
    transport = flavour.transport([a.url], max_connections=2, max_pending=1)
    async with flavour.client(transport) as client:
        held = [await client.send_streaming("GET", "/stream") for _ in range(2)]
        answers: list[httpx.Response] = []
        async with anyio.create_task_group() as group:

            async def waiter() -> None:
                answers.append(await get(flavour, client, "/waited"))

            group.start_soon(waiter)
            await await_for(lambda: limits(transport)[0] == 1, "the request to wait")
            with pytest.raises(clientlb.NoUpstreamAvailable, match="max_pending"):
                await client.request("GET", "/")
            assert a.count(path="/waited") == 0
            await client.close_response(held.pop())
        assert answers[0].status_code == 200
        assert a.count(path="/waited") == 1
        assert limits(transport) == (0, 1)
        await client.close_response(held.pop())
    assert in_flight(transport) == {a.url: 0}


async def test_a_wait_ends_with_the_pool_timeout(flavour: Flavour, replicas: list[Replica]) -> None:
    a = replicas[0]
    transport = flavour.transport([a.url], max_connections=1, max_pending=4)
    async with flavour.client(transport, timeout=httpx.Timeout(5.0, pool=0.05)) as client:
        held = await client.send_streaming("GET", "/stream")
        with pytest.raises(clientlb.NoUpstreamAvailable, match="connection limit"):
            await get(flavour, client, "/late")
        assert limits(transport) == (0, 1)
        await client.close_response(held)
    assert in_flight(transport) == {a.url: 0}
    assert a.count(path="/late") == 0


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_a_cancelled_wait_leaves_the_queue(replicas: list[Replica]) -> None:
    a = replicas[0]
    transport = clientlb.AsyncBalancingTransport([a.url], max_connections=1, max_pending=1)
    async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
        held = await client.send(client.build_request("GET", "/stream"), stream=True)
        async with anyio.create_task_group() as group:
            group.start_soon(client.get, "/never")
            await await_for(lambda: limits(transport)[0] == 1, "the request to wait")
            group.cancel_scope.cancel()
        assert limits(transport) == (0, 0)  # cancelled: not a rejection
        await held.aclose()
        assert in_flight(transport) == {a.url: 0}
        assert (await client.get("/")).status_code == 200
    assert a.count(path="/never") == 0


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_a_slot_freed_by_another_thread_wakes_an_async_waiter(
    replicas: list[Replica],
) -> None:
    """One pool shared by a sync transport (used from worker threads) and an async
    one: a sync response closed in a worker thread frees the slot that an async
    request on the event loop waits for."""
    a = replicas[0]
    pool = Pool([a.url], max_connections=1, max_pending=1)
    with httpx.Client(transport=clientlb.BalancingTransport(pool), base_url="http://svc") as sync:
        held = await anyio.to_thread.run_sync(
            lambda: sync.send(sync.build_request("GET", "/stream"), stream=True)
        )
        transport = clientlb.AsyncBalancingTransport(pool)
        async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
            answers: list[httpx.Response] = []
            async with anyio.create_task_group() as group:

                async def waiter() -> None:
                    answers.append(await client.get("/woken"))

                group.start_soon(waiter)
                await await_for(lambda: pool.snapshot()["pending"] == 1, "the request to wait")
                await anyio.to_thread.run_sync(held.close)
            assert answers[0].status_code == 200
    assert a.count(path="/woken") == 1
    assert pool.snapshot()["pending"] == 0
    assert all(m.in_flight == 0 for m in pool.members)
