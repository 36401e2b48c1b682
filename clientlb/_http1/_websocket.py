"""WebSocket frames as a relay sees them (RFC 6455 5.2), sans-IO.

A relay that passes bytes along still needs to know where frames begin and end:
to slip in a frame of its own (a ping, a close) without cutting one in two, to
tell a message over the size limit, and to refuse a peer that breaks framing.
``FrameCursor`` follows one direction's frame headers and skips their payloads
without holding or unmasking them, so the relay's memory does not depend on
message sizes. ``frame()`` writes the proxy's own control frames.
"""

from __future__ import annotations

import os
import struct

CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
_DATA = frozenset({TEXT, BINARY})
_CONTROL = frozenset({CLOSE, PING, PONG})
# Close codes the proxy sends (RFC 6455 7.4.1).
GOING_AWAY, PROTOCOL_ERROR, TOO_BIG, INTERNAL_ERROR = 1001, 1002, 1009, 1011


class FrameError(Exception):
    """A peer broke framing (``code`` 1002) or sent a message over the limit (1009)."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code


class FrameCursor:
    """Follows the frames of one direction of a WebSocket connection.

    ``masked`` says which way it runs: frames from a client must be masked,
    frames from a server must not (5.1). ``extensions`` allows the reserved bits
    that a negotiated extension (permessage-deflate) uses. ``max_message`` bounds
    a message's payload as it travels (compressed, when it is).
    """

    __slots__ = (
        "_head",
        "_left",
        "_masked",
        "_max",
        "_message",
        "_reserved",
        "closed",
        "fragmented",
    )

    def __init__(self, *, masked: bool, max_message: int, extensions: bool = False) -> None:
        self._masked = masked
        self._max = max_message
        self._reserved = 0x70 if extensions else 0x00
        self._head = b""  # a frame header split across reads
        self._left = 0  # payload bytes of the current frame still to come
        self._message = 0  # payload bytes of the current message so far
        self.fragmented = False  # inside a message sent in several frames
        self.closed = False  # a close frame went by

    @property
    def at_boundary(self) -> bool:
        """No frame is half through: a frame of the proxy's may go in here."""
        return not self._left and not self._head

    def feed(self, data: bytes) -> int:
        """Follow ``data``; the offset just after the first frame that ends in it
        (or at which the cursor already stood at a boundary), ``-1`` if none.
        Raises ``FrameError``."""
        first = 0 if self.at_boundary else -1
        pos, end = 0, len(data)
        while pos < end:
            if self._left:
                take = min(self._left, end - pos)
                self._left -= take
                pos += take
                if not self._left and first < 0:
                    first = pos
                continue
            pos = self._header(data, pos)
            if pos < 0:
                break
            if not self._left and first < 0:
                first = pos
        return first

    def _header(self, data: bytes, pos: int) -> int:
        """Parse the next frame header from ``data[pos:]`` (plus any held part);
        the position after it, or ``-1`` if it is not whole yet."""
        buf = self._head + data[pos : pos + 14 - len(self._head)]
        if len(buf) < 2:
            self._head = buf
            return -1
        b0, b1 = buf[0], buf[1]
        size = b1 & 0x7F
        need = 2 + (2 if size == 126 else 8 if size == 127 else 0) + (4 if b1 & 0x80 else 0)
        if len(buf) < need:
            self._head = buf
            return -1
        if size == 126:
            size = struct.unpack_from("!H", buf, 2)[0]
        elif size == 127:
            size = struct.unpack_from("!Q", buf, 2)[0]
        consumed = need - len(self._head)
        self._head = b""
        self._check(b0, bool(b1 & 0x80), size)
        self._left = size
        return pos + consumed

    def _check(self, b0: int, masked: bool, size: int) -> None:
        opcode, fin = b0 & 0x0F, bool(b0 & 0x80)
        if masked != self._masked:
            raise FrameError(PROTOCOL_ERROR, "a frame masked the wrong way")
        if b0 & 0x70 & ~self._reserved:
            raise FrameError(PROTOCOL_ERROR, "reserved bits set without an extension")
        if opcode in _CONTROL:
            if not fin or size > 125:
                raise FrameError(PROTOCOL_ERROR, "a fragmented or oversized control frame")
            if opcode == CLOSE:
                self.closed = True
            return
        if opcode in _DATA:
            if self.fragmented:
                raise FrameError(PROTOCOL_ERROR, "a new message inside a fragmented one")
            self._message = 0
        elif opcode == CONTINUATION:
            if not self.fragmented:
                raise FrameError(PROTOCOL_ERROR, "a continuation with no message")
        else:
            raise FrameError(PROTOCOL_ERROR, f"unknown opcode {opcode:#x}")
        self._message += size
        if self._message > self._max:
            raise FrameError(TOO_BIG, f"a message over {self._max} bytes")
        self.fragmented = not fin


def frame(opcode: int, payload: bytes = b"", *, mask: bool) -> bytes:
    """One final frame (the proxy's control frames: ping, close); masked when
    it goes to a server."""
    if len(payload) > 125:
        raise ValueError("a control frame carries at most 125 bytes")
    head = bytes((0x80 | opcode, (0x80 if mask else 0) | len(payload)))
    if not mask:
        return head + payload
    key = os.urandom(4)
    masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return head + key + masked


def close_frame(code: int, reason: str = "", *, mask: bool) -> bytes:
    """A close frame with ``code`` and a short ``reason``."""
    payload = struct.pack("!H", code) + reason.encode("utf-8")[:123]
    return frame(CLOSE, payload, mask=mask)
