"""Connect probes: the I/O around ``Pool.probes_due()``.

An upstream ejected while it refused connections is back as soon as it listens
again: ``Prober`` asks the pool which probes are due, dials each upstream's
address (a bare TCP connect, closed at once: no request, nothing an upstream
could log as traffic) and reports the result with ``Pool.report_probe()``,
where the decision lives. The sync driver ``run()`` is the body of a thread;
the async driver ``arun()`` is an anyio task (asyncio or trio).

Between probes the driver sleeps until the next one is due. An ejection wakes
it early (a pool watcher), so the first probe goes out ``probe_after`` seconds
after the ejection; an ejection seen from another thread than the async
driver's is noticed at the latest ``IDLE_WAIT`` seconds later.
"""

from __future__ import annotations

import logging
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import anyio

from ._core import Member, Pool, Upstream

log = logging.getLogger("clientlb")

#: Seconds a probe waits for the connection to be accepted.
PROBE_TIMEOUT = 1.0
#: The longest sleep between two looks at the pool (seconds).
IDLE_WAIT = 1.0
#: Probes that may run at once in the sync driver.
MAX_WORKERS = 8


def connects(upstream: Upstream, timeout: float = PROBE_TIMEOUT) -> bool:
    """Whether a TCP connection to ``upstream`` is accepted within ``timeout``."""
    try:
        with socket.create_connection((upstream.host, upstream.port), timeout=timeout):
            return True
    except OSError:
        return False


async def aconnects(upstream: Upstream, timeout: float = PROBE_TIMEOUT) -> bool:
    """``connects()`` for anyio tasks."""
    with anyio.move_on_after(timeout):
        try:
            stream = await anyio.connect_tcp(upstream.host, upstream.port)
        except OSError:
            return False
        await stream.aclose()
        return True
    return False


class Prober:
    """Makes the connect probes of one pool until stopped."""

    def __init__(self, pool: Pool, timeout: float = PROBE_TIMEOUT) -> None:
        self.pool = pool
        self.timeout = timeout
        self.probes = 0  # made so far, for tests and benchmarks
        self._wake = threading.Event()

    def interrupt(self) -> None:
        """Wake the sync driver at once (to see its stop event)."""
        self._wake.set()

    def _report(self, upstream: Upstream, connected: bool) -> None:
        self.probes += 1
        self.pool.report_probe(upstream, connected)
        if connected:
            log.debug("%s: a probe connected", upstream.url)  # the re-admission is an event

    # -- sync driver ----------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Probe as the pool says until ``stop`` is set (the body of a thread);
        ``interrupt()`` after setting it ends the wait at once."""
        wake = self._wake

        def on_change(event: str, member: Member) -> None:
            if event == "ejected":
                wake.set()

        self.pool._watch(on_change)
        workers = ThreadPoolExecutor(MAX_WORKERS, thread_name_prefix="clientlb-probe")
        try:
            while not stop.is_set():
                due, wait = self.pool.probes_due()
                for upstream in due:
                    workers.submit(self._probe, upstream)
                wake.wait(min(wait, IDLE_WAIT))
                wake.clear()
        finally:
            self.pool._unwatch(on_change)
            workers.shutdown(wait=True, cancel_futures=True)

    def _probe(self, upstream: Upstream) -> None:
        self._report(upstream, connects(upstream, self.timeout))

    # -- async driver ---------------------------------------------------------------

    async def arun(self) -> None:
        """Probe as the pool says until cancelled (an anyio task)."""
        home = threading.get_ident()
        wake: list[Any] = [anyio.Event()]

        def on_change(event: str, member: Member) -> None:
            if event == "ejected" and threading.get_ident() == home:
                wake[0].set()  # anyio events are not thread-safe: the timeout covers the rest

        self.pool._watch(on_change)
        try:
            async with anyio.create_task_group() as tg:
                while True:
                    due, wait = self.pool.probes_due()
                    for upstream in due:
                        tg.start_soon(self._aprobe, upstream)
                    with anyio.move_on_after(min(wait, IDLE_WAIT)):
                        await wake[0].wait()
                    if wake[0].is_set():
                        wake[0] = anyio.Event()
        finally:
            self.pool._unwatch(on_change)

    async def _aprobe(self, upstream: Upstream) -> None:
        self._report(upstream, await aconnects(upstream, self.timeout))
