"""round_robin and weighted_round_robin: exact sequences."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from clientlb import Pool, Upstream

from .helpers import make_pool, member, urls

SETTINGS = settings(max_examples=60, deadline=None, derandomize=True, database=None)


def sequence(pool_urls: list[str], picks: list[str]) -> list[int]:
    index = {url: i for i, url in enumerate(pool_urls)}
    return [index[url] for url in picks]


class NoRotation(random.Random):
    """Randomness whose every ``randrange`` is 0: weighted_round_robin then starts
    each weight's members at the first, as nginx does."""

    def randrange(self, *args: object, **kwargs: object) -> int:  # type: ignore[override]
        return 0


def nginx_pool(upstreams: list[Upstream]) -> Pool:
    return make_pool(upstreams, "weighted_round_robin", rng=NoRotation())


def picks(pool: Pool, count: int) -> list[str]:
    out = []
    for _ in range(count):
        lease = pool.pick()
        lease.finish()
        out.append(lease.upstream.url)
    return out


def nginx_reference(weights: list[float], count: int) -> list[int]:
    """nginx's smooth weighted round robin, written the obvious O(n) way."""
    current = [0.0] * len(weights)
    total = sum(weights)
    out = []
    for _ in range(count):
        best = -1
        for i, weight in enumerate(weights):
            current[i] += weight
            if best < 0 or current[i] > current[best]:  # the first wins a tie
                best = i
        current[best] -= total
        out.append(best)
    return out


def test_round_robin_is_a_fixed_cycle() -> None:
    ups = urls(5)
    pool = make_pool(ups, "round_robin", seed=3)
    seq = sequence(ups, picks(pool, 15))
    start = seq[0]
    assert seq == [(start + i) % 5 for i in range(15)]


def test_round_robin_starts_at_a_random_place() -> None:
    ups = urls(8)
    starts = {sequence(ups, picks(make_pool(ups, seed=seed), 1))[0] for seed in range(40)}
    assert len(starts) >= 5


def test_round_robin_ignores_weights() -> None:
    ups = [Upstream("http://a", weight=5), Upstream("http://b"), Upstream("http://c", weight=2)]
    pool = make_pool(ups, "round_robin", seed=1)
    counts = {u: 0 for u in ("http://a", "http://b", "http://c")}
    for url in picks(pool, 30):
        counts[url] += 1
    assert set(counts.values()) == {10}


def test_round_robin_skips_excluded_and_keeps_its_order() -> None:
    ups = urls(4)
    pool = make_pool(ups, "round_robin", seed=0)
    first = sequence(ups, picks(pool, 1))[0]
    skipped = member(pool, ups[(first + 1) % 4])
    lease = pool.pick(exclude={skipped})
    lease.finish()
    assert lease.upstream.url == ups[(first + 2) % 4]
    assert sequence(ups, picks(pool, 2)) == [(first + 3) % 4, first]


def test_smooth_weighted_round_robin_matches_nginx_for_5_1_1() -> None:
    ups = [Upstream("http://a", weight=5), Upstream("http://b"), Upstream("http://c")]
    names = [url.removeprefix("http://") for url in picks(nginx_pool(ups), 21)]
    assert "".join(names) == "aabacaa" * 3
    # otherwise b or c first, at random, in the same pattern
    seen = set()
    for seed in range(20):
        names = [
            url.removeprefix("http://")
            for url in picks(make_pool(ups, "weighted_round_robin", seed=seed), 21)
        ]
        seen.add("".join(names))
    assert seen == {"aabacaa" * 3, "aacabaa" * 3}


def test_weighted_round_robin_clients_do_not_move_in_step() -> None:
    """Twenty clients over ten upstreams of one weight start at different ones
    (they all started at the first before: the fleet simulator's herd)."""
    ups = urls(10)
    firsts = {picks(make_pool(ups, "weighted_round_robin", seed=s), 1)[0] for s in range(20)}
    assert len(firsts) >= 6


@SETTINGS
@given(st.lists(st.integers(1, 12), min_size=1, max_size=9))
def test_weighted_round_robin_period_and_nginx_sequence(weights: list[int]) -> None:
    ups = urls(len(weights))
    listed = [Upstream(u, weight=w) for u, w in zip(ups, weights, strict=True)]
    period = sum(weights)
    seq = sequence(ups, picks(nginx_pool(listed), 3 * period))
    assert seq == nginx_reference([float(w) for w in weights], 3 * period)
    rotated = sequence(ups, picks(make_pool(listed, "weighted_round_robin", seed=7), 3 * period))
    for start in range(0, 3 * period, period):  # every period gives each its weight
        for i, weight in enumerate(weights):
            assert rotated[start : start + period].count(i) == weight


@SETTINGS
@given(st.lists(st.sampled_from([0.5, 1.0, 1.5, 2.5, 4.0]), min_size=1, max_size=6))
def test_weighted_round_robin_fractional_weights_match_nginx(weights: list[float]) -> None:
    ups = urls(len(weights))
    pool = nginx_pool([Upstream(u, weight=w) for u, w in zip(ups, weights, strict=True)])
    assert sequence(ups, picks(pool, 40)) == nginx_reference(weights, 40)


def test_weighted_round_robin_retry_skips_excluded_without_disturbing_sequence() -> None:
    ups = [Upstream("http://a", weight=5), Upstream("http://b"), Upstream("http://c")]
    pool = nginx_pool(ups)
    a = member(pool, "http://a")
    lease = pool.pick(exclude={a})
    lease.finish()
    assert lease.upstream.url != "http://a"
    names = [url.removeprefix("http://") for url in picks(pool, 7)]
    assert "".join(names) == "aabacaa"
