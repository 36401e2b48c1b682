"""Fail-back: a primary killed and restarted under steady traffic.

A primary and a standby run as uvicorn servers, each in a process of its own on
a loopback port. The client is an ``httpx.AsyncClient`` over
``clientlb.AsyncBalancingTransport([primary], standbys=[standby])`` with the
defaults a user gets, sending ``GET /`` open loop at ``--rate`` (150 req/s).
Every cycle kills the primary (SIGKILL), leaves it dead for an outage, and
starts it again on the same port; the primary's process says when it listens.

Per cycle it measures:

* **failover** - from the kill to the first request answered by the standby;
* **fail-back** - from "the primary listens again" to the first request the
  primary answers (what the probes shorten: without them the primary waits
  out its ejection, 10 s and growing with repeat ejections);
* **errors** - requests that got no 200 (the target is 0).

The same story runs three times in one go, side by side: the transport with
the default connect probes, the transport with them off
(``OutlierDetection(probe_after=None)``, the baseline), and ``clientlb proxy``
(the CLI, defaults) between a plain httpx client and the replicas. Outages are
``--outages`` seconds (1, 3 and 6 by default).

    python benchmarks/failback.py [--rate 150] [--outages 1,3,6]

About 100 s with the defaults.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import httpx

import clientlb

#: One replica: binds, says so, then serves ``{"replica": NAME}`` for anything.
SERVER = r"""
import socket, sys
import uvicorn

port, name = int(sys.argv[1]), sys.argv[2].encode()
body = b'{"replica": "' + name + b'"}'


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


