"""Hedged requests against a replica that stalls now and then: tail latency and cost.

Four replicas run as uvicorn servers (httptools when installed) in one separate
process, each on an ephemeral loopback port, so that the servers and this client
use both cores. Every replica answers ``GET /`` after a service time of
``--service-ms`` (default 5 ms, uniform jitter of +-``--jitter``, default 20 %);
replica 0 instead stalls ``--stall-ms`` (300 ms) on every ``--stall-every``-th
(20th) request it receives. Each replica counts what it receives, per query
string, and reports it at ``/count`` (not counted itself), so the extra upstream
requests are the servers' own count.

The client, in this process, is an ``httpx.AsyncClient`` over
``clientlb.AsyncBalancingTransport`` with one configuration at a time, all on the
same replicas, one after the other: each algorithm (``--algorithms``, default
round_robin, peak_ewma and least_response_time) without hedging and with
``hedge_after="p95"``, plus round robin with a fixed ``hedge_after`` of
``--fixed-ms`` (default twice the service time). The retry budget is the
default ``RetryBudget()`` unless ``--no-budget``; outlier detection is the
default, and what it did is printed (the pool's snapshot after each run).

The load is open loop: request i is due at t0 + i / ``--rate`` (300 req/s) and
runs as its own task; its latency counts from when it was due (so a late start
counts too: no coordinated omission) to its whole response. The first
``--warmup`` (300) requests of each configuration warm connections and the
pool's latency window (``Pool.latency_quantile`` gives nothing before 20
responses) and are left out of every figure; the next ``--requests`` (4,000)
are measured. Hedges are read from ``response.extensions["clientlb.attempts"]``.

Targets (the issue's): p99 within 1.5x p50, and at most 5 % extra upstream
requests (the servers' count over the client's requests, minus one). Printed
as PASS or MISS per configuration; the script always exits 0.

    python benchmarks/hedging.py [--rate 300] [--requests 4000] [--warmup 300]
                                 [--service-ms 5] [--no-budget]

About 105 s with the defaults (seven configurations of about 14 s each).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import math
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
from _replicas import http_implementation, serve

import clientlb

#: The issue's targets.
RATIO_TARGET = 1.5
EXTRA_TARGET = 0.05

#: The head of the replicas' script (see ``_replicas``). Argv: replicas, service
#: ms, jitter, stall ms, stall every, http implementation.
REPLICA = r"""
import asyncio, json, random, sys

replicas, service, jitter = int(sys.argv[1]), float(sys.argv[2]) / 1e3, float(sys.argv[3])
stall, every, http = float(sys.argv[4]) / 1e3, int(sys.argv[5]), sys.argv[6]


