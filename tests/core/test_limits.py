"""Per-upstream connection limits in the core: full upstreams are skipped by
every algorithm, nothing free fails fast (or waits, within ``max_pending``), and
being full is neither a failure nor a reason to panic."""

from __future__ import annotations

import pytest

from clientlb import ALGORITHMS, ConfigError, Health, Lease, Outcome, Pool, Upstream
from clientlb._core import NoUpstream, Saturated

from .helpers import FakeClock, make_pool, member

A, B, C = "http://10.0.0.1:8000", "http://10.0.0.2:8000", "http://10.0.0.3:8000"


def limited(name: str, **kwargs: object) -> Pool:
    """A: one slot; B: two; C: the pool's default (unlimited)."""
    return make_pool(
        [Upstream(A, max_connections=1), Upstream(B, max_connections=2), C], name, **kwargs
    )


def take(pool: Pool, n: int, key: str | None = None) -> list[Lease]:
    return [pool.pick(key) for _ in range(n)]


@pytest.mark.parametrize("name", list(ALGORITHMS))
def test_a_full_upstream_is_skipped_by_every_algorithm(name: str) -> None:
    pool = limited(name)
    leases = take(pool, 60, "client-1")
    per_url = {url: sum(1 for x in leases if x.upstream.url == url) for url in (A, B, C)}
    assert per_url[A] <= 1 and per_url[B] <= 2
    assert per_url[C] >= 57
    row = {r["url"]: r for r in pool.snapshot()["upstreams"]}
    assert row[A]["max_connections"] == 1 and row[C]["max_connections"] is None
    for lease in leases:
        lease.finish()
    assert all(m.in_flight == 0 for m in pool.members)


@pytest.mark.parametrize("name", ["ip_hash", "consistent_hash"])
def test_hashing_sends_a_full_upstreams_keys_to_the_next_in_the_keys_order(name: str) -> None:
    pool = make_pool([A, B, C], name, max_connections=1)
    first = pool.pick("key")
    # what the key's order says after its own upstream: as if it were excluded
    expected = make_pool([A, B, C], name).pick("key", exclude=[first.upstream]).upstream
    assert pool.pick("key").upstream == expected


@pytest.mark.parametrize("name", list(ALGORITHMS))
def test_all_full_fails_fast_and_counts_back_to_zero(name: str) -> None:
    pool = make_pool([A, B], name, max_connections=2)
    leases = take(pool, 4, "k")
    with pytest.raises(Saturated, match="connection limit") as caught:
        pool.pick("k")
    assert isinstance(caught.value, NoUpstream)
    with pytest.raises(Saturated, match="0 requests \\(max_pending\\) wait"):
        pool.wait_for_slot(lambda: None, caught.value.version)
    snapshot = pool.snapshot()
    assert (snapshot["pending"], snapshot["rejected"], snapshot["panic"]) == (0, 1, False)
    for lease in leases:
        lease.finish(Outcome.SUCCESS)
    assert all(m.in_flight == 0 for m in pool.members)
    assert pool._slots.full == set()
    pool.pick("k").finish()


def test_a_standby_takes_the_overflow_of_full_primaries() -> None:
    pool = make_pool([A], standbys=[B], max_connections=1)
    first, second = pool.pick(), pool.pick()
    assert (first.upstream.url, second.upstream.url) == (A, B)
    with pytest.raises(Saturated):
        pool.pick()


def test_full_is_not_a_failure_and_not_a_panic() -> None:
    pool = make_pool([A, B], max_connections=1, panic_threshold=1.0)
    leases = take(pool, 2)
    for _ in range(10):
        with pytest.raises(Saturated):
            pool.pick()
    assert not pool.panicking
    assert all(m.health is Health.HEALTHY and m.failures == 0 for m in pool.members)
    assert all(m.ejections == 0 for m in pool.members)
    for lease in leases:
        lease.finish()


def test_nothing_healthy_is_not_saturated() -> None:
    pool = make_pool([A], max_connections=1)
    pool.drain(A)
    with pytest.raises(NoUpstream) as caught:
        pool.pick()
    assert not isinstance(caught.value, Saturated)


