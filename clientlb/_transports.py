"""``BalancingTransport`` and ``AsyncBalancingTransport``: httpx transports that
send each request to an upstream the pool picks.

The twins are written side by side and differ only where I/O differs. Each request
is one ``AttemptPlan`` driven by ``clientlb._attempts`` (the first attempt
directly, the rest in a tenacity loop whose verdicts, waits and deadline are the
plan's): all a twin does here is one attempt at one upstream. A request may carry
its own ``RetryPolicy`` in ``extensions["clientlb.retry"]``. A call that ends
with no response raises ``NoUpstreamAvailable``, as the httpx class of its last
error too (``clientlb._errors_map.call_failed``).

The twins' bodies (``SyncShell``, ``AsyncShell``) take every class they build,
check or raise from their ``Library``: the public classes here are those bodies
on httpx, and ``clientlb.httpx2`` has the same bodies on httpx2.
"""

from __future__ import annotations

import operator
import ssl
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, ClassVar, Generic, Self, TypeVar, cast

from ._attempts import (
    ATTEMPTS_EXTENSION,
    DECISION_EXTENSION,
    EXPLAIN_EXTENSION,
    Rules,
    adrive,
    drive,
    express_answered,
    express_failed,
    express_lease,
)
from ._background import AsyncBackground, Background
from ._core import (
    Algorithm,
    AttemptPlan,
    ConfigError,
    HealthCheck,
    Lease,
    NoUpstream,
    Outcome,
    OutlierDetection,
    Pool,
    RetryPolicy,
    Subset,
    Upstream,
)
from ._errors_map import call_failed
from ._events import log_events
from ._exceptions import NoUpstreamAvailable, UnknownService
from ._httpx import httpx
from ._inners import Inners
from ._keys import check_key_need, parse_hash_on
from ._library import Library
from ._metrics import Metrics, watch_pools
from ._options import UNSET, PoolSource, Unset, given
from ._routing import HashOn, build_pools, key_function
from ._tls import Verify, default_context, tls_context
from ._tracing import annotate
from .discovery import Provider

RETRY_EXTENSION = "clientlb.retry"  # a request's own RetryPolicy
DEFAULT_POOL_TIMEOUT = httpx.Timeout(5.0).pool  # httpx's own default (httpx2's too)

HTTPX = Library(httpx, NoUpstreamAvailable, UnknownService)

#: ``Readdress.request``: the request an upstream receives.
Readdressing = Callable[[httpx.Request, Upstream, Any], httpx.Request]

T = TypeVar("T")  # the library's BaseTransport (or AsyncBaseTransport)
Q = TypeVar("Q")  # the library's Request, which a hash_on= callable takes


