"""``clientlb demo``: a live tour on loopback.

Three primaries (one slow) and a standby run as uvicorn servers in this process.
Traffic goes through an ``AsyncBalancingTransport`` with the chosen algorithm; the
demo prints what each replica served, then stops the primaries to show failover
to the standby and starts them again to show the fail-back.
"""

from __future__ import annotations

import socket
import statistics
import sys
import threading
import time
from collections import defaultdict
from typing import Any

import anyio
import uvicorn

from ._core import ALGORITHMS, OutlierDetection
from ._httpx import httpx
from ._transports import AsyncBalancingTransport

CONCURRENCY = 8


class _Replica:
    """A loopback uvicorn server that answers with its name after ``delay``."""

    def __init__(self, name: str, delay: float = 0.0) -> None:
        self.name = name
        self.delay = delay
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port: int = probe.getsockname()[1]
        probe.close()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if self.delay:
            await anyio.sleep(self.delay)
        body = self.name.encode()
        headers = [(b"content-length", str(len(body)).encode()), (b"x-replica", body)]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def start(self) -> None:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        config = uvicorn.Config(self.app, log_level="error", lifespan="off", interface="asgi3")
        server = uvicorn.Server(config)
        self._server, self._sock = server, sock
        self._thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.01)

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(10)
            self._sock.close()
            self._server = None


async def _traffic(
    client: httpx.AsyncClient, seconds: float, requests: int | None = None
) -> tuple[dict[str, list[float]], int]:
    """Send requests from CONCURRENCY workers; latencies by replica, and errors."""
    served: dict[str, list[float]] = defaultdict(list)
    errors = 0
    sent = 0
    deadline = time.monotonic() + seconds

    async def worker(number: int) -> None:
        nonlocal errors, sent
        headers = {"x-demo-client": f"client-{number}"}
        while time.monotonic() < deadline and (requests is None or sent < requests):
            sent += 1
            start = time.perf_counter()
            try:
                response = await client.get("/hello", headers=headers)
                served[response.headers["x-replica"]].append(time.perf_counter() - start)
            except httpx.HTTPError:
                errors += 1

    async with anyio.create_task_group() as tg:
        for number in range(CONCURRENCY):
            tg.start_soon(worker, number)
    return served, errors


def _table(title: str, names: list[str], served: dict[str, list[float]], errors: int) -> None:
    total = sum(len(v) for v in served.values()) or 1
    print(f"\n{title}")
    print(f"  {'replica':<22}{'requests':>9}{'share':>8}{'mean ms':>10}{'p99 ms':>9}")
    for name in names:
        times = sorted(served.get(name, []))
        if times:
            p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
            mean = f"{statistics.fmean(times) * 1000:.1f}"
            line = f"{len(times):>9}{len(times) / total:>8.0%}{mean:>10}{p99 * 1000:>9.1f}"
        else:
            line = f"{0:>9}{0:>8.0%}{'-':>10}{'-':>9}"
        print(f"  {name:<22}{line}")
    print(f"  client-visible errors: {errors}")


async def _run(algorithm: str, duration: float) -> None:
    primaries = [_Replica("primary-1"), _Replica("primary-2"), _Replica("primary-3 (slow)", 0.02)]
    standby = _Replica("standby")
    everyone = [*primaries, standby]
    names = [r.name for r in everyone]
    for replica in everyone:
        replica.start()
    hashes = ALGORITHMS[algorithm].hashes
    transport = AsyncBalancingTransport(
        [r.url for r in primaries],
        standbys=[standby.url],
        algorithm=algorithm,
        hash_on="header:x-demo-client" if hashes else None,  # each worker a client
        outlier=OutlierDetection(consecutive_local_failures=1, base_ejection_time=1.0),
    )
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://demo") as client:
            print(f"clientlb demo: algorithm={algorithm}, {CONCURRENCY} concurrent clients")
            print("  primaries: " + ", ".join(f"{r.name} {r.url}" for r in primaries))
            print(f"  standby:   {standby.url}")
            served, errors = await _traffic(client, duration)
            _table(f"1. {duration:g} s of traffic over the primaries", names, served, errors)

            for replica in primaries:
                replica.stop()
            served, errors = await _traffic(client, 10.0, requests=200)
            _table(
                "2. primaries stopped: 200 requests fail over to the standby", names, served, errors
            )

            for replica in primaries:
                replica.start()
            print("\n3. primaries started again; sending until traffic is back on them")
            started = time.monotonic()
            while time.monotonic() - started < 10:
                served, errors = await _traffic(client, 0.25)
                share = len(served.get("standby", [])) / max(1, sum(map(len, served.values())))
                print(f"  t={time.monotonic() - started:4.1f}s  standby share {share:4.0%}")
                if share == 0:
                    break
            _table("   the last quarter second", names, served, errors)
            print("\nPool state:")
            for row in transport.snapshot()["upstreams"]:
                ewma = row["ewma_latency"]
                latency = f"{ewma * 1000:.1f} ms" if ewma is not None else "-"
                print(
                    f"  {row['url']:<24} {row['tier']:<8} {row['state']:<11} "
                    f"requests={row['requests']:<5} failures={row['failures']:<3} ewma={latency}"
                )
    finally:
        for replica in everyone:
            replica.stop()


def main(algorithm: str = "least_response_time", duration: float = 3.0) -> int:
    """Run the demo; returns the process exit status."""
    try:
        anyio.run(_run, algorithm, duration)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0
