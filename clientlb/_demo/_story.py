"""The demo's story: six scripted phases over real replicas, told to a view.

Three primaries and a standby run as uvicorn servers on loopback ports; eight
clients send paced requests through one ``AsyncBalancingTransport`` built with
the library's defaults (the chosen algorithm aside). The phases happen to the
replicas, never to the pool: whatever the pool does about them it decides alone.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import anyio
import anyio.to_thread

from .._admin import admin_app
from .._attempts import ATTEMPTS_EXTENSION
from .._core import ALGORITHMS, MemberState, Pool
from .._httpx import httpx
from .._metrics import Metrics
from .._tls import default_context
from .._transports import AsyncBalancingTransport
from ._record import Recorder, quantile
from ._servers import LoopbackServer, Replica

CONCURRENCY = 8
#: Requests per second, all clients together.
RATE = 200
#: Seconds primary-3 takes to answer in the "slow replica" phase.
SLOW = 0.05
#: Seconds between two frames of the live view.
FRAME = 0.25
STANDBY = "standby"
PRIMARIES = ("primary-1", "primary-2", "primary-3")
HASH_HEADER = "x-demo-client"


class Fleet:
    """The replicas: three primaries and a standby."""

    def __init__(self) -> None:
        self.primaries = [Replica(name) for name in PRIMARIES]
        self.standby = Replica(STANDBY)
        self.everyone = [*self.primaries, self.standby]
        self.names = {r.url: r.name for r in self.everyone}
        self.listening: float | None = None  # when a restarted primary first listened

    async def restart(self, replica: Replica) -> None:
        await replica.astart()
        started = time.monotonic()  # after start() returned: it accepts connections
        self.listening = started if self.listening is None else min(self.listening, started)


async def _steady(fleet: Fleet) -> None:
    pass


async def _slow(fleet: Fleet) -> None:
    fleet.primaries[2].delay = SLOW


async def _crash(fleet: Fleet) -> None:
    await fleet.primaries[0].astop()


async def _failover(fleet: Fleet) -> None:
    async with anyio.create_task_group() as tg:
        for replica in fleet.primaries[1:]:
            tg.start_soon(replica.astop)


async def _recover(fleet: Fleet) -> None:
    fleet.primaries[2].delay = 0.0
    async with anyio.create_task_group() as tg:
        for replica in fleet.primaries:
            tg.start_soon(fleet.restart, replica)


@dataclass(frozen=True)
class Phase:
    """One step of the story: what happens, and what to watch for."""

    title: str
    happens: str
    watch: str
    act: Callable[[Fleet], Awaitable[None]]


PHASES = (
    Phase(
        "steady traffic",
        "three primaries answer in about a millisecond; the standby waits",
        "the primaries take all the traffic, shared as the algorithm sees fit "
        "(least_response_time favours the fastest); the standby gets none",
        _steady,
    ),
    Phase(
        "a slow replica",
        f"primary-3 now takes {SLOW * 1000:.0f} ms to answer",
        "its p50 rises; load-aware algorithms send it less, round_robin does not",
        _slow,
    ),
    Phase(
        "a crash",
        "primary-1 stops: its connections are refused (primary-3 is still slow)",
        "a request that picks it is retried on another primary, so the clients see "
        "no error; after 5 refused connections in a row it is ejected (the default), "
        "and load-aware algorithms avoid it sooner (a failure counts as a slow answer)",
        _crash,
    ),
    Phase(
        "failover to the standby",
        "primary-2 and primary-3 stop too: no primary is left",
        "the standby takes all the traffic within milliseconds; still no client error",
        _failover,
    ),
    Phase(
        "recovery",
        "the three primaries listen again, primary-3 at full speed",
        "connect probes find each one listening within about 0.5 s and re-admit it",
        _recover,
    ),
    Phase(
        "fail-back",
        "nothing changes: the story lets the traffic settle",
        "the standby is idle again; the primaries take all the traffic as in phase 1",
        _steady,
    ),
)
CRASH, FAILOVER, RECOVERY = 2, 3, 4


@dataclass(frozen=True)
class Row:
    """One upstream as a frame shows it."""

    name: str
    tier: str
    state: str
    in_flight: int
    requests: int
    share: float | None
    p50: float | None
    p99: float | None
    ewma: float | None


@dataclass(frozen=True)
class Frame:
    """The live view's picture at one moment."""

    elapsed: float
    total: float
    phase: int
    rows: list[Row]
    rate: float
    errors: int


