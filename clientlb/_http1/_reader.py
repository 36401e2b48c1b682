"""Readers for the two sides of a connection: requests as a server reads them,
responses as a client reads them. Each is a small state machine fed bytes.

``RequestReader`` (a client connection, read by the proxy's front end)::

    HEAD --head--> BODY --body done--> DONE --next()--> HEAD ...

Bytes past the current request (pipelining) wait in ``pending``, bounded by the
caller (who stops reading), until the response is over and ``next()`` starts
the following head.

``ResponseReader`` (an upstream connection, read by an engine)::

    IDLE --start()--> HEAD --head--> BODY --body done--> DONE --start()--> HEAD ...

A byte that arrives while no response is awaited (IDLE), or past a response's
framing, *taints* the connection: it is not given to anyone, and the caller must
close the connection rather than reuse it.
"""

from __future__ import annotations

import re

from ._body import BodyDecoder, Fixed, decoder
from ._errors import ProtocolError
from ._framing import NO_BODY, Framing, request_framing, response_framing
from ._head import RequestHead, ResponseHead, parse_request_head, parse_response_head
from ._limits import HeadLimits

_IDLE, _HEAD, _BODY, _DONE = range(4)
#: The start of a request line: a method token, then a target, then a version.
_PARTIAL_REQUEST_LINE = re.compile(
    rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]*(?: [^\x00-\x20\x7f]*(?: [HTP/0-9.]*)?)?"
)
#: Interim (1xx) responses accepted before the final one.
MAX_INTERIM = 8
#: Bytes of an upstream's response head, as nginx's "upstream sent too big header".
MAX_RESPONSE_HEAD = 64 * 1024


def _find_end(buf: bytes, searched: int) -> int:
    """Index of the CRLF CRLF that ends a head in ``buf``, or -1 (``searched``
    bytes were already looked at)."""
    return buf.find(b"\r\n\r\n", max(0, searched - 3))


class RequestReader:
    """Reads the requests a client sends on one connection, within ``limits``."""

    __slots__ = (
        "_body",
        "_buf",
        "_state",
        "framing",
        "head",
        "keep_alive",
        "limits",
        "pending",
        "received",
    )

    def __init__(self, limits: HeadLimits | None = None) -> None:
        self.limits = limits or HeadLimits()
        self._state = _HEAD
        self._buf = b""
        self._body: BodyDecoder = Fixed(0)
        self.head: RequestHead | None = None
        self.framing: Framing | None = None
        self.keep_alive = True
        self.pending = b""
        self.received = 0  # bytes of the current head seen so far

    @property
    def body_done(self) -> bool:
        return self._state == _DONE

    @property
    def idle(self) -> bool:
        """No byte of a next request has arrived."""
        return self._state == _HEAD and not self._buf

    def feed(self, data: bytes) -> tuple[RequestHead | None, bytes]:
        """Take received bytes: the head when it completes with this call, and the
        body bytes found. Raises ``ProtocolError`` with the status to answer."""
        state = self._state
        if state == _BODY:
            body, rest = self._body.feed(data)
            if self._body.done:
                self._state = _DONE
                self.pending = rest
            return None, body
        if state == _DONE:
            self.pending += data
            return None, b""
        return self._feed_head(data)

    def _feed_head(self, data: bytes) -> tuple[RequestHead | None, bytes]:
        searched = len(self._buf)
        if searched:
            buf = self._buf + data
            end = _find_end(buf, searched)
        else:
            buf = data
            end = buf.find(b"\r\n\r\n")
        self.received = len(buf)
        limits = self.limits
        if end < 0:
            self._buf = buf
            self._check_partial(buf)
            return None, b""
        if end + 4 > limits.head:
            raise ProtocolError("the request head is too large", 431)
        line_end = buf.find(b"\r\n")
        if line_end > limits.request_line:
            raise ProtocolError("the request line is too long", 414)
        head = parse_request_head(buf[: end + 2], limits.header_line)
        framing, keep_alive = request_framing(head.http11, head.framing)
        self.head, self.framing, self.keep_alive = head, framing, keep_alive
        self._buf = b""
        rest = buf[end + 4 :]
        if framing is NO_BODY:  # the common request: no decoder needed
            self._state = _DONE
            self.pending = rest
            return head, b""
        self._body = decoder(framing)
        if self._body.done:
            self._state = _DONE
            self.pending = rest
            return head, b""
        self._state = _BODY
        body = b""
        if rest:
            body, rest = self._body.feed(rest)
            if self._body.done:
                self._state = _DONE
                self.pending = rest
        return head, body

    def _check_partial(self, buf: bytes) -> None:
        """Refuse an unfinished head as soon as it breaks a rule or a limit."""
        limits = self.limits
        if len(buf) > limits.head:
            raise ProtocolError("the request head is too large", 431)
        if buf.count(b"\n") != buf.count(b"\r\n"):
            raise ProtocolError("bare LF in the head")
        pending = len(buf) - (buf[-1:] == b"\r")  # a CR may be the start of a CRLF
        first = buf.find(b"\r\n")
        if first < 0:
            if pending > limits.request_line:
                raise ProtocolError("the request line is too long", 414)
            if _PARTIAL_REQUEST_LINE.fullmatch(buf, 0, pending) is None:
                raise ProtocolError("invalid request line")
        elif pending - buf.rfind(b"\n") - 1 > limits.header_line:
            raise ProtocolError("a header line is too long", 431)

    def eof(self) -> None:
        """The client closed its side; raises if a body was cut short."""
        if self._state == _BODY:
            self._body.eof()

    def next(self) -> tuple[RequestHead | None, bytes]:
        """Start reading the next request (after the response to this one) from
        the bytes that already arrived."""
        pending, self.pending = self.pending, b""
        self._state = _HEAD
        self._buf = b""
        self.head = self.framing = None
        self.received = 0
        if pending:
            return self._feed_head(pending)
        return None, b""


