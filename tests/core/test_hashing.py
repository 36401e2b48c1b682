"""ip_hash and consistent_hash (Maglev): minimal disruption, even spread, stable keys."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Generator
from typing import TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clientlb import ConfigError, Outcome, Pool, Upstream
from clientlb._core import ConsistentHash, Member
from clientlb._core._algorithms import _maglev_arrays as numpy_fill
from clientlb._core._algorithms._blank import PIECE, blank_table
from clientlb._core._algorithms._hashing import fill, hash64, run
from clientlb._core._updates import refresh_tables

from .helpers import fail, make_pool, member, state, urls

T = TypeVar("T")

HASHING = ["ip_hash", "consistent_hash"]
KEYS = [f"10.{i // 256 % 256}.{i % 256}.{i % 7}:{i}" for i in range(10_000)]


def owners(pool: Pool, keys: list[str]) -> list[str]:
    out = []
    for key in keys:
        lease = pool.pick(key)
        lease.finish(Outcome.CANCELLED)
        out.append(lease.upstream.url)
    return out


@pytest.mark.parametrize("name", HASHING)
@pytest.mark.parametrize("removed", [0, 4, 9])
def test_removing_one_of_ten_moves_few_keys(name: str, removed: int) -> None:
    ups = urls(10)
    before = owners(make_pool(ups, name), KEYS)
    survivors = ups[:removed] + ups[removed + 1 :]
    after = owners(make_pool(survivors, name), KEYS)
    moved = [k for k, (a, b) in enumerate(zip(before, after, strict=True)) if a != b]
    assert len(moved) <= 0.12 * len(KEYS)
    owned = [k for k, url in enumerate(before) if url == ups[removed]]
    assert 0.07 * len(KEYS) <= len(owned) <= 0.13 * len(KEYS)
    assert set(owned) <= set(moved)  # every key of the removed one moves


@pytest.mark.parametrize("name", HASHING)
def test_remove_and_eject_at_run_time_move_few_keys(name: str) -> None:
    ups = urls(10)
    pool = make_pool(ups, name)
    before = owners(pool, KEYS)
    pool.remove(ups[3])
    after_remove = owners(pool, KEYS)
    fail(pool, ups[6], 5)  # ejected: its keys go elsewhere while it is out
    after_eject = owners(pool, KEYS)
    for old, new, gone in ((before, after_remove, ups[3]), (after_remove, after_eject, ups[6])):
        moved = sum(1 for a, b in zip(old, new, strict=True) if a != b)
        assert moved <= 0.12 * len(KEYS)
        assert gone not in new


@pytest.mark.parametrize("name", HASHING)
def test_adding_one_to_ten_moves_keys_mostly_to_the_newcomer(name: str) -> None:
    ups = urls(11)
    before = owners(make_pool(ups[:10], name), KEYS)
    after = owners(make_pool(ups, name), KEYS)
    moved = [b for a, b in zip(before, after, strict=True) if a != b]
    assert len(moved) <= 0.12 * len(KEYS)
    assert moved.count(ups[10]) >= 0.8 * len(moved)


@pytest.mark.parametrize("name", HASHING)
def test_spread_over_100_upstreams_is_even(name: str) -> None:
    pool = make_pool(urls(100), name)
    counts = Counter(owners(pool, [f"user-{i}" for i in range(200_000)]))
    assert len(counts) == 100
    mean = 200_000 / 100
    assert max(counts.values()) / mean <= 1.10
    assert min(counts.values()) / mean >= 0.90


@pytest.mark.parametrize("name", HASHING)
def test_same_key_same_upstream_in_independent_pools(name: str) -> None:
    ups = urls(7)
    keys = KEYS[:500]
    first = owners(make_pool(ups, name, seed=1), keys)
    second = owners(make_pool(list(ups), name, seed=99), keys)
    assert first == second
    assert len(set(first)) == 7


_CHILD = """
import json, random, sys
from clientlb import Pool
ups, name, keys = json.loads(sys.stdin.read())
pool = Pool(ups, algorithm=name, rng=random.Random())
print(json.dumps([pool.pick(k).upstream.url for k in keys]))
"""


@pytest.mark.parametrize("name", HASHING)
def test_same_key_same_upstream_across_processes(name: str) -> None:
    ups = urls(7)
    keys = KEYS[:300]
    here = owners(make_pool(ups, name), keys)
    for hash_seed in ("1", "4242"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        result = subprocess.run(
            [sys.executable, "-c", _CHILD],
            input=json.dumps([ups, name, keys]),
            capture_output=True,
            text=True,
            env=env,
            check=True,
            timeout=60,
        )
        assert json.loads(result.stdout) == here


@pytest.mark.parametrize("name", HASHING)
def test_weights_are_honoured_in_proportion(name: str) -> None:
    weights = {"http://a": 1, "http://b": 2, "http://c": 3}
    pool = make_pool([Upstream(u, weight=w) for u, w in weights.items()], name)
    counts = Counter(owners(pool, [f"k{i}" for i in range(60_000)]))
    for url, weight in weights.items():
        share = counts[url] / 60_000
        assert share == pytest.approx(weight / 6, rel=0.08)


@pytest.mark.parametrize("name", HASHING)
def test_retry_goes_to_the_next_owner_deterministically(name: str) -> None:
    ups = urls(5)
    pool = make_pool(ups, name)
    first = pool.pick("client-1")
    second = pool.pick("client-1", exclude={first.member})
    again = pool.pick("client-1", exclude={first.member})
    assert second.upstream.url != first.upstream.url
    assert again.upstream.url == second.upstream.url
    everyone = frozenset(member(pool, u) for u in ups)
    with pytest.raises(LookupError):
        pool.pick("client-1", exclude=everyone)


@pytest.mark.parametrize("name", HASHING)
def test_no_key_is_placed_at_random(name: str) -> None:
    pool = make_pool(urls(5), name, seed=3)
    seen = {pool.pick().upstream.url for _ in range(200)}
    assert len(seen) == 5


@pytest.mark.parametrize("bad", [0, 1, 2.5, "big"])
def test_table_size_is_validated(bad: object) -> None:
    with pytest.raises(ConfigError) as info:
        ConsistentHash(table_size=bad)  # type: ignore[arg-type]
    assert info.value.field == "table_size"
    assert repr(bad) in str(info.value)


def test_the_default_table_does_not_change_size_with_membership() -> None:
    ups = urls(40)
    pool = make_pool(ups, "consistent_hash")
    before = owners(pool, KEYS[:2000])
    pool.update(ups[10:])  # a quarter of the pool leaves: only its keys move
    after = owners(pool, KEYS[:2000])
    kept = [b for a, b in zip(before, after, strict=True) if a not in ups[:10]]
    stayed = sum(1 for a, b in zip(before, after, strict=True) if a not in ups[:10] and a == b)
    assert stayed >= 0.97 * len(kept)


@pytest.mark.parametrize("name", HASHING)
def test_an_ejection_moves_only_the_ejected_members_keys(name: str) -> None:
    ups = urls(10)
    pool = make_pool(ups, name)
    keys = KEYS[:3000]
    before = owners(pool, keys)
    table = pool._tiers[0].algorithm.table  # type: ignore[attr-defined]
    fail(pool, ups[3], 5)  # five connect failures in a row: ejected
    assert state(pool, ups[3]) == "ejected"
    after = owners(pool, keys)
    assert pool._tiers[0].algorithm.table is table  # type: ignore[attr-defined]
    for b, a in zip(before, after, strict=True):
        assert a == b or b == ups[3]
        assert a != ups[3]
    assert sum(b == ups[3] for b in before) > 0


@pytest.mark.parametrize("name", HASHING)
def test_a_pick_during_a_pending_rebuild_skips_the_removed_and_moves_no_other_key(
    name: str,
) -> None:
    ups = urls(10)
    pool = make_pool(ups, name)
    keys = KEYS[:3000]
    before = owners(pool, keys)
    table = pool._tiers[0].algorithm.table  # type: ignore[attr-defined]
    with pool._lock:  # as update_steps() leaves it between its lock holds
        pool._roster.drop(member(pool, ups[3]))
        pool._roster.admit(Member(Upstream(urls(11)[10]), 0))
    during = owners(pool, keys)
    assert pool._tiers[0].algorithm.table is table  # the old table, still
    for b, a in zip(before, during, strict=True):
        assert a == b or b == ups[3]  # only the removed member's keys move
        assert a != ups[3]
    for _ in refresh_tables(pool._lock, pool._roster):
        pass
    after = owners(pool, keys)
    assert owners(make_pool([*ups[:3], *ups[4:], urls(11)[10]], name), keys) == after


def test_a_table_prepared_for_an_older_membership_never_replaces_a_newer_one() -> None:
    ups = urls(12)
    pool = make_pool(ups[:10], "consistent_hash")
    pool.pick("k").finish()
    algorithm = pool._tiers[0].algorithm
    assert isinstance(algorithm, ConsistentHash)
    with pool._lock:
        pool._roster.admit(Member(Upstream(ups[10]), 0))
        _, old_version, old_members = pool._roster.stale_tables()[0]  # the primaries
    old_build = algorithm.prepare(old_members)  # prepared apart from the lock ...
    pool.add(ups[11])  # ... while the membership changes again and is built
    newer = algorithm.table
    assert len(algorithm.members) == 12
    with pool._lock:
        assert not algorithm.install(old_version, *run(old_build))
    assert algorithm.table is newer
    assert owners(pool, KEYS[:500]) == owners(make_pool(ups, "consistent_hash"), KEYS[:500])


def test_a_table_is_the_same_whatever_the_history_of_changes() -> None:
    ups = urls(30)
    pool = make_pool(ups[:20], "consistent_hash")
    pool.pick("k").finish()
    for url in ups[20:]:
        pool.add(url)
    pool.remove(ups[0])
    for _ in pool.update_steps(ups[1:25], step=3):
        pass
    fresh = make_pool(ups[1:25], "consistent_hash", seed=5)
    assert owners(pool, KEYS) == owners(fresh, KEYS)


def paused(
    build: Generator[None, None, T], each: Callable[[], None] = lambda: None
) -> tuple[int, T]:
    """Drive ``build`` to its end, calling ``each`` at every pause: the number of
    pauses, and what it returned."""
    pauses = 0
    while True:
        try:
            next(build)
        except StopIteration as done:
            return pauses, done.value
        pauses += 1
        each()


def test_the_fill_pauses_and_gives_the_paper_s_table() -> None:
    hashes = [hash64(u) for u in urls(50)]
    size = 65_537
    pauses, table = paused(fill(size, hashes, [1.0] * 50))
    assert pauses > 10
    # the paper's formulation: offset + j * skip (mod size), one member per turn
    offsets = [h % size for h in hashes]
    skips = [(h >> 32) % (size - 1) + 1 for h in hashes]
    expected, nexts, filled = [-1] * size, [0] * 50, 0
    while filled < size:
        for i in range(50):
            j = nexts[i]
            while expected[(offsets[i] + j * skips[i]) % size] >= 0:
                j += 1
            expected[(offsets[i] + j * skips[i]) % size] = i
            nexts[i] = j + 1
            filled += 1
            if filled == size:
                break
    assert list(table) == expected


needs_numpy = pytest.mark.skipif(not numpy_fill.available(), reason="numpy is not installed")


@needs_numpy
@settings(max_examples=150, deadline=None)
@given(
    size=st.sampled_from([2, 3, 5, 7, 11, 13, 31, 101, 257, 1009, 4099]),
    hashes=st.lists(st.integers(0, 2**64 - 1), min_size=1, max_size=40),
    data=st.data(),
)
def test_the_numpy_fill_gives_the_same_table_as_the_plain_one(
    size: int, hashes: list[int], data: st.DataObject
) -> None:
    weights = data.draw(
        st.lists(
            st.sampled_from([1.0, 0.5, 2.0, 3.0, 0.1, 7.0]),
            min_size=len(hashes),
            max_size=len(hashes),
        )
    )
    assert list(run(numpy_fill.fill(size, hashes, weights))) == list(
        run(fill(size, hashes, weights))
    )


@needs_numpy
@pytest.mark.parametrize(("n", "weighted"), [(300, False), (700, True), (2_000, False)])
def test_the_numpy_fill_matches_at_pool_sizes(n: int, weighted: bool) -> None:
    hashes = [hash64(u) for u in urls(n)]
    weights = [float(1 + i % 3) if weighted else 1.0 for i in range(n)]
    size = 131_101 if n > 1_000 else 65_537
    assert run(numpy_fill.fill(size, hashes, weights)) == run(fill(size, hashes, weights))


@needs_numpy
def test_large_pools_build_with_numpy_and_small_ones_without(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[int] = []
    vectorized = numpy_fill.fill

    def counting(size: int, hashes: list[int], weights: list[float]) -> object:
        calls.append(len(hashes))
        return vectorized(size, hashes, weights)

    monkeypatch.setattr(numpy_fill, "fill", counting)
    small = make_pool(urls(numpy_fill.MIN_MEMBERS - 1), "consistent_hash")
    small.pick("k").finish()
    assert calls == []
    large = make_pool(urls(numpy_fill.MIN_MEMBERS), "consistent_hash")
    large.pick("k").finish()
    assert calls == [numpy_fill.MIN_MEMBERS]
    # and the table is the plain fill's, so processes with and without numpy agree
    monkeypatch.setattr(numpy_fill, "available", lambda: False)
    plain = make_pool(urls(numpy_fill.MIN_MEMBERS), "consistent_hash")
    assert owners(large, KEYS[:2_000]) == owners(plain, KEYS[:2_000])


@needs_numpy
def test_the_numpy_fill_pauses_when_its_budget_of_work_is_spent() -> None:
    n, size = 300, 65_537
    hashes = [hash64(u) for u in urls(n)]
    weights = [1.0] * n
    ticks = iter(range(10**9))

    def pauses(clock: Callable[[], float]) -> tuple[int, list[int]]:
        count, table = paused(numpy_fill.fill(size, hashes, weights, clock))
        return count, list(table)

    never, table = pauses(lambda: 0.0)  # no time passes: only the table's pieces pause
    assert never == (size - 1) // PIECE
    always, same = pauses(lambda: float(next(ticks)))  # each look is a second later
    assert always > size // n  # at least once a turn, and inside the turns' walks
    assert table == same == list(run(fill(size, hashes, weights)))


def test_prepare_pauses_between_chunks_of_members() -> None:
    from clientlb._core._algorithms._hashing import MEMBERS_CHUNK

    members = [Member(Upstream(u), 0) for u in urls(2 * MEMBERS_CHUNK + 1)]
    algorithm = ConsistentHash()
    algorithm.rebuild(members)
    # the same members: only their signature is read
    pauses, (chosen, _, table) = paused(algorithm.prepare(members))
    assert pauses == 2  # after the first and the second chunk
    assert table is algorithm.table and list(chosen) == members


def test_a_change_of_known_upstreams_leaves_nothing_per_upstream_to_collect() -> None:
    import gc

    from clientlb._core._updates import check_update

    pool = make_pool(urls(2_000), "consistent_hash")
    known = pool._roster.by_key
    gc.collect()
    gc.disable()
    try:
        before = len(gc.get_objects())
        wanted, fresh = check_update(known, urls(2_000), ())
        made = len(gc.get_objects()) - before
    finally:
        gc.enable()
    assert len(wanted.upstreams) == 2_000 and not fresh
    assert made < 50  # a pair per upstream made 2,000


def test_a_blank_table_is_made_in_pieces_with_a_pause_between() -> None:
    size = 2 * PIECE + 3
    pauses, table = paused(blank_table(size))
    assert pauses == 2
    assert len(table) == size and set(table) == {-1}


def test_the_plain_fill_pauses_within_an_entry_late_in_the_fill(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # 50 members, 65,537 entries: the last entries' walks are thousands of probes long
    from clientlb._core._algorithms import _hashing

    probes = 0

    class Counted(bytearray):
        def __getitem__(self, at: int) -> int:  # type: ignore[override]
            nonlocal probes
            probes += 1
            return super().__getitem__(at)

    hashes = [hash64(u) for u in urls(50)]
    weights = [1.0] * 50
    size = 65_537
    plain = list(run(fill(size, hashes, weights)))
    monkeypatch.setattr(_hashing, "bytearray", Counted, raising=False)
    between, last = [], 0

    def pause() -> None:
        nonlocal last
        between.append(probes - last)
        last = probes

    _, table = paused(fill(size, hashes, weights), pause)
    assert probes > 10 * _hashing.BUILD_CHUNK
    # about BUILD_CHUNK probes between two pauses (estimated early on, counted late)
    assert max(between) <= 2 * _hashing.BUILD_CHUNK
    assert list(table) == plain
