"""The sans-IO readers and writers, byte by byte: heads, framing, limits, bodies."""

from __future__ import annotations

import pytest

from clientlb._http1 import (
    BodyEncoder,
    Chunked,
    HeadLimits,
    ProtocolError,
    RequestReader,
    ResponseReader,
)


def refused(data: bytes, limits: HeadLimits | None = None) -> int:
    with pytest.raises(ProtocolError) as info:
        RequestReader(limits).feed(data)
    return info.value.status


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (
            b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n",
            400,
        ),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 400),
        (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +1\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1, 1\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n continued\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a\x00b\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n", 400),
        (b"GET / HTTP/1.1\nHost: a\n\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n", 400),
        (b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        (b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505),
        (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 400),
    ],
)
def test_requests_that_break_the_rules_are_refused(data: bytes, status: int) -> None:
    assert refused(data) == status


def test_limits_are_checked_while_the_head_grows() -> None:
    limits = HeadLimits(request_line=64, header_line=32, head=128)
    reader = RequestReader(limits)
    with pytest.raises(ProtocolError) as info:
        reader.feed(b"GET /" + b"a" * 70)  # no line end yet: refused on size alone
    assert info.value.status == 414
    reader = RequestReader(limits)
    reader.feed(b"GET / HTTP/1.1\r\n")
    with pytest.raises(ProtocolError) as info:
        reader.feed(b"X: " + b"b" * 40)
    assert info.value.status == 431
    many = b"GET / HTTP/1.1\r\n" + b"X: 1234567890\r\n" * 12
    assert refused(many, limits) == 431  # no line too long, the head is
    assert refused(b"GET / HTTP/1.1\r\nX: " + b"c" * 40 + b"\r\n\r\n", limits) == 431


def test_a_request_body_and_the_pipelined_one_after_it() -> None:
    reader = RequestReader()
    head, body = reader.feed(b"POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhel")
    assert head is not None and head.method == b"POST" and body == b"hel"
    assert reader.feed(b"loGET /b HTTP/1.1\r\n") == (None, b"lo")
    assert reader.body_done and reader.pending == b"GET /b HTTP/1.1\r\n"
    assert reader.feed(b"Host: h\r\n\r\n") == (None, b"")  # waits for the response
    head, body = reader.next()
    assert head is not None and head.target == b"/b" and body == b""
    assert reader.body_done and reader.keep_alive


def test_a_chunked_request_body_is_decoded_and_bounded() -> None:
    reader = RequestReader()
    head, body = reader.feed(
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n"
    )
    assert head is not None and body == b"abc" and not reader.body_done
    assert reader.feed(b"2;ext=1\r\nde\r\n0\r\nX-T: 1\r\n\r\n") == (None, b"de")
    assert reader.body_done


@pytest.mark.parametrize(
    "data",
    [
        b"3\r\nabcX\r\n",  # no CRLF after the data
        b" 3\r\nabc\r\n",
        b"3 \r\nabc\r\n",
        b"g\r\n",
        b"3\nabc\r\n",
        b"1" * 17 + b"\r\n",
        b"1;" + b"e" * 5000 + b"\r\n",
        b"0\r\nX-T 1\r\n\r\n",
    ],
)
def test_bad_chunks_are_refused(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        Chunked().feed(data)


def test_chunked_split_at_every_byte() -> None:
    stream = b"5\r\nhello\r\n1;x=y\r\n \r\n0\r\nT: v\r\n\r\nNEXT"
    decoder = Chunked()
    out, rest = b"", b""
    for i in range(len(stream)):
        body, rest = decoder.feed(stream[i : i + 1])
        out += body
        if decoder.done:
            rest += stream[i + 1 :]
            break
    assert (out, rest) == (b"hello ", b"NEXT")


def test_response_framing_per_status_and_method() -> None:
    reader = ResponseReader()
    reader.start(head_request=True)
    reader.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n")
    assert reader.done and reader.reusable  # HEAD: no body whatever the length says
    reader.start()
    assert reader.feed(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n") == b""
    assert reader.head is None
    assert reader.feed(b"Transfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n") == b"ok"
    assert reader.head is not None and reader.head.status == 200 and reader.reusable
    reader.start()
    reader.feed(b"HTTP/1.1 200 OK\r\n\r\nuntil close")
    assert not reader.done
    reader.eof()
    assert reader.done and not reader.reusable


@pytest.mark.parametrize(
    "data",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"HTTP/1.1 600 Nope\r\n\r\n",
        b"HTTP/1.1 99 Nope\r\n\r\n",
        b"HTTP/1.1 101 Switching\r\n\r\n",  # not asked for
        b"HTTP/2.0 200 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\nX: 1\n\n",
        b"HTTP/1.1 200 OK\r\nX: " + b"x" * 70_000,
    ],
)
def test_responses_that_cannot_be_relayed_are_refused(data: bytes) -> None:
    reader = ResponseReader()
    reader.start()
    with pytest.raises(ProtocolError) as info:
        reader.feed(data)
    assert info.value.status == 502


def test_a_response_cut_short_is_an_error_not_an_ending() -> None:
    reader = ResponseReader()
    reader.start()
    assert reader.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort") == b"short"
    with pytest.raises(ProtocolError):
        reader.eof()
    reader = ResponseReader()
    reader.start()
    with pytest.raises(ProtocolError, match="before responding"):
        reader.eof()


def test_the_body_encoder_holds_the_sender_to_its_length() -> None:
    assert BodyEncoder(None).encode(b"abc") == b"3\r\nabc\r\n"
    assert BodyEncoder(None).end() == b"0\r\n\r\n"
    exact = BodyEncoder(3)
    assert exact.encode(b"ab") == b"ab"
    with pytest.raises(ProtocolError):
        exact.encode(b"cd")
    with pytest.raises(ProtocolError):
        BodyEncoder(2).end()
