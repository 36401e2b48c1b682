"""AttemptPlan: which failures are retried, where, and within what budget."""

from __future__ import annotations

import itertools

import pytest

from clientlb import (
    ALGORITHMS,
    Health,
    Outcome,
    OutlierDetection,
    Pool,
    RetryBudget,
    RetryPolicy,
)
from clientlb._core import AttemptPlan

from .helpers import FakeClock, fast_algorithm, make_pool, urls

NO_BUDGET = RetryPolicy(budget=None)


def plan_pool(n: int = 4, retry: RetryPolicy = NO_BUDGET, **kwargs: object) -> Pool:
    return make_pool(urls(n), outlier=None, retry=retry, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("method", ["POST", "PATCH", "GET", "DELETE"])
def test_connect_failure_is_retried_for_any_method(method: str) -> None:
    plan = AttemptPlan(plan_pool(), method)
    lease = plan.first()
    lease.finish(Outcome.CONNECT_FAILURE)
    assert plan.retry_after(Outcome.CONNECT_FAILURE, replayable=True)
    assert plan.next().upstream.url != lease.upstream.url


@pytest.mark.parametrize("method", ["POST", "PATCH", "GET"])
def test_a_busy_attempt_goes_elsewhere_for_any_method_and_blames_no_one(method: str) -> None:
    pool = make_pool(
        urls(2),
        outlier=OutlierDetection(consecutive_local_failures=1),
        retry=RetryPolicy(max_retries=0, budget=None),
    )
    for _ in range(5):
        plan = AttemptPlan(pool, method)
        lease = plan.first()
        lease.finish(Outcome.BUSY)  # every connection to it was in use: never sent
        assert plan.retry_after(Outcome.BUSY, replayable=True)  # max_retries=0 counts resends
        plan.next().finish(Outcome.BUSY)
        assert not plan.retry_after(Outcome.BUSY, replayable=True)  # each one tried once
    assert [m.health for m in pool.members] == [Health.HEALTHY, Health.HEALTHY]
    assert [(m.failures, m.ejections) for m in pool.members] == [(0, 0), (0, 0)]
    pool.pick().finish(Outcome.CONNECT_FAILURE)  # the control: one refusal ejects
    assert Health.EJECTED in [m.health for m in pool.members]


@pytest.mark.parametrize("outcome", [Outcome.RESET, Outcome.TIMEOUT])
@pytest.mark.parametrize(
    ("method", "retried"),
    [
        ("GET", True),
        ("HEAD", True),
        ("OPTIONS", True),
        ("PUT", True),
        ("DELETE", True),
        ("TRACE", True),
        ("get", True),
        ("POST", False),
        ("PATCH", False),
    ],
)
def test_reset_and_timeout_are_retried_only_when_idempotent(
    outcome: Outcome, method: str, retried: bool
) -> None:
    plan = AttemptPlan(plan_pool(), method)
    plan.first().finish(outcome)
    assert plan.retry_after(outcome, replayable=True) is retried


@pytest.mark.parametrize("outcome", [Outcome.RESET, Outcome.TIMEOUT, None])
def test_post_is_resent_when_the_user_opts_in(outcome: Outcome | None) -> None:
    pool = plan_pool(retry=RetryPolicy(retry_non_idempotent=True, budget=None))
    plan = AttemptPlan(pool, "POST")
    plan.first()
    assert plan.retry_after(outcome, status=503, replayable=True)


@pytest.mark.parametrize(
    ("method", "status", "retried"),
    [
        ("GET", 502, True),
        ("GET", 503, True),
        ("GET", 504, True),
        ("GET", 500, False),
        ("GET", 404, False),
        ("POST", 503, False),
    ],
)
def test_retryable_statuses(method: str, status: int, retried: bool) -> None:
    plan = AttemptPlan(plan_pool(), method)
    plan.first()
    assert plan.retry_after(None, status=status, replayable=True) is retried


def test_retry_on_status_is_configurable() -> None:
    pool = plan_pool(retry=RetryPolicy(retry_on_status=frozenset({500}), budget=None))
    plan = AttemptPlan(pool, "GET")
    plan.first()
    assert plan.retry_after(None, status=500, replayable=True)
    assert not plan.retry_after(None, status=503, replayable=True)


@pytest.mark.parametrize("outcome", [Outcome.CONNECT_FAILURE, Outcome.RESET, Outcome.TIMEOUT, None])
def test_a_body_that_cannot_be_replayed_is_never_resent(outcome: Outcome | None) -> None:
    plan = AttemptPlan(plan_pool(), "GET")
    plan.first()
    assert not plan.retry_after(outcome, status=503, replayable=False)


def test_a_cancelled_request_is_not_retried() -> None:
    plan = AttemptPlan(plan_pool(), "GET")
    plan.first()
    assert not plan.retry_after(Outcome.CANCELLED, replayable=True)


@pytest.mark.parametrize("max_retries", [0, 1, 2, 3])
def test_max_retries_is_honoured(max_retries: int) -> None:
    pool = plan_pool(n=6, retry=RetryPolicy(max_retries=max_retries, budget=None))
    plan = AttemptPlan(pool, "GET")
    plan.first().finish(Outcome.TIMEOUT)
    retries = 0
    while plan.retry_after(Outcome.TIMEOUT, replayable=True):
        retries += 1
        plan.next().finish(Outcome.TIMEOUT)
    assert retries == max_retries


def test_connect_failures_try_each_upstream_once_beyond_max_retries() -> None:
    pool = plan_pool(n=4, retry=RetryPolicy(max_retries=1, budget=None))
    plan = AttemptPlan(pool, "POST")
    tried = [plan.first()]
    tried[-1].finish(Outcome.CONNECT_FAILURE)
    while plan.retry_after(Outcome.CONNECT_FAILURE, replayable=True):
        tried.append(plan.next())
        tried[-1].finish(Outcome.CONNECT_FAILURE)
    assert sorted(lease.upstream.url for lease in tried) == sorted(urls(4))


@pytest.mark.parametrize("name", list(ALGORITHMS))
@pytest.mark.parametrize("outcome", [Outcome.CONNECT_FAILURE, Outcome.TIMEOUT])
def test_retries_never_return_to_a_tried_upstream_while_another_exists(
    name: str, outcome: Outcome
) -> None:
    pool = make_pool(
        urls(4),
        fast_algorithm(name),
        outlier=None,
        retry=RetryPolicy(max_retries=3, budget=None),
        seed=8,
    )
    for client in range(20):
        plan = AttemptPlan(pool, "GET", key=f"client-{client}")
        leases = [plan.first()]
        leases[-1].finish(outcome)
        while plan.retry_after(outcome, replayable=True):
            leases.append(plan.next())
            leases[-1].finish(outcome)
        assert len({lease.upstream.url for lease in leases}) == len(leases) == 4


def test_when_every_upstream_was_tried_the_next_is_not_the_last_one() -> None:
    pool = plan_pool(n=2, retry=RetryPolicy(max_retries=5, budget=None))
    plan = AttemptPlan(pool, "GET")
    order = [plan.first().upstream.url]
    for _ in range(3):
        assert plan.retry_after(Outcome.TIMEOUT, replayable=True)
        order.append(plan.next().upstream.url)
    assert all(a != b for a, b in itertools.pairwise(order))


def test_retries_spill_to_standbys_after_every_primary() -> None:
    pool = make_pool(
        urls(2), standbys=["http://standby"], outlier=None, retry=RetryPolicy(budget=None)
    )
    plan = AttemptPlan(pool, "GET")
    seen = [plan.first().upstream.url]
    while plan.retry_after(Outcome.RESET, replayable=True):
        seen.append(plan.next().upstream.url)
    assert seen[-1] == "http://standby"
    assert sorted(seen[:2]) == sorted(urls(2))


def test_the_retry_budget_stops_retries() -> None:
    clock = FakeClock()
    budget = RetryBudget(ratio=0.2, min_per_second=0)
    pool = plan_pool(n=4, retry=RetryPolicy(budget=budget), clock=clock)
    plans = [AttemptPlan(pool, "GET") for _ in range(10)]
    for plan in plans:
        plan.first().finish(Outcome.CONNECT_FAILURE)
    allowed = [plan.retry_after(Outcome.CONNECT_FAILURE, replayable=True) for plan in plans]
    assert allowed.count(True) == 2
    assert allowed[:2] == [True, True]


def test_the_retry_budget_refills_as_the_window_moves() -> None:
    clock = FakeClock()
    budget = RetryBudget(ratio=0.5, min_per_second=0, window=10.0)
    pool = plan_pool(n=4, retry=RetryPolicy(budget=budget), clock=clock)
    plans = [AttemptPlan(pool, "GET") for _ in range(4)]
    for plan in plans:
        plan.first()
    allowed = [p.retry_after(Outcome.TIMEOUT, replayable=True) for p in plans]
    assert allowed == [True, True, False, False]
    clock.advance(11.0)  # the old requests and retries have left the window
    fresh = [AttemptPlan(pool, "GET") for _ in range(2)]
    for plan in fresh:
        plan.first()
    assert [p.retry_after(Outcome.TIMEOUT, replayable=True) for p in fresh] == [True, False]


def test_the_budget_floor_lets_a_quiet_client_retry() -> None:
    clock = FakeClock()
    budget = RetryBudget(ratio=0.0, min_per_second=0.5, window=10.0)
    pool = plan_pool(n=2, retry=RetryPolicy(budget=budget), clock=clock)
    plans = [AttemptPlan(pool, "GET") for _ in range(8)]
    for plan in plans:
        plan.first()
    allowed = [p.retry_after(Outcome.CONNECT_FAILURE, replayable=True) for p in plans]
    assert allowed.count(True) == 5


def test_a_refused_retry_does_not_spend_the_budget() -> None:
    budget = RetryBudget(ratio=0.1, min_per_second=0)
    pool = plan_pool(n=4, retry=RetryPolicy(budget=budget))
    plans = [AttemptPlan(pool, m) for m in ["POST"] * 5 + ["GET"] * 5]
    for plan in plans:
        plan.first()
    assert not any(p.retry_after(Outcome.TIMEOUT, replayable=True) for p in plans[:5])
    assert [p.retry_after(Outcome.TIMEOUT, replayable=True) for p in plans[5:]].count(True) == 1


def test_history_records_each_attempt() -> None:
    clock = FakeClock()
    pool = plan_pool(n=2, clock=clock)
    plan = AttemptPlan(pool, "GET")
    lease = plan.first()
    clock.advance(0.25)
    lease.finish(Outcome.TIMEOUT)
    plan.record(lease, Outcome.TIMEOUT)
    assert plan.retry_after(Outcome.TIMEOUT, replayable=True)
    second = plan.next()
    second.responded(200)
    second.finish()
    plan.record(second, "success", 200)
    assert [(a.upstream, a.outcome, a.status) for a in plan.history] == [
        (lease.upstream.url, "timeout", None),
        (second.upstream.url, "success", 200),
    ]
    assert plan.history[0].elapsed == pytest.approx(0.25)


def test_a_retry_with_every_available_upstream_tried_goes_to_an_ejected_one() -> None:
    """The last available upstream fails under a request while the others sit out
    an ejection: the retry tries an ejected one (it may well be back) rather than
    failing for certain. A first attempt never does (that is panic's business)."""
    pool = make_pool(
        urls(3),
        outlier=OutlierDetection(consecutive_local_failures=None, consecutive_gateway_errors=1),
        retry=RetryPolicy(budget=None),
    )
    for url in urls(3)[:2]:
        lease = pool.pick()
        while lease.upstream.url != url:
            lease.finish(Outcome.SUCCESS)
            lease = pool.pick()
        lease.responded(502)  # ejected
        lease.finish(Outcome.SUCCESS)
    plan = AttemptPlan(pool, "GET")
    first = plan.first()
    assert first.upstream.url == urls(3)[2] and not pool.panicking
    first.finish(Outcome.RESET)
    assert plan.retry_after(Outcome.RESET, replayable=True)
    assert not pool.panicking  # the third is still in: no panic to fall back on
    retry = plan.next()
    assert retry.upstream.url in urls(3)[:2]


# -- hedges -------------------------------------------------------------------------


def test_a_hedge_with_nowhere_to_go_spends_no_budget() -> None:
    """One upstream, already tried: no hedge, and the budget's one retry is
    still there for a real failure."""
    budget = RetryBudget(ratio=0.0, min_per_second=0.1, window=10.0)  # one retry
    pool = plan_pool(1, RetryPolicy(budget=budget, hedge_after=0.01))
    for _ in range(5):
        plan = AttemptPlan(pool, "GET")
        lease = plan.first()
        assert plan.hedge() is None
        assert plan.lease is lease  # the plan still points at its only attempt
        lease.finish(Outcome.SUCCESS)
    assert pool.take_retry()
    assert not pool.take_retry()


def test_a_hedge_goes_elsewhere_and_draws_on_the_budget() -> None:
    budget = RetryBudget(ratio=0.0, min_per_second=0.1, window=10.0)  # one retry
    pool = plan_pool(3, RetryPolicy(budget=budget, hedge_after=0.01))
    plan = AttemptPlan(pool, "GET")
    first = plan.first()
    hedge = plan.hedge()
    assert hedge is not None and hedge.upstream != first.upstream
    assert plan.lease is hedge
    assert plan.hedge() is None  # the budget is spent
    for lease in (first, hedge):
        lease.finish(Outcome.CANCELLED)
    assert [m.in_flight for m in pool.members] == [0, 0, 0]


def test_an_answer_still_missing_when_cancelled_raises_the_estimate() -> None:
    """A hedge that lost (or a call given up) after longer than the upstream's
    estimate is a lower bound on its latency; a quick cancellation says nothing."""
    clock = FakeClock()
    pool = plan_pool(1, clock=clock)
    lease = pool.pick()
    clock.advance(0.01)
    lease.responded(200)
    lease.finish()
    assert pool.members[0].ewma == pytest.approx(0.01)
    quick = pool.pick()
    clock.advance(0.001)
    quick.finish(Outcome.CANCELLED)
    assert pool.members[0].ewma == pytest.approx(0.01)
    slow = pool.pick()
    clock.advance(0.3)
    slow.finish(Outcome.CANCELLED)
    assert slow.elapsed == pytest.approx(0.3)
    assert pool.members[0].ewma > 0.05
    assert pool.latency_quantile(0.5) is None  # not an answer: not in the pool's window
