"""Unit tests of the httpx transports: respx (or a scripted transport) stands in
for the inner transport that does the I/O, so no socket is opened.

Every test taking ``flavour`` runs against the sync transport and against the
async one under asyncio and trio.
"""

from __future__ import annotations

import time
from itertools import pairwise

import pytest

from clientlb import Pool, RetryBudget, RetryPolicy

from ..in_order import InOrder
from ._support import (
    Flavour,
    MockRouter,
    Refusing,
    WatchedBody,
    assert_idle,
    clientlb,
    hosts,
    httpx,
)

pytestmark = pytest.mark.anyio

ABC = ["http://a:8000", "http://b:8000", "http://c:8000"]
NO_EJECTION = {"outlier": None}


def echo(request: httpx.Request) -> httpx.Response:
    """Describe the request the upstream received."""
    return httpx.Response(
        200,
        json={
            "url": str(request.url),
            "raw_path": request.url.raw_path.decode(),
            "host": request.headers.get_list("host"),
            "custom": request.headers.get("x-custom"),
            "body": request.content.decode(),
        },
    )


# -- URL rewrite and headers --------------------------------------------------------


@pytest.mark.parametrize(
    ("upstream", "request_url", "sent_url", "raw_path", "host"),
    [
        (
            "http://h:8000/v2",
            "http://users/users/1?x=1&x=2",
            "http://h:8000/v2/users/1?x=1&x=2",
            "/v2/users/1?x=1&x=2",
            "h:8000",
        ),
        (  # scheme, host and port all replaced; the request's own port dropped
            "https://h:8443",
            "http://users:9999/a?b=c",
            "https://h:8443/a?b=c",
            "/a?b=c",
            "h:8443",
        ),
        (  # escapes in the path and query kept as they are
            "http://h:8000/v2",
            "http://users/files/a%2Fb/c%20d?q=%2F%26",
            "http://h:8000/v2/files/a%2Fb/c%20d?q=%2F%26",
            "/v2/files/a%2Fb/c%20d?q=%2F%26",
            "h:8000",
        ),
        (  # a default port is left out of the URL and the Host header
            "https://h/base/",
            "http://users/",
            "https://h/base/",
            "/base/",
            "h",
        ),
        ("http://[::1]:8080", "http://users/x", "http://[::1]:8080/x", "/x", "[::1]:8080"),
    ],
)
async def test_request_is_rewritten_onto_the_upstream(
    flavour: Flavour, upstream: str, request_url: str, sent_url: str, raw_path: str, host: str
) -> None:
    router = MockRouter()
    route = router.route().mock(side_effect=echo)
    transport = flavour.transport([upstream], inner=flavour.mock(router))
    async with flavour.client(transport) as client:
        r = await client.request("POST", request_url, headers={"X-Custom": "kept"}, content=b"hi")
    assert r.status_code == 200
    seen = r.json()
    assert seen["url"] == sent_url
    assert seen["raw_path"] == raw_path
    assert seen["host"] == [host]  # replaced, not added
    assert seen["custom"] == "kept"
    assert seen["body"] == "hi"
    assert route.call_count == 1
    # the response the caller sees still names the request it sent
    assert str(r.request.url) == str(httpx.URL(request_url))
    assert_idle(transport)


async def test_explicit_host_header_is_replaced(flavour: Flavour) -> None:
    router = MockRouter()
    router.route().mock(side_effect=echo)
    transport = flavour.transport(["http://h:8000"], inner=flavour.mock(router))
    async with flavour.client(transport) as client:
        r = await client.request("GET", "/x", headers={"Host": "spoofed.example"})
    assert r.json()["host"] == ["h:8000"]


# -- services, fallback, no upstream --------------------------------------------------


async def test_services_route_by_request_host(flavour: Flavour) -> None:
    router = MockRouter()
    users = router.route(host__in=("u1", "u2")).mock(side_effect=echo)
    orders = router.route(host="o1").mock(side_effect=echo)
    services = {
        "users": Pool(["http://u1:8000", "http://u2:8000"]),
        "orders": Pool(["http://o1:9000"], algorithm="peak_ewma"),
    }
    transport = flavour.transport(services=services, inner=flavour.mock(router))
    assert set(transport.pools) == {"users", "orders"}
    assert transport.pools["orders"].algorithm.name == "peak_ewma"
    async with flavour.client(transport) as client:
        for i in range(4):
            r = await client.request("GET", f"http://users/users/{i}")
            assert httpx.URL(r.json()["url"]).host in {"u1", "u2"}
            r = await client.request("GET", f"http://ORDERS/orders/{i}")
            assert r.json()["url"] == f"http://o1:9000/orders/{i}"
    assert users.call_count == 4
    assert orders.call_count == 4
    assert {u["url"] for u in transport.snapshot()["users"]["upstreams"]} == {
        "http://u1:8000",
        "http://u2:8000",
    }
    with pytest.raises(AttributeError):
        _ = transport.pool  # several services: there is no single pool


