"""Parsing one message head (the start line and the header lines).

A head is parsed only when complete (the reader finds its end and checks the
limits while it grows), with one regular expression validating every header line
at once: a field name is a token directly followed by the colon (RFC 9112 5.1:
no whitespace before it); a value has no control character but HTAB; a line
starting with whitespace (obs-fold) is not a header line, and CR or LF alone
ends nothing. Names are lower-cased, values keep their bytes minus the optional
whitespace around them.

The same expressions make the rule on bare CR and LF hold without a pass of its
own: neither can match a start line or a header line, so the look for them runs
only to name what failed.

Most lines have been seen before: a server sends the same status line and its
own headers on every response, a client the same Host, Accept and User-Agent on
every request (the observation HTTP/2's header compression is built on), and
the request lines of a service's busiest endpoints recur too. So each line is
parsed once and remembered, bytes for bytes, and a head whose lines are all
known costs a split and a lookup per line. The memory is bounded (short lines
only, emptied when full), so lines that never repeat cost one insertion each.
It outlives the message, so what may carry a credential is never kept: the
Authorization, Proxy-Authorization, Cookie and Set-Cookie lines, and a request
line with a query (a token or a signature in a URL).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import NoReturn, TypeVar

from ._errors import ProtocolError

Headers = list[tuple[bytes, bytes]]

#: Headers that decide a message's framing (kept aside while parsing, so that
#: ``clientlb._http1._framing`` looks at these only).
FRAMING_NAMES = frozenset({b"content-length", b"transfer-encoding", b"connection"})

_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_HEADER_BLOCK = re.compile(rb"(?:" + _TOKEN + rb":[^\x00-\x08\x0a-\x1f\x7f]*\r\n)*")
_FIELD_LINE = re.compile(_TOKEN + rb":[^\x00-\x08\x0a-\x1f\x7f]*")
_REQUEST_LINE = re.compile(rb"(" + _TOKEN + rb") ([^\x00-\x20\x7f]+) HTTP/([0-9])\.([0-9])")
_STATUS_LINE = re.compile(rb"HTTP/([0-9])\.([0-9]) ([0-9]{3})(?: ([^\x00-\x08\x0a-\x1f\x7f]*))?")
_OWS = b" \t"

#: Lines parsed before (see the module doc): header, status and request lines.
_KNOWN_FIELDS: dict[bytes, tuple[bytes, bytes]] = {}
_KNOWN_STATUS: dict[bytes, tuple[int, bytes, bool]] = {}
_KNOWN_REQUESTS: dict[bytes, tuple[bytes, bytes, bool]] = {}
KNOWN_LINES_MAX = 512  # entries in each, emptied when full
KNOWN_LINE_SIZE = 256  # longer lines are parsed every time
_NEVER_KEPT = frozenset({b"authorization", b"proxy-authorization", b"cookie", b"set-cookie"})

T = TypeVar("T")


def _remember(known: dict[bytes, T], line: bytes, parsed: T) -> None:
    if len(line) <= KNOWN_LINE_SIZE:
        if len(known) >= KNOWN_LINES_MAX:
            known.clear()
        known[line] = parsed


def _start_line(
    head: bytes, known: dict[bytes, T], parse: Callable[[bytes, int], T]
) -> tuple[T, int]:
    """The start line of ``head`` parsed (from ``known``, else by ``parse``, which
    raises for a bad one), and the index of the CRLF that ends it."""
    first = head.find(b"\r\n")
    line = head[:first]
    parsed = known.get(line) if first >= 0 else None
    if parsed is None:
        parsed = parse(head, first)
        if first >= 0 and b"?" not in line:  # a query may hold a credential
            _remember(known, line, parsed)
    return parsed, first


# The heads write their own __init__: compiled, the one dataclass would write
# runs as Python, once per message.


@dataclass(slots=True, init=False)
class RequestHead:
    """A request's start line and headers, as received (names lower-cased);
    ``framing`` holds those among them named in ``FRAMING_NAMES``."""

    method: bytes
    target: bytes
    http11: bool
    headers: Headers
    framing: Headers

    def __init__(
        self, method: bytes, target: bytes, http11: bool, headers: Headers, framing: Headers
    ) -> None:
        self.method = method
        self.target = target
        self.http11 = http11
        self.headers = headers
        self.framing = framing


@dataclass(slots=True, init=False)
class ResponseHead:
    """A response's status line and headers, as received (names lower-cased);
    ``framing`` as for ``RequestHead``."""

    status: int
    reason: bytes
    http11: bool
    headers: Headers
    framing: Headers

    def __init__(
        self, status: int, reason: bytes, http11: bool, headers: Headers, framing: Headers
    ) -> None:
        self.status = status
        self.reason = reason
        self.http11 = http11
        self.headers = headers
        self.framing = framing


def _headers(head: bytes, start: int, line_limit: int) -> tuple[Headers, Headers]:
    """The header lines of ``head`` from ``start``, each ending in CRLF, and
    those of them that decide the framing."""
    headers: Headers = []
    framing: Headers = []
    if len(head) == start:
        return headers, framing
    if not head.endswith(b"\r\n"):
        _refuse_headers(head, start)
    lines = head[start:-2].split(b"\r\n")
    known = _KNOWN_FIELDS
    for line in lines:
        field = known.get(line)
        if field is None:
            if _FIELD_LINE.fullmatch(line) is None:
                _refuse_headers(head, start)
            name, _, value = line.partition(b":")
            field = (name.lower(), value.strip(_OWS))
            if field[0] not in _NEVER_KEPT:
                _remember(known, line, field)
        headers.append(field)
        if field[0] in FRAMING_NAMES:
            framing.append(field)
    if len(head) - start > line_limit:  # else no line can be too long
        for line in lines:
            if len(line) > line_limit:
                raise ProtocolError("a header line is too long", 431)
    return headers, framing


def _refuse_headers(head: bytes, start: int) -> NoReturn:
    """Raise the error that names the first invalid header line from ``start``."""
    end = _HEADER_BLOCK.match(head, start).end()  # type: ignore[union-attr]  # matches empty
    _check_line_ends(head, len(head))
    bad = head[end:].split(b"\r\n", 1)[0]
    if bad[:1] in (b" ", b"\t"):
        raise ProtocolError("obsolete line folding in a header")
    raise ProtocolError(f"invalid header line {bytes(bad[:64])!r}")


def _check_line_ends(head: bytes, lines_end: int) -> None:
    # Every CR and LF must belong to a CRLF pair.
    pairs = head.count(b"\r\n", 0, lines_end)
    if head.count(b"\r", 0, lines_end) != pairs or head.count(b"\n", 0, lines_end) != pairs:
        raise ProtocolError("bare CR or LF in the head")


def parse_request_head(head: bytes, line_limit: int = 8192) -> RequestHead:
    """Parse a request head: the request line and header lines, each ending in
    CRLF, without the empty line that ends the head."""
    (method, target, http11), first = _start_line(head, _KNOWN_REQUESTS, _request_line)
    headers, framing = _headers(head, first + 2, line_limit)
    return RequestHead(method, target, http11, headers, framing)


def _request_line(head: bytes, first: int) -> tuple[bytes, bytes, bool]:
    """The method, target and HTTP/1.1-ness of the request line ending at ``first``."""
    match = _REQUEST_LINE.fullmatch(head, 0, first)
    if match is None:
        _check_line_ends(head, len(head))
        raise ProtocolError("invalid request line")
    method, target, major, minor = match.groups()
    if major != b"1" or minor not in (b"0", b"1"):
        raise ProtocolError(f"HTTP/{major.decode()}.{minor.decode()} is not supported", 505)
    return method, target, minor == b"1"


def parse_response_head(head: bytes, line_limit: int = 65536) -> ResponseHead:
    """Parse a response head (as ``parse_request_head``). A status outside
    100-599 is refused."""
    (status, reason, http11), first = _start_line(head, _KNOWN_STATUS, _status_line)
    headers, framing = _headers(head, first + 2, line_limit)
    return ResponseHead(status, reason, http11, headers, framing)


def _status_line(head: bytes, first: int) -> tuple[int, bytes, bool]:
    """The status, reason and HTTP/1.1-ness of the status line ending at ``first``."""
    match = _STATUS_LINE.fullmatch(head, 0, first)
    if match is None:
        _check_line_ends(head, len(head))
        raise ProtocolError(f"invalid status line {bytes(head[: min(first, 64)])!r}")
    major, minor, code, reason = match.groups()
    if major != b"1":
        raise ProtocolError(f"HTTP/{major.decode()}.{minor.decode()} is not supported")
    status = int(code)
    if not 100 <= status <= 599:
        raise ProtocolError(f"status {status} is outside 100-599")
    return status, reason or b"", minor != b"0"
