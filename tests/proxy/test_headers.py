"""The header and target policy, without sockets."""

from __future__ import annotations

import httpx
import pytest

from clientlb._core import NoUpstream
from clientlb._errors_map import reply_for
from clientlb._http1 import parse_response_head
from clientlb._proxy._headers import (
    HeaderPolicy,
    host_header,
    is_authority,
    relayed_headers,
    request_target,
    response_headers,
)


def names(headers: list[tuple[bytes, bytes]]) -> list[bytes]:
    return [n for n, _ in headers]


def value(headers: list[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    found = [v for n, v in headers if n == name]
    assert len(found) <= 1, found
    return found[0] if found else None


def test_hop_by_hop_and_connection_named_headers_are_dropped() -> None:
    policy = HeaderPolicy()
    inbound = policy.request(
        "GET",
        [
            (b"connection", b"keep-alive, X-Secret , x-other"),
            (b"keep-alive", b"timeout=5"),
            (b"te", b"trailers"),
            (b"trailer", b"x"),
            (b"transfer-encoding", b"chunked"),
            (b"upgrade", b"h2c"),
            (b"proxy-authorization", b"Basic eA=="),
            (b"proxy-connection", b"keep-alive"),
            (b"x-secret", b"1"),
            (b"x-other", b"2"),
            (b"expect", b"100-continue"),
            (b"accept", b"*/*"),
            (b"host", b"public.example"),
        ],
        "203.0.113.7",
        "http",
    )
    assert inbound.host is None
    assert names(inbound.headers) == [
        b"accept",
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"x-forwarded-host",
    ]
    assert inbound.framing.kind == "chunked"  # read by the proxy, re-framed by the engine


def test_forwarded_headers_from_an_untrusted_peer_are_replaced() -> None:
    inbound = HeaderPolicy().request(
        "GET",
        [
            (b"x-forwarded-for", b"1.2.3.4"),
            (b"x-forwarded-proto", b"https"),
            (b"x-forwarded-host", b"evil"),
            (b"host", b"site"),
        ],
        "203.0.113.7",
        "http",
    )
    out, client = inbound.headers, inbound.client
    assert value(out, b"x-forwarded-for") == b"203.0.113.7"
    assert value(out, b"x-forwarded-proto") == b"http"
    assert value(out, b"x-forwarded-host") == b"site"
    assert client == "203.0.113.7"


def test_forwarded_headers_from_a_trusted_peer_are_kept_and_appended() -> None:
    policy = HeaderPolicy(["10.0.0.0/8", "::1"])
    inbound = policy.request(
        "GET",
        [
            (b"x-forwarded-for", b"198.51.100.1, 10.1.1.1"),
            (b"x-forwarded-for", b"10.2.2.2"),
            (b"x-forwarded-proto", b"https"),
            (b"x-forwarded-host", b"shop.example"),
            (b"host", b"internal"),
        ],
        "10.9.9.9",
        "http",
    )
    out, client = inbound.headers, inbound.client
    assert value(out, b"x-forwarded-for") == b"198.51.100.1, 10.1.1.1, 10.2.2.2, 10.9.9.9"
    assert value(out, b"x-forwarded-proto") == b"https"
    assert value(out, b"x-forwarded-host") == b"shop.example"
    assert client == "198.51.100.1"  # the right-most untrusted hop


def test_client_key_is_rightmost_untrusted_hop() -> None:
    policy = HeaderPolicy(["10.0.0.0/8"])

    def client(forwarded_for: bytes, peer: str) -> str | None:
        headers = [(b"host", b"h"), (b"x-forwarded-for", forwarded_for)]
        return policy.request("GET", headers, peer, "http").client

    assert client(b"6.6.6.6, 198.51.100.1, 10.0.0.5", "10.0.0.1") == "198.51.100.1"
    assert client(b"10.0.0.7", "10.0.0.1") == "10.0.0.7"  # every hop trusted: the left-most
    assert client(b"198.51.100.1", "192.0.2.1") == "192.0.2.1"  # untrusted: the peer


def test_preserve_host_keeps_the_clients_host() -> None:
    inbound = HeaderPolicy(preserve_host=True).request(
        "GET", [(b"host", b"public.example")], "192.0.2.1", "https"
    )
    assert inbound.host == value(inbound.headers, b"host") == b"public.example"
    assert value(inbound.headers, b"x-forwarded-proto") == b"https"


def test_bad_trusted_proxy_is_refused() -> None:
    with pytest.raises(ValueError, match="not-an-ip"):
        HeaderPolicy(["not-an-ip"])


@pytest.mark.parametrize(
    ("prefix", "raw", "query", "expected"),
    [
        (b"", b"/a%2Fb/%2e%2e/c", b"x=1&x=2", b"/a%2Fb/%2e%2e/c?x=1&x=2"),
        (b"/v2", b"/users/1", b"", b"/v2/users/1"),
        (b"/v%20x", b"/a", b"q", b"/v%20x/a?q"),
        (b"", b"http://169.254.169.254/latest/meta-data", b"", b"/latest/meta-data"),
        (b"", b"http://169.254.169.254", b"", b"/"),
        (b"/p", b"*", b"", b"/p"),
        (b"", b"/a/../b//c", b"", b"/a/../b//c"),
    ],
)
def test_request_target_is_prefix_plus_raw_path(
    prefix: bytes, raw: bytes, query: bytes, expected: bytes
) -> None:
    assert request_target(prefix, raw, query) == expected


def test_response_headers_keep_repeats_and_drop_hop_by_hop() -> None:
    out = response_headers(
        [
            (b"Set-Cookie", b"a=1"),
            (b"Connection", b"close, X-Internal"),
            (b"X-Internal", b"1"),
            (b"Set-Cookie", b"b=2"),
            (b"Content-Length", b"3"),
            (b"Keep-Alive", b"timeout=5"),
        ]
    )
    assert out == [(b"set-cookie", b"a=1"), (b"set-cookie", b"b=2"), (b"content-length", b"3")]
    chunked = response_headers([(b"transfer-encoding", b"chunked"), (b"content-length", b"3")])
    assert chunked == []


@pytest.mark.parametrize("status", [200, 204, 304, 404])
@pytest.mark.parametrize(
    "fields",
    [
        b"Content-Length: 3\r\nConnection: keep-alive\r\nX-A: 1\r\n",
        b"Connection: close, X-Internal\r\nX-Internal: 1\r\nSet-Cookie: a\r\n"
        b"Keep-Alive: timeout=5\r\nSet-Cookie: b\r\nContent-Length: 0\r\n",
        b"Transfer-Encoding: chunked\r\nTE: trailers\r\nConnection: X-A\r\nx-a: 2\r\n",
        b"Connection: Upgrade\r\nConnection: X-B\r\nUpgrade: h2c\r\nX-B: 1\r\nX-C: 3\r\n",
    ],
)
def test_relayed_headers_of_a_parsed_head_are_response_headers(status: int, fields: bytes) -> None:
    head = parse_response_head(b"HTTP/1.1 %d X\r\n%b" % (status, fields))
    relayed = relayed_headers(head.headers, head.framing, status)
    assert relayed == response_headers(head.headers, status)
    assert relayed == response_headers(
        [(n.title(), v) for n, v in head.headers], status
    )  # names as an upstream may write them


def test_host_header_omits_default_ports() -> None:
    assert host_header("example.com", 80, "http") == b"example.com"
    assert host_header("example.com", 8443, "https") == b"example.com:8443"
    assert host_header("::1", 8000, "http") == b"[::1]:8000"


def test_error_table() -> None:
    assert reply_for(NoUpstream("x")).status == 503
    assert reply_for(httpx.ConnectError("x")).status == 502
    assert reply_for(httpx.ConnectTimeout("x")).status == 502
    for exc in (httpx.ReadTimeout("x"), httpx.WriteTimeout("x")):
        assert reply_for(exc).status == 504
    assert reply_for(httpx.PoolTimeout("x")).status == 503  # every connection busy
    assert reply_for(httpx.RemoteProtocolError("x")).status == 502
    assert reply_for(httpx.ReadError("x")).status == 502
    assert reply_for(RuntimeError("x")).status == 502
    assert b"Traceback" not in reply_for(RuntimeError("x")).body


@pytest.mark.parametrize(
    "value",
    [b"example.com", b"example.com:8080", b"127.0.0.1:80", b"[::1]:8443", b"[::1]", b"a_b.local"],
)
def test_plain_authorities(value: bytes) -> None:
    assert is_authority(value)


@pytest.mark.parametrize(
    "value",
    [
        b"",
        b"u:p@example.com",
        b"example.com/x",
        b"example.com?q",
        b"a#b",
        b"a b",
        b"h:99999",
        b"h:",
        b"h:1:2",
        b"[::1",
        b"::1",
        b"example.com:80\r\nX: y",
    ],
)
def test_anything_more_than_host_and_port_is_not_an_authority(value: bytes) -> None:
    assert not is_authority(value)
