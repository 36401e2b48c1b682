"""The scaffolding of the raw-socket upstreams (``Hostile``, ``WsUpstream``): a
listener on an ephemeral loopback port, a thread that accepts, one thread per
connection, and a ``close()`` that ends them all."""

from __future__ import annotations

import contextlib
import socket
import threading
from abc import ABC, abstractmethod
from typing import Self


class RawServer(ABC):
    """Subclasses set their own attributes first, then call ``__init__``, which
    starts accepting, and implement ``serve(conn, index)`` (``index`` counts the
    connections from 1). ``release`` ends a deliberate hang; ``close()`` sets it."""

    def __init__(self, *, rcvbuf: int | None = None) -> None:
        self.lock = threading.Lock()
        self.release = threading.Event()
        self.accepted = 0
        self._conns: list[socket.socket] = []
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if rcvbuf is not None:  # inherited by accepted sockets; set before listen
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port: int = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @abstractmethod
    def serve(self, conn: socket.socket, index: int) -> None:
        """Answer one connection as this kind of upstream does."""

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.accepted += 1
                index = self.accepted
                self._conns.append(conn)
            threading.Thread(target=self.serve, args=(conn, index), daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.sock.close()
        with self.lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