async def test_unknown_service_raises(flavour: Flavour) -> None:
    router = MockRouter(assert_all_called=False)
    route = router.route().mock(side_effect=echo)
    transport = flavour.transport(
        services={"users": ["http://u1:8000"]}, inner=flavour.mock(router)
    )
    async with flavour.client(transport) as client:
        with pytest.raises(clientlb.UnknownService) as info:
            await client.request("GET", "http://billing/invoices")
    assert isinstance(info.value, httpx.TransportError)
    assert "billing" in str(info.value)
    assert route.call_count == 0


async def test_fallback_serves_unknown_hosts(flavour: Flavour) -> None:
    router = MockRouter()
    balanced = router.route(host="u1").mock(side_effect=echo)
    outside = MockRouter()
    passed = outside.route().mock(side_effect=echo)
    transport = flavour.transport(
        services={"users": ["http://u1:8000"]},
        inner=flavour.mock(router),
        fallback=flavour.mock(outside),
    )
    async with flavour.client(transport) as client:
        r = await client.request("GET", "https://api.example.com/v1/x?y=1")
        assert r.json()["url"] == "https://api.example.com/v1/x?y=1"  # untouched
        assert r.json()["host"] == ["api.example.com"]
        r = await client.request("GET", "http://users/me")
        assert r.json()["url"] == "http://u1:8000/me"
    assert passed.call_count == 1
    assert balanced.call_count == 1


async def test_no_upstream_available(flavour: Flavour) -> None:
    router = MockRouter(assert_all_called=False)
    route = router.route().mock(side_effect=echo)
    pool = Pool([], allow_empty=True)
    transport = flavour.transport(pool, inner=flavour.mock(router))
    async with flavour.client(transport) as client:
        with pytest.raises(clientlb.NoUpstreamAvailable) as info:
            await client.request("GET", "/x")
        assert isinstance(info.value, httpx.TransportError)
        assert info.value.attempts == ()
        pool.add("http://a:8000")  # discovery found one: requests flow again
        assert (await client.request("GET", "/x")).status_code == 200
    assert route.call_count == 1


# -- configuration errors ---------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({}, id="nothing"),
        pytest.param({"upstreams": ["http://a:1"], "services": {"s": ["http://b:1"]}}, id="both"),
        pytest.param({"upstreams": []}, id="empty-upstreams"),
        pytest.param({"services": {}}, id="empty-services"),
        pytest.param({"services": {"": ["http://a:1"]}}, id="empty-service-name"),
        pytest.param({"services": {"s": []}}, id="empty-service-pool"),
        pytest.param({"services": {"s": "http://a:1"}}, id="service-single-url"),
        pytest.param({"upstreams": "http://a:1"}, id="single-url"),
        pytest.param({"upstreams": ["ftp://a:1"]}, id="bad-scheme"),
        pytest.param({"upstreams": ["not a url"]}, id="not-a-url"),
        pytest.param({"upstreams": ["http://a:1/p?q=1"]}, id="query"),
        pytest.param({"upstreams": ["http://u:p@a:1"]}, id="credentials"),
        pytest.param({"upstreams": ["http://a:99999"]}, id="bad-port"),
        pytest.param({"upstreams": [42]}, id="not-a-string"),
        pytest.param({"upstreams": ["http://a:1", "http://a:1/"]}, id="duplicate"),
        pytest.param({"upstreams": ["http://a:1"], "standbys": ["http://a:1"]}, id="both-tiers"),
        pytest.param({"upstreams": ["http://a:1"], "algorithm": "fastest"}, id="algorithm"),
        pytest.param({"upstreams": ["http://a:1"], "algorithm": 3}, id="algorithm-type"),
        pytest.param({"upstreams": ["http://a:1"], "hash_on": "cookie:x"}, id="hash-on"),
        pytest.param({"upstreams": ["http://a:1"], "hash_on": "header:"}, id="hash-on-empty"),
        pytest.param({"upstreams": ["http://a:1"], "hash_on": 42}, id="hash-on-type"),
        pytest.param({"upstreams": ["http://a:1"], "slow_start": -1}, id="slow-start"),
    ],
)
@pytest.mark.parametrize("cls", [clientlb.BalancingTransport, clientlb.AsyncBalancingTransport])
def test_bad_configuration_raises_config_error(cls: type, kwargs: dict[str, object]) -> None:
    with pytest.raises(clientlb.ConfigError) as info:
        cls(**kwargs)
    assert isinstance(info.value, ValueError)
    assert info.value.field  # names what is wrong


