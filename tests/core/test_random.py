"""random: uniform, or in proportion to weight."""

from __future__ import annotations

from clientlb import Upstream

from .helpers import make_pool, member, served, urls

# chi-square critical values at p = 0.001
CHI2_999 = {3: 16.27, 4: 18.47}


def chi_square(counts: dict[str, int], expected: dict[str, float]) -> float:
    return sum((counts.get(url, 0) - e) ** 2 / e for url, e in expected.items())


def test_random_honours_weights() -> None:
    weights = {"http://a": 1, "http://b": 2, "http://c": 3, "http://d": 4}
    pool = make_pool([Upstream(u, weight=w) for u, w in weights.items()], "random", seed=11)
    n = 50_000
    counts = served(pool, n)
    expected = {url: n * w / 10 for url, w in weights.items()}
    assert chi_square(counts, expected) < CHI2_999[3]


def test_random_is_uniform_with_equal_weights() -> None:
    ups = urls(5)
    pool = make_pool(ups, "random", seed=12)
    n = 50_000
    counts = served(pool, n)
    assert chi_square(counts, {u: n / 5 for u in ups}) < CHI2_999[4]


def test_random_weighted_retry_avoids_excluded_and_keeps_weights() -> None:
    weights = {"http://a": 1, "http://b": 3, "http://c": 9}
    pool = make_pool([Upstream(u, weight=w) for u, w in weights.items()], "random", seed=13)
    c = member(pool, "http://c")
    counts = {"http://a": 0, "http://b": 0}
    for _ in range(8000):
        lease = pool.pick(exclude={c})
        lease.finish()
        counts[lease.upstream.url] += 1
    assert chi_square(counts, {"http://a": 2000, "http://b": 6000}) < 10.83  # 1 dof
