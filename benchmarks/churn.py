"""Membership churn at fleet size: pick latency while Maglev tables are rebuilt.

A ``consistent_hash`` pool of 10,000 upstreams; one thread picks in a loop (a
different key each time) and records each pick's latency, while another changes
the membership once a second (or as soon as the last change is over, when one
takes longer: beside a picker that never waits, it does), alternately removing
one upstream and adding it back, through ``Pool.update_steps()`` with the whole
list, as discovery does (``time.sleep(0)`` between steps). Reported: p50/p99/
p99.9/max pick latency and the picks over 1 ms during the churn; the longest time
the changing thread held the pool's lock (the most a pick can wait for a change);
the CPU time of one table build at 1,000 and 10,000 upstreams; the share of keys
that change upstream when one member leaves and comes back; and how long one
change of health holds the lock in panic, where the pool balances over every
upstream (``panic_threshold``).

Two controls run in the same process with the same picker, each for as long:
*quiet* (nothing else running) and *busy* (another thread burns CPU in pure
Python with no pool, giving way every half millisecond as the library's loops
do: what any busy thread costs a picker through the GIL and the scheduler).
Then the churn and the quiet control again with a *paced* picker, which sleeps
``PACE`` between picks as a service does between requests: the GIL is then free
most of the time, and a change is made once a second, as asked.

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
#: Seconds a paced picker sleeps between two picks (a service between requests).
PACE = 0.0001


def upstream_urls(n: int) -> list[str]:
    return [f"http://10.{i // 65536}.{i // 256 % 256}.{i % 256}:8000" for i in range(n)]


def build_cpu(n: int) -> float:
    """CPU seconds of one table build for ``n`` upstreams (a fresh pool's first pick)."""
    from clientlb import Pool

    Pool(upstream_urls(300), algorithm="consistent_hash").pick("warm").finish()  # imports
    pool = Pool(upstream_urls(n), algorithm="consistent_hash")
    started = time.process_time()
    pool.pick("first").finish()
    return time.process_time() - started


class TimedLock:
    """A pool's lock that records how long each outermost hold by one thread
    (``watched``) lasts, in microseconds: wall time (which includes waits for the
    GIL while holding it) and the thread's CPU time (the work done under it)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.watched: int | None = None
        self.holds = array("d")
        self.work = array("d")
        self._depth = 0
        self._since = self._since_cpu = 0

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        got: bool = self.inner.acquire(blocking, timeout)
        if got and threading.get_ident() == self.watched:
            self._depth += 1
            if self._depth == 1:
                self._since, self._since_cpu = time.perf_counter_ns(), time.thread_time_ns()
        return got

    def release(self) -> None:
        if threading.get_ident() == self.watched:
            self._depth -= 1
            if self._depth == 0:
                self.holds.append((time.perf_counter_ns() - self._since) / 1000)
                self.work.append((time.thread_time_ns() - self._since_cpu) / 1000)
        self.inner.release()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def burn(stop: threading.Event) -> None:
    """Pure-Python work until ``stop``, giving way as the library's own loops do
    (``time.sleep(0)`` about every half millisecond)."""
    from urllib.parse import urlsplit

    turn = time.perf_counter() + 0.0005
    i = 0
    while not stop.is_set():
        urlsplit(f"http://10.0.{i % 256}.1:{8000 + i % 1000}/p")
        i += 1
        if time.perf_counter() >= turn:
            time.sleep(0)
            turn = time.perf_counter() + 0.0005


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


def churn(
    n: int, seconds: float, other: str = "changes", pace: float | None = None
) -> dict[str, Any]:
    """Pick latencies (us) over ``seconds`` while the membership changes once a
    second, or as soon as the last change is over when it took longer (``other``
    "changes"), while another thread burns CPU in pure Python ("busy"), or alone
    ("quiet"). The picker picks back to back, or sleeps ``pace`` seconds after
    each pick, as a service does between requests (the sleep is not timed)."""
    from clientlb import Pool

    urls = upstream_urls(n)
    pool = Pool(urls, algorithm="consistent_hash")
    pool.pick("first").finish()  # the first table, before the clock starts
    lock = pool._lock = TimedLock(pool._lock)  # type: ignore[assignment]
    stop = threading.Event()
    latencies = array("d")  # not scanned by the collector, unlike a list of 10^7 floats
    changes: list[float] = []
    change_cpu: list[float] = []

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
            if pace is not None:
                time.sleep(pace)

    def changer() -> None:
        lock.watched = threading.get_ident()
        if other == "busy":
            burn(stop)
            return
        k = 0
        while not stop.wait(max(0.0, started + k + 0.5 - time.perf_counter())):
            k += 1
            if other == "quiet":
                continue
            begin, begin_cpu = time.perf_counter(), time.thread_time()
            members = urls[1:] if len(changes) % 2 == 0 else urls
            for _ in pool.update_steps(members, drain_timeout=0.0):
                if stop.is_set():
                    return  # the phase is over: a change left half-made is not counted
                time.sleep(0)
            changes.append(time.perf_counter() - begin)
            change_cpu.append(time.thread_time() - begin_cpu)

    started = time.perf_counter()
    threads = [threading.Thread(target=picker), threading.Thread(target=changer)]
    for t in threads:
        t.start()
    stop.wait(seconds)
    stop.set()
    for t in threads:
        t.join()
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
        "change_cpu_s": statistics.median(change_cpu) if change_cpu else 0.0,
        "lock_max": max(lock.holds, default=0.0),
        "lock_over_1ms": sum(x > 1000 for x in lock.holds),
        "lock_cpu_max": max(lock.work, default=0.0),
        "lock_cpu_over_1ms": sum(x > 1000 for x in lock.work),
    }


def panic_changes(n: int, changes: int = 30) -> dict[str, float]:
    """The longest lock hold (ms) of each change in panic: a pool of ``n``
    upstreams at ``panic_threshold=0.999`` ejects one upstream per step (its
    next pick rebuilds); the step that enters panic, and the ``changes`` after
    it, each one more upstream ejected while the pool panics; then one upstream
    removed and one added (``update_steps()``, a pick after each step)."""
    from clientlb import Outcome, OutlierDetection, Pool

    once = OutlierDetection(consecutive_local_failures=1, probe_after=None)
    pool = Pool(upstream_urls(n), algorithm="consistent_hash", panic_threshold=0.999, outlier=once)
    pool.pick("first").finish()
    lock = pool._lock = TimedLock(pool._lock)  # type: ignore[assignment]
    lock.watched = threading.get_ident()
    entered: float | None = None
    during: list[float] = []
    step = 0
    while len(during) < changes:
        step += 1
        since = len(lock.holds)
        pool.pick(f"key-{step}").finish(Outcome.CONNECT_FAILURE)  # its upstream ejected
        panicking = pool.panicking  # runs the rebuild the ejection calls for
        hold = max(lock.holds[since:]) / 1000
        if entered is not None:
            during.append(hold)
        elif panicking:
            entered = hold
    urls = upstream_urls(n)
    since = len(lock.holds)
    for _ in pool.update_steps([*urls[1:], "http://10.255.0.1:8000"], drain_timeout=0.0):
        pool.pick("after-a-step").finish()
    members = max(lock.holds[since:]) / 1000
    return {
        "enter_ms": entered or 0.0,
        "change_p50_ms": statistics.median(during),
        "change_max_ms": max(during),
        "members_ms": members,
    }


def measure(args: argparse.Namespace) -> dict[str, Any]:
    if args.panic_only:
        return {"panic": panic_changes(args.upstreams)}
    return {
        "build_cpu": {str(n): build_cpu(n) for n in args.build_sizes},
        "churn": churn(args.upstreams, args.seconds),
        "busy": churn(args.upstreams, args.seconds, "busy"),
        "quiet": churn(args.upstreams, args.seconds, "quiet"),
        "paced": churn(args.upstreams, args.seconds, pace=PACE),
        "paced_quiet": churn(args.upstreams, args.seconds, "quiet", pace=PACE),
        "moved": key_movement(args.upstreams, args.keys),
        "panic": panic_changes(args.upstreams),
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
    if not args.panic_only:
        report_churn(results, args)
    print("\nlock held by a change in panic, ms")
    for field, what in (
        ("enter_ms", "entering panic"),
        ("change_p50_ms", "each change of health, median"),
        ("change_max_ms", "each change of health, max"),
        ("members_ms", "one removed, one added"),
    ):
        cells = "".join(f"{results[n]['panic'][field]:>14,.1f}" for n in names)
        print(f"  {what:<32}{cells}")


def report_churn(results: dict[str, dict[str, Any]], args: argparse.Namespace) -> None:
    names = list(results)
    print(f"\none table build, CPU ms{'':14}" + "".join(f"{n:>14}" for n in names))
    for size in args.build_sizes:
        cells = "".join(f"{results[n]['build_cpu'][str(size)] * 1000:>14.0f}" for n in names)
        print(f"  {size:>7,} upstreams{'':17}{cells}")
    fields = ("picks", "p50", "p99", "p99.9", "max", "over_1ms")
    churn_fields = (
        "changes",
        "change_s",
        "change_cpu_s",
        "lock_max",
        "lock_over_1ms",
        "lock_cpu_max",
        "lock_cpu_over_1ms",
    )
    for phase, title, extra in (
        (
            "churn",
            "during churn, a change a second or back to back",
            churn_fields,
        ),
        ("busy", "beside a thread burning CPU in turns (no pool)", ()),
        ("quiet", "alone", ()),
        ("paced", f"during churn, picks {PACE * 1e6:.0f} us apart", churn_fields),
        ("paced_quiet", f"alone, picks {PACE * 1e6:.0f} us apart", ()),
    ):
        print(f"\npick latency {title}, us ({args.seconds:g} s)")
        for field in fields + extra:
            cells = "".join(
                f"{results[n][phase].get(field, 0):>14,.3f}"
                if field.endswith("_s")
                else f"{results[n][phase].get(field, 0):>14,.1f}"
                if isinstance(results[n][phase].get(field, 0), float)
                else f"{results[n][phase].get(field, 0):>14,}"
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
    parser.add_argument("--seconds", type=float, default=60.0, help="each phase's duration")
    parser.add_argument("--build-sizes", nargs="+", type=int, default=[1_000, 10_000])
    parser.add_argument("--keys", type=int, default=100_000, help="keys for the movement")
    parser.add_argument("--compare", metavar="REV", help="also measure git revision REV")
    parser.add_argument(
        "--panic-only", action="store_true", help="measure only the changes in panic"
    )
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
        *(["--panic-only"] if args.panic_only else []),
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
