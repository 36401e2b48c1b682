"""HTTP correctness of the ASGI proxy: raw bytes in, what a recording upstream
receives and what the client gets back."""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from clientlb import Pool
from clientlb._proxy import ProxyApp

from ..replicas import Replica, closed_port
from ..waiting import wait_for
from .conftest import in_flight
from .servers import Dying, HugeHead, Served, Special, raw_request, split_response

pytestmark = pytest.mark.integration

Start = Callable[..., tuple[ProxyApp, Served]]


def last(replica: Replica) -> dict[str, Any]:
    return replica.requests[-1]


def header(record: dict[str, Any], name: str) -> list[str]:
    return [v for k, v in record["headers"] if k == name]


def test_hop_by_hop_and_connection_named_headers_are_not_forwarded(proxy: Start) -> None:
    with Replica("a") as up:
        _, served = proxy([up.url])
        raw_request(
            served.port,
            (
                b"GET /x HTTP/1.1\r\nHost: front.example\r\n"
                b"Connection: close, X-Private\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\n"
                b"Trailer: X-T\r\nUpgrade: h2c\r\nProxy-Authorization: Basic eDp5\r\n"
                b"Proxy-Connection: keep-alive\r\nX-Private: secret\r\nX-Public: 1\r\n\r\n"
            ),
        )
        got = {k for k, _ in last(up)["headers"]}
    for name in (
        "keep-alive",
        "te",
        "trailer",
        "upgrade",
        "proxy-authorization",
        "proxy-connection",
        "x-private",
    ):
        assert name not in got
    assert header(last(up), "x-public") == ["1"]


def test_forwarded_headers_and_host(proxy: Start) -> None:
    with Replica("a") as up:
        _, served = proxy([up.url])
        raw_request(
            served.port,
            b"GET / HTTP/1.1\r\nHost: front.example\r\n"
            b"X-Forwarded-For: 6.6.6.6\r\nConnection: close\r\n\r\n",
        )
        record = last(up)
    assert header(record, "x-forwarded-for") == ["127.0.0.1"]  # the forged hop is gone
    assert header(record, "x-forwarded-proto") == ["http"]
    assert header(record, "x-forwarded-host") == ["front.example"]
    assert header(record, "host") == [f"127.0.0.1:{up.port}"]


def test_trusted_proxy_forwarded_for_is_appended(proxy: Start) -> None:
    with Replica("a") as up:
        _, served = proxy([up.url], trusted_proxies=["127.0.0.0/8"], preserve_host=True)
        raw_request(
            served.port,
            b"GET / HTTP/1.1\r\nHost: front.example\r\n"
            b"X-Forwarded-For: 198.51.100.4\r\nConnection: close\r\n\r\n",
        )
        record = last(up)
    assert header(record, "x-forwarded-for") == ["198.51.100.4, 127.0.0.1"]
    assert header(record, "host") == ["front.example"]


def test_absolute_form_target_goes_only_to_the_configured_upstream(proxy: Start) -> None:
    with Replica("a") as up:
        _, served = proxy([up.url + "/base"])
        raw = raw_request(
            served.port,
            b"GET http://169.254.169.254/latest/meta-data?x=1 HTTP/1.1\r\n"
            b"Host: 169.254.169.254\r\nConnection: close\r\n\r\n",
        )
        assert split_response(raw)[0] == 200
        record = last(up)
    assert record["raw_path"] == "/base/latest/meta-data"
    assert record["query"] == "x=1"


def test_path_and_query_are_forwarded_byte_for_byte(proxy: Start) -> None:
    with Replica("a") as up:
        _, served = proxy([up.url + "/v%20two"])
        raw_request(
            served.port,
            b"GET /a%2Fb/%2e%2e/c/../d//e?k=1&k=2&e=%26&s=a+b HTTP/1.1\r\n"
            b"Host: x\r\nConnection: close\r\n\r\n",
        )
        record = last(up)
    assert record["raw_path"] == "/v%20two/a%2Fb/%2e%2e/c/../d//e"
    assert record["query"] == "k=1&k=2&e=%26&s=a+b"


