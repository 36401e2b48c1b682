"""Passive ejection, tiers and fail-back, panic mode."""

from __future__ import annotations

import pytest

from clientlb import ALGORITHMS, Outcome, OutlierDetection

from .helpers import (
    FakeClock,
    fail,
    fast_algorithm,
    make_pool,
    pick_member,
    respond,
    served,
    state,
    urls,
)

ALL = list(ALGORITHMS)


# -- ejection rules -------------------------------------------------------------------


@pytest.mark.parametrize("outcome", [Outcome.CONNECT_FAILURE, Outcome.RESET, Outcome.TIMEOUT])
def test_ejected_after_five_consecutive_local_failures(outcome: Outcome) -> None:
    ups = urls(3)
    pool = make_pool(ups)
    fail(pool, ups[0], 4, outcome)
    assert state(pool, ups[0]) == "healthy"
    fail(pool, ups[0], 1, outcome)
    assert state(pool, ups[0]) == "ejected"


def test_a_success_resets_the_failure_count() -> None:
    ups = urls(3)
    pool = make_pool(ups)
    fail(pool, ups[0], 4)
    respond(pool, ups[0], 200)
    fail(pool, ups[0], 4)
    assert state(pool, ups[0]) == "healthy"


def test_a_cancelled_attempt_says_nothing_about_health() -> None:
    ups = urls(3)
    pool = make_pool(ups)
    fail(pool, ups[0], 4)
    fail(pool, ups[0], 3, Outcome.CANCELLED)
    assert state(pool, ups[0]) == "healthy"
    fail(pool, ups[0], 1)
    assert state(pool, ups[0]) == "ejected"


def test_ejected_after_five_consecutive_gateway_errors() -> None:
    ups = urls(3)
    pool = make_pool(ups)
    for status in (502, 503, 504, 503):
        respond(pool, ups[0], status)
    assert state(pool, ups[0]) == "healthy"
    respond(pool, ups[0], 502)
    assert state(pool, ups[0]) == "ejected"


@pytest.mark.parametrize("breaker", [200, 404, 500])
def test_other_statuses_break_the_gateway_error_run(breaker: int) -> None:
    ups = urls(3)
    pool = make_pool(ups)
    respond(pool, ups[0], 503, times=4)
    respond(pool, ups[0], breaker)
    respond(pool, ups[0], 503, times=4)
    assert state(pool, ups[0]) == "healthy"


def test_any_5xx_rule_is_off_by_default_and_can_be_set() -> None:
    ups = urls(3)
    pool = make_pool(ups)
    respond(pool, ups[0], 500, times=10)
    assert state(pool, ups[0]) == "healthy"
    strict = make_pool(ups, outlier=OutlierDetection(consecutive_5xx=3))
    respond(strict, ups[0], 500, times=3)
    assert state(strict, ups[0]) == "ejected"


def test_no_outlier_detection_never_ejects() -> None:
    ups = urls(2)
    pool = make_pool(ups, outlier=None)
    fail(pool, ups[0], 20)
    respond(pool, ups[0], 503, times=20)
    assert state(pool, ups[0]) == "healthy"


@pytest.mark.parametrize("name", ALL)
def test_an_ejected_upstream_is_never_picked_while_a_healthy_one_exists(name: str) -> None:
    ups = urls(4)
    pool = make_pool(ups, fast_algorithm(name), seed=4)
    fail(pool, ups[2], 5)
    counts = served(pool, 400, key_prefix="client-")
    assert ups[2] not in counts
    if name != "least_response_time":  # with no latency measured it sticks to one member
        assert set(counts) == {ups[0], ups[1], ups[3]}


def test_ejection_time_grows_and_expires() -> None:
    clock = FakeClock()
    ups = urls(2)
    pool = make_pool(ups, clock=clock)
    for duration in (10.0, 20.0, 30.0):
        fail(pool, ups[0], 5)
        clock.advance(duration - 0.01)
        assert state(pool, ups[0]) == "ejected"
        clock.advance(0.01)
        assert state(pool, ups[0]) == "healthy"


