"""Hostile and broken clients, byte by byte over raw sockets, against
``ProxyApp([replica])``.

Rules ``ProxyApp`` enforces itself (framing headers, Host, CONNECT) are checked
under every front in ``FRONTS``: the project's front end and uvicorn with either
parser. Rules only a server can enforce (sizes, clocks, the connection cap, the
syntax of a head, the HTTP version) are checked with the front end, each beside
a ``test_uvicorn_*`` test pinning what uvicorn does with the same bytes: those
are the README's facts, and they fail when uvicorn changes.

Each test checks the status the client gets (parsed off the wire), what the
upstream got (usually nothing, or one clean request), that a connection whose
framing cannot be trusted is closed after the answer, and that no request is
left in flight. Nothing is synchronised by sleeping: waits block on a socket
with a timeout, and a clock is read only to bound how long a rule took.
"""

from __future__ import annotations

import asyncio
import contextlib
import select
import socket
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus
from websockets.typing import Subprotocol

from clientlb._proxy import ProxyApp
from clientlb._proxy._limits import Limits

from ..replicas import Replica
from ..waiting import never, wait_for
from .conftest import in_flight
from .fronts import FRONTS, FrontServed, serve_with
from .servers import Dying, Served, Special, split_response
from .test_websocket import EchoUpstream

pytestmark = pytest.mark.integration

UVICORNS = ("uvicorn-httptools", "uvicorn-h11")
HOST = "Host: front.example"
SMALL = Limits(request_line=256, header_line=256, head=1024)

# -- a raw HTTP/1.1 client ------------------------------------------------------------


@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k == name]


class Client:
    """One client connection: raw bytes out, responses parsed off the wire."""

    def __init__(self, port: int, timeout: float = 5.0) -> None:
        self.timeout = timeout
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""
        self.eof = False

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _more(self) -> bool:
        if self.eof:
            return False
        try:
            chunk = self.sock.recv(65536)
        except ConnectionResetError:  # closed with our bytes unread: a reset
            chunk = b""
        if not chunk:
            self.eof = True
            return False
        self.buf += chunk
        return True

    def _take(self, size: int) -> bytes:
        while len(self.buf) < size:
            if not self._more():
                raise AssertionError(f"closed {size - len(self.buf)} bytes short")
        data, self.buf = self.buf[:size], self.buf[size:]
        return data

    def _line(self) -> bytes:
        while b"\r\n" not in self.buf:
            if not self._more():
                raise AssertionError(f"closed mid-line: {self.buf[:80]!r}")
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def response(self, *, head: bool = False) -> Response:
        """The next response (an interim 1xx is returned as one)."""
        while b"\r\n\r\n" not in self.buf:
            if not self._more():
                raise AssertionError(f"closed before a whole response head: {self.buf[:200]!r}")
        raw, _, self.buf = self.buf.partition(b"\r\n\r\n")
        status, headers, _ = split_response(raw + b"\r\n\r\n")
        response = Response(status, headers, b"")
        if head or status < 200 or status in (204, 304):
            return response
        if "chunked" in ",".join(response.header("transfer-encoding")):
            parts = []
            while size := int(self._line().split(b";")[0], 16):
                parts.append(self._take(size))
                assert self._take(2) == b"\r\n"
            while self._line():  # trailers, up to the empty line
                pass
            response.body = b"".join(parts)
        elif response.header("content-length"):
            response.body = self._take(int(response.header("content-length")[0]))
        else:  # close-delimited
            while self._more():
                pass
            response.body, self.buf = self.buf, b""
        return response

    def raw(self, size: int) -> bytes:
        """At least ``size`` bytes, as they come."""
        while len(self.buf) < size and self._more():
            pass
        data, self.buf = self.buf, b""
        return data

    def answered(self, within: float) -> bool:
        """Whether anything (a byte, or the close) arrives within ``within`` seconds."""
        return bool(self.buf) or self.eof or bool(select.select([self.sock], [], [], within)[0])

    def closed(self, within: float = 2.0) -> bool:
        """Whether the server closes the connection within ``within`` seconds;
        it must send nothing more."""
        self.sock.settimeout(within)
        try:
            more = self._more()
        except TimeoutError:
            return False
        finally:
            self.sock.settimeout(self.timeout)
        assert not more and not self.buf, f"unexpected bytes: {self.buf[:200]!r}"
        return True


def request(target: str, *lines: str, method: str = "GET", body: bytes = b"") -> bytes:
    """``METHOD target HTTP/1.1`` with header ``lines`` (give Host yourself)."""
    head = f"{method} {target} HTTP/1.1\r\n" + "".join(f"{line}\r\n" for line in lines)
    return head.encode("latin-1") + b"\r\n" + body


def exchange(port: int, data: bytes) -> tuple[Response, bool]:
    """``data`` on a new connection: the first response, and whether the proxy
    closed the connection after it."""
    with Client(port) as client:
        client.send(data)
        response = client.response()
        return response, client.closed()


def trickle(client: Client, data: bytes, every: float) -> int:
    """Send ``data`` one byte every ``every`` seconds until the server answers or
    closes: the bytes sent."""
    for sent in range(len(data)):
        if client.answered(every):
            return sent
        try:
            client.send(data[sent : sent + 1])
        except OSError:
            return sent
    return len(data)


