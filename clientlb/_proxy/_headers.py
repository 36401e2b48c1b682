"""The proxy's header and target policy, sans-IO.

This module contains no networking code and imports neither starlette nor httpx:
the ASGI and WSGI shells hand it the request line parts and header list they
received and get back what to send upstream. Rules, in one place:

* Hop-by-hop headers (RFC 9110 7.6.1: Connection, Keep-Alive, TE, Trailer,
  Transfer-Encoding, Upgrade, Proxy-Authorization, Proxy-Authenticate,
  Proxy-Connection) and every header named in ``Connection`` stay on their hop.
  ``Expect`` is answered by the server in front of the proxy, so it is not
  forwarded either.
* ``X-Forwarded-For`` gets the peer address appended. A client-sent value is kept
  only when the peer is one of ``trusted_proxies``; otherwise it is replaced.
  ``X-Forwarded-Proto`` and ``X-Forwarded-Host`` are set the same way: a trusted
  peer's values stand, anyone else's are overwritten.
* ``Host`` is the upstream's, unless ``preserve_host`` keeps the client's. A
  request with two Host headers, an HTTP/1.1 request with none, or a Host that is
  not a plain ``host[:port]`` is refused (400, RFC 9112 3.2).
* Framing is the proxy's own: the client's ``Content-Length`` and
  ``Transfer-Encoding`` are checked (``clientlb._http1.request_framing``: both at
  once is 400, a coding other than chunked 501) and never forwarded; the engine
  frames the body it actually sends. CONNECT is refused (405): the proxy forwards
  requests, it does not open tunnels.
* The upstream request target is the upstream's path prefix followed by the
  client's raw path and query, byte for byte: nothing is decoded, normalised or
  escaped. Under a prefix the path must stay under it: one that climbs out with
  ``..`` (also as ``%2e%2e``, through ``%2f`` or ``\\``, or as Tomcat's ``..;``)
  is refused (400), as Envoy's path normalisation would. An absolute-form target
  (``GET http://elsewhere/ HTTP/1.1``) keeps only its path; where a request goes
  is never taken from the request.
* The client address, for ``ip_hash``, is the peer; when the peer is trusted, it
  is the right-most untrusted ``X-Forwarded-For`` hop.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_to_bytes

from .._http1 import NO_BODY, Framing, ProtocolError, request_framing

Headers = list[tuple[bytes, bytes]]

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-authorization",
        b"proxy-authenticate",
        b"proxy-connection",
    }
)
# Set by the proxy itself, or answered by the server in front of it.
_REPLACED = frozenset(
    {
        b"host",
        b"content-length",
        b"expect",
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"x-forwarded-host",
    }
)
# Framing headers, dropped from responses with no body (1xx, 204, 304).
_FRAMING = frozenset({b"content-length", b"transfer-encoding"})
_DROP_REQUEST = HOP_BY_HOP | _REPLACED

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(values: Iterable[str]) -> tuple[Network, ...]:
    """``trusted_proxies`` entries ("10.0.0.0/8", "127.0.0.1", "::1") as networks.

    Raises ``ValueError`` naming the bad entry.
    """
    if isinstance(values, str):
        values = [values]
    out: list[Network] = []
    for value in values:
        try:
            out.append(ipaddress.ip_network(str(value).strip(), strict=False))
        except ValueError:
            raise ValueError(f"not an IP address or network: {value!r}") from None
    return tuple(out)


# Connection values that name no header beyond the hop-by-hop ones (the usual).
_PLAIN_CONNECTION = frozenset(
    {b"keep-alive", b"Keep-Alive", b"close", b"Close", b"upgrade", b"Upgrade"}
)


def _connection_tokens(value: bytes) -> set[bytes]:
    """The header names a Connection value lists, beyond the hop-by-hop ones."""
    if value in _PLAIN_CONNECTION:
        return set()
    return {t.strip().lower() for t in value.split(b",") if t.strip()} - HOP_BY_HOP


@dataclass(slots=True, init=False)
class Inbound:
    """A request as the proxy forwards it: the headers to send (with no framing
    header, and no Host unless the client's is kept), the client address (the
    hash key), the kept Host, and the framing of the client's body."""

    headers: Headers
    client: str | None
    host: bytes | None
    framing: Framing

    # Its own __init__, as the heads' in ``clientlb._http1._head``.
    def __init__(
        self, headers: Headers, client: str | None, host: bytes | None, framing: Framing
    ) -> None:
        self.headers = headers
        self.client = client
        self.host = host
        self.framing = framing


_MAX_AUTHORITIES = 1024  # Host values remembered by a policy