class _Balancer:
    """What the twins share: configuration, routing and bookkeeping."""

    _library: ClassVar[Library]

    def __init__(
        self,
        upstreams: PoolSource | None,
        standbys: Iterable[str | Upstream],
        services: Mapping[str, PoolSource] | None,
        hash_on: HashOn,
        pool_options: dict[str, Any],
        verify: Verify = True,
        inner_given: bool = False,
        metrics: Metrics | None = None,
    ) -> None:
        self._pool, self._services = build_pools(upstreams, standbys, services, pool_options)
        for pool in self.pools.values():
            log_events(pool)
        self.metrics = watch_pools(metrics, self.pools)
        source = parse_hash_on(hash_on)
        check_key_need(self.pools, source, client_address=False)
        self._key = key_function(source)
        if inner_given and verify is not True:
            raise ConfigError("verify", "give verify= to the inner= transport, not to clientlb")
        self._tls = tls_context(verify, self._library.module)
        self._replayable_rules: dict[float | None, Rules[httpx.Response]] = {}

    def _ssl_context(self) -> ssl.SSLContext:
        """The one context every upstream's inner transport verifies with."""
        return self._tls if self._tls is not None else default_context(self._library.module)

    @property
    def pool(self) -> Pool:
        """The pool (single-pool transports only)."""
        if self._pool is None:
            raise AttributeError("this transport serves several services; see .pools")
        return self._pool

    @property
    def pools(self) -> dict[str, Pool]:
        """Every pool, by service name (``"default"`` for a single pool)."""
        return dict(self._services) if self._pool is None else {"default": self._pool}

    def snapshot(self) -> dict[str, Any]:
        """The pool's snapshot, or each service's by name."""
        if self._pool is not None:
            return self._pool.snapshot()
        return {name: pool.snapshot() for name, pool in self._services.items()}

    def _background_work(self) -> list[tuple[Pool, dict[str, Any]]]:
        """The pools with active checks, discovery or probes to run, each with the
        arguments of its runner (which stands by while another owner of a shared
        pool runs them)."""
        return [
            (
                pool,
                {
                    "health_check": pool.health_check,
                    "discovery": pool.discovery,
                    "verify": self._ssl_context() if pool.health_check is not None else True,
                    "owner": self,
                    "library": self._library.module,
                },
            )
            for pool in self.pools.values()
            if pool.has_background_work
        ]

    def _service(self, request: httpx.Request) -> Pool | None:
        """The pool of the request's host (transports of several services)."""
        return self._services.get(request.url.host)

    def _plan(self, pool: Pool, request: httpx.Request) -> AttemptPlan:
        key = self._key(request) if pool.algorithm.hashes else None
        extensions = request.extensions
        policy = extensions.get(RETRY_EXTENSION)
        if policy is not None and not isinstance(policy, RetryPolicy):
            raise ConfigError(RETRY_EXTENSION, f"expected a clientlb.RetryPolicy, got {policy!r}")
        explain = extensions.get(EXPLAIN_EXTENSION) is True
        return AttemptPlan(pool, request.method, key, policy, None, explain)

    def _keep(self, response: httpx.Response, lease: Lease) -> httpx.Response:
        raise NotImplementedError

    def _rules(self, request: httpx.Request, body: Any) -> Rules[httpx.Response]:
        """The driver's rules for ``request``; ``body``: its tracked stream, or
        ``None`` when it is held in memory. Those of a body in memory differ only
        by the pool timeout, which clients set for all their requests: one each
        is kept (a few dozen at most)."""
        # httpx's pool timeout (how long to wait for a connection; here, for a
        # slot), httpx's default when the request has none
        timeouts = request.extensions.get("timeout")
        queue_timeout: float | None = (
            DEFAULT_POOL_TIMEOUT if timeouts is None else timeouts.get("pool", DEFAULT_POOL_TIMEOUT)
        )
        if body is not None:
            return Rules(
                _status,
                self._keep,
                lambda: not body.started,
                False,
                queue_timeout,
                self._library.ReadTimeout,
            )
        rules = self._replayable_rules.get(queue_timeout)
        if rules is None:
            rules = Rules(
                _status, self._keep, _replayable, True, queue_timeout, self._library.ReadTimeout
            )
            if len(self._replayable_rules) < 32:
                self._replayable_rules[queue_timeout] = rules
        return rules


def _replayable() -> bool:
    return True


#: A response's status, as the driver asks for it: a C call, no Python frame.
_status: Callable[[httpx.Response], int] = operator.attrgetter("status_code")


def _within(request: httpx.Request, timeout: float) -> httpx.Request:
    """``request`` with httpx's timeouts no longer than ``timeout``."""
    given = request.extensions.get("timeout") or {}
    bounded = {
        name: timeout if given.get(name) is None else min(given[name], timeout)
        for name in ("connect", "read", "write", "pool")
    }
    request.extensions = {**request.extensions, "timeout": bounded}
    return request


