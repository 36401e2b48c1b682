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
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ._errors import ProtocolError

Headers = list[tuple[bytes, bytes]]

#: Headers that decide a message's framing (kept aside while parsing, so that
#: ``clientlb._http1._framing`` looks at these only).
FRAMING_NAMES = frozenset({b"content-length", b"transfer-encoding", b"connection"})

_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_HEADER_BLOCK = re.compile(rb"(?:" + _TOKEN + rb":[^\x00-\x08\x0a-\x1f\x7f]*\r\n)*")
_REQUEST_LINE = re.compile(rb"(" + _TOKEN + rb") ([^\x00-\x20\x7f]+) HTTP/([0-9])\.([0-9])")
_STATUS_LINE = re.compile(rb"HTTP/([0-9])\.([0-9]) ([0-9]{3})(?: ([^\x00-\x08\x0a-\x1f\x7f]*))?")
_OWS = b" \t"


@dataclass(slots=True)
class RequestHead:
    """A request's start line and headers, as received (names lower-cased);
    ``framing`` holds those among them named in ``FRAMING_NAMES``."""

    method: bytes
    target: bytes
    http11: bool
    headers: Headers
    framing: Headers


@dataclass(slots=True)
class ResponseHead:
    """A response's status line and headers, as received (names lower-cased);
    ``framing`` as for ``RequestHead``."""

    status: int
    reason: bytes
    http11: bool
    headers: Headers
    framing: Headers


def _headers(head: bytes, start: int, line_limit: int) -> tuple[Headers, Headers]:
    """The header lines of ``head`` from ``start``, each ending in CRLF, and
    those of them that decide the framing."""
    end = _HEADER_BLOCK.match(head, start).end()  # type: ignore[union-attr]  # matches empty
    if end != len(head):
        _check_line_ends(head, len(head))
        bad = head[end:].split(b"\r\n", 1)[0]
        if bad[:1] in (b" ", b"\t"):
            raise ProtocolError("obsolete line folding in a header")
        raise ProtocolError(f"invalid header line {bytes(bad[:64])!r}")
    headers: Headers = []
    framing: Headers = []
    if end == start:
        return headers, framing
    lines = head[start:-2].split(b"\r\n")
    if end - start > line_limit:  # else no line can be too long
        for line in lines:
            if len(line) > line_limit:
                raise ProtocolError("a header line is too long", 431)
    append = headers.append
    for line in lines:
        name, _, value = line.partition(b":")
        field = (name.lower(), value.strip(_OWS))
        append(field)
        if field[0] in FRAMING_NAMES:
            framing.append(field)
    return headers, framing


def _check_line_ends(head: bytes, lines_end: int) -> None:
    # Every CR and LF must belong to a CRLF pair.
    pairs = head.count(b"\r\n", 0, lines_end)
    if head.count(b"\r", 0, lines_end) != pairs or head.count(b"\n", 0, lines_end) != pairs:
        raise ProtocolError("bare CR or LF in the head")


def parse_request_head(head: bytes, line_limit: int = 8192) -> RequestHead:
    """Parse a request head: the request line and header lines, each ending in
    CRLF, without the empty line that ends the head."""
    first = head.find(b"\r\n")
    match = _REQUEST_LINE.fullmatch(head, 0, first)
    if match is None:
        _check_line_ends(head, len(head))
        raise ProtocolError("invalid request line")
    method, target, major, minor = match.groups()
    if major != b"1" or minor not in (b"0", b"1"):
        raise ProtocolError(f"HTTP/{major.decode()}.{minor.decode()} is not supported", 505)
    return RequestHead(method, target, minor == b"1", *_headers(head, first + 2, line_limit))


def parse_response_head(head: bytes, line_limit: int = 65536) -> ResponseHead:
    """Parse a response head (as ``parse_request_head``). A status outside
    100-599 is refused."""
    first = head.find(b"\r\n")
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
    return ResponseHead(
        status, reason or b"", minor != b"0", *_headers(head, first + 2, line_limit)
    )
