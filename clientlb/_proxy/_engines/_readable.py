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


# Linux's tcpi_state after the peer's reset (TCP_CLOSE) or FIN (TCP_CLOSE_WAIT).
_PEER_CLOSED = frozenset({7, 8})


def peer_gone(fd: int) -> bool:
    """Whether the peer of the socket ``fd`` has closed or reset it, looked at
    without reading (for a connection whose reading is paused, where the event
    loop would not notice): an end of stream or an error waiting, or, on Linux,
    a reset or a FIN behind data nobody has read yet. (A FIN the peer's kernel
    still holds behind data the proxy's window has no room for cannot be seen by
    anyone until that data is read.)"""
    try:
        sock = socket.fromfd(fd, socket.AF_INET, socket.SOCK_STREAM)
    except OSError:
        return True
    with sock:
        try:
            if sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b"":
                return True
        except BlockingIOError:
            return False
        except OSError:
            return True
        tcp_info = getattr(socket, "TCP_INFO", None)
        if tcp_info is None:  # pragma: no cover - not Linux
            return False
        try:
            return sock.getsockopt(socket.IPPROTO_TCP, tcp_info, 1)[0] in _PEER_CLOSED
        except OSError:
            return False