class SyncShell(_Balancer, Generic[T, Q]):
    """``BalancingTransport`` on any ``Library`` (``T``: its ``BaseTransport``,
    ``Q``: its ``Request``)."""

    def __init__(
        self,
        upstreams: PoolSource | None = None,
        standbys: Iterable[str | Upstream] = (),
        algorithm: str | Algorithm | Unset = UNSET,
        *,
        services: Mapping[str, PoolSource] | None = None,
        fallback: T | None = None,
        inner: T | None = None,
        hash_on: Callable[[Q], str | None] | str | None = None,
        retry: RetryPolicy | Unset | None = UNSET,
        outlier: OutlierDetection | Unset | None = UNSET,
        slow_start: float | Unset = UNSET,
        fail_back_after: float | Unset = UNSET,
        health_check: HealthCheck | Unset | None = UNSET,
        discovery: Provider | Iterable[Provider] | Unset | None = UNSET,
        max_connections: int | Unset | None = UNSET,
        max_pending: int | Unset = UNSET,
        subset: Subset | Unset | None = UNSET,
        verify: Verify = True,
        metrics: Metrics | None = None,
    ) -> None:
        options = given(
            algorithm=algorithm,
            retry=retry,
            outlier=outlier,
            slow_start=slow_start,
            fail_back_after=fail_back_after,
            health_check=health_check,
            discovery=discovery,
            max_connections=max_connections,
            max_pending=max_pending,
            subset=subset,
        )
        key: HashOn = cast(HashOn, hash_on)
        super().__init__(
            upstreams, standbys, services, key, options, verify, inner is not None, metrics
        )
        library = self._library
        self._fallback = cast("httpx.BaseTransport | None", fallback)
        given_inner = cast("httpx.BaseTransport | None", inner)
        self._leased = library.streams.leased_sync  # a response's body, holding its lease
        self._inners: Inners[httpx.BaseTransport] = Inners(
            given_inner,
            lambda: library.HTTPTransport(verify=self._ssl_context()),
            self.pools.values(),
        )
        self._background = [
            Background(pool, transport=given_inner, **options).start()
            for pool, options in self._background_work()
        ]

    def _keep(self, response: httpx.Response, lease: Lease) -> httpx.Response:
        if response.is_closed:  # a body read in full already (mocks): nothing to hold
            lease.finish(Outcome.SUCCESS)
        else:
            response.stream = self._leased(response.stream, lease)  # type: ignore[arg-type,assignment]
        return response

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        for background in self._background:
            background.ensure_running()
        library = self._library
        pool = self._pool
        if pool is None and (pool := self._service(request)) is None:
            if self._fallback is not None:
                return self._fallback.handle_request(request)
            raise library.unknown_service(f"no service named {request.url.host!r}", request=request)
        plan = self._plan(pool, request)
        stream: Any = request.stream
        body = None
        if not isinstance(stream, library.ByteStream):  # is_replayable(), without its frame
            assert isinstance(stream, library.SyncByteStream)
            stream = body = library.streams.tracked_sync(stream)
        try:
            rules = self._rules(request, body)
            # The first attempt made here, as the driver would (see express_lease):
            # the driver is called only when it must wait, time or judge.
            settled: tuple[httpx.Response | None, Exception | None] | None = None
            lease = express_lease(plan)
            if lease is not None:
                inners = self._inners
                try:
                    if inners.retired:
                        for retired in inners.take_retired():
                            retired.close()
                    upstream = lease.member.upstream  # not the property's frame
                    sent = library.readdress.request(request, upstream, stream)
                    response = inners.get(upstream).handle_request(sent)
                except BaseException as error:
                    settled = None, express_failed(plan, rules, lease, error, timed=False)
                else:
                    response = express_answered(plan, rules, lease, response)
                    if rules.status(response) in plan.policy.retry_on_status:
                        settled = response, None
            if lease is None or settled is not None:
                attempt = self._attempt(request, stream)
                response = drive(plan, attempt, rules, library.Response.close, settled)
        except NoUpstream as exc:
            raise call_failed(exc, plan.history, library.no_upstream) from exc
        except library.TransportError as error:
            failed = call_failed(error, plan.history, library.no_upstream, library.TransportError)
            raise failed from error
        finally:
            if self.metrics is not None:
                self.metrics.observe(plan)
        extensions = response.extensions
        extensions[ATTEMPTS_EXTENSION] = history = plan.history
        extensions[DECISION_EXTENSION] = decision = plan.decision()
        annotate(decision, history)
        return response

    def _attempt(
        self, request: httpx.Request, stream: Any
    ) -> Callable[[Lease, float | None], httpx.Response]:
        """The driver's attempt: ``request`` (whose body is ``stream``) sent once."""

        # What an attempt needs, bound as defaults: no closure cells to read.
        def attempt(
            lease: Lease,
            timeout: float | None,
            request: httpx.Request = request,
            stream: Any = stream,
            readdress: Readdressing = self._library.readdress.request,
            inners: Inners[httpx.BaseTransport] = self._inners,
        ) -> httpx.Response:
            if inners.retired:
                for retired in inners.take_retired():
                    retired.close()
            upstream = lease.upstream
            sent = readdress(request, upstream, stream)
            if timeout is not None:
                sent = _within(sent, timeout)
            return inners.get(upstream).handle_request(sent)

        return attempt

    def close(self) -> None:
        for background in self._background:
            background.close()
        for inner in self._inners.take_all():
            inner.close()
        if self._fallback is not None:
            self._fallback.close()


