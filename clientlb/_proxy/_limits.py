"""``Limits``: how much a client may send, how long it may take, and how many
connections the proxy keeps, with defaults named after their anchors."""

from __future__ import annotations

from dataclasses import dataclass, fields

from .._core import ConfigError
from .._core._policies import flag, seconds
from .._http1 import HeadLimits
from ._engines import UpstreamLimits

MAX_COUNT = 1 << 30  # bytes or connections: beyond this a value is a mistake


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on what clients may send and on the connections the proxy keeps.

    Client side (enforced by ``clientlb proxy``'s own front end; a server you run
    ``ProxyApp`` under enforces its own, see the README):

    * **request_line** - bytes of the request line, else 414 (nginx's
      ``large_client_header_buffers 4 8k``: 8 KiB).
    * **header_line** - bytes of one header line, else 431 (8 KiB, as nginx).
    * **head** - bytes of the whole request head, else 431 (4 x 8 KiB, as nginx).
    * **header_timeout** - seconds for a whole request head, counted from the
      connection's start or, on keep-alive, from the end of the previous
      response, however slowly it trickles in (HAProxy's usual
      ``timeout http-request 10s``); a silent connection is closed after it too.
    * **keepalive_timeout** - seconds an idle keep-alive connection may wait for
      the first byte of its next request (uvicorn's and Apache's 5 s).
    * **body_timeout** - seconds between two reads of a request body (nginx's
      ``client_body_timeout 60s``).
    * **send_timeout** - seconds a client may leave a response unread before it
      is cut off (nginx's ``send_timeout 60s``).
    * **client_connections** - client connections open at once; more wait in the
      listen backlog (nginx's common ``worker_connections 1024``).

    Upstream side (enforced by the proxy's engines, under any server):

    * **upstream_connections** - connections per upstream, busy or idle; a
      request that finds them all busy waits up to the ``pool`` timeout, then
      goes to another upstream or fails with 503 (Envoy's circuit-breaker
      default, 1024). These are the engine's connections, unseen by the
      balancer; to cap the requests each upstream is sent, use the pool's
      ``max_connections`` (``[pool] max_connections`` in the config file).
    * **upstream_idle_timeout** - seconds an idle upstream connection is kept
      (under the usual 5 s of the servers behind, so the proxy closes first).
    """

    request_line: int = 8 * 1024
    header_line: int = 8 * 1024
    head: int = 32 * 1024
    header_timeout: float = 10.0
    keepalive_timeout: float = 5.0
    body_timeout: float = 60.0
    send_timeout: float = 60.0
    client_connections: int = 1024
    upstream_connections: int = 1024
    upstream_idle_timeout: float = 4.0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.type == "int":
                if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                    raise ConfigError(f.name, f"must be a whole number >= 1, got {value!r}")
                if value > MAX_COUNT:
                    raise ConfigError(f.name, f"must be at most {MAX_COUNT}, got {value!r}")
            else:
                seconds(f.name, value)
        if self.head < max(self.request_line, self.header_line):
            raise ConfigError("head", "must be at least request_line and header_line")

    @property
    def heads(self) -> HeadLimits:
        """The size limits, as the request reader takes them."""
        return HeadLimits(self.request_line, self.header_line, self.head)

    @property
    def upstreams(self) -> UpstreamLimits:
        """The per-upstream connection limits, as the engines take them."""
        return UpstreamLimits(
            max_connections=self.upstream_connections,
            idle_timeout=float(self.upstream_idle_timeout),
        )


DEFAULT_LIMITS = Limits()


@dataclass(frozen=True, slots=True)
class WebSocketSettings:
    """How the proxy relays WebSockets (``ProxyApp(websockets=...)``, the config
    file's ``[websockets]`` table).

    * **max_message** - bytes of one message, either way; a bigger one closes
      the WebSocket with 1009 (the ``websockets`` library's default, 1 MiB).
    * **deflate** - let the ends compress messages (permessage-deflate). The
      proxy never holds an inflated message: ``clientlb proxy`` relays frames as
      they come, compressed, and under another server the upstream leg's
      inflated messages are bounded by ``max_message``.
    * **max_open** - WebSockets open at once; the next handshake is answered
      503 (half of ``client_connections``, so that plain requests keep room).
    * **ping_interval**, **ping_timeout** - seconds between the proxy's pings to
      each leg, and how long a leg may stay silent after one before its session
      is closed (1011 to the client when the upstream froze): the ``websockets``
      library's and uvicorn's 20 s each.
    * **close_timeout** - seconds the two ends get to finish closing when the
      proxy says 1001 Going Away at shutdown.
    """

    max_message: int = 1024 * 1024
    deflate: bool = True
    max_open: int = 512
    ping_interval: float = 20.0
    ping_timeout: float = 20.0
    close_timeout: float = 2.0

    def __post_init__(self) -> None:
        for name in ("max_message", "max_open"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(name, f"must be a whole number >= 1, got {value!r}")
            if value > MAX_COUNT:
                raise ConfigError(name, f"must be at most {MAX_COUNT}, got {value!r}")
        flag("deflate", self.deflate)
        for name in ("ping_interval", "ping_timeout", "close_timeout"):
            seconds(name, getattr(self, name))


DEFAULT_WEBSOCKETS = WebSocketSettings()
