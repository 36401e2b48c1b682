"""What the proxies read from a request to place it: the ``hash_on`` key and the
sticky cookie. Sans-IO; the ASGI functions read a scope, the WSGI ones an environ.

A ``hash_on`` callable gets the proxy's own request as it stands: the ASGI scope
(``ProxyApp``, ``ProxyMiddleware``) or the WSGI environ (``WSGIProxy``,
``WSGIProxyMiddleware``). Both are already built for every request, so handing
one over costs nothing, and both are what an ASGI or WSGI author reads every
day; a neutral object would cost an allocation per request and still have to
guess what to expose. A request without the header, cookie or callable's key is
hashed on the client address (``ip_hash``'s key), so it still lands somewhere
stable.
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping
from typing import Any

from .._keys import KeyName, KeySource, cookie_value

Scope = MutableMapping[str, Any]
Environ = dict[str, Any]


def scope_cookie(headers: list[tuple[bytes, bytes]], name: str) -> str | None:
    """Cookie ``name`` among ASGI headers (``None`` if absent or empty)."""
    values = [value.decode("latin-1") for key, value in headers if key == b"cookie"]
    return cookie_value(values, name) if values else None


def environ_cookie(environ: Environ, name: str) -> str | None:
    """Cookie ``name`` in a WSGI environ (``None`` if absent or empty)."""
    value = environ.get("HTTP_COOKIE")
    return cookie_value((value,), name) if value else None


def scope_key(source: KeySource) -> Callable[[Scope], str | None] | None:
    """The ``hash_on`` key of an ASGI request, or ``None`` for no ``hash_on``."""
    if source is None or not isinstance(source, KeyName):
        return source
    name = source.name
    if source.kind == "cookie":
        return lambda scope: scope_cookie(scope["headers"], name)
    wanted = name.lower().encode("latin-1")

    def from_header(scope: Scope) -> str | None:
        values = [value for key, value in scope["headers"] if key == wanted]
        return b", ".join(values).decode("latin-1") or None

    return from_header


def environ_key(source: KeySource) -> Callable[[Environ], str | None] | None:
    """The ``hash_on`` key of a WSGI request, or ``None`` for no ``hash_on``."""
    if source is None or not isinstance(source, KeyName):
        return source
    name = source.name
    if source.kind == "cookie":
        return lambda environ: environ_cookie(environ, name)
    variable = name.upper().replace("-", "_")
    if variable not in ("CONTENT_TYPE", "CONTENT_LENGTH"):
        variable = "HTTP_" + variable

    def from_header(environ: Environ) -> str | None:
        value = environ.get(variable)
        return str(value) if value else None

    return from_header
