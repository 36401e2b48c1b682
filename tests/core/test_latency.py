"""The pool's recent latency quantiles (hedging reads them on every request)."""

from __future__ import annotations

import pytest

from clientlb import Outcome, Pool
from clientlb._core._latency import LatencyWindow

from .helpers import FakeClock, make_pool, pick_member, urls


def answer(pool: Pool, clock: FakeClock, latency: float, status: int = 200) -> None:
    lease = pool.pick()
    clock.advance(latency)
    lease.responded(status)
    lease.finish()


def test_no_estimate_before_twenty_successes() -> None:
    clock = FakeClock()
    pool = make_pool(urls(3), clock=clock)
    for i in range(19):
        answer(pool, clock, 0.001 * (i + 1))
        assert pool.latency_quantile(0.95) is None
    answer(pool, clock, 0.020)
    assert pool.latency_quantile(0.95) == pytest.approx(0.019)  # nearest rank: 19th of 20
    assert pool.latency_quantile(0.5) == pytest.approx(0.010)
    assert pool.latency_quantile(0.0) == pytest.approx(0.001)
    assert pool.latency_quantile(1.0) == pytest.approx(0.020)


def test_failures_are_not_latencies_but_finishes_without_headers_are() -> None:
    clock = FakeClock()
    pool = make_pool(urls(3), clock=clock, outlier=None)
    for _ in range(50):
        answer(pool, clock, 5.0, status=503)  # a 5xx is a failure
        lease = pool.pick()
        clock.advance(5.0)
        lease.finish(Outcome.CONNECT_FAILURE)
        lease = pool.pick()
        clock.advance(5.0)
        lease.finish(Outcome.CANCELLED)
    assert pool.latency_quantile(0.5) is None
    for _ in range(20):
        lease = pool.pick()
        clock.advance(0.25)
        lease.finish()  # a shell that reports no headers: the whole exchange counts
    assert pool.latency_quantile(0.99) == pytest.approx(0.25)
    lease = pick_member(pool, urls(3)[0])
    clock.advance(0.5)
    lease.responded(200)
    clock.advance(10.0)
    lease.finish()  # counted once, at the headers
    clock.advance(0.1)
    assert pool.latency_quantile(1.0) == pytest.approx(0.5)


def test_sorted_at_most_once_per_100_ms(monkeypatch: pytest.MonkeyPatch) -> None:
    sorts: list[float] = []
    refresh = LatencyWindow.refresh

    def counting(self: LatencyWindow, now: float) -> None:
        sorts.append(now)
        refresh(self, now)

    monkeypatch.setattr(LatencyWindow, "refresh", counting)
    clock = FakeClock()
    pool = make_pool(urls(2), clock=clock)
    for _ in range(20):
        answer(pool, clock, 0.001)
    start = clock()
    assert pool.latency_quantile(0.95) == pytest.approx(0.001)
    for _ in range(30):
        answer(pool, clock, 0.003)  # 90 ms on the clock
        assert pool.latency_quantile(0.95) == pytest.approx(0.001)  # the cached estimate
    clock.advance(0.01)  # 100 ms since the sort
    assert pool.latency_quantile(0.95) == pytest.approx(0.003)
    assert sorts == [start, pytest.approx(start + 0.1)]


def test_the_window_keeps_the_last_1024() -> None:
    clock = FakeClock()
    pool = make_pool(urls(2), clock=clock)
    for _ in range(1024):
        answer(pool, clock, 1.0)
    clock.advance(1.0)
    assert pool.latency_quantile(0.0) == 1.0
    for _ in range(1023):
        answer(pool, clock, 0.5)
    clock.advance(1.0)
    assert pool.latency_quantile(1.0) == 1.0  # one of the old ones is still in
    answer(pool, clock, 0.5)
    clock.advance(1.0)
    assert pool.latency_quantile(1.0) == 0.5
    assert len(pool._latencies) == 1024


def test_a_clock_that_goes_back_does_not_freeze_the_estimate() -> None:
    clock = FakeClock()
    pool = make_pool(urls(2), clock=clock)
    for _ in range(20):
        answer(pool, clock, 0.001)
    assert pool.latency_quantile(1.0) == pytest.approx(0.001)
    clock.now -= 60.0  # a clock that is not monotonic after all
    for _ in range(20):
        answer(pool, clock, 0.002)
    assert pool.latency_quantile(1.0) == pytest.approx(0.002)  # sorted again at once


@pytest.mark.parametrize("q", [-0.01, 1.5, float("nan"), "p95", None, True])
def test_quantile_must_be_a_share(q: object) -> None:
    pool = make_pool(urls(1))
    with pytest.raises(ValueError, match="quantile"):
        pool.latency_quantile(q)  # type: ignore[arg-type]


def test_window_quantiles_by_nearest_rank() -> None:
    window = LatencyWindow(size=4, min_samples=2, refresh=1.0)
    window.add(3.0)
    assert window.stale(0.0) is False and window.quantile(0.5) is None  # one sample
    window.add(1.0)
    assert window.stale(0.0)
    window.refresh(0.0)
    assert [window.quantile(q) for q in (0.0, 0.5, 0.51, 1.0)] == [1.0, 1.0, 3.0, 3.0]
    for value in (4.0, 2.0, 5.0):  # the ring drops the oldest (3.0)
        window.add(value)
    assert not window.stale(0.5)
    assert window.stale(1.0)
    window.refresh(1.0)
    assert [window.quantile(q) for q in (0.25, 0.5, 0.75, 1.0)] == [1.0, 2.0, 4.0, 5.0]
