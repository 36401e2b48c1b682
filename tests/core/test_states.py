"""The state table and the timed states: each with its own deadline, each shown
and announced as what it is."""

from __future__ import annotations

import itertools

import pytest

from clientlb import Health, Outcome, OutlierDetection, Pool
from clientlb._core._state import PANIC_ELIGIBLE, SERVING, TIMED, Event, transition

from .helpers import (
    FakeClock,
    fail,
    fast_algorithm,
    make_pool,
    member,
    pick_member,
    served,
    state,
    urls,
)

H, E = Health, Event


def test_the_table_in_full() -> None:
    """Every (state, event) pair: the listed ones move, all others stay."""
    moves = {
        (H.HEALTHY, E.RAMP): H.SLOW_START,
        (H.SLOW_START, E.RAMP_END): H.HEALTHY,
        (H.HEALTHY, E.HOLD): H.RECOVERING,
        (H.RECOVERING, E.HOLD_END): H.HEALTHY,
        (H.HEALTHY, E.EJECT): H.EJECTED,
        (H.SLOW_START, E.EJECT): H.EJECTED,
        (H.RECOVERING, E.EJECT): H.EJECTED,
        (H.EJECTED, E.EXPIRE): H.HEALTHY,
        (H.EJECTED, E.CHECK_PASS): H.HEALTHY,
        (H.EJECTED, E.CHECK_UP): H.HEALTHY,
        (H.EJECTED, E.PROBE_PASS): H.HEALTHY,
        (H.DOWN, E.CHECK_UP): H.HEALTHY,
    }
    moves |= {(s, E.CHECK_DOWN): H.DOWN for s in H if s not in (H.DOWN, H.DRAINING)}
    moves |= {(s, E.DRAIN): H.DRAINING for s in H if s is not H.DRAINING}
    for state_, event in itertools.product(Health, Event):
        assert transition(state_, event) is moves.get((state_, event), state_), (state_, event)


def test_state_sets() -> None:
    assert {H.HEALTHY, H.SLOW_START} == SERVING
    assert set(Health) - PANIC_ELIGIBLE == {H.DOWN, H.DRAINING}
    assert set(TIMED) == {H.EJECTED, H.RECOVERING, H.SLOW_START}
    assert [s.value for s in Health] == [
        "healthy",
        "slow-start",
        "recovering",
        "ejected",
        "down",
        "draining",
    ]


def test_slow_start_is_a_state_that_ends_on_its_own_deadline() -> None:
    clock = FakeClock()
    pool = make_pool(urls(2), clock=clock, slow_start=10.0)
    pool.add("http://new:1")
    m = member(pool, "http://new:1")
    assert m.health is H.SLOW_START and m.ramp_until == clock.now + 10.0
    clock.advance(9.99)
    assert state(pool, "http://new:1") == "slow-start"
    clock.advance(0.01)
    assert state(pool, "http://new:1") == "healthy"
    assert m.health is H.HEALTHY


def test_each_timed_state_keeps_its_own_deadline() -> None:
    clock = FakeClock()
    ups = urls(2)
    pool = make_pool(ups, clock=clock, standbys=["http://s:1"], fail_back_after=5.0)
    fail(pool, ups[0], 5)
    fail(pool, ups[1], 5)
    a, b = member(pool, ups[0]), member(pool, ups[1])
    assert a.health is b.health is H.EJECTED
    assert a.ejected_until == b.ejected_until == clock.now + 10.0
    ejected_until = a.ejected_until
    clock.advance(10.0)  # ejections over; the standby serves: both held
    assert state(pool, ups[0]) == state(pool, ups[1]) == "recovering"
    assert (a.ejected_until, a.held_until) == (ejected_until, clock.now + 5.0)
    lease = pick_member(pool, "http://s:1")  # keeps the standby busy
    pool.drain("http://s:1", timeout=2.0)
    s = member(pool, "http://s:1")
    assert s.drain_deadline == clock.now + 2.0
    clock.advance(1.0)
    assert state(pool, "http://s:1") == "draining"
    clock.advance(1.0)
    assert state(pool, "http://s:1") == "removed"  # its own deadline, not the holds'
    assert state(pool, ups[0]) == "healthy"  # and with no standby, no hold
    lease.finish()


def test_a_hold_does_not_end_a_drain() -> None:
    clock = FakeClock()
    pool = make_pool(["http://p:1"], clock=clock, standbys=["http://s:1"], fail_back_after=5.0)
    busy = pick_member(pool, "http://p:1")
    fail(pool, "http://p:1", 5)
    clock.advance(10.0)
    assert state(pool, "http://p:1") == "recovering"
    pool.drain("http://p:1")  # no deadline: it leaves when `busy` ends
    clock.advance(60.0)  # past the hold and any old ejection
    pool.pick().finish()
    assert state(pool, "http://p:1") == "draining"
    busy.finish()
    assert state(pool, "http://p:1") == "removed"


