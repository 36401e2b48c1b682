"""WebSocket forwarding for ``ProxyApp``: balanced like HTTP, relayed both ways.

The upstream side is the ``websockets`` library's asyncio client, so this runs
under asyncio (what uvicorn runs). A connection is one ``AttemptPlan``: a failed
connect, or a handshake answered with a retryable status, goes to another
upstream; the lease lasts as long as the WebSocket, so least-connections
algorithms see long-lived sockets as load. Text and binary messages are relayed
as they are; a close on either side is passed to the other with its code and
reason. An upstream that vanishes closes the client with 1014 (bad gateway).
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any

import anyio
import sniffio

from .._core import AttemptPlan, Lease, NoUpstream, Outcome
from .._http1 import ProtocolError
from ._errors import NO_UPSTREAM, TIMED_OUT, UNREACHABLE, ErrorReply, refusal
from ._headers import request_target

if TYPE_CHECKING:
    from websockets.asyncio.client import ClientConnection

    from ._asgi import ProxyApp

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

# Sent by the websockets client itself, or negotiated per hop.
_HANDSHAKE = frozenset(
    {
        b"sec-websocket-key",
        b"sec-websocket-version",
        b"sec-websocket-extensions",
        b"sec-websocket-protocol",
        b"sec-websocket-accept",
        b"host",
        b"user-agent",
    }
)
#: The largest message relayed from an upstream, in bytes: uvicorn's default limit
#: for what clients send (``ws_max_size``), so both directions are bounded alike.
MAX_MESSAGE = 16 * 1024 * 1024
# Codes that say what happened on one hop and cannot be sent in a close frame.
_RESERVED = frozenset({1005, 1006, 1015})
BAD_GATEWAY = 1014
NOT_SUPPORTED = ErrorReply(
    501,
    b"501 Not Implemented: WebSocket forwarding needs asyncio and websockets\n",
    "not supported",
)


async def proxy_websocket(
    proxy: ProxyApp, scope: MutableMapping[str, Any], receive: Receive, send: Send
) -> None:
    """Forward one WebSocket connection (an ASGI ``websocket`` scope)."""
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    try:
        from websockets.asyncio.client import connect
        from websockets.exceptions import InvalidStatus
    except ImportError:  # pragma: no cover - uvicorn needs a WebSocket library too
        return await _deny(scope, send, NOT_SUPPORTED)
    if sniffio.current_async_library() != "asyncio":  # the websockets client is asyncio's
        return await _deny(scope, send, NOT_SUPPORTED)
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
        return await _deny(scope, send, refusal(exc))
    headers, key = inbound.headers, inbound.client
    # The websockets client writes the Host header from the URI's authority, so
    # a kept client Host (a plain host[:port], which the policy checked) goes
    # there, as host and port, while the socket still goes to the upstream.
    host = inbound.host.decode("ascii") if inbound.host is not None else None
    extra = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in headers if n not in _HANDSHAKE]
    ua = [v.decode("latin-1") for n, v in scope["headers"] if n == b"user-agent"]
    extra += [("User-Agent", u) for u in ua]
    raw_path: bytes = scope.get("raw_path") or scope["path"].encode("utf-8")
    pool = proxy.pool
    plan = AttemptPlan(pool, "GET", key if pool.algorithm.hashes else None)
    try:
        lease = plan.first()
    except NoUpstream:
        return await _deny(scope, send, NO_UPSTREAM)
    timeouts = proxy.timeouts
    while True:
        upstream = lease.upstream
        _, prefix = proxy.upstream_parts(upstream)
        try:
            target = request_target(prefix, raw_path, scope.get("query_string", b""))
        except ProtocolError as exc:
            lease.finish(Outcome.CANCELLED)
            return await _deny(scope, send, refusal(exc))
        secure = upstream.scheme == "https"
        authority = host if host is not None else upstream.netloc
        uri = f"{'wss' if secure else 'ws'}://{authority}{target.decode('latin-1')}"
        outcome: Outcome | None
        status: int | None = None
        try:
            ws = await connect(
                uri,
                host=upstream.host,
                port=upstream.port,
                ssl=proxy.ssl_context if secure else None,
                server_hostname=upstream.host if secure else None,
                proxy=None,  # the upstream is dialled directly, as for HTTP
                additional_headers=extra,
                subprotocols=scope.get("subprotocols") or None,
                open_timeout=timeouts.connect,
                user_agent_header=None,
                compression=None,
                max_size=MAX_MESSAGE,
                ping_interval=None,
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            lease.responded(status)
            lease.finish(Outcome.SUCCESS)
            outcome = None
            reply = ErrorReply(status, bytes(exc.response.body or b""), "handshake refused")
        except TimeoutError:
            outcome, reply = Outcome.CONNECT_FAILURE, TIMED_OUT
            lease.finish(outcome)
        except OSError:
            outcome, reply = Outcome.CONNECT_FAILURE, UNREACHABLE
            lease.finish(outcome)
        except BaseException:
            lease.finish(Outcome.CANCELLED)
            raise
        else:
            return await _relay(ws, lease, receive, send)
        plan.record(lease, outcome or "response", status)
        if plan.retry_after(outcome, status=status, replayable=True):
            try:
                lease = plan.next()
                continue
            except NoUpstream:
                pass
        return await _deny(scope, send, reply)


async def _deny(scope: MutableMapping[str, Any], send: Send, reply: ErrorReply) -> None:
    """Refuse the handshake: with the status when the server lets us say it."""
    from ._base import log_failure

    log_failure("WEBSOCKET", scope["path"], reply, "handshake not forwarded", None)
    if "websocket.http.response" in scope.get("extensions", {}):
        await send(
            {
                "type": "websocket.http.response.start",
                "status": reply.status,
                "headers": reply.headers,
            }
        )
        await send({"type": "websocket.http.response.body", "body": reply.body})
    else:
        await send({"type": "websocket.close", "code": 1013})


async def _relay(ws: ClientConnection, lease: Lease, receive: Receive, send: Send) -> None:
    from websockets.exceptions import ConnectionClosed

    lease.responded(101)
    outcome = Outcome.CANCELLED
    try:
        await send({"type": "websocket.accept", "subprotocol": ws.subprotocol})

        async def client_to_upstream() -> None:
            while True:
                message = await receive()
                kind = message["type"]
                if kind == "websocket.receive":
                    text = message.get("text")
                    try:
                        await ws.send(text if text is not None else message.get("bytes") or b"")
                    except ConnectionClosed:
                        return
                elif kind == "websocket.disconnect":
                    code = message.get("code", 1000)
                    await ws.close(1000 if code in _RESERVED else code, message.get("reason") or "")
                    return

        async def upstream_to_client() -> None:
            try:
                async for data in ws:
                    if isinstance(data, str):
                        await send({"type": "websocket.send", "text": data})
                    else:
                        await send({"type": "websocket.send", "bytes": data})
            except ConnectionClosed:
                pass
            code = ws.close_code
            reason = ws.close_reason or ""
            if code is None or code in _RESERVED:
                code = BAD_GATEWAY if code == 1006 else 1000
            with contextlib.suppress(OSError, RuntimeError):  # the client left first
                await send({"type": "websocket.close", "code": code, "reason": reason})

        async with anyio.create_task_group() as group:

            async def run(part: Callable[[], Awaitable[None]]) -> None:
                await part()
                group.cancel_scope.cancel()

            group.start_soon(run, client_to_upstream)
            group.start_soon(run, upstream_to_client)
        outcome = Outcome.SUCCESS
    finally:
        with anyio.CancelScope(shield=True):
            await ws.close()
        lease.finish(outcome)
