"""httpx and httpx2 in one process: each client through its own transport, one
pool behind both, each library's errors its own. (The rest of the transport
tests run on httpx2 with ``pytest --library httpx2``.)"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import httpx
import pytest

import clientlb
from clientlb import HealthCheck, Pool

from ..replicas import Replica
from ..waiting import wait_for

httpx2 = pytest.importorskip("httpx2")
lb2 = pytest.importorskip("clientlb.httpx2")


def test_each_library_raises_its_own_errors() -> None:
    assert issubclass(lb2.NoUpstreamAvailable, httpx2.TransportError)
    assert not issubclass(lb2.NoUpstreamAvailable, httpx.TransportError)
    assert issubclass(clientlb.NoUpstreamAvailable, httpx.TransportError)
    assert not issubclass(clientlb.NoUpstreamAvailable, httpx2.TransportError)
    assert issubclass(lb2.UnknownService, httpx2.TransportError)
    assert not issubclass(lb2.UnknownService, httpx.TransportError)
    assert lb2.Pool is clientlb.Pool and lb2.RetryPolicy is clientlb.RetryPolicy


def test_a_failed_call_is_the_httpx2_class_of_its_last_error() -> None:
    def refuse(request: Any) -> Any:
        raise httpx2.ConnectError("refused", request=request)

    transport = lb2.BalancingTransport(["http://a:1"], inner=httpx2.MockTransport(refuse))
    with httpx2.Client(transport=transport) as client, pytest.raises(httpx2.ConnectError) as info:
        client.get("http://svc/")
    assert isinstance(info.value, lb2.NoUpstreamAvailable)
    assert not isinstance(info.value, httpx.TransportError)
    assert [a.outcome for a in info.value.attempts] == ["connect_failure"]


def test_both_libraries_share_one_pool(replicas: list[Replica]) -> None:
    pool = Pool([r.url for r in replicas], algorithm="round_robin")
    one = httpx.Client(transport=clientlb.BalancingTransport(pool), base_url="http://svc")
    two = httpx2.Client(transport=lb2.BalancingTransport(pool), base_url="http://svc")
    with one, two:
        answers = []
        for _ in range(6):
            first, second = one.get("/who"), two.get("/who")
            assert isinstance(first, httpx.Response) and isinstance(second, httpx2.Response)
            answers += [first.json()["replica"], second.json()["replica"]]
    assert sorted(set(answers)) == sorted(r.name for r in replicas)
    assert all(m.in_flight == 0 for m in pool.members)
    assert sum(s["requests"] for s in pool.snapshot()["upstreams"]) == 12


@pytest.mark.anyio
async def test_the_async_transport_answers_with_httpx2_responses() -> None:
    async def answer(request: Any) -> Any:
        return httpx2.Response(200, text=request.url.host)

    transport = lb2.AsyncBalancingTransport(["http://a:1"], inner=httpx2.MockTransport(answer))
    async with httpx2.AsyncClient(transport=transport) as client:
        response = await client.get("http://svc/")
    assert isinstance(response, httpx2.Response) and response.text == "a"
    assert response.extensions["clientlb.decision"].upstream == "http://a:1"


def test_health_checks_go_through_the_httpx2_inner() -> None:
    seen: list[str] = []

    def answer(request: Any) -> Any:
        assert isinstance(request, httpx2.Request)
        seen.append(request.url.path)
        sick = request.url.host == "b" and request.url.path == "/health"
        return httpx2.Response(503 if sick else 200)

    check = HealthCheck(interval=0.02, timeout=1.0, fall=1)
    transport = lb2.BalancingTransport(
        ["http://a:1", "http://b:1"], inner=httpx2.MockTransport(answer), health_check=check
    )
    try:
        wait_for(lambda: transport.pool.snapshot()["upstreams"][1]["state"] != "healthy")
        assert "/health" in seen
    finally:
        transport.close()


def test_httpx2_mock_stands_in_for_the_default_inner_transports(httpx2_mock: Any) -> None:
    httpx2_mock.add_response(url="http://a:1/x", text="mocked a")
    httpx2_mock.add_response(url="http://b:1/x", text="mocked b")
    transport = lb2.BalancingTransport(["http://a:1", "http://b:1"], algorithm="round_robin")
    with httpx2.Client(transport=transport, base_url="http://svc") as client:
        assert {client.get("/x").text, client.get("/x").text} == {"mocked a", "mocked b"}


def run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)


def test_clientlb_does_not_import_httpx2() -> None:
    done = run("import sys, clientlb; assert 'httpx2' not in sys.modules")
    assert done.returncode == 0, done.stderr


def test_without_httpx2_the_import_error_says_what_to_install() -> None:
    done = run("import sys; sys.modules['httpx2'] = None; import clientlb.httpx2")
    assert done.returncode != 0
    assert "clientlb.httpx2 needs httpx2: pip install 'clientlb[httpx2]'" in done.stderr
