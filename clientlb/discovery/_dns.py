"""``DNS``: endpoints from A/AAAA or SRV records, re-resolved as their TTL runs out.

The lookup is a generator that yields the queries it needs and receives their
replies (``_flow``), driven by dnspython's resolver in ``lookup()``: every decision
(which names to ask, how SRV priorities map to tiers, when to ask again) lives in
the generator. The sync driver calls ``lookup()`` in its thread; the async driver
(asyncio or trio) runs it in a worker thread, because dnspython parses an answer of
64 KiB (some 4,000 records) in about 80 ms, far too long for an event loop.
"""

from __future__ import annotations

import ipaddress
import math
import threading
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio.to_thread

from .._core import ConfigError, Upstream
from .._core._turns import taking_turns
from ._base import Endpoints, Feed, Provider, positive

if TYPE_CHECKING:
    import dns.resolver

INSTALL_HINT = "clientlb.discovery.DNS needs dnspython: pip install 'clientlb[dns]'"


@dataclass(frozen=True, slots=True)
class Query:
    name: str
    rdtype: str  # "A", "AAAA" or "SRV"


@dataclass(frozen=True, slots=True)
class Reply:
    """Addresses (A/AAAA) or ``(target, port, priority, weight)`` (SRV), the
    record TTL, and the addresses the additional section gave for other names."""

    records: tuple[Any, ...] = ()
    ttl: float = math.inf
    extra: dict[str, tuple[str, ...]] = field(default_factory=dict)


Flow = Generator[Query, Reply, tuple[Endpoints, float]]


def _nameserver(value: str) -> tuple[str, int]:
    """``"host"``, ``"host:port"``, ``"[v6]:port"`` or a bare IPv6 address."""
    host, port = value, 53
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        if rest:
            if not rest.startswith(":") or not rest[1:].isdigit():
                raise ConfigError("nameserver", f"invalid address {value!r}")
            port = int(rest[1:])
    elif value.count(":") == 1:
        host, _, digits = value.partition(":")
        if not digits.isdigit():
            raise ConfigError("nameserver", f"invalid port in {value!r}")
        port = int(digits)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ConfigError("nameserver", f"must be an IP address[:port], got {value!r}") from None
    if not 0 < port < 65536:
        raise ConfigError("nameserver", f"port must be 1-65535 in {value!r}")
    return host, port


def _text(name: object) -> str:
    return str(name).rstrip(".").lower()


