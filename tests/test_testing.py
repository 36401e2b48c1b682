"""``clientlb.testing``: the fake clock and the scripted upstreams, used as a
user would, through ``clientlb.BalancingTransport(..., inner=scripted)``.

Tests taking ``flavour`` run three times: the sync transport, then the async one
under asyncio and under trio.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

import clientlb
from clientlb.testing import FakeClock, Reply, ScriptedUpstreams, after

from .transports._support import Flavour

pytestmark = pytest.mark.anyio

FLAVOURS = pytest.mark.parametrize(
    ("flavour_name", "anyio_backend"),
    [("sync", "asyncio"), ("async", "asyncio"), ("async", "trio")],
    ids=["sync", "asyncio", "trio"],
)


@pytest.fixture
def flavour(flavour_name: str) -> Flavour:
    return Flavour(flavour_name)


def pool(*urls: str, clock: FakeClock | None = None, **kwargs: Any) -> clientlb.Pool:
    return clientlb.Pool(list(urls), clock=clock if clock is not None else FakeClock(), **kwargs)


# -- the fake clock -------------------------------------------------------------------


def test_fake_clock_moves_only_forwards_when_told() -> None:
    clock = FakeClock()
    assert clock() == clock.now == 0.0
    clock.advance(1.5)
    clock.advance(0)
    assert clock() == 1.5
    assert FakeClock(100.0)() == 100.0
    for bad in (-1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="forwards"):
            clock.advance(bad)
    with pytest.raises(TypeError):
        clock.advance("1")  # type: ignore[arg-type]
    assert clock() == 1.5


def test_a_pool_on_a_fake_clock_readmits_on_its_time() -> None:
    clock = FakeClock()
    scripted = ScriptedUpstreams({"http://a:1": httpx.ConnectError, "http://b:1": 200})
    transport = clientlb.BalancingTransport(
        clientlb.Pool(["http://a:1", "http://b:1"], clock=clock), inner=scripted
    )
    with httpx.Client(transport=transport, base_url="http://svc") as client:
        for _ in range(12):
            assert client.get("/").text == "http://b:1"
        assert state(transport, "http://a:1") == "ejected"
        clock.advance(9.99)
        assert state(transport, "http://a:1") == "ejected"
        clock.advance(0.01)
        assert state(transport, "http://a:1") == "healthy"


def state(transport: Any, url: str) -> str:
    return next(u["state"] for u in transport.snapshot()["upstreams"] if u["url"] == url)


# -- scripted upstreams through the transports -------------------------------------------


@FLAVOURS
async def test_failover_and_ejection_without_sockets(flavour: Flavour) -> None:
    scripted = ScriptedUpstreams({"http://a:1": httpx.ConnectError, "http://b:1": 200})
    transport = flavour.transport(["http://a:1", "http://b:1"], inner=scripted)
    async with flavour.client(transport) as client:
        for _ in range(20):
            response = await client.request("GET", "/users/1")
            assert (response.status_code, response.text) == (200, "http://b:1")
    assert scripted.calls.count("http://a:1") == 5  # five refusals, then ejected
    assert scripted.calls.count("http://b:1") == 20
    assert all(r.url.path == "/users/1" for r in scripted.requests)
    assert state(transport, "http://a:1") == "ejected"


@FLAVOURS
async def test_steps_in_order_and_the_last_repeats(flavour: Flavour) -> None:
    scripted = ScriptedUpstreams({"http://a:1": [503, Reply(201, body="made"), 404]})
    no_retries = clientlb.RetryPolicy(retry_on_status=frozenset())
    transport = flavour.transport(["http://a:1"], inner=scripted, retry=no_retries)
    async with flavour.client(transport) as client:
        answers = [await client.request("GET", "/") for _ in range(5)]
    assert [(r.status_code, r.text) for r in answers] == [
        (503, "http://a:1"),
        (201, "made"),
        (404, "http://a:1"),
        (404, "http://a:1"),
        (404, "http://a:1"),
    ]


@FLAVOURS
async def test_a_503_is_retried_on_the_other_upstream(flavour: Flavour) -> None:
    scripted = ScriptedUpstreams({"http://a:1": 503, "http://b:1": itertools.cycle([200, 202])})
    transport = flavour.transport(["http://a:1", "http://b:1"], inner=scripted)
    async with flavour.client(transport) as client:
        statuses = [(await client.request("GET", "/")).status_code for _ in range(4)]
    assert statuses == [200, 202, 200, 202]
    assert scripted.calls.count("http://b:1") == 4


@FLAVOURS
async def test_an_exception_is_raised_with_its_request(flavour: Flavour) -> None:
    scripted = ScriptedUpstreams(
        {"http://a:1": httpx.RemoteProtocolError("gone"), "http://b:1": httpx.ReadTimeout}
    )
    transport = flavour.transport(["http://a:1", "http://b:1"], inner=scripted)
    async with flavour.client(transport) as client:
        with pytest.raises(httpx.TransportError) as info:
            await client.request("GET", "/")
    assert isinstance(info.value, httpx.RemoteProtocolError | httpx.ReadTimeout)
    assert str(info.value) in ("gone", "scripted ReadTimeout from http://b:1")
    assert set(scripted.calls) == {"http://a:1", "http://b:1"}  # both tried


@FLAVOURS
async def test_delays_move_the_fake_clock_and_become_latencies(flavour: Flavour) -> None:
    clock = FakeClock()
    scripted = ScriptedUpstreams({"http://a:1": after(0.25, 200)}, clock=clock)
    transport = flavour.transport(pool("http://a:1", clock=clock), inner=scripted)
    async with flavour.client(transport) as client:
        for _ in range(20):
            await client.request("GET", "/")
    assert clock() == pytest.approx(5.0)
    assert transport.pool.latency_quantile(0.5) == pytest.approx(0.25)
    assert transport.snapshot()["upstreams"][0]["ewma_latency"] == pytest.approx(0.25)


@FLAVOURS
async def test_a_delay_past_the_timeout_is_a_timeout_at_the_timeout(flavour: Flavour) -> None:
    clock = FakeClock()
    scripted = ScriptedUpstreams({"http://a:1": after(10.0, 200)}, clock=clock)
    transport = flavour.transport(
        pool("http://a:1", clock=clock, retry=clientlb.RetryPolicy(max_retries=0)), inner=scripted
    )
    async with flavour.client(transport, timeout=0.5) as client:
        with pytest.raises(httpx.TimeoutException):
            await client.request("GET", "/")
    assert clock() == pytest.approx(0.5)


@FLAVOURS
async def test_real_delays_when_no_clock_is_given(flavour: Flavour) -> None:
    scripted = ScriptedUpstreams({"http://a:1": after(0.01, after(0.01, 204))})
    transport = flavour.transport(["http://a:1"], inner=scripted)
    async with flavour.client(transport) as client:
        response = await client.request("GET", "/")
    assert response.status_code == 204
    latency = transport.snapshot()["upstreams"][0]["ewma_latency"]
    assert latency >= 0.02


@FLAVOURS
async def test_a_refusal_leaves_the_body_unread_so_a_stream_can_go_elsewhere(
    flavour: Flavour,
) -> None:
    def echo(request: httpx.Request) -> Reply:
        return Reply(200, body=request.content)

    scripted = ScriptedUpstreams({"http://a:1": httpx.ConnectError, "http://b:1": echo})
    transport = flavour.transport(pool("http://a:1", "http://b:1"), inner=scripted)
    async with flavour.client(transport) as client:
        for _ in range(2):  # one of them goes to a first
            body = flavour.chunks([b"not ", b"replayable"])
            response = await client.request("POST", "/", content=body)
            assert response.text == "not replayable"
    assert "http://a:1" in scripted.calls


@FLAVOURS
async def test_callables_and_path_prefixes(flavour: Flavour) -> None:
    def by_path(request: httpx.Request) -> object:
        if request.url.path == "/v2/slow":
            return after(0.5, 200)
        return httpx.Response(200, json={"path": request.url.path})

    clock = FakeClock()
    scripted = ScriptedUpstreams(
        {"http://a:1/v2": by_path, "http://a:1/v2/health": 503, "http://b:1": 500}, clock=clock
    )
    no_retries = clientlb.RetryPolicy(retry_on_status=frozenset())
    transport = flavour.transport(
        pool("http://a:1/v2", clock=clock, retry=no_retries), inner=scripted
    )
    async with flavour.client(transport) as client:
        assert (await client.request("GET", "/users")).json() == {"path": "/v2/users"}
        assert (await client.request("GET", "/health")).status_code == 503
        assert (await client.request("GET", "/healthz")).json() == {"path": "/v2/healthz"}
        assert (await client.request("GET", "/slow")).status_code == 200
    assert clock() == 0.5
    assert scripted.calls == [
        "http://a:1/v2",
        "http://a:1/v2/health",
        "http://a:1/v2",
        "http://a:1/v2",
    ]


@FLAVOURS
async def test_an_upstream_without_a_script_refuses(flavour: Flavour) -> None:
    scripted = ScriptedUpstreams({"http://a:1": 200})
    transport = flavour.transport(
        ["http://a:1", "http://other:1"], inner=scripted, algorithm="round_robin"
    )
    async with flavour.client(transport) as client:
        for _ in range(6):
            assert (await client.request("GET", "/")).text == "http://a:1"
    assert "http://other:1/" in scripted.calls


# -- scripts are checked --------------------------------------------------------------


@pytest.mark.parametrize(
    ("scripts", "error"),
    [
        ({"http://a:1": []}, ValueError),
        ({"http://a:1": [200, "200 after 1s"]}, TypeError),
        ({"http://a:1": 700}, TypeError),
        ({"http://a:1": True}, TypeError),
        ({"http://a:1": {"status": 200}}, TypeError),
        ({"ftp://a:1": 200}, clientlb.ConfigError),
        ([("http://a:1", 200)], TypeError),
    ],
)
def test_a_bad_script_is_refused_at_once(scripts: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        ScriptedUpstreams(scripts)


def test_bad_steps_and_delays_are_refused() -> None:
    with pytest.raises(ValueError):
        after(-1, 200)
    with pytest.raises(TypeError):
        after(1, "200")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Reply(99)
    with pytest.raises(TypeError):
        ScriptedUpstreams({"http://a:1": 200}, clock=lambda: 0.0)  # type: ignore[arg-type]


def test_a_bad_step_from_an_iterator_fails_the_request() -> None:
    def steps() -> Iterator[object]:
        yield 200
        yield "later"

    scripted = ScriptedUpstreams({"http://a:1": steps()})
    transport = clientlb.BalancingTransport(["http://a:1"], inner=scripted)
    with httpx.Client(transport=transport, base_url="http://svc") as client:
        assert client.get("/").status_code == 200
        with pytest.raises(TypeError, match="step"):
            client.get("/")


def test_the_module_is_public() -> None:
    assert clientlb.testing.FakeClock is FakeClock
    assert clientlb.testing.__all__ == ["FakeClock", "Reply", "ScriptedUpstreams", "after"]
    assert clientlb.testing.__doc__ and "inner=" in clientlb.testing.__doc__


def test_the_module_example_runs() -> None:
    doc = clientlb.testing.__doc__ or ""
    lines = doc[doc.index("    import httpx") : doc.index("A step is one of")].splitlines()
    exec(compile("\n".join(line[4:] for line in lines), "clientlb.testing", "exec"), {})
