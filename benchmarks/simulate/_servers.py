"""Simulated upstream servers: workers, a FIFO queue, and a script of changes.

A server has ``workers`` parallel slots (``None``: as many as requests, as an
asyncio server that sleeps) and queues what does not fit, first in first out, so
load turns into waiting and a herd shows as a queue. Each request's service time
is drawn from the server's distribution when it starts, times the server's
current slow-down factor. ``Change``s slow a server down, kill it (requests
inside are reset, new connections refused) and bring it back.
"""

from __future__ import annotations

import itertools
import math
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from ._engine import Sim

#: One ticket per accepted request: a completion is for the job only while the
#: job still holds its ticket (not reset by a death, not sent elsewhere since).
_TICKETS = itertools.count(1)


@dataclass(frozen=True, slots=True)
class Service:
    """A service-time distribution, in seconds: ``lognormal`` with this ``mean``
    and log-standard-deviation ``sigma``, ``uniform`` in ``low``..``high``, or
    ``fixed`` at ``mean``."""

    kind: str = "lognormal"
    mean: float = 0.1
    sigma: float = 0.5
    low: float = 0.0
    high: float = 0.0

    def sampler(self, rng: random.Random) -> Callable[[], float]:
        if self.kind == "lognormal":
            mu, sigma = math.log(self.mean) - self.sigma**2 / 2, self.sigma
            return lambda: rng.lognormvariate(mu, sigma)
        if self.kind == "uniform":
            low, high = self.low, self.high
            return lambda: rng.uniform(low, high)
        if self.kind == "fixed":
            mean = self.mean
            return lambda: mean
        raise ValueError(f"unknown service kind {self.kind!r}")

    @property
    def average(self) -> float:
        return (self.low + self.high) / 2 if self.kind == "uniform" else self.mean


@dataclass(frozen=True, slots=True)
class Change:
    """At ``at`` seconds: ``"slow"`` (service times times ``factor`` from now on;
    1.0 restores), ``"die"`` or ``"return"``."""

    at: float
    kind: str
    factor: float = 1.0


@dataclass(frozen=True, slots=True)
class ServerSpec:
    """One upstream: its service time, workers, stalls and changes.

    ``stall_every``: every n-th request the server receives takes ``stall``
    seconds instead (the stalling replica of ``benchmarks/hedging.py``)."""

    service: Service = Service()
    workers: int | None = 1
    stall_every: int = 0
    stall: float = 0.0
    changes: tuple[Change, ...] = field(default=())

    @property
    def capacity(self) -> float:
        """Requests per second at full speed (``inf`` without a worker limit)."""
        return math.inf if self.workers is None else self.workers / self.service.average


class Job(Protocol):
    """A request as a server sees it: who to tell, its ticket, when it arrived."""

    owner: Any
    gen: int
    t0: float


class Server:
    """One simulated upstream (see the module docstring).

    It tells the job's owner ``answered(job)`` when done, ``reset(job)`` when it
    dies with the job inside, and ``refused(job)`` after ``connect_delay`` when
    it is down. ``watch(index)``, if set, hears every change of its load."""

    __slots__ = (
        "_sample",
        "alive",
        "area",
        "busy",
        "connect_delay",
        "count",
        "factor",
        "index",
        "inside",
        "last",
        "mean",
        "queue",
        "received",
        "served",
        "sim",
        "spec",
        "timeline",
        "watch",
        "workers",
    )

    def __init__(
        self,
        sim: Sim,
        index: int,
        spec: ServerSpec,
        rng: random.Random,
        timeline: Timeline,
        connect_delay: float,
    ) -> None:
        self.sim = sim
        self.index = index
        self.spec = spec
        self.workers = spec.workers if spec.workers is not None else 1 << 60
        self.mean = spec.service.average
        self._sample = spec.service.sampler(rng)
        self.factor = 1.0
        self.alive = True
        self.busy = 0
        self.queue: deque[tuple[Any, bool]] = deque()
        self.inside: dict[int, Any] = {}  # jobs in service, by id, for a reset on death
        self.count = 0  # requests received, for stalls
        self.received = 0  # requests received that are measured
        self.served = 0
        self.timeline = timeline
        self.area = 0.0  # outstanding requests integrated over time, from timeline.start
        self.last = 0.0
        self.connect_delay = connect_delay
        self.watch: Callable[[int], None] | None = None
        for change in spec.changes:
            sim.at(change.at, self._change, change)

    @property
    def outstanding(self) -> int:
        return self.busy + len(self.queue)

    def account(self) -> None:
        """Add the outstanding requests since the last change to ``area``."""
        now, start = self.sim.now, self.timeline.start
        if now > start:
            self.area += (self.busy + len(self.queue)) * (now - max(self.last, start))
        self.last = now

    def accept(self, job: Job, measured: bool) -> None:
        """A request arrives (or, when down, its connection is refused)."""
        sim = self.sim
        if not self.alive:
            sim.at(sim.now + self.connect_delay, job.owner.refused, job)
            return
        self.account()
        self.count += 1
        if measured:
            self.received += 1
        job.gen = next(_TICKETS)
        every = self.spec.stall_every
        stalled = bool(every) and self.count % every == 0
        if self.busy < self.workers:
            self._start(job, stalled)
        else:
            self.queue.append((job, stalled))
        self.timeline.saw(sim.now, self.busy + len(self.queue))
        if self.watch is not None:
            self.watch(self.index)

    def _start(self, job: Job, stalled: bool) -> None:
        self.busy += 1
        took = self.spec.stall if stalled else self._sample() * self.factor
        self.inside[id(job)] = job
        self.sim.at(self.sim.now + took, self._done, (job, job.gen))

    def _done(self, entry: tuple[Job, int]) -> None:
        job, ticket = entry
        if job.gen != ticket:  # the server died meanwhile: the job was reset
            return
        job.gen = 0
        del self.inside[id(job)]
        self.account()
        self.busy -= 1
        self.served += 1
        if self.queue:
            self._start(*self.queue.popleft())
        if self.watch is not None:
            self.watch(self.index)
        job.owner.answered(job)

    def _change(self, change: Change) -> None:
        if change.kind == "slow":
            self.factor = change.factor
            self.mean = self.spec.service.average * change.factor
        elif change.kind == "die":
            self.account()
            self.alive = False
            dropped = [*self.inside.values(), *(job for job, _ in self.queue)]
            self.inside.clear()
            self.queue.clear()
            self.busy = 0
            for job in dropped:
                job.gen = 0
                self.sim.at(self.sim.now, job.owner.reset, job)
        elif change.kind == "return":
            self.alive = True
        else:
            raise ValueError(f"unknown change {change.kind!r}")
        if self.watch is not None:
            self.watch(self.index)


class Timeline:
    """The most requests outstanding at any one server, per ``step`` seconds;
    servers integrate their load from ``start`` on."""

    __slots__ = ("inverse", "peaks", "start", "step")

    def __init__(self, step: float, duration: float, start: float = 0.0) -> None:
        self.step = step
        self.start = start
        self.inverse = 1.0 / step
        self.peaks = [0] * (int(duration * self.inverse) + 1)

    def saw(self, now: float, outstanding: int) -> None:
        b = int(now * self.inverse)
        peaks = self.peaks
        if b < len(peaks) and outstanding > peaks[b]:
            peaks[b] = outstanding
