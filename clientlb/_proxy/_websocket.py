"""WebSocket forwarding for ``ProxyApp``: balanced and retried like HTTP,
relayed both ways within bounds, ended when either side goes.

The upstream leg is the ``websockets`` library's asyncio client, so this runs
under asyncio (what uvicorn runs). Opening it is one ``AttemptPlan`` for a GET
(idempotent), timed as HTTP is (``timeout.connect`` for TCP and TLS, then
``timeout.read`` for the answer), and a failed opening is the upstream's:

    refused, unreachable, TLS failed, no TCP in time    -> CONNECT_FAILURE, 502
    no answer to the handshake in time                  -> TIMEOUT, 504
    closed, reset, a malformed 101, a wrong Sec-WebSocket-Accept, an extension
    or subprotocol never offered (InvalidHandshake, ProtocolError, EOF)
                                                        -> RESET, 502
    anything else (a fault on the proxy's side)         -> CANCELLED, 502

A non-101 answer (a redirect too: none is followed) is passed on with its
status, headers and body, unless its status is in the pool's
``retry_on_status`` and another upstream is tried. When none is left the client
hears the status (``websocket.http.response``; without that extension, a close,
which servers turn into 403) and the log gets one line.

The relay, per ``proxy.websockets`` (a ``WebSocketSettings``):

* Messages go whole: ASGI has no fragments, so a fragmented upstream message is
  joined before it goes on (``recv_streaming()`` would only move the join here,
  and cannot be cancelled midway); a client message goes up as one frame.
* ``max_message`` bounds the upstream's messages, inflated size included (the
  library inflates at most that much of a permessage-deflate message, offered
  when ``deflate``, before failing it with 1009, which the client hears), and
  at most ``MAX_QUEUE`` frames from it wait. A client message over it closes
  both legs with 1009; but the client leg is the server's: uvicorn negotiates
  deflate per ``--ws-per-message-deflate`` and inflates up to ``--ws-max-size``
  (16 MiB by default) before a message reaches this code, so set that to
  ``max_message``.
* ``max_open`` counts handshakes under way and open relays
  (``proxy.open_websockets``, shared with the front end's tunnel): over it, 503.
* The client is read up to ``READ_AHEAD`` message ahead of the upstream, so a
  client that leaves is noticed even while a send to a stalled upstream is
  blocked; one that sends more is held back (reading from it pauses, as TCP
  would) until that send fails after ``timeout.write``. The upstream leg is
  pinged every ``ping_interval``; silent ``ping_timeout`` after a ping, it is
  closed and the client hears 1011 (at most ``close_timeout`` later). The
  client leg's pings are the server's (uvicorn's ``--ws-ping-interval``).
* A close from either side goes to the other with its code and reason; an
  upstream that vanishes closes the client with 1014. However a relay ends,
  both closings get ``close_timeout``, then the upstream connection is cut.
  ``close_websockets()`` (for ``ProxyApp.shutdown()``) says 1001 Going Away to
  every client and closes every upstream normally.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

import anyio
import sniffio

from .._attempts import ATTEMPTS_EXTENSION, Rules, adrive
from .._core import AttemptPlan, Lease, NoUpstream, Outcome
from .._errors_map import (
    BAD_RESPONSE,
    TOO_MANY_WEBSOCKETS,
    ErrorReply,
    opening_error,
    refusal,
    reply_for,
)
from .._http1 import ProtocolError
from .._httpx import httpx
from ._base import ProxyBase, log_failure
from ._headers import Headers, request_target, scope_path
from ._keys import scope_cookie
from ._websocket_open import HAVE_WEBSOCKETS, Leg, Opening, leg_options, passed_on

with contextlib.suppress(ImportError):  # uvicorn can run WebSockets on wsproto alone
    from websockets.exceptions import ConnectionClosed, InvalidStatus

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

# Sent by the websockets client itself, or negotiated per hop.
#: Messages from the client waiting for an upstream slow to take them.
READ_AHEAD = 1
NORMAL, GOING_AWAY, TOO_BIG, INTERNAL_ERROR = 1000, 1001, 1009, 1011
TRY_AGAIN_LATER, BAD_GATEWAY = 1013, 1014
# Codes a close frame may carry (RFC 6455 7.4); others say what happened on one
# hop (1005, 1006, 1015), and the other hop hears a plain 1000.
_SENDABLE = frozenset({1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014})
NOT_SUPPORTED = ErrorReply(
    501,
    b"501 Not Implemented: WebSocket forwarding needs asyncio and websockets\n",
    "not supported",
)


def _sendable(code: int) -> int:
    return code if code in _SENDABLE or 3000 <= code < 5000 else NORMAL


async def proxy_websocket(
    proxy: ProxyBase, scope: MutableMapping[str, Any], receive: Receive, send: Send
) -> None:
    """Forward one WebSocket connection (an ASGI ``websocket`` scope)."""
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    if not HAVE_WEBSOCKETS or sniffio.current_async_library() != "asyncio":
        return await _deny(proxy, scope, receive, send, NOT_SUPPORTED, None, None)
    if proxy.open_websockets >= proxy.websockets.max_open:
        return await _deny(proxy, scope, receive, send, TOO_MANY_WEBSOCKETS, "at max_open", None)
    proxy.open_websockets += 1
    try:
        await _forward(proxy, scope, receive, send)
    finally:
        proxy.open_websockets -= 1


async def _forward(
    proxy: ProxyBase, scope: MutableMapping[str, Any], receive: Receive, send: Send
) -> None:
    client = scope.get("client")
    try:
        inbound = proxy.policy.request(
            "GET",
            scope["headers"],
            client[0] if client else None,
            "https" if scope.get("scheme") == "wss" else "http",
            scope.get("http_version") != "1.0",
        )
    except ProtocolError as exc:
        return await _deny(proxy, scope, receive, send, refusal(exc), exc, None)
    # The websockets client writes the Host header from the URI's authority, so
    # a kept client Host (a plain host[:port], which the policy checked) goes
    # there, as host and port, while the socket still goes to the upstream.
    host = inbound.host.decode("ascii") if inbound.host is not None else None
    options = leg_options(proxy.websockets, inbound.headers, scope)
    raw_path = scope_path(scope)
    pool = proxy.pool
    token = pin = None
    if proxy.pins is not None:
        token = scope_cookie(scope["headers"], proxy.pins.cookie.name)
        pin = proxy.pin(token)
    plan = AttemptPlan(pool, "GET", proxy.hash_key(scope, inbound.client), pin=pin)
    scope.setdefault("extensions", {})[ATTEMPTS_EXTENSION] = plan.history
    query: bytes = scope.get("query_string", b"")

    async def attempt(lease: Lease, timeout: float | None) -> _Opened:
        upstream = lease.upstream
        _, prefix = proxy.upstream_parts(upstream)
        target = request_target(prefix, raw_path, query)
        secure = upstream.scheme == "https"
        authority = host if host is not None else upstream.netloc
        uri = f"{'wss' if secure else 'ws'}://{authority}{target.decode('latin-1')}"
        opening = Opening(proxy.timeouts.within(timeout))
        try:
            leg = await opening.open(
                uri,
                host=upstream.host,
                port=upstream.port,
                ssl=proxy.ssl_context if secure else None,
                server_hostname=upstream.host if secure else None,
                **options,
            )
        except InvalidStatus as exc:  # an answer, not a failure: passed on, or retried
            return _Opened(None, exc.response)
        except Exception as exc:
            error = opening_error(exc, opening.connected)
            if error is None:
                raise
            raise error from exc
        return _Opened(leg, None)

    rules = Rules(_Opened.status_of, _Opened.keep, lambda: True, queue_timeout=proxy.timeouts.pool)
    try:
        opened = await adrive(plan, attempt, rules, _Opened.discard)
    except NoUpstream as exc:
        return await _deny(proxy, scope, receive, send, reply_for(exc), exc, None)
    except ProtocolError as exc:  # the path leaves this upstream's prefix
        return await _deny(proxy, scope, receive, send, refusal(exc), exc, plan.lease)
    except httpx.TransportError as exc:
        return await _deny(proxy, scope, receive, send, reply_for(exc), exc, plan.lease)
    except Exception as exc:  # a fault on the proxy's side: 502, and one log line
        detail = f"{type(exc).__name__}: {exc}"
        return await _deny(proxy, scope, receive, send, BAD_RESPONSE, detail, plan.lease)
    assert opened.lease is not None
    if opened.leg is not None:
        cookie = proxy.set_cookie(token, opened.lease.upstream)
        pinned = [(b"set-cookie", cookie.encode("latin-1"))] if cookie is not None else []
        return await _Relay(proxy, opened.leg, opened.lease, receive, send, pinned).run()
    assert opened.refused is not None
    response = opened.refused
    status = response.status_code
    reply = ErrorReply(status, bytes(response.body or b""), "refused by the upstream")
    headers = passed_on(response.headers.raw_items(), status)
    return await _deny(proxy, scope, receive, send, reply, reply.reason, opened.lease, headers)


class _Opened:
    """A try at the upstream leg that got an answer: the leg (101), or the
    upstream's refusal (any other status), holding the lease."""

    __slots__ = ("lease", "leg", "refused")

    def __init__(self, leg: Leg | None, refused: Any) -> None:
        self.leg = leg
        self.refused = refused
        self.lease: Lease | None = None

    def status_of(self) -> int:
        return 101 if self.leg is not None else int(self.refused.status_code)

    def keep(self, lease: Lease) -> _Opened:
        self.lease = lease
        if self.leg is None:  # a refusal holds nothing open
            lease.finish(Outcome.SUCCESS)
        return self

    async def discard(self) -> None:
        if self.leg is not None:
            self.leg.cut()
        if self.lease is not None:
            self.lease.finish(Outcome.SUCCESS)


