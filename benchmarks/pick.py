"""Core cost per request: ``pool.pick()``, ``lease.responded(200)``, ``lease.finish()``.

For each of the nine algorithms and pools of 10, 100, 1,000 and 10,000 upstreams,
this times many batches of requests and reports the median batch, in microseconds
per request. A fixed number of requests stays in flight (a ring of leases: each
request is answered and finished ``--in-flight`` requests after it was picked), so
the load-aware algorithms see counts move as they do under real traffic. Hashing
algorithms get a different client key per request.

Targets: at most 5 us per request at 1,000 upstreams, and at most 2x growth from 10
to 10,000 upstreams. The script prints PASS or MISS for each and always exits 0.
The one-off table build (the first pick after a membership or health change) is
timed separately, since Maglev's table for 10,000 upstreams takes seconds to fill.

Run it with ``.venv/bin/python benchmarks/pick.py`` (``--help`` for options).
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import clientlb
from clientlb import Lease, Pool

SIZES = (10, 100, 1_000, 10_000)
TARGET_US = 5.0  # per request, at TARGET_SIZE upstreams
TARGET_SIZE = 1_000
TARGET_GROWTH = 2.0  # from the smallest to the largest pool


@dataclass
class Case:
    """One algorithm at one pool size, with its requests in flight and its timings."""

    algorithm: str
    size: int
    pool: Pool
    ring: list[Lease | None]
    build_ms: float
    samples: list[float] = field(default_factory=list)  # us per request, one per batch

    @property
    def median_us(self) -> float:
        return statistics.median(self.samples)

    @property
    def quartiles_us(self) -> tuple[float, float]:
        q = statistics.quantiles(self.samples, n=4)
        return q[0], q[2]


def upstream_urls(n: int) -> list[str]:
    return [f"http://10.{i // 65536}.{i // 256 % 256}.{i % 256}:8000" for i in range(n)]


def client_keys(count: int) -> list[str]:
    rng = random.Random(7)
    return [f"192.168.{rng.randrange(256)}.{rng.randrange(256)}" for _ in range(count)]


def run_batch(pool: Pool, keys: Sequence[str], ring: list[Lease | None]) -> int:
    """One batch of ``len(keys)`` requests; returns the elapsed nanoseconds.

    ``ring`` holds the leases in flight; each new request takes the place of the
    oldest, which is answered and finished first-in first-out. The loop's own
    bookkeeping (about 0.1 us) is included in the figures.
    """
    pick = pool.pick
    depth = len(ring)
    slot = 0
    begin = time.perf_counter_ns()
    for key in keys:
        lease = pick(key)
        old = ring[slot]
        if old is not None:
            old.responded(200)
            old.finish()
        ring[slot] = lease
        slot += 1
        if slot == depth:
            slot = 0
    return time.perf_counter_ns() - begin


def build(algorithm: str, size: int, in_flight: int) -> Case:
    """A pool, with its first pick (which builds the algorithm's index) timed."""
    pool = Pool(upstream_urls(size), algorithm=algorithm, rng=random.Random(size))
    gc.collect()
    begin = time.perf_counter_ns()
    pool.pick("first").finish()  # builds the algorithm's index (Maglev's table)
    build_ms = (time.perf_counter_ns() - begin) / 1e6
    return Case(algorithm, size, pool, [None] * in_flight, build_ms)


def measure(cases: list[Case], args: argparse.Namespace) -> None:
    """Time every case in rounds, so that a burst of other work on the machine
    spreads over all of them instead of spoiling one."""
    keys = client_keys(args.batch_size)
    per_round = max(1, args.batches // args.rounds)
    gc.collect()
    gc.disable()  # leases hold no cycles: reference counting frees them
    try:
        for _ in range(args.rounds):
            for case in cases:
                for _ in range(args.warmup):
                    run_batch(case.pool, keys, case.ring)
                for _ in range(per_round):
                    elapsed = run_batch(case.pool, keys, case.ring)
                    case.samples.append(elapsed / args.batch_size / 1000)
                flush(case)  # no request stays in flight while other cases run
    finally:
        gc.enable()
    for case in cases:
        assert all(m.in_flight == 0 for m in case.pool.members)


def flush(case: Case) -> None:
    """Answer and finish the requests still in flight."""
    for i, lease in enumerate(case.ring):
        if lease is not None:
            lease.responded(200)
            lease.finish()
            case.ring[i] = None


def report(cases: list[Case], sizes: Sequence[int], args: argparse.Namespace) -> None:
    by = {(c.algorithm, c.size): c for c in cases}
    algorithms = list(dict.fromkeys(c.algorithm for c in cases))
    batches = len(cases[0].samples)
    print()
    print(
        f"us per request: median of {batches} batches of {args.batch_size} requests "
        f"({args.in_flight} in flight), Python {sys.version.split()[0]}"
    )
    header = f"{'algorithm':<22}" + "".join(f"{n:>10,}" for n in sizes)
    if len(sizes) > 1:
        header += f"{'growth':>9}"
    print(header)
    misses = 0
    for name in algorithms:
        row = f"{name:<22}" + "".join(f"{by[name, n].median_us:>10.2f}" for n in sizes)
        verdicts = []
        if TARGET_SIZE in sizes:
            ok = by[name, TARGET_SIZE].median_us <= TARGET_US
            verdicts.append(f"{TARGET_SIZE:,}: {'PASS' if ok else 'MISS'}")
            misses += not ok
        if len(sizes) > 1:
            growth = by[name, sizes[-1]].median_us / by[name, sizes[0]].median_us
            ok = growth <= TARGET_GROWTH
            row += f"{growth:>8.2f}x"
            verdicts.append(f"growth: {'PASS' if ok else 'MISS'}")
            misses += not ok
        print(f"{row}   {'  '.join(verdicts)}")
    print()
    print("build (first pick after a change), ms")
    print(f"{'algorithm':<22}" + "".join(f"{n:>10,}" for n in sizes))
    for name in algorithms:
        print(f"{name:<22}" + "".join(f"{by[name, n].build_ms:>10.1f}" for n in sizes))
    print()
    print(
        f"targets: <= {TARGET_US:g} us per request at {TARGET_SIZE:,} upstreams, "
        f"<= {TARGET_GROWTH:g}x growth from {sizes[0]:,} to {sizes[-1]:,}: "
        + ("all PASS" if not misses else f"{misses} MISS")
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--algorithms", nargs="+", default=list(clientlb.ALGORITHMS))
    parser.add_argument("--sizes", nargs="+", type=int, default=list(SIZES))
    parser.add_argument("--batches", type=int, default=42, help="timed batches per case")
    parser.add_argument("--rounds", type=int, default=7, help="rounds the batches are spread over")
    parser.add_argument("--batch-size", type=int, default=1000, help="requests per batch")
    parser.add_argument("--warmup", type=int, default=1, help="untimed batches per round")
    parser.add_argument("--in-flight", type=int, default=8, help="requests kept in flight")
    args = parser.parse_args(argv)
    unknown = [a for a in args.algorithms if a not in clientlb.ALGORITHMS]
    if unknown or min(args.in_flight, args.rounds, args.batch_size) < 1 or args.batches < 2:
        parser.error(f"bad arguments (unknown algorithms: {unknown})")
    sizes = sorted(set(args.sizes))
    started = time.perf_counter()
    cases = []
    for name in args.algorithms:
        for size in sizes:
            cases.append(build(name, size, args.in_flight))
            print(
                f"  built {name:<22}{size:>7,} upstreams: {cases[-1].build_ms:9.1f} ms", flush=True
            )
    measure(cases, args)
    for case in cases:
        low, high = case.quartiles_us
        print(
            f"  {case.algorithm:<22}{case.size:>7,} upstreams: {case.median_us:6.2f} us "
            f"(quartiles {low:.2f}-{high:.2f})"
        )
    report(cases, sizes, args)
    print(f"total run time: {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