def test_an_upstreams_own_limit_wins_over_the_pools() -> None:
    pool = make_pool([Upstream(A, max_connections=3), B], max_connections=1)
    assert member(pool, A).limit == 3 and member(pool, B).limit == 1
    assert {m.url: m.max_connections for m in pool.members} == {A: 3, B: 1}


def test_a_waiter_is_woken_when_a_slot_frees_and_the_pending_bound_holds() -> None:
    pool = make_pool([A, B], max_connections=1, max_pending=1)
    leases = take(pool, 2)
    with pytest.raises(Saturated) as caught:
        pool.pick()
    woken: list[str] = []
    wait = pool.wait_for_slot(lambda: woken.append("slot"), caught.value.version)
    assert pool.snapshot()["pending"] == 1
    with pytest.raises(Saturated, match="1 request \\(max_pending\\)"):
        pool.wait_for_slot(lambda: None, caught.value.version)
    assert woken == []
    leases[0].responded(200)  # an answer is no slot
    assert woken == []
    leases[0].finish()
    assert woken == ["slot"]
    with wait:
        served = pool.pick()
    assert served.upstream.url == leases[0].upstream.url
    snapshot = pool.snapshot()
    assert (snapshot["pending"], snapshot["rejected"]) == (0, 1)
    served.finish()
    leases[1].finish()


def test_a_slot_freed_before_the_wait_is_registered_wakes_it_at_once() -> None:
    pool = make_pool([A], max_connections=1, max_pending=4)
    lease = pool.pick()
    with pytest.raises(Saturated) as caught:
        pool.pick()
    lease.finish()  # between the failed pick and the registration
    woken: list[int] = []
    with pool.wait_for_slot(lambda: woken.append(1), caught.value.version):
        assert woken == [1]


def test_an_expired_wait_counts_as_a_rejection_and_leaves_the_queue() -> None:
    pool = make_pool([A], max_connections=1, max_pending=2)
    lease = pool.pick()
    with pytest.raises(Saturated) as caught:
        pool.pick()
    wait = pool.wait_for_slot(lambda: None, caught.value.version)
    wait.expired()
    wait.close()
    snapshot = pool.snapshot()
    assert (snapshot["pending"], snapshot["rejected"]) == (0, 1)
    lease.finish()


def test_waiters_are_woken_when_an_upstream_joins() -> None:
    pool = make_pool([A], max_connections=1, max_pending=1)
    lease = pool.pick()
    with pytest.raises(Saturated) as caught:
        pool.pick()
    woken: list[int] = []
    with pool.wait_for_slot(lambda: woken.append(1), caught.value.version):
        pool.add(B)
        assert woken
        assert pool.pick().upstream.url == B
    lease.finish()


def test_an_update_changes_a_limit() -> None:
    pool = make_pool([Upstream(A, max_connections=1)])
    lease = pool.pick()
    with pytest.raises(Saturated):
        pool.pick()
    pool.update([Upstream(A, max_connections=2)])
    second = pool.pick()
    pool.update([Upstream(A, max_connections=1)])
    lease.finish()
    with pytest.raises(Saturated):  # still one in flight: at the new limit
        pool.pick()
    second.finish()
    pool.pick().finish()


def test_a_retry_that_finds_the_rest_full_is_saturated() -> None:
    clock = FakeClock()
    pool = make_pool([A, B], clock=clock, max_connections=1)
    first = pool.pick()
    other = pool.pick()
    first.finish(Outcome.CONNECT_FAILURE)
    with pytest.raises(Saturated):
        pool.pick(exclude=[first.upstream])
    other.finish()


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"max_connections": 0}, "max_connections"),
        ({"max_connections": True}, "max_connections"),
        ({"max_connections": 1.5}, "max_connections"),
        ({"max_pending": -1}, "max_pending"),
        ({"max_pending": None}, "max_pending"),
    ],
)
def test_bad_pool_limits_are_config_errors(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Pool([A], **kwargs)  # type: ignore[arg-type]
    assert caught.value.field == field


@pytest.mark.parametrize("value", [0, -1, True, 2.0, "3", 1 << 31])
def test_bad_upstream_limits_are_config_errors(value: object) -> None:
    with pytest.raises(ConfigError) as caught:
        Upstream(A, max_connections=value)  # type: ignore[arg-type]
    assert caught.value.field == "max_connections"