async def _deny(
    proxy: ProxyBase,
    scope: MutableMapping[str, Any],
    receive: Receive,
    send: Send,
    reply: ErrorReply,
    detail: object,
    lease: Lease | None,
    headers: Headers | None = None,
) -> None:
    """Refuse the handshake: with the status when the server lets us say it."""
    log_failure("WEBSOCKET", scope["path"], reply, detail, lease)
    if "websocket.http.response" not in scope.get("extensions", {}):
        await send({"type": "websocket.close", "code": TRY_AGAIN_LATER})
        return
    if headers is None:
        headers = reply.headers
    else:
        headers = [*headers, (b"content-length", str(len(reply.body)).encode("ascii"))]
    await send(
        {"type": "websocket.http.response.start", "status": reply.status, "headers": headers}
    )
    await send({"type": "websocket.http.response.body", "body": reply.body})
    # uvicorn's websockets-sansio protocol (0.54) marks a handshake answered so
    # complete only once the connection is lost, and logs "ASGI callable
    # returned without completing handshake" if the app returns before (uvicorn
    # PR #3138). It queues one disconnect with the answer and another when the
    # connection is lost: wait, briefly, for the second.
    with anyio.move_on_after(proxy.websockets.close_timeout):
        with contextlib.suppress(OSError, RuntimeError):
            for _ in range(2):
                await receive()


