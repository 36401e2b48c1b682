from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import pytest

from clientlb import Pool
from clientlb._background import AsyncBackground, Background

from .services import Dnsmasq, EtcdServer, workdir

Runner = Callable[..., contextlib.AbstractContextManager[Any]]


@pytest.fixture
def dnsmasq() -> Iterator[Dnsmasq]:
    with workdir() as path:
        server = Dnsmasq(path)
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture
def etcd() -> Iterator[EtcdServer]:
    with workdir() as path:
        server = EtcdServer(path)
        try:
            yield server.start()
        finally:
            server.close()


@contextlib.contextmanager
def _threads(pool: Pool, **kwargs: Any) -> Iterator[Background]:
    with Background(pool, **kwargs) as background:
        yield background


@contextlib.contextmanager
def _event_loop(backend: str, pool: Pool, **kwargs: Any) -> Iterator[AsyncBackground]:
    """``AsyncBackground`` in an event loop of its own (in a thread), so that one
    synchronous test body drives the thread and the async loops alike."""
    background = AsyncBackground(pool, **kwargs)
    started, stop = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    async def main() -> None:
        async with background:
            started.set()
            await anyio.to_thread.run_sync(stop.wait)

    def body() -> None:
        try:
            anyio.run(main, backend=backend)
        except BaseException as exc:  # reported to the test below
            errors.append(exc)
        finally:
            started.set()

    thread = threading.Thread(target=body, name=f"event loop ({backend})")
    thread.start()
    started.wait(10)
    try:
        yield background
    finally:
        stop.set()
        thread.join(10)
        assert not thread.is_alive()
        if errors:
            raise errors[0]


@pytest.fixture(params=["thread", "asyncio", "trio"])
def run_background(request: pytest.FixtureRequest) -> Runner:
    """``with run_background(pool, discovery=..., health_check=...)``: the sync
    runner (threads) or the async one under asyncio or trio."""
    if request.param == "thread":
        return _threads
    return lambda pool, **kwargs: _event_loop(request.param, pool, **kwargs)