def send_until_answered(client: Client, data: bytes, piece: int = 16 * 1024) -> int:
    """Send ``data`` piece by piece, stopping once the server answers: the bytes sent."""
    sent = 0
    while sent < len(data):
        try:
            client.send(data[sent : sent + piece])
        except OSError:  # refused and closed mid-send
            break
        sent = min(sent + piece, len(data))
        if client.answered(0.02):
            break
    return sent


def in_two_reads(client: Client, data: bytes, first: int) -> None:
    """Send ``data[:first]``, give the server time to read it alone, then the rest
    unless it has already answered."""
    client.send(data[:first])
    if not client.answered(0.3):
        with contextlib.suppress(OSError):
            client.send(data[first:])


# -- servers ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def replica() -> Iterator[Replica]:
    with Replica("r") as up:
        up.release.set()  # /stream answers at once
        yield up


@pytest.fixture
def upstream(replica: Replica) -> Replica:
    """The module's recording replica, with no request recorded yet."""
    replica.reset()
    return replica


_SHARED: dict[tuple[str, tuple[str, ...]], tuple[ProxyApp, FrontServed | Served]] = {}


@pytest.fixture(scope="module", autouse=True)
def _stop_shared_servers() -> Iterator[None]:
    yield
    while _SHARED:
        _, (_, server) = _SHARED.popitem()
        server.stop()


@contextlib.contextmanager
def proxied(
    front: str, upstreams: list[str], limits: Limits | None = None
) -> Iterator[tuple[ProxyApp, int]]:
    """``ProxyApp(upstreams)`` served by ``front``: the app and its port. With no
    ``limits`` the server is kept for the module's other tests (stopping uvicorn
    takes a tenth of a second; an upstream that lives for one test passes
    ``Limits()``); with limits it stops at the end. On a clean exit no request
    may be left in flight."""
    key = (front, tuple(upstreams))
    if limits is None and key in _SHARED:
        app, server = _SHARED[key]
    else:
        app = ProxyApp(upstreams, limits=limits or Limits())
        server = serve_with(front, app, limits)
        if limits is None:
            _SHARED[key] = (app, server)
    try:
        yield app, server.port
        wait_for(lambda: in_flight(app.pool) == 0), "a request is left in flight"
    finally:
        if limits is not None:
            server.stop()


def paths(replica: Replica) -> list[str]:
    return [r["path"] for r in replica.requests]


# -- 1, 2, 3: framing headers, CONNECT and Host (ProxyApp's rules, every front) ---------

SMUGGLED = b"GET /admin/delete-all HTTP/1.1\r\nHost: front.example\r\n\r\n"
NEXT_USER = b"GET /next HTTP/1.1\r\nHost: front.example\r\nCookie: session=next-user\r\n\r\n"


@pytest.mark.parametrize("front", FRONTS)
@pytest.mark.parametrize(
    "framing",
    [
        b"Content-Length: 0\r\nTransfer-Encoding: chunked\r\n",
        b"Transfer-Encoding: chunked\r\nContent-Length: 0\r\n",
    ],
    ids=["cl-te", "te-cl"],
)
def test_a_smuggled_request_never_reaches_the_upstream(
    front: str, framing: bytes, upstream: Replica
) -> None:
    attack = (
        b"POST /form HTTP/1.1\r\nHost: front.example\r\n"
        + framing
        + b"\r\n"
        + b"%x\r\n%b\r\n0\r\n\r\n" % (len(SMUGGLED), SMUGGLED)
        + NEXT_USER
    )
    with proxied(front, [upstream.url]) as (_, port):
        response, closed = exchange(port, attack)
    assert response.status == 400
    assert closed  # the next user's request is not read from this connection
    assert upstream.requests == []  # neither /admin/delete-all nor the cookie


@pytest.mark.parametrize("front", FRONTS)
@pytest.mark.parametrize(
    ("coding", "expected"),
    [
        # uvicorn-h11 refuses any coding but chunked itself, before ProxyApp.
        ("gzip, chunked", {"front": 501, "uvicorn-httptools": 501, "uvicorn-h11": 400}),
        ("chunked, gzip", {"front": 400, "uvicorn-httptools": 400, "uvicorn-h11": 400}),
    ],
)
def test_transfer_codings_other_than_chunked_are_refused(
    front: str, coding: str, expected: dict[str, int], upstream: Replica
) -> None:
    data = request("/up", HOST, f"Transfer-Encoding: {coding}", method="POST", body=b"0\r\n\r\n")
    with proxied(front, [upstream.url]) as (_, port):
        response, closed = exchange(port, data)
    assert response.status == expected[front]
    assert closed
    assert upstream.requests == []


@pytest.mark.parametrize("front", FRONTS)
def test_connect_is_refused(front: str, upstream: Replica) -> None:
    data = b"CONNECT internal.example:443 HTTP/1.1\r\nHost: internal.example:443\r\n\r\n"
    with proxied(front, [upstream.url]) as (_, port):
        response, closed = exchange(port, data)
    if front == "uvicorn-httptools":  # its parser refuses the authority-form target first
        assert response.status == 400
    else:
        assert response.status == 405
        (allow,) = response.header("allow")
        assert "GET" in allow and "CONNECT" not in allow
    assert closed
    assert upstream.requests == []