@dataclass(frozen=True, slots=True)
class _Ending:
    """How a relay ends: the close each side hears (``None``: nothing more is
    said to it), whether the client's read-ahead still goes upstream first,
    and the lease's outcome."""

    client: tuple[int, str] | None
    upstream: tuple[int, str] | None
    outcome: Outcome
    flush: bool = False


# What the library failing the upstream leg with a code says of the upstream:
# 1011 is unanswered pings; 1009 is a message over our limit, not a fault; 1002
# and 1007 (bad frames, bad UTF-8) are.
_FAILED_BY_LIBRARY = {INTERNAL_ERROR: Outcome.TIMEOUT, TOO_BIG: Outcome.SUCCESS}


def _upstream_ended(exc: ConnectionClosed) -> _Ending:
    """The ending when the upstream leg closed (``exc`` from ``recv()``)."""
    if exc.rcvd is not None:  # the upstream said it: the client hears the same
        return _Ending((_sendable(exc.rcvd.code), exc.rcvd.reason), None, Outcome.SUCCESS)
    if exc.sent is not None:  # the library failed the leg
        code = exc.sent.code
        outcome = _FAILED_BY_LIBRARY.get(code, Outcome.RESET)
        return _Ending((_sendable(code), exc.sent.reason), None, outcome)
    return _Ending((BAD_GATEWAY, "upstream connection lost"), None, Outcome.RESET)


# The open relays of each proxy, for ``close_websockets()``.
_RELAYS: weakref.WeakKeyDictionary[ProxyBase, set[_Relay]] = weakref.WeakKeyDictionary()


async def close_websockets(proxy: ProxyBase) -> None:
    """End ``proxy``'s open relays (for ``ProxyApp.shutdown()``): every client
    hears 1001 Going Away, every upstream a normal close, and each relay gets
    ``close_timeout`` seconds to finish before its upstream connection is cut."""
    relays = list(_RELAYS.get(proxy, ()))
    for relay in relays:
        relay.end(_Ending((GOING_AWAY, "proxy shutting down"), (NORMAL, ""), Outcome.SUCCESS))
    with anyio.move_on_after(2 * proxy.websockets.close_timeout):  # each bounds itself
        for relay in relays:
            await relay.done.wait()


