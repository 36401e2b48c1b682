"""What the transports share besides the core: which pool serves a request, the
key it hashes on, and the request an upstream receives. No I/O here."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping
from types import ModuleType
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


class Readdress:
    """The request as an upstream receives it, in one client library (httpx, or
    a library with its API such as httpx2, given as ``module``)."""

    def __init__(self, module: ModuleType) -> None:
        self._request: type[httpx.Request] = module.Request
        self._url: type[httpx.URL] = module.URL
        self._parsed_base = functools.lru_cache(maxsize=4096)(self._parse_base)
        self.url = self.joined_url if self._joins_as_parsed() else self.parsed_url
        """``parsed_url`` or, where it gives the same URLs, ``joined_url``."""

    def request(self, request: httpx.Request, upstream: Upstream, stream: Any) -> httpx.Request:
        """The request as ``upstream`` receives it: its scheme, host, port and path
        prefix, the original path and query after it, and its own Host header."""
        url = self.url(request.url, upstream.base)
        host = upstream.authority.encode("ascii")
        headers = [
            (name, host) if name.lower() == b"host" else (name, value)
            for name, value in request.headers.raw
        ]
        return self._request(
            request.method, url, headers=headers, stream=stream, extensions=request.extensions
        )

    def parsed_url(self, request_url: httpx.URL, base: str) -> httpx.URL:
        """``base`` followed by the request's raw path and query, parsed again."""
        return self._url(base + request_url.raw_path.decode("ascii"))

    def _parse_base(self, base: str) -> Any:
        return self._url(base)._uri_reference

    def joined_url(self, request_url: httpx.URL, base: str) -> httpx.URL:
        """The same URL as ``parsed_url`` without parsing it again: both parts were
        validated and normalised when their own URL was built, and parsing is
        most of what this module costs a request. Uses the URL's parsed form (a
        private attribute), so it is taken only if the check below passes."""
        parts = request_url._uri_reference
        prefix = self._parsed_base(base)
        url = self._url.__new__(self._url)
        url._uri_reference = prefix._replace(
            path=prefix.path + (parts.path or "/"), query=parts.query
        )
        return url

    def _joins_as_parsed(self) -> bool:
        samples = [("http://svc/a%2Fb/c?x=1&x=2", "http://h:8000/v2"), ("http://svc", "https://h")]
        try:
            return all(
                self.joined_url(self._url(u), b) == self.parsed_url(self._url(u), b)
                for u, b in samples
            )
        except Exception:  # another URL class: take the parsing path
            return False
