"""Why this upstream: the decision record a response carries, and the event log
a pool's changes leave. Scripted upstreams on a fake clock: no sockets."""

from __future__ import annotations

import logging

import pytest

from clientlb.testing import FakeClock, ScriptedUpstreams

from ._support import clientlb, httpx

pytestmark = pytest.mark.skipif(
    httpx.__name__ != "httpx", reason="clientlb.testing.ScriptedUpstreams is an httpx transport"
)

A, B, S = "http://a:1", "http://b:1", "http://s:1"


def client(transport: clientlb.BalancingTransport) -> httpx.Client:
    return httpx.Client(transport=transport, base_url="http://svc")


def test_every_response_says_why() -> None:
    upstreams = ScriptedUpstreams({A: 200, B: 200})
    transport = clientlb.BalancingTransport([A, B], inner=upstreams)
    with client(transport) as c:
        response = c.get("/x")
    decision = response.extensions["clientlb.decision"]
    assert isinstance(decision, clientlb.Decision)
    assert decision.upstream == response.text
    assert (decision.reason, decision.tier, decision.algorithm) == (
        "balanced",
        "primary",
        "round_robin",
    )
    assert decision.attempts == 1 and decision.key is None
    assert decision.candidates == ()  # only when asked


def test_explained_candidates_with_scores() -> None:
    upstreams = ScriptedUpstreams({A: 200, B: 200, S: 200})
    pool = clientlb.Pool(
        [clientlb.Upstream(A, weight=2), B], standbys=[S], algorithm="least_connections"
    )
    with client(clientlb.BalancingTransport(pool, inner=upstreams)) as c:
        response = c.get("/x", extensions={"clientlb.explain": True})
    decision = response.extensions["clientlb.decision"]
    assert [c.upstream for c in decision.candidates] == [A, B]  # the tier's, best first
    assert [c.score for c in decision.candidates] == [0.5, 1.0]  # (in flight + 1) / weight
    assert all(c.state == "healthy" and c.in_flight == 0 for c in decision.candidates)
    assert decision.upstream == A
    assert "candidates=http://a:1 0.5,http://b:1 1" in decision.header()


def test_failover_and_retries_say_so() -> None:
    upstreams = ScriptedUpstreams({A: httpx.ConnectError, S: 200})
    clock = FakeClock()
    pool = clientlb.Pool([A], standbys=[S], clock=clock)
    with client(clientlb.BalancingTransport(pool, inner=upstreams)) as c:
        first = c.get("/x")
        for _ in range(5):
            last = c.get("/x")
    attempts = first.extensions["clientlb.attempts"]
    assert [(a.upstream, a.reason) for a in attempts] == [(A, "balanced"), (S, "failover")]
    assert first.extensions["clientlb.decision"].attempts == 2
    decision = last.extensions["clientlb.decision"]
    assert (decision.upstream, decision.reason, decision.tier) == (S, "failover", "standby")


def test_a_hashing_pick_carries_its_key() -> None:
    upstreams = ScriptedUpstreams({A: 200, B: 200})
    transport = clientlb.BalancingTransport(
        [A, B], algorithm="consistent_hash", hash_on="header:x-user", inner=upstreams
    )
    with client(transport) as c:
        response = c.get("/x", headers={"x-user": "42"})
    assert response.extensions["clientlb.decision"].key == "42"


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_the_async_twin_too(anyio_backend: str) -> None:
    upstreams = ScriptedUpstreams({A: 200})
    transport = clientlb.AsyncBalancingTransport([A], inner=upstreams)
    async with httpx.AsyncClient(transport=transport, base_url="http://svc") as c:
        response = await c.get("/x", extensions={"clientlb.explain": True})
    decision = response.extensions["clientlb.decision"]
    assert decision.upstream == A and decision.candidates[0].upstream == A


async def test_an_async_call_annotates_its_recording_span(anyio_backend: str) -> None:
    """The current context is read where the call runs (a task of its own under
    trio or asyncio): its span gets the decision; a call outside it, none."""
    sdk = pytest.importorskip("opentelemetry.sdk.trace")
    export = pytest.importorskip("opentelemetry.sdk.trace.export")
    memory = pytest.importorskip("opentelemetry.sdk.trace.export.in_memory_span_exporter")
    exporter = memory.InMemorySpanExporter()
    provider = sdk.TracerProvider()
    provider.add_span_processor(export.SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("tests")
    transport = clientlb.AsyncBalancingTransport([A], inner=ScriptedUpstreams({A: 200}))
    async with httpx.AsyncClient(transport=transport, base_url="http://svc") as c:
        with tracer.start_as_current_span("call"):
            await c.get("/x")
        await c.get("/y")
    (span,) = exporter.get_finished_spans()
    attributes = dict(span.attributes or {})
    assert (attributes["clientlb.upstream"], attributes["clientlb.attempts"]) == (A, 1)


# -- events ---------------------------------------------------------------------------


def events(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str, str]]:
    return [
        (r.levelno, r.__dict__["clientlb_event"], r.getMessage())
        for r in caplog.records
        if r.name == "clientlb.events"
    ]


def test_state_changes_and_failover_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="clientlb")
    clock = FakeClock()
    upstreams = ScriptedUpstreams({A: httpx.ConnectError, S: 200})
    pool = clientlb.Pool([A], standbys=[S], clock=clock)
    transport = clientlb.BalancingTransport(pool, inner=upstreams)
    clientlb.BalancingTransport(pool, inner=upstreams).close()  # a second owner: logged once
    with client(transport) as c:
        for _ in range(6):
            c.get("/x")
        clock.advance(10.0)  # the ejection ends (the scripted upstream never listens)
        c.get("/x")
    seen = events(caplog)
    assert seen[0] == (
        logging.WARNING,
        "ejected",
        f"{A} (primary): ejected for 10 s: its connections are refused; probing it",
    )
    assert seen[1] == (
        logging.WARNING,
        "standby",
        "failover: no primary can serve, the standbys take the traffic",
    )
    assert (logging.INFO, "healthy", f"{A} (primary): re-admitted") in seen
    assert (logging.INFO, "primary", "fail-back: the primaries serve again") in seen
    assert len([e for e in seen if e[1] == "ejected"]) == 1


def test_panic_and_removal_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="clientlb")
    upstreams = ScriptedUpstreams({A: httpx.ConnectError, B: 200})
    pool = clientlb.Pool([A], clock=FakeClock())
    with client(clientlb.BalancingTransport(pool, inner=upstreams)) as c:
        for _ in range(6):
            with pytest.raises(httpx.TransportError):
                c.get("/x")
        pool.add(B)
        pool.remove(A)
        c.get("/x")
    names = [e[1] for e in events(caplog)]
    assert names[:2] == ["ejected", "panic"]
    assert "removed" in names and names[-1] == "primary"
