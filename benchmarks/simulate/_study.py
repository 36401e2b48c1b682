"""The scenarios: two that repeat live benchmarks, and the scale study.

``tails`` and ``stall`` rebuild, on the simulated clock, the fleets that
``benchmarks/tails.py`` (one replica 100 times slower, closed loop) and
``benchmarks/hedging.py`` (one replica stalling 300 ms on every 20th request,
open loop, without hedging) measure on loopback, so their figures can be set
side by side. ``scale`` is the fleet that no machine runs for real: 1,000
servers and 100 clients.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from ._fleet import ORACLE, Fleet, Result
from ._servers import Change, ServerSpec, Service

SCALE_ALGORITHMS = (
    "round_robin",
    "random",
    "least_connections",
    "power_of_two",
    "least_response_time",
    "peak_ewma",
    ORACLE,
)
TAILS_ALGORITHMS = (
    "round_robin",
    "least_connections",
    "least_response_time",
    "power_of_two",
    "peak_ewma",
)
STALL_ALGORITHMS = ("round_robin", "peak_ewma", "least_response_time")


def tails(algorithm: str, seed: int = 1) -> Fleet:
    """``tails.py --fast-ms 20 --slow-ms 2000 --warmup 1 --seconds 8``: nine
    servers answering in 20-40 ms, one in 2-4 s, as ``asyncio.sleep`` (no worker
    limit); one client keeping 50 requests in flight; outlier detection off."""
    fast = ServerSpec(Service("uniform", low=0.020, high=0.040), workers=None)
    slow = ServerSpec(Service("uniform", low=2.0, high=4.0), workers=None)
    return Fleet(
        (fast,) * 9 + (slow,),
        algorithm,
        concurrency=50,
        duration=9.0,
        warmup=1.0,
        outlier=False,
        seed=seed,
    )


def stall(algorithm: str, seed: int = 1) -> Fleet:
    """``hedging.py`` without hedging: four servers answering in 5 ms +- 20 %,
    server 0 taking 300 ms instead on every 20th request it receives; 300
    requests per second, open loop; the first second (300 requests) left out."""
    normal = ServerSpec(Service("uniform", low=0.004, high=0.006), workers=None)
    stalling = ServerSpec(normal.service, workers=None, stall_every=20, stall=0.3)
    return Fleet(
        (stalling,) + (normal,) * 3,
        algorithm,
        rate=300.0,
        duration=1.0 + 4000 / 300,
        warmup=1.0,
        seed=seed,
    )


@dataclass(frozen=True, slots=True)
class Scale:
    """The scale study's fleet (the defaults are the study's).

    ``servers`` servers with ``workers`` workers each; ``older_share`` of them
    are an older generation at twice the mean service time. Service times are lognormal
    (``sigma``). At ``slow_at`` a random ``slow_share`` of them get
    ``slow_factor`` times slower for good; at ``die_at`` another ``die_share``
    dies, and comes back at ``return_at``. The offered load is ``load`` of the
    fleet's capacity before any change, open loop, over ``clients`` clients.
    """

    servers: int = 1000
    clients: int = 100
    workers: int = 2
    mean: float = 0.12
    older_share: float = 0.25
    sigma: float = 0.5
    load: float = 0.7
    duration: float = 30.0
    warmup: float = 5.0
    slow_at: float = 10.0
    slow_share: float = 0.05
    slow_factor: float = 3.0
    die_at: float = 15.0
    die_share: float = 0.02
    return_at: float = 20.0
    #: Weights in proportion to each server's capacity (what an operator who
    #: knows the generations configures), instead of all 1.
    weighted: bool = False
    #: Each client's pool holds about ``subset`` servers (0: all): ``Subset``,
    #: which puts every server in the same number of pools.
    subset: int = 0
    #: Pools eject a server whose latency EWMA is above this many times their
    #: median (``OutlierDetection.latency_factor``; ``None``: no such ejection).
    latency_factor: float | None = None
    seed: int = 1

    def specs(self) -> tuple[ServerSpec, ...]:
        rng = random.Random(f"scale {self.seed}")
        order = list(range(self.servers))
        rng.shuffle(order)
        slowed = set(order[: round(self.slow_share * self.servers)])
        dying = set(order[len(slowed) : len(slowed) + round(self.die_share * self.servers)])
        older = set(order[len(order) - round(self.older_share * self.servers) :])
        specs = []
        for i in range(self.servers):
            mean = self.mean * (2.0 if i in older else 1.0)
            changes: tuple[Change, ...] = ()
            if i in slowed:
                changes = (Change(self.slow_at, "slow", self.slow_factor),)
            elif i in dying:
                changes = (Change(self.die_at, "die"), Change(self.return_at, "return"))
            specs.append(
                ServerSpec(Service("lognormal", mean, self.sigma), self.workers, changes=changes)
            )
        return tuple(specs)

    def fleet(self, algorithm: str) -> Fleet:
        specs = self.specs()
        rate = self.load * sum(s.capacity for s in specs)
        top = max(s.capacity for s in specs)
        return Fleet(
            specs,
            algorithm,
            clients=self.clients,
            rate=rate,
            duration=self.duration,
            warmup=self.warmup,
            seed=self.seed,
            weights=tuple(s.capacity / top for s in specs) if self.weighted else (),
            subset=0 if algorithm == ORACLE else self.subset,
            latency_factor=self.latency_factor,
        )

    def references(self, requests: int = 200_000) -> tuple[Fleet, Fleet]:
        """One server of the homogeneous fleet at ``load``, fed two ways: Poisson
        arrivals (an M/G/k queue: what a server gets from clients that pick at
        random, since many independent thin streams merge into a Poisson one),
        and ``clients`` strictly periodic streams with independent random phases
        (the most regular a server's arrivals get from clients that each keep a
        perfect rotation but know nothing of the others)."""
        spec = ServerSpec(Service("lognormal", self.mean, self.sigma), self.workers)
        rate = self.load * spec.capacity
        duration = requests / rate
        warmup = 0.01 * duration
        period = self.clients / rate  # each client's visits to one server
        rng = random.Random(f"phases {self.seed}")
        times: list[float] = []
        for _ in range(self.clients):
            t = rng.uniform(0.0, period)
            while t < duration:
                times.append(t)
                t += period
        times.sort()
        common = {"duration": duration, "warmup": warmup, "seed": self.seed}
        return (
            Fleet((spec,), "round_robin", rate=rate, label="one server: Poisson", **common),
            Fleet(
                (spec,),
                "round_robin",
                schedule=tuple(times),
                label=f"one server: {self.clients} periodic streams",
                **common,
            ),
        )

    def slowed(self) -> list[int]:
        return [i for i, s in enumerate(self.specs()) if s.changes and s.changes[0].kind == "slow"]

    def dying(self) -> list[int]:
        return [i for i, s in enumerate(self.specs()) if s.changes and s.changes[0].kind == "die"]


def quantile(ordered: list[float], q: float) -> float:
    """The ``q`` quantile of sorted values: the smallest value with at least
    ``q`` of them at or below it."""
    if not ordered:
        return float("nan")
    rank = max(0, min(len(ordered) - 1, int(q * len(ordered) + 0.999999999) - 1))
    return ordered[rank]


def summary(result: Result) -> dict[str, float]:
    """p50/p99/p99.9/max in ms, and the spread of load: max/mean of the mean
    outstanding requests per server (servers that carried none left out)."""
    ordered = sorted(result.latencies)
    carried = [x for x in result.load if x > 0]
    return {
        "measured": len(ordered) + result.failed,
        "failed": result.failed,
        "p50": quantile(ordered, 0.5) * 1e3,
        "p99": quantile(ordered, 0.99) * 1e3,
        "p99.9": quantile(ordered, 0.999) * 1e3,
        "max": ordered[-1] * 1e3 if ordered else float("nan"),
        "spread": max(carried) / (sum(carried) / len(carried)) if carried else float("nan"),
        "peak": max(result.peaks),
    }