@pytest.mark.parametrize("front", FRONTS)
@pytest.mark.parametrize(
    "hosts",
    [["Host: a.example", "Host: b.example"], [], ["Host: a b"], ["Host: evil@x"]],
    ids=["two", "none", "space", "userinfo"],
)
def test_a_bad_host_is_400(front: str, hosts: list[str], upstream: Replica) -> None:
    with proxied(front, [upstream.url]) as (_, port):
        response, closed = exchange(port, request("/", *hosts))
    assert response.status == 400
    assert closed
    assert upstream.requests == []


@pytest.mark.parametrize("front", FRONTS)
def test_http10_without_host_is_forwarded(front: str, upstream: Replica) -> None:
    with proxied(front, [upstream.url]) as (_, port):
        response, closed = exchange(port, b"GET /old HTTP/1.0\r\n\r\n")
    assert response.status == 200
    assert closed
    assert paths(upstream) == ["/old"]
    (record,) = upstream.requests
    assert [v for k, v in record["headers"] if k == "host"] == [f"127.0.0.1:{upstream.port}"]


# -- 4, 13: the syntax of a head and the HTTP version (the front end's rules) ------------

MALFORMED = {
    "obs-fold": b"GET / HTTP/1.1\r\nHost: front.example\r\nX-A: 1\r\n  continued\r\n\r\n",
    "bare-lf": b"GET / HTTP/1.1\nHost: front.example\n\n",
    "one-bare-lf": b"GET / HTTP/1.1\r\nHost: front.example\nX-A: 1\r\n\r\n",
    "bare-cr": b"GET / HTTP/1.1\r\nHost: front.example\r\nX-A: 1\r2\r\n\r\n",
    "space-before-colon": b"GET / HTTP/1.1\r\nHost: front.example\r\nX-A : 1\r\n\r\n",
    "nul": b"GET / HTTP/1.1\r\nHost: front.example\r\nX-A: a\x00b\r\n\r\n",
}
VERSIONS = {
    "http2-preface": (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505),
    "http2-request": (b"GET / HTTP/2.0\r\nHost: front.example\r\n\r\n", 505),
    "http3-request": (b"GET / HTTP/3.0\r\nHost: front.example\r\n\r\n", 505),
    "lower-case": (b"get / http/1.1\r\nHost: front.example\r\n\r\n", 400),
}


@pytest.mark.parametrize("case", MALFORMED)
def test_a_malformed_head_is_400(case: str, upstream: Replica) -> None:
    with proxied("front", [upstream.url]) as (_, port):
        response, closed = exchange(port, MALFORMED[case])
    assert response.status == 400
    assert closed
    assert upstream.requests == []


@pytest.mark.parametrize("front", UVICORNS)
@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("obs-fold", {"uvicorn-httptools": 400, "uvicorn-h11": 200}),
        ("bare-lf", {"uvicorn-httptools": 400, "uvicorn-h11": 200}),
        ("bare-cr", {"uvicorn-httptools": 400, "uvicorn-h11": 400}),
        ("space-before-colon", {"uvicorn-httptools": 400, "uvicorn-h11": 400}),
        ("nul", {"uvicorn-httptools": 400, "uvicorn-h11": 400}),
    ],
)
def test_uvicorn_with_a_malformed_head(
    front: str, case: str, expected: dict[str, int], upstream: Replica
) -> None:
    with proxied(front, [upstream.url]) as (_, port), Client(port) as client:
        client.send(MALFORMED[case])
        response = client.response()
    assert response.status == expected[front]
    if response.status == 400:
        assert upstream.requests == []
        return
    assert paths(upstream) == ["/"]  # h11 accepts it and ProxyApp forwards it
    if case == "obs-fold":
        (record,) = upstream.requests
        assert ["x-a", "1 continued"] in record["headers"]  # unfolded


@pytest.mark.parametrize("case", VERSIONS)
def test_another_http_version_or_a_bad_request_line_is_refused(
    case: str, upstream: Replica
) -> None:
    data, status = VERSIONS[case]
    with proxied("front", [upstream.url]) as (_, port):
        response, closed = exchange(port, data)
    assert response.status == status
    assert closed
    assert upstream.requests == []


@pytest.mark.parametrize("front", UVICORNS)
@pytest.mark.parametrize(
    ("case", "expected"),
    [
        # uvicorn-h11 reads the preface as a request with no Host: ProxyApp's 400.
        ("http2-preface", {"uvicorn-httptools": 400, "uvicorn-h11": 400}),
        ("http2-request", {"uvicorn-httptools": 200, "uvicorn-h11": 200}),
        ("lower-case", {"uvicorn-httptools": 400, "uvicorn-h11": 400}),
    ],
)
def test_uvicorn_with_another_http_version(
    front: str, case: str, expected: dict[str, int], upstream: Replica
) -> None:
    with proxied(front, [upstream.url]) as (_, port), Client(port) as client:
        client.send(VERSIONS[case][0])
        response = client.response()
    assert response.status == expected[front]
    assert paths(upstream) == (["/"] if response.status == 200 else [])  # as HTTP/1.1


# The start of a TLS ClientHello: an https:// client on the http port.
CLIENT_HELLO = bytes.fromhex("16030100a5010000a10303") + bytes(range(32, 64)) + b"\x00\x02\x13\x01"


