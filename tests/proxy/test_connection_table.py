"""The engines' connection table forgets upstreams it no longer uses (discovery
makes them come and go), and engines without timers sweep it now and then, not on
every request: a sweep visits every upstream."""

from __future__ import annotations

import asyncio
import time

import pytest

from clientlb import Upstream
from clientlb._proxy._engines import AnyioEngine, AsyncioEngine, BlockingEngine, Timeouts
from clientlb._proxy._engines._base import UpstreamLimits
from clientlb._proxy._engines._connections import ConnectionTable

from ..replicas import Replica


class _Conn:
    usable = True


LIMITS = UpstreamLimits(max_connections=2, max_idle=2, idle_timeout=10.0)


def test_an_upstream_without_connections_or_waiters_is_forgotten_at_a_sweep() -> None:
    table: ConnectionTable[_Conn] = ConnectionTable(LIMITS)
    gone, opened, idle, waited = (table.of(key) for key in ("gone", "open", "idle", "waited"))
    for conns in (gone, opened, idle):
        assert conns.reserve()
    gone.closed()
    idle.put_idle(_Conn(), 0.0)
    waited.waiting += 1
    assert table.expire(1.0) == []
    assert len(table) == 3
    assert table.of("open") is opened and table.of("idle") is idle and table.of("waited") is waited
    waited.waiting -= 1
    table.expire(1.0)
    assert len(table) == 2


def test_an_expired_idle_connection_is_returned_then_its_upstream_forgotten() -> None:
    table: ConnectionTable[_Conn] = ConnectionTable(LIMITS)
    conns = table.of("a")
    conn = _Conn()
    assert conns.reserve() and conns.put_idle(conn, 0.0)
    assert table.expire(5.0) == []  # not idle long enough
    assert table.expire(11.0) == [conn]
    assert len(table) == 1  # still counted open until the engine closes it
    conns.closed()
    table.expire(11.0)
    assert len(table) == 0


def test_sweeps_are_due_every_half_idle_timeout() -> None:
    table: ConnectionTable[_Conn] = ConnectionTable(LIMITS)
    assert table.sweep_due(100.0)
    assert not table.sweep_due(100.0) and not table.sweep_due(104.9)
    assert table.sweep_due(105.0)


SHORT = UpstreamLimits(idle_timeout=0.05)
# Each test below requests every upstream once, then the first alone until the
# table has forgotten the others: each request gives a timerless engine its
# chance to sweep, and the asyncio engine sweeps on a timer while any is idle.


def _sync_round(engine: BlockingEngine, upstream: Upstream) -> None:
    response = engine.request(upstream, b"GET", b"/", [(b"host", b"x")], None, Timeouts())
    while response.read():
        pass
    response.close()


async def _async_round(engine: AsyncioEngine | AnyioEngine, upstream: Upstream) -> None:
    response = await engine.request(upstream, b"GET", b"/", [(b"host", b"x")], None, Timeouts())
    while await response.read():
        pass
    await response.aclose()


@pytest.mark.integration
def test_the_blocking_engine_forgets_upstreams_that_left() -> None:
    with Replica("a") as a, Replica("b") as b, Replica("c") as c:
        ups = [Upstream(r.url) for r in (a, b, c)]
        engine = BlockingEngine(limits=SHORT)
        try:
            for up in ups:
                _sync_round(engine, up)
            assert len(engine._table) == 3
            deadline = time.monotonic() + 10
            while len(engine._table) > 1 and time.monotonic() < deadline:
                _sync_round(engine, ups[0])
            assert len(engine._table) == 1
        finally:
            engine.close()


@pytest.mark.integration
@pytest.mark.parametrize("engine_type", [AsyncioEngine, AnyioEngine])
def test_the_async_engines_forget_upstreams_that_left(
    engine_type: type[AsyncioEngine] | type[AnyioEngine],
) -> None:
    async def main() -> int:
        engine = engine_type(limits=SHORT)
        try:
            for up in ups:
                await _async_round(engine, up)
            assert len(engine._table) == 3
            deadline = time.monotonic() + 10
            while len(engine._table) > 1 and time.monotonic() < deadline:
                await _async_round(engine, ups[0])
                await asyncio.sleep(0.01)  # let the asyncio engine's sweep timer run
            return len(engine._table)
        finally:
            await engine.aclose()

    with Replica("a") as a, Replica("b") as b, Replica("c") as c:
        ups = [Upstream(r.url) for r in (a, b, c)]
        assert asyncio.run(main()) == 1
