"""``WSGIProxy`` and ``WSGIProxyMiddleware``: the WSGI twins of the ASGI proxy.

The same plan, header policy and error table, driven with the blocking engine
(the same sans-IO HTTP/1.1 reader as the async ones) in the server's worker
thread. The response
body is an iterator that the server pulls, so it streams with the server's own
backpressure; when the server closes it early (the client left) the upstream
exchange is closed and the lease ends as ``CANCELLED``. An upstream failure
mid-body raises from the iterator, which makes the server drop the connection
rather than end the body as if it were complete.
"""

from __future__ import annotations

import http
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from .._attempts import ATTEMPTS_EXTENSION, DECISION_EXTENSION, Rules, drive
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
from .._errors_map import ErrorReply, outcome_of, refusal, reply_for
from .._http1 import ProtocolError
from .._httpx import httpx
from .._keys import HashOnOption
from .._metrics import Metrics
from .._options import UNSET, Unset, given
from .._tls import Verify
from .._tracing import annotate
from ._access import log_access
from ._base import DEFAULT_RETRY_BODY_LIMIT, ProxyBase, log_failure
from ._engines import DEFAULT_TIMEOUTS, BlockingEngine, SyncEngine, SyncResponse
from ._headers import below_mount, request_target, response_headers
from ._keys import environ_cookie, environ_key
from ._limits import DEFAULT_LIMITS, Limits

if TYPE_CHECKING:
    from ..discovery import Provider

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class UpstreamAborted(Exception):
    """The upstream failed after the response started; the server must drop the
    client connection."""


def environ_headers(environ: dict[str, Any]) -> list[tuple[bytes, bytes]]:
    """The request headers of a WSGI environ, lower-case, as bytes."""
    out = []
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            name = key[5:].replace("_", "-").lower()
        elif key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            if not value:
                continue
            name = key.replace("_", "-").lower()
        else:
            continue
        out.append((name.encode("latin-1"), str(value).encode("latin-1")))
    return out


def raw_target(environ: dict[str, Any]) -> tuple[bytes, bytes]:
    """The client's raw path and query below the app's mount point
    (``SCRIPT_NAME``): the server's undecoded ``RAW_URI`` or ``REQUEST_URI``
    when it gives one, else rebuilt from ``PATH_INFO``."""
    raw = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    if raw:
        path, _, query = str(raw).encode("latin-1").partition(b"?")
        return below_mount(path, environ.get("SCRIPT_NAME", "").encode("latin-1")), query
    from urllib.parse import quote

    path = environ.get("PATH_INFO", "").encode("latin-1")
    return quote(path, safe="/%;,=:@!$&'()*+~").encode("ascii"), environ.get(
        "QUERY_STRING", ""
    ).encode("latin-1")


class _Body:
    __slots__ = ("_input", "_parts", "_remaining", "length", "started")

    def __init__(
        self, stream: Any, parts: list[bytes], length: int | None, remaining: int | None
    ) -> None:
        self._input = stream
        self._parts = parts
        self.length = length
        self._remaining = remaining
        self.started = False

    def read(self) -> bytes:
        self.started = True
        if self._parts:
            return self._parts.pop(0)
        size = 65536 if self._remaining is None else min(65536, self._remaining)
        if size <= 0:
            return b""
        chunk: bytes = self._input.read(size)
        if self._remaining is not None:
            self._remaining -= len(chunk)
        return chunk