@pytest.mark.parametrize("front", FRONTS)
def test_garbage_ending_a_head_is_400(front: str, upstream: Replica) -> None:
    with proxied(front, [upstream.url]) as (_, port):
        response, closed = exchange(port, CLIENT_HELLO + b"\r\n\r\n")
    assert response.status == 400
    assert closed
    assert upstream.requests == []


def test_garbage_that_never_ends_a_line_is_400_at_once(upstream: Replica) -> None:
    with proxied("front", [upstream.url]) as (_, port), Client(port, timeout=0.5) as client:
        client.send(CLIENT_HELLO)
        response = client.response()
        assert client.closed()
    assert response.status == 400
    assert upstream.requests == []


# -- 5: sizes (the front end's rules) ---------------------------------------------------


def head_of(size: int, line: int = 128) -> bytes:
    """A GET head of exactly ``size`` bytes (its final empty line included), in
    header lines of at most ``line`` bytes."""
    head = b"GET / HTTP/1.1\r\nHost: front.example\r\n"
    n = 0
    while (room := size - len(head) - 2) > line + 2:  # a full line, and more after it
        name = b"X-F%d: " % n
        head += name + b"v" * (line - len(name)) + b"\r\n"
        n += 1
    name = b"X-F%d: " % n
    assert room - 2 > len(name), "pick another size"
    head += name + b"v" * (room - 2 - len(name)) + b"\r\n\r\n"
    assert len(head) == size
    return head


@pytest.mark.parametrize(("extra", "status"), [(0, 200), (1, 414)])
def test_a_request_line_over_the_limit_is_414(extra: int, status: int, upstream: Replica) -> None:
    target = "/" + "a" * (SMALL.request_line - len("GET / HTTP/1.1") + extra)
    with proxied("front", [upstream.url], SMALL) as (_, port), Client(port) as client:
        client.send(request(target, HOST))
        response = client.response()
        closed = client.closed(within=0.1 if status == 200 else 2.0)
    assert response.status == status
    assert closed == (status != 200)
    assert paths(upstream) == ([target] if status == 200 else [])


@pytest.mark.parametrize(("extra", "status"), [(0, 200), (1, 431)])
def test_a_header_line_over_the_limit_is_431(extra: int, status: int, upstream: Replica) -> None:
    line = "X-Big: " + "b" * (SMALL.header_line - len("X-Big: ") + extra)
    with proxied("front", [upstream.url], SMALL) as (_, port), Client(port) as client:
        client.send(request("/", HOST, line))
        response = client.response()
        closed = client.closed(within=0.1 if status == 200 else 2.0)
    assert response.status == status
    assert closed == (status != 200)
    assert len(upstream.requests) == (status == 200)


@pytest.mark.parametrize(("extra", "status"), [(0, 200), (1, 431)])
def test_a_head_over_the_limit_is_431_though_no_line_is(
    extra: int, status: int, upstream: Replica
) -> None:
    head = head_of(SMALL.head + extra)
    with proxied("front", [upstream.url], SMALL) as (_, port), Client(port) as client:
        client.send(head)
        response = client.response()
        closed = client.closed(within=0.1 if status == 200 else 2.0)
    assert response.status == status
    assert closed == (status != 200)
    assert len(upstream.requests) == (status == 200)


@pytest.mark.parametrize("where", ["request-line", "header-line"])
def test_a_line_at_the_limit_split_after_its_cr_is_accepted(where: str, upstream: Replica) -> None:
    if where == "request-line":
        target = "/" + "a" * (SMALL.request_line - len("GET / HTTP/1.1"))
        first, rest = f"GET {target} HTTP/1.1\r".encode(), f"\n{HOST}\r\n\r\n".encode()
    else:
        line = "X-Big: " + "b" * (SMALL.header_line - len("X-Big: "))
        first, rest = f"GET / HTTP/1.1\r\n{HOST}\r\n{line}\r".encode(), b"\n\r\n"
    with proxied("front", [upstream.url], SMALL) as (_, port), Client(port) as client:
        client.send(first)
        assert not client.answered(0.3)  # the reader has it alone, and waits for the LF
        client.send(rest)
        assert client.response().status == 200


def test_ten_thousand_small_headers_are_431_at_once(upstream: Replica) -> None:
    data = request("/", HOST, *(f"X-{i}: v" for i in range(10_000)))
    with proxied("front", [upstream.url]) as (_, port), Client(port) as client:
        started = time.monotonic()
        send_until_answered(client, data)
        response = client.response()
        elapsed = time.monotonic() - started
        assert client.closed()
    assert response.status == 431
    assert elapsed < 1.0
    assert upstream.requests == []


def test_a_megabyte_header_line_is_refused_long_before_its_end(upstream: Replica) -> None:
    data = b"GET / HTTP/1.1\r\nHost: front.example\r\nX-Big: " + b"b" * (1 << 20) + b"\r\n\r\n"
    with proxied("front", [upstream.url]) as (_, port), Client(port) as client:
        sent = send_until_answered(client, data)
        response = client.response()
        assert client.closed()
    assert response.status == 431
    assert sent <= 64 * 1024  # answered after the limit (8 KiB) plus a piece or two
    assert upstream.requests == []