class ResponseReader:
    """Reads the responses to the requests sent on one upstream connection."""

    __slots__ = (
        "_body",
        "_buf",
        "_head_request",
        "_interim",
        "_state",
        "_upgrade",
        "framing",
        "head",
        "keep_alive",
        "max_head",
        "rest",
        "tainted",
    )

    def __init__(self, max_head: int = MAX_RESPONSE_HEAD) -> None:
        self.max_head = max_head
        self._state = _IDLE
        self._buf = b""
        self._body: BodyDecoder = Fixed(0)
        self._head_request = False
        self._upgrade = False
        self._interim = 0
        self.head: ResponseHead | None = None
        self.framing: Framing | None = None
        self.keep_alive = False
        self.tainted = False
        self.rest = b""  # after a 101: the first bytes of the new protocol

    def start(self, *, head_request: bool = False, upgrade: bool = False) -> None:
        """A request was sent: read its response next."""
        if self._state not in (_IDLE, _DONE) or self.tainted:
            raise RuntimeError("the connection is not ready for another request")
        self._state = _HEAD
        self._head_request = head_request
        self._upgrade = upgrade
        self._interim = 0
        self._buf = b""
        self.head = self.framing = None
        self.keep_alive = False

    @property
    def awaiting(self) -> bool:
        """A response was asked for and has not ended."""
        return self._state in (_HEAD, _BODY)

    @property
    def done(self) -> bool:
        """The response is complete (its body too)."""
        return self._state == _DONE

    @property
    def reusable(self) -> bool:
        """The connection may carry another request: the response ended exactly
        at its framing, the upstream allows it, and nothing else arrived."""
        return self._state == _DONE and self.keep_alive and not self.tainted

    def feed(self, data: bytes) -> bytes:
        """Take received bytes; returns the body bytes among them. ``head`` is set
        once the final response head has arrived; ``done`` once the body is
        complete. Raises ``ProtocolError`` for a malformed response."""
        state = self._state
        if state == _BODY:
            body, rest = self._body.feed(data)
            if self._body.done:
                self._finish(rest)
            return body
        if state == _HEAD:
            return self._feed_head(data)
        if data:  # nothing was asked for: these bytes belong to nobody
            self.tainted = True
        return b""

    def _feed_head(self, data: bytes) -> bytes:
        while True:
            searched = len(self._buf)
            if searched:
                buf = self._buf + data
                end = _find_end(buf, searched)
            else:
                buf = data
                end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > self.max_head:
                    raise ProtocolError("the upstream's response head is too large", 502)
                if buf.count(b"\n") != buf.count(b"\r\n"):
                    raise ProtocolError("bare LF in the response head", 502)
                self._buf = buf
                return b""
            if end + 4 > self.max_head:
                raise ProtocolError("the upstream's response head is too large", 502)
            try:
                head = parse_response_head(buf[: end + 2])
            except ProtocolError as exc:  # a gateway's failure, whatever the rule
                raise ProtocolError(str(exc), 502) from None
            rest = buf[end + 4 :]
            self._buf = b""
            status = head.status
            if status < 200 and not (status == 101 and self._upgrade):
                if status == 101:
                    raise ProtocolError("the upstream switched protocols unasked", 502)
                response_framing(status, head.http11, head.framing, head_request=True)
                self._interim += 1
                if self._interim > MAX_INTERIM:
                    raise ProtocolError("too many interim responses", 502)
                data = rest
                if not data:
                    return b""
                continue
            return self._final(head, rest)

    def _final(self, head: ResponseHead, rest: bytes) -> bytes:
        framing, keep_alive = response_framing(
            head.status,
            head.http11,
            head.framing,
            head_request=self._head_request or head.status == 101,
        )
        self.head, self.framing = head, framing
        if head.status == 101:
            self._state = _DONE
            self.rest = rest
            return b""
        self.keep_alive = keep_alive
        if framing.kind == "length" and len(rest) >= framing.length:
            # The whole body came with the head (the common small response).
            length = framing.length
            self._finish(rest[length:])
            return rest[:length] if len(rest) > length else rest
        self._body = decoder(framing)
        if self._body.done:
            self._finish(rest)
            return b""
        self._state = _BODY
        if not rest:
            return b""
        body, rest = self._body.feed(rest)
        if self._body.done:
            self._finish(rest)
        return body

    def _finish(self, rest: bytes) -> None:
        self._state = _DONE
        if rest:
            self.tainted = True

    def eof(self) -> None:
        """The upstream closed the connection: ends a body that runs until close;
        raises if the response was cut short."""
        if self._state == _BODY:
            self._body.eof()
            self._state = _DONE
        elif self._state == _HEAD:
            raise ProtocolError(
                "the upstream closed the connection mid-head"
                if self._buf
                else "the upstream closed the connection before responding",
                502,
            )
        self.keep_alive = False
