"""``clientlb.Metrics``: what it counts, and the text it writes."""

from __future__ import annotations

import random
import re
from typing import Any

import httpx
import pytest

import clientlb
from clientlb import Health, Metrics, OutlierDetection, Pool, RetryBudget, RetryPolicy
from clientlb._core._slots import Saturated
from clientlb._exposition import Family, render

NO_EJECTION = OutlierDetection(consecutive_local_failures=None, consecutive_gateway_errors=None)


def answers(statuses: dict[str, int | Exception]) -> httpx.MockTransport:
    """Each upstream (by host) answers its status, or raises its error."""

    def handler(request: httpx.Request) -> httpx.Response:
        outcome = statuses[request.url.host]
        if isinstance(outcome, Exception):
            raise outcome
        return httpx.Response(outcome, text="x")

    return httpx.MockTransport(handler)


def samples(metrics: Metrics) -> dict[str, float]:
    """Every sample of ``metrics.render()`` by its name and labels, as written."""
    out = {}
    for line in metrics.render().splitlines():
        if not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def test_requests_attempts_retries_and_responses_by_class() -> None:
    metrics = Metrics()
    transport = clientlb.BalancingTransport(
        ["http://a:1", "http://b:1"],
        inner=answers({"a": 503, "b": 200}),
        outlier=NO_EJECTION,
        metrics=metrics,
    )
    with httpx.Client(transport=transport, base_url="http://svc") as client:
        # round robin starts at a random place: a request that meets a is retried at b
        retried = 0
        for _ in range(2):
            response = client.get("/")
            assert response.status_code == 200
            retried += len(response.extensions["clientlb.attempts"]) - 1
    assert retried in (1, 2)
    got = samples(metrics)
    assert got['clientlb_requests_total{pool="default"}'] == 2
    assert got['clientlb_attempts_total{pool="default"}'] == 2 + retried
    assert got['clientlb_retries_total{pool="default"}'] == retried
    assert got['clientlb_hedges_total{pool="default"}'] == 0
    assert (
        got['clientlb_upstream_responses_total{class="5xx",pool="default",upstream="http://a:1"}']
        == retried
    )
    assert (
        got['clientlb_upstream_responses_total{class="2xx",pool="default",upstream="http://b:1"}']
        == 2
    )
    assert (
        got[
            'clientlb_upstream_request_duration_seconds_count{pool="default",upstream="http://b:1"}'
        ]
        == 2
    )
    inf = 'clientlb_upstream_request_duration_seconds_bucket{le="+Inf",pool="default",upstream="http://b:1"}'
    assert got[inf] == 2


def test_errors_with_no_response_and_the_budget() -> None:
    metrics = Metrics()
    stingy = RetryPolicy(budget=RetryBudget(ratio=0.0, min_per_second=0.0))
    transport = clientlb.BalancingTransport(
        ["http://a:1", "http://b:1"],
        inner=answers({"a": httpx.ReadTimeout("slow"), "b": httpx.ReadTimeout("slow")}),
        outlier=NO_EJECTION,
        retry=stingy,
        metrics=metrics,
    )
    client = httpx.Client(transport=transport, base_url="http://svc")
    with client, pytest.raises(clientlb.NoUpstreamAvailable):
        client.get("/")
    got = samples(metrics)
    errors = [
        v for k, v in got.items() if k.startswith('clientlb_upstream_responses_total{class="error"')
    ]
    assert errors == [1]  # the one attempt (round robin starts at a random place)
    assert got['clientlb_retry_budget_exhausted_total{pool="default"}'] == 1
    assert got['clientlb_retries_total{pool="default"}'] == 0
    # no response: no duration
    assert not any(k.startswith("clientlb_upstream_request_duration") for k in got)


def test_an_attempt_that_found_every_connection_busy_is_not_an_error() -> None:
    metrics = Metrics()
    transport = clientlb.BalancingTransport(
        ["http://a:1", "http://b:1"],
        inner=answers({"a": httpx.PoolTimeout("every connection is busy"), "b": 200}),
        outlier=OutlierDetection(consecutive_local_failures=1),
        retry=RetryPolicy(budget=None),
        metrics=metrics,
    )
    client = httpx.Client(transport=transport, base_url="http://svc")
    with client:
        for _ in range(4):  # a POST too: it was never sent
            assert client.post("/", content=b"x").status_code == 200
    got = samples(metrics)
    assert got[
        'clientlb_upstream_responses_total{class="busy",pool="default",upstream="http://a:1"}'
    ]
    assert not any('class="error"' in k for k in got)
    assert not any(k.startswith("clientlb_upstream_ejections_total") for k in got)
    assert [m.health for m in transport.pool.members] == [Health.HEALTHY, Health.HEALTHY]


