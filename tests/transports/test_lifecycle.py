"""One request's life through the transports: the call's deadline and each
attempt's, the one error a failed call ends in, cancellation at every point the
driver waits, and hedges. A scripted inner transport stands in for the
upstreams, so the timings are the driver's own."""

from __future__ import annotations

import time
from typing import Any

import anyio
import pytest

from clientlb import OutlierDetection, RetryBudget, RetryPolicy

from ..in_order import InOrder
from ._support import Flavour, WatchedBody, assert_idle, clientlb, hosts, httpx

pytestmark = pytest.mark.anyio

AB = ["http://a:8000", "http://b:8000"]
QUIET = {"outlier": None}


class Script(httpx.BaseTransport, httpx.AsyncBaseTransport):
    """Answers each upstream host as its script says, in turn (the last step
    repeats): a status; ``"hang"``, no answer until the request's read timeout
    (or a cancellation); ``"refuse"``, a connect error; ``"slow:S"``, 200 after S
    seconds. Every response body is watched, to see that it was closed."""

    def __init__(self, **scripts: list[Any]) -> None:
        self.scripts = scripts
        self.calls: dict[str, int] = {}
        self.bodies: list[WatchedBody] = []

    def _step(self, request: httpx.Request) -> Any:
        host = request.url.host
        n = self.calls.get(host, 0)
        self.calls[host] = n + 1
        script = self.scripts[host]
        return script[min(n, len(script) - 1)]

    def _read_timeout(self, request: httpx.Request) -> float:
        timeout = (request.extensions.get("timeout") or {}).get("read")
        return 30.0 if timeout is None else float(timeout)

    def _respond(self, request: httpx.Request, status: int) -> httpx.Response:
        body = WatchedBody(request.url.host.encode())
        self.bodies.append(body)
        return httpx.Response(status, stream=body)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        step = self._step(request)
        if step == "refuse":
            raise httpx.ConnectError("refused", request=request)
        if step == "hang":
            time.sleep(self._read_timeout(request))
            raise httpx.ReadTimeout("no answer", request=request)
        if isinstance(step, str) and step.startswith("slow:"):
            time.sleep(float(step[5:]))
            step = 200
        return self._respond(request, step)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        step = self._step(request)
        if step == "refuse":
            raise httpx.ConnectError("refused", request=request)
        if step == "hang":
            with anyio.move_on_after(self._read_timeout(request)):
                await anyio.sleep_forever()
            raise httpx.ReadTimeout("no answer", request=request)
        if isinstance(step, str) and step.startswith("slow:"):
            await anyio.sleep(float(step[5:]))
            step = 200
        return self._respond(request, step)

    def all_closed(self) -> bool:
        return all(body.closed for body in self.bodies)


# -- deadlines -----------------------------------------------------------------------


async def test_the_call_timeout_bounds_the_whole_call(flavour: Flavour) -> None:
    """Two upstreams that never answer and ``timeout=0.5``: the call ends by
    0.6 s with a timeout that carries its attempts."""
    script = Script(a=["hang"], b=["hang"])
    policy = RetryPolicy(timeout=0.5, budget=None)
    transport = flavour.transport(AB, inner=script, retry=policy, **QUIET)
    async with flavour.client(transport) as client:
        started = time.monotonic()
        with pytest.raises(httpx.TimeoutException) as info:
            await client.request("GET", "/slow")
        elapsed = time.monotonic() - started
    assert elapsed < 0.6
    assert isinstance(info.value, clientlb.NoUpstreamAvailable)
    attempts = info.value.attempts
    assert attempts and attempts[0].outcome == "timeout"
    assert_idle(transport)


async def test_a_per_try_timeout_moves_on_to_the_next_upstream(flavour: Flavour) -> None:
    script = Script(a=["hang"], b=[200])
    policy = RetryPolicy(per_try_timeout=0.1, budget=None)
    transport = flavour.transport(AB, algorithm=InOrder, inner=script, retry=policy, **QUIET)
    async with flavour.client(transport) as client:
        started = time.monotonic()
        r = await client.request("GET", "/x")
        elapsed = time.monotonic() - started
    assert r.status_code == 200 and elapsed < 0.5
    attempts = r.extensions["clientlb.attempts"]
    assert [(a.outcome, a.status) for a in attempts] == [("timeout", None), ("response", 200)]
    assert hosts(attempts) == ["a", "b"]
    assert_idle(transport)


async def test_a_request_carries_its_own_policy(flavour: Flavour) -> None:
    script = Script(a=["hang"], b=["hang"])
    transport = flavour.transport(AB, inner=script, **QUIET)  # the pool's: no deadline
    own = {"clientlb.retry": RetryPolicy(timeout=0.3, budget=None)}
    async with flavour.client(transport) as client:
        started = time.monotonic()
        with pytest.raises(httpx.TimeoutException):
            await client.request("GET", "/x", extensions=own)
        assert time.monotonic() - started < 0.45
        with pytest.raises(clientlb.ConfigError, match=r"clientlb\.retry"):
            await client.request("GET", "/x", extensions={"clientlb.retry": 0.3})
    assert_idle(transport)


# -- the error a failed call ends in -----------------------------------------------