class DNS(Provider):
    """Endpoints from DNS: the A and AAAA records of ``name`` (with ``port``), or,
    with ``srv=True``, its SRV records (their own ports and weights; the lowest
    priority are the primaries, the others standbys).

    **Parameters:**

    * **name** - the name to resolve (``_http._tcp.svc.example`` for SRV).
    * **port** - the port of A/AAAA endpoints (default: the scheme's).
    * **nameserver** - ``"ip"`` or ``"ip:port"``; default: the system resolver.
    * **min_ttl**, **max_ttl** - bounds on the seconds between lookups, which
      otherwise follow the records' TTL.
    * **scheme** - ``http`` or ``https``.
    * **timeout** - seconds one lookup may take.

    SRV records that give the same URL twice (one target and port at two
    priorities, or two targets with the same address and port) give one
    upstream, with the weight and tier of the record of lowest priority (the
    first by target name among equals); the answer is applied and a warning
    names them.

    Needs dnspython (``pip install 'clientlb[dns]'``). The async driver runs each
    lookup in a worker thread; when it is cancelled, that thread finishes within
    ``timeout`` seconds and its answer is dropped.
    """

    def __init__(
        self,
        name: str,
        port: int | None = None,
        *,
        nameserver: str | None = None,
        min_ttl: float = 1.0,
        max_ttl: float = 300.0,
        scheme: str = "http",
        srv: bool = False,
        timeout: float = 2.0,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        try:
            import dns.resolver  # noqa: F401
        except ImportError:
            raise ImportError(INSTALL_HINT) from None
        if not isinstance(name, str) or not name.strip(". "):
            raise ConfigError("name", f"must be a DNS name, got {name!r}")
        if port is not None and (
            isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536
        ):
            raise ConfigError("port", f"must be 1-65535, got {port!r}")
        if scheme not in ("http", "https"):
            raise ConfigError("scheme", f"must be http or https, got {scheme!r}")
        self.name = name.rstrip(".")
        self.port = port
        self.scheme = scheme
        self.srv = bool(srv)
        self.nameserver = _nameserver(nameserver) if nameserver is not None else None
        self.min_ttl = positive("min_ttl", min_ttl)
        self.max_ttl = positive("max_ttl", max_ttl)
        if self.max_ttl < self.min_ttl:
            raise ConfigError("max_ttl", f"must be >= min_ttl, got {max_ttl!r}")
        self.timeout = positive("timeout", timeout)

    def __repr__(self) -> str:
        kind = "SRV" if self.srv else "A/AAAA"
        return f"DNS({self.name!r} {kind})"

    # -- decisions (no I/O) -------------------------------------------------------

    def _url(self, address: str, port: int) -> str:
        host = f"[{address}]" if ":" in address else address
        return f"{self.scheme}://{host}:{port}"

    def _addresses(self, name: str) -> Generator[Query, Reply, tuple[list[str], float]]:
        a = yield Query(name, "A")
        aaaa = yield Query(name, "AAAA")
        return [*a.records, *aaaa.records], min(a.ttl, aaaa.ttl)

    def _flow(self) -> Flow:
        """The queries of one lookup; returns the endpoints and their TTL."""
        if not self.srv:
            found, ttl = yield from self._addresses(self.name)
            port = self.port or (443 if self.scheme == "https" else 80)
            given = ((Upstream(self._url(a, port)), False) for a in taking_turns(found))
            return Endpoints.of(given), ttl
        reply = yield Query(self.name, "SRV")
        ttl = reply.ttl
        # target "." means "no service"; priority order, so that of records giving
        # the same URL the first (which ``Endpoints.of`` keeps) is the most preferred
        records = sorted((r for r in reply.records if r[0]), key=lambda r: (r[2], r[0], r[1]))
        top = min((r[2] for r in records), default=0)
        weighted = {r[2] for r in records if r[3]}  # priorities where weights matter
        entries: list[tuple[Upstream, bool]] = []
        origins: list[str] = []
        for target, port, priority, weight in taking_turns(records):
            addresses = reply.extra.get(target)
            if addresses is None:
                found, found_ttl = yield from self._addresses(target)
                addresses, ttl = tuple(found), min(ttl, found_ttl)
            # SRV weight 0: "a very small chance" when others of its priority have
            # weight (RFC 2782); equal shares when none has
            share = weight if weight else (0.01 if priority in weighted else 1)
            for address in addresses:
                entries.append((Upstream(self._url(address, port), share), priority != top))
                origins.append(f"SRV {target}:{port} priority {priority}")
        return Endpoints.of(entries, origins), ttl

    def _delay(self, endpoints: Endpoints, ttl: float) -> float:
        if not endpoints or not math.isfinite(ttl):
            return self.min_ttl
        return min(self.max_ttl, max(self.min_ttl, ttl))

    # -- sync driver ----------------------------------------------------------------

    def _resolver(self) -> dns.resolver.Resolver:
        import dns.resolver

        resolver = dns.resolver.Resolver(configure=self.nameserver is None)
        self._configure(resolver)
        return resolver

    def _configure(self, resolver: dns.resolver.BaseResolver) -> None:
        if self.nameserver is not None:
            resolver.nameservers = [self.nameserver[0]]
            resolver.port = self.nameserver[1]
        resolver.timeout = resolver.lifetime = self.timeout
        resolver.cache = None

    def lookup(self) -> tuple[Endpoints, float]:
        """One lookup: the endpoints and their TTL. Blocking, for at most about
        ``timeout`` seconds per query."""
        import dns.resolver

        resolver = self._resolver()
        flow = self._flow()
        try:
            query = next(flow)
            while True:
                try:
                    answer = resolver.resolve(query.name, query.rdtype, search=False)
                except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
                    reply = Reply()
                else:
                    reply = _reply(answer)
                query = flow.send(reply)
        except StopIteration as done:
            endpoints, ttl = done.value
        return endpoints, ttl

    def poll(self, feed: Feed, stop: threading.Event) -> float:
        endpoints, ttl = self.lookup()
        feed.publish(endpoints)
        return self._delay(endpoints, ttl)

    async def apoll(self, feed: Feed) -> float:
        found = await anyio.to_thread.run_sync(self.lookup, abandon_on_cancel=True)
        endpoints, ttl = found
        await feed.apublish(endpoints)
        return self._delay(endpoints, ttl)


def _reply(answer: dns.resolver.Answer) -> Reply:
    """dnspython's answer as plain values."""
    import dns.rdatatype

    rrset = answer.rrset
    if rrset is None:
        return Reply()
    records: list[Any] = []
    for rdata in rrset:
        if rrset.rdtype == dns.rdatatype.SRV:
            records.append((_text(rdata.target), rdata.port, rdata.priority, rdata.weight))
        else:
            records.append(rdata.address)
    extra: dict[str, tuple[str, ...]] = {}
    for other in answer.response.additional:
        if other.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
            name = _text(other.name)
            extra[name] = extra.get(name, ()) + tuple(r.address for r in other)
    return Reply(tuple(records), float(rrset.ttl), extra)
