"""Membership churn at fleet size: pick latency while Maglev tables are rebuilt.

A ``consistent_hash`` pool of 10,000 upstreams; one thread picks in a loop (a
different key each time) and records each pick's latency, while another changes
the membership once a second, alternately removing one upstream and adding it
back, through ``Pool.update_steps()`` with the whole list, as discovery does
(``time.sleep(0)`` between steps). Reported: p50/p99/p99.9/max pick latency
during the churn; the CPU time of one table build at 1,000 and 10,000 upstreams;
the share of keys that change upstream when one member leaves and comes back.

``--compare REV`` runs the same measurement on the code of git revision ``REV``
too (extracted to a temporary directory), in its own process, side by side.

Run it with ``.venv/bin/python benchmarks/churn.py --compare main``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from array import array
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))


def upstream_urls(n: int) -> list[str]:
    return [f"http://10.{i // 65536}.{i // 256 % 256}.{i % 256}:8000" for i in range(n)]


def build_cpu(n: int) -> float:
    """CPU seconds of one table build for ``n`` upstreams (a fresh pool's first pick)."""
    from clientlb import Pool

    pool = Pool(upstream_urls(n), algorithm="consistent_hash")
    started = time.process_time()
    pool.pick("first").finish()
    return time.process_time() - started


def owners(pool: Any, keys: list[str]) -> list[str]:
    out = []
    for key in keys:
        lease = pool.pick(key)
        lease.finish()
        out.append(lease.upstream.url)
    return out


def key_movement(n: int, count: int) -> tuple[float, float]:
    """The share of ``count`` keys that change upstream when one of ``n`` upstreams
    is removed, then when it is added back."""
    from clientlb import Pool

    urls = upstream_urls(n)
    keys = [f"client-{i}" for i in range(count)]
    pool = Pool(urls, algorithm="consistent_hash")
    before = owners(pool, keys)
    pool.update(urls[1:])
    removed = owners(pool, keys)
    pool.update(urls)
    added = owners(pool, keys)

    def moved(a: list[str], b: list[str]) -> float:
        return sum(x != y for x, y in zip(a, b, strict=True)) / count

    return moved(before, removed), moved(removed, added)


def churn(n: int, seconds: float) -> dict[str, Any]:
    """Pick latencies (us) while the membership changes once a second."""
    from clientlb import Pool

    urls = upstream_urls(n)
    pool = Pool(urls, algorithm="consistent_hash")
    pool.pick("first").finish()  # the first table, before the clock starts
    stop = threading.Event()
    latencies = array("d")  # not scanned by the collector, unlike a list of 10^7 floats
    changes: list[float] = []

    def picker() -> None:
        rng = random.Random(1)
        keys = [f"client-{rng.randrange(1 << 30)}" for _ in range(4096)]
        clock = time.perf_counter_ns
        record = latencies.append
        i = 0
        while not stop.is_set():
            begin = clock()
            lease = pool.pick(keys[i & 4095])
            record((clock() - begin) / 1000)
            lease.finish()
            i += 1

    def changer() -> None:
        for k in range(int(seconds)):
            stop.wait(max(0.0, started + k + 0.5 - time.perf_counter()))
            members = urls[1:] if k % 2 == 0 else urls
            begin = time.perf_counter()
            for _ in pool.update_steps(members, drain_timeout=0.0):
                time.sleep(0)
            changes.append(time.perf_counter() - begin)

    started = time.perf_counter()
    threads = [threading.Thread(target=picker), threading.Thread(target=changer)]
    for t in threads:
        t.start()
    threads[1].join()
    stop.wait(max(0.0, started + seconds - time.perf_counter()))
    stop.set()
    threads[0].join()
    latencies = array("d", sorted(latencies))

    def at(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))]

    return {
        "picks": len(latencies),
        "p50": at(0.5),
        "p99": at(0.99),
        "p99.9": at(0.999),
        "max": latencies[-1],
        "over_1ms": sum(x > 1000 for x in latencies),
        "changes": len(changes),
        "change_s": statistics.median(changes) if changes else 0.0,
    }


def measure(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "build_cpu": {str(n): build_cpu(n) for n in args.build_sizes},
        "churn": churn(args.upstreams, args.seconds),
        "moved": key_movement(args.upstreams, args.keys),
    }


def in_child(root: str, argv: list[str]) -> dict[str, Any]:
    """``measure()`` in a fresh interpreter that imports ``clientlb`` from ``root``."""
    env = {**os.environ, "PYTHONPATH": root}
    out = subprocess.run(
        [sys.executable, os.path.join(HERE, "churn.py"), *argv, "--json"],
        env=env,
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def report(results: dict[str, dict[str, Any]], args: argparse.Namespace) -> None:
    names = list(results)
    print(f"\n{args.upstreams:,} upstreams, consistent_hash, Python {sys.version.split()[0]}")
    print(f"\none table build, CPU ms{'':14}" + "".join(f"{n:>14}" for n in names))
    for size in args.build_sizes:
        cells = "".join(f"{results[n]['build_cpu'][str(size)] * 1000:>14.0f}" for n in names)
        print(f"  {size:>7,} upstreams{'':17}{cells}")
    print(f"\npick latency during churn, us ({args.seconds:g} s, one change a second)")
    for field in ("picks", "p50", "p99", "p99.9", "max", "over_1ms", "changes", "change_s"):
        cells = "".join(
            f"{results[n]['churn'][field]:>14,.1f}"
            if isinstance(results[n]["churn"][field], float)
            else f"{results[n]['churn'][field]:>14,}"
            for n in names
        )
        print(f"  {field:<32}{cells}")
    print(f"\nkeys that change upstream ({args.keys:,} keys), %")
    for i, what in enumerate(("one upstream removed", "and added back")):
        cells = "".join(f"{results[n]['moved'][i] * 100:>14.3f}" for n in names)
        print(f"  {what:<32}{cells}")
    print(f"  (1/N = {100 / args.upstreams:.3f} %)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--upstreams", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=10.0, help="churn duration")
    parser.add_argument("--build-sizes", nargs="+", type=int, default=[1_000, 10_000])
    parser.add_argument("--keys", type=int, default=100_000, help="keys for the movement")
    parser.add_argument("--compare", metavar="REV", help="also measure git revision REV")
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.json:
        print(json.dumps(measure(args)))
        return 0
    forwarded = [
        f"--upstreams={args.upstreams}",
        f"--seconds={args.seconds}",
        f"--keys={args.keys}",
        "--build-sizes",
        *map(str, args.build_sizes),
    ]
    results = {}
    root = os.path.dirname(HERE)
    with tempfile.TemporaryDirectory() as old:
        if args.compare:
            archive = subprocess.run(
                ["git", "archive", args.compare, "clientlb"],
                cwd=root,
                capture_output=True,
                check=True,
            )
            subprocess.run(["tar", "-x", "-C", old], input=archive.stdout, check=True)
            results[args.compare] = in_child(old, forwarded)
        results["this tree"] = in_child(root, forwarded)
    report(results, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