class _Relay:
    """One open WebSocket: the client read ahead of the upstream by at most
    ``READ_AHEAD`` messages, the upstream's messages sent on as they come, and
    the first ending any part finds ending the whole."""

    def __init__(
        self,
        proxy: ProxyBase,
        ws: Leg,
        lease: Lease,
        receive: Receive,
        send: Send,
        headers: Headers | None = None,
    ) -> None:
        self.proxy, self.ws, self.lease = proxy, ws, lease
        self.headers = headers  # the accept's own (a sticky cookie)
        self.receive, self.send = receive, send
        self.settings = proxy.websockets
        self.pending: asyncio.Queue[tuple[bytes, bool]] = asyncio.Queue(READ_AHEAD)
        self.scope = anyio.CancelScope()
        self.ending: _Ending | None = None
        self.done = anyio.Event()

    def end(self, ending: _Ending) -> None:
        if self.ending is None:
            self.ending = ending
            self.scope.cancel()

    async def run(self) -> None:
        relays = _RELAYS.setdefault(self.proxy, set())
        relays.add(self)
        self.lease.responded(101)
        outcome = Outcome.CANCELLED
        try:
            with self.scope:
                accept: dict[str, Any] = {
                    "type": "websocket.accept",
                    "subprotocol": self.ws.subprotocol,
                }
                if self.headers:
                    accept["headers"] = self.headers
                await self.send(accept)
                async with anyio.create_task_group() as group:
                    group.start_soon(self._from_client)
                    group.start_soon(self._to_upstream)
                    group.start_soon(self._to_client)
        except OSError:  # the client left before the accept went out
            self.end(_Ending(None, (GOING_AWAY, ""), Outcome.SUCCESS))
        finally:
            with anyio.CancelScope(shield=True):
                outcome = await self._close()
            relays.discard(self)
            self.done.set()
            self.lease.finish(outcome)

    async def _from_client(self) -> None:
        limit, pending = self.settings.max_message, self.pending
        while True:
            message = await self.receive()
            kind = message["type"]
            if kind == "websocket.receive":
                text = message.get("text")
                data: bytes = text.encode() if text is not None else message.get("bytes") or b""
                if len(data) > limit:
                    too_big = (TOO_BIG, "message too big")
                    return self.end(_Ending(too_big, too_big, Outcome.SUCCESS))
                await pending.put((data, text is not None))
            elif kind == "websocket.disconnect":
                code = _sendable(message.get("code", NORMAL))
                said = (code, message.get("reason") or "")
                return self.end(_Ending(None, said, Outcome.SUCCESS, flush=True))

    async def _to_upstream(self) -> None:
        ws, pending, timeout = self.ws, self.pending, self.proxy.timeouts.write
        while True:
            data, text = await pending.get()  # taken only when it is written
            try:
                with anyio.fail_after(timeout):
                    await ws.send(data, text=text)
            except ConnectionClosed:
                return  # _to_client hears how the upstream leg ended
            except TimeoutError:
                said = (INTERNAL_ERROR, "upstream not reading")
                return self.end(_Ending(said, None, Outcome.TIMEOUT))

    async def _to_client(self) -> None:
        ws, send = self.ws, self.send
        try:
            while True:
                data = await ws.recv()
                if isinstance(data, str):
                    message: Message = {"type": "websocket.send", "text": data}
                else:
                    message = {"type": "websocket.send", "bytes": data}
                try:
                    await send(message)
                except (OSError, RuntimeError):  # how servers say the client is gone
                    return self.end(_Ending(None, (GOING_AWAY, ""), Outcome.SUCCESS))
        except ConnectionClosed as exc:
            self.end(_upstream_ended(exc))

    async def _close(self) -> Outcome:
        """Say the ending to both sides within ``close_timeout``, then cut the
        upstream connection if it is still there."""
        ending = self.ending or _Ending(None, (GOING_AWAY, ""), Outcome.CANCELLED)
        ws, outcome = self.ws, ending.outcome
        with anyio.move_on_after(self.settings.close_timeout) as grace:
            if ending.client is not None:
                code, reason = ending.client
                with contextlib.suppress(OSError, RuntimeError):  # the client left first
                    await self.send({"type": "websocket.close", "code": code, "reason": reason})
            with contextlib.suppress(ConnectionClosed):
                while ending.flush and not self.pending.empty():
                    data, text = self.pending.get_nowait()
                    await ws.send(data, text=text)
                if ending.upstream is not None:
                    await ws.close(*ending.upstream)
        if grace.cancelled_caught and outcome is Outcome.SUCCESS:
            outcome = Outcome.CANCELLED  # the upstream did not finish: cut, not blamed
        ws.cut()
        return outcome
