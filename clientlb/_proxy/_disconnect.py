"""Cancel the upstream exchange when the ASGI client goes away.

An ASGI server reports a disconnect only through ``receive()`` returning
``http.disconnect``, so something must wait on ``receive()`` while the proxy
waits on the upstream. A task per request for that is the single largest cost
of a fast forwarding hop (a task group and its cancel scope cost about as much as
the rest of the hop together), so under asyncio the watcher is started lazily:
only a request still running after ``WATCH_AFTER`` seconds gets one. A client
that left before then is noticed as soon as the watcher starts, because
``receive()`` returns ``http.disconnect`` at once for a connection already gone.

Other backends (trio) use a plain anyio task group.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Protocol

import anyio
import sniffio

WATCH_AFTER = 0.05

Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]


class _Done(Protocol):
    async def wait(self) -> Any: ...


def _under_asyncio() -> bool:
    """Whether this runs on an asyncio loop (cheaper than asking sniffio, which
    looks up the current task, on every request)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    if "trio_asyncio" in sys.modules:  # asyncio loops inside trio: sniffio knows
        return bool(sniffio.current_async_library() == "asyncio")
    return True


async def _wait_for_disconnect(receive: Receive, body_done: _Done | None) -> None:
    if body_done is not None:  # only one task may call receive(): the body reader first
        await body_done.wait()
    while (await receive())["type"] != "http.disconnect":
        pass


async def run_until_disconnect(
    receive: Receive, body_done: _Done | None, work: Callable[[], Awaitable[None]]
) -> bool:
    """Run ``work()``; cancel it if the client disconnects. ``True`` if it was
    cancelled that way."""
    if _under_asyncio():
        return await _asyncio_run(receive, body_done, work)
    cancelled = False
    async with anyio.create_task_group() as group:

        async def watch() -> None:
            nonlocal cancelled
            await _wait_for_disconnect(receive, body_done)
            cancelled = True
            group.cancel_scope.cancel()

        group.start_soon(watch)
        await work()
        group.cancel_scope.cancel()
    return cancelled


class _Watch:
    __slots__ = ("body_done", "fired", "receive", "task", "watcher")

    def __init__(self, receive: Receive, body_done: _Done | None, task: asyncio.Task[Any]) -> None:
        self.receive = receive
        self.body_done = body_done
        self.task = task
        self.fired = False
        self.watcher: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.watcher = asyncio.get_running_loop().create_task(self._watch())

    async def _watch(self) -> None:
        await _wait_for_disconnect(self.receive, self.body_done)
        self.fired = True
        self.task.cancel()


async def _asyncio_run(
    receive: Receive, body_done: _Done | None, work: Callable[[], Awaitable[None]]
) -> bool:
    task = asyncio.current_task()
    assert task is not None
    watch = _Watch(receive, body_done, task)
    timer = asyncio.get_running_loop().call_later(WATCH_AFTER, watch.start)
    try:
        await work()
        if watch.fired:  # the cancel came too late to interrupt: absorb it here
            await asyncio.sleep(0)
    except asyncio.CancelledError:
        if not watch.fired:
            raise
        task.uncancel()
        return True
    finally:
        timer.cancel()
        if watch.watcher is not None:
            watch.watcher.cancel()
    return False
