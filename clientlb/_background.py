"""A pool's background work, active health checks and discovery, started and stopped
with the transport or app that owns the pool.

Sync owners (``BalancingTransport``, ``WSGIProxy``) use daemon threads::

    self._background = Background(pool, health_check=check, discovery=provider).start()
    ...
    def close(self) -> None:
        self._background.close()        # stops and joins every thread it started

Async owners (``AsyncBalancingTransport``, ``ProxyApp`` in its lifespan) use an
anyio task group, under asyncio or trio::

    self._background = AsyncBackground(pool, health_check=check, discovery=provider)

    async def __aenter__(self):
        await self._background.start()  # tasks run until aclose()
        return self

    async def aclose(self) -> None:
        await self._background.aclose() # cancels the tasks and waits for them

A pool shared by several owners is checked and fed by one of them at a time:
each passes ``owner=self``; the first to start claims the pool
(``Pool.claim_runner``) and the others stand by, trying again every
``TAKEOVER_INTERVAL`` seconds, so when the runner closes another takes over.

``start()`` and ``aclose()`` must run in the same task (anyio's rule for task
groups); ``AsyncBackground`` also works as ``async with``, and ``run()`` serves
callers with a task group of their own. With neither a health check nor a
provider, both classes start nothing; ``close()``/``aclose()`` are idempotent and
safe without ``start()``. After ``close()`` no thread or task of theirs is left.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Self

import anyio
import anyio.abc

from ._core import ConfigError, HealthCheck, Pool
from ._health import HealthChecker
from ._httpx import httpx
from .discovery import Provider

log = logging.getLogger("clientlb")

#: Seconds ``close()`` waits for each thread before saying it is stuck.
JOIN_TIMEOUT = 30.0
#: Seconds ``start()`` waits for discovery's first answer when the pool is empty,
#: so that the first requests find upstreams rather than ``NoUpstreamAvailable``.
FIRST_ANSWER_TIMEOUT = 5.0
#: Seconds between a standing-by owner's attempts to take over a shared pool.
TAKEOVER_INTERVAL = 1.0


def _providers(discovery: Provider | Iterable[Provider] | None) -> list[Provider]:
    if discovery is None:
        return []
    if isinstance(discovery, Provider):
        return [discovery]
    if not isinstance(discovery, Iterable):
        raise ConfigError("discovery", f"expected a clientlb.discovery provider, got {discovery!r}")
    providers = list(discovery)
    for provider in providers:
        if not isinstance(provider, Provider):
            raise ConfigError(
                "discovery", f"expected a clientlb.discovery provider, got {provider!r}"
            )
    return providers


class _Base:
    def __init__(
        self,
        pool: Pool,
        *,
        health_check: HealthCheck | None = None,
        discovery: Provider | Iterable[Provider] | None = None,
        owner: object = None,
        first_answer_timeout: float = FIRST_ANSWER_TIMEOUT,
    ) -> None:
        if not isinstance(pool, Pool):
            raise TypeError(f"expected a Pool, got {pool!r}")
        self.pool = pool
        self.owner = owner
        self.first_answer_timeout = first_answer_timeout
        self.checker = HealthChecker(pool, health_check) if health_check is not None else None
        self.providers = _providers(discovery)
        self.started = False
        self.closed = False
        self.running = False  # this runner's checks and discovery are running

    @property
    def _has_work(self) -> bool:
        return bool(self.providers) or self.checker is not None

    def _claim(self) -> bool:
        """Whether this runner may run the pool's work (always, without an owner)."""
        return self.owner is None or self.pool.claim_runner(self.owner)

    def _release(self) -> None:
        if self.owner is not None:
            self.pool.release_runner(self.owner)

    @property
    def _awaits_registry(self) -> bool:
        """Whether start() should wait for discovery: nothing to serve without it."""
        return bool(self.providers) and len(self.pool) == 0

    def _begin(self) -> None:
        if self.closed:
            raise RuntimeError("this background runner was closed; make a new one")
        if self.started:
            raise RuntimeError("this background runner is already started")
        self.started = True