def test_a_member_ejected_while_slow_starting_ramps_again_when_back() -> None:
    clock = FakeClock()
    ups = urls(3)
    pool = make_pool(ups[:2], clock=clock, slow_start=30.0)
    pool.add(ups[2])
    fail(pool, ups[2], 5)
    assert state(pool, ups[2]) == "ejected"
    clock.advance(10.0)
    assert state(pool, ups[2]) == "slow-start"
    assert member(pool, ups[2]).ramp_until == clock.now + 30.0


def test_a_held_primary_tried_as_a_last_resort_can_be_ejected() -> None:
    clock = FakeClock()
    rules = OutlierDetection(consecutive_local_failures=1)
    pool = make_pool(
        ["http://p:1"], clock=clock, standbys=["http://s:1"], fail_back_after=5.0, outlier=rules
    )
    fail(pool, "http://p:1", 1)
    clock.advance(10.0)
    assert state(pool, "http://p:1") == "recovering"
    tried = [m for m in pool.members if m.url == "http://s:1"]
    lease = pool.pick(exclude=tried, last_resort=True)
    assert lease.upstream.url == "http://p:1"
    lease.finish(Outcome.CONNECT_FAILURE)
    assert state(pool, "http://p:1") == "ejected"
    assert member(pool, "http://p:1").ejected_until == clock.now + 20.0  # the second in a row


def test_listeners_hear_each_state_it_lands_in() -> None:
    clock = FakeClock()
    events: list[tuple[str, str]] = []
    pool = make_pool(
        ["http://p:1"],
        clock=clock,
        standbys=["http://s:1"],
        fail_back_after=5.0,
        slow_start=10.0,
    )
    pool.subscribe(lambda event, m: events.append((event, m.state)))
    fail(pool, "http://p:1", 5)
    clock.advance(10.0)
    served(pool, 1)  # any reading runs the timers due
    clock.advance(5.0)
    served(pool, 1)
    clock.advance(10.0)
    served(pool, 1)
    pool.report_check("http://p:1", False)
    pool.report_check("http://p:1", True)
    assert events == [
        ("ejected", "ejected"),
        ("recovering", "recovering"),  # one event: back, and held (Rule 2)
        ("slow-start", "slow-start"),  # the hold is over: ramping
        ("healthy", "healthy"),  # the ramp is over
        ("down", "down"),
        ("recovering", "recovering"),  # back from down while the standby serves
    ]


def test_holds_end_when_nothing_else_serves() -> None:
    """A hold keeps traffic on the standbys; once they cannot serve, a primary
    that is back serves rather than the pool panicking over ejected ones."""
    clock = FakeClock()
    rules = OutlierDetection(consecutive_local_failures=1)
    pool = make_pool(
        ["http://p:1"], clock=clock, standbys=["http://s:1"], fail_back_after=30.0, outlier=rules
    )
    fail(pool, "http://p:1", 1)
    clock.advance(10.0)
    assert state(pool, "http://p:1") == "recovering"
    fail(pool, "http://s:1", 1)
    assert served(pool, 20) == {"http://p:1": 20}
    assert not pool.panicking
    assert state(pool, "http://p:1") == "healthy"


@pytest.mark.parametrize("timeout", [None, 3.0])
def test_draining_twice_takes_the_later_deadline(timeout: float | None) -> None:
    clock = FakeClock()
    ups = urls(2)
    pool = make_pool(ups, clock=clock)
    lease = pick_member(pool, ups[0])
    pool.drain(ups[0], timeout=1.0)
    pool.drain(ups[0], timeout=timeout)
    clock.advance(1.0)
    assert state(pool, ups[0]) == "draining"
    clock.advance(2.0)
    assert state(pool, ups[0]) == ("draining" if timeout is None else "removed")
    lease.finish()
    assert state(pool, ups[0]) == "removed"


def test_tier_counts_follow_every_state() -> None:
    clock = FakeClock()
    ups = urls(4)
    pool: Pool = make_pool(
        ups[:3], clock=clock, standbys=ups[3:], slow_start=5.0, fail_back_after=2.0
    )
    for step in range(40):
        url = ups[step % 4]
        action = step % 5
        if action == 0 and state(pool, url) in ("healthy", "slow-start"):
            fail(pool, url, 5)
        elif action == 1:
            pool.report_check(url, step % 3 == 0)
        elif action == 2:
            clock.advance(3.0)
        elif action == 3:
            pool.update(ups[:3], ups[3:])
        else:
            pool.drain(url)
            pool.add(url, standby=url == ups[3])
        pool.snapshot()
        for tier in pool._tiers:
            for s in Health:
                assert tier.counts[s] == sum(m.health is s for m in tier.members), (step, s)


@pytest.mark.parametrize("name", ["consistent_hash", "ip_hash"])
def test_hashing_pools_do_not_show_a_ramp_they_do_not_apply(name: str) -> None:
    clock = FakeClock()
    pool = make_pool(urls(3), fast_algorithm(name), clock=clock, slow_start=30.0)
    pool.add("http://new:1")
    assert state(pool, "http://new:1") == "healthy"
    fail(pool, urls(3)[0], 5)
    clock.advance(10.0)
    assert state(pool, urls(3)[0]) == "healthy"
