"""One simulated run: a fleet of servers, its callers, and what they saw."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field

from clientlb._core import OutlierDetection, Pool, Subset, Upstream

from ._clients import Oracle, PoolClient, Stats
from ._engine import Sim
from ._servers import Server, ServerSpec, Timeline

#: Not an algorithm of the library: one global view (see ``Oracle``).
ORACLE = "oracle"


@dataclass(frozen=True, slots=True)
class Fleet:
    """A run's configuration.

    ``clients`` callers, each with its own pool over every server in
    ``servers``, balancing with ``algorithm`` (or ``"oracle"``). Open loop:
    ``rate`` requests per second in all, Poisson, split evenly over the clients,
    or each client at the times in ``schedule``; closed loop: ``concurrency``
    requests per client at all times. Requests start until ``duration``; those
    that started from ``warmup`` on are measured. ``outlier=False`` turns
    passive ejection off (``outlier=None``); ``latency_factor`` turns on
    ejection of latency outliers (``OutlierDetection.latency_factor``).
    """

    servers: tuple[ServerSpec, ...]
    algorithm: str
    clients: int = 1
    rate: float = 0.0
    concurrency: int = 0
    schedule: tuple[float, ...] = ()
    duration: float = 10.0
    warmup: float = 1.0
    seed: int = 1
    outlier: bool = True
    latency_factor: float | None = None
    connect_delay: float = 0.001
    step: float = 0.25  # the timeline's resolution, seconds
    #: Each upstream's weight in the clients' pools (all 1 when empty).
    weights: tuple[float, ...] = ()
    #: Each client's pool holds only about this many servers (0: all): the
    #: library's ``Subset``, which puts every server in as many pools.
    subset: int = 0
    label: str = field(default="")

    @property
    def name(self) -> str:
        return self.label or self.algorithm


@dataclass(slots=True)
class Result:
    """What a run measured: latencies of the measured requests that succeeded,
    failures, retries, requests received per server (measured ones), the
    timeline of the most outstanding at one server, and the run's cost."""

    name: str
    latencies: list[float]
    failed: int
    requests: int
    retries: int
    received: list[int]
    #: Mean requests outstanding (queued or in service) per server, measured window.
    load: list[float]
    peaks: list[int]
    step: float
    events: int
    seconds: float


def upstreams(count: int, weights: tuple[float, ...] = ()) -> list[Upstream]:
    """``count`` distinct upstreams, shared by every pool of a run."""
    return [
        Upstream(
            f"http://10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}:8080",
            weights[i] if weights else 1.0,
        )
        for i in range(count)
    ]


def run(fleet: Fleet) -> Result:
    """Simulate ``fleet`` to the end of its last request."""
    started = time.perf_counter()
    sim = Sim()
    seed = fleet.seed
    timeline = Timeline(fleet.step, fleet.duration + 1.0, fleet.warmup)
    servers = [
        Server(sim, i, spec, random.Random(f"server {seed} {i}"), timeline, fleet.connect_delay)
        for i, spec in enumerate(fleet.servers)
    ]
    stats = Stats(fleet.warmup, fleet.duration)
    if fleet.algorithm == ORACLE:
        if fleet.concurrency:
            raise ValueError("the oracle runs open loop only")
        Oracle(
            sim,
            servers,
            stats,
            random.Random(f"oracle {seed}"),
            rate=fleet.rate,
            schedule=fleet.schedule,
            end=fleet.duration,
        )
    else:
        ups = upstreams(len(servers), fleet.weights)
        outlier = OutlierDetection(latency_factor=fleet.latency_factor) if fleet.outlier else None
        for c in range(fleet.clients):
            subset = Subset(fleet.subset, c, fleet.clients) if fleet.subset else None
            pool = Pool(
                ups,
                subset=subset,
                algorithm=fleet.algorithm,
                outlier=outlier,
                clock=sim,
                rng=random.Random(f"pool {seed} {c}"),
            )
            PoolClient(
                sim,
                pool,
                ups,
                servers,
                stats,
                random.Random(f"client {seed} {c}"),
                rate=fleet.rate / fleet.clients,
                concurrency=fleet.concurrency,
                schedule=fleet.schedule,
                end=fleet.duration,
            )
    load: list[float] = []

    def measure_load(_: object) -> None:  # the window's end: what each server carried
        window = fleet.duration - fleet.warmup
        for server in servers:
            server.account()
            load.append(server.area / window)

    sim.at(fleet.duration, measure_load)
    sim.run()
    return Result(
        fleet.name,
        stats.latencies,
        stats.failed,
        stats.requests,
        stats.retries,
        [s.received for s in servers],
        load,
        timeline.peaks,
        fleet.step,
        sim.events,
        time.perf_counter() - started,
    )
