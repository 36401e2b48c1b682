"""``ProxyMiddleware``: forward one path prefix of an ASGI app to upstreams.

Pure ASGI, as Starlette's own middleware: scopes outside the prefix, and every
lifespan event, go to the wrapped app unchanged; the proxy's background work
(health checks, discovery) starts and stops with the app's lifespan.
"""

from __future__ import annotations

from typing import Any

from ._asgi import ASGIApp, Message, ProxyApp, Receive, Scope, Send


class ProxyMiddleware:
    """Forward requests whose raw path is ``prefix`` or under it; pass the rest,
    and lifespan events, to ``app``.

    The prefix is matched on the raw (undecoded) path and removed before
    forwarding unless ``strip_prefix=False``. Other keyword arguments are
    ``ProxyApp``'s; the proxy's background work starts and stops with the app's
    lifespan.
    """

    def __init__(
        self, app: ASGIApp, prefix: str = "/", *, strip_prefix: bool = True, **options: Any
    ) -> None:
        self.app = app
        self.proxy = ProxyApp(**options)
        self.prefix = prefix.rstrip("/").encode("utf-8")
        self.strip_prefix = strip_prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            return await self.app(scope, self._lifespan_receive(receive), send)
        if kind not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        raw: bytes = scope.get("raw_path") or scope["path"].encode("utf-8")
        prefix = self.prefix
        if prefix and not (raw == prefix or raw.startswith(prefix + b"/")):
            return await self.app(scope, receive, send)
        if prefix and self.strip_prefix:
            scope = dict(scope)
            scope["raw_path"] = raw[len(prefix) :] or b"/"
            path: str = scope["path"]
            decoded = self.prefix.decode("utf-8")
            scope["path"] = path[len(decoded) :] or "/" if path.startswith(decoded) else path
        await self.proxy(scope, receive, send)

    def _lifespan_receive(self, receive: Receive) -> Receive:
        async def wrapped() -> Message:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self.proxy.startup()
            elif message["type"] == "lifespan.shutdown":
                await self.proxy.shutdown()
            return message

        return wrapped
