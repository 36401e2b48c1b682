"""What the transports share besides the core: which pool serves a request, the
key it hashes on, and the request an upstream receives. No I/O here."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ._core import ConfigError, Pool, Upstream
from ._httpx import httpx
from ._keys import KeyName, KeySource, cookie_value
from ._options import PoolSource, as_pool

HashOn = Callable[[httpx.Request], "str | None"] | str | None


def build_pools(
    upstreams: PoolSource | None,
    standbys: Iterable[str | Upstream],
    services: Mapping[str, PoolSource] | None,
    options: Mapping[str, Any],
) -> tuple[Pool | None, dict[str, Pool]]:
    """The single pool, or the pools by service host, from the user's arguments
    (``options``: the pool options given, see ``clientlb._options``)."""
    if services is not None:
        if upstreams is not None:
            raise ConfigError("services", "give either upstreams= or services=, not both")
        if not isinstance(services, Mapping) or not services:
            raise ConfigError("services", "must be a non-empty mapping of host name to Pool")
        pools = {}
        for name, source in services.items():
            if not isinstance(name, str) or not name:
                raise ConfigError("services", f"service names must be host names, got {name!r}")
            pools[name.lower()] = as_pool(source, (), options, "services")
        return None, pools
    if upstreams is None:
        raise ConfigError("upstreams", "give upstreams= (a list of URLs or a Pool) or services=")
    return as_pool(upstreams, standbys, options), {}


def key_function(source: KeySource) -> Callable[[httpx.Request], str | None]:
    """The request key for hashing algorithms, from a parsed ``hash_on=``: a
    header's value, a cookie's (from the request's ``Cookie`` headers), or what
    the callable returns for the ``httpx.Request``. A request without one has no
    key, and the hashing algorithm places it at random."""
    if source is None:
        return _no_key
    if not isinstance(source, KeyName):
        return source
    name = source.name
    if source.kind == "header":

        def from_header(request: httpx.Request) -> str | None:
            return request.headers.get(name) or None

        return from_header

    def from_cookie(request: httpx.Request) -> str | None:
        return cookie_value(request.headers.get_list("cookie"), name)

    return from_cookie


def _no_key(request: httpx.Request) -> str | None:
    return None


def upstream_request(request: httpx.Request, upstream: Upstream, stream: Any) -> httpx.Request:
    """The request as ``upstream`` receives it: its scheme, host, port and path
    prefix, the original path and query after it, and its own Host header."""
    url = _upstream_url(request.url, upstream.base)
    host = upstream.authority.encode("ascii")
    headers = [
        (name, host) if name.lower() == b"host" else (name, value)
        for name, value in request.headers.raw
    ]
    return httpx.Request(
        request.method, url, headers=headers, stream=stream, extensions=request.extensions
    )


def _parsed_url(request_url: httpx.URL, base: str) -> httpx.URL:
    """``base`` followed by the request's raw path and query, parsed again."""
    return httpx.URL(base + request_url.raw_path.decode("ascii"))


@functools.lru_cache(maxsize=4096)
def _parsed_base(base: str) -> Any:
    return httpx.URL(base)._uri_reference


def _joined_url(request_url: httpx.URL, base: str) -> httpx.URL:
    """The same URL as ``_parsed_url`` without parsing it again: both parts were
    validated and normalised when their own ``httpx.URL`` was built, and parsing
    is most of what this module costs a request. Uses ``httpx.URL``'s parsed
    form (a private attribute), so it is taken only if the check below passes."""
    parts = request_url._uri_reference
    prefix = _parsed_base(base)
    url = httpx.URL.__new__(httpx.URL)
    url._uri_reference = prefix._replace(path=prefix.path + (parts.path or "/"), query=parts.query)
    return url


def _joins_as_parsed() -> bool:
    samples = [("http://svc/a%2Fb/c?x=1&x=2", "http://h:8000/v2"), ("http://svc", "https://h")]
    try:
        return all(_joined_url(httpx.URL(u), b) == _parsed_url(httpx.URL(u), b) for u, b in samples)
    except Exception:  # another httpx: take the parsing path
        return False


_upstream_url = _joined_url if _joins_as_parsed() else _parsed_url