class Background(_Base):
    """Runs a pool's health checks and discovery in daemon threads.

    **Parameters:**

    * **pool** - the pool to check and feed.
    * **health_check** - a ``HealthCheck`` policy, or ``None`` for no active checks.
    * **discovery** - a provider (or several) feeding the pool, or ``None``.
    * **transport** - the httpx transport for the checks (still owned by the
      caller); by default the checker has its own.
    * **verify** - how the checker's own transport verifies HTTPS upstreams
      (httpx's ``verify``: ``True``, ``False`` or an ``ssl.SSLContext``).
    * **owner** - the transport or proxy this runs for, when the pool may be
      shared: only the owner holding the pool's claim runs, the others stand by
      (see the module doc). ``None`` runs unconditionally.
    """

    def __init__(
        self,
        pool: Pool,
        *,
        health_check: HealthCheck | None = None,
        discovery: Provider | Iterable[Provider] | None = None,
        transport: httpx.BaseTransport | None = None,
        verify: bool | ssl.SSLContext = True,
        owner: object = None,
    ) -> None:
        super().__init__(pool, health_check=health_check, discovery=discovery, owner=owner)
        self.transport = transport
        self.verify = verify
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def start(self) -> Self:
        """Start the threads (none if there is nothing to run); if another owner
        runs the pool, a thread that stands by to take over."""
        self._begin()
        if not self._has_work:
            return self
        if not self._claim():
            self._spawn("clientlb-standby", self._stand_by)
            return self
        answered = self._launch()
        if self._awaits_registry:
            deadline = time.monotonic() + self.first_answer_timeout
            for event in answered:
                event.wait(max(0.0, deadline - time.monotonic()))
        return self

    def _launch(self) -> list[threading.Event]:
        answered: list[threading.Event] = []
        with self._lock:
            if self._stop.is_set():  # closed while taking over
                self._release()
                return answered
            self.running = True
            for provider in self.providers:
                event = threading.Event()
                answered.append(event)
                name = f"clientlb-discovery {provider!r}"
                self._spawn(name, provider.run, self.pool, self._stop, event.set)
            if self.checker is not None:
                self._spawn(
                    "clientlb-health", self.checker.run, self._stop, self.transport, self.verify
                )
        return answered

    def _stand_by(self) -> None:
        while not self._stop.wait(TAKEOVER_INTERVAL):
            if self._claim():
                log.info("taking over the checks and discovery of a shared pool")
                self._launch()
                return

    def _spawn(self, name: str, target: Callable[..., None], *args: object) -> None:
        def body() -> None:
            try:
                target(*args)
            except Exception:  # pragma: no cover - the loops catch their own errors
                log.exception("%s stopped by an unexpected error", name)

        thread = threading.Thread(target=body, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def close(self) -> None:
        """Stop every thread and wait for it to end, then give up the pool's
        claim so that another owner can take over. Idempotent."""
        self.closed = True
        with self._lock:
            self._stop.set()
            running = self.running
        if running:  # a standing-by owner must not cut the runner's shared providers
            for provider in self.providers:
                provider.interrupt()
        for thread in list(self._threads):
            thread.join(JOIN_TIMEOUT)
            if thread.is_alive():  # pragma: no cover - every blocking call is bounded
                log.error("%s did not stop within %ss", thread.name, JOIN_TIMEOUT)
        self._threads.clear()
        if self.running:
            self.running = False
            self._release()

    @property
    def threads(self) -> list[threading.Thread]:
        """The threads started and not yet joined."""
        return list(self._threads)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AsyncBackground(_Base):
    """Runs a pool's health checks and discovery as anyio tasks (asyncio or trio).

    Same parameters as ``Background``, with an ``httpx.AsyncBaseTransport``.
    """

    def __init__(
        self,
        pool: Pool,
        *,
        health_check: HealthCheck | None = None,
        discovery: Provider | Iterable[Provider] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        verify: bool | ssl.SSLContext = True,
        owner: object = None,
    ) -> None:
        super().__init__(pool, health_check=health_check, discovery=discovery, owner=owner)
        self.transport = transport
        self.verify = verify
        self._group: anyio.abc.TaskGroup | None = None

    def _launch_or_stand_by(self, tg: anyio.abc.TaskGroup) -> list[anyio.Event]:
        if self._claim():
            return self._launch(tg)
        tg.start_soon(self._stand_by, tg, name="clientlb-standby")
        return []

    async def _stand_by(self, tg: anyio.abc.TaskGroup) -> None:
        while True:
            await anyio.sleep(TAKEOVER_INTERVAL)
            if self._claim():
                log.info("taking over the checks and discovery of a shared pool")
                self._launch(tg)
                return

    def _launch(self, tg: anyio.abc.TaskGroup) -> list[anyio.Event]:
        self.running = True
        answered = []
        for provider in self.providers:
            event = anyio.Event()
            answered.append(event)
            name = f"clientlb-discovery {provider!r}"
            tg.start_soon(provider.arun, self.pool, event.set, name=name)
        if self.checker is not None:
            tg.start_soon(self.checker.arun, self.transport, self.verify, name="clientlb-health")
        return answered

    async def start(self) -> Self:
        """Start the tasks in a task group of its own, until ``aclose()``."""
        self._begin()
        if self._has_work:
            group = anyio.create_task_group()
            await group.__aenter__()
            self._group = group
            answered = self._launch_or_stand_by(group)
            if self._awaits_registry:
                with anyio.move_on_after(self.first_answer_timeout):
                    for event in answered:
                        await event.wait()
        return self

    async def aclose(self) -> None:
        """Cancel the tasks and wait for them to end. Idempotent."""
        self.closed = True
        group, self._group = self._group, None
        if group is not None:
            group.cancel_scope.cancel()
            await group.__aexit__(None, None, None)
        if self.running:
            self.running = False
            self._release()

    async def run(self) -> None:
        """Run the tasks here until cancelled: for a caller's own task group,
        ``tg.start_soon(background.run)``."""
        self._begin()
        try:
            async with anyio.create_task_group() as tg:
                if self._has_work:
                    self._launch_or_stand_by(tg)
                await anyio.sleep_forever()
        finally:
            self.closed = True
            if self.running:
                self.running = False
                self._release()

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
