"""The fleet simulator (``benchmarks/simulate``) on configurations small enough to
work out by hand: the real pool's picks, the servers' queues, retries of refused
connections, the oracle, and the same figures for the same seed."""

from __future__ import annotations

from dataclasses import replace

import pytest

from benchmarks.simulate._fleet import Fleet, run, upstreams
from benchmarks.simulate._servers import Change, ServerSpec, Service
from benchmarks.simulate._study import Scale, quantile, summary
from clientlb import Subset


def fixed(seconds: float, workers: int | None = 1, *changes: Change) -> ServerSpec:
    return ServerSpec(Service("fixed", seconds), workers, changes=changes)


def latencies_ms(fleet: Fleet) -> list[float]:
    return [round(x * 1e3, 6) for x in run(fleet).latencies]


def test_one_worker_queues_first_in_first_out() -> None:
    fleet = Fleet((fixed(0.010),), "round_robin", schedule=(0.0, 0.001, 0.002), warmup=0.0)
    assert latencies_ms(fleet) == [10.0, 19.0, 28.0]


def test_least_connections_takes_turns_and_skips_a_busy_turn() -> None:
    """Turns go A, B, A, B, A (weighted round robin from the first member); at
    60 ms B's turn finds it busy until 70 ms and idle A takes the request."""
    fleet = Fleet(
        (fixed(0.010), fixed(0.050)),
        "least_connections",
        schedule=(0.0, 0.020, 0.040, 0.060, 0.080),
        warmup=0.0,
        duration=1.0,
    )
    result = run(fleet)
    assert [round(x * 1e3, 6) for x in result.latencies] == [10.0, 10.0, 10.0, 50.0, 10.0]
    assert result.received == [4, 1]


def test_a_refused_connection_is_retried_on_the_other_upstream() -> None:
    """A is dead from the start. A retry's pick takes a turn too, so every
    request's turn is A's: refused after the 1 ms connect delay, then B, 10 ms
    more. (Five refusals would eject A; three do not.)"""
    fleet = Fleet(
        (fixed(0.010, 1, Change(0.0, "die")), fixed(0.010)),
        "least_connections",
        schedule=(0.0, 0.020, 0.040),
        warmup=0.0,
        duration=1.0,
    )
    result = run(fleet)
    assert [round(x * 1e3, 6) for x in result.latencies] == [11.0, 11.0, 11.0]
    assert (result.retries, result.failed, result.received) == (3, 0, [0, 3])


def test_a_request_inside_a_dying_server_is_reset_and_retried() -> None:
    """A (100 ms) dies at 50 ms with the first request inside: reset, retried on
    B (10 ms): 60 ms. A is back at 200 ms and serves the second request in full;
    the first request's old completion at 100 ms is ignored."""
    fleet = Fleet(
        (fixed(0.100, 1, Change(0.050, "die"), Change(0.200, "return")), fixed(0.010)),
        "least_connections",
        schedule=(0.0, 0.300),
        warmup=0.0,
        duration=1.0,
    )
    result = run(fleet)
    assert [round(x * 1e3, 6) for x in result.latencies] == [60.0, 100.0]
    assert (result.retries, result.failed, result.received) == (1, 0, [2, 1])


def test_the_oracle_weighs_queues_by_speed() -> None:
    """A (10 ms) scores 0.01, then 0.02 with one inside, against B's 0.025: the
    first two go to A (the second waits 9 ms); with two at A (0.03) the third
    goes to B."""
    fleet = Fleet((fixed(0.010), fixed(0.025)), "oracle", schedule=(0.0, 0.001, 0.002), warmup=0.0)
    result = run(fleet)
    assert sorted(round(x * 1e3, 6) for x in result.latencies) == [10.0, 19.0, 25.0]
    assert result.received == [2, 1]


def test_the_measured_window_and_the_load() -> None:
    """Only requests that start in [warmup, duration) count; the load is the mean
    outstanding over that window (one request in service for 10 ms of 1 s)."""
    fleet = Fleet((fixed(0.010),), "random", schedule=(0.5, 1.5, 2.5), warmup=1.0, duration=2.0)
    result = run(fleet)
    assert result.latencies == [pytest.approx(0.010)]
    assert result.requests == 3 and result.received == [1]
    assert result.load == [pytest.approx(0.010)]


