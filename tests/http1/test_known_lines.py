"""Lines seen before are parsed from memory: the same result, the same refusals,
the same limits, and a bounded memory."""

from __future__ import annotations

import pytest

from clientlb._http1 import (
    ProtocolError,
    RequestReader,
    _head,
    parse_request_head,
    parse_response_head,
)
from clientlb._http1._limits import HeadLimits

RESPONSE = (
    b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Type: text/plain\r\n"
    b"Content-Length:  13 \r\nConnection: keep-alive\r\n"
)


@pytest.fixture(autouse=True)
def forget() -> None:
    _head._KNOWN_FIELDS.clear()
    _head._KNOWN_STATUS.clear()
    _head._KNOWN_REQUESTS.clear()


def test_a_head_parsed_again_is_the_same_and_its_own() -> None:
    first = parse_response_head(RESPONSE)
    assert b"Server: nginx" in _head._KNOWN_FIELDS
    assert b"HTTP/1.1 200 OK" in _head._KNOWN_STATUS
    first.headers.append((b"x-added", b"by a caller"))
    first.framing.clear()
    again = parse_response_head(RESPONSE)
    assert again.status == 200 and again.reason == b"OK" and again.http11
    assert again.headers == [
        (b"server", b"nginx"),
        (b"content-type", b"text/plain"),
        (b"content-length", b"13"),
        (b"connection", b"keep-alive"),
    ]
    assert again.framing == [(b"content-length", b"13"), (b"connection", b"keep-alive")]


def test_a_known_line_hides_no_bad_one_beside_it() -> None:
    parse_request_head(b"GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n")
    cases = {
        b"GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n continued\r\n": "obsolete line folding",
        b"GET / HTTP/1.1\r\nHost: a\r\nHost : a\r\n": "invalid header line b'Host : a'",
        b"GET / HTTP/1.1\r\nHost: a\nX: 1\r\n": "bare CR or LF",
        b"GET / HTTP/1.1\r\nHost: a\rX: 1\r\n": "bare CR or LF",
        b"GET / HTTP/1.1\r\nHost: a\r\n\r\nX: 1\r\n": "invalid header line b''",
        b"GET / HTTP/1.1\r\nHost: a\r\nX: 1": "invalid header line b'X: 1'",  # cut short
        b"GET / HTTP/1.1\r\nHost: a\r\nX: 1\r": "bare CR or LF",
    }
    for head, error in cases.items():
        with pytest.raises(ProtocolError, match=error):
            parse_request_head(head)
    assert set(_head._KNOWN_FIELDS) == {b"Host: a", b"X: 1"}


def test_a_known_status_line_needs_its_line_end() -> None:
    parse_response_head(b"HTTP/1.1 200 OK\r\n")
    with pytest.raises(ProtocolError, match="invalid status line"):
        parse_response_head(b"HTTP/1.1 200 OK")
    with pytest.raises(ProtocolError, match="outside 100-599"):
        parse_response_head(b"HTTP/1.1 600 OK\r\n")
    assert set(_head._KNOWN_STATUS) == {b"HTTP/1.1 200 OK"}


def test_a_known_request_line_is_the_same_and_refusals_are_not_kept() -> None:
    head = parse_request_head(b"GET /a/b HTTP/1.0\r\n")
    again = parse_request_head(b"GET /a/b HTTP/1.0\r\nHost: x\r\n")
    assert (again.method, again.target, again.http11) == (b"GET", b"/a/b", False)
    assert (head.method, head.target, head.http11, head.headers) == (b"GET", b"/a/b", False, [])
    for bad, error in [
        (b"GET / HTTP/2.0\r\n", "HTTP/2.0 is not supported"),
        (b"GET  / HTTP/1.1\r\n", "invalid request line"),
        (b"GET /a/b HTTP/1.0", "invalid request line"),  # known, but no line end
        (b"GET /a/b HTTP/1.0\rX\r\n", "bare CR or LF"),
    ]:
        with pytest.raises(ProtocolError, match=error):
            parse_request_head(bad)
    assert set(_head._KNOWN_REQUESTS) == {b"GET /a/b HTTP/1.0"}


def test_what_may_carry_a_credential_is_never_kept() -> None:
    request = (
        b"GET /files?sig=s3cr3t HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer t0ken\r\n"
        b"proxy-authorization: Basic eA==\r\nCookie: session=abc\r\n"
    )
    for _ in range(2):
        head = parse_request_head(request)
        assert head.target == b"/files?sig=s3cr3t"
        assert head.headers[1:] == [
            (b"authorization", b"Bearer t0ken"),
            (b"proxy-authorization", b"Basic eA=="),
            (b"cookie", b"session=abc"),
        ]
    response = parse_response_head(b"HTTP/1.1 200 OK\r\nSet-Cookie: session=abc\r\n")
    assert response.headers == [(b"set-cookie", b"session=abc")]
    assert set(_head._KNOWN_FIELDS) == {b"Host: a"}
    assert not _head._KNOWN_REQUESTS


def test_each_reader_holds_known_lines_to_its_own_limit() -> None:
    line = b"X-Long: " + b"v" * 40
    parse_response_head(b"HTTP/1.1 200 OK\r\n" + line + b"\r\n")  # known now
    assert line in _head._KNOWN_FIELDS
    reader = RequestReader(HeadLimits(header_line=32))
    with pytest.raises(ProtocolError) as info:
        reader.feed(b"GET / HTTP/1.1\r\nHost: a\r\n" + line + b"\r\n\r\n")
    assert info.value.status == 431


def test_the_memory_is_bounded() -> None:
    for i in range(_head.KNOWN_LINES_MAX * 2 + 7):
        parse_response_head(b"HTTP/1.1 200 R%d\r\nX-Id: %d\r\n" % (i, i))
        parse_request_head(b"GET /%d HTTP/1.1\r\n" % i)
        assert len(_head._KNOWN_FIELDS) <= _head.KNOWN_LINES_MAX
        assert len(_head._KNOWN_STATUS) <= _head.KNOWN_LINES_MAX
        assert len(_head._KNOWN_REQUESTS) <= _head.KNOWN_LINES_MAX
    long_request = b"GET /" + b"p" * _head.KNOWN_LINE_SIZE + b" HTTP/1.1"
    assert parse_request_head(long_request + b"\r\n").target == long_request[4:-9]
    assert long_request not in _head._KNOWN_REQUESTS
    long_line = b"X-Big: " + b"b" * _head.KNOWN_LINE_SIZE
    long_status = b"HTTP/1.1 200 " + b"r" * _head.KNOWN_LINE_SIZE
    head = parse_response_head(long_status + b"\r\n" + long_line + b"\r\n")
    assert head.headers == [(b"x-big", long_line[7:])]
    assert long_line not in _head._KNOWN_FIELDS and long_status not in _head._KNOWN_STATUS
