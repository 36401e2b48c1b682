"""One "nothing can serve" rule: panic is for passive ejections only; upstreams
that active checks hold down are never dialled; ``panic_threshold`` as Envoy's
``healthy_panic_threshold``."""

from __future__ import annotations

import pytest

from clientlb import ConfigError, OutlierDetection, Pool
from clientlb._core import NoUpstream
from clientlb._core._algorithms import ConsistentHash

from .helpers import FakeClock, fail, make_pool, pick_member, served, state, urls


def down(pool: object, *ups: str) -> None:
    for url in ups:
        pool.report_check(url, passed=False)  # type: ignore[attr-defined]


def test_every_upstream_down_fails_fast_without_panic() -> None:
    ups = urls(3)
    pool = make_pool(ups, standbys=["http://s:1"])
    down(pool, *ups, "http://s:1")
    assert not pool.panicking
    assert pool.snapshot()["panic"] is False
    for last_resort in (False, True):
        with pytest.raises(NoUpstream):
            pool.pick(last_resort=last_resort)
    pool.report_check(ups[1], passed=True)
    assert served(pool, 10) == {ups[1]: 10}


def test_panic_balances_over_the_ejected_but_never_the_down() -> None:
    ups = urls(4)
    pool = make_pool(ups, standbys=["http://s:1"])
    down(pool, ups[0], "http://s:1")
    for url in ups[1:]:
        fail(pool, url, 5)
    assert pool.panicking
    assert set(served(pool, 300)) == set(ups[1:])


def test_down_and_draining_are_never_a_last_resort() -> None:
    ups = urls(3)
    pool = make_pool(ups)
    down(pool, ups[0])
    busy = pool.pick(exclude=[m for m in pool.members if m.url != ups[1]])
    pool.drain(ups[1])
    fail(pool, ups[2], 5)
    assert pool.panicking  # ups[2], ejected, is all panic has
    tried = [m for m in pool.members if m.url == ups[2]]
    with pytest.raises(NoUpstream):
        pool.pick(exclude=tried, last_resort=True)
    busy.finish()


def test_default_threshold_keeps_panic_for_when_nothing_is_available() -> None:
    ups = urls(4)
    pool = make_pool(ups, outlier=OutlierDetection(max_ejected_share=1.0))
    for url in ups[:3]:
        fail(pool, url, 5)
    assert not pool.panicking
    assert served(pool, 20) == {ups[3]: 20}  # one left of four serves alone


@pytest.mark.parametrize("value", [-0.1, 1.01, float("nan"), "0.5", True])
def test_panic_threshold_is_validated(value: object) -> None:
    with pytest.raises(ConfigError) as info:
        make_pool(urls(2), panic_threshold=value)
    assert info.value.field == "panic_threshold"


@pytest.mark.parametrize(("ejected", "panics"), [(1, False), (2, False), (3, True)])
def test_below_the_threshold_the_pool_panics(ejected: int, panics: bool) -> None:
    """Four primaries at 0.5: two available is enough, one is not."""
    ups = urls(4)
    pool = make_pool(ups, panic_threshold=0.5)
    for url in ups[:ejected]:
        fail(pool, url, 5)
    assert pool.panicking is panics
    counts = served(pool, 400)
    if panics:
        assert set(counts) == set(ups)  # the ejected share the load again
    else:
        assert set(counts) == set(ups[ejected:])


def test_a_tier_below_the_threshold_hands_over_to_one_above() -> None:
    """As Envoy spills to the next priority: the standbys serve rather than the
    last primary taking all the load; back above the threshold, fail-back."""
    clock = FakeClock()
    ups = urls(4)
    pool = make_pool(ups, clock=clock, standbys=["http://s:1", "http://t:1"], panic_threshold=0.5)
    for url in ups[:3]:
        fail(pool, url, 5)
    assert not pool.panicking
    assert set(served(pool, 100)) == {"http://s:1", "http://t:1"}
    # a retry that tried both standbys still finds the primary left
    tried = [m for m in pool.members if m.tier == "standby"]
    lease = pool.pick(exclude=tried)
    assert lease.upstream.url == ups[3]
    lease.finish()
    clock.advance(10.0)
    assert set(served(pool, 100)) == set(ups)


def test_draining_upstreams_do_not_count() -> None:
    ups = urls(4)
    pool = make_pool(ups, panic_threshold=0.5)
    busy = [pick_member(pool, url) for url in ups[:2]]
    pool.drain(ups[0])
    pool.drain(ups[1])  # both leave once their request ends
    fail(pool, ups[2], 5)
    assert not pool.panicking  # one of the two staying is available: half
    assert served(pool, 10) == {ups[3]: 10}
    for lease in busy:
        lease.finish()


def test_slow_starting_upstreams_count_as_available() -> None:
    ups = urls(4)
    pool = make_pool(ups[:2], panic_threshold=0.5, slow_start=10.0)
    pool.add(ups[2])
    pool.add(ups[3])
    fail(pool, ups[0], 5)
    fail(pool, ups[1], 5)
    assert {state(pool, u) for u in ups[2:]} == {"slow-start"}
    assert not pool.panicking
    assert set(served(pool, 50)) == set(ups[2:])
    pool.report_check(ups[2], passed=False)  # one of four: below
    assert pool.panicking
    assert set(served(pool, 400)) == {ups[0], ups[1], ups[3]}  # never the one down


