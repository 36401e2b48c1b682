"""A deterministic fleet simulator that drives the real core on a simulated clock.

    python -m benchmarks.simulate [--only validate|scale] [--jobs 2] [--seed 1]
                                  [--servers 1000] [--clients 100] [--duration 30]
                                  [--algorithms ...] [--homogeneous | --weighted]
                                  [--subset K] [--latency-factor X]
                                  [--figures benchmarks/figures]

Run from the repository's root. ``validate`` repeats two loopback benchmarks
(``tails.py``, ``hedging.py`` without hedging) in simulation; ``scale`` runs the
scale study (one process per algorithm, ``--jobs`` at a time) and writes its
figures; ``--homogeneous`` adds two references: one server fed Poisson
arrivals, and fed by periodic streams with independent phases. Prints Markdown tables; the
same seed gives the same figures.
"""

from __future__ import annotations

import argparse
import multiprocessing
import time
from dataclasses import replace
from pathlib import Path

from ._fleet import Fleet, Result, run
from ._report import plot_scale, scale_table, validation_table
from ._study import SCALE_ALGORITHMS, STALL_ALGORITHMS, TAILS_ALGORITHMS, Scale, stall, tails

#: Every algorithm of the study (and the oracle).
DEFAULT_SCALE = list(SCALE_ALGORITHMS)
#: Slowest first, so that two processes finish together.
COST_ORDER = ("least_response_time", "peak_ewma", "power_of_two", "least_connections")


def validate(seed: int) -> None:
    print("## tails.py: nine servers in 20-40 ms, one in 2-4 s; 50 in flight\n")
    print(validation_table([run(tails(a, seed)) for a in TAILS_ALGORITHMS], watched=9))
    print("\n## hedging.py, unhedged: server 0 stalls 300 ms on every 20th request\n")
    print(validation_table([run(stall(a, seed)) for a in STALL_ALGORITHMS], watched=0))


def scale(args: argparse.Namespace) -> None:
    study = Scale(
        servers=args.servers, clients=args.clients, duration=args.duration, seed=args.seed
    )
    if args.homogeneous:
        study = replace(study, older_share=0.0, slow_share=0.0, die_share=0.0)
    if args.weighted:
        study = replace(study, weighted=True)
    if args.subset:
        study = replace(study, subset=args.subset)
    if args.latency_factor:
        study = replace(study, latency_factor=args.latency_factor)
    algorithms = sorted(
        args.algorithms,
        key=lambda a: (a not in COST_ORDER, COST_ORDER.index(a) if a in COST_ORDER else 0),
    )
    fleets: list[Fleet] = [study.fleet(a) for a in algorithms]
    references = study.references() if args.homogeneous and not args.subset else ()
    fleets.extend(references)
    started = time.perf_counter()
    if args.jobs > 1:
        with multiprocessing.get_context("fork").Pool(args.jobs) as workers:
            results: list[Result] = workers.map(run, fleets, chunksize=1)
    else:
        results = [run(f) for f in fleets]
    wall = time.perf_counter() - started
    order = [*args.algorithms, *(f.name for f in references)]
    results.sort(key=lambda r: order.index(r.name))
    rate = fleets[0].rate
    kind = " (homogeneous)" if args.homogeneous else " (weighted)" if args.weighted else ""
    if args.subset:
        kind += f", {args.subset} servers per client"
    if args.latency_factor:
        kind += f", ejecting servers {args.latency_factor:g}x slower than the median"
    print(
        f"## scale{kind}: "
        f"{study.servers:,} servers x {study.clients} clients, "
        f"{rate:,.0f} req/s ({study.load:.0%} of capacity), {study.duration:g} s "
        f"({study.warmup:g} s warm-up)\n"
    )
    print(scale_table(results, study))
    total = sum(r.requests for r in results)
    print(f"\n{total:,} requests in {wall:.1f} s with {args.jobs} processes")
    if args.figures:
        suffix = "_homogeneous" if args.homogeneous else "_weighted" if args.weighted else ""
        suffix += f"_subset{args.subset}" if args.subset else ""
        suffix += f"_eject{args.latency_factor:g}" if args.latency_factor else ""
        for path in plot_scale(results, study, Path(args.figures), suffix):
            print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=["validate", "scale"])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=2, help="processes for the scale study")
    parser.add_argument("--servers", type=int, default=Scale().servers)
    parser.add_argument("--clients", type=int, default=Scale().clients)
    parser.add_argument("--duration", type=float, default=Scale().duration)
    parser.add_argument("--algorithms", nargs="+", default=DEFAULT_SCALE, choices=SCALE_ALGORITHMS)
    parser.add_argument(
        "--homogeneous",
        action="store_true",
        help="every server alike, none slowing down or dying (figures named *_homogeneous)",
    )
    parser.add_argument(
        "--weighted",
        action="store_true",
        help="pools weigh each server by its capacity (figures named *_weighted)",
    )
    parser.add_argument(
        "--subset",
        type=int,
        default=0,
        help="each client balances over this many servers only (figures named *_subsetK)",
    )
    parser.add_argument(
        "--latency-factor",
        type=float,
        default=0.0,
        help="pools eject servers whose latency EWMA is above this many times their "
        "pool's median (OutlierDetection.latency_factor; figures named *_ejectX)",
    )
    parser.add_argument("--figures", default="benchmarks/figures", help="'' for none")
    args = parser.parse_args()
    if args.only != "scale":
        validate(args.seed)
        print()
    if args.only != "validate":
        scale(args)


if __name__ == "__main__":
    main()
