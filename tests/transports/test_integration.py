"""The transports against real uvicorn replicas on loopback, through real httpx
clients: a sync client shared by 16 threads, and async clients under asyncio and
trio. Replicas answer with the name of the replica that served the request and
count what they received, so each test checks what the servers actually saw.

Synchronisation is by polling with a deadline, never by a fixed sleep.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import anyio
import pytest

from clientlb import OutlierDetection, Pool, RetryPolicy, Upstream

from ..replicas import Replica, closed_port
from ..waiting import await_for, wait_for
from ._support import Flavour, clientlb, httpx, in_flight

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

THREADS = 16
#: Short ejections so that a revived replica is re-admitted quickly.
QUICK_OUTLIER = OutlierDetection(
    consecutive_local_failures=1, base_ejection_time=0.2, max_ejection_time=0.4
)


@pytest.fixture(scope="module")
def three() -> Iterator[list[Replica]]:
    """Three replicas shared by the tests of this module that neither stop nor
    restart them (``fresh`` resets them before each test)."""
    started = [Replica(f"m{i}").start() for i in range(3)]
    yield started
    for r in started:
        r.stop()


@pytest.fixture
def fresh(three: list[Replica]) -> Iterator[list[Replica]]:
    for r in three:
        r.reset()
        r.delay, r.status, r.drop = 0.0, 200, False
        r.release.clear()
    yield three
    for r in three:
        r.release.set()  # unblock any stream a failed test left open


def urls(replicas: list[Replica]) -> list[str]:
    return [r.url for r in replicas]


def served(response: httpx.Response) -> str:
    """The URL of the upstream that gave ``response``."""
    attempts = response.extensions["clientlb.attempts"]
    upstream: str = attempts[-1].upstream
    return upstream


def counts(replicas: list[Replica], **match: Any) -> list[int]:
    return [r.count(**match) for r in replicas]


def idle(transport: Any) -> bool:
    return not any(in_flight(transport).values())


# -- distribution: sync client shared by 16 threads ---------------------------------------


def run_threads(client: httpx.Client, per_thread: int, path: str = "/") -> list[httpx.Response]:
    def work(_: int) -> list[httpx.Response]:
        return [client.get(path) for _ in range(per_thread)]

    with ThreadPoolExecutor(THREADS) as pool:
        return [r for batch in pool.map(work, range(THREADS)) for r in batch]


def test_threads_round_robin_is_exactly_even(fresh: list[Replica]) -> None:
    transport = clientlb.BalancingTransport(urls(fresh), algorithm="round_robin")
    with httpx.Client(transport=transport, base_url="http://svc") as client:
        responses = run_threads(client, per_thread=12)
    assert all(r.status_code == 200 for r in responses)
    assert counts(fresh) == [64, 64, 64]
    assert idle(transport)


@pytest.mark.parametrize("algorithm", ["least_connections", "random", "power_of_two"])
def test_threads_spread_roughly_evenly(fresh: list[Replica], algorithm: str) -> None:
    pool = Pool(urls(fresh), algorithm=algorithm, rng=random.Random(7))
    transport = clientlb.BalancingTransport(pool)
    with httpx.Client(transport=transport, base_url="http://svc") as client:
        responses = run_threads(client, per_thread=15)
    assert all(r.status_code == 200 for r in responses)
    seen = counts(fresh)
    assert sum(seen) == 240
    if algorithm == "random":
        # The seeded draws fix the counts whatever the threads' interleaving.
        assert all(50 <= n <= 110 for n in seen), seen  # 80 expected each, 7 sd
    else:
        # Load-aware: a replica that the scheduler favours answers sooner and so
        # takes more; every replica still takes part and none takes most.
        assert all(30 <= n <= 150 for n in seen), seen
    assert idle(transport)


def test_threads_share_one_transport_safely_with_streams(fresh: list[Replica]) -> None:
    """16 threads each hold a streamed response open: least_connections sees them
    all, then every count returns to zero."""
    transport = clientlb.BalancingTransport(urls(fresh), algorithm="least_connections")
    opened = threading.Barrier(THREADS + 1)
    with httpx.Client(transport=transport, base_url="http://svc") as client:

        def hold(_: int) -> bytes:
            with client.stream("GET", "/stream?chunks=2") as r:
                opened.wait(5)
                return r.read()

        with ThreadPoolExecutor(THREADS) as pool:
            bodies = pool.map(hold, range(THREADS))
            try:
                opened.wait(5)  # every thread has its response headers
                assert sorted(in_flight(transport).values()) == [5, 5, 6]
                assert sorted(counts(fresh, path="/stream")) == [5, 5, 6]
            finally:
                for r in fresh:
                    r.release.set()
            assert all(body == b"chunk\nend\n" for body in bodies)
    assert idle(transport)


# -- distribution: async clients -----------------------------------------------------------


async def test_round_robin_and_weighted_round_robin(fresh: list[Replica]) -> None:
    rr = clientlb.AsyncBalancingTransport(urls(fresh), algorithm="round_robin")
    async with httpx.AsyncClient(transport=rr, base_url="http://svc") as client:
        order = [served(await client.get("/")) for _ in range(30)]
    assert counts(fresh) == [10, 10, 10]
    assert order[:3] * 10 == order  # a fixed cyclic order
    for r in fresh:
        r.reset()

    weighted: list[str | Upstream] = [Upstream(fresh[0].url, weight=3), fresh[1].url, fresh[2].url]
    wrr = clientlb.AsyncBalancingTransport(weighted, algorithm="weighted_round_robin")
    async with httpx.AsyncClient(transport=wrr, base_url="http://svc") as client:
        order = [served(await client.get("/")) for _ in range(100)]
    assert counts(fresh) == [60, 20, 20]
    a, b, c = urls(fresh)
    # nginx's smooth sequence; b or c first (a random one of equal weight)
    assert order[:5] in ([a, b, a, c, a], [a, c, a, b, a])
    for period in range(20):  # exact over every period, not just in total
        assert Counter(order[5 * period : 5 * period + 5]) == {a: 3, b: 1, c: 1}


@pytest.mark.parametrize("algorithm", ["random", "power_of_two", "least_connections"])
async def test_random_choices_are_roughly_even(fresh: list[Replica], algorithm: str) -> None:
    pool = Pool(urls(fresh), algorithm=algorithm, rng=random.Random(11))
    transport = clientlb.AsyncBalancingTransport(pool)
    async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
        for _ in range(240):
            assert (await client.get("/")).status_code == 200
    seen = counts(fresh)
    assert all(50 <= n <= 110 for n in seen), seen  # 80 expected each


@pytest.mark.parametrize("algorithm", ["consistent_hash", "ip_hash"])
async def test_hashing_sticks_each_key_to_one_replica(fresh: list[Replica], algorithm: str) -> None:
    transport = clientlb.AsyncBalancingTransport(
        urls(fresh), algorithm=algorithm, hash_on="header:X-User"
    )
    placed: dict[str, set[str]] = {}
    async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
        for _ in range(3):
            for user in range(30):
                r = await client.get("/me", headers={"X-User": f"u{user}"})
                placed.setdefault(f"u{user}", set()).add(r.json()["replica"])
    assert all(len(where) == 1 for where in placed.values()), placed
    assert len({w for where in placed.values() for w in where}) == 3
    assert sum(counts(fresh)) == 90


async def test_least_connections_balances_open_streams(
    flavour: Flavour, fresh: list[Replica]
) -> None:
    transport = flavour.transport(urls(fresh), algorithm="least_connections")
    async with flavour.client(transport) as client:
        streams = [await client.send_streaming("GET", "/stream") for _ in range(6)]
        assert in_flight(transport) == dict.fromkeys(urls(fresh), 2)
        assert counts(fresh, path="/stream") == [2, 2, 2]
        # finish the two streams of the middle replica: it becomes the least loaded
        fresh[1].release.set()
        for s in [s for s in streams if served(s) == fresh[1].url]:
            if flavour.is_async:
                assert await s.aread() == b"chunk\nchunk\nend\n"
            else:
                assert s.read() == b"chunk\nchunk\nend\n"
            await client.close_response(s)
        assert in_flight(transport)[fresh[1].url] == 0
        more = [await client.send_streaming("GET", "/stream") for _ in range(2)]
        assert [served(s) for s in more] == [fresh[1].url] * 2
        assert in_flight(transport) == dict.fromkeys(urls(fresh), 2)
        for r in fresh:
            r.release.set()
        for s in streams + more:
            await client.close_response(s)
    assert idle(transport)
    assert counts(fresh, path="/stream") == [2, 4, 2]


# -- latency-aware algorithms --------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["least_response_time", "peak_ewma"])
async def test_slow_replica_gets_clearly_less_traffic(fresh: list[Replica], algorithm: str) -> None:
    slow = fresh[0]
    slow.delay = 0.05
    transport = clientlb.AsyncBalancingTransport(urls(fresh), algorithm=algorithm)
    async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:

        async def worker() -> None:
            for _ in range(30):
                assert (await client.get("/")).status_code == 200

        async with anyio.create_task_group() as tg:
            for _ in range(8):
                tg.start_soon(worker)
    slow_count, *fast = counts(fresh)
    assert slow_count + sum(fast) == 240
    # an even share is 80: the slow one gets well under half of any fast one's
    assert slow_count * 2 < min(fast), (slow_count, fast)
    assert idle(transport)


# -- failover to the standby and back --------------------------------------------------------


async def test_failover_to_standby_and_back_async(
    replicas: list[Replica], standby: Replica
) -> None:
    transport = clientlb.AsyncBalancingTransport(
        urls(replicas), standbys=[standby.url], outlier=QUICK_OUTLIER
    )
    errors: list[BaseException] = []
    statuses: Counter[int] = Counter()
    async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
        for _ in range(9):
            assert (await client.get("/")).status_code == 200
        assert counts(replicas) == [3, 3, 3] and standby.count() == 0

        async def load(stop: anyio.Event) -> None:
            while not stop.is_set():
                try:
                    statuses[(await client.get("/")).status_code] += 1
                except Exception as exc:
                    errors.append(exc)
                await anyio.sleep(0)

        stop = anyio.Event()
        async with anyio.create_task_group() as tg:
            for _ in range(4):
                tg.start_soon(load, stop)
            for r in replicas:
                await anyio.to_thread.run_sync(r.stop)
            await await_for(lambda: standby.count() >= 20, "the standby to serve")
            before = counts(replicas)
            for r in replicas:
                await anyio.to_thread.run_sync(r.start)
            await await_for(
                lambda: all(n > b for n, b in zip(counts(replicas), before, strict=True)),
                "traffic to return to every primary",
            )
            stop.set()
        assert errors == [], errors[:3]
        assert set(statuses) == {200}
        # back on the primaries: the standby is idle again
        for r in [*replicas, standby]:
            r.reset()
        for _ in range(12):
            assert (await client.get("/")).status_code == 200
        assert standby.count() == 0 and sum(counts(replicas)) == 12
    assert idle(transport)


def test_failover_to_standby_and_back_threads(replicas: list[Replica], standby: Replica) -> None:
    transport = clientlb.BalancingTransport(
        urls(replicas), standbys=[standby.url], outlier=QUICK_OUTLIER
    )
    errors: list[BaseException] = []
    ok = Counter[int]()
    lock = threading.Lock()
    stop = threading.Event()
    with httpx.Client(transport=transport, base_url="http://svc") as client:

        def load(_: int) -> None:
            while not stop.is_set():
                try:
                    status = client.get("/").status_code
                except Exception as exc:
                    with lock:
                        errors.append(exc)
                else:
                    with lock:
                        ok[status] += 1

        with ThreadPoolExecutor(THREADS) as pool:
            futures = [pool.submit(load, i) for i in range(THREADS)]
            try:
                wait_for(lambda: sum(counts(replicas)) >= 30, "traffic on the primaries")
                assert standby.count() == 0
                for r in replicas:
                    r.stop()
                wait_for(lambda: standby.count() >= 30, "the standby to serve")
                before = counts(replicas)
                for r in replicas:
                    r.start()
                wait_for(
                    lambda: all(n > b for n, b in zip(counts(replicas), before, strict=True)),
                    "traffic to return to every primary",
                )
            finally:
                stop.set()
            for f in futures:
                f.result()
        assert errors == [], errors[:3]
        assert set(ok) == {200}
        for r in [*replicas, standby]:
            r.reset()
        for _ in range(12):
            assert client.get("/").status_code == 200
        assert standby.count() == 0 and sum(counts(replicas)) == 12
    assert idle(transport)


# -- what is (not) resent ------------------------------------------------------------------


async def test_post_that_reached_a_failing_replica_is_not_resent(
    flavour: Flavour, fresh: list[Replica]
) -> None:
    dropper = fresh[0]
    dropper.drop = True
    transport = flavour.transport(urls(fresh), outlier=None)
    errors = 0
    async with flavour.client(transport) as client:
        for i in range(12):
            try:
                r = await client.request("POST", "/orders", content=f"order {i}".encode())
            except httpx.RemoteProtocolError as exc:
                errors += 1
                attempts = exc.attempts  # type: ignore[attr-defined]
                assert [(a.upstream, a.outcome) for a in attempts] == [(dropper.url, "reset")]
            else:
                assert r.status_code == 200 and r.json()["replica"] != dropper.name
        assert errors == 4  # round robin: a third of them reached the dropper
        assert counts(fresh, method="POST") == [4, 4, 4]  # each received once, none resent
        # a GET is idempotent: it goes on to another replica and succeeds
        for _ in range(6):
            assert (await client.request("GET", "/")).status_code == 200
        assert sum(counts(fresh, method="GET")) == 6 + dropper.count(method="GET")
        assert dropper.count(method="GET") >= 2
    assert idle(transport)


async def test_post_is_resent_only_when_the_user_opts_in(
    flavour: Flavour, fresh: list[Replica]
) -> None:
    fresh[0].drop = True
    retry = RetryPolicy(retry_non_idempotent=True)
    transport = flavour.transport(urls(fresh), outlier=None, retry=retry)
    async with flavour.client(transport) as client:
        for _ in range(6):
            assert (await client.request("POST", "/orders", content=b"x")).status_code == 200
    assert sum(counts(fresh[1:], method="POST")) == 6
    assert fresh[0].count(method="POST") >= 2
    assert idle(transport)


async def test_post_never_connected_goes_to_another_replica(
    flavour: Flavour, fresh: list[Replica]
) -> None:
    transport = flavour.transport([closed_port(), fresh[0].url], outlier=None)
    async with flavour.client(transport) as client:
        for i in range(6):
            r = await client.request("POST", "/orders", content=f"{i}".encode())
            assert r.status_code == 200
    assert fresh[0].count(method="POST") == 6
    assert idle(transport)


# -- in-flight accounting ------------------------------------------------------------------


async def test_streamed_response_is_in_flight_until_closed(
    flavour: Flavour, fresh: list[Replica]
) -> None:
    replica = fresh[0]
    transport = flavour.transport([replica.url])
    async with flavour.client(transport) as client:
        r = await client.send_streaming("GET", "/stream?chunks=3")
        try:
            assert r.status_code == 200
            assert in_flight(transport) == {replica.url: 1}
            replica.release.set()
            chunks = []
            if flavour.is_async:
                async for chunk in r.aiter_raw():
                    chunks.append(chunk)
                    assert in_flight(transport) == {replica.url: 1}
            else:
                for chunk in r.iter_raw():
                    chunks.append(chunk)
                    assert in_flight(transport) == {replica.url: 1}
            assert b"".join(chunks) == b"chunk\nchunk\nend\n"
            assert r.is_closed  # httpx closes a response read to its end ...
            assert in_flight(transport) == {replica.url: 0}  # ... which ends the lease
        finally:
            await client.close_response(r)
        snapshot = transport.snapshot()["upstreams"][0]
        assert (snapshot["requests"], snapshot["failures"]) == (1, 0)
        # a response closed before its body was read ends the lease as well
        r = await client.send_streaming("GET", "/stream?chunks=3")
        assert in_flight(transport) == {replica.url: 1}
        await client.close_response(r)
        assert in_flight(transport) == {replica.url: 0}


def test_abandoned_iteration_keeps_the_lease_until_close(fresh: list[Replica]) -> None:
    """Leaving a ``for`` loop over the body early does not close the response: the
    replica stays in flight until ``close()``."""
    replica = fresh[0]
    transport = clientlb.BalancingTransport([replica.url])
    with httpx.Client(transport=transport, base_url="http://svc") as client:
        with client.stream("GET", "/stream?chunks=3") as r:
            for chunk in r.iter_raw():
                assert chunk.startswith(b"chunk")
                break
            assert not r.is_closed
            assert in_flight(transport) == {replica.url: 1}
        assert in_flight(transport) == {replica.url: 0}
        assert transport.snapshot()["upstreams"][0]["failures"] == 0


async def test_in_flight_returns_to_zero_after_errors(
    flavour: Flavour, fresh: list[Replica]
) -> None:
    dropper, sick, slow = fresh
    dropper.drop, sick.status, slow.delay = True, 503, 0.3
    refused = closed_port()
    transport = flavour.transport([*urls(fresh), refused], outlier=None)
    async with flavour.client(transport, timeout=0.1) as client:
        outcomes = Counter[str]()
        for _ in range(6):
            try:
                r = await client.request("GET", "/")
            except httpx.TransportError as exc:
                outcomes[type(exc).__name__] += 1
            else:
                outcomes[str(r.status_code)] += 1
            assert idle(transport)
        # every kind of failure was met: reset, 503, timeout, refused
        snapshot = {u["url"]: u for u in transport.snapshot()["upstreams"]}
        assert all(snapshot[u]["failures"] > 0 for u in [*urls(fresh), refused]), snapshot
        assert sum(outcomes.values()) == 6 and "200" not in outcomes
    assert idle(transport)


async def test_cancellation_releases_the_lease(fresh: list[Replica]) -> None:
    slow = fresh[0]
    slow.delay = 0.3
    transport = clientlb.AsyncBalancingTransport([slow.url])
    async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as tg:
                tg.start_soon(client.get, "/")
                await await_for(lambda: slow.count() == 1, "the request to arrive")
                assert in_flight(transport) == {slow.url: 1}
                scope.cancel()
        assert scope.cancelled_caught
        assert in_flight(transport) == {slow.url: 0}
        snapshot = transport.snapshot()["upstreams"][0]
        assert snapshot["failures"] == 0  # the caller gave up: no fault of the replica
        slow.delay = 0.0
        assert (await client.get("/")).status_code == 200  # the transport still works
    assert idle(transport)


async def test_cancellation_while_reading_a_stream_releases_the_lease(
    fresh: list[Replica],
) -> None:
    replica = fresh[0]
    transport = clientlb.AsyncBalancingTransport([replica.url])
    async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
        got: list[bytes] = []
        with anyio.move_on_after(5) as scope:
            async with client.stream("GET", "/stream?chunks=3") as r:
                async for chunk in r.aiter_raw():
                    got.append(chunk)
                    assert in_flight(transport) == {replica.url: 1}
                    if got:
                        scope.cancel()  # the replica holds the last chunk back
        assert scope.cancelled_caught and got
        assert in_flight(transport) == {replica.url: 0}
    assert idle(transport)
