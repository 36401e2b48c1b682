"""Membership changes: add, remove, drain, update."""

from __future__ import annotations

import pytest

from clientlb import ConfigError, Outcome, Upstream

from .helpers import FakeClock, fail, make_pool, member, pick_member, respond, served, state, urls


def test_add_serves_the_newcomer_and_keeps_survivors() -> None:
    ups = urls(3)
    pool = make_pool(ups[:2], "round_robin")
    respond(pool, ups[0], 200, times=3)
    before = member(pool, ups[0])
    pool.add(ups[2])
    assert member(pool, ups[0]) is before
    assert before.requests == 3
    assert set(served(pool, 30)) == set(ups)


def test_add_rejects_a_duplicate_and_a_bad_url() -> None:
    pool = make_pool(urls(2))
    with pytest.raises(ConfigError, match="duplicate"):
        pool.add(urls(2)[0])
    with pytest.raises(ConfigError, match="standbys"):
        pool.add("ftp://x", standby=True)
    assert len(pool) == 2


def test_add_a_standby() -> None:
    ups = urls(1)
    pool = make_pool(ups)
    pool.add("http://standby", standby=True)
    assert served(pool, 10) == {ups[0]: 10}
    assert pool.snapshot()["upstreams"][1]["tier"] == "standby"


def test_remove_keeps_the_stats_of_survivors() -> None:
    clock = FakeClock()
    ups = urls(3)
    pool = make_pool(ups, "least_response_time", clock=clock)
    for url in ups:
        lease = pick_member(pool, url)
        clock.advance(0.01)
        lease.responded(200)
        lease.finish()
    fail(pool, ups[1], 2)
    survivor = member(pool, ups[1])
    stats = survivor.snapshot(0.0), survivor.consecutive_local
    pool.remove(ups[0])
    assert member(pool, ups[1]) is survivor
    assert (survivor.snapshot(0.0), survivor.consecutive_local) == stats
    assert set(served(pool, 20)) <= {ups[1], ups[2]}
    fail(pool, ups[1], 3)  # the run of failures carried over: 2 + 3 ejects it
    assert state(pool, ups[1]) == "ejected"


def test_remove_unknown_raises_key_error() -> None:
    pool = make_pool(urls(2))
    with pytest.raises(KeyError):
        pool.remove("http://10.9.9.9:8000")


def test_drain_stops_picks_and_removes_when_in_flight_reaches_zero() -> None:
    ups = urls(3)
    pool = make_pool(ups, "round_robin")
    leases = [pick_member(pool, ups[0]) for _ in range(2)]
    pool.drain(ups[0])
    assert state(pool, ups[0]) == "draining"
    assert ups[0] not in served(pool, 30)
    leases[0].finish()
    assert state(pool, ups[0]) == "draining"
    leases[1].finish(Outcome.RESET)
    assert state(pool, ups[0]) == "removed"
    assert len(pool) == 2


def test_drain_of_an_idle_upstream_removes_it_at_once() -> None:
    ups = urls(2)
    pool = make_pool(ups)
    pool.drain(ups[0])
    assert len(pool) == 1


def test_drain_timeout_removes_it_with_requests_in_flight() -> None:
    clock = FakeClock()
    ups = urls(2)
    pool = make_pool(ups, clock=clock)
    lease = pick_member(pool, ups[0])
    pool.drain(ups[0], timeout=5.0)
    clock.advance(4.9)
    assert state(pool, ups[0]) == "draining"
    clock.advance(0.1)
    assert state(pool, ups[0]) == "removed"
    lease.finish()
    assert lease.member.in_flight == 0


def test_drain_of_an_ejected_upstream_waits_for_its_requests() -> None:
    clock = FakeClock()
    ups = urls(2)
    pool = make_pool(ups, clock=clock)
    lease = pick_member(pool, ups[0])
    fail(pool, ups[0], 5)
    pool.drain(ups[0])
    clock.advance(60.0)  # well past the ejection time
    assert state(pool, ups[0]) == "draining"
    lease.finish()
    assert state(pool, ups[0]) == "removed"


def test_update_is_one_change_that_keeps_survivors() -> None:
    clock = FakeClock()
    ups = urls(4)
    pool = make_pool(ups[:3], "least_connections", clock=clock, slow_start=10.0)
    respond(pool, ups[0], 200, times=4)
    kept = member(pool, ups[0])
    busy = pick_member(pool, ups[1])
    pool.update([Upstream(ups[0], weight=3), ups[3]], standbys=[ups[2]])
    assert member(pool, ups[0]) is kept
    assert kept.requests == 4
    assert kept.weight == 3
    assert state(pool, ups[1]) == "draining"  # one request still in flight
    assert state(pool, ups[3]) == "slow-start"
    snapshot = {e["url"]: e for e in pool.snapshot()["upstreams"]}
    assert snapshot[ups[2]]["tier"] == "standby"
    busy.finish()
    assert [m.upstream.url for m in pool.members] == [ups[0], ups[3], ups[2]]


@pytest.mark.parametrize(
    "bad",
    [
        [urls(3)[0], "ftp://x", urls(3)[2]],
        [urls(3)[0], urls(3)[0]],
        [urls(3)[0], 7],
    ],
)
def test_a_bad_update_changes_nothing(bad: list[object]) -> None:
    ups = urls(3)
    pool = make_pool(ups[:2])
    before = list(pool.members)
    with pytest.raises(ConfigError):
        pool.update(bad)  # type: ignore[arg-type]
    assert list(pool.members) == before
    assert {state(pool, u) for u in ups[:2]} == {"healthy"}


def test_update_with_the_same_upstreams_changes_nothing() -> None:
    ups = urls(3)
    pool = make_pool(ups, slow_start=10.0)
    before = list(pool.members)
    pool.update(list(reversed(ups)))
    assert list(pool.members) == before
    assert {state(pool, u) for u in ups} == {"healthy"}


def test_listeners_hear_membership_and_health_changes() -> None:
    events: list[tuple[str, str]] = []
    ups = urls(3)
    pool = make_pool(ups)
    pool.subscribe(lambda event, m: events.append((event, m.upstream.url)))
    fail(pool, ups[0], 5)
    pool.remove(ups[1])
    assert events == [("ejected", ups[0]), ("removed", ups[1])]


def test_update_moving_an_upstream_between_tiers_keeps_its_statistics() -> None:
    ups = urls(3)
    pool = make_pool(ups[:2], standbys=[ups[2]])
    for _ in range(4):
        pool.pick().finish()
    moved = member(pool, ups[1])
    served_before = moved.requests
    assert served_before > 0
    pool.update([ups[0]], [ups[1], ups[2]])
    after = member(pool, ups[1])
    assert after is moved and after.tier == 1 and after.requests == served_before
    for _ in range(10):  # a primary can serve: the moved upstream, now a standby, gets nothing
        lease = pool.pick()
        assert lease.upstream.url == ups[0]
        lease.finish()
