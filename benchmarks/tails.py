"""Tails in a fleet where one replica is 100 times slower: latency and its share.

Ten replicas run as uvicorn servers (httptools when installed) in one separate
process, each on an ephemeral loopback port, so that the servers and this client
use both cores. Every replica answers ``GET /`` after ``--fast-ms`` (1 to 2 ms,
uniform) except the last, which takes ``--slow-ms`` (100 to 200 ms): 100 times
slower.

The client, in this process, is an ``httpx.AsyncClient`` over
``clientlb.AsyncBalancingTransport`` (a new transport, so a new pool, per
algorithm; outlier detection off, so that only the algorithm keeps traffic off
the slow replica). The load is closed loop: ``--concurrency`` (50) workers each
send one request after another for ``--seconds`` (5) per algorithm. Requests
started in the first ``--warmup`` (1) second warm connections and estimates and
are left out; for the others the table gives the latency quantiles (to the whole
response) and the share of requests sent to the slow replica (read from
``response.extensions["clientlb.attempts"]``).

    python benchmarks/tails.py [--concurrency 50] [--seconds 5] [--quick]
                               [--algorithms round_robin ... peak_ewma]

About 30 s with the defaults (five algorithms of 5 s, plus start-up); ``--quick``
measures 2 s per algorithm, about 15 s. The script always exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import math
import sys
import time
from dataclasses import dataclass

import httpx
from _replicas import http_implementation, serve

import clientlb

ALGORITHMS = [
    "round_robin",
    "least_connections",
    "least_response_time",
    "power_of_two",
    "peak_ewma",
]

#: The head of the replicas' script (see ``_replicas``). Argv: replicas, fast ms
#: (low, high), slow ms (low, high), http implementation. The last replica is the
#: slow one.
REPLICA = r"""
import asyncio, random, sys

replicas = int(sys.argv[1])
fast = (float(sys.argv[2]) / 1e3, float(sys.argv[3]) / 1e3)
slow = (float(sys.argv[4]) / 1e3, float(sys.argv[5]) / 1e3)
http = sys.argv[6]


def replica(index):
    low, high = slow if index == replicas - 1 else fast

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        await asyncio.sleep(random.uniform(low, high))
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})

    return app
"""


def replicas(count: int, args: argparse.Namespace) -> contextlib.AbstractContextManager[list[str]]:
    """Start the replicas' process; its replicas' URLs. It is stopped on exit."""
    fast, slow = args.fast_ms, args.slow_ms
    argv = [str(count), str(fast), str(2 * fast), str(slow), str(2 * slow)]
    wait = 2 * slow / 1e3 + 1.0  # the slow one's longest answer, and then some
    return serve(REPLICA, [*argv, http_implementation()], count, answer_within=wait)


@dataclass
class Result:
    algorithm: str
    latencies: list[float]  # seconds, measured requests that succeeded
    attempts: int  # of the measured requests
    slow: int  # of those attempts, at the slow replica
    errors: int

    def quantile(self, q: float) -> float:
        """Nearest rank, in ms."""
        ordered = sorted(self.latencies)
        return ordered[min(max(math.ceil(q * len(ordered)) - 1, 0), len(ordered) - 1)] * 1e3


async def run(urls: list[str], algorithm: str, args: argparse.Namespace) -> Result:
    """One algorithm: ``--concurrency`` workers in a closed loop for ``--seconds``."""
    transport = clientlb.AsyncBalancingTransport(urls, algorithm=algorithm, outlier=None)
    slow = urls[-1]
    latencies: list[float] = []
    attempts = at_slow = errors = 0

    async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
        gc.collect()
        gc.freeze()  # the client's setup is not scanned by every collection
        start = time.perf_counter()
        measured_from = start + args.warmup
        end = measured_from + args.seconds

        async def worker() -> None:
            nonlocal attempts, at_slow, errors
            while (began := time.perf_counter()) < end:
                measured = began >= measured_from
                try:
                    response = await client.get("/")
                except httpx.HTTPError:
                    errors += measured
                    continue
                if not measured:
                    continue
                if response.status_code != 200:
                    errors += 1
                    continue
                latencies.append(time.perf_counter() - began)
                tried: list[clientlb.Attempt] = response.extensions["clientlb.attempts"]
                attempts += len(tried)
                at_slow += sum(a.upstream.startswith(slow) for a in tried)

        await asyncio.gather(*(worker() for _ in range(args.concurrency)))
    gc.unfreeze()
    return Result(algorithm, latencies, attempts, at_slow, errors)


def table(results: list[Result]) -> str:
    lines = [
        "| algorithm | requests | p50 ms | p99 ms | p99.9 ms | max ms | to the slow replica |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        share = r.slow / r.attempts if r.attempts else 0.0
        lines.append(
            f"| {r.algorithm} | {len(r.latencies)} | {r.quantile(0.5):.1f} | "
            f"{r.quantile(0.99):.1f} | {r.quantile(0.999):.1f} | "
            f"{max(r.latencies) * 1e3:.1f} | {r.slow} ({share:.2%}) |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", type=int, default=50, help="requests in flight")
    parser.add_argument("--seconds", type=float, default=5.0, help="measured, per algorithm")
    parser.add_argument("--warmup", type=float, default=1.0, help="left out, per algorithm")
    parser.add_argument("--fast-ms", type=float, default=1.0, help="fast replicas: 1x to 2x this")
    parser.add_argument("--slow-ms", type=float, default=100.0, help="the slow one: 1x to 2x this")
    parser.add_argument("--replicas", type=int, default=10, help="the last one is slow")
    parser.add_argument("--quick", action="store_true", help="2 s measured per algorithm")
    parser.add_argument(
        "--algorithms", nargs="+", default=ALGORITHMS, choices=sorted(clientlb.ALGORITHMS)
    )
    args = parser.parse_args()
    if args.quick:
        args.seconds = min(args.seconds, 2.0)
    if args.replicas < 2 or args.concurrency < 1:
        parser.error("at least two replicas and one request in flight")

    with replicas(args.replicas, args) as urls:
        print(
            f"{args.replicas} replicas (one uvicorn process): {args.replicas - 1} answer in "
            f"{args.fast_ms:g}-{2 * args.fast_ms:g} ms, one in {args.slow_ms:g}-"
            f"{2 * args.slow_ms:g} ms; {args.concurrency} in flight (closed loop), "
            f"{args.warmup:g} s warm-up + {args.seconds:g} s measured per algorithm; "
            "outlier detection off",
            flush=True,
        )

        async def all_of_them() -> list[Result]:
            results = []
            for algorithm in args.algorithms:
                results.append(await run(urls, algorithm, args))
                print(f"  measured: {algorithm}", flush=True)
            return results

        try:
            results = asyncio.run(all_of_them())
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130
    print("\nLatency to the whole response, after the warm-up:\n")
    print(table(results))
    errors = sum(r.errors for r in results)
    if errors:
        print(f"\n{errors} request(s) failed (not in the figures).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
