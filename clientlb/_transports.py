"""``BalancingTransport`` and ``AsyncBalancingTransport``: httpx transports that
send each request to an upstream the pool picks.

The twins are written side by side and differ only where I/O differs. Each request
is one ``AttemptPlan``: the first attempt runs directly (the hot path); a failure
the plan may retry continues in a tenacity loop whose ``retry`` predicate is the
plan's decision, so tenacity drives the attempts and the core decides them.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable, Mapping
from typing import Any, Self

import anyio
import tenacity

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
    Upstream,
)
from ._core._pool import DEFAULT_OUTLIER
from ._errors_map import outcome_of
from ._exceptions import NoUpstreamAvailable, UnknownService
from ._httpx import httpx
from ._inners import Inners
from ._routing import HashOn, PoolSource, build_pools, key_function, upstream_request
from ._streams import (
    LeasedAsyncStream,
    LeasedSyncStream,
    TrackedAsyncStream,
    TrackedSyncStream,
    is_replayable,
)
from ._tls import Verify, default_context, tls_context
from .discovery import Provider

ATTEMPTS_EXTENSION = "clientlb.attempts"
_DEFAULT_OUTLIER = DEFAULT_OUTLIER


class _Exchange:
    """One request's progress across attempts: what the retry predicate reads."""

    __slots__ = ("body", "error", "exhausted", "plan", "request", "response")

    def __init__(self, request: httpx.Request, plan: AttemptPlan, body: Any) -> None:
        self.request = request
        self.plan = plan
        self.body = body  # a Tracked*Stream, or None when the body is in memory
        self.response: httpx.Response | None = None
        self.error: Exception | None = None
        self.exhausted = False

    @property
    def replayable(self) -> bool:
        return self.body is None or not self.body.started

    def should_retry(self, response: httpx.Response | None, error: BaseException | None) -> bool:
        """The plan's verdict on the attempt that just ended."""
        if self.exhausted:
            return False
        if error is not None:
            if not isinstance(error, httpx.TransportError) or isinstance(
                error, NoUpstreamAvailable
            ):
                return False
            return self.plan.retry_after(outcome_of(error), replayable=self.replayable)
        assert response is not None
        if response.status_code not in self.plan.pool.retry.retry_on_status:
            return False
        return self.plan.retry_after(None, status=response.status_code, replayable=self.replayable)

    def tenacity_retry(self, state: tenacity.RetryCallState) -> bool:
        outcome = state.outcome
        assert outcome is not None
        if outcome.failed:
            return self.should_retry(None, outcome.exception())
        return self.should_retry(outcome.result(), None)

    def no_upstream(self) -> NoUpstreamAvailable:
        return NoUpstreamAvailable("no upstream available", attempts=tuple(self.plan.history))

    def give_up(self, error: BaseException) -> None:
        """Attach the attempts to the error that ends the request."""
        if isinstance(error, httpx.TransportError) and not hasattr(error, "attempts"):
            error.attempts = tuple(self.plan.history)  # type: ignore[attr-defined]


