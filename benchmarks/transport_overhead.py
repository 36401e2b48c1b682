"""What the balancing transport costs a client: throughput through it vs straight.

Two replicas run as separate uvicorn processes (httptools when installed) on
ephemeral loopback ports, so the servers do not share the client's GIL. Each
scenario measures three sides in alternating rounds (A, B, C, A, B, C, ...):

* through - the client through ``AsyncBalancingTransport`` / ``BalancingTransport``
  over the two replicas (round robin);
* direct - the same client sent straight to one replica;
* both - plain clients straight to the two replicas, one request each in turn:
  the same traffic as ``through`` without the transport, a control that tells
  the transport's own cost from the cost of spreading requests over two servers.

It reports the median requests per second of each side and the ratio of
``through`` to ``direct`` (the target: at least 0.95) and to ``both``, each the
median of the rounds' own ratios. Every side
uses the same connection limits, so none opens and closes connections the others
keep. Last, it times the transport's own cost per request with an in-memory inner
transport, which the network does not blur, without and with a ``clientlb.Metrics``.

    python benchmarks/transport_overhead.py [--rounds 11] [--seconds 1]
    python benchmarks/transport_overhead.py --inner shared  # one pool given as inner=
    python benchmarks/transport_overhead.py --profile   # where the transport's time goes
    python benchmarks/transport_overhead.py --library httpx2  # clientlb.httpx2 vs httpx2

It always exits 0: the figures are indicative, the more so on a shared machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import functools
import importlib.util
import itertools
import pstats
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any


def _library() -> str:
    """``--library``, read before the module's classes are built on it."""
    early = argparse.ArgumentParser(add_help=False)
    early.add_argument("--library", choices=["httpx", "httpx2"], default="httpx")
    name: str = early.parse_known_args()[0].library
    return name


#: httpx and clientlb's transports, or httpx2 and clientlb.httpx2's (--library):
#: every side of a run uses the same client library.
LIBRARY = _library()
httpx: Any = importlib.import_module(LIBRARY)
clientlb: Any = importlib.import_module("clientlb" if LIBRARY == "httpx" else "clientlb.httpx2")

TARGET = 0.95
#: The same for every client. At concurrency 32 the figures depend on how many
#: connections each pool holds: httpcore's pool costs every request time in
#: proportion to them (see --inner).
LIMITS = httpx.Limits(max_connections=64, max_keepalive_connections=64)


def warm_up(concurrency: int, seconds: float) -> float:
    return 1.5 if concurrency > 1 else seconds / 3


#: The sides of a scenario, in their order within each round.
SIDES = ("through", "direct", "both")

SERVER = r"""
import socket, sys, uvicorn

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})

# IPPROTO_TCP named so that asyncio sets TCP_NODELAY on accepted connections
sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
sock.bind(("127.0.0.1", 0))
sock.listen(1024)
print(sock.getsockname()[1], flush=True)
config = uvicorn.Config(app, http=sys.argv[1], log_level="warning", access_log=False,
                        lifespan="off")
uvicorn.Server(config).run(sockets=[sock])
"""


