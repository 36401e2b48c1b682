"""Writes held until the event loop's round is over (``clientlb._proxy._outbox``):
made once per round, in order with everything else the connection writes, never
after the connection is closed, aborted or lost, and never one exchange's bytes
on another's connection."""

from __future__ import annotations

import asyncio
import gc
import re
import socket
import threading
import weakref
from collections.abc import Iterator
from typing import Any

import pytest

from clientlb._proxy._engines._asyncio import AsyncioEngine, _Conn
from clientlb._proxy._front import FrontEnd
from clientlb._proxy._front._connection import ClientConnection
from clientlb._proxy._limits import Limits
from clientlb._proxy._outbox import Outbox, outbox_of

from ..replicas import Replica
from .servers import Running, raw_request, split_response
from .test_express import lane
from .test_front_whole import Wire


class Writes(Wire):
    """A transport that keeps each write apart."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        if self.closed:
            raise RuntimeError("written after close")
        super().write(data)
        self.writes.append(data)


@pytest.fixture(params=["asyncio", "uvloop"])
def loop(request: pytest.FixtureRequest) -> Iterator[asyncio.AbstractEventLoop]:
    if request.param == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        loop = uvloop.new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def end_of_round(loop: asyncio.AbstractEventLoop) -> None:
    loop.run_until_complete(asyncio.sleep(0))


def client(loop: asyncio.AbstractEventLoop) -> tuple[ClientConnection, Writes]:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("no app here")

    conn = ClientConnection(FrontEnd(app, Limits(), loop))
    wire = Writes()
    conn.connection_made(wire)  # type: ignore[arg-type]
    return conn, wire


def upstream(loop: asyncio.AbstractEventLoop) -> tuple[_Conn, Writes]:
    engine = AsyncioEngine()
    conn = _Conn(engine._table.of("k"), engine, loop)
    wire = Writes()
    conn.connection_made(wire)  # type: ignore[arg-type]
    return conn, wire


class Recording:
    def __init__(self, log: list[str], name: str, fails: bool = False) -> None:
        self.log, self.name, self.fails = log, name, fails

    def flush(self) -> None:
        self.log.append(self.name)
        if self.fails:
            raise OSError("broken")


def test_the_outbox_flushes_each_holder_once_when_the_round_is_over(
    loop: asyncio.AbstractEventLoop,
) -> None:
    log: list[str] = []
    outbox = Outbox(loop)
    outbox.hold(Recording(log, "a"))
    outbox.hold(Recording(log, "broken", fails=True))
    outbox.hold(Recording(log, "b"))
    assert log == []  # nothing before the round is over
    end_of_round(loop)
    assert log == ["a", "broken", "b"]  # one broken transport keeps no one's bytes
    end_of_round(loop)
    assert log == ["a", "broken", "b"]  # and once
    outbox.hold(Recording(log, "c"))  # a new round
    end_of_round(loop)
    assert log[-1] == "c"


def test_one_outbox_per_loop_which_it_does_not_keep_alive(
    loop: asyncio.AbstractEventLoop,
) -> None:
    other = asyncio.new_event_loop()
    try:
        assert outbox_of(loop) is outbox_of(loop)
        assert outbox_of(loop) is not outbox_of(other)
    finally:
        other.close()
    gone = weakref.ref(other)
    del other
    gc.collect()
    assert gone() is None
    conn, _ = client(loop)
    up, _ = upstream(loop)
    assert conn.outbox is up.outbox is outbox_of(loop)  # one flush for both sides


def test_bytes_held_twice_in_a_round_go_out_in_order_at_its_end(
    loop: asyncio.AbstractEventLoop,
) -> None:
    conn, wire = client(loop)
    conn.write_later(b"first ")
    conn.write_later(b"second")
    assert wire.writes == []
    end_of_round(loop)
    assert wire.writes == [b"first second"]
    assert conn.held == b""


def test_what_is_written_at_once_follows_what_is_held(loop: asyncio.AbstractEventLoop) -> None:
    conn, wire = client(loop)
    conn.write_later(b"200 ")
    conn.write_now(b"400")  # e.g. the next pipelined head is refused at once
    assert wire.writes == [b"200 400"]
    end_of_round(loop)
    assert wire.writes == [b"200 400"]


def test_closing_writes_what_is_held_first(loop: asyncio.AbstractEventLoop) -> None:
    conn, wire = client(loop)
    conn.write_later(b"the last response")
    conn.close()  # Connection: close, or an idle connection's time is up
    assert wire.written == b"the last response" and wire.closed
    end_of_round(loop)  # and nothing after the close
    assert wire.writes == [b"the last response"]


@pytest.mark.parametrize("ending", ["abort", "lost"])
def test_an_aborted_or_lost_connection_writes_nothing_held(
    loop: asyncio.AbstractEventLoop, ending: str
) -> None:
    conn, wire = client(loop)
    conn.write_later(b"never")
    if ending == "abort":
        conn.abort()
    else:
        conn.connection_lost(None)
    end_of_round(loop)
    assert wire.writes == [] and conn.held == b""


def test_a_held_request_is_written_when_the_round_is_over(
    loop: asyncio.AbstractEventLoop,
) -> None:
    conn, wire = upstream(loop)
    conn.send_soon(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", b"GET")
    assert wire.writes == [] and conn.sent  # counted as sent: it may reach the upstream
    end_of_round(loop)
    assert wire.writes == [b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"]


def test_a_held_request_of_a_connection_closed_meanwhile_is_never_written(
    loop: asyncio.AbstractEventLoop,
) -> None:
    conn, wire = upstream(loop)
    conn.send_soon(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", b"GET")
    conn._close()  # the client left in the same round
    end_of_round(loop)
    assert wire.writes == [] and wire.closed


def test_a_refused_write_fails_the_exchange(loop: asyncio.AbstractEventLoop) -> None:
    conn, wire = upstream(loop)

    def refuse(data: bytes) -> None:
        raise RuntimeError("refused")

    wire.write = refuse  # type: ignore[method-assign]
    conn.send_soon(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", b"GET")
    end_of_round(loop)
    assert conn.error is not None and "refused" in str(conn.error)
    assert conn.closed and wire.closed


@pytest.mark.integration
def test_a_lane_response_precedes_the_refusal_of_the_next_pipelined_head() -> None:
    with Replica("a") as a, lane([a.url]) as (_, counted, url):
        port = int(url.rsplit(":", 1)[1])
        raw_request(port, b"GET /warm HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"GET /one HTTP/1.1\r\nHost: x\r\n\r\nBAD LINE\r\n\r\n")
            raw = b""
            while chunk := sock.recv(65536):
                raw += chunk
    first, _, rest = raw.partition(b"HTTP/1.1 400")
    assert split_response(first)[0] == 200 and b"/one" in first
    assert rest and b"HTTP/1.1 200" not in rest
    assert counted.handed == [None] and counted.from_start == 0  # /one took the lane


@pytest.mark.integration
def test_requests_the_lane_writes_at_once_or_held_are_all_answered() -> None:
    # A request the policy may resend is held for the round's end; one it may
    # not (a POST without a body) is written at once, right after the idle
    # connection was seen open.
    methods = ["GET", "POST"] * 3
    with Replica("a") as a, lane([a.url]) as (_, counted, url):
        port = int(url.rsplit(":", 1)[1])
        raw_request(port, b"GET /warm HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        batch = b"".join(
            f"{m} /{n} HTTP/1.1\r\nHost: x\r\n\r\n".encode() for n, m in enumerate(methods)
        )
        raw = raw_request(
            port, batch + b"GET /last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
    assert raw.count(b"HTTP/1.1 200 OK") == 7
    assert [seen["method"] for seen in a.requests[1:]] == [*methods, "GET"]
    assert [seen["path"] for seen in a.requests[1:]] == [f"/{n}" for n in range(6)] + ["/last"]
    assert counted.handed == [None] and counted.from_start == 0  # all through the lane


@pytest.mark.integration
def test_clients_pipelining_through_the_command_each_get_their_own_answers_in_order() -> None:
    # The command runs uvloop: many connections' answers are held in one round.
    clients, each = 8, 25
    with Replica("a") as a, Replica("b") as b:
        running = Running(["--upstream", a.url, "--upstream", b.url])
        try:
            port = int(running.url.rsplit(":", 1)[1])
            raw_request(port, b"GET /warm HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            start = threading.Barrier(clients)
            answers: dict[int, bytes] = {}

            def client(n: int) -> None:
                paths = [f"/c{n}/r{r}" for r in range(each)]
                batch = b"".join(f"GET {p} HTTP/1.1\r\nHost: x\r\n\r\n".encode() for p in paths)
                start.wait(10)
                answers[n] = raw_request(
                    port, batch + b"GET /end HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                )

            threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(30)
        finally:
            assert running.stop() == 0
    assert sorted(answers) == list(range(clients))
    for n, raw in answers.items():
        parts = raw.split(b"HTTP/1.1 200 OK")[1:]
        seen = [re.search(rb'"path": ?"([^"]+)"', part) for part in parts]
        assert [m.group(1).decode() if m else None for m in seen] == [
            *(f"/c{n}/r{r}" for r in range(each)),
            "/end",
        ]
