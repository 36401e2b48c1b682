"""In-flight counts return to zero for any interleaving of pick, finish and cancel."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clientlb import ALGORITHMS, Health, Lease, Outcome, Pool
from clientlb._core import Member, NoUpstream

from .helpers import FakeClock, fast_algorithm, make_pool, urls

SETTINGS = settings(max_examples=40, deadline=None, derandomize=True, database=None)
OUTCOMES = list(Outcome)
UPS = urls(5)


def assert_counts(pool: Pool, seen: dict[int, Member], open_leases: list[Lease]) -> None:
    for m in seen.values():
        assert m.in_flight == sum(1 for lease in open_leases if lease.member is m)


@pytest.mark.parametrize("name", list(ALGORITHMS))
@SETTINGS
@given(ops=st.lists(st.tuples(st.integers(0, 12), st.integers(0, 1000)), max_size=80))
def test_in_flight_returns_to_zero(name: str, ops: list[tuple[int, int]]) -> None:
    clock = FakeClock()
    pool = make_pool(
        UPS, fast_algorithm(name), clock=clock, standbys=["http://standby"], slow_start=2.0
    )
    open_leases: list[Lease] = []
    closed: list[Lease] = []
    seen: dict[int, Member] = {id(m): m for m in pool._live_members()}
    for op, n in ops:
        if op <= 3 or not (open_leases or closed):
            try:
                lease = pool.pick(f"client-{n % 17}" if n % 2 else None)
            except NoUpstream:  # only draining upstreams are left, if any
                assert all(m.health is Health.DRAINING for m in pool.members)
                continue
            seen[id(lease.member)] = lease.member
            open_leases.append(lease)
        elif op <= 5 and open_leases:
            lease = open_leases.pop(n % len(open_leases))
            lease.finish(OUTCOMES[n % len(OUTCOMES)])
            closed.append(lease)
        elif op == 6 and open_leases:
            open_leases[n % len(open_leases)].responded((200, 503, 500, 404)[n % 4])
        elif op == 7 and closed:
            closed[n % len(closed)].finish(OUTCOMES[n % len(OUTCOMES)])  # twice: no effect
            closed[n % len(closed)].responded(200)  # after finish: no effect
        elif op == 8 and len(pool):
            pool.remove(pool.members[n % len(pool)].upstream)
        elif op == 9 and len(pool):
            pool.drain(pool.members[n % len(pool)].upstream, timeout=(None, 1.0)[n % 2])
        elif op == 10:
            url = UPS[n % len(UPS)]
            if all(m.upstream.url != url for m in pool.members):
                pool.add(url)
                seen.update({id(m): m for m in pool._live_members()})
        elif op == 11:
            clock.advance((0.1, 1.0, 15.0)[n % 3])
        elif op == 12 and open_leases:
            lease = open_leases.pop(n % len(open_leases))
            lease.finish(Outcome.CANCELLED)
            closed.append(lease)
        assert_counts(pool, seen, open_leases)
        for m in pool.members:
            assert m.health is not Health.DRAINING or m.in_flight > 0
    for lease in open_leases:
        lease.finish()
        lease.finish(Outcome.RESET)
    assert all(m.in_flight == 0 for m in seen.values())
    for m in pool.members:
        assert m.health is not Health.DRAINING


def test_finish_twice_counts_once() -> None:
    pool = make_pool(urls(2), "least_connections")
    lease = pool.pick()
    lease.finish(Outcome.CONNECT_FAILURE)
    lease.finish(Outcome.CONNECT_FAILURE)
    lease.finish()
    assert lease.member.in_flight == 0
    assert lease.member.failures == 1
    assert lease.member.requests == 1


def test_finish_after_remove_and_after_drain() -> None:
    ups = urls(3)
    pool = make_pool(ups, "least_connections")
    leases = [pool.pick() for _ in range(6)]
    by_url = {lease.upstream.url: lease.member for lease in leases}
    pool.remove(ups[0])
    pool.drain(ups[1])
    assert len(pool) == 2  # the drained one waits for its requests
    for lease in leases:
        lease.finish()
    assert len(pool) == 1
    assert all(m.in_flight == 0 for m in by_url.values())


def test_a_pool_emptied_at_run_time_raises_no_upstream() -> None:
    pool = make_pool(["http://a"])
    lease = pool.pick()
    pool.remove("http://a")
    with pytest.raises(NoUpstream):
        pool.pick()
    lease.finish()
    assert lease.member.in_flight == 0