class WSGIProxy(ProxyBase):
    """A WSGI app that forwards every request to an upstream the pool picks.

    Takes ``ProxyApp``'s arguments (``upstreams``/``standbys`` or ``pool``, the
    pool options ``algorithm``, ``retry``, ``outlier``, ``slow_start``,
    ``fail_back_after``, ``health_check``, ``discovery``, ``max_connections``,
    ``max_pending``, ``subset``, and ``hash_on``, ``sticky``, ``trusted_proxies``,
    ``preserve_host``, ``retry_body_limit``, ``timeout``, ``verify``,
    ``limits``, ``access_log``, ``decision_header``, ``metrics``); a ``hash_on``
    callable receives the WSGI environ. ``engine``
    is a sync engine (default:
    ``BlockingEngine``). Health checks and discovery run in daemon threads from
    construction until ``close()``. Safe to call from many worker threads at
    once.
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
        engine: SyncEngine | None = None,
        verify: Verify = True,
        limits: Limits = DEFAULT_LIMITS,
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
            access_log=access_log,
            decision_header=decision_header,
            metrics=metrics,
        )
        self.key_of = environ_key(self.hash_on)
        if engine is not None and not callable(getattr(engine, "request", None)):
            raise ConfigError("engine", f"expected an engine with request(), got {engine!r}")
        self.engine: SyncEngine = (
            engine
            if engine is not None
            else BlockingEngine(self.ssl_context, self.limits.upstreams)
        )
        self._background: Any = None
        work = self._background_work()
        if work is not None:
            from .._background import Background

            self._background = Background(
                self.pool,
                health_check=work[0],
                discovery=work[1],
                verify=self.ssl_context,
                owner=self,
            ).start()

    def close(self) -> None:
        """Stop the background threads and close the upstream connections."""
        if self._background is not None:
            self._background.close()
        self.engine.close()

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if self._background is not None:
            self._background.ensure_running()  # again in a forked worker
        if self.access_log:
            return _Logged(self._forward, environ, start_response)
        return self._forward(environ, start_response)

    def _forward(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        method = environ["REQUEST_METHOD"]
        path = environ.get("PATH_INFO", "/")
        raw_path, query = raw_target(environ)
        try:
            inbound = self.policy.request(
                method,
                environ_headers(environ),
                environ.get("REMOTE_ADDR") or None,
                environ.get("wsgi.url_scheme", "http"),
                environ.get("SERVER_PROTOCOL") != "HTTP/1.0",
            )
        except ProtocolError as exc:
            return self._reply(start_response, method, path, refusal(exc), exc, None)
        body = None if inbound.framing.kind == "none" else self._read_body(environ)
        headers, kept = inbound.headers, inbound.host is not None
        pool = self.pool
        token = pin = None
        if self.pins is not None:
            token = environ_cookie(environ, self.pins.cookie.name)
            pin = self.pin(token)
        explain = self.decision_header is not None
        plan = AttemptPlan(
            pool, method, self.hash_key(environ, inbound.client), pin=pin, explain=explain
        )
        environ[ATTEMPTS_EXTENSION] = plan.history
        method_b = method.encode("ascii")

        def attempt(lease: Lease, timeout: float | None) -> _Held:
            host, prefix = self.upstream_parts(lease.upstream)
            response = self.engine.request(
                lease.upstream,
                method_b,
                request_target(prefix, raw_path, query),
                headers if kept else [*headers, (b"host", host)],
                body,
                self.timeouts.within(timeout),
            )
            return _Held(response)

        rules = Rules(
            _Held.status_of,
            _Held.keep,
            lambda: _replayable(body),
            queue_timeout=self.timeouts.pool,
        )
        try:
            held = drive(plan, attempt, rules, _Held.discard)
        except NoUpstream as exc:
            return self._reply(start_response, method, path, reply_for(exc), exc, None)
        except ProtocolError as exc:  # the path leaves this upstream's prefix
            return self._reply(start_response, method, path, refusal(exc), exc, plan.lease)
        except httpx.TransportError as exc:
            reply = reply_for(exc)
            return self._reply(start_response, method, path, reply, exc, plan.lease, plan.history)
        finally:
            environ[DECISION_EXTENSION] = decided = plan.decision()
            annotate(decided, plan.history)
            if self.metrics is not None:
                self.metrics.observe(plan)
        response = held.response
        assert held.lease is not None
        head = [
            (n.decode("latin-1"), v.decode("latin-1"))
            for n, v in response_headers(response.headers, response.status)
        ]
        if self.pins is not None:
            cookie = self.set_cookie(token, held.lease.upstream)
            if cookie is not None:
                head.append(("Set-Cookie", cookie))
        if self.decision_header is not None and decided is not None:
            head.append((self.decision_header.decode("ascii"), decided.header()))
        start_response(_status_line(response.status), head)
        return _Relay(response, held.lease, method, path)

    def _read_body(self, environ: dict[str, Any]) -> bytes | _Body:
        stream = environ["wsgi.input"]
        try:
            length: int | None = int(environ.get("CONTENT_LENGTH") or "")
        except ValueError:
            length = None
        chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
        if length is None and not chunked:
            return b""
        limit = self.retry_body_limit
        if length is not None:
            if length <= limit:
                return bytes(stream.read(length)) if length else b""
            return _Body(stream, [], length, length)
        parts: list[bytes] = []
        size = 0  # chunked: the server dechunks; read until EOF
        while size <= limit:
            chunk = stream.read(min(65536, limit + 1 - size))
            if not chunk:
                return b"".join(parts)
            parts.append(chunk)
            size += len(chunk)
        return _Body(stream, parts, None, None)

    def _reply(
        self,
        start_response: StartResponse,
        method: str,
        path: str,
        reply: ErrorReply,
        detail: object,
        lease: Lease | None,
        attempts: Sequence[Attempt] = (),
    ) -> list[bytes]:
        log_failure(method, path, reply, detail, lease, attempts)
        start_response(  # WSGI leaves Connection to the server
            _status_line(reply.status),
            [(n.decode(), v.decode()) for n, v in reply.headers if n != b"connection"],
        )
        return [b""] if method == "HEAD" else [reply.body]


class _Held:
    """An upstream's response, holding its lease until relayed or discarded."""

    __slots__ = ("lease", "response")

    def __init__(self, response: SyncResponse) -> None:
        self.response = response
        self.lease: Lease | None = None

    def status_of(self) -> int:
        return self.response.status

    def keep(self, lease: Lease) -> _Held:
        self.lease = lease
        return self

    def discard(self) -> None:
        try:
            self.response.close()
        finally:
            if self.lease is not None:
                self.lease.finish(Outcome.SUCCESS)