class View(Protocol):
    """Where the story is told: the live terminal view, plain lines, or nowhere."""

    def begin(self, intro: list[str]) -> None: ...
    def announce(self, number: int, phase: Phase, at: float) -> None: ...
    def event(self, at: float, text: str) -> None: ...
    def frame(self, frame: Frame, final: bool) -> None: ...
    def end(self) -> None: ...


@dataclass(frozen=True)
class Summary:
    """What the story measured."""

    algorithm: str
    duration: float
    rows: list[dict[str, Any]]  # per upstream: name, tier, requests, share, failures, ejections
    answers: int
    errors: int
    p50: float | None
    p99: float | None
    slow_share: float | None  # primary-3's share while it was slow
    crash_retried: int  # requests retried past primary-1 once it crashed
    crash_window: float | None  # from the first of them sent to the last answered
    failover_retried: int  # requests retried past the stopped primaries
    failover_window: float | None  # from the first of them sent to the last answered
    failover_slowest: float  # the longest request of the failover phase
    fail_back: float | None  # primaries listening again to a primary's first answer
    standby_last: float | None  # primaries listening again to the standby's last answer


def settings_note(algorithm: str | None) -> list[str]:
    """The pool's settings, said out loud: defaults, and why any is not. ``None``:
    the note for every algorithm (``--compare``)."""
    lines = [
        "settings: the library's defaults - OutlierDetection() ejects an upstream after "
        "5 failures in a row and probes one that refused connections (back within about "
        "0.5 s of listening); RetryPolicy() retries a refused connection elsewhere"
    ]
    if algorithm is None or ALGORITHMS[algorithm].hashes:
        which = algorithm or "each hashing algorithm"
        lines.append(
            f"  + hash_on='header:{HASH_HEADER}': {which} needs a key, and each "
            "client sends its own name in that header"
        )
    return lines


async def tell(algorithm: str, duration: float, view: View, status_page: bool = True) -> Summary:
    """Run the story once, ``duration`` seconds in all, and measure it."""
    fleet = Fleet()
    step = duration / len(PHASES)
    recorder = Recorder(len(PHASES), window=min(1.0, step))
    async with anyio.create_task_group() as tg:
        for replica in fleet.everyone:
            tg.start_soon(replica.astart)
    await _warm_up(fleet)
    metrics = Metrics()  # the status page's latency quantiles and sparklines
    transport = AsyncBalancingTransport(
        [r.url for r in fleet.primaries],
        standbys=[fleet.standby.url],
        algorithm=algorithm,
        hash_on=f"header:{HASH_HEADER}" if ALGORITHMS[algorithm].hashes else None,
        metrics=metrics,
    )
    pool = transport.pool
    admin = LoopbackServer(admin_app(transport, metrics=metrics)) if status_page else None
    began = time.monotonic()

    def on_change(event: str, state: MemberState) -> None:
        name = fleet.names.get(state.url, state.url)
        view.event(time.monotonic() - began, f"{name}: {event}")

    try:
        if admin is not None:
            await admin.astart()
        intro = [
            f"clientlb demo: {algorithm}, {CONCURRENCY} clients, {RATE} requests/s, "
            f"{duration:g} s in {len(PHASES)} phases",
            "  primaries: " + ", ".join(f"{r.name} {r.url}" for r in fleet.primaries),
            f"  standby:   {fleet.standby.name} {fleet.standby.url}",
            *settings_note(algorithm),
        ]
        if admin is not None:
            intro.append(f"status page: {admin.url}/status  (JSON: {admin.url}/stats)")
        view.begin(intro)
        pool.subscribe(on_change)
        began = time.monotonic()
        async with (
            httpx.AsyncClient(transport=transport, base_url="http://demo") as client,
            anyio.create_task_group() as tg,
        ):
            for number in range(CONCURRENCY):
                tg.start_soon(_client, client, number, recorder)
            tg.start_soon(_frames, view, fleet, pool, recorder, began, duration)
            for number, phase in enumerate(PHASES):
                recorder.phase = number
                view.announce(number, phase, time.monotonic() - began)
                await phase.act(fleet)
                await _sleep_until(began + (number + 1) * step)
            view.frame(_frame(fleet, pool, recorder, began, duration), final=True)
            tg.cancel_scope.cancel()
    finally:
        pool.unsubscribe(on_change)
        view.end()
        async with anyio.create_task_group() as tg:
            for server in [*fleet.everyone, *([admin] if admin else [])]:
                tg.start_soon(server.astop)
    return _summary(algorithm, duration, fleet, pool.snapshot(), recorder)


