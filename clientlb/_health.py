"""Active health checks: the I/O around the ``HealthCheck`` policy.

``HealthChecker`` sends ``GET path`` to every upstream of a pool (draining ones
aside) once per interval and hands each result to ``pool.report_check()``, where
the rise/fall counting and every health decision live. The sync driver ``run()``
is the body of a thread and checks the upstreams in parallel on a small thread
pool; the async driver ``arun()`` is an anyio task (asyncio or trio) with one
child task per check. Checks go straight to the upstream, never through the
balancer, and never count as traffic.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from types import ModuleType

import anyio

from ._core import ConfigError, Health, HealthCheck, Member, Pool
from ._httpx import httpx

log = logging.getLogger("clientlb.health")

#: Checks that may run at once in the sync driver.
MAX_WORKERS = 16
HEADERS = {"user-agent": "clientlb-health-check"}


class HealthChecker:
    """Runs ``policy`` against the upstreams of ``pool``.

    ``transport`` is the httpx transport for the checks (the caller keeps
    ownership; by default the checker opens and closes its own). ``library`` is
    the client library of both (httpx, or httpx2 for ``clientlb.httpx2``).
    """

    def __init__(self, pool: Pool, policy: HealthCheck, library: ModuleType = httpx) -> None:
        if not isinstance(policy, HealthCheck):
            raise ConfigError("health_check", f"expected a clientlb.HealthCheck, got {policy!r}")
        self.pool = pool
        self.policy = policy
        self.rounds = 0  # completed rounds, for tests and benchmarks
        self._library = library

    def targets(self) -> list[Member]:
        """The members to check this round: all but the draining ones (the pool's
        live members, whose health ``report()`` reads before and after)."""
        return [m for m in self.pool._live_members() if m.health is not Health.DRAINING]

    def report(self, member: Member, status: int | None, error: str = "") -> None:
        """Hand one result to the pool; log when it changes the member's health."""
        policy = self.policy
        passed = status is not None and policy.passed(status)
        before = member.health
        self.pool.report_check(member.upstream, passed, rise=policy.rise, fall=policy.fall)
        after = member.health
        if after is not before:
            why = f"status {status}" if status is not None else error or "no answer"
            # the change itself is logged by clientlb.events; this says which check
            url = member.upstream.url
            log.debug("%s: %s -> %s (check %s)", url, before.value, after.value, why)

    # -- sync driver ----------------------------------------------------------------

    def run(
        self,
        stop: threading.Event,
        transport: httpx.BaseTransport | None = None,
        verify: bool | ssl.SSLContext = True,
    ) -> None:
        """Check every interval until ``stop`` is set (the body of a thread).

        Without a ``transport`` the checker makes its own, verifying HTTPS
        upstreams as ``verify`` says (httpx's meaning)."""
        own = transport is None
        transport = transport or self._library.HTTPTransport(verify=verify)
        workers = ThreadPoolExecutor(MAX_WORKERS, thread_name_prefix="clientlb-health")
        try:
            due = time.monotonic()
            while not stop.is_set():
                checks = [workers.submit(self._check, transport, m) for m in self.targets()]
                for check in checks:
                    check.result()
                self.rounds += 1
                due = max(due + self.policy.interval, time.monotonic())
                if stop.wait(due - time.monotonic()):
                    break
        finally:
            workers.shutdown(wait=True, cancel_futures=True)
            if own:
                transport.close()

    def _request(self, member: Member) -> httpx.Request:
        """The check's request, sent straight to the transport: through an
        ``httpx.Client`` every passing check would be an INFO line of httpx's."""
        timeout = self.policy.timeout
        request: httpx.Request = self._library.Request(
            "GET",
            self.policy.url(member.upstream.url),
            headers=HEADERS,
            extensions={"timeout": dict.fromkeys(("connect", "read", "write", "pool"), timeout)},
        )
        return request

    def _check(self, transport: httpx.BaseTransport, member: Member) -> None:
        status, error = None, ""
        try:
            response = transport.handle_request(self._request(member))
            try:
                response.read()
                status = response.status_code
            finally:
                response.close()
        except Exception as exc:  # any failure to get an answer fails the check
            error = type(exc).__name__
        self.report(member, status, error)

    # -- async driver ---------------------------------------------------------------

    async def arun(
        self,
        transport: httpx.AsyncBaseTransport | None = None,
        verify: bool | ssl.SSLContext = True,
    ) -> None:
        """Check every interval until cancelled (an anyio task); see ``run``."""
        own = transport is None
        transport = transport or self._library.AsyncHTTPTransport(verify=verify)
        try:
            due = anyio.current_time()
            while True:
                async with anyio.create_task_group() as tg:
                    for member in self.targets():
                        tg.start_soon(self._acheck, transport, member)
                self.rounds += 1
                due = max(due + self.policy.interval, anyio.current_time())
                await anyio.sleep_until(due)
        finally:
            if own:
                with anyio.CancelScope(shield=True):
                    await transport.aclose()

    async def _acheck(self, transport: httpx.AsyncBaseTransport, member: Member) -> None:
        status, error = None, "timeout"
        with anyio.move_on_after(self.policy.timeout):
            try:
                response = await transport.handle_async_request(self._request(member))
                try:
                    await response.aread()
                    status = response.status_code
                finally:
                    await response.aclose()
            except Exception as exc:  # any failure to get an answer fails the check
                error = type(exc).__name__
        self.report(member, status, error)