# -- hashing ------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["consistent_hash", "ip_hash"])
async def test_hash_on_header_sticks_a_key_to_one_upstream(
    flavour: Flavour, algorithm: str
) -> None:
    router = MockRouter()
    router.route().mock(side_effect=echo)
    transport = flavour.transport(
        ABC, algorithm=algorithm, hash_on="header:X-User", inner=flavour.mock(router)
    )
    placed: dict[str, set[str]] = {}
    async with flavour.client(transport) as client:
        for _ in range(3):
            for user in range(30):
                r = await client.request("GET", "/me", headers={"X-User": f"user-{user}"})
                placed.setdefault(f"user-{user}", set()).add(httpx.URL(r.json()["url"]).host)
    assert all(len(where) == 1 for where in placed.values()), placed
    used = {host for where in placed.values() for host in where}
    assert len(used) >= 2  # keys spread over the upstreams


async def test_hash_on_callable(flavour: Flavour) -> None:
    router = MockRouter()
    router.route().mock(side_effect=echo)

    def tenant(request: httpx.Request) -> str | None:
        value: str | None = request.url.params.get("tenant")
        return value

    transport = flavour.transport(
        ABC, algorithm="consistent_hash", hash_on=tenant, inner=flavour.mock(router)
    )
    async with flavour.client(transport) as client:
        for tenant_id in range(10):
            where = {
                httpx.URL(
                    (await client.request("GET", f"/x?tenant={tenant_id}")).json()["url"]
                ).host
                for _ in range(4)
            }
            assert len(where) == 1


# -- attempts --------------------------------------------------------------------------------


async def test_response_lists_its_attempts(flavour: Flavour) -> None:
    router = MockRouter()
    router.route().respond(201)
    transport = flavour.transport(["http://a:8000"], inner=flavour.mock(router))
    async with flavour.client(transport) as client:
        r = await client.request("GET", "/x")
    attempts = r.extensions["clientlb.attempts"]
    assert len(attempts) == 1
    (attempt,) = attempts
    assert isinstance(attempt, clientlb.Attempt)
    assert (attempt.upstream, attempt.outcome, attempt.status) == ("http://a:8000", "response", 201)
    assert attempt.elapsed is not None and attempt.elapsed >= 0


# -- retries ---------------------------------------------------------------------------------


async def test_connect_error_retries_a_post_on_another_upstream(flavour: Flavour) -> None:
    router = MockRouter()
    refused = router.route(host="a").mock(side_effect=httpx.ConnectError)
    served = router.route(host="b").mock(side_effect=echo)
    transport = flavour.transport(ABC[:2], inner=flavour.mock(router), **NO_EJECTION)
    started_on_a = 0
    async with flavour.client(transport) as client:
        for i in range(6):
            r = await client.request("POST", "/orders", content=f"order {i}".encode())
            assert r.status_code == 200
            assert r.json()["body"] == f"order {i}"
            outcomes = [(a.upstream, a.outcome) for a in r.extensions["clientlb.attempts"]]
            assert outcomes in (
                [("http://b:8000", "response")],
                [("http://a:8000", "connect_failure"), ("http://b:8000", "response")],
            )
            started_on_a += len(outcomes) == 2
    assert started_on_a >= 3  # round robin: at least every other request starts on a
    assert refused.call_count == started_on_a
    assert served.call_count == 6
    assert_idle(transport)