def test_ejections_by_rule_and_health_check_results() -> None:
    metrics = Metrics()
    pool = Pool(
        ["http://a:1", "http://b:1"], outlier=OutlierDetection(consecutive_gateway_errors=1)
    )
    metrics.watch(pool, "users")
    lease = pool.pick()
    lease.responded(503)
    lease.finish()
    pool.report_check("http://b:1", True)
    pool.report_check("http://b:1", False, fall=3)
    got = samples(metrics)
    url = lease.upstream.url
    ejected = (
        'clientlb_upstream_ejections_total{pool="users",reason="consecutive_gateway_errors",'
        f'upstream="{url}"}}'
    )
    assert got[ejected] == 1
    assert (
        got[
            'clientlb_upstream_health_checks_total{pool="users",result="pass",upstream="http://b:1"}'
        ]
        == 1
    )
    assert (
        got[
            'clientlb_upstream_health_checks_total{pool="users",result="fail",upstream="http://b:1"}'
        ]
        == 1
    )
    [event] = [e for e in metrics.events() if e.event == "ejected"]
    assert (event.pool, event.upstream, event.detail) == (
        "users",
        url,
        "consecutive_gateway_errors",
    )


def test_a_state_gauge_per_state_with_fixed_labels() -> None:
    metrics = Metrics()
    pool = Pool(["http://a:1"], ["http://s:1"])
    metrics.watch(pool)
    before = {k for k in samples(metrics) if k.startswith("clientlb_upstream_state")}
    pool.report_check("http://a:1", False)  # down
    after = samples(metrics)
    states = {k: v for k, v in after.items() if k.startswith("clientlb_upstream_state")}
    assert set(states) == before and len(states) == 12  # 6 states x 2 upstreams, always
    assert (
        states[
            'clientlb_upstream_state{pool="default",state="down",tier="primary",upstream="http://a:1"}'
        ]
        == 1
    )
    assert (
        states[
            'clientlb_upstream_state{pool="default",state="healthy",tier="primary",upstream="http://a:1"}'
        ]
        == 0
    )
    assert sum(states.values()) == 2
    serving = [e.detail for e in metrics.events() if e.event == "serving"]
    assert serving == ["standby"]  # the failover is an event of its own


def test_one_collector_several_pools_by_name() -> None:
    metrics = Metrics()
    users, orders = Pool(["http://u:1"]), Pool(["http://o:1"])
    clientlb.AsyncBalancingTransport(services={"users": users, "orders": orders}, metrics=metrics)
    other = Pool(["http://x:1"])
    assert metrics.watch(other) == "default"
    assert metrics.watch(Pool(["http://y:1"])) == "default-2"
    assert metrics.watch(users, "renamed") == "users"  # named once, for good
    assert set(metrics.pools) == {"users", "orders", "default", "default-2"}
    assert 'clientlb_pool_panic{pool="orders"} 0.0' in metrics.render()


def test_a_wrong_metrics_argument_is_a_config_error() -> None:
    with pytest.raises(clientlb.ConfigError, match="metrics"):
        clientlb.BalancingTransport(["http://a:1"], metrics=object())  # type: ignore[arg-type]


def test_text_is_what_prometheus_client_writes() -> None:
    pytest.importorskip("prometheus_client")
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    metrics = Metrics()
    transport = clientlb.BalancingTransport(
        ["http://a:1/x", "http://b:1"],
        ["http://c:1"],
        inner=answers({"a": 503, "b": 200, "c": httpx.ConnectError("refused")}),
        metrics=metrics,
    )
    with httpx.Client(transport=transport, base_url="http://svc") as client:
        for _ in range(4):
            client.get("/")
    registry = CollectorRegistry()
    registry.register(metrics)
    text = metrics.render()
    assert text.encode() == generate_latest(registry)
    names = {f.name for f in text_string_to_metric_families(text)}
    assert "clientlb_upstream_request_duration_seconds" in names


def test_escaping_and_large_numbers_as_prometheus_client_writes_them() -> None:
    pytest.importorskip("prometheus_client")
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.core import Metric

    families = [
        Family("x_total", "counter", "A count.", [("", (("u", 'a"b\\c\nd'),), 12_345_678)]),
        Family("y", "gauge", "A gauge.", [("", (("a", "1"), ("b", "2")), 0.000123)]),
        Family("z", "gauge", "Empty.", []),
    ]

    class Collector:
        def collect(self) -> Any:
            for f in families:
                name = f.name.removesuffix("_total") if f.kind == "counter" else f.name
                metric = Metric(name, f.doc, f.kind)
                for suffix, labels, value in f.samples:
                    metric.add_sample(f.name + suffix, dict(labels), value)
                yield metric

    registry = CollectorRegistry()
    registry.register(Collector())
    text = render(families)
    assert text.encode() == generate_latest(registry)
    assert "1.2345678e+07" in text and re.search(r'u="a\\"b\\\\c\\nd"', text)


def test_unwatch_forgets_the_pool() -> None:
    metrics = Metrics()
    pool = Pool(["http://a:1"])
    metrics.watch(pool)
    metrics.unwatch(pool)
    pool.report_check("http://a:1", False)
    assert metrics.pools == {} and samples(metrics) == {} and metrics.events() == []


