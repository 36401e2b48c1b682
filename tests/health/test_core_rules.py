"""Sans-IO checks of the health rules this area relies on: latency outliers,
fail-back hold, drains, and membership changes under concurrent picks."""

from __future__ import annotations

import random
import threading
from collections import Counter

import pytest

from clientlb import ConfigError, Health, Outcome, OutlierDetection, Pool
from clientlb._core import HealthCheck, NoUpstream


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(upstreams: list[str], clock: Clock, **kwargs: object) -> Pool:
    return Pool(upstreams, clock=clock, rng=random.Random(1), **kwargs)  # type: ignore[arg-type]


def state(pool: Pool, url: str) -> Health:
    return next(m.health for m in pool.members if m.upstream.url == url)


def serve(pool: Pool, clock: Clock, latency: dict[str, float], n: int) -> Counter[str]:
    """``n`` sequential requests; each upstream answers after its latency."""
    seen: Counter[str] = Counter()
    for _ in range(n):
        lease = pool.pick()
        clock.now += latency[lease.upstream.url]
        lease.responded(200)
        lease.finish(Outcome.SUCCESS)
        seen[lease.upstream.url] += 1
    return seen


URLS = ["http://a:1", "http://b:1", "http://c:1", "http://d:1"]


def test_latency_outlier_is_ejected_and_judged_afresh_after_readmission() -> None:
    clock = Clock()
    rules = OutlierDetection(
        latency_factor=3, latency_min_samples=5, latency_interval=1.0, base_ejection_time=30
    )
    pool = make(URLS, clock, outlier=rules)
    slow = {u: 0.01 for u in URLS} | {"http://d:1": 0.2}
    serve(pool, clock, slow, 60)
    assert state(pool, "http://d:1") is Health.EJECTED
    assert [state(pool, u) for u in URLS[:3]] == [Health.HEALTHY] * 3
    clock.now += 31  # the ejection expires; d is fast now
    fast = dict.fromkeys(URLS, 0.01)
    seen = serve(pool, clock, fast, 200)
    assert state(pool, "http://d:1") is Health.HEALTHY
    assert seen["http://d:1"] > 30


def test_latency_rule_needs_samples_and_peers() -> None:
    clock = Clock()
    rules = OutlierDetection(latency_factor=2, latency_min_samples=50)
    pool = make(URLS, clock, outlier=rules)
    serve(pool, clock, {u: 0.01 for u in URLS} | {"http://a:1": 1.0}, 100)  # 25 each
    assert state(pool, "http://a:1") is Health.HEALTHY
    lone = make(
        ["http://a:1"], clock, outlier=OutlierDetection(latency_factor=2, latency_min_samples=1)
    )
    serve(lone, clock, {"http://a:1": 5.0}, 10)
    assert state(lone, "http://a:1") is Health.HEALTHY


def test_latency_rule_respects_the_ejection_cap() -> None:
    clock = Clock()
    rules = OutlierDetection(
        latency_factor=2, latency_min_samples=3, max_ejected_share=0.25, base_ejection_time=300
    )
    pool = make(URLS, clock, outlier=rules)
    latency = {u: 0.01 for u in URLS} | {"http://c:1": 0.5, "http://d:1": 0.9}
    serve(pool, clock, latency, 80)
    assert [state(pool, u) for u in URLS].count(Health.EJECTED) == 1
    assert state(pool, "http://d:1") is Health.EJECTED  # the slowest goes first