async def test_read_timeout_retries_get_but_not_post(flavour: Flavour) -> None:
    router = MockRouter()
    slow = router.route(host="a").mock(side_effect=httpx.ReadTimeout)
    router.route(host="b").mock(side_effect=echo)
    transport = flavour.transport(ABC[:2], inner=flavour.mock(router), **NO_EJECTION)
    async with flavour.client(transport) as client:
        retried = 0
        for _ in range(4):
            r = await client.request("GET", "/x")
            assert r.status_code == 200
            outcomes = [(a.upstream, a.outcome) for a in r.extensions["clientlb.attempts"]]
            assert outcomes in (
                [("http://b:8000", "response")],
                [("http://a:8000", "timeout"), ("http://b:8000", "response")],
            )
            retried += len(outcomes) == 2
        assert retried >= 2
        assert slow.call_count == retried
        # a POST that timed out may have been processed: it is not sent again
        raised = 0
        for _ in range(4):
            try:
                r = await client.request("POST", "/x", content=b"once")
            except httpx.ReadTimeout as exc:
                raised += 1
                attempts = exc.attempts  # type: ignore[attr-defined]
                assert [(a.upstream, a.outcome) for a in attempts] == [("http://a:8000", "timeout")]
            else:
                assert len(r.extensions["clientlb.attempts"]) == 1
    assert raised == 2  # no retries: round robin alternates
    assert slow.call_count == retried + raised
    assert_idle(transport)


async def test_timeout_on_every_upstream_raises_with_all_attempts(flavour: Flavour) -> None:
    router = MockRouter()
    route = router.route().mock(side_effect=httpx.ReadTimeout)
    transport = flavour.transport(
        ABC, inner=flavour.mock(router), retry=RetryPolicy(max_retries=2, budget=None)
    )
    async with flavour.client(transport) as client:
        with pytest.raises(httpx.ReadTimeout) as info:
            await client.request("GET", "/x")
    attempts = info.value.attempts  # type: ignore[attr-defined]
    assert [a.outcome for a in attempts] == ["timeout"] * 3
    assert len(set(hosts(attempts))) == 3
    assert route.call_count == 3
    assert_idle(transport)


async def test_retryable_status_retries_get_and_closes_the_response(flavour: Flavour) -> None:
    bodies: list[WatchedBody] = []

    def unavailable(request: httpx.Request) -> httpx.Response:
        body = WatchedBody(b"busy")
        bodies.append(body)
        return httpx.Response(503, stream=body)

    router = MockRouter()
    router.route(host="a").mock(side_effect=unavailable)
    router.route(host="b").mock(side_effect=echo)
    transport = flavour.transport(ABC[:2], inner=flavour.mock(router), **NO_EJECTION)
    async with flavour.client(transport) as client:
        for _ in range(4):
            r = await client.request("GET", "/x")
            assert r.status_code == 200
            assert r.json()["url"] == "http://b:8000/x"
        assert len(bodies) >= 2  # at least every other request started on a
        assert all(body.closed for body in bodies)  # the discarded 503s were closed
        assert sum(len(body.data) for body in bodies) == 4 * len(bodies)
        # POST: the 503 is the answer
        statuses = [
            (await client.request("POST", "/x", content=b"p")).status_code for _ in range(4)
        ]
    assert sorted(statuses) == [200, 200, 503, 503]
    assert_idle(transport)


async def test_retryable_status_everywhere_returns_the_last_response(flavour: Flavour) -> None:
    bodies: list[WatchedBody] = []

    def unavailable(request: httpx.Request) -> httpx.Response:
        body = WatchedBody(request.url.host.encode())
        bodies.append(body)
        return httpx.Response(503, stream=body)

    router = MockRouter()
    router.route().mock(side_effect=unavailable)
    transport = flavour.transport(ABC, inner=flavour.mock(router), **NO_EJECTION)
    async with flavour.client(transport) as client:
        r = await client.send_streaming("GET", "/x")
        try:
            attempts = r.extensions["clientlb.attempts"]
            assert [a.status for a in attempts] == [503, 503, 503]  # max_retries=2
            assert [b.closed for b in bodies] == [True, True, False]
            assert r.status_code == 503
            assert hosts(attempts)[-1].encode() == bodies[-1].data
        finally:
            await client.close_response(r)
    assert bodies[-1].closed
    assert_idle(transport)


async def test_status_not_configured_is_not_retried(flavour: Flavour) -> None:
    router = MockRouter()
    route = router.route().respond(500)
    transport = flavour.transport(ABC, inner=flavour.mock(router), **NO_EJECTION)
    async with flavour.client(transport) as client:
        assert (await client.request("GET", "/x")).status_code == 500
    assert route.call_count == 1


