"""Raw-socket WebSocket peers for the relay's failure tests.

``WsUpstream(mode)`` reads each handshake and answers it in one chosen way:

* ``close`` - accept TCP, read the request, close.
* ``malformed`` - a 101 whose head has a line that is not a header.
* ``wrong-accept`` - a 101 with the ``Sec-WebSocket-Accept`` of another key.
* ``extension`` - a 101 accepting an extension that was never offered.
* ``subprotocol`` - a 101 naming a subprotocol that was never offered.
* ``silent`` - never answer (the handshake times out).
* ``status`` - ``status`` (503 unless told) with a short body and ``headers``.
* ``stall`` - a good 101, then read and write nothing (with ``rcvbuf`` set,
  its socket buffer stays small, so a sender blocks soon); pings go unanswered.
* ``bomb`` - a good 101 with permessage-deflate, then one binary message that
  inflates to ``size`` bytes of zeros; a close frame is answered with a close.

It records every request head (``heads``) and what each connection became
(``ended``: ``"closed by peer"`` or ``"closed"`` with a close code).

``RawClient`` is a WebSocket client on a plain socket, for tests that must
leave abruptly or send while the proxy cannot take more.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import socket
import struct
import zlib

from .raw import RawServer

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MODES = frozenset(
    {"close", "malformed", "wrong-accept", "extension", "subprotocol", "silent", "status"}
    | {"stall", "bomb"}
)

#: What a proxy's client hears when its one upstream fails the handshake this way.
FAILURES = {
    "close": 502,
    "malformed": 502,
    "wrong-accept": 502,
    "extension": 502,
    "subprotocol": 502,
    "silent": 504,
    "status": 503,
}


def accept_key(key: bytes) -> bytes:
    return base64.b64encode(hashlib.sha1(key + GUID).digest())


def read_head(conn: socket.socket) -> tuple[bytes, dict[bytes, bytes], bytes] | None:
    """A request or response head (its first line, its fields) and what came after."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        more = conn.recv(65536)
        if not more:
            return None
        buf += more
    head, _, rest = buf.partition(b"\r\n\r\n")
    first, *lines = head.split(b"\r\n")
    fields: dict[bytes, bytes] = {}
    for line in lines:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        fields[name] = fields[name] + b", " + value.strip() if name in fields else value.strip()
    return first, fields, rest


def frame(opcode: int, payload: bytes, *, mask: bool = False, rsv1: bool = False) -> bytes:
    """One final frame."""
    head = bytes([0x80 | (0x40 if rsv1 else 0) | opcode])
    size = len(payload)
    bit = 0x80 if mask else 0
    if size < 126:
        head += bytes([bit | size])
    elif size < 1 << 16:
        head += bytes([bit | 126]) + struct.pack("!H", size)
    else:
        head += bytes([bit | 127]) + struct.pack("!Q", size)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + _xor(payload, key)