def test_ejection_time_is_capped() -> None:
    clock = FakeClock()
    ups = urls(2)
    pool = make_pool(ups, clock=clock, outlier=OutlierDetection(max_ejection_time=25.0))
    for duration in (10.0, 20.0, 25.0, 25.0):
        fail(pool, ups[0], 5)
        clock.advance(duration - 0.01)
        assert state(pool, ups[0]) == "ejected"
        clock.advance(0.01)
        assert state(pool, ups[0]) == "healthy"


def test_ejection_time_resets_after_staying_in_for_max_ejection_time() -> None:
    clock = FakeClock()
    ups = urls(2)
    pool = make_pool(ups, clock=clock, outlier=OutlierDetection(max_ejection_time=300.0))
    fail(pool, ups[0], 5)
    clock.advance(10.0)
    fail(pool, ups[0], 5)
    clock.advance(20.0)
    assert state(pool, ups[0]) == "healthy"
    clock.advance(299.0)  # not long enough: the next ejection is the third in a row
    fail(pool, ups[0], 5)
    clock.advance(29.99)
    assert state(pool, ups[0]) == "ejected"
    clock.advance(0.01)
    clock.advance(300.0)  # in for max_ejection_time: the count starts over
    fail(pool, ups[0], 5)
    clock.advance(9.99)
    assert state(pool, ups[0]) == "ejected"
    clock.advance(0.01)
    assert state(pool, ups[0]) == "healthy"


@pytest.mark.parametrize(("share", "most"), [(0.5, 2), (0.75, 3), (0.1, 1), (1.0, 4)])
def test_max_ejected_share_is_honoured(share: float, most: int) -> None:
    ups = urls(4)
    pool = make_pool(ups, outlier=OutlierDetection(max_ejected_share=share))
    for url in ups:
        fail(pool, url, 5)
    assert sum(1 for url in ups if state(pool, url) == "ejected") == most


def test_an_active_check_readmits_an_ejected_upstream_at_once() -> None:
    ups = urls(2)
    pool = make_pool(ups)
    fail(pool, ups[0], 5)
    pool.report_check(ups[0], passed=True)
    assert state(pool, ups[0]) == "healthy"


# -- tiers and fail-back -----------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_a_standby_is_never_picked_while_a_primary_can_serve(name: str) -> None:
    clock = FakeClock()
    ups = urls(3)
    pool = make_pool(ups, fast_algorithm(name), clock=clock, standbys=["http://standby"], seed=1)
    assert "http://standby" not in served(pool, 300, key_prefix="k")
    fail(pool, ups[0], 5)
    fail(pool, ups[1], 5)
    assert "http://standby" not in served(pool, 300, key_prefix="k")
    fail(pool, ups[2], 5)
    assert served(pool, 50, key_prefix="k") == {"http://standby": 50}
    assert pool.panicking is False
    clock.advance(10.0)  # the ejections expire: traffic fails back at once
    counts = served(pool, 300, key_prefix="k")
    assert "http://standby" not in counts


def test_a_retry_goes_to_the_standby_only_when_every_primary_was_tried() -> None:
    ups = urls(2)
    pool = make_pool(ups, standbys=["http://standby"])
    first = pool.pick()
    second = pool.pick(exclude={first.member})
    third = pool.pick(exclude={first.member, second.member})
    assert {first.upstream.url, second.upstream.url} == set(ups)
    assert third.upstream.url == "http://standby"


def test_fail_back_waits_for_fail_back_after() -> None:
    clock = FakeClock()
    ups = urls(2)
    pool = make_pool(ups, clock=clock, standbys=["http://standby"], fail_back_after=5.0)
    fail(pool, ups[0], 5)
    fail(pool, ups[1], 5)
    assert served(pool, 10) == {"http://standby": 10}
    clock.advance(10.0)  # ejections over: the primaries are held for 5 s more
    assert served(pool, 10) == {"http://standby": 10}
    clock.advance(4.99)
    assert served(pool, 10) == {"http://standby": 10}
    clock.advance(0.01)
    assert "http://standby" not in served(pool, 50)


