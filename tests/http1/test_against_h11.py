"""Random upstream byte streams read by ``ResponseReader`` and by h11: the reader
either agrees with h11's reading of the same bytes or refuses them, and it never
lets bytes past a response's end count as part of it or of a next one."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import h11
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from clientlb._http1 import ProtocolError, ResponseReader

STATUSES = [100, 103, 200, 201, 204, 299, 301, 304, 404, 500, 599, 600, 99, 1000]
VERSIONS = [b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1.1 ", b"http/1.1"]
NAMES = [b"X-A", b"Server", b"Set-Cookie", b"content-type", b"X A", b"X-A ", b""]
VALUES = [b"1", b"a b", b"", b" padded ", b"caf\xc3\xa9", b"a\x00b", b"a\rb", b"\tx"]


def chunked(body: bytes, sizes: list[int]) -> bytes:
    out, pos = b"", 0
    for size in sizes:
        if pos >= len(body):
            break
        part = body[pos : pos + size]
        out += b"%x\r\n%b\r\n" % (len(part), part)
        pos += size
    if pos < len(body):
        out += b"%x\r\n%b\r\n" % (len(body) - pos, body[pos:])
    return out + b"0\r\n\r\n"


@st.composite
def responses(draw: st.DrawFn) -> bytes:
    """One response, often valid, sometimes subtly not."""
    version = draw(st.sampled_from(VERSIONS))
    status = draw(st.sampled_from(STATUSES))
    line = version + b" %d" % status + draw(st.sampled_from([b" OK", b"", b" ", b" Very Odd"]))
    headers: list[bytes] = []
    body = draw(st.binary(max_size=40))
    framing = draw(st.sampled_from(["length", "chunked", "none", "both", "two-lengths", "bad"]))
    if framing in ("length", "both", "two-lengths"):
        length = len(body) + draw(st.sampled_from([0, 0, 0, -1, 1]))
        headers.append(b"Content-Length: %d" % max(length, 0))
        if framing == "two-lengths":
            headers.append(b"Content-Length: %d" % (max(length, 0) + 1))
    if framing in ("chunked", "both"):
        headers.append(b"Transfer-Encoding: chunked")
    if framing == "bad":
        headers.append(
            draw(
                st.sampled_from(
                    [
                        b"Content-Length: +5",
                        b"Content-Length: 0x5",
                        b"Transfer-Encoding: gzip, chunked",
                        b"Content-Length: 5, 5",
                    ]
                )
            )
        )
    for _ in range(draw(st.integers(0, 3))):
        headers.append(draw(st.sampled_from(NAMES)) + b": " + draw(st.sampled_from(VALUES)))
    if draw(st.booleans()):
        headers.append(draw(st.sampled_from([b"Connection: close", b"Connection: keep-alive"])))
    if draw(st.integers(0, 9)) == 0:
        headers.append(b" folded")
    payload = body
    if framing in ("chunked", "both"):
        sizes = draw(st.lists(st.integers(1, 10), max_size=4))
        payload = chunked(body, sizes)
        if draw(st.integers(0, 5)) == 0:
            payload = payload.replace(b"\r\n", b"\n", 1)
    eol = b"\n" if draw(st.integers(0, 19)) == 0 else b"\r\n"
    return line + eol + b"".join(h + eol for h in headers) + eol + payload


@dataclass
class Reading:
    status: int | None = None
    headers: list[tuple[bytes, bytes]] | None = None
    body: bytes = b""
    complete: bool = False
    leftover: bytes = b""
    refused: bool = False


def read_with_h11(method: bytes, data: bytes, close: bool) -> Reading:
    conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=64 * 1024)
    conn.send(h11.Request(method=method, target="/", headers=[("Host", "up")]))
    conn.send(h11.EndOfMessage())
    conn.receive_data(data)
    if close:
        conn.receive_data(b"")
    reading = Reading()
    try:
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA or event is h11.PAUSED:
                break
            if isinstance(event, h11.InformationalResponse):
                if event.status_code == 101:
                    reading.refused = True  # never asked for
                    break
                continue
            if isinstance(event, h11.Response):
                reading.status = event.status_code
                reading.headers = [(n.lower(), v) for n, v in event.headers.raw_items()]
            elif isinstance(event, h11.Data):
                reading.body += bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                reading.complete = True
                reading.leftover = conn.trailing_data[0]
                break
            elif isinstance(event, h11.ConnectionClosed):
                break
    except h11.RemoteProtocolError:
        reading.refused = True
    return reading


def read_with_reader(method: bytes, pieces: list[bytes], close: bool) -> tuple[Reading, bool]:
    reader = ResponseReader()
    reader.start(head_request=method == b"HEAD")
    reading = Reading()
    try:
        for piece in pieces:
            reading.body += reader.feed(piece)
        if close and reader.awaiting:
            reader.eof()
    except ProtocolError:
        reading.refused = True
        return reading, False
    if reader.head is not None:
        reading.status = reader.head.status
        reading.headers = reader.head.headers
    reading.complete = reader.done
    return reading, reader.reusable


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    edges = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges) if b > a] or [b""]


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    first=responses(),
    after=st.one_of(st.just(b""), responses(), st.binary(max_size=20)),
    method=st.sampled_from([b"GET", b"HEAD"]),
    cuts=st.lists(st.integers(0, 400), max_size=6),
    close=st.booleans(),
)
@example(
    first=b"HTTP/1.1 204 No Content\r\nContent-Length: 6\r\n\r\n",
    after=b"POISON",
    method=b"GET",
    cuts=[],
    close=False,
)
@example(
    first=b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n",
    after=b"0\r\n\r\n",
    method=b"GET",
    cuts=[5],
    close=False,
)
def test_the_reader_agrees_with_h11_or_refuses(
    first: bytes, after: bytes, method: bytes, cuts: list[int], close: bool
) -> None:
    data = first + after
    ours, reusable = read_with_reader(method, split(data, cuts), close)
    theirs = read_with_h11(method, data, close)
    if ours.refused or ours.status is None:  # refused, or still waiting for a head
        return
    assert not theirs.refused, (ours, theirs)
    assert ours.status == theirs.status
    assert ours.headers == theirs.headers
    if ours.complete:
        assert theirs.complete
        assert ours.body == theirs.body
        if reusable:  # nothing past the response: no byte can reach another exchange
            assert theirs.leftover == b""
    else:
        assert theirs.body.startswith(ours.body)


@given(data=st.binary(max_size=300), cuts=st.lists(st.integers(0, 300), max_size=5))
def test_any_bytes_on_an_idle_connection_taint_it(data: bytes, cuts: list[int]) -> None:
    reader = ResponseReader()
    for piece in split(data, cuts):
        assert reader.feed(piece) == b""
    assert reader.tainted == bool(data)
    assert not reader.reusable