async def test_a_call_whose_every_attempt_failed_is_both_errors(flavour: Flavour) -> None:
    """``except httpx.ConnectError`` and ``except clientlb.NoUpstreamAvailable`` both
    catch it, and it lists every attempt."""
    transport = flavour.transport(AB, inner=Script(a=["refuse"], b=["refuse"]), **QUIET)
    async with flavour.client(transport) as client:
        with pytest.raises(httpx.ConnectError) as info:
            await client.request("POST", "/x", content=b"once")
    assert isinstance(info.value, clientlb.NoUpstreamAvailable)
    assert sorted(hosts(info.value.attempts)) == ["a", "b"]
    assert {a.outcome for a in info.value.attempts} == {"connect_failure"}


class TimesOutFirst(Script):
    """The first request raises a bare ``TimeoutError`` (as an ``anyio.fail_after``
    of the inner transport's own would); the rest answer 200."""

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if self._step(request) == "timeout":
            raise TimeoutError
        return self._respond(request, 200)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return self.handle_request(request)


async def test_an_inner_timeout_error(flavour: Flavour) -> None:
    """The async driver takes a bare ``TimeoutError`` for the attempt's timeout
    (and goes elsewhere); the sync one lets it through, as any error that is
    not the client library's. Either way the lease is settled."""
    script = TimesOutFirst(a=["timeout", 200], b=[200])
    transport = flavour.transport(AB, algorithm=InOrder, inner=script, **QUIET)
    async with flavour.client(transport) as client:
        if flavour.is_async:
            r = await client.request("GET", "/x")
            attempts = r.extensions["clientlb.attempts"]
            assert [(a.outcome, a.status) for a in attempts] == [
                ("timeout", None),
                ("response", 200),
            ]
            await r.aclose()
        else:
            with pytest.raises(TimeoutError):
                await client.request("GET", "/x")
    assert_idle(transport)


async def test_nothing_to_try_is_plain_no_upstream_available(flavour: Flavour) -> None:
    transport = flavour.transport(AB, inner=Script(a=[200], b=[200]), **QUIET)
    for url in AB:
        transport.pool.drain(url)
    async with flavour.client(transport) as client:
        with pytest.raises(clientlb.NoUpstreamAvailable) as info:
            await client.request("GET", "/x")
    assert not isinstance(info.value, httpx.ConnectError)
    assert info.value.attempts == ()


# -- cancellation at every point the driver waits ----------------------------------


@pytest.mark.parametrize(
    ("where", "a", "b", "policy"),
    [
        ("in the first attempt", ["hang"], ["hang"], RetryPolicy(budget=None)),
        ("in the backoff", [503], [200], RetryPolicy(backoff=5.0, budget=None)),
        ("in a retry", [503], ["hang"], RetryPolicy(budget=None)),
        ("in a hedge race", ["hang"], ["hang"], RetryPolicy(hedge_after=0.02, budget=None)),
    ],
)
async def test_cancelling_anywhere_releases_every_lease_and_response(
    anyio_backend: str, where: str, a: list[Any], b: list[Any], policy: RetryPolicy
) -> None:
    script = Script(a=a, b=b)
    transport = clientlb.AsyncBalancingTransport(
        AB, algorithm=InOrder, inner=script, retry=policy, **QUIET
    )
    async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
        with anyio.move_on_after(0.15) as scope:
            await client.get("/x")
        assert scope.cancelled_caught, where
    assert script.all_closed(), where
    assert_idle(transport)
    if where == "in a hedge race":
        assert script.calls == {"a": 1, "b": 1}  # the hedge did go out


# -- hedges ------------------------------------------------------------------------


async def test_a_slow_answer_is_hedged_and_the_first_answer_wins(anyio_backend: str) -> None:
    script = Script(a=["slow:1.0"], b=[200])
    policy = RetryPolicy(hedge_after=0.05, budget=None)
    transport = clientlb.AsyncBalancingTransport(
        AB, algorithm=InOrder, inner=script, retry=policy, **QUIET
    )
    async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
        started = time.monotonic()
        r = await client.get("/x")
        elapsed = time.monotonic() - started
        assert r.content == b"b" and elapsed < 0.5
        outcomes = sorted(
            (a.outcome, httpx.URL(a.upstream).host) for a in r.extensions["clientlb.attempts"]
        )
        assert outcomes == [("cancelled", "a"), ("response", "b")]
        # A POST is not hedged: it waits for its one answer.
        started = time.monotonic()
        assert (await client.post("/x", content=b"once")).status_code == 200
        assert time.monotonic() - started >= 0.9
    assert script.calls == {"a": 2, "b": 1}
    assert_idle(transport)


async def test_hedges_draw_on_the_retry_budget(anyio_backend: str) -> None:
    script = Script(a=["slow:0.3"], b=[200])
    empty = RetryBudget(ratio=0.0, min_per_second=0.0)
    policy = RetryPolicy(hedge_after=0.02, budget=empty)
    transport = clientlb.AsyncBalancingTransport(
        AB, algorithm=InOrder, inner=script, retry=policy, outlier=OutlierDetection()
    )
    async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
        r = await client.get("/x")
    assert r.content == b"a"  # no budget: no hedge, the slow answer stands
    assert script.calls == {"a": 1}