class _Balancer:
    """What the twins share: configuration, routing and bookkeeping."""

    def __init__(
        self,
        upstreams: PoolSource | None,
        standbys: Iterable[str | Upstream],
        algorithm: str | Algorithm,
        services: Mapping[str, PoolSource] | None,
        hash_on: HashOn,
        pool_options: dict[str, Any],
        verify: Verify = True,
        inner_given: bool = False,
    ) -> None:
        self._pool, self._services = build_pools(
            upstreams, standbys, algorithm, services, pool_options
        )
        self._key = key_function(hash_on)
        if inner_given and verify is not True:
            raise ConfigError("verify", "give verify= to the inner= transport, not to clientlb")
        self._tls = tls_context(verify)

    def _ssl_context(self) -> ssl.SSLContext:
        """The one context every upstream's inner transport verifies with."""
        return self._tls if self._tls is not None else default_context()

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
        """The pools with active checks or discovery to run, each with the
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
                },
            )
            for pool in self.pools.values()
            if pool.health_check is not None or pool.discovery is not None
        ]

    def _route(self, request: httpx.Request) -> Pool | None:
        if self._pool is not None:
            return self._pool
        return self._services.get(request.url.host)

    def _plan(self, pool: Pool, request: httpx.Request) -> AttemptPlan:
        key = self._key(request) if pool.algorithm.hashes else None
        return AttemptPlan(pool, request.method, key)

    @staticmethod
    def _accept(exchange: _Exchange, lease: Lease, response: httpx.Response) -> None:
        lease.responded(response.status_code)
        exchange.plan.record(lease, "response", response.status_code)
        response.extensions[ATTEMPTS_EXTENSION] = exchange.plan.history


class BalancingTransport(_Balancer, httpx.BaseTransport):
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
    * **hash_on** - the key of hashing algorithms: ``"header:NAME"`` or a callable.
    * **retry**, **outlier**, **slow_start**, **fail_back_after**, **health_check**,
      **discovery** - passed to the pools this transport builds (see ``Pool``); a
      ``Pool`` you pass keeps its own. The transport runs its pools' active health
      checks and discovery in threads until ``close()``.

    Safe to share between threads.
    """

    def __init__(
        self,
        upstreams: PoolSource | None = None,
        standbys: Iterable[str | Upstream] = (),
        algorithm: str | Algorithm = "round_robin",
        *,
        services: Mapping[str, PoolSource] | None = None,
        fallback: httpx.BaseTransport | None = None,
        inner: httpx.BaseTransport | None = None,
        hash_on: HashOn = None,
        retry: RetryPolicy | None = None,
        outlier: OutlierDetection | None = _DEFAULT_OUTLIER,
        slow_start: float = 0.0,
        fail_back_after: float = 0.0,
        health_check: HealthCheck | None = None,
        discovery: Provider | Iterable[Provider] | None = None,
        verify: Verify = True,
    ) -> None:
        options = {
            "retry": retry,
            "outlier": outlier,
            "slow_start": slow_start,
            "fail_back_after": fail_back_after,
            "health_check": health_check,
            "discovery": discovery,
        }
        super().__init__(
            upstreams, standbys, algorithm, services, hash_on, options, verify, inner is not None
        )
        self._fallback = fallback
        self._inners = Inners(
            inner, lambda: httpx.HTTPTransport(verify=self._ssl_context()), self.pools.values()
        )
        self._background = [
            Background(pool, transport=inner, **options).start()
            for pool, options in self._background_work()
        ]

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        pool = self._route(request)
        if pool is None:
            if self._fallback is not None:
                return self._fallback.handle_request(request)
            raise UnknownService(f"no service named {request.url.host!r}", request=request)
        plan = self._plan(pool, request)
        stream = request.stream
        body = None
        if not is_replayable(stream):
            assert isinstance(stream, httpx.SyncByteStream)
            stream = body = TrackedSyncStream(stream)
        exchange = _Exchange(request, plan, body)
        try:
            lease = plan.first()
        except NoUpstream:
            raise exchange.no_upstream() from None
        try:
            response = self._attempt(exchange, lease, stream)
        except Exception as error:
            if not exchange.should_retry(None, error):
                exchange.give_up(error)
                raise
            exchange.error = error
        else:
            if not exchange.should_retry(response, None):
                return response
            exchange.response = response
        return self._retry(exchange, stream)

    def _attempt(self, exchange: _Exchange, lease: Lease, stream: Any) -> httpx.Response:
        if self._inners.retired:
            for retired in self._inners.take_retired():
                retired.close()
        try:
            response = self._inners.get(lease.upstream).handle_request(
                upstream_request(exchange.request, lease.upstream, stream)
            )
        except BaseException as error:
            outcome = outcome_of(error)
            lease.finish(outcome)
            exchange.plan.record(lease, outcome)
            raise
        self._accept(exchange, lease, response)
        if response.is_closed:  # a body read in full already (mocks): nothing to hold
            lease.finish(Outcome.SUCCESS)
        else:
            response.stream = LeasedSyncStream(response.stream, lease)  # type: ignore[arg-type]
        return response

    def _retry(self, exchange: _Exchange, stream: Any) -> httpx.Response:
        wait = exchange.plan.pool.retry.backoff
        retrying = tenacity.Retrying(
            retry=exchange.tenacity_retry,
            wait=tenacity.wait_fixed(wait) if wait else tenacity.wait_none(),
            stop=tenacity.stop_never,
            reraise=True,
        )
        try:
            return retrying(self._next_attempt, exchange, stream)
        except BaseException as error:
            exchange.give_up(error)
            raise

    def _next_attempt(self, exchange: _Exchange, stream: Any) -> httpx.Response:
        try:
            lease = exchange.plan.next()
        except NoUpstream:
            exchange.exhausted = True  # nothing else to try: the last result stands
            if exchange.response is not None:
                return exchange.response
            raise exchange.error or exchange.no_upstream() from None
        if exchange.response is not None:
            exchange.response.close()
            exchange.response = None
        try:
            exchange.response = self._attempt(exchange, lease, stream)
        except Exception as error:
            exchange.error = error
            raise
        return exchange.response

    def close(self) -> None:
        for background in self._background:
            background.close()
        for inner in self._inners.take_all():
            inner.close()
        if self._fallback is not None:
            self._fallback.close()


