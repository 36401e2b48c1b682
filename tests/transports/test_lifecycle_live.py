"""The request lifecycle through the transports against real replicas: the
call's deadline, the error a failed call ends in, the "nothing can serve" rule,
cancellation while a retry waits, and hedges."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import anyio
import pytest

from clientlb import HealthCheck, RetryPolicy

from ..in_order import InOrder
from ..replicas import Replica, closed_port
from ..waiting import await_for
from ._support import Flavour, assert_idle, clientlb, httpx, in_flight

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

CHECK = HealthCheck(path="/health", interval=0.05, timeout=1.0, rise=1, fall=1)


@pytest.fixture(scope="module")
def two_slow() -> Iterator[list[Replica]]:
    """Two replicas that take 2 s to answer (shared: stopping one waits for its
    graceful shutdown)."""
    replicas = [Replica(f"slow{i}", delay=2.0).start() for i in range(2)]
    yield replicas
    for replica in replicas:
        replica.stop()


async def test_the_call_deadline_against_two_slow_replicas(
    flavour: Flavour, two_slow: list[Replica]
) -> None:
    """``timeout=0.5`` and two 2 s replicas: the call ends within 0.6 s with an
    ``httpx.TimeoutException`` that carries its attempts."""
    policy = RetryPolicy(timeout=0.5, budget=None)
    transport = flavour.transport([r.url for r in two_slow], retry=policy, outlier=None)
    async with flavour.client(transport) as client:
        started = time.monotonic()
        with pytest.raises(httpx.TimeoutException) as info:
            await client.request("GET", "/slow")
        elapsed = time.monotonic() - started
    assert elapsed <= 0.6
    assert isinstance(info.value, clientlb.NoUpstreamAvailable)
    assert [a.outcome for a in info.value.attempts] == ["timeout"]
    assert_idle(transport)


async def test_every_replica_dead_is_both_errors(flavour: Flavour) -> None:
    dead = [closed_port(), closed_port()]
    transport = flavour.transport(dead, outlier=None)
    async with flavour.client(transport) as client:
        with pytest.raises(httpx.ConnectError) as info:
            await client.request("GET", "/x")
    assert isinstance(info.value, clientlb.NoUpstreamAvailable)
    assert sorted(a.upstream for a in info.value.attempts) == sorted(dead)
    assert {a.outcome for a in info.value.attempts} == {"connect_failure"}
    assert_idle(transport)


async def test_checked_down_everywhere_fails_fast_without_dialing(flavour: Flavour) -> None:
    """Active checks have every upstream of every tier down: the call is refused
    at once, no request reaches a replica; traffic returns with the first
    replica checked healthy again."""
    with Replica("a") as a, Replica("b") as b, Replica("standby") as standby:
        for replica in (a, b, standby):
            replica.health_status = 503
        transport = flavour.transport([a.url, b.url], [standby.url], health_check=CHECK)
        async with flavour.client(transport) as client:
            await await_for(
                lambda: all(m.health is clientlb.Health.DOWN for m in transport.pool.members),
                "every replica checked down",
            )
            started = time.monotonic()
            with pytest.raises(clientlb.NoUpstreamAvailable) as info:
                await client.request("GET", "/x")
            assert time.monotonic() - started < 0.1
            assert not isinstance(info.value, httpx.ConnectError)
            assert info.value.attempts == ()
            assert [r.count(path="/x") for r in (a, b, standby)] == [0, 0, 0]
            b.health_status = 200
            await await_for(
                lambda: transport.pool.members[1].health is clientlb.Health.HEALTHY, "b back"
            )
            r = await client.request("GET", "/x")
            assert json.loads(r.content)["replica"] == "b"
        assert_idle(transport)


async def test_cancelled_calls_in_backoff_release_leases_and_connections(
    anyio_backend: str,
) -> None:
    """Both replicas answer 503 and the policy backs off 1 s before retrying;
    100 calls are each cancelled after 0.2 s, in the backoff. Every lease ends
    and every pooled connection is back, idle."""
    with Replica("a", status=503) as a, Replica("b", status=503) as b:
        policy = RetryPolicy(backoff=1.0, budget=None)
        transport = clientlb.AsyncBalancingTransport([a.url, b.url], retry=policy, outlier=None)
        async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:

            async def call() -> None:
                with anyio.move_on_after(0.2) as scope:
                    await client.get("/x")
                assert scope.cancelled_caught

            async with anyio.create_task_group() as tg:
                for _ in range(100):
                    tg.start_soon(call)
            assert in_flight(transport) == {a.url: 0, b.url: 0}
            assert a.count() + b.count() <= 100  # first attempts only: no retry went out
            busy = [c for c in connections(transport) if not (c.is_idle() or c.is_closed())]
            assert busy == []
            a.status = b.status = 200
            assert (await client.get("/x")).status_code == 200


def connections(transport: clientlb.AsyncBalancingTransport) -> list[Any]:
    """The pooled upstream connections of ``transport``'s inner transports."""
    found: list[Any] = []
    for inner in transport._inners._by_key.values():
        found.extend(inner._pool.connections)
    return found


async def test_a_slow_replica_is_hedged(anyio_backend: str) -> None:
    with Replica("slow", delay=1.0) as slow, Replica("fast") as fast:
        policy = RetryPolicy(hedge_after=0.05, budget=None)
        transport = clientlb.AsyncBalancingTransport(
            [slow.url, fast.url], algorithm=InOrder, retry=policy
        )
        async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
            started = time.monotonic()
            r = await client.get("/x")
            elapsed = time.monotonic() - started
        assert json.loads(r.content)["replica"] == "fast" and elapsed < 0.6
        outcomes = sorted((a.outcome, a.upstream) for a in r.extensions["clientlb.attempts"])
        assert outcomes == [("cancelled", slow.url), ("response", fast.url)]
        assert (slow.count(), fast.count()) == (1, 1)
        assert_idle(transport)
