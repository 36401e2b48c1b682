"""``ProxyApp``: the ASGI forwarding proxy.

Pure ASGI (no Starlette request objects on the hot path): each request is one
``AttemptPlan`` driven here directly, with the inner engine doing the I/O:

    plan.first() -> lease -> engine.request() -> lease.responded(status)
      -> stream the body back -> lease.finish(SUCCESS)

A failure before any response byte reached the client may be retried where the
plan allows it and the body can be sent again (held whole in memory, at most
``retry_body_limit`` bytes, or not yet started). After the response started, an
upstream failure aborts the client connection: the body is never presented as
complete. A client that goes away cancels the upstream exchange, and the lease
ends as ``CANCELLED``, which frees its in-flight slot without blaming the
upstream.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Awaitable, Callable, Iterable, MutableMapping, Sequence
from operator import attrgetter
from typing import TYPE_CHECKING, Any

import anyio

from .._attempts import ATTEMPTS_EXTENSION, DECISION_EXTENSION, Rules, adrive
from .._core import (
    Algorithm,
    Attempt,
    AttemptPlan,
    ConfigError,
    HealthCheck,
    Lease,
    NoUpstream,
    Outcome,
    OutlierDetection,
    Pool,
    RetryPolicy,
    StickyCookie,
    Subset,
    Upstream,
)
from .._errors_map import TOO_MANY_WEBSOCKETS, ErrorReply, outcome_of, refusal, reply_for
from .._http1 import ProtocolError
from .._httpx import httpx
from .._keys import HashOnOption
from .._metrics import Metrics
from .._options import UNSET, Unset, given
from .._tls import Verify
from .._tracing import annotate
from ._access import log_access
from ._base import DEFAULT_RETRY_BODY_LIMIT, ProxyBase, log, log_failure
from ._disconnect import run_until_disconnect
from ._engines import DEFAULT_TIMEOUTS, AsyncEngine, AsyncResponse, default_async_engine
from ._headers import Inbound, request_target, response_headers, scope_path
from ._keys import scope_cookie, scope_key
from ._limits import DEFAULT_LIMITS, DEFAULT_WEBSOCKETS, Limits, WebSocketSettings
from ._upgrade import check_request as check_upgrade_request
from ._upgrade import check_response as check_upgrade_response

if TYPE_CHECKING:
    from ..discovery import Provider

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class ClientDisconnected(Exception):
    """The client went away while its request body was being read."""


class _Body:
    """A request body larger than the retry limit: read from the client while it
    is sent upstream, once."""

    __slots__ = ("_parts", "_receive", "done", "length", "started")

    def __init__(
        self, receive: Receive, parts: list[bytes], length: int | None, complete: bool = False
    ) -> None:
        self._receive = receive
        self._parts = parts
        self.length = length
        self.started = False
        self.done = anyio.Event()
        if complete:
            self.done.set()

    async def read(self) -> bytes:
        self.started = True
        if self._parts:
            return self._parts.pop(0)
        if self.done.is_set():
            return b""
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                self.done.set()
                raise ClientDisconnected()
            more = message.get("more_body", False)
            if not more:
                self.done.set()
            chunk: bytes = message.get("body", b"")
            if chunk or not more:
                return chunk


class ProxyApp(ProxyBase):
    """An ASGI app that forwards every request to an upstream the pool picks.

    **Parameters:**

    * **upstreams**, **standbys** - as for ``clientlb.Pool``; or
    * **pool** - a shared ``clientlb.Pool`` (its state is shared with every
      transport and proxy that uses it).
    * **algorithm**, **retry**, **outlier**, **slow_start**, **fail_back_after**,
      **health_check**, **discovery**, **max_connections**, **max_pending**, **subset** - the
      pool's options, as for the transports (``Pool``'s defaults); beside a
      ``Pool`` they are a ``ConfigError``. Checks, discovery and probes run for
      the app's lifespan, or from its first request when no lifespan reaches
      it (mounted in Starlette). A request that finds every upstream at its
      ``max_connections`` waits for a slot up to ``timeout.pool`` if
      ``max_pending`` allows, else is answered 503.
    * **hash_on** - the key of the hashing algorithms: ``"header:NAME"``,
      ``"cookie:NAME"``, or a callable of the ASGI scope returning a ``str`` or
      ``None``. A request without the key is hashed on its client address.
      ``ip_hash`` hashes the client address when no ``hash_on`` is given;
      ``consistent_hash`` needs one, and a non-hashing algorithm refuses one
      (``ConfigError``).
    * **sticky** - a ``clientlb.StickyCookie``: pin each client to the upstream
      that answered it, with a cookie; ``None`` (the default) for none.
    * **trusted_proxies** - addresses or networks whose ``X-Forwarded-For`` is
      believed (and used as the client address for ``ip_hash``).
    * **preserve_host** - send the client's ``Host`` upstream (default: the
      upstream's own).
    * **retry_body_limit** - request bodies up to this many bytes are held in
      memory so a retry can resend them; larger ones stream and are not resent.
    * **timeout** - seconds, an ``httpx.Timeout`` or ``None``.
    * **engine** - the inner HTTP engine (default: the fastest available).
    * **verify** - how HTTPS and WSS upstreams are verified, for requests,
      WebSockets and health checks alike: ``True`` (httpx's default: the
      certifi bundle unless ``SSL_CERT_FILE``/``SSL_CERT_DIR`` say otherwise),
      ``False``, a CA bundle path, or an ``ssl.SSLContext`` (which can also
      carry a client certificate for mutual TLS). An ``engine`` you give brings
      its own TLS settings for HTTP requests.
    * **limits** - a ``clientlb.Limits``: the connections kept per upstream
      (enforced here) and what clients may send (enforced by ``clientlb
      proxy``'s front end; other servers enforce their own).
    * **websockets** - a ``clientlb.WebSocketSettings``: message size,
      compression, how many at once, pings.
    * **metrics** - a ``clientlb.Metrics`` that counts each request and the
      pool's events (the pool named ``"default"`` unless the collector named it
      already) and reports the WebSockets relayed now; ``None`` (the default)
      counts nothing.
    * **access_log** - one line per request on the ``clientlb.access`` logger:
      method, path, status, upstream, reason, attempts, duration, bytes each
      way (``clientlb._proxy._access``). Off by default.
    * **decision_header** - a response header name (``"X-Upstream"``) that
      carries why the request went where it went (``Decision.header()``: the
      upstream, the reason, the algorithm, the best candidates and their
      scores). Off by default: it names upstreams to clients.

    Each request's ``Decision`` is in ``scope["extensions"]["clientlb.decision"]``
    beside its attempts, and on the current OpenTelemetry span when one records.

    Lifespan events start and stop the background work and close the engine.
    """

    def __init__(
        self,
        upstreams: Iterable[str | Upstream] | Pool | None = None,
        standbys: Iterable[str | Upstream] = (),
        algorithm: str | Algorithm | Unset = UNSET,
        *,
        pool: Pool | None = None,
        retry: RetryPolicy | Unset | None = UNSET,
        outlier: OutlierDetection | Unset | None = UNSET,
        slow_start: float | Unset = UNSET,
        fail_back_after: float | Unset = UNSET,
        health_check: HealthCheck | Unset | None = UNSET,
        discovery: Provider | Iterable[Provider] | Unset | None = UNSET,
        max_connections: int | Unset | None = UNSET,
        max_pending: int | Unset = UNSET,
        subset: Subset | Unset | None = UNSET,
        hash_on: HashOnOption = None,
        sticky: StickyCookie | None = None,
        trusted_proxies: Iterable[str] = (),
        preserve_host: bool = False,
        retry_body_limit: int = DEFAULT_RETRY_BODY_LIMIT,
        timeout: Any = DEFAULT_TIMEOUTS,
        engine: AsyncEngine | None = None,
        verify: Verify = True,
        limits: Limits = DEFAULT_LIMITS,
        websockets: WebSocketSettings = DEFAULT_WEBSOCKETS,
        access_log: bool = False,
        decision_header: str | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        super().__init__(
            upstreams,
            standbys,
            pool=pool,
            options=given(
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
            ),
            hash_on=hash_on,
            sticky=sticky,
            trusted_proxies=trusted_proxies,
            preserve_host=preserve_host,
            retry_body_limit=retry_body_limit,
            timeout=timeout,
            verify=verify,
            limits=limits,
            websockets=websockets,
            access_log=access_log,
            decision_header=decision_header,
            metrics=metrics,
        )
        self.key_of = scope_key(self.hash_on)
        if self.metrics is not None:
            self.metrics._gauge(
                "clientlb_proxy_websockets", self, attrgetter("open_websockets"), self.pool
            )
        if engine is not None and not callable(getattr(engine, "request", None)):
            raise ConfigError("engine", f"expected an engine with request(), got {engine!r}")
        self._engine = engine
        self._background: Any = None
        work = self._background_work()
        if work is not None:
            from .._background import AsyncBackground

            self._background = AsyncBackground(
                self.pool,
                health_check=work[0],
                discovery=work[1],
                verify=self.ssl_context,
                owner=self,
            )

    @property
    def engine(self) -> AsyncEngine:
        if self._engine is None:
            self._engine = default_async_engine(self.ssl_context, self.limits.upstreams)
        return self._engine

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        background = self._background
        if background is not None and background.idle and kind != "lifespan":
            await background.start_detached()  # no lifespan reached it (a Mount)
        if kind == "http":
            if self.access_log:
                await self._logged(scope, receive, send)
            else:
                await self.handle_http(scope, receive, send)
        elif kind == "websocket":
            from ._websocket import proxy_websocket

            await proxy_websocket(self, scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    # -- lifespan ---------------------------------------------------------------

    async def startup(self) -> None:
        """Start the health checks and discovery (call ``shutdown()`` from the
        same task)."""
        if self._background is not None and self._background.idle:
            await self._background.start()

    async def stop_background(self) -> None:
        """Stop the health checks, discovery and probes, and nothing else: requests
        and WebSockets in flight go on (a reloaded ``clientlb proxy`` hands the
        pool to a new app). Call it from the task that called ``startup()``."""
        if self._background is not None:
            await self._background.aclose()

    async def shutdown(self) -> None:
        """Say 1001 Going Away to open WebSockets, stop the background work and
        close the upstream connections."""
        from ._websocket import close_websockets

        await close_websockets(self)
        if self._background is not None:
            await self._background.aclose()
        if self._engine is not None:
            await self._engine.aclose()
            self._engine = None

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    # -- http -------------------------------------------------------------------

    async def handle_http(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Forward one HTTP request (the scope may come from a middleware)."""
        client = scope.get("client")
        try:
            inbound = self.policy.request(
                scope["method"],
                scope["headers"],
                client[0] if client else None,
                scope["scheme"],
                scope.get("http_version") != "1.0",
            )
        except ProtocolError as exc:
            return await self._reply(send, scope, refusal(exc), exc, None)
        framing = inbound.framing
        body: bytes | _Body | None = None
        if framing.kind != "none":
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            first: bytes = message.get("body", b"")
            length = framing.length if framing.kind == "length" else None
            if message.get("more_body", False):
                whole = await self._read_body(receive, first, length)
                if whole is None:
                    return
                body = whole
            elif len(first) > self.retry_body_limit:
                # Whole already, but over the limit: sent once, never resent.
                body = _Body(receive, [first], len(first), complete=True)
            else:
                body = first
        extensions = scope.get("extensions")
        if extensions and "clientlb.disconnect" in extensions:
            # The server cancels this task when the client goes: no watcher needed.
            with contextlib.suppress(ClientDisconnected):
                return await self._forward(scope, send, inbound, body)
        done = body.done if isinstance(body, _Body) else None

        async def forward() -> None:
            with contextlib.suppress(ClientDisconnected):
                await self._forward(scope, send, inbound, body)

        await run_until_disconnect(receive, done, forward)

    async def resume(
        self,
        scope: Scope,
        send: Send,
        inbound: Inbound,
        plan: AttemptPlan,
        settled: tuple[_Answer | None, Exception | None] | None,
    ) -> None:
        """Go on with a request (without a body) that ``clientlb proxy``'s express
        lane began with ``plan``: from its first lease, or, once ``settled``, from
        the verdict on its first attempt (see ``clientlb._proxy._express``)."""
        with contextlib.suppress(ClientDisconnected):
            await self._forward(scope, send, inbound, None, plan, settled)

    async def _logged(self, scope: Scope, receive: Receive, send: Send) -> None:
        """``handle_http`` with its access-log line, counting the bytes each way."""
        status = 0
        bytes_in = bytes_out = 0
        started = time.perf_counter()

        async def counted_receive() -> Message:
            nonlocal bytes_in
            message = await receive()
            bytes_in += len(message.get("body", b""))
            return message

        async def counted_send(message: Message) -> None:
            nonlocal status, bytes_out
            if message["type"] == "http.response.start":
                status = message["status"]
            else:
                bytes_out += len(message.get("body", b""))
            await send(message)

        try:
            await self.handle_http(scope, counted_receive, counted_send)
        finally:
            extensions = scope.get("extensions") or {}
            client = scope.get("client")
            query: bytes = scope.get("query_string", b"")
            path: str = scope["path"]
            log_access(
                scope["method"],
                path + "?" + query.decode("latin-1") if query else path,
                status,
                extensions.get(ATTEMPTS_EXTENSION, ()),
                extensions.get(DECISION_EXTENSION),
                time.perf_counter() - started,
                bytes_in,
                bytes_out,
                client[0] if client else None,
            )

    async def _read_body(
        self, receive: Receive, first: bytes, length: int | None
    ) -> bytes | _Body | None:
        parts = [first]
        size = len(first)
        limit = self.retry_body_limit
        if length is None or length <= limit:
            while size <= limit:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return None
                chunk = message.get("body", b"")
                parts.append(chunk)
                size += len(chunk)
                if not message.get("more_body", False):
                    return b"".join(parts)
        return _Body(receive, parts, length)

    async def _forward(
        self,
        scope: Scope,
        send: Send,
        inbound: Inbound,
        body: bytes | _Body | None,
        plan: AttemptPlan | None = None,
        settled: tuple[_Answer | None, Exception | None] | None = None,
    ) -> None:
        method: str = scope["method"]
        pool = self.pool
        engine, timeouts = self.engine, self.timeouts
        headers, kept = inbound.headers, inbound.host is not None
        tunnel = scope.get("extensions", {}).get("clientlb.tunnel")
        upgrade = tunnel is not None and getattr(engine, "tunnels", False)
        if upgrade:
            try:
                check_upgrade_request(scope["headers"])
            except ProtocolError as exc:
                return await self._reply(send, scope, refusal(exc), exc, None)
            if self.open_websockets >= self.websockets.max_open:
                return await self._reply(send, scope, TOO_MANY_WEBSOCKETS, "at max_open", None)
            headers = [*headers, (b"upgrade", b"websocket"), (b"connection", b"upgrade")]
            if not self.websockets.deflate:
                headers = [(n, v) for n, v in headers if n != b"sec-websocket-extensions"]
        token = pin = None
        if self.pins is not None:
            token = scope_cookie(scope["headers"], self.pins.cookie.name)
            pin = self.pin(token)
        if plan is None:
            explain = self.decision_header is not None
            plan = AttemptPlan(
                pool, method, self.hash_key(scope, inbound.client), pin=pin, explain=explain
            )
        extensions = scope.setdefault("extensions", {})
        extensions[ATTEMPTS_EXTENSION] = plan.history
        raw_path = scope_path(scope)
        query: bytes = scope.get("query_string", b"")
        method_b = method.encode("ascii")
        upgrading = {"upgrade": True} if upgrade else {}

        async def attempt(lease: Lease, timeout: float | None) -> _Answer:
            host, prefix = self.upstream_parts(lease.upstream)
            response = await engine.request(
                lease.upstream,
                method_b,
                request_target(prefix, raw_path, query),
                headers if kept else [*headers, (b"host", host)],
                body,
                timeouts.within(timeout),
                **upgrading,
            )
            if upgrade and response.status == 101:
                await _check_upgrade(scope["headers"], response)
                return _Answer(response, b"")
            return _Answer(response, await _first_bytes(response))

        rules = Rules(
            _Answer.status_of,
            _Answer.keep,
            lambda: _replayable(body),
            hedgeable=not upgrade and not isinstance(body, _Body),
            queue_timeout=timeouts.pool,
        )
        try:
            answer = await adrive(plan, attempt, rules, _Answer.discard, settled)
        except NoUpstream as exc:
            return await self._reply(send, scope, reply_for(exc), exc, None)
        except ProtocolError as exc:  # the path leaves this upstream's prefix
            return await self._reply(send, scope, refusal(exc), exc, plan.lease)
        except httpx.TransportError as exc:
            reply = reply_for(exc)
            return await self._reply(send, scope, reply, exc, plan.lease, plan.history)
        except (ClientDisconnected, anyio.get_cancelled_exc_class()):
            raise
        except Exception as exc:  # a fault in the proxy: a plain 502, never a traceback
            log.exception("unexpected error forwarding %s %s", method, scope["path"])
            return await self._reply(send, scope, reply_for(exc), exc, plan.lease)
        finally:
            extensions[DECISION_EXTENSION] = decided = plan.decision()
            annotate(decided, plan.history)
            if self.metrics is not None:
                self.metrics.observe(plan)
        lease = answer.lease
        assert lease is not None
        cookie = self.set_cookie(token, lease.upstream) if self.pins is not None else None
        pinned: tuple[tuple[bytes, bytes], ...] = (
            ((b"set-cookie", cookie.encode("latin-1")),) if cookie is not None else ()
        )
        if self.decision_header is not None and decided is not None:
            pinned += ((self.decision_header, decided.header().encode("latin-1")),)
        if answer.response.status == 101:
            return await self._tunnel(send, tunnel, answer.response, lease, pinned)
        return await self._relay(send, scope, answer.response, lease, answer.first, pinned)

    async def _relay(
        self,
        send: Send,
        scope: Scope,
        response: AsyncResponse,
        lease: Lease,
        first: bytes | None,
        pinned: Sequence[tuple[bytes, bytes]] = (),
    ) -> None:
        """Stream the response back, starting with ``first`` (the body's first
        bytes, or ``None`` when none were read ahead); on an upstream failure
        mid-body, abort the client connection by returning without completing
        the response."""
        outcome = Outcome.CANCELLED
        head = response_headers(response.headers, response.status)
        if pinned:
            head.extend(pinned)
        try:
            await send({"type": "http.response.start", "status": response.status, "headers": head})
            read = response.read
            chunk = await read() if first is None else first
            while chunk:
                more = not response.done
                await send({"type": "http.response.body", "body": chunk, "more_body": more})
                if not more:
                    break
                chunk = await read()
            else:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            outcome = Outcome.SUCCESS
        except httpx.TransportError as exc:
            outcome = outcome_of(exc)
            log_failure(
                scope["method"],
                scope["path"],
                reply_for(exc),
                f"aborted mid-response: {exc}",
                lease,
            )
        finally:
            await response.aclose()
            lease.finish(outcome)

    async def _tunnel(
        self,
        send: Send,
        tunnel: Any,
        response: AsyncResponse,
        lease: Lease,
        pinned: Sequence[tuple[bytes, bytes]] = (),
    ) -> None:
        """Relay an upgraded connection (the front end's ``clientlb.tunnel``
        extension) until either side closes; the lease lasts as long."""
        lease.responded(101)
        outcome = Outcome.CANCELLED
        self.open_websockets += 1
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": 101,
                    "headers": [*response_headers(response.headers, 101), *pinned],
                }
            )
            await tunnel.tunnel(response, self.websockets)
            outcome = Outcome.SUCCESS
        finally:
            self.open_websockets -= 1
            await response.aclose()
            lease.finish(outcome)

    async def _reply(
        self,
        send: Send,
        scope: Scope,
        reply: ErrorReply,
        detail: object,
        lease: Lease | None,
        attempts: Sequence[Attempt] = (),
    ) -> None:
        log_failure(scope["method"], scope["path"], reply, detail, lease, attempts)
        await send(
            {"type": "http.response.start", "status": reply.status, "headers": reply.headers}
        )
        await send(
            {"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else reply.body}
        )


async def _first_bytes(response: AsyncResponse) -> bytes | None:
    """The body's first bytes, read before the client hears anything, so that an
    upstream that dies between its head and its body fails an attempt the plan
    may retry rather than a response already under way. An event stream is the
    exception: its head goes out at once, as its client expects."""
    for name, value in response.headers:
        if name.lower() == b"content-type" and value.startswith(b"text/event-stream"):
            return None
    try:
        return await response.read()
    except BaseException:
        await response.aclose()
        raise


async def _check_upgrade(request: Any, response: AsyncResponse) -> None:
    """A 101 that does not accept this WebSocket request is a bad response."""
    try:
        check_upgrade_response(request, response.headers)
    except ProtocolError as exc:
        await response.aclose()
        raise httpx.RemoteProtocolError(f"invalid upstream response: {exc}") from None


def _replayable(body: bytes | _Body | None) -> bool:
    return not isinstance(body, _Body) or not body.started


class _Answer:
    """An upstream's response and the body's first bytes read ahead (``None``
    for an event stream), holding its lease until relayed or discarded."""

    __slots__ = ("first", "lease", "response")

    def __init__(self, response: AsyncResponse, first: bytes | None) -> None:
        self.response = response
        self.first = first
        self.lease: Lease | None = None

    def status_of(self) -> int:
        return self.response.status

    def keep(self, lease: Lease) -> _Answer:
        self.lease = lease
        return self

    async def discard(self) -> None:
        try:
            await self.response.aclose()
        finally:
            if self.lease is not None:
                self.lease.finish(Outcome.SUCCESS)