class AsyncBalancingTransport(_Balancer, httpx.AsyncBaseTransport):
    """The async twin of ``BalancingTransport`` (same parameters; by default each
    upstream gets an ``httpx.AsyncHTTPTransport()``). Works under asyncio and trio.

    Active health checks and discovery run as tasks from ``__aenter__`` (entered by
    ``async with httpx.AsyncClient(transport=...)``) until ``aclose()``.
    """

    def __init__(
        self,
        upstreams: PoolSource | None = None,
        standbys: Iterable[str | Upstream] = (),
        algorithm: str | Algorithm = "round_robin",
        *,
        services: Mapping[str, PoolSource] | None = None,
        fallback: httpx.AsyncBaseTransport | None = None,
        inner: httpx.AsyncBaseTransport | None = None,
        hash_on: HashOn = None,
        retry: RetryPolicy | None = None,
        outlier: OutlierDetection | None = _DEFAULT_OUTLIER,
        slow_start: float = 0.0,
        fail_back_after: float = 0.0,
        health_check: HealthCheck | None = None,
        discovery: Provider | Iterable[Provider] | None = None,
        verify: Verify = True,
    ) -> None:
        options = {
            "retry": retry,
            "outlier": outlier,
            "slow_start": slow_start,
            "fail_back_after": fail_back_after,
            "health_check": health_check,
            "discovery": discovery,
        }
        super().__init__(
            upstreams, standbys, algorithm, services, hash_on, options, verify, inner is not None
        )
        self._fallback = fallback
        self._inners = Inners(
            inner, lambda: httpx.AsyncHTTPTransport(verify=self._ssl_context()), self.pools.values()
        )
        self._background = [
            AsyncBackground(pool, transport=inner, **options)
            for pool, options in self._background_work()
        ]

    async def __aenter__(self) -> Self:
        """Start the pools' health checks and discovery (``async with`` the client or
        the transport); they stop in ``aclose()``."""
        for background in self._background:
            if not background.started:
                await background.start()
        return self

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        pool = self._route(request)
        if pool is None:
            if self._fallback is not None:
                return await self._fallback.handle_async_request(request)
            raise UnknownService(f"no service named {request.url.host!r}", request=request)
        plan = self._plan(pool, request)
        stream = request.stream
        body = None
        if not is_replayable(stream):
            assert isinstance(stream, httpx.AsyncByteStream)
            stream = body = TrackedAsyncStream(stream)
        exchange = _Exchange(request, plan, body)
        try:
            lease = plan.first()
        except NoUpstream:
            raise exchange.no_upstream() from None
        try:
            response = await self._attempt(exchange, lease, stream)
        except Exception as error:
            if not exchange.should_retry(None, error):
                exchange.give_up(error)
                raise
            exchange.error = error
        else:
            if not exchange.should_retry(response, None):
                return response
            exchange.response = response
        return await self._retry(exchange, stream)

    async def _attempt(self, exchange: _Exchange, lease: Lease, stream: Any) -> httpx.Response:
        if self._inners.retired:
            for retired in self._inners.take_retired():
                await retired.aclose()
        try:
            response = await self._inners.get(lease.upstream).handle_async_request(
                upstream_request(exchange.request, lease.upstream, stream)
            )
        except BaseException as error:
            outcome = outcome_of(error)
            lease.finish(outcome)
            exchange.plan.record(lease, outcome)
            raise
        self._accept(exchange, lease, response)
        if response.is_closed:  # a body read in full already (mocks): nothing to hold
            lease.finish(Outcome.SUCCESS)
        else:
            response.stream = LeasedAsyncStream(response.stream, lease)  # type: ignore[arg-type]
        return response

    async def _retry(self, exchange: _Exchange, stream: Any) -> httpx.Response:
        wait = exchange.plan.pool.retry.backoff
        retrying = tenacity.AsyncRetrying(
            retry=exchange.tenacity_retry,
            wait=tenacity.wait_fixed(wait) if wait else tenacity.wait_none(),
            stop=tenacity.stop_never,
            sleep=anyio.sleep,
            reraise=True,
        )
        try:
            return await retrying(self._next_attempt, exchange, stream)
        except BaseException as error:
            exchange.give_up(error)
            raise

    async def _next_attempt(self, exchange: _Exchange, stream: Any) -> httpx.Response:
        try:
            lease = exchange.plan.next()
        except NoUpstream:
            exchange.exhausted = True
            if exchange.response is not None:
                return exchange.response
            raise exchange.error or exchange.no_upstream() from None
        if exchange.response is not None:
            await exchange.response.aclose()
            exchange.response = None
        try:
            exchange.response = await self._attempt(exchange, lease, stream)
        except Exception as error:
            exchange.error = error
            raise
        return exchange.response

    async def aclose(self) -> None:
        for background in self._background:
            await background.aclose()
        for inner in self._inners.take_all():
            await inner.aclose()
        if self._fallback is not None:
            await self._fallback.aclose()
