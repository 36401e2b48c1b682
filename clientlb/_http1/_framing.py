"""Where a message's body ends: its framing, decided once from its head
(RFC 9112 section 6.3), and whether the connection may carry another exchange.

Requests: ``Transfer-Encoding`` must be exactly ``chunked`` (another coding is
501; ``chunked`` not last is 400), never beside ``Content-Length`` and never in
HTTP/1.0 (400: a smuggling attempt or a broken client, either way the
connection closes); ``Content-Length`` is one run of digits, once. No framing
header means no body.

Responses: ``Transfer-Encoding`` must be exactly ``chunked`` and alone (as nginx
demands of upstreams), ``Content-Length`` as for requests, even where no body
follows; there is no body for HEAD, 1xx, 204 and 304 whatever the headers say;
neither header means the body runs until the upstream closes the connection.
"""

from __future__ import annotations

from typing import NamedTuple

from ._errors import ProtocolError
from ._head import Headers


class Framing(NamedTuple):
    """How a body is delimited. ``kind`` is one of:

    * ``"none"``: there is no body (no framing header on a request; HEAD, 1xx,
      204 and 304 responses);
    * ``"length"``: exactly ``length`` bytes (possibly 0, announced);
    * ``"chunked"``: the chunked coding;
    * ``"close"``: a response body that ends when the connection does.
    """

    kind: str
    length: int = 0


_new_framing = tuple.__new__  # a NamedTuple's own __new__ is Python code, this is not
NO_BODY = Framing("none")
CHUNKED = Framing("chunked")
UNTIL_CLOSE = Framing("close")


def _framing_headers(headers: Headers) -> tuple[list[bytes], list[bytes], list[bytes]]:
    lengths: list[bytes] = []
    codings: list[bytes] = []
    connection: list[bytes] = []
    for name, value in headers:
        if name == b"content-length":
            lengths.append(value)
        elif name == b"transfer-encoding":
            codings += [c.strip(b" \t").lower() for c in value.split(b",")]
        elif name == b"connection":
            simple = _SIMPLE_CONNECTION.get(value)
            if simple is not None:
                connection.append(simple)
            else:
                connection += [c.strip(b" \t").lower() for c in value.split(b",")]
    return lengths, codings, connection


# Connection values as sent by nearly everyone, and their one token.
_SIMPLE_CONNECTION = {
    value: value.lower() for value in (b"keep-alive", b"Keep-Alive", b"close", b"Close")
}


def _length(lengths: list[bytes], status: int) -> int:
    if len(lengths) > 1:
        raise ProtocolError("more than one Content-Length", status)
    value = lengths[0]
    # isdigit() on bytes is ASCII digits only; 18 of them cannot overflow an int64.
    if not value.isdigit() or len(value) > 18:
        raise ProtocolError(f"invalid Content-Length {bytes(value[:32])!r}", status)
    return int(value)


def request_framing(http11: bool, headers: Headers) -> tuple[Framing, bool]:
    """The request body's framing, and whether the client lets the connection
    live after this exchange. Raises ``ProtocolError`` with the status to answer."""
    if not headers:  # the common request: no body, no Connection header
        return NO_BODY, http11
    lengths, codings, connection = _framing_headers(headers)
    keep_alive = b"close" not in connection if http11 else b"keep-alive" in connection
    if codings:
        if lengths:
            raise ProtocolError("Content-Length and Transfer-Encoding together")
        if not http11:
            raise ProtocolError("Transfer-Encoding in an HTTP/1.0 request")
        if codings[-1] != b"chunked":
            raise ProtocolError("the request's last transfer coding is not chunked")
        if len(codings) > 1:
            raise ProtocolError(
                f"transfer coding {b', '.join(codings[:-1]).decode('latin-1')!r} is not supported",
                501,
            )
        return CHUNKED, keep_alive
    if lengths:
        return _new_framing(Framing, ("length", _length(lengths, 400))), keep_alive
    return NO_BODY, keep_alive


def response_framing(
    status: int, http11: bool, headers: Headers, *, head_request: bool
) -> tuple[Framing, bool]:
    """A response body's framing, and whether the upstream lets the connection
    live after it. Raises ``ProtocolError`` (the response cannot be relayed).

    The framing headers are checked even where no body follows (HEAD, 1xx, 204,
    304): framing that contradicts itself marks an upstream that cannot be
    trusted with the next request either."""
    lengths, codings, connection = _framing_headers(headers)
    keep_alive = b"close" not in connection if http11 else b"keep-alive" in connection
    if codings:
        if lengths:
            raise ProtocolError("Content-Length and Transfer-Encoding together", 502)
        if codings != [b"chunked"] or not http11:
            raise ProtocolError(
                f"unsupported Transfer-Encoding {b', '.join(codings).decode('latin-1')!r}", 502
            )
    length = _length(lengths, 502) if lengths else None
    if head_request or status < 200 or status in (204, 304):
        return NO_BODY, keep_alive
    if codings:
        return CHUNKED, keep_alive
    if length is not None:
        return _new_framing(Framing, ("length", length)), keep_alive
    return UNTIL_CLOSE, False
