"""Subsets: each client balances over a few upstreams, every upstream in as many."""

from __future__ import annotations

from collections import Counter

import pytest

from clientlb import ConfigError, Pool, Subset, Upstream

from .helpers import urls


def weights(pool: Pool) -> dict[str, float]:
    """The upstreams a pool balances over (not those draining), with their weights."""
    rows = pool.snapshot()["upstreams"]
    return {row["url"]: row["weight"] for row in rows if row["state"] != "draining"}


def coverage(listed: list[str], size: int, clients: int) -> Counter[str]:
    """Each upstream's weight summed over the pools of ``clients`` clients."""
    total: Counter[str] = Counter()
    for client in range(clients):
        total.update(weights(Pool(listed, subset=Subset(size, client, clients))))
    return total


@pytest.mark.parametrize(
    ("n", "size", "clients", "each", "held"),
    [
        (1_000, 20, 100, 2, 20),  # arcs of 20 starting every 10 upstreams
        (1_000, 20, 7, 1, 1_000 / 7),  # few clients: arcs widen to cover the ring
        (30, 4, 10, 2, 6),  # 4 is 1.33 gaps of 3: two gaps
        (101, 10, 13, 2, 2 * 101 / 13),  # arcs end inside upstreams: partial weights
        (1_000, 30, 100, 3, 30),
    ],
)
def test_every_upstream_carries_the_same_weight_over_all_clients(
    n: int, size: int, clients: int, each: int, held: float
) -> None:
    total = coverage(urls(n), size, clients)
    assert len(total) == n
    assert all(v == pytest.approx(each) for v in total.values())
    for client in (0, clients // 2, clients - 1):
        pool = Pool(urls(n), subset=Subset(size, client, clients))
        assert sum(weights(pool).values()) == pytest.approx(held)


def generations(n: int, light: float = 0.5) -> list[Upstream]:
    """``n`` upstreams, the first quarter of them (in list order, not ring order)
    ``light``: an older generation, unevenly spread over the ring."""
    return [Upstream(u, light if i < n // 4 else 1.0) for i, u in enumerate(urls(n))]


def load(listed: list[Upstream], size: int, clients: int) -> Counter[str]:
    """Each client sends one unit of traffic over its subset in proportion to the
    weights there: what reaches each upstream in all."""
    total: Counter[str] = Counter()
    for client in range(clients):
        held = weights(Pool(listed, subset=Subset(size, client, clients)))
        whole = sum(held.values())
        total.update({url: w / whole for url, w in held.items()})
    return total


@pytest.mark.parametrize(
    ("n", "size", "clients", "light"),
    [(1_000, 30, 100, 0.5), (1_000, 20, 100, 1 / 3), (101, 10, 13, 0.25)],
)
def test_weighted_upstreams_carry_load_in_proportion_to_their_weights(
    n: int, size: int, clients: int, light: float
) -> None:
    listed = generations(n, light)
    weight = {u.url: u.weight for u in listed}
    per_weight = clients / sum(weight.values())  # each upstream's load per unit of weight
    reached = load(listed, size, clients)
    assert len(reached) == n
    for url, value in reached.items():  # a sliver held weighs MIN_WEIGHT (1e-3) at least
        assert value == pytest.approx(weight[url] * per_weight, rel=1e-9, abs=1e-4), url


def test_every_subset_holds_the_same_weight_and_more_of_the_light_upstreams() -> None:
    listed = generations(1_000)
    whole = sum(u.weight for u in listed)  # 875
    held = [weights(Pool(listed, subset=Subset(30, c, 100))) for c in range(100)]
    for subset in held:
        assert sum(subset.values()) == pytest.approx(3 * whole / 100)
    sizes = [len(subset) for subset in held]
    assert min(sizes) < 30 < max(sizes)  # in the light stretches of the ring, more
    total: Counter[str] = Counter()
    for subset in held:
        total.update(subset)
    for u in listed:  # each in three subsets' worth of its weight
        assert total[u.url] == pytest.approx(3 * u.weight)


def test_an_upstream_heavier_than_a_subset_makes_up_whole_subsets() -> None:
    listed = [Upstream(u, 100.0 if i == 0 else 1.0) for i, u in enumerate(urls(100))]
    alone = []
    for client in range(50):
        held = weights(Pool(listed, subset=Subset(4, client, 50)))
        if set(held) == {listed[0].url}:
            alone.append(held[listed[0].url])
    # the heavy one is 100/199 of the ring, an arc 2/50 of it: about 23 arcs
    # fall inside it, each holding the part of its weight the arc spans
    assert 22 <= len(alone) <= 24
    assert alone == pytest.approx([100 * (2 / 50) / (100 / 199)] * len(alone))


def test_a_client_holds_upstreams_whole_or_in_part() -> None:
    pool = Pool(urls(101), subset=Subset(10, 3, 13))
    held = weights(pool)
    assert len(held) in (16, 17)
    assert sorted(held.values())[2] == 1
    assert all(0 < w <= 1 for w in held.values())


def test_the_same_subset_whatever_the_order_given() -> None:
    listed = urls(200)
    a = weights(Pool(listed, subset=Subset(10, 5, 40)))
    b = weights(Pool(list(reversed(listed)), subset=Subset(10, 5, 40)))
    assert a == b


def test_one_upstream_leaving_or_joining_moves_each_subset_by_about_one() -> None:
    listed = urls(1_001)
    for client in range(0, 100, 7):
        before = set(weights(Pool(listed[:1_000], subset=Subset(20, client, 100))))
        after = set(weights(Pool(listed, subset=Subset(20, client, 100))))
        assert len(before ^ after) <= 4, client


def test_few_upstreams_are_all_taken_with_their_weights() -> None:
    listed = [Upstream("http://10.0.0.1:80", 3), Upstream("http://10.0.0.2:80")]
    assert weights(Pool(listed, subset=Subset(5, 0, 3))) == {
        "http://10.0.0.1:80": 3,
        "http://10.0.0.2:80": 1,
    }


def test_a_partly_held_upstream_keeps_its_share_of_its_own_weight() -> None:
    listed = [Upstream(u, 2.0, max_connections=7) for u in urls(101)]
    pool = Pool(listed, subset=Subset(10, 3, 13))
    rows = pool.snapshot()["upstreams"]
    assert sum(r["weight"] for r in rows) == pytest.approx(2 * 2 * 101 / 13)
    assert {r["max_connections"] for r in rows} == {7}


def test_updates_subset_the_new_list_and_standbys_are_never_subset() -> None:
    listed, more = urls(100), urls(150)[100:]
    standbys = urls(3, port=9000)
    pool = Pool(listed, standbys, subset=Subset(10, 2, 10))
    assert set(standbys) <= set(weights(pool))
    pool.update([*listed, *more], standbys)
    expected = weights(Pool([*listed, *more], subset=Subset(10, 2, 10)))
    assert weights(pool) == expected | dict.fromkeys(standbys, 1)


def test_add_and_remove_go_through_the_whole_list() -> None:
    listed = urls(50)
    pool = Pool(listed[:49], subset=Subset(5, 1, 10))
    pool.add(listed[49])
    assert weights(pool) == weights(Pool(listed, subset=Subset(5, 1, 10)))
    held = next(iter(weights(pool)))
    pool.remove(held)
    assert held not in {row["url"] for row in pool.snapshot()["upstreams"]}  # at once
    rest = [u for u in listed if u != held]
    assert weights(pool) == weights(Pool(rest, subset=Subset(5, 1, 10)))


def test_update_steps_subset_too() -> None:
    listed = urls(100)
    pool = Pool(listed[:50], subset=Subset(10, 4, 10))
    for _ in pool.update_steps(listed):
        pass
    assert weights(pool) == weights(Pool(listed, subset=Subset(10, 4, 10)))


@pytest.mark.parametrize(
    ("args", "field"),
    [
        ((0, 0, 1), "subset.size"),
        ((5, 0, 0), "subset.clients"),
        ((5, 3, 3), "subset.client"),
        ((5, -1, 3), "subset.client"),
        ((5, True, 3), "subset.client"),
        ((2.5, 0, 3), "subset.size"),
    ],
)
def test_bad_subsets_name_the_field(args: tuple[object, object, object], field: str) -> None:
    with pytest.raises(ConfigError) as err:
        Subset(*args)  # type: ignore[arg-type]
    assert err.value.field == field


def test_a_pool_refuses_what_is_not_a_subset_and_repeated_upstreams() -> None:
    with pytest.raises(ConfigError) as err:
        Pool(urls(3), subset=(1, 0, 2))  # type: ignore[arg-type]
    assert err.value.field == "subset"
    with pytest.raises(ConfigError) as err:
        Pool([*urls(3), urls(3)[0]], subset=Subset(1, 0, 2))
    assert err.value.field == "upstreams"


def test_the_snapshot_says_which_subset_of_how_many() -> None:
    pool = Pool(urls(100), subset=Subset(10, 4, 10))
    assert pool.snapshot()["subset"] == {"size": 10, "client": 4, "clients": 10, "of": 100}
    assert "subset" not in Pool(urls(3)).snapshot()


def test_a_url_string_in_an_update_means_weight_1_even_if_known_heavier() -> None:
    listed = urls(4)
    pool = Pool([Upstream(u, 3.0) for u in listed], subset=Subset(10, 0, 1))
    assert set(weights(pool).values()) == {3.0}
    pool.update(listed)
    assert set(weights(pool).values()) == {1.0}