def test_latency_rule_is_not_evaluated_per_request() -> None:
    clock = Clock()
    rules = OutlierDetection(latency_factor=2, latency_min_samples=1, latency_interval=10)
    pool = make(URLS, clock, outlier=rules)
    serve(pool, clock, dict.fromkeys(URLS, 0.001), 8)  # evaluated once, at the first finish
    serve(pool, clock, {u: 0.001 for u in URLS} | {"http://a:1": 1.0}, 8)
    assert state(pool, "http://a:1") is Health.HEALTHY  # not due yet
    clock.now += 10
    serve(pool, clock, dict.fromkeys(URLS, 0.001), 1)
    assert state(pool, "http://a:1") is Health.EJECTED


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"latency_factor": 1.0}, "latency_factor"),
        ({"latency_factor": float("nan")}, "latency_factor"),
        ({"latency_min_samples": 0}, "latency_min_samples"),
        ({"latency_interval": 0}, "latency_interval"),
    ],
)
def test_outlier_latency_fields_are_validated(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        OutlierDetection(**kwargs)  # type: ignore[arg-type]
    assert info.value.field == field


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"path": "health"}, "path"),
        ({"interval": 0}, "interval"),
        ({"timeout": -1}, "timeout"),
        ({"rise": 0}, "rise"),
        ({"fall": True}, "fall"),
        ({"expected": range(0, 200)}, "expected"),
        ({"expected": [200, 700]}, "expected"),
        ({"expected": 200}, "expected"),
    ],
)
def test_health_check_policy_is_validated(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        HealthCheck(**kwargs)  # type: ignore[arg-type]
    assert info.value.field == field


def test_health_check_policy_values() -> None:
    check = HealthCheck(expected=[200, 204])
    assert check.expected == frozenset({200, 204})
    assert check.passed(204) and not check.passed(301)
    assert HealthCheck().passed(399) and not HealthCheck().passed(400)
    assert HealthCheck(path="/ready").url("http://h:1/v2/") == "http://h:1/v2/ready"


def test_fail_back_hold_applies_only_when_a_standby_serves() -> None:
    clock = Clock()
    pool = Pool(["http://p:1"], ["http://s:1"], clock=clock, fail_back_after=5.0)
    pool.report_check("http://p:1", False, fall=1)
    pool.report_check("http://s:1", False, fall=1)
    assert not pool.panicking  # every upstream down by active checks: nothing can serve
    with pytest.raises(NoUpstream):
        pool.pick()
    pool.report_check("http://p:1", True, rise=1)  # nothing else serves: no hold
    assert pool.pick().upstream.url == "http://p:1"
    assert not pool.panicking

    pool.report_check("http://s:1", True, rise=1)
    pool.report_check("http://p:1", False, fall=1)
    assert pool.pick().upstream.url == "http://s:1"
    pool.report_check("http://p:1", True, rise=1)  # a standby serves: hold
    assert pool.pick().upstream.url == "http://s:1"
    clock.now += 5.0
    assert pool.pick().upstream.url == "http://p:1"


def test_drain_outlives_an_old_ejection_timer() -> None:
    clock = Clock()
    rules = OutlierDetection(consecutive_local_failures=1, base_ejection_time=5)
    pool = Pool(["http://a:1", "http://b:1"], clock=clock, outlier=rules)
    held = pool.pick(exclude=[m for m in pool.members if m.upstream.url != "http://a:1"])
    failing = pool.pick(exclude=[m for m in pool.members if m.upstream.url != "http://a:1"])
    failing.finish(Outcome.CONNECT_FAILURE)
    assert state(pool, "http://a:1") is Health.EJECTED
    pool.drain("http://a:1")  # no timeout: removed when `held` ends, not when the timer fires
    clock.now += 6
    pool.pick().finish()
    assert state(pool, "http://a:1") is Health.DRAINING
    held.finish()
    assert [m.upstream.url for m in pool.members] == ["http://b:1"]


def test_update_is_atomic_for_concurrent_picks() -> None:
    pool = Pool([f"http://h{i}:1" for i in range(8)], algorithm="least_connections")
    errors: list[BaseException] = []
    stop = threading.Event()
    generation = [frozenset(m.upstream.url for m in pool.members)]
    applied = [0]  # index in `generation` of the last update that returned

    def picker() -> None:
        try:
            while not stop.is_set():
                low = applied[0]
                lease = pool.pick()
                allowed = frozenset().union(*generation[low:])
                assert lease.upstream.url in allowed, lease.upstream.url
                lease.responded(200)
                lease.finish()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=picker) for _ in range(4)]
    for t in threads:
        t.start()
    rng = random.Random(3)
    for _ in range(300):
        urls = [f"http://h{i}:1" for i in rng.sample(range(16), 6)]
        generation.append(frozenset(urls))
        pool.update(urls, drain_timeout=None)
        applied[0] = len(generation) - 1
    stop.set()
    for t in threads:
        t.join()
    assert not errors
    assert all(m.in_flight == 0 for m in pool.members)
    assert {m.upstream.url for m in pool.members} == generation[-1]


def test_update_keeps_survivor_statistics() -> None:
    pool = Pool(["http://a:1", "http://b:1"])
    for _ in range(10):
        lease = pool.pick()
        lease.responded(200)
        lease.finish()
    before = {m.url: m for m in pool.members}
    pool.update(["http://a:1", "http://c:1"])
    after = {m.url: m for m in pool.members}
    kept, was = after["http://a:1"], before["http://a:1"]
    assert (kept.requests, kept.ewma) == (was.requests, was.ewma) and kept.requests > 0
    assert "http://b:1" not in after


@pytest.mark.parametrize("algorithm", ["consistent_hash", "ip_hash"])
def test_consistent_hash_remaps_little_on_membership_change(algorithm: str) -> None:
    urls = [f"http://h{i}:1" for i in range(10)]
    pool = Pool(urls, algorithm=algorithm)
    keys = [f"user-{i}" for i in range(5000)]

    def owners() -> dict[str, str]:
        out = {}
        for key in keys:
            lease = pool.pick(key)
            out[key] = lease.upstream.url
            lease.finish()
        return out

    before = owners()
    pool.update(urls[:-1])  # remove one of ten
    after = owners()
    moved = [k for k in keys if before[k] != after[k]]
    lost = [k for k in keys if before[k] == urls[-1]]
    assert set(lost) <= set(moved)
    assert len(moved) - len(lost) < 0.03 * len(keys)  # Maglev: very few others move
    pool.update(urls)  # and back: the table is rebuilt exactly as it was
    assert owners() == before


def test_a_ramping_primary_serves_when_the_standbys_are_excluded() -> None:
    clock = Clock()
    pool = Pool(["http://p:1"], ["http://s:1"], clock=clock, slow_start=10.0)
    pool.report_check("http://p:1", False, fall=1)
    pool.report_check("http://p:1", True, rise=1)  # back, ramping from 10 %
    standby = [m for m in pool.members if m.upstream.url == "http://s:1"]
    for _ in range(50):  # a retry that already tried the standby
        lease = pool.pick(exclude=standby)
        assert lease.upstream.url == "http://p:1"
        lease.finish()
    seen = Counter(pool.pick().upstream.url for _ in range(1000))
    assert 50 < seen["http://p:1"] < 200  # the ramp still spills most to the standby


def test_the_first_discovery_answer_does_not_ramp() -> None:
    clock = Clock()
    pool = Pool(allow_empty=True, clock=clock, slow_start=30.0)
    pool.update(["http://p:1"], ["http://s:1"])
    assert all(m.state == "healthy" for m in pool.members)
    assert Counter(pool.pick().upstream.url for _ in range(100)) == {"http://p:1": 100}
    pool.update(["http://p:1", "http://q:1"], ["http://s:1"])  # a later newcomer ramps
    states = {m.url: m.state for m in pool.members}
    assert states == {"http://p:1": "healthy", "http://q:1": "slow-start", "http://s:1": "healthy"}