class AsyncShell(_Balancer, Generic[T, Q]):
    """``AsyncBalancingTransport`` on any ``Library`` (``T``: its
    ``AsyncBaseTransport``, ``Q``: its ``Request``)."""

    def __init__(
        self,
        upstreams: PoolSource | None = None,
        standbys: Iterable[str | Upstream] = (),
        algorithm: str | Algorithm | Unset = UNSET,
        *,
        services: Mapping[str, PoolSource] | None = None,
        fallback: T | None = None,
        inner: T | None = None,
        hash_on: Callable[[Q], str | None] | str | None = None,
        retry: RetryPolicy | Unset | None = UNSET,
        outlier: OutlierDetection | Unset | None = UNSET,
        slow_start: float | Unset = UNSET,
        fail_back_after: float | Unset = UNSET,
        health_check: HealthCheck | Unset | None = UNSET,
        discovery: Provider | Iterable[Provider] | Unset | None = UNSET,
        max_connections: int | Unset | None = UNSET,
        max_pending: int | Unset = UNSET,
        subset: Subset | Unset | None = UNSET,
        verify: Verify = True,
        metrics: Metrics | None = None,
    ) -> None:
        options = given(
            algorithm=algorithm,
            retry=retry,
            outlier=outlier,
            slow_start=slow_start,
            fail_back_after=fail_back_after,
            health_check=health_check,
            discovery=discovery,
            max_connections=max_connections,
            max_pending=max_pending,
            subset=subset,
        )
        key: HashOn = cast(HashOn, hash_on)
        super().__init__(
            upstreams, standbys, services, key, options, verify, inner is not None, metrics
        )
        library = self._library
        self._fallback = cast("httpx.AsyncBaseTransport | None", fallback)
        given_inner = cast("httpx.AsyncBaseTransport | None", inner)
        self._leased = library.streams.leased_async  # a response's body, holding its lease
        self._inners: Inners[httpx.AsyncBaseTransport] = Inners(
            given_inner,
            lambda: library.AsyncHTTPTransport(verify=self._ssl_context()),
            self.pools.values(),
        )
        self._background = [
            AsyncBackground(pool, transport=given_inner, **options)
            for pool, options in self._background_work()
        ]

    async def __aenter__(self) -> Self:
        """Start the pools' health checks and discovery (``async with`` the client or
        the transport); they stop in ``aclose()``."""
        for background in self._background:
            if background.idle:
                await background.start()
        return self

    def _keep(self, response: httpx.Response, lease: Lease) -> httpx.Response:
        if response.is_closed:
            lease.finish(Outcome.SUCCESS)
        else:
            response.stream = self._leased(response.stream, lease)  # type: ignore[arg-type,assignment]
        return response

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        for background in self._background:
            if background.idle:  # nobody entered the transport: start with a request
                await background.start_detached()
        library = self._library
        pool = self._pool
        if pool is None and (pool := self._service(request)) is None:
            if self._fallback is not None:
                return await self._fallback.handle_async_request(request)
            raise library.unknown_service(f"no service named {request.url.host!r}", request=request)
        plan = self._plan(pool, request)
        stream: Any = request.stream
        body = None
        if not isinstance(stream, library.ByteStream):  # is_replayable(), without its frame
            assert isinstance(stream, library.AsyncByteStream)
            stream = body = library.streams.tracked_async(stream)
        try:
            rules = self._rules(request, body)
            # The first attempt made here, as the driver would (see express_lease):
            # the driver's coroutine runs only when it must wait, time or judge.
            settled: tuple[httpx.Response | None, Exception | None] | None = None
            lease = express_lease(plan)
            if lease is not None:
                inners = self._inners
                try:
                    if inners.retired:
                        for retired in inners.take_retired():
                            await retired.aclose()
                    upstream = lease.member.upstream  # not the property's frame
                    sent = library.readdress.request(request, upstream, stream)
                    response = await inners.get(upstream).handle_async_request(sent)
                except BaseException as error:
                    settled = None, express_failed(plan, rules, lease, error)
                else:
                    response = express_answered(plan, rules, lease, response)
                    if rules.status(response) in plan.policy.retry_on_status:
                        settled = response, None
            if lease is None or settled is not None:
                attempt = self._attempt(request, stream)
                response = await adrive(plan, attempt, rules, library.Response.aclose, settled)
        except NoUpstream as exc:
            raise call_failed(exc, plan.history, library.no_upstream) from exc
        except library.TransportError as error:
            failed = call_failed(error, plan.history, library.no_upstream, library.TransportError)
            raise failed from error
        finally:
            if self.metrics is not None:
                self.metrics.observe(plan)
        extensions = response.extensions
        extensions[ATTEMPTS_EXTENSION] = history = plan.history
        extensions[DECISION_EXTENSION] = decision = plan.decision()
        annotate(decision, history)
        return response

    def _attempt(
        self, request: httpx.Request, stream: Any
    ) -> Callable[[Lease, float | None], Awaitable[httpx.Response]]:
        """The driver's attempt: ``request`` (whose body is ``stream``) sent once."""

        # What an attempt needs, bound as defaults: no closure cells to read.
        async def attempt(
            lease: Lease,
            timeout: float | None,
            request: httpx.Request = request,
            stream: Any = stream,
            readdress: Readdressing = self._library.readdress.request,
            inners: Inners[httpx.AsyncBaseTransport] = self._inners,
        ) -> httpx.Response:
            if inners.retired:
                for retired in inners.take_retired():
                    await retired.aclose()
            upstream = lease.upstream
            sent = readdress(request, upstream, stream)
            if timeout is not None:
                sent = _within(sent, timeout)
            return await inners.get(upstream).handle_async_request(sent)

        return attempt

    async def aclose(self) -> None:
        for background in reversed(self._background):  # task groups close in reverse
            await background.aclose()
        for inner in self._inners.take_all():
            await inner.aclose()
        if self._fallback is not None:
            await self._fallback.aclose()


