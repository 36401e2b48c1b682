"""The forwarding proxy: ASGI (``ProxyApp``, ``ProxyMiddleware``) and WSGI
(``WSGIProxy``, ``WSGIProxyMiddleware``) shells over the sans-IO core.

Layout: ``_headers`` (header and target policy, sans-IO), ``_errors`` (failure to
502/503/504), ``_engine`` and ``_h1`` (the inner HTTP engines), ``_asgi``,
``_middleware``, ``_websocket``, ``_disconnect`` and ``_wsgi`` (the shells),
``_config``, ``_admin`` and ``_serve`` (what ``clientlb proxy`` runs).
"""

from ._asgi import ProxyApp as ProxyApp
from ._middleware import ProxyMiddleware as ProxyMiddleware
from ._wsgi import WSGIProxy as WSGIProxy
from ._wsgi import WSGIProxyMiddleware as WSGIProxyMiddleware

__all__ = ["ProxyApp", "ProxyMiddleware", "WSGIProxy", "WSGIProxyMiddleware"]
