"""The one exception of the sans-IO HTTP/1.1 layer."""

from __future__ import annotations


class ProtocolError(Exception):
    """Bytes that break HTTP/1.1's rules, or a limit.

    ``status`` is what a server answers a client that sent them (400, 413, 414,
    431, 501, 505); a client reading a bad response maps it to a bad-gateway
    failure instead. After a ``ProtocolError`` the connection must be closed:
    where the next message would start is unknown.
    """

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status