@pytest.mark.parametrize("front", UVICORNS)
@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("request-line-9k", {"uvicorn-httptools": 200, "uvicorn-h11": 200}),
        ("header-line-9k", {"uvicorn-httptools": 200, "uvicorn-h11": 200}),
        # h11 refuses once more than 16 KiB of an unfinished head is buffered.
        ("head-40k", {"uvicorn-httptools": 200, "uvicorn-h11": 400}),
        ("headers-10k", {"uvicorn-httptools": 200, "uvicorn-h11": 400}),
        ("header-line-1m", {"uvicorn-httptools": 400, "uvicorn-h11": 400}),
    ],
)
def test_uvicorn_with_an_oversized_head(
    front: str, case: str, expected: dict[str, int], upstream: Replica
) -> None:
    with proxied(front, [upstream.url]) as (_, port), Client(port) as client:
        if case == "request-line-9k":
            client.send(request("/" + "a" * 9 * 1024, HOST))
        elif case == "header-line-9k":
            client.send(request("/", HOST, "X-Big: " + "b" * 9 * 1024))
        elif case == "head-40k":
            in_two_reads(client, head_of(40 * 1024, line=4000), 20 * 1024)
        elif case == "headers-10k":
            in_two_reads(client, request("/", HOST, *(f"X-{i}: v" for i in range(10_000))), 20_000)
        else:
            with contextlib.suppress(OSError):  # h11 closes once it refuses
                client.send(request("/", HOST, "X-Big: " + "b" * (1 << 20)))
        response = client.response()
    assert response.status == expected[front]
    if response.status == 400:
        assert upstream.requests == []
        return
    (record,) = upstream.requests  # forwarded, whole
    if case == "headers-10k":
        assert sum(k.startswith("x-") and k[2:].isdigit() for k, _ in record["headers"]) == 10_000


# -- 6, 7: clocks (the front end's rules) ------------------------------------------------

SLOW_HEAD = b"GET /slow HTTP/1.1\r\nHost: front.example\r\nX-Slow: " + b"z" * 30


def test_a_slowloris_head_is_cut_at_header_timeout_from_the_connection_start(
    upstream: Replica,
) -> None:
    with proxied("front", [upstream.url], Limits(header_timeout=0.5)) as (_, port):
        started = time.monotonic()
        with Client(port) as client:
            sent = trickle(client, SLOW_HEAD, every=0.1)
            response = client.response()
            elapsed = time.monotonic() - started
            assert client.closed()
    assert response.status == 408
    assert 0.45 <= elapsed < 1.5  # its bytes, one every 0.1 s, did not push the deadline
    assert sent >= 3
    assert upstream.requests == []


def test_a_silent_connection_is_closed_at_header_timeout(upstream: Replica) -> None:
    with proxied("front", [upstream.url], Limits(header_timeout=0.5)) as (_, port):
        started = time.monotonic()
        with Client(port) as client:
            closed = client.closed(within=3.0)  # with no byte sent back
        elapsed = time.monotonic() - started
    assert closed
    assert 0.45 <= elapsed < 1.5


def test_a_second_head_is_cut_at_header_timeout_after_the_first_response(
    upstream: Replica,
) -> None:
    with (
        proxied("front", [upstream.url], Limits(header_timeout=0.6)) as (_, port),
        Client(port) as client,
    ):
        for part in (b"GET /first HTTP/1.1\r\n", HOST.encode() + b"\r\n", b"\r\n"):
            assert not client.answered(0.1)  # the first head takes 0.3 s of its 0.6
            client.send(part)
        assert client.response().status == 200
        answered = time.monotonic()
        trickle(client, SLOW_HEAD, every=0.1)
        response = client.response()
        elapsed = time.monotonic() - answered
        assert client.closed()
    assert response.status == 408
    assert 0.5 <= elapsed < 1.6  # counted from the first response, not the connection
    assert paths(upstream) == ["/first"]


def test_an_idle_keep_alive_connection_is_closed_at_keepalive_timeout(
    upstream: Replica,
) -> None:
    with (
        proxied("front", [upstream.url], Limits(keepalive_timeout=0.3)) as (_, port),
        Client(port) as client,
    ):
        client.send(request("/once", HOST))
        assert client.response().status == 200
        answered = time.monotonic()
        closed = client.closed(within=3.0)  # with no byte sent back
        elapsed = time.monotonic() - answered
    assert closed
    assert 0.25 <= elapsed < 1.2
    assert paths(upstream) == ["/once"]


def test_a_stalled_body_is_408_at_body_timeout(upstream: Replica) -> None:
    head = request("/upload", HOST, "Content-Length: 100", method="POST", body=b"0123456789")
    with (
        proxied("front", [upstream.url], Limits(body_timeout=0.5)) as (_, port),
        Client(port) as client,
    ):
        client.send(head)
        stalled = time.monotonic()
        response = client.response()
        elapsed = time.monotonic() - stalled
        assert client.closed()
    assert response.status == 408
    assert 0.45 <= elapsed < 1.5
    assert upstream.requests == []  # a body small enough to resend is read whole first


QUIET = 0.4  # seconds a uvicorn test waits, against clocks of 0.1 s


@pytest.mark.parametrize("front", UVICORNS)
def test_uvicorn_serves_a_head_trickled_for_any_time(front: str, upstream: Replica) -> None:
    head = request("/slow", HOST)
    every = QUIET / len(head)
    with (
        proxied(front, [upstream.url], Limits(header_timeout=0.1)) as (_, port),
        Client(port) as client,
    ):
        assert trickle(client, head, every=every) == len(head)  # never answered meanwhile
        assert client.response().status == 200
    assert paths(upstream) == ["/slow"]