def _xor(payload: bytes, key: bytes) -> bytes:
    if not payload:
        return b""
    whole = int.from_bytes(payload, "big") ^ int.from_bytes(
        (key * (len(payload) // 4 + 1))[: len(payload)], "big"
    )
    return whole.to_bytes(len(payload), "big")


def read_frame(conn: socket.socket, buf: bytearray) -> tuple[int, bytes] | None:
    """The next frame's opcode and (unmasked) payload; ``None`` at EOF."""

    def need(n: int) -> bool:
        while len(buf) < n:
            more = conn.recv(65536)
            if not more:
                return False
            buf.extend(more)
        return True

    if not need(2):
        return None
    opcode, size, masked = buf[0] & 0x0F, buf[1] & 0x7F, buf[1] & 0x80
    at = 2
    if size == 126:
        if not need(4):
            return None
        size, at = struct.unpack("!H", buf[2:4])[0], 4
    elif size == 127:
        if not need(10):
            return None
        size, at = struct.unpack("!Q", buf[2:10])[0], 10
    key = b""
    if masked:
        if not need(at + 4):
            return None
        key, at = bytes(buf[at : at + 4]), at + 4
    if not need(at + size):
        return None
    payload = bytes(buf[at : at + size])
    del buf[: at + size]
    if key:
        payload = _xor(payload, key)
    return opcode, payload


def deflated(size: int) -> bytes:
    """``size`` zero bytes as one permessage-deflate payload (RFC 7692 7.2.1)."""
    squeeze = zlib.compressobj(9, zlib.DEFLATED, -15)
    data = squeeze.compress(bytes(size)) + squeeze.flush(zlib.Z_SYNC_FLUSH)
    assert data.endswith(b"\x00\x00\xff\xff")
    return data[:-4]


class WsUpstream(RawServer):
    """A WebSocket upstream that answers handshakes as ``mode`` says (see the
    module doc), on an ephemeral loopback port."""

    def __init__(
        self,
        mode: str,
        *,
        status: int = 503,
        headers: tuple[tuple[bytes, bytes], ...] = (),
        rcvbuf: int | None = None,
        size: int = 15 * 1024 * 1024,
    ) -> None:
        assert mode in MODES, mode
        self.mode, self.status, self.headers = mode, status, headers
        self.bomb = deflated(size) if mode == "bomb" else b""  # made now, not while measured
        self.heads: list[tuple[bytes, dict[bytes, bytes]]] = []
        self.ended: list[str] = []
        super().__init__(rcvbuf=rcvbuf)

    @property
    def handshakes(self) -> int:
        with self.lock:
            return len(self.heads)

    def serve(self, conn: socket.socket, index: int) -> None:
        with contextlib.suppress(OSError), conn:
            got = read_head(conn)
            if got is None:
                return
            first, fields, _ = got
            with self.lock:
                self.heads.append((first, fields))
            self._answer(conn, fields)

    def _answer(self, conn: socket.socket, fields: dict[bytes, bytes]) -> None:
        mode = self.mode
        key = fields.get(b"sec-websocket-key", b"")
        good = (
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept_key(key) + b"\r\n"
        )
        if mode == "close":
            return
        if mode == "silent":
            self.release.wait(30)
            return
        if mode == "status":
            body = b"upstream says %d\n" % self.status
            extra = b"".join(n + b": " + v + b"\r\n" for n, v in self.headers)
            conn.sendall(
                b"HTTP/1.1 %d Whatever\r\nContent-Length: %d\r\n" % (self.status, len(body))
                + extra
                + b"\r\n"
                + body
            )
            return
        if mode == "malformed":
            conn.sendall(good + b"this line is not a header\r\n\r\n")
        elif mode == "wrong-accept":
            conn.sendall(good.replace(accept_key(key), accept_key(b"another key")) + b"\r\n")
        elif mode == "extension":
            conn.sendall(good + b"Sec-WebSocket-Extensions: x-never-offered\r\n\r\n")
        elif mode == "subprotocol":
            conn.sendall(good + b"Sec-WebSocket-Protocol: never.offered\r\n\r\n")
        elif mode == "stall":
            conn.sendall(good + b"\r\n")
            self.release.wait(30)
            self._end("released")
            return
        elif mode == "bomb":
            assert b"permessage-deflate" in fields.get(b"sec-websocket-extensions", b"")
            conn.sendall(good + b"Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n")
            conn.sendall(frame(0x2, self.bomb, rsv1=True))
            self._until_close(conn)
            return
        self.release.wait(5)  # a bad 101: the proxy hangs up

    def _until_close(self, conn: socket.socket) -> None:
        buf = bytearray()
        while True:
            got = read_frame(conn, buf)
            if got is None:
                self._end("closed by peer")
                return
            opcode, payload = got
            if opcode == 0x8:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                conn.sendall(frame(0x8, payload[:2]))
                self._end(f"closed {code}")
                return

    def _end(self, how: str) -> None:
        with self.lock:
            self.ended.append(how)


class RawClient:
    """A WebSocket client on a plain blocking socket: it can send while the
    proxy is not reading and leave without a closing handshake."""

    def __init__(self, port: int, path: str = "/", *, timeout: float = 5.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        key = base64.b64encode(os.urandom(16))
        self.sock.sendall(
            b"GET " + path.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: " + key + b"\r\n"
            b"Sec-WebSocket-Version: 13\r\n\r\n"
        )
        got = read_head(self.sock)
        assert got is not None, "the proxy closed during the handshake"
        self.status = int(got[0].split()[1])
        self.fields = got[1]
        self.buf = bytearray(got[2])

    def body(self) -> bytes:
        """The body of a refusal (it has a Content-Length)."""
        size = int(self.fields[b"content-length"])
        while len(self.buf) < size:
            more = self.sock.recv(65536)
            if not more:
                break
            self.buf.extend(more)
        return bytes(self.buf[:size])

    def send(self, payload: bytes) -> None:
        self.sock.sendall(frame(0x2, payload, mask=True))

    def recv(self) -> tuple[int, bytes] | None:
        return read_frame(self.sock, self.buf)

    def vanish(self) -> None:
        """Leave at once: a reset, no close frame."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()