class Replica:
    """One uvicorn server in its own process, on an ephemeral loopback port."""

    def __init__(self, http: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", SERVER, http], stdout=subprocess.PIPE, text=True
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline().strip()
        if not line.isdigit():
            self.stop()
            raise RuntimeError("a replica did not start")
        port = int(line)
        self.url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 10
        while True:  # until it accepts connections
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    self.stop()
                    raise RuntimeError("a replica did not start") from None
                time.sleep(0.01)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()


@contextlib.contextmanager
def replicas(count: int, http: str) -> Iterator[list[Replica]]:
    started: list[Replica] = []
    try:
        for _ in range(count):
            started.append(Replica(http))
        yield started
    finally:
        for r in started:
            r.stop()


# -- one round ------------------------------------------------------------------------

AsyncGet = Callable[[str], Awaitable[httpx.Response]]
SyncGet = Callable[[str], httpx.Response]


def alternate(*methods: Any) -> Callable[[], Any]:
    """The next of ``methods`` at each call: requests alternate between clients."""
    return functools.partial(next, itertools.cycle(methods))


async def async_round(get: Callable[[], AsyncGet], concurrency: int, seconds: float) -> float:
    """Requests per second of ``concurrency`` tasks sending GETs for ``seconds``;
    ``get()`` gives the method that sends the next request."""
    done = 0
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            r = await get()("/")
            if r.status_code != 200:
                raise RuntimeError(f"status {r.status_code}")
            done += 1

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done / (time.perf_counter() - start)


def sync_round(get: Callable[[], SyncGet], concurrency: int, seconds: float) -> float:
    """Requests per second of ``concurrency`` threads sending GETs for ``seconds``."""
    deadline = time.perf_counter() + seconds
    lock = threading.Lock()
    done = 0

    def worker() -> None:
        nonlocal done
        mine = 0
        while time.perf_counter() < deadline:
            r = get()("/")
            if r.status_code != 200:
                raise RuntimeError(f"status {r.status_code}")
            mine += 1
        with lock:
            done += mine

    start = time.perf_counter()
    if concurrency == 1:
        worker()
    else:
        with ThreadPoolExecutor(concurrency) as pool:
            for future in [pool.submit(worker) for _ in range(concurrency)]:
                future.result()
    return done / (time.perf_counter() - start)


# -- scenarios ------------------------------------------------------------------------


@dataclass
class Result:
    scenario: str
    rates: dict[str, list[float]]

    def median(self, side: str) -> float:
        return statistics.median(self.rates[side])

    def ratio(self, baseline: str = "direct") -> float:
        """The median of the rounds' own ratios: each round's sides ran one right
        after the other, so load that comes and goes between rounds cancels out."""
        pairs = zip(self.rates["through"], self.rates[baseline], strict=True)
        return statistics.median(through / other for through, other in pairs)


def run_async(
    urls: list[str], concurrency: int, rounds: int, seconds: float, per_upstream: bool = True
) -> Result:
    async def measure() -> Result:
        inner = None if per_upstream else httpx.AsyncHTTPTransport(limits=LIMITS)
        transport = clientlb.AsyncBalancingTransport(urls, inner=inner)
        async with (
            httpx.AsyncClient(transport=transport, base_url="http://svc") as through,
            httpx.AsyncClient(base_url=urls[0], limits=LIMITS) as first,
            httpx.AsyncClient(base_url=urls[1], limits=LIMITS) as second,
        ):
            getters = {
                "through": alternate(through.get),
                "direct": alternate(first.get),
                "both": alternate(first.get, second.get),
            }
            rates: dict[str, list[float]] = {side: [] for side in SIDES}
            for side in SIDES:  # warm-up: connections opened, code paths hot
                await async_round(getters[side], concurrency, warm_up(concurrency, seconds))
            for _ in range(rounds):
                for side in SIDES:
                    rates[side].append(await async_round(getters[side], concurrency, seconds))
        return Result(f"async, concurrency {concurrency}", rates)

    return asyncio.run(measure())


def run_sync(
    urls: list[str], concurrency: int, rounds: int, seconds: float, per_upstream: bool = True
) -> Result:
    inner = None if per_upstream else httpx.HTTPTransport(limits=LIMITS)
    transport = clientlb.BalancingTransport(urls, inner=inner)
    with (
        httpx.Client(transport=transport, base_url="http://svc") as through,
        httpx.Client(base_url=urls[0], limits=LIMITS) as first,
        httpx.Client(base_url=urls[1], limits=LIMITS) as second,
    ):
        getters = {
            "through": alternate(through.get),
            "direct": alternate(first.get),
            "both": alternate(first.get, second.get),
        }
        rates: dict[str, list[float]] = {side: [] for side in SIDES}
        for side in SIDES:  # warm-up
            sync_round(getters[side], concurrency, warm_up(concurrency, seconds))
        for _ in range(rounds):
            for side in SIDES:
                rates[side].append(sync_round(getters[side], concurrency, seconds))
    label = "sync, 1 thread" if concurrency == 1 else f"sync, {concurrency} threads"
    return Result(label, rates)


# -- the transport's own cost, without a network ---------------------------------------------


class _InMemory(httpx.BaseTransport, httpx.AsyncBaseTransport):
    """An inner transport that answers at once: what remains is the client's cost."""

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-length": "2"}, stream=httpx.ByteStream(b"ok"))

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return self.handle_request(request)


def own_cost(requests: int = 3000, rounds: int = 7) -> dict[str, tuple[float, float, float]]:
    """Microseconds per GET of a client on an in-memory transport: straight,
    through the balancing transport, and through it with a ``clientlb.Metrics``
    counting every request (medians of alternating rounds)."""
    upstreams = ["http://127.0.0.1:8001", "http://127.0.0.1:8002"]
    inner = _InMemory()

    def timed_sync(client: httpx.Client) -> float:
        start = time.perf_counter()
        for _ in range(requests):
            client.get("/users/1?x=1")
        return (time.perf_counter() - start) / requests * 1e6

    async def timed_async(client: httpx.AsyncClient) -> float:
        start = time.perf_counter()
        for _ in range(requests):
            await client.get("/users/1?x=1")
        return (time.perf_counter() - start) / requests * 1e6

    def medians(rows: list[tuple[float, float, float]]) -> tuple[float, float, float]:
        return (
            statistics.median(r[0] for r in rows),
            statistics.median(r[1] for r in rows),
            statistics.median(r[2] for r in rows),
        )

    costs: dict[str, tuple[float, float, float]] = {}
    sync_metrics = clientlb.Metrics()
    with (
        httpx.Client(transport=inner, base_url="http://svc") as plain,
        httpx.Client(
            transport=clientlb.BalancingTransport(upstreams, inner=inner), base_url="http://svc"
        ) as through,
        httpx.Client(
            transport=clientlb.BalancingTransport(upstreams, inner=inner, metrics=sync_metrics),
            base_url="http://svc",
        ) as counted,
    ):
        costs["sync"] = medians(
            [(timed_sync(plain), timed_sync(through), timed_sync(counted)) for _ in range(rounds)]
        )

    async def measure() -> None:
        async_metrics = clientlb.Metrics()
        async with (
            httpx.AsyncClient(transport=inner, base_url="http://svc") as plain,
            httpx.AsyncClient(
                transport=clientlb.AsyncBalancingTransport(upstreams, inner=inner),
                base_url="http://svc",
            ) as through,
            httpx.AsyncClient(
                transport=clientlb.AsyncBalancingTransport(
                    upstreams, inner=inner, metrics=async_metrics
                ),
                base_url="http://svc",
            ) as counted,
        ):
            costs["async"] = medians(
                [
                    (
                        await timed_async(plain),
                        await timed_async(through),
                        await timed_async(counted),
                    )
                    for _ in range(rounds)
                ]
            )

    asyncio.run(measure())
    return costs


def tracing_cost(requests: int = 3000, rounds: int = 5) -> dict[str, float]:
    """Microseconds per sync GET through the transport on an in-memory inner
    transport: as is, with the candidates asked for (``clientlb.explain``), and
    each request inside a recording OpenTelemetry span (the SDK, spans kept in
    memory and dropped), next to a plain client in the same spans: the
    difference is what annotating the span costs (medians of alternating rounds)."""
    upstreams = ["http://127.0.0.1:8001", "http://127.0.0.1:8002"]
    inner = _InMemory()
    explain = {"clientlb.explain": True}
    sides: dict[str, Callable[[], Any]] = {}
    plain = httpx.Client(transport=inner, base_url="http://svc")
    through = httpx.Client(
        transport=clientlb.BalancingTransport(upstreams, inner=inner), base_url="http://svc"
    )
    sides["plain client"] = lambda: plain.get("/users/1")
    sides["through, tracing off"] = lambda: through.get("/users/1")
    sides["through, candidates asked for"] = lambda: through.get("/users/1", extensions=explain)
    try:
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    except ImportError:
        print("  (opentelemetry-sdk is not installed: no span figures)")
    else:
        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        tracer = provider.get_tracer("bench")

        def spanned(client: httpx.Client) -> Callable[[], Any]:
            def get() -> Any:
                with tracer.start_as_current_span("request"):
                    client.get("/users/1")
                exporter.clear()

            return get

        sides["plain client, in a span"] = spanned(plain)
        sides["through, in a recording span"] = spanned(through)
    timings: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(rounds):
        for name, get in sides.items():
            start = time.perf_counter()
            for _ in range(requests):
                get()
            timings[name].append((time.perf_counter() - start) / requests * 1e6)
    plain.close()
    through.close()
    return {name: statistics.median(values) for name, values in timings.items()}


# -- profile and report -------------------------------------------------------------------


def new_upstream_cost(builds: int = 15) -> tuple[float, float]:
    """Milliseconds to make the inner transport of an upstream seen for the first
    time (paid by its first request): a plain ``httpx.HTTPTransport()``, which
    loads the CA bundle into a context of its own, and the balancing transport's
    factory, which shares one context among every upstream (median of ``builds``)."""
    transport = clientlb.BalancingTransport(["http://127.0.0.1:1"])
    transport._inners.get(transport.pool.members[0].upstream)  # the shared context, once
    plain, shared = [], []
    for _ in range(builds):
        started = time.perf_counter()
        httpx.HTTPTransport().close()
        plain.append(time.perf_counter() - started)
        started = time.perf_counter()
        transport._inners._factory().close()
        shared.append(time.perf_counter() - started)
    transport.close()
    return statistics.median(plain) * 1e3, statistics.median(shared) * 1e3


def profile(urls: list[str], seconds: float) -> None:
    """Profile the sync client through the transport, one thread, and print where
    the time goes (the transport's own functions last)."""
    transport = clientlb.BalancingTransport(urls, inner=httpx.HTTPTransport(limits=LIMITS))
    with httpx.Client(transport=transport, base_url="http://svc") as client:
        sync_round(alternate(client.get), 1, 0.3)
        profiler = cProfile.Profile()
        profiler.enable()
        rate = sync_round(alternate(client.get), 1, seconds)
        profiler.disable()
    print(f"{rate:,.0f} requests/s under the profiler")
    pstats.Stats(profiler).strip_dirs().sort_stats("tottime").print_stats(20)
    pstats.Stats(profiler).sort_stats("cumulative").print_stats(r"clientlb[/\\]", 20)


def table(results: list[Result]) -> str:
    def verdict(ratio: float) -> str:
        return f"{ratio:.3f} {'PASS' if ratio >= TARGET else 'MISS'}"

    lines = [
        "| scenario | through, 2 replicas | direct, 1 replica | ratio (target >= "
        f"{TARGET}) | direct, both in turn | ratio to both |",
        "|---|---:|---:|---|---:|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.scenario} | {r.median('through'):,.0f} | {r.median('direct'):,.0f} | "
            f"{verdict(r.ratio())} | {r.median('both'):,.0f} | {verdict(r.ratio('both'))} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=11, help="measured rounds per side")
    parser.add_argument("--seconds", type=float, default=1.0, help="length of one round")
    parser.add_argument("--profile", action="store_true", help="profile instead of measuring")
    parser.add_argument(
        "--inner",
        choices=["shared", "per-upstream"],
        default="per-upstream",
        help="the balancing transport's inner transport: one pool per upstream (the "
        "transport's default) or one shared pool given as inner=",
    )
    parser.add_argument(
        "--library",
        choices=["httpx", "httpx2"],
        default="httpx",
        help="the client library of every side (httpx2: clientlb.httpx2's transports)",
    )
    args = parser.parse_args()

    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    with replicas(2, http) as servers:
        urls = [r.url for r in servers]
        if args.profile:
            profile(urls, 3.0)
            return 0
        print(
            f"2 replicas (uvicorn, {http}, one process each); {args.rounds} rounds of "
            f"{args.seconds:g} s per side, alternating; median requests/s; inner "
            f"transport: {args.inner}; {LIBRARY} {httpx.__version__}",
            flush=True,
        )
        per_upstream = args.inner == "per-upstream"
        results = []
        for concurrency in (1, 32):
            results.append(run_async(urls, concurrency, args.rounds, args.seconds, per_upstream))
            print(f"  measured: {results[-1].scenario}", flush=True)
        for concurrency in (1, 8):
            results.append(run_sync(urls, concurrency, args.rounds, args.seconds, per_upstream))
            print(f"  measured: {results[-1].scenario}", flush=True)
    print(table(results))
    print("\nThe transport's own cost, on an in-memory inner transport (no network):")
    for flavour, (plain, through, counted) in own_cost().items():
        print(
            f"  {flavour:5}: {plain:5.0f} us per GET for the client alone, {through:5.0f} us "
            f"through the transport: +{through - plain:.0f} us; with metrics= "
            f"{counted:5.0f} us: +{counted - plain:.0f} us"
        )
    print("\nDecision records and tracing, sync, in-memory inner transport:")
    for name, micros in tracing_cost().items():
        print(f"  {name:32} {micros:6.1f} us per GET")
    plain_ms, shared_ms = new_upstream_cost()
    print(
        f"\nA new upstream's inner transport: {plain_ms:.1f} ms as httpx.HTTPTransport(), "
        f"{shared_ms:.3f} ms with the shared SSL context ({plain_ms / shared_ms:.0f}x less)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