@pytest.mark.parametrize("front", UVICORNS)
def test_uvicorn_keeps_a_silent_connection_open(front: str, upstream: Replica) -> None:
    with (
        proxied(front, [upstream.url], Limits(header_timeout=0.1)) as (_, port),
        Client(port) as client,
    ):
        assert not client.answered(QUIET)
        client.send(request("/late", HOST))
        assert client.response().status == 200
    assert paths(upstream) == ["/late"]


@pytest.mark.parametrize("front", UVICORNS)
def test_uvicorn_applies_its_own_keep_alive_timeout(front: str, upstream: Replica) -> None:
    """uvicorn's ``timeout_keep_alive`` (5 s by default) applies, not ``Limits``'."""
    with (
        proxied(front, [upstream.url], Limits(keepalive_timeout=0.1)) as (_, port),
        Client(port) as client,
    ):
        client.send(request("/one", HOST))
        assert client.response().status == 200
        assert not client.answered(QUIET)
        client.send(request("/two", HOST))
        assert client.response().status == 200
    assert paths(upstream) == ["/one", "/two"]


@pytest.mark.parametrize("front", UVICORNS)
def test_uvicorn_waits_for_a_stalled_body(front: str, upstream: Replica) -> None:
    head = request("/upload", HOST, "Content-Length: 100", method="POST", body=b"0123456789")
    with (
        proxied(front, [upstream.url], Limits(body_timeout=0.1)) as (_, port),
        Client(port) as client,
    ):
        client.send(head)
        assert not client.answered(QUIET)
        client.send(b"x" * 90)
        assert client.response().status == 200
    (record,) = upstream.requests
    assert record["body_length"] == 100


# -- 8: the connection cap (the front end's rule) ------------------------------------------

CAPPED = Limits(client_connections=3)


def test_at_the_cap_an_idle_keep_alive_connection_makes_room(upstream: Replica) -> None:
    with proxied("front", [upstream.url], CAPPED) as (_, port), contextlib.ExitStack() as stack:
        idle = [stack.enter_context(Client(port)) for _ in range(3)]
        for n, client in enumerate(idle):
            client.send(request(f"/idle-{n}", HOST))
            assert client.response().status == 200
        fourth = stack.enter_context(Client(port))
        fourth.send(request("/fourth", HOST))
        assert fourth.response().status == 200
        ready, _, _ = select.select([c.sock for c in idle], [], [], 2.0)
        assert len(ready) == 1
        (closed,) = [c for c in idle if c.sock in ready]
        assert closed.closed()
        for client in idle:  # the two others were left open: they still serve
            if client is not closed:
                client.send(request("/again", HOST))
                assert client.response().status == 200
    assert sorted(paths(upstream)) == ["/again"] * 2 + ["/fourth", "/idle-0", "/idle-1", "/idle-2"]


def busy(port: int, n: int, *lines: str) -> Client:
    """A client in the middle of a request: 5 of its 10 body bytes sent, after
    the ``100 Continue`` that shows the front end has it."""
    client = Client(port)
    head = (HOST, "Content-Length: 10", "Expect: 100-continue", *lines)
    client.send(request(f"/busy-{n}", *head, method="POST"))
    assert client.response().status == 100
    client.send(b"01234")
    return client


def test_at_the_cap_a_new_client_waits_in_the_backlog_and_is_never_reset(
    upstream: Replica,
) -> None:
    with proxied("front", [upstream.url], CAPPED) as (_, port), contextlib.ExitStack() as stack:
        first = stack.enter_context(busy(port, 0, "Connection: close"))
        for n in (1, 2):
            stack.enter_context(busy(port, n))
        fourth = stack.enter_context(Client(port))  # connected: the kernel's backlog holds it
        fourth.send(request("/fourth", HOST))
        assert not fourth.answered(0.3)
        first.send(b"56789")
        assert first.response().status == 200
        assert first.closed()
        assert fourth.response().status == 200  # accepted once a connection closed
    assert paths(upstream) == ["/busy-0", "/fourth"]


def test_at_the_cap_a_connection_turning_idle_makes_room(upstream: Replica) -> None:
    limits = Limits(client_connections=3, keepalive_timeout=10.0)
    with proxied("front", [upstream.url], limits) as (_, port), contextlib.ExitStack() as stack:
        clients = [stack.enter_context(busy(port, n)) for n in range(3)]
        fourth = stack.enter_context(Client(port, timeout=2.0))
        fourth.send(request("/fourth", HOST))
        assert not fourth.answered(0.3)
        clients[0].send(b"56789")
        assert clients[0].response().status == 200  # its connection is now idle keep-alive
        assert fourth.answered(1.0)
        assert fourth.response().status == 200


