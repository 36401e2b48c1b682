"""Whether an idle connection's socket has something to read: bytes nobody
asked for, or the peer's close. Either way the connection must not be reused."""

from __future__ import annotations

import select
import socket


class Readable:
    """Asks the kernel whether a socket could be read without blocking (data,
    EOF or an error); one poll object per socket, so each check is one call."""

    __slots__ = ("_fd", "_poll")

    def __init__(self, sock: socket.socket) -> None:
        self._fd = sock.fileno()
        self._poll = None
        if hasattr(select, "poll"):
            self._poll = select.poll()
            self._poll.register(self._fd, select.POLLIN | select.POLLPRI)

    def __call__(self) -> bool:
        if self._poll is not None:
            return bool(self._poll.poll(0))
        ready, _, _ = select.select([self._fd], [], [], 0)  # pragma: no cover - Windows
        return bool(ready)


def readable(sock: socket.socket) -> bool:
    """``True`` if reading ``sock`` would not block (data, EOF or an error)."""
    return sock.fileno() < 0 or Readable(sock)()