def test_each_recovering_primary_is_held_while_no_primary_serves() -> None:
    clock = FakeClock()
    ups = urls(2)
    pool = make_pool(ups, clock=clock, standbys=["http://standby"], fail_back_after=5.0)
    fail(pool, ups[0], 5)
    clock.advance(1.0)
    fail(pool, ups[1], 5)
    for step, expected in ((9.0, {"http://standby"}), (1.0, {"http://standby"}), (4.0, {ups[0]})):
        clock.advance(step)
        assert set(served(pool, 20)) == expected
    clock.advance(1.0)
    assert set(served(pool, 50)) == set(ups)


def test_a_primary_recovering_while_another_serves_is_not_held() -> None:
    clock = FakeClock()
    ups = urls(2)
    pool = make_pool(ups, clock=clock, standbys=["http://standby"], fail_back_after=5.0)
    fail(pool, ups[1], 5)
    clock.advance(10.0)
    assert set(served(pool, 50)) == set(ups)


# -- panic -----------------------------------------------------------------------------


def test_panic_when_everyone_is_out_and_recovery_leaves_it() -> None:
    clock = FakeClock()
    ups = urls(3)
    pool = make_pool(ups, clock=clock, standbys=["http://standby"])
    fail(pool, ups[0], 5)
    clock.advance(5.0)
    fail(pool, ups[1], 5)
    fail(pool, ups[2], 5)
    fail(pool, "http://standby", 5)
    assert pool.panicking is True
    assert pool.snapshot()["panic"] is True
    counts = served(pool, 400)
    assert set(counts) == {*ups, "http://standby"}  # balances over all rather than failing
    clock.advance(5.0)  # ups[0] is back
    assert pool.panicking is False
    assert served(pool, 50) == {ups[0]: 50}


def test_failures_during_panic_do_not_extend_ejections() -> None:
    clock = FakeClock()
    ups = urls(2)
    pool = make_pool(ups, clock=clock)
    fail(pool, ups[0], 5)
    fail(pool, ups[1], 5)
    for _ in range(10):
        pool.pick().finish(Outcome.CONNECT_FAILURE)
    clock.advance(10.0)
    assert pool.panicking is False
    assert {state(pool, u) for u in ups} == {"healthy"}


def test_failures_that_land_while_ejected_do_not_eject_again_on_return() -> None:
    clock = FakeClock()
    ups = urls(3)
    pool = make_pool(ups, clock=clock)
    stragglers = []
    for _ in range(4):  # requests in flight at the upstream before it fails
        lease = pool.pick(exclude=frozenset(m for m in pool.members if m.upstream.url != ups[0]))
        stragglers.append(lease)
    fail(pool, ups[0], 5)
    assert state(pool, ups[0]) == "ejected"
    for lease in stragglers:  # they fail too, while it is out
        lease.finish(Outcome.RESET)
    clock.advance(10.0)  # the first ejection ends
    assert state(pool, ups[0]) == "healthy"
    fail(pool, ups[0], 1)
    assert state(pool, ups[0]) == "healthy"  # one new failure is not five in a row
    fail(pool, ups[0], 4)
    assert state(pool, ups[0]) == "ejected"


def test_a_long_run_of_failures_cannot_push_latency_beyond_recovery() -> None:
    ups = urls(2)
    pool = make_pool(ups, "least_response_time", outlier=None)
    fail(pool, ups[0], 200)
    ewma = next(m for m in pool.members if m.upstream.url == ups[0]).ewma
    assert 1.0 <= ewma <= 10.0  # at most ten failure penalties


def test_a_readmitted_upstream_is_tried_again_by_least_response_time() -> None:
    clock = FakeClock()
    ups = urls(2)
    pool = make_pool(ups, "least_response_time", clock=clock)
    for _ in range(3):  # the other upstream: measured at 50 ms
        lease = pick_member(pool, ups[1])
        clock.advance(0.05)
        lease.responded(200)
        lease.finish()
    fail(pool, ups[0], 5)  # failures count as a 1 s penalty each, then it is ejected
    assert state(pool, ups[0]) == "ejected"
    clock.advance(10.0)
    assert state(pool, ups[0]) == "healthy"
    busy = pick_member(pool, ups[1])  # 50 ms x 2 in flight: a score of 0.1
    lease = pool.pick()  # the returning upstream's inflated estimate is gone: 0.05
    assert lease.upstream.url == ups[0]
    lease.finish()
    busy.finish()