async def _warm_up(fleet: Fleet) -> None:
    """Warm what a running service has warm: the process's first requests run
    cold code paths, and the first through a transport builds the process's TLS
    context (tens of ms, even for http:// upstreams), which would be timed as the
    first replica's latency and skew its estimate for seconds."""
    await anyio.to_thread.run_sync(default_context)
    async with httpx.AsyncClient() as client:
        for replica in fleet.everyone:
            await client.get(replica.url)


async def _sleep_until(moment: float) -> None:
    """Sleep until ``time.monotonic()`` reaches ``moment``."""
    await anyio.sleep(max(0.0, moment - time.monotonic()))


async def _client(client: httpx.AsyncClient, number: int, recorder: Recorder) -> None:
    """One client: a request every ``CONCURRENCY / RATE`` seconds, or at once when late."""
    interval = CONCURRENCY / RATE
    headers = {HASH_HEADER: f"client-{number}"}
    await anyio.sleep(interval * number / CONCURRENCY)  # spread the clients out
    due = time.monotonic()
    while True:
        start = time.perf_counter()
        try:
            response = await client.get("/", headers=headers)
        except httpx.HTTPError:
            recorder.error()
        else:
            if response.status_code == 200:
                attempts = len(response.extensions.get(ATTEMPTS_EXTENSION, ()))
                latency = time.perf_counter() - start
                recorder.answer(response.headers["x-replica"], latency, attempts)
            else:
                recorder.error()
        due = max(due + interval, time.monotonic())
        await _sleep_until(due)


async def _frames(
    view: View, fleet: Fleet, pool: Pool, recorder: Recorder, began: float, total: float
) -> None:
    while True:
        await anyio.sleep(FRAME)
        view.frame(_frame(fleet, pool, recorder, began, total), final=False)


def _frame(fleet: Fleet, pool: Pool, recorder: Recorder, began: float, total: float) -> Frame:
    latencies, errors, span = recorder.window_view()
    answered = sum(map(len, latencies.values()))
    rows = []
    for up in pool.snapshot()["upstreams"]:
        name = fleet.names.get(up["url"], up["url"])
        mine = latencies.get(name, [])
        rows.append(
            Row(
                name,
                up["tier"],
                up["state"],
                up["in_flight"],
                up["requests"],
                len(mine) / answered if answered else None,
                quantile(mine, 0.5),
                quantile(mine, 0.99),
                up["ewma_latency"],
            )
        )
    rows.sort(key=lambda r: r.name)
    elapsed = min(total, time.monotonic() - began)
    return Frame(elapsed, total, recorder.phase, rows, (answered + errors) / span, recorder.errors)


def _summary(
    algorithm: str, duration: float, fleet: Fleet, snapshot: dict[str, Any], recorder: Recorder
) -> Summary:
    answers = sum(recorder.served.values())
    rows = []
    for up in snapshot["upstreams"]:
        name = fleet.names[up["url"]]
        rows.append(
            {
                "name": name,
                "tier": up["tier"],
                "requests": up["requests"],
                "share": recorder.served[name] / answers if answers else 0.0,
                "failures": up["failures"],
                "ejections": up["ejections"],
            }
        )
    rows.sort(key=lambda r: r["name"])
    slow = recorder.phases[1].served
    crash, failover = recorder.phases[CRASH], recorder.phases[FAILOVER]
    back = range(RECOVERY, len(PHASES))
    listening = fleet.listening
    first_primary = recorder.first_answer(PRIMARIES, back)
    standby_last = recorder.last_answer([STANDBY], back)
    return Summary(
        algorithm,
        duration,
        rows,
        answers,
        recorder.errors,
        quantile(recorder.latencies, 0.5),
        quantile(recorder.latencies, 0.99),
        slow["primary-3"] / sum(slow.values()) if slow else None,
        crash.retried,
        _span(crash.first_retry, crash.last_retry),
        failover.retried,
        _span(failover.first_retry, failover.last_retry),
        failover.slowest,
        None if first_primary is None or listening is None else first_primary - listening,
        None if standby_last is None or listening is None else max(0.0, standby_last - listening),
    )


def _span(start: float | None, end: float | None) -> float | None:
    return None if start is None or end is None else end - start