async def test_retry_budget_exhaustion_stops_retries(flavour: Flavour) -> None:
    router = MockRouter()
    route = router.route().mock(side_effect=httpx.ReadTimeout)
    # one retry in the whole window: 0.1 per second over 10 s, nothing per request
    budget = RetryBudget(ratio=0.0, min_per_second=0.1, window=10.0)
    pool = Pool(
        ABC, retry=RetryPolicy(max_retries=5, budget=budget), outlier=None, clock=lambda: 1000.0
    )
    transport = flavour.transport(pool, inner=flavour.mock(router))
    async with flavour.client(transport) as client:
        counts = []
        for _ in range(3):
            with pytest.raises(httpx.ReadTimeout) as info:
                await client.request("GET", "/x")
            counts.append(len(info.value.attempts))  # type: ignore[attr-defined]
    assert counts == [2, 1, 1]
    assert route.call_count == 4
    assert_idle(transport)


async def test_retry_budget_also_limits_connect_failures(flavour: Flavour) -> None:
    inner = Refusing({"a", "b", "c"})
    budget = RetryBudget(ratio=0.0, min_per_second=0.0, window=10.0)  # no retries at all
    pool = Pool(ABC, retry=RetryPolicy(budget=budget), outlier=None)
    transport = flavour.transport(pool, inner=inner)
    async with flavour.client(transport) as client:
        with pytest.raises(httpx.ConnectError) as info:
            await client.request("POST", "/x", content=b"x")
    assert len(info.value.attempts) == 1  # type: ignore[attr-defined]
    assert len(inner.refused) == 1


# -- request bodies -----------------------------------------------------------------------


async def test_streamed_body_not_yet_sent_is_retried(flavour: Flavour) -> None:
    inner = Refusing({"a"})
    transport = flavour.transport(ABC[:2], inner=inner, **NO_EJECTION)
    async with flavour.client(transport) as client:
        for _ in range(2):
            r = await client.request("POST", "/upload", content=flavour.chunks([b"ab", b"cd"]))
            assert r.status_code == 200
            assert r.content == b"abcd"
    assert inner.refused in (["a"], ["a", "a"])  # round robin: one or both started on a
    assert inner.seen == [("b", b"abcd"), ("b", b"abcd")]


@pytest.mark.parametrize("error", [httpx.ReadError, httpx.ReadTimeout, httpx.ConnectError])
async def test_streamed_body_partly_sent_is_not_resent(
    flavour: Flavour, error: type[httpx.TransportError]
) -> None:
    received: list[bytes] = []

    def fail_after_reading(request: httpx.Request) -> httpx.Response:
        received.append(request.content)  # the mock read the whole body already
        raise error("failed after the body was sent", request=request)

    router = MockRouter()
    router.route().mock(side_effect=fail_after_reading)
    transport = flavour.transport(ABC, inner=flavour.mock(router), **NO_EJECTION)
    async with flavour.client(transport) as client:
        with pytest.raises(error) as info:
            await client.request("PUT", "/upload", content=flavour.chunks([b"ab", b"cd"]))
        assert len(info.value.attempts) == 1  # type: ignore[attr-defined]
        assert received == [b"abcd"]
        # the same request with the body in memory is replayable, and is retried
        with pytest.raises(error) as info:
            await client.request("PUT", "/upload", content=b"abcd")
        assert len(info.value.attempts) == 3  # type: ignore[attr-defined]
    assert_idle(transport)


# -- where retries go ---------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", sorted(clientlb.ALGORITHMS))
@pytest.mark.parametrize("upstreams", [ABC, ABC[:2]], ids=["three", "two"])
async def test_retry_never_goes_to_the_same_upstream_twice_in_a_row(
    flavour: Flavour, algorithm: str, upstreams: list[str]
) -> None:
    router = MockRouter()
    router.route().mock(side_effect=httpx.ReadTimeout)
    hashes = clientlb.ALGORITHMS[algorithm].hashes
    transport = flavour.transport(
        upstreams,
        algorithm=algorithm,
        hash_on="header:X-User" if hashes else None,
        inner=flavour.mock(router),
        retry=RetryPolicy(max_retries=6, budget=None),
        outlier=None,
    )
    async with flavour.client(transport) as client:
        for user in ("u1", "u2", None):
            headers = {"X-User": user} if user else {}
            with pytest.raises(httpx.ReadTimeout) as info:
                await client.request("GET", "/x", headers=headers)
            tried = hosts(info.value.attempts)  # type: ignore[attr-defined]
            assert len(tried) == 7
            assert all(x != y for x, y in pairwise(tried)), tried
            # every upstream before any is tried again
            assert len(set(tried[: len(upstreams)])) == len(upstreams), tried
    assert_idle(transport)


