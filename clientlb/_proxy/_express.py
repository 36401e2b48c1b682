"""The express lane of ``clientlb proxy``: the common request, forwarded from the
event loop's callbacks.

``ProxyApp`` forwards a request as a coroutine: the front end builds an ASGI
scope, the connection's task runs the app, and the task sleeps and wakes for
the upstream's answer. Most requests need little of that: no body, no upgrade,
an idle kept-alive connection to the picked upstream, and a response that
arrives whole. The front end's ``ClientConnection`` hands such a request here,
and the same steps run where the bytes arrive::

    head parsed -> policy.request -> plan.first() -> idle connection -> write
    upstream's response whole -> lease.responded -> record -> release -> finish
      -> write to the client

with no scope, no ASGI messages, no task and no future. Whatever the lane does
not finish it hands to ``ProxyApp`` at the step it reached, with the same plan,
so every rule of the app holds:

* **before anything went upstream** (every upstream at its limit, none to
  pick, no idle connection to the one picked): the app's driver starts from
  the plan's first lease, as if it had picked it itself;
* **after the attempt failed** (the connection broke, the response was
  malformed, the read timed out): the attempt is settled and recorded as the
  driver does, and the driver judges a retry;
* **with the upstream's answer in hand** that is not plain (a status the plan
  may retry, a body still on its way, an event stream): the driver judges a
  retry, or the app streams it with flow control.

Requests that may need what only the app has (a body, a WebSocket, sticky
cookies, an access log, a ``hash_on`` key, per-attempt or per-call timeouts,
hedging, a non-asyncio engine) never enter the lane. It annotates no
OpenTelemetry span: none can be current in the event loop's callbacks.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from .._attempts import _attempt_failed
from .._core import AttemptPlan, Lease, NoUpstream, Outcome, RetryPolicy, Saturated
from .._http1 import ProtocolError, RequestHead, request_head
from .._httpx import httpx
from ._asgi import ProxyApp, _Answer
from ._engines import AsyncioEngine
from ._headers import Inbound, relayed_headers, request_target
from ._upgrade import wants_websocket

if TYPE_CHECKING:
    from ._engines._asyncio import _Conn
    from ._front._connection import ClientConnection

_EVENT_STREAM = b"text/event-stream"


def express_lane(app: Any) -> Express | None:
    """The lane for ``app``, or ``None`` if it is not a ``ProxyApp`` whose
    requests can take it (see the module doc)."""
    if type(app) is not ProxyApp:
        return None
    if app.access_log or app.pins is not None:
        return None
    if app.pool.algorithm.hashes and app.key_of is not None:
        return None
    if not _plain(app.pool.retry):
        return None
    if not isinstance(app.engine, AsyncioEngine):
        return None
    return Express(app)


def _plain(policy: RetryPolicy) -> bool:
    """No deadline, per-attempt timeout or hedge: attempts need no clock of their own."""
    return policy.timeout is None and policy.per_try_timeout is None and policy.hedge_after is None


class Express:
    """The lane of one ``ProxyApp`` (a reload builds a new one for the new app)."""

    __slots__ = (
        "app",
        "background",
        "engine",
        "explain",
        "hashes",
        "hosts",
        "policy",
        "pool",
        "read_timeout",
    )

    def __init__(self, app: ProxyApp) -> None:
        self.app = app
        engine = app.engine
        assert isinstance(engine, AsyncioEngine)
        self.engine = engine
        self.read_timeout = app.timeouts.read
        # What each request would otherwise ask the app (a Python object) for.
        self.pool = app.pool
        self.policy = app.policy
        self.background = app._background
        self.hashes = app.pool.algorithm.hashes  # then on the client address: no hash_on
        self.explain = app.decision_header is not None
        self.hosts = app._hosts  # the app's cache of upstream_parts()

    def take(self, client: ClientConnection, head: RequestHead) -> bool:
        """Forward the request ``head`` (whole, without a body) from ``client``;
        ``False`` when it is not one for the lane, and the front end runs the app."""
        background = self.background
        if background is not None and background.idle:
            return False
        method = head.method.decode("ascii")
        # An upgrade needs a Connection header, which the head keeps among ``framing``.
        if head.framing and head.http11 and wants_websocket(method, head.headers):
            return False
        peer = client.client
        try:
            inbound = self.policy.request(
                method, head.headers, peer[0] if peer else None, "http", head.http11
            )
        except ProtocolError:
            return False  # the app refuses it, with its log line
        if inbound.framing.kind != "none":
            return False
        Exchange(self, client, head, method, inbound)
        return True


class Exchange:
    """One request in the lane, from its head to its response (or its hand-over).
    Made by ``Express.take()``, it starts at once."""

    __slots__ = ("client", "conn", "cycle", "express", "head", "inbound", "lease", "plan")

    def __init__(
        self,
        express: Express,
        client: ClientConnection,
        head: RequestHead,
        method: str,
        inbound: Inbound,
    ) -> None:
        self.express = express
        self.client = client
        self.head = head
        self.inbound = inbound
        self.cycle = client.begin(method, head.http11)
        self.lease: Lease | None = None
        self.conn: _Conn | None = None
        plan = self.plan = AttemptPlan(
            express.pool,
            method,
            inbound.client if express.hashes else None,
            explain=express.explain,
        )
        try:
            lease = self.lease = plan.first()
        except (Saturated, NoUpstream):
            self._hand_over(None)
            return
        upstream = lease.upstream
        parts = express.hosts.get(upstream.key)
        host, prefix = parts if parts is not None else express.app.upstream_parts(upstream)
        raw_path, _, query = head.target.partition(b"?")
        try:
            target = request_target(prefix, raw_path, query)
        except ProtocolError:
            self._hand_over(None)  # the app refuses the path
            return
        conn = express.engine.take_idle(upstream)
        if conn is None:
            self._hand_over(None)  # the app's attempt connects
            return
        headers = inbound.headers
        if inbound.host is None:
            headers = [*headers, (b"host", host)]
        self.conn = conn
        client.exchange = self
        conn.listener = self._on_upstream
        request = request_head(head.method, target, headers)
        if plan.policy.may_resend(method):
            # Written with the round's other writes: should the upstream have
            # closed the connection meanwhile, the request goes elsewhere.
            conn.send_soon(request, head.method)
        else:
            try:  # at once, right after take_idle() saw the connection open
                conn.send(request, head.method, None)
            except Exception as exc:  # the transport refused the write
                self._failed(httpx.WriteError(str(exc)))
                return
        timeout = express.read_timeout
        if timeout is not None:
            express.engine._read_deadline(conn, conn.loop.time() + timeout)

    # -- the upstream's side -----------------------------------------------------

    def _arm(self) -> None:
        timeout = self.express.read_timeout
        conn = self.conn
        if timeout is not None and conn is not None:
            self.express.engine._read_deadline(conn, conn.loop.time() + timeout)

    def _detach(self) -> _Conn:
        conn = self.conn
        assert conn is not None
        self.conn = None
        self.client.exchange = None
        conn.listener = None
        self.express.engine._reading.discard(conn)
        return conn

    def _on_upstream(self) -> None:
        """The response moved on (bytes, an error, the connection's end)."""
        conn = self.conn
        if conn is None:
            return
        if conn.error is not None:
            return self._failed(conn.error)
        reader = conn.reader
        head = reader.head
        if head is None:
            if conn.closed:
                self._failed(httpx.ReadError("upstream closed the connection"))
            return
        if not reader.done:
            if conn.closed:
                return self._failed(httpx.ReadError("upstream closed the connection"))
            if conn.chunks or _streams(head.headers):
                return self._answered(conn, head.status, whole=False)
            self._arm()  # the head alone: wait for the body's first bytes, as the app does
            return
        self._answered(conn, head.status, whole=True)

    def _failed(self, error: Exception) -> None:
        """The attempt ended without a response: settle it as the app's driver
        does, and let the driver judge a retry."""
        conn = self._detach()
        conn._close()
        plan, lease = self.plan, self.lease
        assert plan is not None and lease is not None
        _attempt_failed(plan, lease, error)
        self._hand_over((None, error))

    def _answered(self, conn: _Conn, status: int, *, whole: bool) -> None:
        plan, lease = self.plan, self.lease
        assert plan is not None and lease is not None
        lease.responded(status)
        plan.record(lease, "response", status)
        if not whole or status in plan.policy.retry_on_status or not 200 <= status <= 599:
            self._detach()
            answer = _Answer(conn, None if _streams(conn.headers) else _first(conn))
            answer.lease = lease
            return self._hand_over((answer, None))
        self._detach()
        body = conn.take_all()  # at most a read or two: a longer body was handed over
        framing = conn.reader.framing
        head = conn.reader.head
        assert head is not None
        headers = relayed_headers(head.headers, head.framing, status)
        conn.release()
        lease.finish(Outcome.SUCCESS)
        app = self.express.app
        if app.metrics is not None:
            app.metrics.observe(plan)
        if app.decision_header is not None:
            decided = plan.decision()
            if decided is not None:
                headers.append((app.decision_header, decided.header().encode("latin-1")))
        cycle = self.cycle
        if (framing is not None and framing.kind == "length") or cycle.no_body_for(status):
            cycle.whole(status, headers, body)  # its Content-Length is the body's
        else:
            cycle.start(status, headers)
            cycle.write(body, False)
        # the client connection goes on to its next request

    # -- the client's side -------------------------------------------------------

    def cancel(self) -> None:
        """The client went away (or the proxy stops): abandon the exchange, freeing
        the upstream's slot without blaming it."""
        if self.conn is None:
            return
        conn = self._detach()
        conn._close()
        plan, lease = self.plan, self.lease
        assert plan is not None and lease is not None
        lease.finish(Outcome.CANCELLED)
        plan.record(lease, Outcome.CANCELLED)

    def _hand_over(self, settled: tuple[_Answer | None, Exception | None] | None) -> None:
        """Let ``ProxyApp`` go on from here, in the connection's task."""
        client = self.client
        cycle = self.cycle
        cycle.scope = scope = client.scope_of(self.head)
        plan = self.plan
        assert plan is not None
        cycle.resume = functools.partial(
            self.express.app.resume, scope, cycle.send, self.inbound, plan, settled
        )
        client.run(cycle)


def _streams(headers: list[tuple[bytes, bytes]]) -> bool:
    """An event stream: its head goes to the client at once (as ``ProxyApp`` does)."""
    for name, value in headers:
        if name.lower() == b"content-type" and value.startswith(_EVENT_STREAM):
            return True
    return False


def _first(conn: _Conn) -> bytes:
    """The body's first bytes that arrived (the app's read-ahead)."""
    return conn.take() if conn.chunks else b""