def test_quantiles() -> None:
    values = [float(i) for i in range(1, 1001)]
    assert quantile(values, 0.5) == 500.0
    assert quantile(values, 0.99) == 990.0
    assert quantile(values, 0.999) == 999.0


@pytest.mark.parametrize("algorithm", ["power_of_two", "least_response_time", "oracle"])
def test_the_same_seed_gives_the_same_run(algorithm: str) -> None:
    study = Scale(
        servers=20,
        clients=3,
        duration=4.0,
        warmup=1.0,
        slow_at=1.5,
        die_at=2.0,
        return_at=3.0,
        slow_share=0.1,
        die_share=0.1,
    )
    first, second = run(study.fleet(algorithm)), run(study.fleet(algorithm))
    assert first.latencies == second.latencies
    assert (first.received, first.peaks) == (second.received, second.peaks)
    assert summary(first)["measured"] > 300
    other = run(Scale(**{**_fields(study), "seed": 2}).fleet(algorithm))
    assert other.latencies != first.latencies


def _fields(study: Scale) -> dict[str, object]:
    return {name: getattr(study, name) for name in Scale.__dataclass_fields__}


def test_subsets_put_every_server_in_as_many_pools() -> None:
    """Six servers, three clients with subsets of four (two gaps of two servers
    between the clients' starts): every server is in two pools and gets a sixth
    of the requests, within Poisson noise."""
    fleet = Fleet(
        tuple(fixed(0.001, None) for _ in range(6)),
        "round_robin",
        clients=3,
        rate=6_000.0,
        duration=1.0,
        warmup=0.0,
        subset=4,
    )
    result = run(fleet)
    total = sum(result.received)
    assert all(abs(n / total - 1 / 6) < 0.02 for n in result.received)


def test_a_client_balances_over_its_subset_only() -> None:
    """Four servers, two clients with two each; client 0's two are dead: its
    five requests fail (nowhere else to go), client 1's five do not. Without
    subsets every request finds a live server."""
    mine = {u.key for u in Subset(2, 0, 2).choose(upstreams(4))}
    dead = [u.key in mine for u in upstreams(4)]
    specs = tuple(fixed(0.001, None, Change(0.0, "die")) if d else fixed(0.001, None) for d in dead)
    times = (0.01, 0.02, 0.03, 0.04, 0.05)
    fleet = Fleet(specs, "round_robin", clients=2, schedule=times, warmup=0.0, subset=2)
    result = run(fleet)
    assert (result.failed, len(result.latencies)) == (5, 5)
    assert all(n == 0 for n, d in zip(result.received, dead, strict=True) if d)
    assert run(replace(fleet, subset=0)).failed == 0


def test_a_server_held_in_part_is_found() -> None:
    """Five servers, two clients with subsets of two: each arc spans two and a
    half servers, so each pool holds a copy of one at half its weight, and the
    requests it sends there reach that server."""
    fleet = Fleet(
        tuple(fixed(0.001, None) for _ in range(5)),
        "round_robin",
        clients=2,
        rate=1_000.0,
        duration=1.0,
        warmup=0.0,
        subset=2,
    )
    result = run(fleet)
    assert result.failed == 0
    assert all(n > 0 for n in result.received)


def test_latency_outliers_are_ejected_when_asked() -> None:
    """Round robin over four servers answering in 10 ms and one in 100 ms: with
    ``latency_factor`` the slow one is ejected once it has answered 20 requests
    (the default ``latency_min_samples``) and stays out for the ejection's 10 s."""
    specs = (*(fixed(0.010, None) for _ in range(4)), fixed(0.100, None))
    fleet = Fleet(specs, "round_robin", rate=100.0, duration=5.0, warmup=0.0)
    assert run(fleet).received[4] > 80
    assert 20 <= run(replace(fleet, latency_factor=3.0)).received[4] <= 30
