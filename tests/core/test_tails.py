"""Tails under heterogeneity: a slow upstream, a stalled one, a starved one.

The fleet runs on a fake clock: each request is answered after its upstream's
latency, and a new one is sent as soon as one ends, so the concurrency stays put.
"""

from __future__ import annotations

import heapq
import random

import pytest

from clientlb import Lease, Pool
from clientlb._core import Member

from .helpers import FakeClock, make_pool, member, pick_member, urls
from .test_load_aware import lrt_estimate


def run_fleet(
    pool: Pool, clock: FakeClock, latency: dict[str, float], seconds: float, concurrency: int
) -> dict[str, int]:
    """Keep ``concurrency`` requests in flight for ``seconds``; each takes its
    upstream's latency times 1 to 1.5. Counts the requests sent after the first
    second, per upstream."""
    rng = random.Random(4)
    start = clock()
    counts = dict.fromkeys(latency, 0)
    due: list[tuple[float, int, Lease]] = []
    sent = 0

    def send() -> None:
        nonlocal sent
        lease = pool.pick()
        url = lease.upstream.url
        if clock() - start >= 1.0:
            counts[url] += 1
        sent += 1
        heapq.heappush(due, (clock() + latency[url] * (1 + 0.5 * rng.random()), sent, lease))

    for _ in range(concurrency):
        send()
    while due:
        at, _, lease = heapq.heappop(due)
        clock.advance(max(0.0, at - clock()))
        lease.responded(200)
        lease.finish()
        if clock() - start < seconds:
            send()
    return counts


@pytest.mark.parametrize("name", ["least_response_time", "peak_ewma"])
def test_a_replica_100_times_slower_gets_at_most_a_thousandth(name: str) -> None:
    clock = FakeClock()
    ups = urls(10)
    latency = dict.fromkeys(ups, 0.01)
    latency[ups[-1]] = 1.0
    pool = make_pool(ups, name, clock=clock, outlier=None)
    counts = run_fleet(pool, clock, latency, seconds=4.0, concurrency=50)
    total = sum(counts.values())
    assert total > 10_000
    assert counts[ups[-1]] <= total / 1000, counts
    for url in ups[:-1]:  # the fast ones share the rest
        assert 0.8 * total / 9 <= counts[url] <= 1.2 * total / 9, counts


@pytest.mark.parametrize("name", ["least_response_time", "peak_ewma"])
def test_a_stalled_member_costs_its_wait_before_any_answer(name: str) -> None:
    """Its estimate says 10 ms, but a request has waited 500 ms: that counts."""
    clock = FakeClock()
    stalled, other = urls(2)
    pool = make_pool([stalled, other], name, clock=clock, outlier=None)
    for url in (stalled, other):
        lease = pick_member(pool, url)
        clock.advance(0.01)
        lease.responded(200)
        lease.finish()
    stuck = pick_member(pool, stalled)
    busy = [pick_member(pool, other) for _ in range(3)]
    clock.advance(0.01)
    for lease in busy:  # answered in 10 ms, still streaming: busy, no longer waiting
        lease.responded(200)
    clock.advance(0.49)
    # The estimates alone, 10 ms * 2 against 10 ms * 4, would pick the stalled one.
    picked = [pool.pick() for _ in range(3)]
    assert {lease.upstream.url for lease in picked} == {other}
    for lease in [stuck, *busy, *picked]:
        lease.finish()


def test_waiting_time_is_the_mean_wait_of_the_unanswered() -> None:
    """Requests start, get answers and end in any order; the member's O(1) account
    of the unanswered ones matches a list of them."""
    rng = random.Random(2)
    clock = FakeClock()
    pool = make_pool(urls(1), "least_response_time", clock=clock, outlier=None)
    m: Member = member(pool, urls(1)[0])
    open_leases: list[Lease] = []
    for _ in range(500):
        clock.advance(rng.choice([0.0, 0.001, 0.02]))
        action = rng.randrange(3)
        if action == 0 or not open_leases:
            open_leases.append(pool.pick())
        elif action == 1:
            rng.choice(open_leases).responded(200)
        else:
            open_leases.pop(rng.randrange(len(open_leases))).finish()
        waiting = [lease.started for lease in open_leases if lease.status is None]
        now = clock()
        assert m.waiting == len(waiting)
        expected = sum(now - s for s in waiting) / len(waiting) if waiting else 0.0
        assert m.waited(now) == pytest.approx(expected, abs=1e-9)


def test_a_member_slow_at_first_is_retried_and_wins_back_its_share() -> None:
    """Its first answers took 100 ms, then it got as fast as the others: it was
    never picked again (its EWMA only moves when it is). Its idle estimate now
    fades, so it is retried, and the fresh sample counts for most."""
    clock = FakeClock()
    ups = urls(3)
    pool = make_pool(ups, "least_response_time", clock=clock, outlier=None)
    slow = member(pool, ups[0])
    for _ in range(3):
        lease = pick_member(pool, ups[0])
        clock.advance(0.1)
        lease.responded(200)
        lease.finish()
    retried_at = None
    while retried_at is None and clock() < 1060.0:
        lease = pool.pick()
        if lease.member is slow:
            retried_at = clock() - 1000.0
        clock.advance(0.01)
        lease.responded(200)
        lease.finish()
    # 100 ms fades to the others' 10 ms in 10 s * ln(10), about 23 s
    assert retried_at is not None and 20.0 <= retried_at <= 26.0
    for _ in range(6000):  # a minute: retried sooner each time, as it proves fast
        lease = pool.pick()
        clock.advance(0.01)
        lease.responded(200)
        lease.finish()
    counts = dict.fromkeys(ups, 0)
    for _ in range(300):
        lease = pool.pick()
        clock.advance(0.01)
        lease.responded(200)
        lease.finish()
        counts[lease.upstream.url] += 1
    assert counts == dict.fromkeys(ups, 100)


def test_an_idle_estimate_fades_and_a_late_sample_weighs_more() -> None:
    clock = FakeClock()
    pool = make_pool(urls(1), "least_response_time", clock=clock, outlier=None)
    m = member(pool, urls(1)[0])
    lease = pool.pick()
    clock.advance(0.1)
    lease.responded(200)
    lease.finish()
    clock.advance(10.0)
    assert lrt_estimate(m, clock()) == pytest.approx(0.1 / 2.718281828459045)
    assert pool._tiers[0].algorithm.score(m, clock()) == pytest.approx(lrt_estimate(m, clock()))
    clock.advance(20.0)
    lease = pool.pick()
    clock.advance(0.01)
    lease.responded(200)  # 30 s after the last sample: it weighs 1 - e**-3, 95%
    lease.finish()
    assert m.ewma == pytest.approx(0.1 + (1 - 2.718281828459045**-3) * (0.01 - 0.1), rel=1e-3)


def test_least_response_time_one_at_a_time_follows_the_weights() -> None:
    from clientlb import Upstream

    clock = FakeClock()
    ups = [Upstream("http://a", weight=5), Upstream("http://b"), Upstream("http://c")]
    pool = make_pool(ups, "least_response_time", clock=clock)
    counts = {"http://a": 0, "http://b": 0, "http://c": 0}
    for _ in range(700):
        lease = pool.pick()
        clock.advance(0.01)
        lease.responded(200)
        lease.finish()
        counts[lease.upstream.url] += 1
    assert 495 <= counts["http://a"] <= 505, counts
    assert 95 <= counts["http://b"] <= 105 and 95 <= counts["http://c"] <= 105, counts