sock = socket.socket()
sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
sock.bind(("127.0.0.1", port))
sock.listen(512)
print("listening", flush=True)
uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off")).run(sockets=[sock])
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Replica:
    """A replica process that can be killed and started again on its port."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.port = free_port()
        self.proc: subprocess.Popen[str] | None = None
        self.listening_at = 0.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SERVER, str(self.port), self.name],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        self.listening_at = time.monotonic()
        if line.strip() != "listening":
            raise RuntimeError(f"{self.name} did not start")

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            if self.proc.stdout is not None:
                self.proc.stdout.close()
            self.proc = None


@contextlib.contextmanager
def replicas() -> Iterator[tuple[Replica, Replica]]:
    primary, standby = Replica("primary"), Replica("standby")
    primary.start()
    standby.start()
    try:
        yield primary, standby
    finally:
        primary.kill()
        standby.kill()


@dataclass
class Cycle:
    outage: float
    killed_at: float = 0.0
    restarted_at: float = 0.0
    failover: float | None = None
    failback: float | None = None


@dataclass
class Run:
    label: str
    cycles: list[Cycle] = field(default_factory=list)
    errors: int = 0
    requests: int = 0
    latencies: list[float] = field(default_factory=list)


@contextlib.asynccontextmanager
async def balanced(
    primary: Replica, standby: Replica, outlier: clientlb.OutlierDetection | None
) -> AsyncIterator[httpx.AsyncClient]:
    """A client over the transport with ``outlier``, or (``None``) a plain client
    through ``clientlb proxy`` run with its defaults."""
    if outlier is not None:
        transport = clientlb.AsyncBalancingTransport(
            [primary.url], standbys=[standby.url], outlier=outlier
        )
        async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
            yield client
        return
    command = [sys.executable, "-m", "clientlb", "proxy", "--listen", "127.0.0.1:0"]
    command += ["--upstream", primary.url, "--standby", standby.url]
    proxy = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    try:
        assert proxy.stderr is not None
        for line in proxy.stderr:
            found = re.search(r"listening on (http://[\d.:]+)", line)
            if found:
                break
        else:
            raise RuntimeError("clientlb proxy did not start")
        stderr = proxy.stderr
        threading.Thread(target=stderr.read, daemon=True).start()  # never let it fill
        async with httpx.AsyncClient(base_url=found.group(1)) as client:
            yield client
    finally:
        proxy.terminate()
        proxy.wait()


async def story(
    label: str, outlier: clientlb.OutlierDetection | None, outages: list[float], rate: float
) -> Run:
    run = Run(label)
    with replicas() as (primary, standby):
        async with balanced(primary, standby, outlier) as client:
            answered: list[tuple[float, str]] = []  # (sent at, replica)

            async def one(sent: float) -> None:
                run.requests += 1
                try:
                    response = await client.get("/")
                except httpx.HTTPError:
                    run.errors += 1
                    return
                run.latencies.append(time.monotonic() - sent)
                if response.status_code != 200:
                    run.errors += 1
                    return
                answered.append((sent, response.json()["replica"]))

            async def load(stop: asyncio.Event) -> None:
                start = time.monotonic()
                tasks: set[asyncio.Task[None]] = set()
                i = 0
                while not stop.is_set():
                    due = start + i / rate
                    await asyncio.sleep(max(0.0, due - time.monotonic()))
                    task = asyncio.create_task(one(time.monotonic()))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                    i += 1
                await asyncio.gather(*tasks)

            stop = asyncio.Event()
            traffic = asyncio.create_task(load(stop))
            await asyncio.sleep(1.0)
            for outage in outages:
                cycle = Cycle(outage)
                cycle.killed_at = time.monotonic()
                primary.kill()
                await asyncio.sleep(outage)
                await asyncio.to_thread(primary.start)
                cycle.restarted_at = primary.listening_at
                deadline = time.monotonic() + 15.0
                while time.monotonic() < deadline:
                    if any(at >= cycle.restarted_at and who == "primary" for at, who in answered):
                        break
                    await asyncio.sleep(0.01)
                standby_after = [
                    at for at, who in answered if who == "standby" and at >= cycle.killed_at
                ]
                if standby_after:
                    cycle.failover = min(standby_after) - cycle.killed_at
                back = [at for at, who in answered if who == "primary" and at >= cycle.restarted_at]
                if back:
                    cycle.failback = min(back) - cycle.restarted_at
                run.cycles.append(cycle)
                await asyncio.sleep(1.0)
            stop.set()
            await traffic
    return run


def ms(value: float | None) -> str:
    return "never (15 s)" if value is None else f"{value * 1000:,.0f} ms"


def report(runs: list[Run]) -> None:
    print()
    print("| run | outage | failover | fail-back (primary listens -> serves) |")
    print("|---|---|---|---|")
    for run in runs:
        for cycle in run.cycles:
            times = f"{ms(cycle.failover)} | {ms(cycle.failback)}"
            print(f"| {run.label} | {cycle.outage:g} s | {times} |")
    print()
    print("| run | requests | errors | p50 | p99 |")
    print("|---|---|---|---|---|")
    for run in runs:
        ordered = sorted(run.latencies)
        p50 = ordered[len(ordered) // 2] if ordered else 0.0
        p99 = ordered[int(len(ordered) * 0.99)] if ordered else 0.0
        print(
            f"| {run.label} | {run.requests:,} | {run.errors} | "
            f"{p50 * 1000:.1f} ms | {p99 * 1000:.1f} ms |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=150.0, help="requests per second")
    parser.add_argument("--outages", default="1,3,6", help="seconds each outage lasts")
    args = parser.parse_args()
    outages = [float(x) for x in args.outages.split(",")]
    runs = []
    stories: list[tuple[str, clientlb.OutlierDetection | None]] = [
        ("transport, probes (default)", clientlb.OutlierDetection()),
        ("transport, no probes", clientlb.OutlierDetection(probe_after=None)),
        ("clientlb proxy (default)", None),
    ]
    for label, outlier in stories:
        print(f"running: {label} ...", file=sys.stderr)
        runs.append(asyncio.run(story(label, outlier, outages, args.rate)))
    report(runs)


if __name__ == "__main__":
    main()