def test_threshold_one_wants_the_whole_tier() -> None:
    ups = urls(3)
    pool = make_pool(ups, standbys=["http://s:1"], panic_threshold=1.0)
    fail(pool, ups[0], 5)
    assert served(pool, 10) == {"http://s:1": 10}
    down(pool, "http://s:1")
    assert pool.panicking
    assert set(served(pool, 300)) == set(ups)


def _tables(pool: Pool) -> tuple[object, object]:
    """The primaries' hashing table and panic's, as the roster holds them."""
    roster = pool._roster
    panic = roster.panic
    assert isinstance(panic, ConsistentHash)
    tier = roster.tiers[0].algorithm
    assert isinstance(tier, ConsistentHash)
    return tier.table, panic.table


def test_panic_over_one_tier_hashes_with_its_table() -> None:
    """Panic over the primaries' own upstreams builds no table: it takes the
    tier's, so each key keeps the upstream it had (ejected ones included)."""
    ups = urls(40)
    pool = make_pool(ups, "consistent_hash", panic_threshold=0.5)
    before = {f"k{i}": pool.pick(f"k{i}").upstream.url for i in range(200)}
    for url in ups[:25]:
        fail(pool, url, 5)
    assert pool.panicking
    tier_table, panic_table = _tables(pool)
    assert panic_table is tier_table
    after = {}
    for key in before:
        lease = pool.pick(key)
        after[key] = lease.upstream.url
        lease.finish()
    assert after == before


def test_changes_of_health_in_panic_build_no_new_table() -> None:
    """With standbys panic hashes over both tiers, a table of its own; it
    stands while its upstreams do (ejections and re-admissions come and go),
    and is built again when they change (one down by active checks)."""
    clock = FakeClock()
    ups = urls(20)
    spares = urls(5, port=9000)
    pool = make_pool(ups, "consistent_hash", clock=clock, standbys=spares, panic_threshold=0.9)
    for url in ups[:4] + spares[:1]:
        fail(pool, url, 5)
    assert pool.panicking
    tier_table, built = _tables(pool)
    assert built is not tier_table
    fail(pool, ups[4], 5)  # one more ejected: still panic, the same table
    assert pool.panicking and _tables(pool)[1] is built
    clock.advance(60.0)  # every ejection over: out of panic ...
    assert not pool.panicking
    for url in ups[:4] + spares[:1]:
        fail(pool, url, 5)
    assert pool.panicking and _tables(pool)[1] is built  # ... and back in: kept
    down(pool, ups[10])  # an upstream panic may not use: a new table without it
    assert pool.panicking
    rebuilt = _tables(pool)[1]
    assert rebuilt is not built
    counts = served(pool, 600, key_prefix="k")
    assert ups[10] not in counts
    assert set(counts) == set(ups + spares) - {ups[10]}


def _panic_builds(pool: Pool) -> list[int]:
    """From now on, the size of each table panic fills itself (under the lock)."""
    panic = pool._roster._panic_algorithm
    builds: list[int] = []
    rebuild = panic.rebuild
    panic.rebuild = lambda members: (builds.append(len(members)), rebuild(members))  # type: ignore[method-assign]
    return builds


def _served_unless_left(pool: Pool, gone: str) -> set[str]:
    """Who 50 keyed requests went to; none to ``gone`` once it drains or left."""
    staying = any(m.url == gone and m.state != "draining" for m in pool.members)
    counts = set(served(pool, 50, key_prefix="k"))
    assert staying or gone not in counts
    return counts - {gone}


def test_a_change_of_members_in_panic_builds_no_table_under_the_lock() -> None:
    """While the primaries' new table is built apart from the lock, panic keeps
    its table and skips who left; the install hands it the new one."""
    ups = urls(40)
    pool = make_pool(ups, "consistent_hash", panic_threshold=0.5)
    for url in ups[:25]:
        fail(pool, url, 5)
    assert pool.panicking
    builds = _panic_builds(pool)
    _, old = _tables(pool)
    gone, new = ups[30], "http://10.9.9.9:8000"
    picked: set[str] = set()
    for _ in pool.update_steps([u for u in ups if u != gone] + [new], drain_timeout=0.0, step=1):
        picked |= _served_unless_left(pool, gone)
        tier_table, panic_table = _tables(pool)
        assert panic_table is old or panic_table is tier_table
    assert pool.panicking
    tier_table, panic_table = _tables(pool)
    assert panic_table is tier_table is not old
    assert builds == []
    picked |= set(served(pool, 600, key_prefix="k"))
    assert gone not in picked
    assert new in picked


def test_panic_over_both_tiers_builds_its_table_once_per_change_of_members() -> None:
    """With standbys no tier's table is panic's: during a change of members it
    keeps its own (skipping who left), then builds one table for the new set."""
    ups, spares = urls(20), urls(4, port=9000)
    pool = make_pool(ups, "consistent_hash", standbys=spares, panic_threshold=0.9)
    for url in ups[:4] + spares[:1]:
        fail(pool, url, 5)
    assert pool.panicking
    builds = _panic_builds(pool)
    gone = ups[12]
    picked: set[str] = set()
    steps = pool.update_steps([u for u in ups if u != gone], spares, drain_timeout=0.0, step=1)
    for _ in steps:
        picked |= _served_unless_left(pool, gone)
    picked |= set(served(pool, 600, key_prefix="k"))
    assert pool.panicking
    assert builds == [len(ups) - 1 + len(spares)]  # once, for the members that stay
    assert gone not in picked
    assert picked == set(ups + spares) - {gone}
