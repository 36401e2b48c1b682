"""Connect probes of ejected upstreams: when the core asks for them, and what
their results do. Sans-IO: the test plays the prober."""

from __future__ import annotations

import math

import pytest

from clientlb import ConfigError, Outcome, OutlierDetection, Pool

from .helpers import FakeClock, make_pool, pick_member

A, B = "http://a:1", "http://b:1"


def refuse(
    pool: Pool, url: str, times: int = 5, outcome: Outcome = Outcome.CONNECT_FAILURE
) -> None:
    for _ in range(times):
        pick_member(pool, url).finish(outcome)


def state(pool: Pool, url: str) -> str:
    return next(m.state for m in pool.members if m.url == url)


def test_an_upstream_refusing_connections_is_probed_on_a_backoff() -> None:
    clock = FakeClock()
    pool = make_pool([A, B], clock=clock)
    assert pool.probes_due() == ([], math.inf)
    refuse(pool, A)
    assert state(pool, A) == "ejected"
    assert pool.probes_due() == ([], pytest.approx(0.25))
    clock.advance(0.25)
    due, following = pool.probes_due()
    assert [u.url for u in due] == [A] and following == math.inf
    assert pool.probes_due() == ([], math.inf)  # handed out once, until reported
    gaps = []
    for _ in range(4):
        pool.report_probe(A, False)
        _, wait = pool.probes_due()
        gaps.append(wait)
        clock.advance(wait)
        assert [u.url for u in pool.probes_due()[0]] == [A]
    assert gaps == [0.5, 0.5, 0.5, 0.5]  # doubles from 0.25, capped at 0.5
    assert state(pool, A) == "ejected"
    pool.report_probe(A, True)
    assert state(pool, A) == "healthy"
    assert pool.probes_due() == ([], math.inf)
    assert pick_member(pool, A).upstream.url == A


def test_backoff_follows_the_settings() -> None:
    clock = FakeClock()
    rules = OutlierDetection(probe_after=0.1, max_probe_interval=0.8)
    pool = make_pool([A, B], clock=clock, outlier=rules)
    refuse(pool, A)
    assert pool.probes_due()[1] == pytest.approx(0.1)
    clock.advance(0.1)
    waits = []
    for _ in range(5):
        assert pool.probes_due()[0]
        pool.report_probe(A, False)
        waits.append(pool.probes_due()[1])
        clock.advance(waits[-1])
    assert waits == pytest.approx([0.2, 0.4, 0.8, 0.8, 0.8])


@pytest.mark.parametrize("outcome", [Outcome.RESET, Outcome.TIMEOUT])
def test_an_upstream_that_accepts_connections_is_not_probed(outcome: Outcome) -> None:
    """It failed after connecting: a connect says nothing, it waits out its ejection."""
    clock = FakeClock()
    pool = make_pool([A, B], clock=clock)
    refuse(pool, A, outcome=outcome)
    assert state(pool, A) == "ejected"
    assert pool.probes_due() == ([], math.inf)


def test_gateway_errors_are_not_probed() -> None:
    pool = make_pool([A, B])
    for _ in range(5):
        lease = pick_member(pool, A)
        lease.responded(503)
        lease.finish()
    assert state(pool, A) == "ejected"
    assert pool.probes_due() == ([], math.inf)


def test_the_last_failure_decides() -> None:
    """Resets then a refused connection: it stopped listening, so it is probed."""
    pool = make_pool([A, B])
    refuse(pool, A, times=4, outcome=Outcome.RESET)
    refuse(pool, A, times=1)
    assert state(pool, A) == "ejected"
    assert pool.probes_due()[1] == pytest.approx(0.25)


def test_probing_off() -> None:
    pool = make_pool([A, B], outlier=OutlierDetection(probe_after=None))
    assert not pool.probing
    refuse(pool, A)
    assert state(pool, A) == "ejected"
    assert pool.probes_due() == ([], math.inf)
    assert not make_pool([A], outlier=None).has_background_work
    assert make_pool([A]).has_background_work


def test_probes_end_with_the_ejection() -> None:
    clock = FakeClock()
    pool = make_pool([A, B], clock=clock)
    refuse(pool, A)
    clock.advance(10.0)  # the ejection is over before any probe answered
    assert state(pool, A) == "healthy"
    assert pool.probes_due() == ([], math.inf)
    pool.report_probe(A, True)  # a late result changes nothing
    assert state(pool, A) == "healthy"


def test_a_removed_upstream_is_not_probed() -> None:
    clock = FakeClock()
    pool = make_pool([A, B], clock=clock)
    refuse(pool, A)
    pool.remove(A)
    clock.advance(1.0)
    assert pool.probes_due() == ([], math.inf)
    pool.report_probe(A, True)
    assert [m.url for m in pool.members] == [B]


def test_a_probed_primary_comes_back_through_slow_start_and_the_hold() -> None:
    clock = FakeClock()
    pool = make_pool([A], clock=clock, standbys=[B], slow_start=5.0)
    refuse(pool, A)
    clock.advance(0.25)
    pool.probes_due()
    pool.report_probe(A, True)
    assert state(pool, A) == "slow-start"
    held = make_pool([A], clock=clock, standbys=[B], fail_back_after=2.0)
    refuse(held, A)
    clock.advance(0.25)
    held.probes_due()
    held.report_probe(A, True)
    assert state(held, A) == "recovering"
    clock.advance(2.0)
    assert state(held, A) == "healthy"


def test_a_failed_probe_does_not_count_as_traffic() -> None:
    clock = FakeClock()
    pool = make_pool([A, B], clock=clock)
    refuse(pool, A)
    before = next(m for m in pool.members if m.url == A)
    clock.advance(0.25)
    pool.probes_due()
    pool.report_probe(A, False)
    after = next(m for m in pool.members if m.url == A)
    assert (after.requests, after.failures, after.ejections) == (
        before.requests,
        before.failures,
        before.ejections,
    )


@pytest.mark.parametrize(
    ("field", "value"),
    [("probe_after", 0), ("probe_after", -1.0), ("max_probe_interval", 0), ("probe_after", "1")],
)
def test_probe_settings_are_checked(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=f"^{field}: "):
        OutlierDetection(**{field: value})  # type: ignore[arg-type]
