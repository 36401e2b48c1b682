"""Opening the upstream leg of a WebSocket for ``ProxyApp``: one try at one
upstream with the ``websockets`` library's client, timed as HTTP is, and what a
failed try says of the upstream (the table in ``_websocket``'s doc)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, MutableMapping
from typing import Any, cast

from ._engines import Timeouts
from ._headers import Headers, response_headers
from ._limits import WebSocketSettings

try:
    from websockets.asyncio.client import ClientConnection, connect
except ImportError:  # pragma: no cover - uvicorn can run WebSockets on wsproto alone
    HAVE_WEBSOCKETS = False
else:
    HAVE_WEBSOCKETS = True

    class Leg(ClientConnection):
        """The upstream leg. It tells its opener when TCP and TLS are up, hangs
        up as soon as it refuses a handshake answer (the library would wait for
        the upstream to close, which a broken one may never do), and can be cut."""

        opened: Callable[[], None] | None = None
        link: asyncio.Transport | None = None

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)
            self.link = cast(asyncio.Transport, transport)
            if self.opened is not None:
                self.opened()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.protocol.handshake_exc is not None:
                self.cut()

        def cut(self) -> None:
            if self.link is not None:
                self.link.abort()

    class _Connect(connect):
        """``connect`` that passes redirects on: where to go is the client's call."""

        def process_redirect(self, exc: Exception) -> Exception | str:
            return exc


_HANDSHAKE = frozenset(
    b"sec-websocket-key sec-websocket-version sec-websocket-extensions host user-agent"
    b" sec-websocket-protocol sec-websocket-accept".split()
)
#: Frames from the upstream buffered before reading from it pauses.
MAX_QUEUE = 4


def leg_options(
    settings: WebSocketSettings, headers: Headers, scope: MutableMapping[str, Any]
) -> dict[str, Any]:
    """What ``connect()`` is given for every upstream of one client."""
    extra = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in headers if n not in _HANDSHAKE]
    extra += [
        ("User-Agent", v.decode("latin-1")) for n, v in scope["headers"] if n == b"user-agent"
    ]
    return {
        "proxy": None,  # the upstream is dialled directly, as for HTTP
        "additional_headers": extra,
        "subprotocols": scope.get("subprotocols") or None,
        "user_agent_header": None,
        "compression": "deflate" if settings.deflate else None,
        "max_size": settings.max_message,
        "max_queue": MAX_QUEUE,
        "ping_interval": settings.ping_interval,
        "ping_timeout": settings.ping_timeout,
        "close_timeout": settings.close_timeout,
    }


class Opening:
    """One try at the upstream leg, timed as an HTTP request is: ``connect``
    seconds for TCP and TLS, then ``read`` seconds for the handshake's answer."""

    def __init__(self, timeouts: Timeouts) -> None:
        self.timeouts = timeouts
        self.connected = False
        self._deadline: asyncio.Timeout | None = None

    async def open(self, uri: str, **options: Any) -> Leg:
        # ``create_connection`` may be "a wrapper or a subclass" (its docs).
        opener = _Connect(uri, open_timeout=None, create_connection=cast(Any, self._leg), **options)
        async with asyncio.timeout(self.timeouts.connect) as self._deadline:
            return cast(Leg, await opener)

    def _leg(self, protocol: Any, **options: Any) -> Leg:
        leg = Leg(protocol, **options)
        leg.opened = self._opened
        return leg

    def _opened(self) -> None:
        self.connected = True
        deadline, read = self._deadline, self.timeouts.read
        if deadline is not None and not deadline.expired():
            deadline.reschedule(None if read is None else asyncio.get_running_loop().time() + read)


def passed_on(items: Iterable[tuple[str, str]], status: int) -> Headers:
    """An upstream's refusal's headers, as the client gets them (values were
    decoded as latin-1, or as ASCII with surrogate escapes before websockets 17)."""
    raw = [(n.encode("latin-1"), v.encode("latin-1", "surrogateescape")) for n, v in items]
    return [(n, v) for n, v in response_headers(raw, status) if n != b"content-length"]