def test_a_burst_of_clients_is_held_to_the_cap() -> None:
    entered, gate = threading.Event(), threading.Event()

    def hold() -> None:  # keeps the server's loop busy while the burst lands in the backlog
        entered.set()
        gate.wait(5)

    with Replica("slow", delay=0.5) as slow:
        app = ProxyApp([slow.url], limits=CAPPED)
        server = FrontServed(app, CAPPED).start()
        try:
            server.call(hold)
            assert entered.wait(5)
            with contextlib.ExitStack() as stack:
                clients = [stack.enter_context(Client(server.port)) for _ in range(6)]
                for n, client in enumerate(clients):
                    client.send(request(f"/burst-{n}", HOST, "Connection: close"))
                gate.set()
                wait_for(lambda: slow.count() >= 3)
                assert never(lambda: slow.count() > 3, within=0.3)  # 3 wait their turn
                assert [client.response().status for client in clients] == [200] * 6
            wait_for(lambda: in_flight(app.pool) == 0)
        finally:
            gate.set()
            server.stop()


@pytest.mark.parametrize("front", UVICORNS)
def test_uvicorn_has_no_connection_cap(front: str, upstream: Replica) -> None:
    with proxied(front, [upstream.url], CAPPED) as (_, port), contextlib.ExitStack() as stack:
        clients = [stack.enter_context(Client(port)) for _ in range(4)]
        for rounds in range(2):  # all four stay open: none was closed to make room
            for n, client in enumerate(clients):
                client.send(request(f"/c{n}-{rounds}", HOST))
                assert client.response().status == 200
    assert len(upstream.requests) == 8


# -- 9, 10, 11, 12: pipelining, 100-continue, HTTP/1.0, a client gone mid-download ------


@pytest.mark.parametrize("front", FRONTS)
def test_pipelined_requests_are_answered_in_order(front: str, upstream: Replica) -> None:
    with proxied(front, [upstream.url]) as (_, port), Client(port) as client:
        client.send(request("/one", HOST) + request("/two", HOST))
        first, second = client.response(), client.response()
        client.send(
            request("/post", HOST, "Content-Length: 5", method="POST", body=b"hello")
            + request("/after", HOST)
        )
        third, fourth = client.response(), client.response()
    responses = [first, second, third, fourth]
    assert [r.status for r in responses] == [200] * 4
    assert [r.body.split(b'"path": "')[1].split(b'"')[0] for r in responses] == [
        b"/one",
        b"/two",
        b"/post",
        b"/after",
    ]
    assert paths(upstream) == ["/one", "/two", "/post", "/after"]
    assert [r["body_length"] for r in upstream.requests] == [0, 0, 5, 0]


@pytest.mark.parametrize("front", FRONTS)
def test_expect_100_continue_gets_100_before_the_body(front: str, upstream: Replica) -> None:
    head = request("/up", HOST, "Content-Length: 5", "Expect: 100-continue", method="POST")
    with proxied(front, [upstream.url]) as (_, port), Client(port) as client:
        client.send(head)
        interim = client.response()
        client.send(b"hello")
        final = client.response()
    assert interim.status == 100
    assert final.status == 200
    (record,) = upstream.requests
    assert record["body_length"] == 5
    assert "expect" not in {k for k, _ in record["headers"]}  # answered here, not forwarded


def test_http10_responses_are_sized_or_close_delimited(upstream: Replica) -> None:
    with proxied("front", [upstream.url]) as (_, port):
        streamed, closed_streamed = exchange(port, b"GET /stream?chunks=3 HTTP/1.0\r\n\r\n")
        sized, closed_sized = exchange(port, b"GET /sized HTTP/1.0\r\n\r\n")
    assert (streamed.status, streamed.body) == (200, b"chunk\nchunk\nend\n")
    assert streamed.header("transfer-encoding") == [] and streamed.header("content-length") == []
    assert closed_streamed and closed_sized
    assert sized.status == 200
    assert sized.header("content-length") == [str(len(sized.body))]


