"""What the ASGI and WSGI proxies share: the pool, the header policy, timeouts,
the retry-body limit, and the one log line a failed request leaves."""

from __future__ import annotations

import logging
import re
import ssl
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from .._core import Attempt, ConfigError, Lease, Pins, Pool, StickyCookie, Upstream
from .._core._policies import flag
from .._errors_map import ErrorReply
from .._events import log_events
from .._keys import HashOnOption, KeySource, check_key_need, parse_hash_on
from .._metrics import Metrics, watch_pools
from .._options import as_pool
from .._tls import Verify, default_context, tls_context
from ._engines import DEFAULT_TIMEOUTS, Timeouts
from ._headers import HeaderPolicy, host_header
from ._limits import DEFAULT_LIMITS, DEFAULT_WEBSOCKETS, Limits, WebSocketSettings

log = logging.getLogger("clientlb.proxy")
#: An HTTP header name (RFC 9110 token).
HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")

DEFAULT_RETRY_BODY_LIMIT = 64 * 1024
#: Bodies held whole for retries live in memory, one per request: 64 MiB is a
#: generous ceiling for a setting meant in kilobytes.
MAX_RETRY_BODY_LIMIT = 64 * 1024 * 1024


class ProxyBase:
    """Configuration common to ``ProxyApp`` and ``WSGIProxy`` (see their docs)."""

    def _background_work(self) -> tuple[Any, Any] | None:
        """The pool's checks, discovery and probes, which this proxy runs;
        ``None`` when there are none. (Of several owners of a shared pool, one at
        a time runs them: see ``clientlb._background``.)"""
        pool = self.pool
        if not pool.has_background_work:
            return None
        return pool.health_check, pool.discovery

    def __init__(
        self,
        upstreams: Iterable[str | Upstream] | Pool | None,
        standbys: Iterable[str | Upstream],
        *,
        pool: Pool | None,
        options: dict[str, Any],
        hash_on: HashOnOption = None,
        sticky: StickyCookie | None = None,
        trusted_proxies: Iterable[str] = (),
        preserve_host: bool = False,
        retry_body_limit: int = DEFAULT_RETRY_BODY_LIMIT,
        timeout: Any = DEFAULT_TIMEOUTS,
        verify: Verify = True,
        limits: Limits = DEFAULT_LIMITS,
        websockets: WebSocketSettings = DEFAULT_WEBSOCKETS,
        access_log: bool = False,
        decision_header: str | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        if not isinstance(limits, Limits):
            raise ConfigError("limits", f"expected a clientlb.Limits, got {limits!r}")
        if not isinstance(websockets, WebSocketSettings):
            raise ConfigError(
                "websockets", f"expected a clientlb.WebSocketSettings, got {websockets!r}"
            )
        self.limits = limits
        flag("access_log", access_log)
        self.access_log = access_log
        if decision_header is not None and (
            not isinstance(decision_header, str) or not HEADER_NAME.fullmatch(decision_header)
        ):
            raise ConfigError(
                "decision_header",
                f"expected a header name such as X-Upstream, got {decision_header!r}",
            )
        #: The response header that carries the decision record, lower-cased (opt-in).
        self.decision_header = decision_header.lower().encode("ascii") if decision_header else None
        self.websockets = websockets
        self.open_websockets = 0  # relayed now, by either path, against max_open
        if pool is not None:
            if upstreams is not None:
                raise ConfigError("pool", "give either pool= or upstreams=, not both")
            if not isinstance(pool, Pool):
                raise ConfigError("pool", f"expected a clientlb.Pool, got {pool!r}")
            upstreams = pool
        if upstreams is None:
            raise ConfigError("upstreams", "give upstreams= (a list of URLs) or pool=")
        self.pool = as_pool(upstreams, standbys, options)
        log_events(self.pool)
        self.metrics = watch_pools(metrics, {"default": self.pool})
        self.hash_on: KeySource = parse_hash_on(hash_on)
        check_key_need({"default": self.pool}, self.hash_on, client_address=True)
        if sticky is not None and not isinstance(sticky, StickyCookie):
            raise ConfigError("sticky", f"expected a clientlb.StickyCookie or None, got {sticky!r}")
        self.pins = Pins(sticky, self.pool) if sticky is not None else None
        flag("preserve_host", preserve_host)
        try:
            self.policy = HeaderPolicy(trusted_proxies, preserve_host)
        except (ValueError, TypeError) as exc:
            raise ConfigError("trusted_proxies", str(exc)) from None
        if (
            isinstance(retry_body_limit, bool)
            or not isinstance(retry_body_limit, int)
            or not 0 <= retry_body_limit <= MAX_RETRY_BODY_LIMIT
        ):
            raise ConfigError(
                "retry_body_limit",
                f"must be a whole number from 0 to {MAX_RETRY_BODY_LIMIT}, "
                f"got {retry_body_limit!r}",
            )
        self.retry_body_limit = retry_body_limit
        try:
            self.timeouts = Timeouts.of(timeout)
        except ConfigError as exc:
            if exc.field == "timeout":
                raise
            raise ConfigError(f"timeout.{exc.field}", str(exc).split(": ", 1)[-1]) from None
        except ValueError as exc:
            raise ConfigError("timeout", str(exc)) from None
        if isinstance(verify, str) and "\0" in verify:
            raise ConfigError("verify", f"a CA bundle path has no NUL, got {verify!r}")
        self._tls = tls_context(verify)
        self._hosts: dict[str, tuple[bytes, bytes]] = {}

    @property
    def ssl_context(self) -> ssl.SSLContext:
        """The context HTTPS and WSS upstreams are verified with (``verify=``)."""
        return self._tls if self._tls is not None else default_context()

    def upstream_parts(self, upstream: Upstream) -> tuple[bytes, bytes]:
        """The upstream's Host header value and path prefix, as bytes (cached)."""
        parts = self._hosts.get(upstream.key)
        if parts is None:
            host = host_header(upstream.host, upstream.port, upstream.scheme)
            parts = self._hosts[upstream.key] = (host, upstream.prefix.encode("latin-1"))
        return parts

    #: ``hash_on``'s key of a request (the shell's: a scope or an environ).
    key_of: Callable[[Any], str | None] | None = None

    def hash_key(self, request: Any, client: str | None) -> str | None:
        """The key a hashing algorithm hashes: ``hash_on``'s, else the client
        address; ``None`` for the other algorithms. A ``hash_on`` callable that
        raises is logged and the client address used: the request still goes."""
        if not self.pool.algorithm.hashes:
            return None
        key_of = self.key_of
        if key_of is None:
            return client
        try:
            key = key_of(request)
        except Exception:
            log.exception("hash_on raised; hashing the client address instead")
            return client
        return key or client

    def pin(self, token: str | None) -> str | None:
        """The upstream key a sticky cookie's ``token`` pins the client to."""
        pins = self.pins
        return None if pins is None else pins.pinned(token)

    def set_cookie(self, token: str | None, upstream: Upstream) -> str | None:
        """The ``Set-Cookie`` value that pins the client to ``upstream`` (which
        answered it); ``None`` without stickiness or when the request's cookie,
        ``token``, named it already."""
        pins = self.pins
        if pins is None:
            return None
        fresh = pins.token(upstream)
        return None if fresh == token else pins.set_cookie(fresh)

    def snapshot(self) -> dict[str, Any]:
        """The pool's snapshot (see ``Pool.snapshot``)."""
        return self.pool.snapshot()


def log_failure(
    method: str,
    path: str,
    reply: ErrorReply,
    detail: object,
    lease: Lease | None,
    attempts: Sequence[Attempt] = (),
) -> None:
    """The one line a request answered by the proxy itself leaves: a warning when
    an upstream failed, information when the request was refused; with the
    attempts when there were several."""
    where = f" from {lease.upstream.url}" if lease is not None else ""
    detail = str(detail or "-")
    why = "" if detail == reply.reason else f": {detail}"
    tries = ""
    if len(attempts) > 1:
        tries = (
            " (attempts: "
            + ", ".join(
                f"{a.upstream} {a.status if a.status is not None else a.outcome}" for a in attempts
            )
            + ")"
        )
    level = logging.WARNING if reply.status >= 500 else logging.INFO
    log.log(
        level, "%s %s -> %d %s%s%s%s", method, path, reply.status, reply.reason, where, why, tries
    )
