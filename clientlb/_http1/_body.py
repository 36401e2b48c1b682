"""Body decoders: bytes in, body bytes out, and where the body ended.

``feed(data)`` returns the body bytes found in ``data`` and the bytes after the
body's end (empty until ``done``). What follows a body belongs to the next
message, or, on a connection that expects none, to nobody. ``eof()`` says the
peer closed the connection: the end of an ``UntilClose`` body, an error for the
others unless done.
"""

from __future__ import annotations

import re
from typing import Protocol

from ._errors import ProtocolError
from ._framing import Framing

_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,16})(?:;[^\x00-\x08\x0a-\x1f\x7f]*)?\r\n")
_TRAILER_LINE = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[^\x00-\x08\x0a-\x1f\x7f]*\r\n")
#: Bytes allowed in a chunk-size line (extensions included) and in all trailers.
MAX_CHUNK_LINE = 4096
MAX_TRAILERS = 16 * 1024


class BodyDecoder(Protocol):
    done: bool

    def feed(self, data: bytes) -> tuple[bytes, bytes]: ...

    def eof(self) -> None: ...


class Fixed:
    """A body of exactly ``length`` bytes."""

    __slots__ = ("done", "remaining")

    def __init__(self, length: int) -> None:
        self.remaining = length
        self.done = length == 0

    def feed(self, data: bytes) -> tuple[bytes, bytes]:
        remaining = self.remaining
        if len(data) < remaining:
            self.remaining = remaining - len(data)
            return data, b""
        self.remaining = 0
        self.done = True
        if len(data) == remaining:
            return data, b""
        return data[:remaining], data[remaining:]

    def eof(self) -> None:
        if not self.done:
            raise ProtocolError(f"connection closed {self.remaining} bytes before the body's end")


class UntilClose:
    """A response body that ends when the connection closes."""

    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done = False

    def feed(self, data: bytes) -> tuple[bytes, bytes]:
        return data, b""

    def eof(self) -> None:
        self.done = True


_SIZE, _DATA, _DATA_END, _TRAILER = range(4)


class Chunked:
    """The chunked transfer coding (RFC 9112 7.1), strictly: hex sizes with no
    whitespace, CRLF after every chunk, bounded size lines and trailers.
    Extensions and trailer fields are read and dropped."""

    __slots__ = ("_buf", "_state", "_trailers", "done", "remaining")

    def __init__(self) -> None:
        self._state = _SIZE
        self._buf = b""
        self._trailers = 0
        self.remaining = 0
        self.done = False

    def feed(self, data: bytes) -> tuple[bytes, bytes]:
        out: list[bytes] = []
        pos, end = 0, len(data)
        while pos < end and not self.done:
            state = self._state
            if state == _DATA:
                take = min(self.remaining, end - pos)
                out.append(data[pos : pos + take])
                pos += take
                self.remaining -= take
                if not self.remaining:
                    self._state = _DATA_END
                continue
            if state == _DATA_END:
                need = 2 - len(self._buf)
                self._buf += data[pos : pos + need]
                pos += need
                if len(self._buf) < 2:
                    break
                if self._buf != b"\r\n":
                    raise ProtocolError("a chunk's data is not followed by CRLF")
                self._buf = b""
                self._state = _SIZE
                continue
            # _SIZE or _TRAILER: a line, possibly split across reads
            newline = data.find(b"\n", pos)
            stop = end if newline < 0 else newline + 1
            line = self._buf + data[pos:stop] if self._buf else data[pos:stop]
            pos = stop
            limit = MAX_CHUNK_LINE if state == _SIZE else MAX_TRAILERS - self._trailers
            if len(line) > limit:
                raise ProtocolError("a chunk-size line or the trailers are too long")
            if newline < 0:
                self._buf = line
                break
            self._buf = b""
            if state == _SIZE:
                match = _CHUNK_SIZE.fullmatch(line)
                if match is None:
                    raise ProtocolError(f"invalid chunk-size line {line[:32]!r}")
                self.remaining = int(match[1], 16)
                self._state = _DATA if self.remaining else _TRAILER
            elif line == b"\r\n":
                self.done = True
            elif _TRAILER_LINE.fullmatch(line) is None:
                raise ProtocolError(f"invalid trailer line {line[:32]!r}")
            else:
                self._trailers += len(line)
        body = out[0] if len(out) == 1 else b"".join(out)
        return body, data[pos:] if self.done and pos < end else b""

    def eof(self) -> None:
        if not self.done:
            raise ProtocolError("connection closed before the chunked body's end")


def decoder(framing: Framing) -> BodyDecoder:
    """The decoder for a body framed as ``framing`` (``none`` is a 0-byte body)."""
    kind = framing.kind
    if kind == "chunked":
        return Chunked()
    if kind == "close":
        return UntilClose()
    return Fixed(framing.length)
