"""The callers: clients that each drive a real ``Pool``, and the oracle.

A ``PoolClient`` is one process of the fleet with its own pool over every
upstream: its own in-flight counts (its own requests only), latency estimates
and ejections. A request goes through ``AttemptPlan``, as in the transports: the
plan picks, the server answers (``lease.responded(200)``, ``lease.finish()``) or
fails, and a failure is retried as the plan decides (a refused connection on
another upstream, whatever the method; a reset, for these GETs, up to the
policy's ``max_retries``; every retry drawing on the retry budget). The client
also runs the connect probes the pool asks for, as a transport's background
task does.

The ``Oracle`` is the yardstick: one view shared by all, with perfect
knowledge, sending each request to the live server with the least outstanding
work, ``(queued + in service + 1) * mean service time / workers``.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Sequence

from clientlb._core import AttemptPlan, NoUpstream, Outcome, Pool, Upstream
from clientlb._core._plan import OutOfTime

from ._engine import Sim
from ._servers import Server


class Stats:
    """What the callers saw of the requests that started in the measured window."""

    __slots__ = ("end", "failed", "latencies", "requests", "retries", "start")

    def __init__(self, start: float, end: float) -> None:
        self.start, self.end = start, end
        self.latencies: list[float] = []
        self.failed = 0
        self.requests = 0  # every request, measured or not
        self.retries = 0

    def measured(self, t0: float) -> bool:
        return self.start <= t0 < self.end


class Request:
    """One request: when it arrived, its attempt plan and its current lease."""

    __slots__ = ("gen", "lease", "measured", "owner", "plan", "t0")

    def __init__(self, owner: PoolClient | Oracle, t0: float, measured: bool) -> None:
        self.owner = owner
        self.t0 = t0
        self.measured = measured
        self.gen = 0
        self.plan: AttemptPlan | None = None
        self.lease = None  # type: ignore[var-annotated]


class PoolClient:
    """One client of the fleet, with its own pool (see the module docstring).

    Open loop: ``rate`` requests per second, Poisson, until ``end``, or at the
    times in ``schedule``. Closed loop (``concurrency``): that many requests at
    all times, each sent when one ends.
    """

    def __init__(
        self,
        sim: Sim,
        pool: Pool,
        upstreams: Sequence[Upstream],
        servers: Sequence[Server],
        stats: Stats,
        rng: random.Random,
        *,
        rate: float = 0.0,
        concurrency: int = 0,
        schedule: Sequence[float] = (),
        end: float,
    ) -> None:
        self.sim, self.pool, self.servers, self.stats = sim, pool, servers, stats
        self.rng = rng
        self.rate, self.concurrency, self.end = rate, concurrency, end
        # by key: a pool holds its own copy of an upstream it takes only part of
        self.where = {u.key: s for u, s in zip(upstreams, servers, strict=True)}
        if schedule:
            for t in schedule:
                sim.at(t, self.arrive, False)
        elif concurrency:
            for _ in range(concurrency):
                sim.at(0.0, self.arrive, False)
        else:
            sim.at(rng.expovariate(rate), self.arrive, True)
        if pool.probing:
            sim.at(0.0, self.probe)

    def arrive(self, poisson: bool) -> None:
        """A request arrives; under Poisson arrivals, the next one is scheduled."""
        sim, stats = self.sim, self.stats
        now = sim.now
        if poisson:
            following = now + self.rng.expovariate(self.rate)
            if following < self.end:
                sim.at(following, self.arrive, True)
        stats.requests += 1
        request = Request(self, now, stats.measured(now))
        request.plan = plan = AttemptPlan(self.pool, "GET")
        try:
            lease = plan.first()
        except NoUpstream:
            self._over(request, ok=False)
            return
        self._send(request, lease)

    def _send(self, request: Request, lease: object) -> None:
        request.lease = lease
        self.where[lease.upstream.key].accept(request, request.measured)  # type: ignore[attr-defined]

    def answered(self, request: Request) -> None:
        lease = request.lease
        lease.responded(200)
        lease.finish(Outcome.SUCCESS)
        self._over(request, ok=True)

    def refused(self, request: Request) -> None:
        self._failed(request, Outcome.CONNECT_FAILURE)

    def reset(self, request: Request) -> None:
        self._failed(request, Outcome.RESET)

    def _failed(self, request: Request, outcome: Outcome) -> None:
        request.lease.finish(outcome)
        plan = request.plan
        assert plan is not None
        if plan.retry_after(outcome, replayable=True):
            try:
                lease = plan.next()
            except (NoUpstream, OutOfTime):
                self._over(request, ok=False)
                return
            self.stats.retries += 1
            self._send(request, lease)
        else:
            self._over(request, ok=False)

    def _over(self, request: Request, *, ok: bool) -> None:
        stats = self.stats
        if request.measured:
            if ok:
                stats.latencies.append(self.sim.now - request.t0)
            else:
                stats.failed += 1
        if self.concurrency and self.sim.now < self.end:
            self.sim.at(self.sim.now, self.arrive, False)

    def probe(self, _: object = None) -> None:
        """The pool's connect probes, each answered after the connect delay."""
        due, following = self.pool.probes_due()
        for upstream in due:
            server = self.where[upstream.key]
            self.sim.at(self.sim.now + server.connect_delay, self._probed, (upstream, server))
        if self.sim.now < self.end:
            self.sim.at(self.sim.now + min(max(following, 0.05), 0.5), self.probe)

    def _probed(self, probe: tuple[object, Server]) -> None:
        upstream, server = probe
        self.pool.report_probe(upstream, server.alive)  # type: ignore[arg-type]


