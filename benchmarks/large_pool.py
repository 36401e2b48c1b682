"""Large pools: a 10,000-member change under traffic, through ``clientlb proxy``.

    python benchmarks/large_pool.py [--upstreams 10000] [--rate 300] [--algorithms ...]
    python benchmarks/large_pool.py --in-process      # the pool alone, no sockets

**In process.** The time of ``Pool.update()`` adding and removing N members, of
``add``/``remove``/``drain`` one at a time, of the first pick after a change (the
algorithm's rebuild) and of ``snapshot()``, for the non-hashing algorithms.

**Through the proxy.** Two small uvicorn apps stand in for N upstreams: each
upstream is a distinct URL with a path prefix (``http://127.0.0.1:PORT/u00042``),
so the pool really holds N members, each with its own connections, and every
one of them answers (with its prefix, so the client sees where a request went).
``clientlb proxy --discovery file://FILE --admin ...`` (the CLI's ``main()``)
starts with ``--base`` members; the file is then rewritten to add N more and,
later, to remove them again, while a client sends GET requests at a fixed rate
(open loop: latency counts from the request's scheduled time, so a stall delays
every request due during it), and fetches ``/metrics`` once a second.

The registry is TOML by default (``{ url = ..., weight = 1 }`` tables: tomllib
alone takes about 60 ms for 10,000 of them, the heavier parse) or JSON
(``--format json``). With two or more cores the proxy runs on CPU 0 and this
client and the upstreams on CPU 1; the client's garbage collector is off while
it measures, so that its own pauses are not counted as the proxy's.

The proxy process carries three instruments, set up before the CLI's ``main()``
runs, all writing to stderr: a task on its event loop that sleeps 2 ms in a loop
and records how late it wakes (the loop's stalls, GIL waits included); a wrapper
around the File provider's ``apoll`` that marks when a poll changed the pool
(from the start of the poll, file read included, to the end of the change); and
a ``gc.callbacks`` hook timing full collections.

Reported per phase: p50/p99/max latency of proxied requests; "before" is the
steady state with ``--base`` members, "adding"/"removing" the requests scheduled
from the start of the poll that saw the change to its end; the longest loop
stall; the proxy's full collections; the time from the file's rename to the end
of the change (the File provider polls every second, so up to 1 s of it is
waiting for the poll); and the latency of ``/metrics``. The client resends a
request only when the proxy had closed that idle keep-alive connection before
any byte of an answer (counted and printed).

Target: p99 of proxied requests during a 10,000-member change <= 20 ms, and no
loop stall > 10 ms, for non-hashing algorithms.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

HERE = os.path.abspath(__file__)

# -- in process ---------------------------------------------------------------------------


def _timed(fn: Callable[[], object]) -> float:
    gc.collect()
    started = time.perf_counter()
    fn()
    return (time.perf_counter() - started) * 1000


def longest_step(pool: Any, urls: list[Any]) -> float:
    """The longest single step of ``pool.update_steps(urls)``, in ms (each step
    holds the pool's lock; the first also takes the O(n) list of leavers)."""
    steps, longest = pool.update_steps(urls), 0.0
    while True:
        started = time.perf_counter()
        try:
            next(steps)
        except StopIteration:
            return max(longest, (time.perf_counter() - started) * 1000)
        longest = max(longest, (time.perf_counter() - started) * 1000)


def in_process(n: int, algorithms: list[str]) -> None:
    from clientlb import Pool, Upstream

    ups = [Upstream(f"http://127.0.0.1:9000/u{i:05d}") for i in range(n)]
    base = [Upstream("http://127.0.0.1:9001")]
    stepped = hasattr(Pool, "update_steps")
    print(f"\nIn process, {n:,} members (ms; median of 3)\n")
    header = [
        "update +N",
        "1st pick",
        "update -N",
        "1st pick",
        "add x N",
        "remove x N",
        "drain x N",
        "snapshot",
    ]
    if stepped:
        header += ["longest step +N", "longest step -N"]
    print(f"| algorithm | {' | '.join(header)} |")
    print(f"|---|{'---:|' * len(header)}")
    for name in algorithms:
        rows: list[list[float]] = []
        for _ in range(3):
            pool = Pool(base, algorithm=name)
            row = [_timed(lambda p=pool: p.update(base + ups))]  # type: ignore[misc]
            row.append(_timed(lambda p=pool: p.pick().finish()))  # type: ignore[misc]
            row.append(_timed(lambda p=pool: p.update(base)))  # type: ignore[misc]
            row.append(_timed(lambda p=pool: p.pick().finish()))  # type: ignore[misc]
            row.append(_timed(lambda p=pool: [p.add(u) for u in ups]))  # type: ignore[misc]
            row.append(_timed(lambda p=pool: [p.remove(u) for u in ups]))  # type: ignore[misc]
            pool.update(base + ups)
            row.append(_timed(lambda p=pool: [p.drain(u) for u in ups]))  # type: ignore[misc]
            pool.update(base + ups)
            pool.pick().finish()
            row.append(_timed(pool.snapshot))
            if stepped:
                pool.update(base)
                gc.collect()
                row.append(longest_step(pool, base + ups))
                gc.collect()
                row.append(longest_step(pool, base))
            rows.append(row)
        cells = [statistics.median(col) for col in zip(*rows, strict=True)]
        print(f"| {name} | {' | '.join(f'{c:.1f}' for c in cells)} |")


# -- the upstreams and the instrumented proxy (re-invoked as subprocesses) ---------------


def serve_upstream(port: int) -> None:
    import uvicorn

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = scope["path"].split("/", 2)[1].encode() or b"-"
        headers = [(b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    uvicorn.run(app, host="127.0.0.1", port=port, access_log=False, log_level="warning")


def serve_proxy(argv: list[str]) -> None:
    """``clientlb``'s ``main()`` with the two instruments described above."""
    from clientlb._cli import main
    from clientlb._proxy import _serve
    from clientlb.discovery import File

    def say(text: str) -> None:
        sys.stderr.write(text + "\n")
        sys.stderr.flush()

    async def watch_the_loop() -> None:
        """Every 0.1 s, the longest stall seen and when it ended."""
        window_end, worst, worst_at = time.monotonic() + 0.1, 0.0, 0.0
        while True:
            started = time.monotonic()
            await asyncio.sleep(0.002)
            now = time.monotonic()
            if now - started - 0.002 > worst:
                worst, worst_at = now - started - 0.002, now
            if now >= window_end:
                say(f"#LAG {worst_at:.6f} {worst * 1000:.3f}")
                window_end, worst = now + 0.1, 0.0

    served = _serve.serve

    async def serve(*args: Any, **kwargs: Any) -> None:
        watcher = asyncio.get_running_loop().create_task(watch_the_loop())
        try:
            await served(*args, **kwargs)
        finally:
            watcher.cancel()

    _serve.serve = serve  # type: ignore[assignment]
    polled = File.apoll

    async def apoll(self: File, feed: Any) -> float:
        started, before = time.monotonic(), len(feed.pool)
        try:
            return await polled(self, feed)
        finally:
            after = len(feed.pool)
            if after != before:
                say(f"#CHANGE {started:.6f} {time.monotonic():.6f} {before} {after}")

    File.apoll = apoll  # type: ignore[method-assign]
    started_gc = [0.0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started_gc[0] = time.monotonic()
        elif info["generation"] == 2:
            took = (time.monotonic() - started_gc[0]) * 1000
            say(f"#GC {time.monotonic():.6f} {took:.1f} {info['collected']}")

    gc.callbacks.append(on_gc)
    sys.exit(main(["proxy", *argv]))


# -- the client ---------------------------------------------------------------------------


class Client:
    """A minimal HTTP/1.1 client over keep-alive connections (no library overhead)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.resent = 0  # requests sent again after a stale keep-alive connection

    async def get(self, path: str) -> tuple[int, bytes]:
        reused = bool(self.idle)
        if reused:
            reader, writer = self.idle.pop()
        else:
            reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        try:
            writer.write(f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError) as exc:
                stale = not isinstance(exc, asyncio.IncompleteReadError) or not exc.partial
                if not (reused and stale):
                    raise
                # the server closed this idle connection just before we used it: the
                # request never reached it (no byte came back), so send it again
                writer.close()
                self.resent += 1
                return await self.get(path)
            length, close = 0, False
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.lower() == b"content-length":
                    length = int(value)
                elif name.lower() == b"connection" and b"close" in value.lower():
                    close = True
            body = await reader.readexactly(length)
        except BaseException:
            writer.close()
            raise
        if close:
            writer.close()
        else:
            self.idle.append((reader, writer))
        return int(head[9:12]), body


@dataclass
class Sample:
    at: float  # scheduled time (monotonic)
    latency: float  # seconds
    body: bytes = b""
    ok: bool = True


@dataclass
class Run:
    algorithm: str
    samples: list[Sample] = field(default_factory=list)
    metrics: list[tuple[float, float]] = field(default_factory=list)  # (at, latency)
    lags: list[tuple[float, float]] = field(default_factory=list)  # (ended at, ms)
    gcs: list[tuple[float, float]] = field(default_factory=list)  # (at, ms) full collections
    changes: list[tuple[float, float, int, int]] = field(default_factory=list)
    writes: dict[str, float] = field(default_factory=dict)
    seen: dict[str, tuple[float, float, int, int]] = field(default_factory=dict)
    resent: int = 0
    marks: dict[str, float] = field(default_factory=dict)


async def traffic(run: Run, port: int, admin: int, rate: float, stop: asyncio.Event) -> None:
    proxied, scraper = Client(port), Client(admin)
    tasks: set[asyncio.Task[None]] = set()

    async def one(at: float, i: int) -> None:
        try:
            status, body = await proxied.get(f"/r{i}")
            ok = status == 200
            if not ok:
                body = f"status {status}: {body[:60]!r}".encode()
        except Exception as exc:
            status, body, ok = 0, type(exc).__name__.encode(), False
        run.samples.append(Sample(at, time.monotonic() - at, body, ok))

    async def scrape() -> None:
        while not stop.is_set():
            started = time.monotonic()
            with contextlib.suppress(Exception):
                await scraper.get("/metrics")
                run.metrics.append((started, time.monotonic() - started))
            await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - started)))

    scraping = asyncio.ensure_future(scrape())
    due, i = time.monotonic(), 0
    while not stop.is_set():
        due += 1 / rate
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        task = asyncio.ensure_future(one(due, i))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        i += 1
    await asyncio.gather(*tasks, scraping)
    run.resent = proxied.resent


def write_registry(path: str, urls: list[str]) -> None:
    """The file, atomically: JSON (a list of URLs) or TOML (inline tables with a
    weight, the heavier parse: tomllib alone takes about 60 ms for 10,000)."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        if path.endswith(".json"):
            json.dump({"upstreams": urls}, f)
        else:
            f.write("upstreams = [\n")
            f.writelines(f'  {{ url = "{url}", weight = 1 }},\n' for url in urls)
            f.write("]\n")
    os.replace(tmp, path)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_listening(port: int, proc: subprocess.Popen[Any], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def pin(cpu: int | None) -> list[str]:
    return ["taskset", "-c", str(cpu)] if cpu is not None and shutil.which("taskset") else []


def read_marks(proc: subprocess.Popen[str], run: Run, log: list[str]) -> None:
    assert proc.stderr is not None
    for line in proc.stderr:
        if line.startswith("#LAG "):
            _, at, worst = line.split()
            run.lags.append((float(at), float(worst)))
        elif line.startswith("#GC "):
            _, at, took, _collected = line.split()
            run.gcs.append((float(at), float(took)))
        elif line.startswith("#CHANGE "):
            _, start, end, before, after = line.split()
            run.changes.append((float(start), float(end), int(before), int(after)))
        else:
            log.append(line.rstrip())


def one_run(args: argparse.Namespace, algorithm: str, workdir: str, ports: list[int]) -> Run:
    run = Run(algorithm)
    registry = os.path.join(workdir, f"upstreams-{algorithm}.{args.format}")
    base = [f"http://127.0.0.1:{ports[i % len(ports)]}/b{i:05d}" for i in range(args.base)]
    extra = [f"http://127.0.0.1:{ports[i % len(ports)]}/u{i:05d}" for i in range(args.upstreams)]
    write_registry(registry, base)
    port, admin = free_port(), free_port()
    cmd = [
        *pin(0 if args.pin else None),
        sys.executable,
        HERE,
        "--serve-proxy",
        "--listen",
        f"127.0.0.1:{port}",
        "--admin",
        f"127.0.0.1:{admin}",
        "--discovery",
        f"file://{registry}",
        "--algorithm",
        algorithm,
    ]
    proxy = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    log: list[str] = []
    reader = threading.Thread(target=read_marks, args=(proxy, run, log), daemon=True)
    reader.start()
    try:
        wait_listening(port, proxy)
        wait_listening(admin, proxy)

        async def scenario() -> None:
            stop = asyncio.Event()
            load = asyncio.ensure_future(traffic(run, port, admin, args.rate, stop))
            await asyncio.sleep(args.settle)
            run.marks["before"] = time.monotonic()
            await asyncio.sleep(args.phase)
            for name, urls in (("adding", base + extra), ("removing", base)):
                count = len(run.changes)
                run.writes[name] = time.monotonic()
                await asyncio.get_running_loop().run_in_executor(
                    None, write_registry, registry, urls
                )
                while len(run.changes) == count:
                    await asyncio.sleep(0.05)
                    if time.monotonic() - run.writes[name] > 60:
                        raise RuntimeError(f"the pool did not follow the file ({name})")
                run.seen[name] = run.changes[count]
                await asyncio.sleep(args.phase)
            stop.set()
            await load

        # this process measures: a collection here would show as the proxy's latency
        gc.collect()
        gc.disable()
        try:
            asyncio.run(scenario())
        finally:
            gc.enable()
    finally:
        proxy.terminate()
        try:
            proxy.wait(15)
        except subprocess.TimeoutExpired:
            proxy.kill()
        reader.join(5)
    errors = [line for line in log if " ERROR " in line or "Traceback" in line]
    if errors:
        print("  proxy errors:", *errors[:5], sep="\n    ", file=sys.stderr)
    if args.proxy_log:
        with open(args.proxy_log, "a") as f:
            f.write("\n".join(log) + "\n")
    return run


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def report(run: Run, args: argparse.Namespace) -> None:
    print(
        f"\n{run.algorithm}: {args.base} members, +{args.upstreams:,} and back "
        f"({args.format.upper()} file), {args.rate:g} req/s, /metrics every second\n"
    )
    adding, removing = run.seen["adding"], run.seen["removing"]
    windows = {
        "before": (run.marks["before"], run.writes["adding"]),
        "adding": (adding[0], adding[1]),
        f"{args.base + args.upstreams:,} members": (adding[1] + 0.5, run.writes["removing"]),
        "removing": (removing[0], removing[1]),
        "after": (removing[1] + 0.5, removing[1] + args.phase),
    }
    print(
        "| phase | seconds | requests | errors | p50 ms | p99 ms | max ms "
        "| longest stall ms | full GCs (longest ms) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, (start, end) in windows.items():
        inside = [s for s in run.samples if start <= s.at < end]
        lat = [s.latency * 1000 for s in inside if s.ok]
        # a stall of w ms that ended at ``at`` overlaps the phase
        stall = max((w for at, w in run.lags if at > start and at - w / 1000 < end), default=0.0)
        gcs = [took for at, took in run.gcs if at > start and at - took / 1000 < end]
        print(
            f"| {name} | {end - start:.2f} | {len(inside)} | {sum(not s.ok for s in inside)} "
            f"| {pct(lat, 0.5):.2f} | {pct(lat, 0.99):.2f} | {max(lat, default=0):.2f} "
            f"| {stall:.1f} | {len(gcs)} ({max(gcs, default=0):.1f}) |"
        )
    for name, change in (("adding", adding), ("removing", removing)):
        written = run.writes[name]
        landed = next(
            (s.at + s.latency for s in run.samples if s.at >= written and s.body.startswith(b"u")),
            None,
        )
        first = f"; first request on a new member {landed - written:.2f} s" if landed else ""
        if name == "removing":
            last = max((s.at for s in run.samples if s.body.startswith(b"u")), default=written)
            first = f"; last request on a removed member {last - written:+.2f} s"
        print(
            f"\n{name}: file renamed -> change done {change[1] - written:.2f} s "
            f"(poll started {change[0] - written:.2f} s after the rename, "
            f"change {change[1] - change[0]:.2f} s, {change[2]:,} -> {change[3]:,} members)"
            f"{first}"
        )
    failed = sorted({s.body.decode(errors="replace") for s in run.samples if not s.ok})
    if failed:
        print(f"\nerrors: {failed[:5]}")
    if run.resent:
        print(f"\nrequests resent after the proxy closed an idle connection: {run.resent}")
    scrapes = [lat * 1000 for _, lat in run.metrics]
    print(
        f"\n/metrics: {len(scrapes)} fetches, median {pct(scrapes, 0.5):.0f} ms, "
        f"max {max(scrapes, default=0):.0f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--upstreams", type=int, default=10_000, help="members added, removed")
    parser.add_argument("--base", type=int, default=10, help="members before and after")
    parser.add_argument("--rate", type=float, default=300.0, help="proxied requests per second")
    parser.add_argument("--phase", type=float, default=4.0, help="seconds of each steady phase")
    parser.add_argument("--settle", type=float, default=2.0, help="warm-up seconds")
    parser.add_argument("--servers", type=int, default=2, help="uvicorn apps behind the pool")
    parser.add_argument(
        "--format", choices=["toml", "json"], default="toml", help="the registry file's format"
    )
    parser.add_argument("--algorithms", nargs="+", default=["round_robin", "least_connections"])
    parser.add_argument("--in-process", action="store_true", help="only the in-process part")
    parser.add_argument("--proxy-log", help="append the proxy's log lines to this file")
    parser.add_argument("--dump", help="write every sample and mark to this JSON file")
    parser.add_argument("--no-pin", dest="pin", action="store_false", help="no taskset")
    parser.add_argument("--serve-upstream", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--serve-proxy", action="store_true", help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args()
    if args.serve_upstream:
        serve_upstream(args.serve_upstream)
        return
    if args.serve_proxy:
        serve_proxy(rest)
        return
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    algorithms = ["round_robin", "least_connections", "least_response_time", "random"]
    in_process(args.upstreams, algorithms if args.in_process else args.algorithms)
    if args.in_process:
        return
    args.pin = args.pin and (os.cpu_count() or 1) >= 2
    if args.pin:  # the proxy on CPU 0; this client and the upstreams on CPU 1
        os.sched_setaffinity(0, {1})
    with tempfile.TemporaryDirectory() as workdir:
        ports = [free_port() for _ in range(args.servers)]
        servers = [
            subprocess.Popen(
                [*pin(1 if args.pin else None), sys.executable, HERE, "--serve-upstream", str(p)]
            )
            for p in ports
        ]
        try:
            for p, proc in zip(ports, servers, strict=True):
                wait_listening(p, proc)
            for algorithm in args.algorithms:
                run = one_run(args, algorithm, workdir, ports)
                report(run, args)
                if args.dump:
                    with open(f"{args.dump}.{algorithm}.json", "w") as f:
                        json.dump(
                            {
                                "samples": [(s.at, s.latency, s.ok) for s in run.samples],
                                "lags": run.lags,
                                "gcs": run.gcs,
                                "metrics": run.metrics,
                                "seen": run.seen,
                                "writes": run.writes,
                            },
                            f,
                        )
        finally:
            for proc in servers:
                proc.terminate()
                proc.wait(10)


if __name__ == "__main__":
    main()
