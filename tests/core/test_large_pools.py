"""Large pools: membership changes in linear time, in short holds of the lock."""

from __future__ import annotations

import gc
import random
import threading
import time
from collections.abc import Callable

import pytest

from clientlb import ConfigError, Outcome, Pool, Upstream
from clientlb._core import Health, NoUpstream

from .helpers import FakeClock, fail, make_pool, member, pick_member, state, urls

SMALL, LARGE = 5_000, 20_000


def best_time(setup: Callable[[], Pool], change: Callable[[Pool], object]) -> float:
    """The fastest of three runs of ``change`` on a fresh pool, collector off."""
    best = float("inf")
    for _ in range(3):
        pool = setup()
        gc.collect()
        gc.disable()
        try:
            started = time.perf_counter()
            change(pool)
            best = min(best, time.perf_counter() - started)
        finally:
            gc.enable()
    return best


def remove_all(pool: Pool) -> None:
    for m in list(pool.members)[1:]:
        pool.remove(m.upstream)


def drain_all(pool: Pool) -> None:
    for m in list(pool.members)[1:]:
        pool.drain(m.upstream)


def update_to_one(pool: Pool) -> None:
    pool.update([pool.members[0].upstream])


def add_all(pool: Pool) -> None:
    for url in urls(LARGE, port=9000)[: len(pool)]:
        pool.add(url)


@pytest.mark.parametrize("change", [remove_all, drain_all, update_to_one, add_all])
def test_membership_changes_take_linear_time(change: Callable[[Pool], None]) -> None:
    # Removing one member at a time from a list (list.remove, then renumbering)
    # took 1 s for 10,000 members and 4 s for 20,000: quadratic. Linear work
    # grows 4x from 5,000 to 20,000 members; the bound leaves room for noise.
    sizes = {}
    for n in (SMALL, LARGE):
        ups = [Upstream(u) for u in urls(n)]
        sizes[n] = best_time(lambda ups=ups: Pool(ups), change)
    assert sizes[LARGE] < 1.0
    assert sizes[LARGE] / sizes[SMALL] < 8, sizes


def test_update_steps_apply_a_bounded_share_each_and_never_empty_the_pool() -> None:
    old, new = urls(1000), urls(2000)[1000:]
    pool = make_pool(old, "least_connections")
    steps = pool.update_steps(new, step=100)
    seen = []
    for done in steps:
        seen.append((done, len(pool)))
        pool.pick().finish()  # requests are served between steps
        taken: list[bool] = []

        def try_lock(taken: list[bool] = taken) -> None:
            taken.append(pool._lock.acquire(blocking=False))
            if taken[-1]:
                pool._lock.release()

        probe = threading.Thread(target=try_lock)
        probe.start()
        probe.join()
        assert taken == [True]  # the lock is free between steps
    # joining first (the pool grows to both sets), then leaving
    assert [done for done, _ in seen] == list(range(100, 2001, 100))
    assert [size for _, size in seen][:10] == list(range(1100, 2001, 100))
    assert [size for _, size in seen][10:] == list(range(1900, 999, -100))
    assert {m.upstream.url for m in pool.members} == set(new)


def test_update_steps_check_everything_first() -> None:
    pool = make_pool(urls(2))
    before = list(pool.members)
    with pytest.raises(ConfigError, match="duplicate"):
        pool.update_steps([urls(3)[2], urls(3)[2]])
    with pytest.raises(ConfigError, match="step"):
        pool.update_steps(urls(3), step=-1)
    assert list(pool.members) == before
    for _ in pool.update_steps(urls(3)[1:], step=1):
        pass
    assert [m.upstream.url for m in pool.members] == urls(3)[1:]


def test_a_stale_drain_timer_does_not_remove_the_upstream_back_in() -> None:
    clock = FakeClock()
    ups = urls(3)
    pool = make_pool(ups, clock=clock)
    lease = pick_member(pool, ups[0])
    pool.drain(ups[0], timeout=5.0)
    pool.update(ups)  # back in the registry: a new member
    clock.advance(6.0)
    assert state(pool, ups[0]) == "healthy"
    lease.finish()
    assert state(pool, ups[0]) == "healthy"


def test_timers_fire_in_order_each_at_its_time() -> None:
    clock = FakeClock()
    ups = urls(50)
    pool = make_pool(ups, clock=clock)
    leases = [pick_member(pool, url) for url in ups]
    for i, url in enumerate(ups):
        pool.drain(url, timeout=1.0 + i)
    for i in range(len(ups)):
        clock.advance(0.5)
        pool.panicking  # noqa: B018 - reading it runs the timers due
        assert len(pool) == len(ups) - i
        clock.advance(0.5)
        pool.panicking  # noqa: B018 - reading it runs the timers due
        assert len(pool) == len(ups) - i - 1
    for lease in leases:
        lease.finish()


def test_the_ejected_count_follows_every_change() -> None:
    """The ejection cap reads a per-tier count: it must match the members."""
    rng = random.Random(7)
    clock = FakeClock()
    ups = urls(12)
    pool = make_pool(ups[:8], standbys=ups[8:], clock=clock, seed=7)
    for _ in range(400):
        url = rng.choice(ups)
        action = rng.randrange(6)
        try:
            if action == 0:
                fail(pool, member(pool, url).upstream.url, 5)
            elif action == 1:
                pool.report_check(url, rng.random() < 0.5)
            elif action == 2:
                pool.remove(url)
            elif action == 3:
                primaries = rng.sample(ups, 6)
                pool.update(primaries, [u for u in ups if u not in primaries][:3])
            elif action == 4:
                clock.advance(rng.choice([0.5, 5.0, 60.0]))
                pool.pick().finish(Outcome.SUCCESS)
            else:
                pool.drain(url, timeout=1.0)
        except (KeyError, NoUpstream):  # not there (any more), or not available
            pass
        for tier in pool._tiers:
            assert tier.ejected == sum(m.health is Health.EJECTED for m in tier.members)


def test_an_answer_repeating_known_urls_parses_none_of_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from clientlb._core import _upstream

    listed = urls(500)
    pool = make_pool(listed, "round_robin")
    parsed: list[object] = []
    real = _upstream.parse_upstream_url

    def counting(url: object) -> tuple[str, str, int, str]:
        parsed.append(url)
        return real(url)

    monkeypatch.setattr(_upstream, "parse_upstream_url", counting)
    pool.update([*listed[1:], "http://10.9.9.9:80"])
    assert parsed == ["http://10.9.9.9:80"]


def test_a_url_string_still_resets_a_weight_and_limit_given_before() -> None:
    url = "http://10.0.0.1:80"
    pool = Pool([Upstream(url, weight=3, max_connections=2), "http://10.0.0.2:80"])
    pool.update([url, "http://10.0.0.2:80"])
    (row,) = [r for r in pool.snapshot()["upstreams"] if r["url"] == url]
    assert (row["weight"], row["max_connections"]) == (1, None)