class Oracle:
    """Every request of the fleet to the live server with the least outstanding
    work, known exactly (a lazy heap: each change of a server pushes its new
    score; stale entries are skipped when they surface)."""

    def __init__(
        self,
        sim: Sim,
        servers: Sequence[Server],
        stats: Stats,
        rng: random.Random,
        *,
        rate: float,
        schedule: Sequence[float] = (),
        end: float,
    ) -> None:
        self.sim, self.servers, self.stats, self.rng = sim, servers, stats, rng
        self.rate, self.end = rate, end
        self.version = [0] * len(servers)
        self.heap: list[tuple[float, float, int, int]] = []
        for server in servers:
            server.watch = self.changed
            self.changed(server.index)
        if schedule:
            for t in schedule:
                sim.at(t, self.arrive, False)
        else:
            sim.at(rng.expovariate(rate), self.arrive, True)

    def changed(self, index: int) -> None:
        server = self.servers[index]
        self.version[index] = version = self.version[index] + 1
        if server.alive:
            score = (server.outstanding + 1) * server.mean / server.workers
            heapq.heappush(self.heap, (score, self.rng.random(), version, index))
        if len(self.heap) > 8 * len(self.servers):  # compact: drop the stale entries
            self.heap = [e for e in self.heap if e[2] == self.version[e[3]]]
            heapq.heapify(self.heap)

    def arrive(self, poisson: bool) -> None:
        sim, stats = self.sim, self.stats
        now = sim.now
        if poisson:
            following = now + self.rng.expovariate(self.rate)
            if following < self.end:
                sim.at(following, self.arrive, True)
        stats.requests += 1
        self._send(Request(self, now, stats.measured(now)))

    def _send(self, request: Request) -> None:
        heap, version = self.heap, self.version
        while heap[0][2] != version[heap[0][3]]:
            heapq.heappop(heap)
        self.servers[heap[0][3]].accept(request, request.measured)

    def answered(self, request: Request) -> None:
        if request.measured:
            self.stats.latencies.append(self.sim.now - request.t0)

    def refused(self, request: Request) -> None:  # never sent to a dead server
        self._send(request)

    def reset(self, request: Request) -> None:
        self.stats.retries += 1
        self._send(request)
