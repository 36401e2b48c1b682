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

The work: active health checks, discovery, and the connect probes that bring
back an upstream ejected while it refused connections (``clientlb._probes``;
on by default, so nearly every pool has background work).

Wherever the pool is used, its work runs:

* an async owner nobody entered (a module-level ``httpx.AsyncClient`` used
  without ``async with``, a ``ProxyApp`` mounted where no lifespan reaches it)
  starts it from its first request with ``start_detached()``: a task outside
  any task group (asyncio's ``create_task``, trio's system task), cancelled by
  ``aclose()`` or by the end of its event loop, started again by the next
  request of a later loop;
* after ``os.fork()`` (a pre-forking server such as ``gunicorn --preload``)
  no thread or task of the parent exists in the child: every runner that was
  started is marked, and starts again in the child with its first request
  (``ensure_running()`` for threads, ``start_detached()`` for tasks). The
  child also gets fresh locks for the pool, in case a thread of the parent
  held one at the fork;
* where it cannot (an async library other than asyncio and trio, a thread
  that cannot start), one warning says so.
"""

from __future__ import annotations

import encodings.idna  # noqa: F401  (see below)
import logging
import os
import ssl
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from types import ModuleType, TracebackType
from typing import Any, Self

import anyio
import anyio.abc
import sniffio

from ._core import ConfigError, HealthCheck, Pool
from ._health import HealthChecker
from ._httpx import httpx
from ._probes import Prober
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
        library: ModuleType = httpx,
    ) -> None:
        if not isinstance(pool, Pool):
            raise TypeError(f"expected a Pool, got {pool!r}")
        self.pool = pool
        self.owner = owner
        self.first_answer_timeout = first_answer_timeout
        self.checker = (
            HealthChecker(pool, health_check, library) if health_check is not None else None
        )
        self.providers = _providers(discovery)
        self.prober = Prober(pool) if pool.probing else None
        self.started = False
        self.closed = False
        self.running = False  # this runner's checks and discovery are running
        self.restart = False  # started before a fork: start again in the child
        self.warned = False
        _runners.add(self)

    @property
    def _has_work(self) -> bool:
        return bool(self.providers) or self.checker is not None or self.prober is not None

    def _warn_once(self, why: str) -> None:
        if not self.warned:
            self.warned = True
            log.warning("background work (health checks, discovery, probes) cannot run: %s", why)

    def _forked(self) -> None:
        """In a child process: what the parent started does not exist here."""
        self.pool._after_fork()
        self.restart = self.started and not self.closed
        self.started = self.running = False
        if self.prober is not None:
            self.prober = Prober(self.pool)

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
    * **library** - the client library of ``transport`` and of the checker's
      own (httpx, or httpx2 for the transports of ``clientlb.httpx2``).
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
        library: ModuleType = httpx,
    ) -> None:
        super().__init__(
            pool, health_check=health_check, discovery=discovery, owner=owner, library=library
        )
        self.transport = transport
        self.verify = verify
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def _forked(self) -> None:
        super()._forked()
        self._stop = threading.Event()
        self._threads = []
        self._lock = threading.Lock()

    def ensure_running(self) -> None:
        """Start again in a forked child (cheap otherwise: call it per request)."""
        if self.restart:
            with self._lock:
                if not self.restart:
                    return
                self.restart = False
            self.start()

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
            if self.prober is not None:
                self._spawn("clientlb-probes", self.prober.run, self._stop)
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
        try:
            thread.start()
        except RuntimeError as exc:  # no threads here (or none left)
            self._warn_once(f"{name}: {exc}")
            return
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
        if self.prober is not None:
            self.prober.interrupt()
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
        library: ModuleType = httpx,
    ) -> None:
        super().__init__(
            pool, health_check=health_check, discovery=discovery, owner=owner, library=library
        )
        self.transport = transport
        self.verify = verify
        self._group: anyio.abc.TaskGroup | None = None
        self._detached: _Detached | None = None

    def _forked(self) -> None:
        super()._forked()
        self._group = self._detached = None

    @property
    def idle(self) -> bool:
        """Nothing started it (or its event loop ended): ``start_detached()`` is due.
        Cheap: the shells read it per request."""
        return not self.started and not self.closed

    async def start_detached(self) -> None:
        """Start from a request, in a task of its own that outlives it (asyncio's
        ``create_task`` or trio's system task); ``aclose()`` or the end of the
        event loop stops it. Waits for discovery's first answer as ``start()``."""
        if not self.idle:
            return
        self._begin()
        self.restart = False
        if not self._has_work:
            return
        try:
            library = sniffio.current_async_library()
        except sniffio.AsyncLibraryNotFoundError:
            library = None
        answered = anyio.Event()
        detached = _Detached(self, answered)
        if library == "asyncio":
            import asyncio

            detached.task = asyncio.get_running_loop().create_task(detached.run())
        elif library == "trio":
            import trio

            trio.lowlevel.spawn_system_task(detached.run)
        else:
            self.started = False
            self._warn_once(f"started outside asyncio and trio ({library or 'no event loop'})")
            return
        self._detached = detached
        if self._awaits_registry:
            with anyio.move_on_after(self.first_answer_timeout):
                await answered.wait()

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
        if self.prober is not None:
            tg.start_soon(self.prober.arun, name="clientlb-probes")
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
        detached, self._detached = self._detached, None
        if detached is not None:
            await detached.stop()
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


class _Detached:
    """One ``AsyncBackground`` run in a task of its own (``start_detached``)."""

    def __init__(self, runner: AsyncBackground, answered: anyio.Event) -> None:
        self.runner = runner
        self.answered = answered
        self.scope: anyio.CancelScope | None = None
        self.done = anyio.Event()
        self.task: Any = None  # the asyncio task, when it is one
        self.cancelled = False

    async def run(self) -> None:
        runner = self.runner
        try:
            with anyio.CancelScope() as self.scope:
                if self.cancelled:  # stopped before it began
                    self.scope.cancel()
                async with anyio.create_task_group() as tg:
                    events = runner._launch_or_stand_by(tg)
                    for event in events:
                        await event.wait()
                    self.answered.set()
                    await anyio.sleep_forever()
        except Exception:  # pragma: no cover - the loops catch their own errors
            log.exception("the pool's background work stopped by an unexpected error")
        finally:
            self.answered.set()
            self.done.set()
            if runner.running:
                runner.running = False
                runner._release()
            if not runner.closed and runner._detached is self:
                runner._detached = None
                runner.started = False  # its loop ended: the next request starts it again

    async def stop(self) -> None:
        """Cancel the task and wait for it, from the event loop it runs in."""
        self.cancelled = True
        if self.scope is not None:
            self.scope.cancel()
        task = self.task
        if task is not None:
            import asyncio

            try:
                same_loop = task.get_loop() is asyncio.get_running_loop()
            except RuntimeError:
                same_loop = False
            if not same_loop:
                return  # its loop is gone or elsewhere: nothing to wait for here
        elif sniffio.current_async_library() != "trio":  # pragma: no cover
            return
        await self.done.wait()


#: Every runner alive, so that a forked child can mark the started ones.
_runners: weakref.WeakSet[_Base] = weakref.WeakSet()


# The codec getaddrinfo() needs for host names is imported on first use. A
# thread of the parent importing it at the moment of a fork leaves the child
# unable to ever import it ("unknown encoding: idna"): it is imported here, once.


def _after_fork_in_child() -> None:
    for runner in list(_runners):
        runner._forked()


os.register_at_fork(after_in_child=_after_fork_in_child)
