"""The WebSocket opening handshake as a forwarding hop checks it, sans-IO.

``clientlb proxy`` relays a WebSocket as nginx and HAProxy do: it forwards the
upgrade request, and once the upstream answers 101 it relays bytes both ways,
leaving the frames (and compression, and pings) to the two ends. Before any byte
is relayed, the 101 must prove that the upstream speaks WebSocket to *this*
request (RFC 6455 4.1): ``Upgrade: websocket``, ``Connection: upgrade``, the
``Sec-WebSocket-Accept`` computed from this request's key, and a subprotocol and
extensions among those the client offered. An upstream that fails this is a bad
upstream (502, and another one is tried), never a relay of garbage.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterable

from .._http1 import ProtocolError

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
Headers = Iterable[tuple[bytes, bytes]]


def _tokens(headers: Headers, name: bytes) -> list[bytes]:
    return [
        token.strip().lower()
        for n, v in headers
        if n.lower() == name
        for token in v.split(b",")
        if token.strip()
    ]


def _values(headers: Headers, name: bytes) -> list[bytes]:
    return [v.strip() for n, v in headers if n.lower() == name]


def wants_websocket(method: str, headers: Headers) -> bool:
    """Whether a request asks to switch to WebSocket."""
    if method != "GET":
        return False
    headers = list(headers)
    if not any(n.lower() == b"upgrade" for n, _ in headers):  # the usual: no token lists
        return False
    upgrade = _tokens(headers, b"upgrade")
    return b"websocket" in upgrade and b"upgrade" in _tokens(headers, b"connection")


def accept_key(key: bytes) -> bytes:
    """The ``Sec-WebSocket-Accept`` that answers ``key``."""
    return base64.b64encode(hashlib.sha1(key + _GUID).digest())


def check_request(headers: Headers) -> None:
    """A client's upgrade request must carry a valid key, version 13."""
    headers = list(headers)
    keys = _values(headers, b"sec-websocket-key")
    try:
        valid = len(keys) == 1 and len(base64.b64decode(keys[0], validate=True)) == 16
    except (binascii.Error, ValueError):
        valid = False
    if not valid:
        raise ProtocolError("invalid Sec-WebSocket-Key")
    if _values(headers, b"sec-websocket-version") != [b"13"]:
        raise ProtocolError("unsupported Sec-WebSocket-Version")


def check_response(request: Headers, response: Headers) -> None:
    """Raise ``ProtocolError`` unless ``response`` (a 101) accepts this request."""
    request, response = list(request), list(response)
    if _tokens(response, b"upgrade") != [b"websocket"]:
        raise ProtocolError("the 101 does not upgrade to websocket", 502)
    if b"upgrade" not in _tokens(response, b"connection"):
        raise ProtocolError("the 101 lacks Connection: upgrade", 502)
    key = _values(request, b"sec-websocket-key")[0]
    if _values(response, b"sec-websocket-accept") != [accept_key(key)]:
        raise ProtocolError("wrong Sec-WebSocket-Accept", 502)
    offered = set(_tokens(request, b"sec-websocket-protocol"))
    chosen = _tokens(response, b"sec-websocket-protocol")
    if len(chosen) > 1 or (chosen and chosen[0] not in offered):
        raise ProtocolError("a subprotocol the client did not offer", 502)
    names = {t.split(b";")[0].strip() for t in _tokens(request, b"sec-websocket-extensions")}
    for extension in _tokens(response, b"sec-websocket-extensions"):
        if extension.split(b";")[0].strip() not in names:
            raise ProtocolError("an extension the client did not offer", 502)
