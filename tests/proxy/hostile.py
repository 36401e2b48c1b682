"""A hostile upstream: a raw TCP server that misbehaves on purpose.

The first ``bad`` connections it accepts get ``mode`` (after ``clean_first``
requests answered cleanly on each, so that a test can make the proxy reuse a
connection before it misbehaves); every later connection is served cleanly,
each request answered ``200`` with ``clean METHOD PATH AUTHORIZATION``, so
a test can tell which connection an answer came from. Every request it reads is
recorded (``requests``), so a test can count what reached it.

Modes (what the bad connections get, per request):

* ``late`` - a 204, then, after ``delay`` seconds, an unsolicited
  ``200 ... POISON`` on the idle connection (``poisoned`` is set once sent).
* ``extra-204`` / ``extra-304`` - the status with ``Content-Length: 6`` and six
  bytes after it, in one packet.
* ``extra-head`` - for a HEAD, ``200`` with ``Content-Length: 6`` and six bytes.
* ``extra-cl`` - a 2-byte body, then a whole second response in the same packet.
* ``reset`` / ``close`` / ``hang`` - read the whole request, then reset the
  connection, close it, or never answer.
* ``close-delimited`` - ``Connection: close``, no length, a body, then close.
* ``bad-status`` - status 600.
* ``huge-head`` - a 100 KiB header.
* ``cl-te`` - both Content-Length and Transfer-Encoding.
* ``two-cl`` - two different Content-Length headers.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from typing import Any

from .raw import RawServer

POISON = b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nX-Poison: yes\r\n\r\nPOISON"
MODES = (
    "late",
    "extra-204",
    "extra-304",
    "extra-head",
    "extra-cl",
    "reset",
    "close",
    "hang",
    "close-delimited",
    "bad-status",
    "huge-head",
    "cl-te",
    "two-cl",
)


def read_request(conn: socket.socket, buf: bytes) -> tuple[bytes, bytes, bytes] | None:
    """One request (head, body) from ``conn``, and the bytes after it; ``None``
    if the peer closed first. Understands Content-Length and chunked bodies."""
    while b"\r\n\r\n" not in buf:
        more = conn.recv(65536)
        if not more:
            return None
        buf += more
    head, _, buf = buf.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    fields = {k.strip().lower(): v.strip() for k, _, v in (x.partition(b":") for x in lines[1:])}
    if fields.get(b"transfer-encoding", b"").lower() == b"chunked":
        while not buf.endswith(b"0\r\n\r\n") or b"0\r\n\r\n" not in buf:
            more = conn.recv(65536)
            if not more:
                return None
            buf += more
        end = buf.index(b"0\r\n\r\n") + 5
        return head, buf[:end], buf[end:]
    length = int(fields.get(b"content-length", b"0"))
    while len(buf) < length:
        more = conn.recv(65536)
        if not more:
            return None
        buf += more
    return head, buf[:length], buf[length:]


class Hostile(RawServer):
    """A misbehaving upstream on an ephemeral loopback port (see the module doc)."""

    def __init__(
        self, mode: str, *, bad: int = 1, clean_first: int = 0, delay: float = 0.05
    ) -> None:
        assert mode in MODES, mode
        self.mode = mode
        self.bad = bad
        self.clean_first = clean_first
        self.delay = delay
        self.requests: list[dict[str, Any]] = []
        self.poisoned = threading.Event()
        super().__init__()

    def count(self, method: bytes | None = None) -> int:
        with self.lock:
            return sum(1 for r in self.requests if method is None or r["method"] == method)

    def serve(self, conn: socket.socket, index: int) -> None:
        bad_connection = index <= self.bad
        buf = b""
        served = 0
        with contextlib.suppress(OSError):
            while True:
                bad = bad_connection and served >= self.clean_first
                served += 1
                got = read_request(conn, buf)
                if got is None:
                    return
                head, body, buf = got
                request_line = head.split(b"\r\n", 1)[0]
                method, path = request_line.split(b" ")[:2]
                auth = b""
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"authorization":
                        auth = value.strip()
                with self.lock:
                    self.requests.append(
                        {"method": method, "path": path, "body": body, "bad": bad, "head": head}
                    )
                if not bad:
                    answer = b"clean " + method + b" " + path + b" " + auth
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(answer))
                    conn.sendall(answer)
                    continue
                if not self._misbehave(conn, method):
                    return

    def _misbehave(self, conn: socket.socket, method: bytes) -> bool:
        """Answer one request badly; ``False`` once the connection is done."""
        mode = self.mode
        if mode == "late":
            conn.sendall(b"HTTP/1.1 204 No Content\r\n\r\n")
            time.sleep(self.delay)
            conn.sendall(POISON)
            self.poisoned.set()
            return True
        if mode in ("extra-204", "extra-304"):
            status = b"204 No Content" if mode == "extra-204" else b"304 Not Modified"
            conn.sendall(b"HTTP/1.1 " + status + b"\r\nContent-Length: 6\r\n\r\nPOISON")
            return True
        if mode == "extra-head":
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nPOISON")
            return True
        if mode == "extra-cl":
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok" + POISON)
            return True
        if mode == "reset":
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()
            return False
        if mode == "close":
            conn.close()
            return False
        if mode == "hang":
            self.release.wait(30)
            return False
        if mode == "close-delimited":
            conn.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
            for part in (b"first ", b"second ", b"last"):
                conn.sendall(part)
                time.sleep(0.01)
            conn.close()
            return False
        if mode == "bad-status":
            conn.sendall(b"HTTP/1.1 600 Weird\r\nContent-Length: 0\r\n\r\n")
            return True
        if mode == "huge-head":
            conn.sendall(b"HTTP/1.1 200 OK\r\nX-Big: " + b"b" * 100_000 + b"\r\n\r\n")
            return True
        if mode == "cl-te":
            conn.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"2\r\nok\r\n0\r\n\r\n"
            )
            return True
        if mode == "two-cl":
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok")
            return True
        raise AssertionError(mode)
