"""What the pool hands out are readings (``MemberState``), never its live members."""

from __future__ import annotations

import dataclasses

import pytest

from clientlb import Health, Pool, Upstream
from clientlb._core import Member, MemberState, NoUpstream

from .helpers import FakeClock, fail, make_pool, respond, urls


def test_members_are_frozen_readings_that_later_changes_leave_alone() -> None:
    ups = urls(2)
    pool = make_pool(ups, standbys=["http://s:1"])
    before = pool.members
    assert all(type(m) is MemberState for m in before)
    with pytest.raises(dataclasses.FrozenInstanceError):
        before[0].in_flight = 5  # type: ignore[misc]
    lease = pool.pick()
    fail(pool, ups[1], 5)
    assert [(m.url, m.tier, m.state, m.in_flight, m.requests) for m in before] == [
        (ups[0], "primary", "healthy", 0, 0),
        (ups[1], "primary", "healthy", 0, 0),
        ("http://s:1", "standby", "healthy", 0, 0),
    ]
    after = {m.url: m for m in pool.members}
    assert after[lease.upstream.url].in_flight == 1
    assert after[ups[1]].health is Health.EJECTED and after[ups[1]].state == "ejected"
    assert after[ups[1]].failures == 5 and after[ups[1]].ejections == 1
    lease.finish()


def test_a_reading_matches_the_snapshot_row() -> None:
    clock = FakeClock()
    ups = urls(2)
    pool = make_pool(ups, "peak_ewma", clock=clock)
    for url in ups:
        respond(pool, url, 200, times=3)
    clock.advance(5.0)
    rows = pool.snapshot()["upstreams"]
    for reading, row in zip(pool.members, rows, strict=True):
        assert (reading.url, reading.tier, reading.state, reading.weight) == (
            row["url"],
            row["tier"],
            row["state"],
            row["weight"],
        )
        assert (reading.in_flight, reading.requests, reading.failures, reading.ejections) == (
            row["in_flight"],
            row["requests"],
            row["failures"],
            row["ejections"],
        )
        assert reading.ewma == row["ewma_latency"]
        assert reading.peak_ewma == row["peak_ewma_latency"]


def test_listeners_receive_readings_taken_after_the_change() -> None:
    ups = urls(3)
    pool = make_pool(ups)
    heard: list[tuple[str, object]] = []
    pool.subscribe(lambda event, m: heard.append((event, m)))
    fail(pool, ups[0], 5)
    pool.remove(ups[1])
    (e1, ejected), (e2, removed) = heard
    assert isinstance(ejected, MemberState) and isinstance(removed, MemberState)
    assert (e1, ejected.url, ejected.state, ejected.failures) == ("ejected", ups[0], "ejected", 5)
    assert (e2, removed.url, removed.state) == ("removed", ups[1], "healthy")


def test_the_package_watches_live_members() -> None:
    pool = make_pool(urls(2))
    seen: list[object] = []
    pool._watch(lambda event, m: seen.append(m))
    lease = pool.pick()
    pool.remove(lease.upstream)
    assert seen == [lease.member] and type(seen[0]) is Member
    lease.finish()
    assert lease.member.in_flight == 0  # what the watcher holds stays current
    pool._unwatch(seen.append)  # unknown: ignored


def test_a_lease_reads_its_upstream_state() -> None:
    ups = urls(2)
    pool = make_pool(ups)
    lease = pool.pick()
    reading = lease.state()
    assert (reading.url, reading.in_flight, reading.requests) == (lease.upstream.url, 1, 1)
    lease.finish()
    assert lease.state().in_flight == 0


@pytest.mark.parametrize("kind", ["reading", "upstream", "member"])
def test_exclude_takes_readings_upstreams_and_members(kind: str) -> None:
    ups = urls(3)
    pool: Pool = make_pool(ups)
    first = pool.pick()
    first.finish()
    others = [m for m in pool.members if m.url != first.upstream.url]
    exclude: list[object] = {
        "reading": [m for m in pool.members if m.url == first.upstream.url],
        "upstream": [Upstream(first.upstream.url)],
        "member": [first.member],
    }[kind]
    for _ in range(20):
        lease = pool.pick(exclude=exclude)  # type: ignore[arg-type]
        assert lease.upstream.url in {m.url for m in others}
        lease.finish()
    everyone = [*pool.members, Upstream("http://gone:1")]  # one not in the pool: ignored
    with pytest.raises(NoUpstream):
        pool.pick(exclude=everyone)
