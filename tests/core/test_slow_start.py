"""Slow start: an added or re-admitted upstream ramps up to its full share."""

from __future__ import annotations

import pytest

from .helpers import FakeClock, fail, make_pool, served, state, urls

RAMPING = ["round_robin", "weighted_round_robin", "random", "least_connections", "power_of_two"]


def share(counts: dict[str, int], url: str) -> float:
    return counts.get(url, 0) / sum(counts.values())


@pytest.mark.parametrize("name", RAMPING)
def test_an_added_upstream_ramps_up_over_slow_start(name: str) -> None:
    clock = FakeClock()
    ups = urls(5)
    pool = make_pool(ups[:4], name, clock=clock, slow_start=10.0, seed=21)
    pool.add(ups[4])
    assert state(pool, ups[4]) == "slow-start"
    at_start = share(served(pool, 4000), ups[4])
    clock.advance(5.0)
    halfway = share(served(pool, 4000), ups[4])
    clock.advance(5.0)
    assert state(pool, ups[4]) == "healthy"
    full = share(served(pool, 4000), ups[4])
    assert at_start < 0.04  # about 10 % of a full 20 % share
    assert 0.07 < halfway < 0.13
    assert 0.17 < full < 0.23


def test_configured_upstreams_do_not_ramp() -> None:
    ups = urls(4)
    pool = make_pool(ups, "random", slow_start=10.0, seed=2)
    assert {state(pool, u) for u in ups} == {"healthy"}
    counts = served(pool, 4000)
    assert all(0.2 < share(counts, u) < 0.3 for u in ups)


def test_a_readmitted_upstream_ramps_up_again() -> None:
    clock = FakeClock()
    ups = urls(4)
    pool = make_pool(ups, "round_robin", clock=clock, slow_start=10.0, seed=3)
    fail(pool, ups[0], 5)
    clock.advance(10.0)
    assert state(pool, ups[0]) == "slow-start"
    assert share(served(pool, 4000), ups[0]) < 0.05
    clock.advance(10.0)
    assert 0.22 < share(served(pool, 4000), ups[0]) < 0.28


def test_a_lone_ramping_upstream_still_serves() -> None:
    pool = make_pool(["http://a"], slow_start=10.0, allow_empty=True)
    pool.remove("http://a")
    pool.add("http://b")
    assert served(pool, 20) == {"http://b": 20}


def test_slow_start_min_share_sets_the_first_share() -> None:
    ups = urls(2)
    pool = make_pool(ups[:1], "random", slow_start=10.0, slow_start_min_share=0.5, seed=4)
    pool.add(ups[1])
    assert 0.2 < share(served(pool, 4000), ups[1]) < 0.3  # half of a 50 % share