class BalancingTransport(SyncShell[httpx.BaseTransport, httpx.Request], httpx.BaseTransport):
    """A sync httpx transport that balances requests over upstream replicas.

    **Parameters:**

    * **upstreams** - primary upstream URLs or ``Upstream`` objects, or a ``Pool``.
    * **standbys** - passive upstreams, used only while no primary can serve.
    * **algorithm** - an algorithm name (``clientlb.ALGORITHMS``) or object.
    * **services** - instead of ``upstreams``: ``{host: Pool or URLs}``; the
      request's host picks the pool.
    * **fallback** - the transport for hosts not in ``services``; without it they
      raise ``UnknownService``.
    * **inner** - the transport that does the I/O, shared by every upstream (by
      default each upstream gets an ``httpx.HTTPTransport()`` of its own).
    * **verify** - how HTTPS upstreams are verified by the inner transports this
      transport makes and by its health checks: ``True`` (httpx's default),
      ``False``, a CA bundle path or an ``ssl.SSLContext``. One context serves
      every upstream. With ``inner=``, configure that transport instead.
    * **hash_on** - the key of the hashing algorithms (``ip_hash``,
      ``consistent_hash``), which need one here (a transport has no client
      address): ``"header:NAME"``, ``"cookie:NAME"`` (from the request's
      ``Cookie`` header) or a callable of the ``httpx.Request`` returning a
      ``str`` or ``None``. A request without a key is placed at random. Given
      with no hashing pool it is a ``ConfigError``; with ``services=``, it serves
      the services whose pools hash.
    * **retry**, **outlier**, **slow_start**, **fail_back_after**, **health_check**,
      **discovery**, **max_connections**, **max_pending**, **subset** - passed to the pools this
      transport builds (see ``Pool``, whose defaults they have); beside a ``Pool``
      of yours they are a ``ConfigError``. A request that waits for a slot (every
      upstream at its ``max_connections``, within ``max_pending``) waits at most
      its httpx ``pool`` timeout, and no longer than its ``RetryPolicy.timeout``.
      The transport runs its pools' active health checks, discovery and connect
      probes in threads until ``close()`` (started again by the first request
      in a forked child).
    * **metrics** - a ``clientlb.Metrics`` that counts each request of this
      transport and its pools' events (each pool under its service name, or
      ``"default"``); ``None`` (the default) counts nothing.

    Safe to share between threads.
    """

    _library = HTTPX


class AsyncBalancingTransport(
    AsyncShell[httpx.AsyncBaseTransport, httpx.Request], httpx.AsyncBaseTransport
):
    """The async twin of ``BalancingTransport`` (same parameters; by default each
    upstream gets an ``httpx.AsyncHTTPTransport()``). Works under asyncio and trio.

    Active health checks, discovery and connect probes run as tasks from
    ``__aenter__`` (entered by ``async with httpx.AsyncClient(transport=...)``)
    until ``aclose()``; a transport nobody entered (a module-level client) starts
    them with its first request, in a task of their own.
    """

    _library = HTTPX