class HeaderPolicy:
    """What the proxy sends upstream, built once per proxy.

    **Parameters:**

    * **trusted_proxies** - networks whose ``X-Forwarded-*`` headers are believed.
    * **preserve_host** - send the client's ``Host`` instead of the upstream's.
    """

    __slots__ = ("_authorities", "_is_trusted", "networks", "preserve_host")

    def __init__(self, trusted_proxies: Iterable[str] = (), preserve_host: bool = False) -> None:
        self.networks = parse_networks(trusted_proxies)
        self.preserve_host = preserve_host
        self._is_trusted = functools.lru_cache(maxsize=1024)(self._check)
        # Host values seen, and whether each is a plain authority: a service sees
        # few, and a dict look-up is cheaper than the expression.
        self._authorities: dict[bytes, bool] = {}

    def _check(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address.strip().strip("[]"))
        except ValueError:
            return False
        return any(ip in net for net in self.networks)

    def trusted(self, address: str | None) -> bool:
        """Whether ``address`` (a peer or an X-Forwarded-For hop) is a trusted proxy."""
        return bool(self.networks) and address is not None and self._is_trusted(address)

    def request(
        self,
        method: str,
        headers: Iterable[tuple[bytes, bytes]],
        peer: str | None,
        scheme: str,
        http11: bool = True,
    ) -> Inbound:
        """What to send upstream for a request, or ``ProtocolError`` (with the
        status to answer) for one the proxy refuses.

        ``headers`` have lower-case names (as ASGI gives them); ``peer`` is the
        connecting address. Unless the client's ``Host`` is kept, the caller adds
        the upstream's once it knows which upstream (``host_header``).
        """
        if method == "CONNECT":
            raise ProtocolError("CONNECT is not supported", 405)
        out: Headers = []
        named: set[bytes] | None = None
        forwarded_for: list[bytes] = []
        framing_headers: Headers | None = None
        hosts: list[bytes] = []
        proto = fwd_host = None
        for name, value in headers:
            if name in _DROP_REQUEST:
                if name == b"connection":
                    named = (
                        _connection_tokens(value)
                        if named is None
                        else named | _connection_tokens(value)
                    )
                elif name == b"host":
                    hosts.append(value)
                elif name == b"x-forwarded-for":
                    forwarded_for.append(value)
                elif name == b"x-forwarded-proto":
                    proto = value
                elif name == b"x-forwarded-host":
                    fwd_host = value
                elif name in _FRAMING:
                    framing_headers = [(name, value)] + (framing_headers or [])
                continue
            out.append((name, value))
        if len(hosts) > 1 or (http11 and not hosts):
            raise ProtocolError("a request needs exactly one Host header")
        host = hosts[0] if hosts else None
        if host:
            plain = self._authorities.get(host)
            if plain is None:
                if len(self._authorities) >= _MAX_AUTHORITIES:
                    self._authorities.clear()
                plain = self._authorities[host] = is_authority(host)
            if not plain:
                raise ProtocolError("invalid Host header")
        framing = NO_BODY
        if framing_headers is not None:
            framing, _ = request_framing(http11, framing_headers)
        if named:
            out = [(n, v) for n, v in out if n not in named]
        trusted = bool(self.networks) and self.trusted(peer)
        client = peer
        chain = b", ".join(forwarded_for) if trusted and forwarded_for else b""
        if chain:
            client = self._client_from_chain(chain, peer)
        if peer is not None:
            chain = chain + b", " + peer.encode("latin-1") if chain else peer.encode("latin-1")
        kept = host if self.preserve_host and host else None
        if kept is not None:
            out.append((b"host", kept))
        if chain:
            out.append((b"x-forwarded-for", chain))
        out.append((b"x-forwarded-proto", proto if trusted and proto else scheme.encode("latin-1")))
        if trusted and fwd_host:
            out.append((b"x-forwarded-host", fwd_host))
        elif host:
            out.append((b"x-forwarded-host", host))
        return Inbound(out, client, kept, framing)

    def _client_from_chain(self, chain: bytes, peer: str | None) -> str | None:
        hops = [h.strip() for h in chain.decode("latin-1").split(",") if h.strip()]
        for hop in reversed(hops):
            if not self.trusted(hop):
                return hop
        return hops[0] if hops else peer


def response_headers(headers: Sequence[tuple[bytes, bytes]], status: int = 200) -> Headers:
    """Upstream response headers to pass to the client.

    Hop-by-hop headers and those named in ``Connection`` are dropped; the server in
    front re-frames the body (``Content-Length`` is kept unless the upstream also
    sent ``Transfer-Encoding``). A 204 or 304 has no body, so it keeps no framing
    header at all. Repeated headers such as two ``Set-Cookie`` stay repeated and
    in order.
    """
    lowered = [(name.lower(), value) for name, value in headers]
    return relayed_headers(lowered, [f for f in lowered if f[0] in _CONNECTION_OR_CODING], status)