async def test_single_upstream_is_not_retried(flavour: Flavour) -> None:
    router = MockRouter()
    route = router.route().mock(side_effect=httpx.ReadTimeout)
    transport = flavour.transport(["http://a:8000"], inner=flavour.mock(router), **NO_EJECTION)
    async with flavour.client(transport) as client:
        with pytest.raises(httpx.ReadTimeout):
            await client.request("GET", "/x")
    assert route.call_count == 1


# -- response streams ---------------------------------------------------------------------


async def test_lease_is_held_until_the_response_body_is_closed(flavour: Flavour) -> None:
    router = MockRouter()
    router.route().mock(side_effect=lambda request: httpx.Response(200, stream=WatchedBody()))
    transport = flavour.transport(["http://a:8000"], inner=flavour.mock(router))
    async with flavour.client(transport) as client:
        r = await client.send_streaming("GET", "/x")
        assert transport.pool.members[0].in_flight == 1
        await client.close_response(r)
        assert transport.pool.members[0].in_flight == 0
        snapshot = transport.snapshot()["upstreams"][0]
        assert (snapshot["requests"], snapshot["failures"]) == (1, 0)


async def test_shared_pool_is_one_state(flavour: Flavour) -> None:
    router = MockRouter()
    router.route().mock(side_effect=lambda request: httpx.Response(200, stream=WatchedBody()))
    pool = Pool(ABC[:2], algorithm="least_connections")
    first = flavour.transport(pool, inner=flavour.mock(router))
    second = flavour.transport(pool, inner=flavour.mock(router))
    async with flavour.client(first) as one, flavour.client(second) as two:
        r1 = await one.send_streaming("GET", "/x")
        r2 = await two.send_streaming("GET", "/x")
        # the second transport saw the first one's request in flight
        assert {
            r1.extensions["clientlb.attempts"][0].upstream,
            r2.extensions["clientlb.attempts"][0].upstream,
        } == set(ABC[:2])
        await one.close_response(r1)
        await two.close_response(r2)
    assert first.pool is second.pool
    assert sum(u["requests"] for u in second.snapshot()["upstreams"]) == 2
    assert_idle(first)


# -- health and backoff through the transport ----------------------------------------------


async def test_failing_upstream_is_ejected_then_avoided(flavour: Flavour) -> None:
    inner = Refusing({"a"})
    outlier = clientlb.OutlierDetection(consecutive_local_failures=2, base_ejection_time=60)
    transport = flavour.transport(ABC[:2], inner=inner, outlier=outlier)
    async with flavour.client(transport) as client:
        for _ in range(12):
            assert (await client.request("POST", "/x", content=b"x")).status_code == 200
        states = {u["url"]: u["state"] for u in transport.snapshot()["upstreams"]}
    assert inner.refused == ["a", "a"]  # ejected after two failures, then left alone
    assert states == {"http://a:8000": "ejected", "http://b:8000": "healthy"}
    assert len(inner.seen) == 12


async def test_streamed_body_sent_is_not_resent_after_a_retryable_status(
    flavour: Flavour,
) -> None:
    router = MockRouter()
    route = router.route().respond(503)
    transport = flavour.transport(ABC, inner=flavour.mock(router), **NO_EJECTION)
    async with flavour.client(transport) as client:
        r = await client.request("PUT", "/upload", content=flavour.chunks([b"ab"]))
    assert r.status_code == 503
    assert route.call_count == 1


async def test_retry_backoff_sleeps_on_every_runtime(flavour: Flavour) -> None:
    """A backoff makes the retry wait that long, before the first retry too:
    under trio as well (not asyncio.sleep)."""
    router = MockRouter()
    router.route(host="a").mock(side_effect=httpx.ReadTimeout)
    router.route(host="b").mock(side_effect=echo)
    transport = flavour.transport(
        ABC[:2],
        algorithm=InOrder,
        inner=flavour.mock(router),
        retry=RetryPolicy(backoff=0.1, budget=None),
        outlier=None,
    )
    async with flavour.client(transport) as client:
        started = time.monotonic()
        r = await client.request("GET", "/x")  # a first: it times out, b after the wait
        elapsed = time.monotonic() - started
    assert r.status_code == 200 and len(r.extensions["clientlb.attempts"]) == 2
    assert elapsed >= 0.1
    assert_idle(transport)