def replica(index):
    received = 0
    tags = {}  # query string -> [requests received, of which stalled]

    async def app(scope, receive, send):
        nonlocal received
        if scope["type"] != "http":
            return
        if scope["path"] == "/count":
            body = json.dumps(tags).encode()
        else:
            received += 1
            row = tags.setdefault(scope["query_string"].decode(), [0, 0])
            row[0] += 1
            if index == 0 and received % every == 0:
                row[1] += 1
                await asyncio.sleep(stall)
            else:
                await asyncio.sleep(service * random.uniform(1 - jitter, 1 + jitter))
            body = b"ok"
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    return app
"""


def replicas(count: int, args: argparse.Namespace) -> contextlib.AbstractContextManager[list[str]]:
    """Start the replicas' process; its replicas' URLs. It is stopped on exit."""
    argv = [str(count), str(args.service_ms), str(args.jitter), str(args.stall_ms)]
    argv += [str(args.stall_every), http_implementation()]
    return serve(REPLICA, argv, count, ready_path="/count")


@dataclass(frozen=True)
class Config:
    name: str
    algorithm: str
    hedge_after: float | str | None


@dataclass
class Result:
    config: Config
    latencies: list[float]  # seconds, measured requests that succeeded
    errors: int
    sent: int  # measured requests
    hedges: int  # attempts beyond the first, from the responses' attempts
    stalled_losers: int  # of those, attempts at replica 0 that lost and were cancelled
    received: list[int]  # per replica, measured requests as the servers saw them
    stalls: int  # measured requests that replica 0 stalled on
    hedge_delays: list[float] = field(default_factory=list)  # sampled, seconds
    replica0: dict[str, Any] = field(default_factory=dict)  # its row of the snapshot
    ejections: int = 0  # over every replica

    def quantile(self, q: float) -> float:
        """Nearest rank, in ms."""
        ordered = sorted(self.latencies)
        return ordered[min(max(math.ceil(q * len(ordered)) - 1, 0), len(ordered) - 1)] * 1e3

    @property
    def extra(self) -> float:
        return sum(self.received) / self.sent - 1


async def counts(client: httpx.AsyncClient, urls: list[str], tag: str) -> list[list[int]]:
    """Per replica: [received, stalled] of the requests tagged ``tag``."""
    rows = []
    for url in urls:
        response = await client.get(f"{url}/count")
        rows.append(json.loads(response.content).get(tag, [0, 0]))
    return rows


async def run(urls: list[str], config: Config, number: int, args: argparse.Namespace) -> Result:
    """One configuration: warm-up, then the measured requests, open loop."""
    budget = None if args.no_budget else clientlb.RetryBudget()
    policy = clientlb.RetryPolicy(hedge_after=config.hedge_after, budget=budget)
    hashes = clientlb.ALGORITHMS[config.algorithm].hashes
    transport = clientlb.AsyncBalancingTransport(
        urls,
        algorithm=config.algorithm,
        retry=policy,
        hash_on="header:x-request" if hashes else None,  # each request a key of its own
    )
    tag = f"run={number}"
    warmup, total = args.warmup, args.warmup + args.requests
    latencies: list[float] = []
    hedges = stalled_losers = errors = 0
    first = urls[0]

    async def one(i: int, due: float, client: httpx.AsyncClient) -> None:
        nonlocal hedges, stalled_losers, errors
        measured = i >= warmup
        try:
            response = await client.get(
                "/",
                params={"run": number} if measured else {"w": number},
                headers={"x-request": str(i)},
            )
        except httpx.HTTPError:
            errors += measured
            return
        if not measured:
            return
        if response.status_code != 200:
            errors += 1
            return
        latencies.append(time.perf_counter() - due)
        attempts: list[clientlb.Attempt] = response.extensions["clientlb.attempts"]
        hedges += len(attempts) - 1
        stalled_losers += sum(
            a.outcome == "cancelled" and a.upstream.startswith(first) for a in attempts
        )

    delays: list[float] = []
    async with (
        httpx.AsyncClient(transport=transport, base_url="http://svc") as client,
        httpx.AsyncClient() as plain,
    ):
        gc.collect()
        gc.freeze()  # the client's setup is not scanned by every collection
        tasks: set[asyncio.Task[None]] = set()
        start = time.perf_counter() + 0.01
        sampled = start
        for i in range(total):
            due = start + i / args.rate
            wait = due - time.perf_counter()
            if wait > 0:
                await asyncio.sleep(wait)
            task = asyncio.create_task(one(i, due, client))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            if i >= warmup and due >= sampled:  # the hedge delay in force, 10 times/s
                sampled = due + 0.1
                quantile = policy.hedge_quantile
                delay = (
                    transport.pool.latency_quantile(quantile)
                    if quantile is not None
                    else policy.hedge_after
                )
                if isinstance(delay, float):
                    delays.append(delay)
        await asyncio.gather(*tasks)
        rows = transport.pool.snapshot()["upstreams"]
        after = await counts(plain, urls, tag)
    gc.unfreeze()
    await asyncio.sleep(args.stall_ms / 1e3)  # replica 0's last stall ends
    row0 = next(r for r in rows if r["url"].startswith(first))
    return Result(
        config,
        latencies,
        errors,
        args.requests,
        hedges,
        stalled_losers,
        [r[0] for r in after],
        after[0][1],
        delays if config.hedge_after is not None else [],
        row0,
        sum(r["ejections"] for r in rows),
    )


def table(results: list[Result]) -> str:
    lines = [
        "| configuration | p50 | p95 | p99 | p99.9 | max | p99/p50 | extra upstream "
        f"| hedges | p99 <= {RATIO_TARGET:g}x p50 | extra <= {EXTRA_TARGET:.0%} |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|:---:|:---:|",
    ]
    for r in results:
        p50, p99 = r.quantile(0.5), r.quantile(0.99)
        ratio = p99 / p50
        lines.append(
            f"| {r.config.name} | {p50:.1f} | {r.quantile(0.95):.1f} | {p99:.1f} | "
            f"{r.quantile(0.999):.1f} | {max(r.latencies) * 1e3:.1f} | {ratio:.2f} | "
            f"{r.extra:+.1%} | {r.hedges} ({r.hedges / r.sent:.1%}) | "
            f"{'PASS' if ratio <= RATIO_TARGET else 'MISS'} | "
            f"{'PASS' if r.extra <= EXTRA_TARGET else 'MISS'} |"
        )
    return "\n".join(lines)


def details(results: list[Result]) -> str:
    lines = [
        "| configuration | share of replicas 0/1/2/3 (%) | stalled | hedge losers at "
        "replica 0 | hedge delay (median) | replica 0 after | ejections | errors |",
        "|---|---|---:|---:|---:|---|---:|---:|",
    ]
    for r in results:
        delay = f"{statistics.median(r.hedge_delays) * 1e3:.1f} ms" if r.hedge_delays else "-"
        row0 = r.replica0
        shares = "/".join(f"{100 * n / sum(r.received):.1f}" for n in r.received)
        lines.append(
            f"| {r.config.name} | {shares} | "
            f"{r.stalls} ({r.stalls / r.sent:.2%}) | {r.stalled_losers} | {delay} | "
            f"{row0['state']}, EWMA {row0['ewma_latency'] * 1e3:.1f} ms | {r.ejections} | "
            f"{r.errors} |"
        )
    return "\n".join(lines)


def configurations(args: argparse.Namespace) -> list[Config]:
    configs = []
    for algorithm in args.algorithms:
        configs.append(Config(algorithm, algorithm, None))
        configs.append(Config(f"{algorithm}, hedge p95", algorithm, "p95"))
        if algorithm == args.algorithms[0] and args.fixed_ms != 0:
            fixed = args.fixed_ms if args.fixed_ms is not None else 2 * args.service_ms
            configs.append(Config(f"{algorithm}, hedge {fixed:g} ms", algorithm, fixed / 1e3))
    return configs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=300, help="requests per second")
    parser.add_argument("--requests", type=int, default=4000, help="measured, per configuration")
    parser.add_argument("--warmup", type=int, default=300, help="left out, per configuration")
    parser.add_argument("--service-ms", type=float, default=5.0, help="a replica's service time")
    parser.add_argument("--jitter", type=float, default=0.2, help="+- share of the service time")
    parser.add_argument("--stall-ms", type=float, default=300.0, help="replica 0's stall")
    parser.add_argument("--stall-every", type=int, default=20, help="replica 0 stalls on every Nth")
    parser.add_argument(
        "--algorithms",
        nargs="+",
        default=["round_robin", "peak_ewma", "least_response_time"],
        choices=sorted(clientlb.ALGORITHMS),
        help="each without and with hedge_after='p95'",
    )
    parser.add_argument(
        "--fixed-ms",
        type=float,
        default=None,
        help="a fixed hedge_after for the first algorithm (default: 2x the service time; 0: none)",
    )
    parser.add_argument("--no-budget", action="store_true", help="RetryPolicy(budget=None)")
    args = parser.parse_args()

    configs = configurations(args)
    with replicas(4, args) as urls:
        print(
            f"4 replicas (one uvicorn process), service {args.service_ms:g} ms +-"
            f"{args.jitter:.0%}; replica 0 stalls {args.stall_ms:g} ms on every "
            f"{args.stall_every}th request; open loop at {args.rate:g} req/s, "
            f"{args.warmup} warm-up + {args.requests} measured requests per configuration; "
            f"retry budget: {'none' if args.no_budget else 'default'}",
            flush=True,
        )

        async def all_of_them() -> list[Result]:
            results = []
            for number, config in enumerate(configs):
                results.append(await run(urls, config, number, args))
                print(f"  measured: {config.name}", flush=True)
            return results

        try:
            results = asyncio.run(all_of_them())
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130
    print("\nLatency from the scheduled start, ms:\n")
    print(table(results))
    print("\nWhere the requests went (servers' counts, measured requests only):\n")
    print(details(results))
    ejected = sum(r.ejections for r in results)
    print(
        "\nOutlier detection (default): "
        + (
            f"{ejected} ejection(s) in all."
            if ejected
            else "no upstream was ejected (a stall is a slow 200, not a failure)."
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