_CONNECTION_OR_CODING = frozenset({b"connection", b"transfer-encoding"})


def relayed_headers(headers: Headers, framing: Headers, status: int = 200) -> Headers:
    """``response_headers()`` of headers whose names are lower-case already, given
    those among them that decide the framing (``framing``: at least every
    Connection and Transfer-Encoding field, as ``clientlb._http1`` sets them
    aside while parsing): one pass that only filters."""
    named: set[bytes] | None = None
    framed = status in (204, 304)
    for name, value in framing:
        if name == b"connection":
            tokens = _connection_tokens(value)
            if tokens:
                named = tokens if named is None else named | tokens
        elif name == b"transfer-encoding":
            framed = True
    drop = HOP_BY_HOP
    if named or framed:
        drop = drop | (named or set()) | ({b"content-length"} if framed else set())
    return [field for field in headers if field[0] not in drop]


def below_mount(raw_path: bytes, mount: bytes) -> bytes:
    """``raw_path`` without the mount point the app is served under: ASGI's
    ``root_path`` (Starlette's ``Mount`` sets it and keeps the full path),
    WSGI's ``SCRIPT_NAME``; both decoded, the path raw. Removed only when the
    path's leading segments decode to it, so a server that already gave the
    path below its root (``uvicorn --root-path``) keeps it whole."""
    mount = mount.rstrip(b"/")
    if not mount:
        return raw_path
    depth = mount.count(b"/")
    parts = raw_path.split(b"/", depth + 1)
    if len(parts) <= depth or unquote_to_bytes(b"/".join(parts[: depth + 1])) != mount:
        return raw_path
    return b"/" + parts[depth + 1] if len(parts) > depth + 1 else b"/"


def scope_path(scope: Mapping[str, Any]) -> bytes:
    """The raw path of an ASGI request, below the app's mount point."""
    raw: bytes = scope.get("raw_path") or scope["path"].encode("utf-8")
    root: str | None = scope.get("root_path")
    return below_mount(raw, root.encode("utf-8")) if root else raw


def request_target(prefix: bytes, raw_path: bytes, query: bytes) -> bytes:
    """The upstream request target: ``prefix`` + the client's raw path and query.

    Nothing is decoded or escaped. An absolute-form path keeps only its path part,
    so the target never names another host. Under a prefix, a path that would
    leave it once decoded and normalised raises ``ProtocolError`` (400).
    """
    if not raw_path.startswith(b"/"):
        if raw_path == b"*":
            raw_path = b"" if prefix else b"*"
        else:
            _, sep, rest = raw_path.partition(b"://")
            raw_path = b"/" + rest.partition(b"/")[2] if sep else b"/" + raw_path
    if prefix and _MAY_CLIMB.search(raw_path) and climbs_out(raw_path):
        raise ProtocolError("the path leaves the upstream's prefix")
    target = prefix + raw_path if prefix else raw_path
    if not target:
        target = b"/"
    return target + b"?" + query if query else target


# What a path needs before it could climb: a dot, or an encoded dot or slash.
_MAY_CLIMB = re.compile(rb"\.|%2e|%2f|%5c|\\", re.IGNORECASE)
_SEPARATORS = re.compile(rb"%2f|%5c|\\", re.IGNORECASE)
_DOT = re.compile(rb"%2e", re.IGNORECASE)


def climbs_out(path: bytes) -> bool:
    """Whether ``path``, with ``%2e``, ``%2f``, ``%5c`` and ``\\`` decoded, has a
    ``..`` segment (``..;params`` included) that goes above its start."""
    decoded = _DOT.sub(b".", _SEPARATORS.sub(b"/", path))
    depth = 0
    for segment in decoded.split(b"/"):
        name = segment.partition(b";")[0]
        if name == b"..":
            if depth == 0:
                return True
            depth -= 1
        elif name not in (b"", b"."):
            depth += 1
    return False


def host_header(host: str, port: int, scheme: str) -> bytes:
    """The ``Host`` value for an upstream: the port is left out when it is the
    scheme's default."""
    netloc = f"[{host}]" if ":" in host else host
    if (scheme, port) in (("http", 80), ("https", 443)):
        return netloc.encode("ascii")
    return f"{netloc}:{port}".encode("ascii")


# host[:port]: a name or IPv4 address, or an IPv6 address in brackets (RFC 9110 7.2).
_AUTHORITY = re.compile(rb"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(:[0-9]{1,5})?")


def is_authority(value: bytes) -> bool:
    """Whether a ``Host`` value is a plain ``host[:port]``, with nothing (``@``,
    ``/``, ``?``, ``#``) that a URL built from it would read as more than a host."""
    match = _AUTHORITY.fullmatch(value)
    return match is not None and (not match[2] or int(match[2][1:]) <= 65535)
