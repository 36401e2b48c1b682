"""The front end's one-step answer (``_Cycle.whole``), which the express lane
writes a relayed response with, puts the same bytes on the wire as the general
path (``start()`` then ``write(body, False)``) once the event loop's round is
over, and leaves the connection in the same state."""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from clientlb._http1 import RequestReader
from clientlb._proxy._front import FrontEnd
from clientlb._proxy._front._connection import ClientConnection
from clientlb._proxy._headers import relayed_headers
from clientlb._proxy._limits import Limits


class Wire:
    """A transport that keeps what is written."""

    def __init__(self) -> None:
        self.written = b""
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written += data

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 5555), "sockname": ("127.0.0.1", 80)}.get(name, default)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def _noop_app(scope: Any, receive: Any, send: Any) -> None:
    raise AssertionError("the app is not called")


def _answer(
    one_step: bool,
    method: str,
    http11: bool,
    client_keep_alive: bool,
    status: int,
    headers: list[tuple[bytes, bytes]],
    body: bytes,
) -> tuple[bytes, bool, int]:
    loop = asyncio.new_event_loop()
    try:
        front = FrontEnd(_noop_app, Limits(), loop)
        conn = ClientConnection(front)
        wire = Wire()
        conn.connection_made(wire)  # type: ignore[arg-type]
        version = b"1.1" if http11 else b"1.0"
        connection = (
            b""
            if client_keep_alive == http11
            else (b"Connection: keep-alive\r\n" if client_keep_alive else b"Connection: close\r\n")
        )
        conn.reader = RequestReader()
        conn.reader.feed(
            b"%s / HTTP/%s\r\nHost: x\r\n%s\r\n" % (method.encode(), version, connection)
        )
        cycle = conn.begin(method, http11)
        if one_step:
            cycle.whole(status, list(headers), body)
        else:
            cycle.start(status, list(headers))
            cycle.write(body, False)
        loop.run_until_complete(asyncio.sleep(0))  # the round is over: held bytes go out
        return wire.written, wire.closed, conn.served
    finally:
        loop.close()


_NAMES = st.sampled_from([b"x-a", b"set-cookie", b"content-type", b"server", b"date"])
_VALUES = st.binary(min_size=0, max_size=8).map(lambda b: b.hex().encode())


@settings(max_examples=300, deadline=None)
@given(
    method=st.sampled_from(["GET", "HEAD", "POST"]),
    http11=st.booleans(),
    client_keep_alive=st.booleans(),
    upstream_keep_alive=st.booleans(),
    status=st.sampled_from([200, 201, 204, 304, 404, 500, 503]),
    fields=st.lists(st.tuples(_NAMES, _VALUES), max_size=5),
    body=st.binary(max_size=20),
)
def test_one_step_answer_is_start_then_write(
    method: str,
    http11: bool,
    client_keep_alive: bool,
    upstream_keep_alive: bool,
    status: int,
    fields: list[tuple[bytes, bytes]],
    body: bytes,
) -> None:
    # What the lane hands ``whole()``: a head as the engine parsed it, filtered.
    no_body = method == "HEAD" or status in (204, 304)
    if no_body:
        body = b""
    raw = [*fields, (b"content-length", b"%d" % len(body))]
    framing = [(b"content-length", b"%d" % len(body))]
    connection = (b"connection", b"keep-alive" if upstream_keep_alive else b"close")
    raw.append(connection)
    framing.append(connection)
    headers = relayed_headers(raw, framing, status)
    args = (method, http11, client_keep_alive, status, headers, body)
    assert _answer(True, *args) == _answer(False, *args)
