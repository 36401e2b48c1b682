"""The forwarding proxy: ASGI (``ProxyApp``, ``ProxyMiddleware``) and WSGI
(``WSGIProxy``, ``WSGIProxyMiddleware``) shells over the sans-IO core.

Layout: ``_headers`` and ``_upgrade`` (request, target and handshake policy,
sans-IO), ``_errors`` (failure to 502/503/504), ``_limits`` (sizes, timeouts,
connection caps), ``_engines`` (the inner HTTP/1.1 clients: asyncio, anyio,
blocking), ``_asgi``, ``_middleware``, ``_websocket``, ``_disconnect`` and
``_wsgi`` (the shells), ``_front`` (the HTTP/1.1 server ``clientlb proxy``
serves with), ``_config``, ``_admin`` and ``_serve`` (what ``clientlb proxy``
runs).
"""

from ._asgi import ProxyApp as ProxyApp
from ._limits import Limits as Limits
from ._limits import WebSocketSettings as WebSocketSettings
from ._middleware import ProxyMiddleware as ProxyMiddleware
from ._wsgi import WSGIProxy as WSGIProxy
from ._wsgi import WSGIProxyMiddleware as WSGIProxyMiddleware

__all__ = [
    "Limits",
    "ProxyApp",
    "ProxyMiddleware",
    "WSGIProxy",
    "WSGIProxyMiddleware",
    "WebSocketSettings",
]