@pytest.mark.parametrize(
    "request_line", [b"HEAD /status/200", b"GET /status/204", b"GET /status/304"]
)
def test_bodyless_responses_carry_no_body(
    proxy: Start, special: tuple[Special, Served], request_line: bytes
) -> None:
    _, upstream = special
    _, served = proxy([upstream.url])
    raw = raw_request(
        served.port, request_line + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    status, headers, body = split_response(raw)
    assert body == b""
    assert status == int(request_line.split(b"/")[-1])
    assert ("transfer-encoding", "chunked") not in headers
    if request_line.startswith(b"HEAD"):  # the length a GET's body would have
        assert ("content-length", "4") in headers


def test_repeated_response_headers_survive(proxy: Start, special: tuple[Special, Served]) -> None:
    _, served = proxy([special[1].url])
    raw = raw_request(served.port, b"GET /cookies HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    _, headers, _ = split_response(raw)
    assert [v for k, v in headers if k == "set-cookie"] == ["a=1", "b=2"]


def test_expect_100_continue(proxy: Start, special: tuple[Special, Served]) -> None:
    _, served = proxy([special[1].url])
    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as sock:
        sock.sendall(
            b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
            b"Expect: 100-continue\r\nConnection: close\r\n\r\n"
        )
        interim = sock.recv(1024)
        assert interim.startswith(b"HTTP/1.1 100 Continue")
        sock.sendall(b"hello")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    status, _, body = split_response(data)
    assert (status, body) == (200, b"5")
    assert all(k != b"expect" for k, _ in special[0].received[-1]["headers"])


@pytest.mark.parametrize("chunked", [False, True])
def test_upstream_dying_mid_response_aborts_the_client(
    proxy: Start, chunked: bool, caplog: pytest.LogCaptureFixture
) -> None:
    dying = Dying(length=1000, sent=100, chunked=chunked)
    try:
        app, served = proxy([dying.url])
        with httpx.Client() as client, pytest.raises(httpx.RemoteProtocolError):
            client.get(served.url + "/")
        assert in_flight(app.pool) == 0
    finally:
        dying.close()
    assert "aborted mid-response" in caplog.text


@pytest.mark.parametrize(("size", "status"), [(8 * 1024, 200), (256 * 1024, 502)])
def test_an_oversized_upstream_head_is_a_502(proxy: Start, size: int, status: int) -> None:
    upstream = HugeHead(size)
    try:
        app, served = proxy([upstream.url])
        with httpx.Client() as client:
            assert client.get(served.url + "/").status_code == status
        wait_for(lambda: in_flight(app.pool) == 0)
    finally:
        upstream.close()


def test_client_disconnect_cancels_the_upstream_request(
    proxy: Start, special: tuple[Special, Served]
) -> None:
    app_state, upstream = special
    app, served = proxy([upstream.url])
    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as sock:
        sock.sendall(b"GET /hang HTTP/1.1\r\nHost: x\r\n\r\n")
        assert app_state.started.wait(5)
        assert in_flight(app.pool) == 1
    assert app_state.disconnected.wait(5), "the upstream request was not cancelled"
    wait_for(lambda: in_flight(app.pool) == 0)


def test_no_healthy_upstream_is_503(proxy: Start, caplog: pytest.LogCaptureFixture) -> None:
    _, served = proxy(pool=Pool([], allow_empty=True))
    with caplog.at_level(logging.WARNING, "clientlb.proxy"):
        r = httpx.get(served.url + "/x")
    assert r.status_code == 503
    assert r.headers["content-type"].startswith("text/plain")
    assert b"Traceback" not in r.content and len(r.content) < 100
    assert "503 no healthy upstream" in caplog.text


def test_unreachable_upstream_is_502(proxy: Start, caplog: pytest.LogCaptureFixture) -> None:
    _, served = proxy([closed_port()])
    with caplog.at_level(logging.WARNING, "clientlb.proxy"):
        r = httpx.get(served.url + "/x")
    assert r.status_code == 502 and b"unreachable" in r.content
    assert "502 upstream unreachable" in caplog.text


def test_upstream_timeout_is_504(proxy: Start) -> None:
    with Replica("slow", delay=0.5) as up:
        _, served = proxy([up.url], timeout=httpx.Timeout(5.0, read=0.1))
        r = httpx.get(served.url + "/x")
    assert r.status_code == 504 and b"timed out" in r.content


def test_refused_connection_is_retried_elsewhere_for_any_method(proxy: Start) -> None:
    with Replica("a") as up:
        _, served = proxy([closed_port(), up.url], algorithm="round_robin")
        for _ in range(4):
            r = httpx.post(served.url + "/p", content=b"data")
            assert r.status_code == 200
        assert up.count("POST") == 4


def test_large_streamed_body_is_not_resent(proxy: Start) -> None:
    dying = Dying(answer=False)  # reads the head, then closes: a reset
    try:
        with Replica("b") as good:
            _, served = proxy([dying.url, good.url], retry_body_limit=1024)
            for size, resent in ((100, True), (10_000, False)):
                for _ in range(6):  # until one starts at the dying upstream
                    dead_before, good_before = dying.accepted, good.count()
                    r = httpx.put(served.url + "/p", content=iter([b"x" * size]))
                    if dying.accepted > dead_before:
                        break
                else:
                    pytest.fail("the dying upstream was never picked")
                if resent:
                    assert (r.status_code, good.count()) == (200, good_before + 1)
                else:
                    assert (r.status_code, good.count()) == (502, good_before)
    finally:
        dying.close()


def test_ip_hash_keys_on_the_client_address(proxy: Start) -> None:
    with Replica("a") as a, Replica("b") as b, Replica("c") as c:
        _, served = proxy([a.url, b.url, c.url], algorithm="ip_hash", trusted_proxies=["127.0.0.1"])
        with httpx.Client() as client:
            # Enough clients that all of them landing on one replica (whose ports, and
            # so table, change every run) is out of the question: 3 * (1/3)**24.
            for ip in (f"198.51.100.{i}" for i in range(1, 25)):
                seen = set()
                for _ in range(2):
                    r = client.get(served.url + "/", headers={"x-forwarded-for": ip})
                    seen.add(json.loads(r.content)["replica"])
                assert len(seen) == 1
        assert sum(1 for r in (a, b, c) if r.count()) >= 2