def test_http10_keep_alive_keeps_the_connection(upstream: Replica) -> None:
    with proxied("front", [upstream.url]) as (_, port), Client(port) as client:
        client.send(b"GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        first = client.response()
        client.send(b"GET /b HTTP/1.0\r\n\r\n")
        second = client.response()
        assert client.closed()  # the second did not ask to keep it
    assert first.header("connection") == ["keep-alive"]
    assert first.header("content-length") == [str(len(first.body))]
    assert second.status == 200
    assert paths(upstream) == ["/a", "/b"]


@pytest.mark.parametrize("front", UVICORNS)
def test_uvicorn_with_http10_clients(front: str, upstream: Replica) -> None:
    with proxied(front, [upstream.url]) as (_, port):
        streamed, _ = exchange(port, b"GET /stream?chunks=3 HTTP/1.0\r\n\r\n")
        kept, closed_kept = exchange(port, b"GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    assert streamed.body == b"chunk\nchunk\nend\n"
    # uvicorn-httptools frames a response to an HTTP/1.0 client as chunked, which
    # HTTP/1.0 does not know; uvicorn-h11 delimits it by the close.
    chunked = ["chunked"] if front == "uvicorn-httptools" else []
    assert streamed.header("transfer-encoding") == chunked
    assert kept.status == 200
    assert closed_kept  # neither keeps an HTTP/1.0 connection alive


@pytest.mark.parametrize("front", FRONTS)
def test_a_client_gone_mid_download_frees_its_slot(front: str) -> None:
    with Served(Special()) as up, proxied(front, [up.url], Limits()) as (app, port):
        with Client(port) as client:
            client.send(request("/download?mib=64", HOST))
            assert len(client.raw(256 * 1024)) >= 256 * 1024
            assert in_flight(app.pool) == 1
        # closed with 60-odd MiB unread: the kernel resets the connection
        wait_for(lambda: in_flight(app.pool) == 0)
        response, _ = exchange(port, request("/download?mib=1", HOST, "Connection: close"))
    assert response.status == 200
    assert response.body == b"x" * (1 << 20)


# -- 14: WebSockets through the front end's tunnel ---------------------------------------


class WrongAccept(Dying):
    """A raw TCP upstream answering every upgrade with a 101 whose
    ``Sec-WebSocket-Accept`` answers no key, then closing."""

    def _respond(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError):
            conn.sendall(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\n"
                b"Sec-WebSocket-Accept: AAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\n\r\n"
            )

    def __enter__(self) -> WrongAccept:
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the accept()
        self.close()


def ws_url(port: int) -> str:
    return f"ws://127.0.0.1:{port}/chat"


def test_websocket_messages_subprotocol_and_compression_pass_end_to_end() -> None:
    echo = EchoUpstream("a")
    with Served(echo) as up, proxied("front", [up.url], Limits()) as (_, port):

        async def talk() -> dict[str, Any]:
            async with connect(ws_url(port), subprotocols=[Subprotocol("chat.v2")]) as ws:
                hello = await ws.recv()
                await ws.send("text")
                text = await ws.recv()
                await ws.send(b"\x00" * 100_000)
                binary = await ws.recv()
                return {
                    "hello": hello,
                    "echoes": (text, binary),
                    "subprotocol": ws.subprotocol,
                    "extensions": [e.name for e in ws.protocol.extensions],
                }

        got = asyncio.run(talk())
        assert echo.closed.wait(5)
    assert got["hello"] == "hello from a /chat"
    assert got["echoes"] == ("text", b"\x00" * 100_000)
    assert got["subprotocol"] == "chat.v2"
    assert got["extensions"] == ["permessage-deflate"]  # agreed with the upstream itself:
    offers = [v for k, v in echo.headers if k == b"sec-websocket-extensions"]
    assert len(offers) == 1 and offers[0].startswith(b"permessage-deflate")  # the client's offer
    assert echo.closed_with == [1000]


def test_a_websocket_tunnel_outlives_a_quiet_spell() -> None:
    """Nothing that watches for a client's disconnect may mistake a tunnel for one
    (ProxyApp's watcher, started after 50 ms, used to end every tunnel)."""
    with Served(EchoUpstream("a")) as up, proxied("front", [up.url], Limits()) as (_, port):

        async def talk() -> Any:
            async with connect(ws_url(port), ping_interval=None) as ws:
                await ws.recv()
                with pytest.raises(TimeoutError):  # 0.3 s without a message either way
                    await asyncio.wait_for(ws.recv(), 0.3)
                await ws.send("still there?")
                return await ws.recv()

        assert asyncio.run(talk()) == "still there?"


def test_a_101_with_a_wrong_accept_is_a_bad_upstream_and_another_is_tried() -> None:
    echo = EchoUpstream("good")
    with (
        WrongAccept() as bad,
        Served(echo) as good,
        proxied("front", [bad.url, good.url], Limits()) as (_, port),
    ):

        async def greetings() -> list[Any]:
            out = []
            for _ in range(2):  # round robin: one of the two starts at the bad one
                async with connect(ws_url(port)) as ws:
                    out.append(await ws.recv())
            return out

        assert asyncio.run(greetings()) == ["hello from good /chat"] * 2
    assert bad.accepted >= 1


def test_a_101_with_a_wrong_accept_alone_is_502() -> None:
    with WrongAccept() as bad, proxied("front", [bad.url], Limits()) as (_, port):

        async def attempt() -> int:
            with pytest.raises(InvalidStatus) as info:
                async with connect(ws_url(port)):
                    pass
            return info.value.response.status_code

        assert asyncio.run(attempt()) == 502
    assert bad.accepted >= 1


def test_a_client_gone_while_its_body_waits_for_the_upstream_is_let_go() -> None:
    """The upstream reads nothing, so the proxy stops reading the client's body;
    the client then leaves. The front end notices although it is not reading,
    and the upstream exchange ends (in-flight back to 0) within a couple of
    seconds, not at the 60 s write timeout."""
    stalled = socket.socket()
    stalled.bind(("127.0.0.1", 0))
    stalled.listen(4)
    upstream = f"http://127.0.0.1:{stalled.getsockname()[1]}"
    try:
        with proxied("front", [upstream], Limits()) as (app, port):
            client = socket.create_connection(("127.0.0.1", port))
            client.setblocking(False)
            size = 64 << 20
            client.send(request("/upload", HOST, f"Content-Length: {size}", method="POST"))
            sent, deadline = 0, time.monotonic() + 5
            while time.monotonic() < deadline:  # until both sides' buffers are full
                try:
                    sent += client.send(b"u" * 65536)
                except BlockingIOError:
                    if not select.select([], [client], [], 0.3)[1]:
                        break
            assert in_flight(app.pool) == 1 and sent < size
            # Gone abruptly (a FIN would wait behind the unread bytes, where TCP
            # lets nobody see it before they are read).
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            client.close()
            started = time.monotonic()
            wait_for(lambda: in_flight(app.pool) == 0, timeout=3.0)
            assert time.monotonic() - started < 3.0
    finally:
        stalled.close()