@pytest.mark.anyio
async def test_hedges_are_counted_apart_from_retries() -> None:
    import anyio

    async def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "slow":
            await anyio.sleep(5)
        return httpx.Response(200, text="x")

    metrics = Metrics()
    pool = Pool(
        ["http://slow:1", "http://fast:1"],
        algorithm="round_robin",
        retry=RetryPolicy(hedge_after=0.01),
        rng=random.Random(0),  # the rotation starts at fast
    )
    transport = clientlb.AsyncBalancingTransport(
        pool, inner=httpx.MockTransport(handler), metrics=metrics
    )
    async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
        for _ in range(2):  # the second starts at the slow upstream
            assert (await client.get("/")).status_code == 200
    got = samples(metrics)
    assert got['clientlb_hedges_total{pool="default"}'] == 1
    assert got['clientlb_retries_total{pool="default"}'] == 0
    assert got['clientlb_attempts_total{pool="default"}'] == 3
    lost = 'clientlb_upstream_responses_total{class="cancelled",pool="default",upstream="http://slow:1"}'
    assert got[lost] == 1


def test_requests_refused_at_the_connection_limit_are_counted() -> None:
    metrics = Metrics()
    pool = Pool(["http://a:1"], max_connections=1)
    metrics.watch(pool)
    lease = pool.pick()
    with pytest.raises(Saturated) as full:
        pool.pick()
    with pytest.raises(Saturated):  # max_pending is 0: no room to wait
        pool.wait_for_slot(lambda: None, full.value.version)
    got = samples(metrics)
    assert got['clientlb_pool_rejected_total{pool="default"}'] == 1
    assert got['clientlb_pool_pending{pool="default"}'] == 0
    lease.finish()


class _Counted:
    """Stands in for a proxy or a front end: something with a number to report."""

    def __init__(self, now: int) -> None:
        self.now = now


def _now(owner: _Counted) -> int:
    return owner.now


def test_the_proxies_gauges_add_up_per_pool_while_their_owners_live() -> None:
    metrics = Metrics()
    users, orders = Pool(["http://u:1"]), Pool(["http://o:1"])
    metrics.watch(users, "users")
    metrics.watch(orders, "orders")
    replaced, current, other, front = _Counted(2), _Counted(3), _Counted(1), _Counted(7)
    metrics._gauge("clientlb_proxy_websockets", replaced, _now, users)  # before a reload
    metrics._gauge("clientlb_proxy_websockets", current, _now, users)
    metrics._gauge("clientlb_proxy_websockets", other, _now, orders)
    metrics._gauge("clientlb_proxy_client_connections", front, _now)
    got = samples(metrics)
    assert got['clientlb_proxy_websockets{pool="users"}'] == 5
    assert got['clientlb_proxy_websockets{pool="orders"}'] == 1
    assert got["clientlb_proxy_client_connections"] == 7
    assert metrics.gauges() == {"client_connections": 7, "websockets": 6}

    del replaced  # held weakly: gone with its owner
    current.now = 0
    got = samples(metrics)
    assert got['clientlb_proxy_websockets{pool="users"}'] == 0
    assert len(metrics._gauges) == 3
    metrics.unwatch(orders)  # a pool no longer watched is not reported
    assert 'clientlb_proxy_websockets{pool="orders"}' not in samples(metrics)
    assert metrics.gauges() == {"client_connections": 7, "websockets": 0}

    # A reload with a new pool: the new one takes the old one's name, and the
    # replaced app's WebSockets, still open, are counted under it with the new app's.
    current.now = 4
    metrics.unwatch(users)
    successor, new_app = Pool(["http://u:2"]), _Counted(1)
    assert metrics.watch(successor, "users") == "users"
    metrics._gauge("clientlb_proxy_websockets", new_app, _now, successor)
    assert samples(metrics)['clientlb_proxy_websockets{pool="users"}'] == 5
    assert metrics.gauges() == {"client_connections": 7, "websockets": 5}


def test_no_gauge_family_without_something_to_report_it() -> None:
    metrics = Metrics()
    metrics.watch(Pool(["http://a:1"]))
    assert "clientlb_proxy_" not in metrics.render()
    assert metrics.gauges() == {}
    with pytest.raises(ValueError, match="clientlb_proxy_requests"):
        metrics._gauge("clientlb_proxy_requests", _Counted(1), _now)


def test_the_gauges_are_written_as_prometheus_client_writes_them() -> None:
    pytest.importorskip("prometheus_client")
    from prometheus_client import CollectorRegistry, generate_latest

    metrics = Metrics()
    pool = Pool(["http://a:1"])
    metrics.watch(pool)
    owners = _Counted(2), _Counted(4)
    metrics._gauge("clientlb_proxy_websockets", owners[0], _now, pool)
    metrics._gauge("clientlb_proxy_client_connections", owners[1], _now)
    registry = CollectorRegistry()
    registry.register(metrics)
    text = metrics.render()
    assert text.encode() == generate_latest(registry)
    assert 'clientlb_proxy_websockets{pool="default"} 2.0\n' in text
    assert "# TYPE clientlb_proxy_client_connections gauge\n" in text
