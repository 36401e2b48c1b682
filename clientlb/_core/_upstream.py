"""``Upstream``: one replica's address and weight, validated at construction."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from ._errors import ConfigError
from ._turns import taking_turns

DEFAULT_PORTS = {"http": 80, "https": 443}
#: A DNS name or IPv4 address: letters, digits, '-', '_' and dots.
HOSTNAME = re.compile(r"[a-z0-9_]([a-z0-9_.-]*[a-z0-9_])?\.?")
#: The longest run of characters RFC 3986 allows in a path (``pchar`` and ``/``),
#: and in a path followed by a query (``?`` too).
_PATH = re.compile(r"(?:[A-Za-z0-9._~!$&'()*+,;=:@/-]|%[0-9A-Fa-f]{2})*")
_PATH_QUERY = re.compile(r"(?:[A-Za-z0-9._~!$&'()*+,;=:@/?-]|%[0-9A-Fa-f]{2})*")

#: The range of weights. Every algorithm picks exactly at both ends and with both
#: ends in one pool: the ratio (1e9) leaves the float sums and scores of smooth
#: weighted round robin and random far from rounding trouble, and Maglev still gives
#: the lightest member a slot. DNS SRV weights (0-65535, 0 read as 0.01) fit inside.
MIN_WEIGHT = 0.001
MAX_WEIGHT = 1_000_000
#: The largest ``max_connections``: beyond it a value is a mistake, not a limit.
MAX_CONNECTIONS = 1 << 30


def connection_limit(name: str, value: object, url: str = "") -> int | None:
    """``value`` checked as a ``max_connections``: ``None`` (no limit) or a whole
    number from 1 to ``MAX_CONNECTIONS``."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_CONNECTIONS:
        where = f" for {url}" if url else ""
        raise ConfigError(
            name,
            f"must be None or a whole number from 1 to {MAX_CONNECTIONS}, got {value!r}{where}",
        )
    return value


@dataclass(frozen=True, slots=True)
class Upstream:
    """One upstream replica.

    **Parameters:**

    * **url** - ``scheme://host[:port][/path-prefix]``; scheme ``http`` or ``https``.
      A path prefix is kept and the request path is appended to it.
    * **weight** - a number from ``MIN_WEIGHT`` (0.001) to ``MAX_WEIGHT``
      (1,000,000); weight-aware algorithms send traffic in proportion to it.
    * **max_connections** - requests this upstream may have in flight at once;
      one at its limit is skipped by every algorithm until a request ends.
      ``None`` (the default) takes the pool's ``max_connections``.
    """

    url: str
    weight: float = 1
    max_connections: int | None = None
    scheme: str = field(init=False, compare=False, repr=False)
    host: str = field(init=False, compare=False, repr=False)
    port: int = field(init=False, compare=False, repr=False)
    prefix: str = field(init=False, compare=False, repr=False)
    key: str = field(init=False, compare=False, repr=False)
    authority: str = field(init=False, compare=False, repr=False)
    base: str = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        scheme, host, port, prefix = parse_upstream_url(self.url)
        weight = self.weight
        if isinstance(weight, bool) or not isinstance(weight, int | float):
            raise ConfigError("weight", f"must be a positive number, got {weight!r} for {self.url}")
        if not MIN_WEIGHT <= weight <= MAX_WEIGHT:  # NaN fails too
            raise ConfigError(
                "weight",
                f"must be from {MIN_WEIGHT} to {MAX_WEIGHT:,}, got {weight!r} for {self.url}",
            )
        connection_limit("max_connections", self.max_connections, self.url)
        netloc = f"[{host}]" if ":" in host else host
        object.__setattr__(self, "scheme", scheme)
        object.__setattr__(self, "host", host)
        object.__setattr__(self, "port", port)
        object.__setattr__(self, "prefix", prefix)
        object.__setattr__(self, "key", f"{scheme}://{netloc}:{port}{prefix}")
        authority = netloc if port == DEFAULT_PORTS[scheme] else f"{netloc}:{port}"
        object.__setattr__(self, "authority", authority)  # as in a Host header
        object.__setattr__(self, "base", f"{scheme}://{authority}{prefix}")

    @property
    def netloc(self) -> str:
        """``host:port`` as it appears in a URL (IPv6 hosts in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def __hash__(self) -> int:
        return hash(self.key)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Upstream):
            return self.key == other.key
        return NotImplemented


def path_problem(path: str, *, query: bool = False) -> str | None:
    """Why ``path`` is not a URL path (RFC 3986; ``query`` allows ``?...``), or None."""
    match = (_PATH_QUERY if query else _PATH).match(path)
    end = match.end() if match else 0
    if end == len(path):
        return None
    if path[end] == "%":
        return "'%' must start an escape of two hex digits"
    return f"character {path[end]!r} is not allowed in a URL path"


def control_character(text: str) -> str | None:
    """The first whitespace, control or other invisible character of ``text``."""
    for c in text:
        if c.isspace() or not c.isprintable():
            return c
    return None


def parse_upstream_url(url: object) -> tuple[str, str, int, str]:
    """Split and validate an upstream URL into (scheme, host, port, prefix).

    Whitespace and control characters are refused before splitting: ``urlsplit``
    silently drops tabs and newlines, which would turn a mangled URL into another.
    """
    if not isinstance(url, str) or not url:
        raise ConfigError("url", f"must be a non-empty string, got {url!r}")
    bad = control_character(url)
    if bad is not None:
        raise ConfigError("url", f"whitespace or control character {bad!r} in {url!r}")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ConfigError("url", f"invalid URL {url!r}: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise ConfigError("url", f"scheme must be http or https, got {url!r}")
    host = (parts.hostname or "").lower()
    if not host:
        raise ConfigError("url", f"missing host in {url!r}")
    if parts.username is not None or parts.password is not None:
        raise ConfigError("url", f"credentials are not allowed in an upstream URL: {url!r}")
    if parts.query or parts.fragment or url.endswith(("?", "#")):
        raise ConfigError("url", f"an upstream URL takes no query or fragment: {url!r}")
    if ":" in host:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ConfigError("url", f"invalid IPv6 host in {url!r}") from None
    elif not HOSTNAME.fullmatch(host):
        raise ConfigError("url", f"invalid host in {url!r}")
    if port == 0:
        raise ConfigError("url", f"port must be 1-65535 in {url!r}")
    problem = path_problem(parts.path)
    if problem is not None:
        raise ConfigError("url", f"invalid path prefix in {url!r}: {problem}")
    return scheme, host, port or DEFAULT_PORTS[scheme], parts.path.rstrip("/")


def reusing(known: Iterable[Upstream]) -> Callable[[object, str], Upstream]:
    """``as_upstream``, but a URL string that one of ``known`` stands for exactly
    (weight 1, no limit of its own) gives that one instead of being parsed again:
    a registry's answer repeats thousands of known URLs."""
    plain = {u.url: u for u in taking_turns(known) if u.weight == 1 and u.max_connections is None}

    def parse(value: object, field_name: str) -> Upstream:
        up = plain.get(value) if isinstance(value, str) else None
        return up if up is not None else as_upstream(value, field_name)

    return parse


def as_upstream(value: object, field_name: str = "upstreams") -> Upstream:
    """Accept an ``Upstream`` or a URL string."""
    if isinstance(value, Upstream):
        return value
    if isinstance(value, str):
        try:
            return Upstream(value)
        except ConfigError as exc:
            raise ConfigError(field_name, str(exc)) from None
    raise ConfigError(field_name, f"expected a URL string or Upstream, got {value!r}")
