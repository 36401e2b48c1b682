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
        self._headers: type[httpx.Headers] = module.Headers
        self._parsed_base = functools.lru_cache(maxsize=4096)(self._parse_base)
        self.url = self.joined_url if self._joins_as_parsed() else self.parsed_url
        """``parsed_url`` or, where it gives the same URLs, ``joined_url``."""
        self.request = self.copied_request if self._copies_as_built() else self.built_request
        """``built_request`` or, where it gives the same requests, ``copied_request``."""

    def built_request(
        self, request: httpx.Request, upstream: Upstream, stream: Any
    ) -> httpx.Request:
        """The request as ``upstream`` receives it: its scheme, host, port and path
        prefix, the original path and query after it, and its own Host header."""
        url = self.url(request.url, upstream.base)
        host = upstream.authority.encode("ascii")
        headers = [
            (name, host) if name.lower() == b"host" else (name, value)
            for name, value in request.headers.raw
        ]
        if not any(name.lower() == b"host" for name, _ in headers):
            headers.insert(0, (b"Host", host))  # first, where the library puts its own
        return self._request(
            request.method, url, headers=headers, stream=stream, extensions=request.extensions
        )

    def copied_request(
        self, request: httpx.Request, upstream: Upstream, stream: Any
    ) -> httpx.Request:
        """The same request as ``built_request`` without checking and normalising
        again what the original's constructor did: its headers' list is copied
        with the Host value replaced (or a Host entry put first), and the
        request's attributes are set as the constructor sets them. Uses private
        attributes, so it is taken only if the check below passes."""
        host = upstream.authority.encode("ascii")
        headers = self._headers.__new__(self._headers)
        headers._list = items = request.headers._list.copy()  # its entries are immutable
        at = 0
        hosts = 0
        for item in items:  # no comprehension's frame, no enumerate()'s tuples
            if item[1] == b"host":
                items[at] = (item[0], b"host", host)
                hosts = 1
            at += 1  # noqa: SIM113
        if not hosts:  # none of its own (a stream given): the upstream's, first
            items.insert(0, (b"Host", b"host", host))
        headers._encoding = None
        copy = self._request.__new__(self._request)
        copy.method = request.method
        copy.url = self.url(request.url, upstream.base)
        copy.headers = headers
        copy.extensions = dict(request.extensions)
        copy.stream = stream
        return copy

    def _copies_as_built(self) -> bool:
        upstream = Upstream("http://h:8000/v2")
        stream = object()
        try:
            samples = [
                [("Accept", "*/*"), ("HOST", "svc"), ("X-A", "1"), ("host", "again")],
                [("Accept", "*/*"), ("Host", "svc")],
                [("Accept", "*/*")],  # and no Host: the stream given, none is added
            ]
            return all(self._copy_is_built(headers, upstream, stream) for headers in samples)
        except Exception:  # another Request or Headers class: take the building path
            return False

    def _copy_is_built(
        self, headers: list[tuple[str, str]], upstream: Upstream, stream: Any
    ) -> bool:
        request = self._request(
            "get",
            "http://svc/a?x=1",
            headers=headers,
            stream=stream,
            extensions={"timeout": {"pool": 1.0}},
        )
        built = self.built_request(request, upstream, stream)
        copied = self.copied_request(request, upstream, stream)
        return (
            type(copied) is type(built)
            and vars(copied).keys() == vars(built).keys()
            and (copied.method, copied.url, copied.extensions, copied.stream)
            == (built.method, built.url, built.extensions, built.stream)
            and copied.extensions is not request.extensions
            and type(copied.headers) is type(built.headers)
            and vars(copied.headers) == vars(built.headers)
        )

    def parsed_url(self, request_url: httpx.URL, base: str) -> httpx.URL:
        """``base`` followed by the request's raw path and query, parsed again."""
        return self._url(base + request_url.raw_path.decode("ascii"))

    def _parse_base(self, base: str) -> tuple[type[Any], tuple[Any, ...], str, tuple[Any, ...]]:
        """The parsed form of ``base``: its class, the fields before its path,
        its path, and the fields after the query (which must come next)."""
        prefix = self._url(base)._uri_reference
        fields = type(prefix)._fields
        at = fields.index("path")
        if fields[at + 1] != "query":
            raise TypeError(f"unexpected URL fields: {fields}")
        return type(prefix), tuple(prefix[:at]), prefix.path, tuple(prefix[at + 2 :])

    def joined_url(self, request_url: httpx.URL, base: str) -> httpx.URL:
        """The same URL as ``parsed_url`` without parsing it again: both parts were
        validated and normalised when their own URL was built, and parsing is
        most of what this module costs a request. Uses the URL's parsed form (a
        private attribute), so it is taken only if the check below passes."""
        parts = request_url._uri_reference
        parsed, before, path, after = self._parsed_base(base)
        url = self._url.__new__(self._url)
        url._uri_reference = tuple.__new__(
            parsed, (*before, path + (parts.path or "/"), parts.query, *after)
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