def _replayable(body: bytes | _Body | None) -> bool:
    return not isinstance(body, _Body) or not body.started


def _status_line(status: int) -> str:
    try:
        return f"{status} {http.HTTPStatus(status).phrase}"
    except ValueError:
        return f"{status} Unknown"


class _Relay:
    """The response body iterator; ``close()`` settles the lease."""

    def __init__(self, response: SyncResponse, lease: Lease, method: str, path: str) -> None:
        self._response = response
        self._lease = lease
        self._method = method
        self._path = path
        self._outcome = Outcome.CANCELLED

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        try:
            chunk = self._response.read()
        except httpx.TransportError as exc:
            self._outcome = outcome_of(exc)
            log_failure(
                self._method,
                self._path,
                reply_for(exc),
                f"aborted mid-response: {exc}",
                self._lease,
            )
            self.close()
            raise UpstreamAborted(str(exc)) from None
        if not chunk:
            self._outcome = Outcome.SUCCESS
            raise StopIteration
        return chunk

    def close(self) -> None:
        try:
            self._response.close()
        finally:
            self._lease.finish(self._outcome)


class WSGIProxyMiddleware:
    """Forward requests whose path is ``prefix`` or under it; pass the rest to
    ``app``. The prefix is removed before forwarding unless ``strip_prefix=False``."""

    def __init__(
        self, app: WSGIApp, prefix: str = "/", *, strip_prefix: bool = True, **options: Any
    ) -> None:
        self.app = app
        self.proxy = WSGIProxy(**options)
        self.prefix = prefix.rstrip("/")
        self.strip_prefix = strip_prefix

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        prefix = self.prefix
        if prefix and not (path == prefix or path.startswith(prefix + "/")):
            return self.app(environ, start_response)
        if prefix and self.strip_prefix:
            environ = dict(environ)
            environ["PATH_INFO"] = path[len(prefix) :] or "/"
            raw = str(environ.get("RAW_URI") or environ.get("REQUEST_URI") or "")
            if raw.startswith(prefix):
                rest = raw[len(prefix) :]
                environ["RAW_URI"] = rest if rest.startswith("/") else "/" + rest
                environ.pop("REQUEST_URI", None)
        return self.proxy(environ, start_response)


class _Counted:
    """``wsgi.input``, counting the bytes read from it."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.count = 0

    def read(self, *size: int) -> bytes:
        data: bytes = self.stream.read(*size)
        self.count += len(data)
        return data

    def readline(self, *size: int) -> bytes:
        data: bytes = self.stream.readline(*size)
        self.count += len(data)
        return data


class _Logged:
    """One request through ``forward`` with its access-log line, written when
    the server closes the response (its body sent, or the client gone)."""

    def __init__(
        self,
        forward: Callable[[dict[str, Any], StartResponse], Iterable[bytes]],
        environ: dict[str, Any],
        start_response: StartResponse,
    ) -> None:
        self.environ = environ
        self.started = time.perf_counter()
        self.status = 0
        self.sent = 0
        self.input = environ["wsgi.input"] = _Counted(environ["wsgi.input"])

        def started(status: str, headers: list[tuple[str, str]], *exc_info: Any) -> Any:
            self.status = int(status[:3])
            return start_response(status, headers, *exc_info)

        self.body = forward(environ, started)

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self.body:
            self.sent += len(chunk)
            yield chunk

    def close(self) -> None:
        try:
            close = getattr(self.body, "close", None)
            if close is not None:
                close()
        finally:
            environ = self.environ
            query = environ.get("QUERY_STRING", "")
            path = environ.get("PATH_INFO", "/") + ("?" + query if query else "")
            log_access(
                environ["REQUEST_METHOD"],
                path,
                self.status,
                environ.get(ATTEMPTS_EXTENSION, ()),
                environ.get(DECISION_EXTENSION),
                time.perf_counter() - self.started,
                self.input.count,
                self.sent,
                environ.get("REMOTE_ADDR") or None,
            )
