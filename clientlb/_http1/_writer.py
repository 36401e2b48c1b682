"""Serializing what the proxy sends: request and response heads, chunks."""

from __future__ import annotations

from ._errors import ProtocolError
from ._head import Headers

LAST_CHUNK = b"0\r\n\r\n"


def request_head(method: bytes, target: bytes, headers: Headers) -> bytes:
    """``METHOD target HTTP/1.1`` and the header lines, ending with the empty line."""
    parts = [method, b" ", target, b" HTTP/1.1\r\n"]
    for name, value in headers:
        parts += (name, b": ", value, b"\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)


def response_head(status_line: bytes, headers: Headers) -> bytes:
    """``status_line`` (``HTTP/1.1 200 OK``) and the header lines, ending with
    the empty line."""
    parts = [status_line, b"\r\n"]
    for name, value in headers:
        parts += (name, b": ", value, b"\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)


class BodyEncoder:
    """Frames a body being sent: chunked when ``length`` is ``None``, else exactly
    ``length`` bytes (``ProtocolError`` if the source gives more or fewer)."""

    __slots__ = ("left",)

    def __init__(self, length: int | None) -> None:
        self.left = length

    def encode(self, data: bytes) -> bytes:
        left = self.left
        if left is None:
            return b"%x\r\n%b\r\n" % (len(data), data)
        if len(data) > left:
            raise ProtocolError("the body is longer than its Content-Length")
        self.left = left - len(data)
        return data

    def end(self) -> bytes:
        if self.left is None:
            return LAST_CHUNK
        if self.left:
            raise ProtocolError("the body is shorter than its Content-Length")
        return b""
