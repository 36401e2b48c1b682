"""How fast a pool follows its registry, and traffic follows a recovered primary.

    python benchmarks/discovery_latency.py [--trials 9]

On loopback, with the sync runner (``Background``: threads), it measures:

* ``etcd watch``   time from a ``put`` of a new endpoint key in a real etcd to the
                   pool listing it (the watch pushes the change);
* ``dns ttl=0``    time from a dnsmasq zone change (file rewritten, SIGHUP) to the
                   pool listing the new address, re-resolving every 0.1 s;
* ``dns ttl=1``    the same with a 1 s record TTL, which the provider follows;
* ``file``         time from an atomic rewrite of a TOML file, polled every 0.1 s;
* ``fail-back``    time from a dead primary listening again to the first request
                   of a steady client landing on it (standby serving meanwhile),
                   with active checks every 0.1 s, ``rise`` 1 and 2.

Before each change the benchmark waits a random part of a second, so that changes
fall at random points of the polling cycles (as they do in production) instead of
just after a poll. Each figure is the median and the 90th percentile over the
trials. A registry
that is not installed (Debian: ``etcd-server``, ``dnsmasq-base``) is skipped with
a message. dnspython is needed for the DNS rows.
"""

from __future__ import annotations

import argparse
import base64
import functools
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from clientlb import BalancingTransport, Pool
from clientlb._background import Background
from clientlb._core import HealthCheck
from clientlb.discovery import DNS, Etcd, File

ROWS: list[tuple[str, list[float]]] = []


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def until(condition: Callable[[], object], timeout: float = 20.0) -> float:
    """Poll ``condition`` every millisecond; the time it became true."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        time.sleep(0.001)
    return time.monotonic()


def urls(pool: Pool) -> set[str]:
    return {u["url"] for u in pool.snapshot()["upstreams"] if u["state"] != "draining"}


def listed(pool: Pool, url: str) -> bool:
    return url in urls(pool)


def only(pool: Pool, url: str) -> bool:
    return urls(pool) == {url}


def dephase() -> None:
    """Wait a random part of a second: the next change lands anywhere in a cycle."""
    time.sleep(random.random())


def record(name: str, samples: list[float]) -> None:
    ROWS.append((name, samples))
    print(f"  {name}: done", file=sys.stderr)


@contextmanager
def process(command: list[str], ready: Callable[[], bool], log: Path) -> Iterator[None]:
    with open(log, "ab") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=out)
    try:
        until(lambda: proc.poll() is not None or ready(), 15)
        if proc.poll() is not None:
            raise RuntimeError(f"{command[0]} exited: {log.read_text()[-300:]}")
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# -- registries -------------------------------------------------------------------------


def bench_etcd(trials: int, work: Path) -> None:
    etcd = shutil.which("etcd")
    if etcd is None:
        print("skipping etcd: not installed (apt-get install etcd-server)", file=sys.stderr)
        return
    client, peer = free_port(), free_port()
    url, peer_url = f"http://127.0.0.1:{client}", f"http://127.0.0.1:{peer}"
    http = httpx.Client(timeout=5)

    def healthy() -> bool:
        try:
            return bool(http.get(f"{url}/health").json().get("health") == "true")
        except (httpx.HTTPError, ValueError):
            return False

    def put(key: str, value: dict[str, Any]) -> None:
        body = {"key": _b64(key), "value": _b64(json.dumps(value))}
        http.post(f"{url}/v3/kv/put", json=body).raise_for_status()

    command = [
        etcd,
        "--name=bench",
        f"--data-dir={work / 'etcd'}",
        f"--listen-client-urls={url}",
        f"--advertise-client-urls={url}",
        f"--listen-peer-urls={peer_url}",
        f"--initial-advertise-peer-urls={peer_url}",
        f"--initial-cluster=bench={peer_url}",
        "--log-level=error",
    ]
    with process(command, healthy, work / "etcd.log"):
        put("/bench/0", {"url": "http://10.0.0.1:80"})
        pool = Pool(allow_empty=True)
        samples = []
        with Background(pool, discovery=Etcd(url, "/bench/")):
            until(lambda: len(urls(pool)) == 1)
            for i in range(1, trials + 1):
                target = f"http://10.0.1.{i}:80"
                dephase()
                started = time.monotonic()
                put(f"/bench/{i}", {"url": target})
                samples.append(until(functools.partial(listed, pool, target)) - started)
        record("etcd watch", samples)
    http.close()


def bench_dns(trials: int, work: Path, ttl: int) -> None:
    dnsmasq = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
    if not os.path.exists(dnsmasq):
        print("skipping dns: dnsmasq not installed (apt-get install dnsmasq-base)", file=sys.stderr)
        return
    hosts = work / f"hosts{ttl}"
    hosts.write_text("10.0.0.1 svc.test\n")
    port = free_port(socket.SOCK_DGRAM)
    command = [
        dnsmasq,
        "--no-daemon",
        f"--port={port}",
        "--listen-address=127.0.0.1",
        "--bind-interfaces",
        "--no-resolv",
        "--no-hosts",
        f"--addn-hosts={hosts}",
        f"--local-ttl={ttl}",
        "--local=/test/",
        "--pid-file=",
        f"--user={_user()}",
    ]
    pool = Pool(allow_empty=True)
    provider = DNS("svc.test", 80, nameserver=f"127.0.0.1:{port}", min_ttl=0.1)
    with open(work / "dnsmasq.log", "ab") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=out)
    try:
        until(lambda: _answers(port), 10)
        with Background(pool, discovery=provider):
            until(lambda: urls(pool) == {"http://10.0.0.1:80"})
            samples = []
            for i in range(1, trials + 1):
                target = f"http://10.0.2.{i}:80"
                tmp = hosts.with_suffix(".tmp")
                tmp.write_text(f"10.0.2.{i} svc.test\n")
                dephase()
                started = time.monotonic()
                tmp.replace(hosts)
                proc.send_signal(signal.SIGHUP)
                samples.append(until(functools.partial(only, pool, target)) - started)
        record(f"dns ttl={ttl}", samples)
    finally:
        proc.terminate()
        proc.wait(5)


def bench_file(trials: int, work: Path) -> None:
    path = work / "upstreams.toml"
    path.write_text('upstreams = ["http://10.0.0.1:80"]\n')
    pool = Pool(allow_empty=True)
    samples = []
    with Background(pool, discovery=File(path, interval=0.1)):
        until(lambda: len(urls(pool)) == 1)
        for i in range(1, trials + 1):
            target = f"http://10.0.3.{i}:80"
            tmp = path.with_suffix(".tmp")
            tmp.write_text(f'upstreams = ["{target}"]\n')
            dephase()
            started = time.monotonic()
            tmp.replace(path)
            samples.append(until(functools.partial(only, pool, target)) - started)
    record("file every 0.1 s", samples)


# -- fail-back --------------------------------------------------------------------------


class Server:
    """A uvicorn app on a fixed loopback port that can die and come back."""

    def __init__(self) -> None:
        self.port = free_port()
        self.hits = 0
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    async def app(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["path"] != "/health":
            self.hits += 1
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    def start(self) -> None:
        # IPPROTO_TCP named so that asyncio sets TCP_NODELAY on accepted sockets (else
        # each new connection's first response may wait ~40 ms for a delayed ACK)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        config = uvicorn.Config(
            self.app, log_level="error", lifespan="off", loop="asyncio", interface="asgi3"
        )
        server = uvicorn.Server(config)
        self._server, self._sock = server, sock
        self._thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]})
        self._thread.start()
        until(lambda: server.started, 10)

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(10)
            self._sock.close()
            self._server = None


def hit(server: Server, before: int) -> bool:
    return server.hits > before


def bench_fail_back(trials: int, rise: int) -> None:
    primary, standby = Server(), Server()
    primary.start()
    standby.start()
    pool = Pool([f"http://127.0.0.1:{primary.port}"], [f"http://127.0.0.1:{standby.port}"])
    check = HealthCheck(interval=0.1, timeout=0.5, rise=rise, fall=1)
    stop = threading.Event()

    def client() -> None:
        with httpx.Client(transport=BalancingTransport(pool), base_url="http://svc") as c:
            while not stop.is_set():
                try:
                    c.get("/")
                except httpx.HTTPError as exc:  # not expected: the standby serves
                    print(f"request failed: {exc!r}", file=sys.stderr)
                time.sleep(0.001)

    samples = []
    traffic = threading.Thread(target=client)
    try:
        with Background(pool, health_check=check):
            traffic.start()
            for _ in range(trials):
                primary.stop()
                until(lambda: pool.snapshot()["upstreams"][0]["state"] == "down")
                hits = primary.hits
                dephase()
                primary.start()
                started = time.monotonic()
                samples.append(until(functools.partial(hit, primary, hits)) - started)
    finally:
        stop.set()
        if traffic.is_alive():
            traffic.join()
        primary.stop()
        standby.stop()
    record(f"fail-back, checks every 0.1 s, rise={rise}", samples)


def _answers(port: int) -> bool:
    import dns.message
    import dns.query

    try:
        dns.query.udp(dns.message.make_query("svc.test", "A"), "127.0.0.1", timeout=0.2, port=port)
    except Exception:
        return False
    return True


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _user() -> str:
    import getpass

    return getpass.getuser()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=9)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="clientlb-bench-"))
    work.chmod(0o755)
    try:
        bench_etcd(args.trials, work)
        bench_dns(args.trials, work, ttl=0)
        bench_dns(min(args.trials, 5), work, ttl=1)
        bench_file(args.trials, work)
        bench_fail_back(args.trials, rise=1)
        bench_fail_back(args.trials, rise=2)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\n{'change reflected':<44} {'median':>9} {'p90':>9}  trials")
    for name, samples in ROWS:
        ordered = sorted(samples)
        p90 = ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]
        median = statistics.median(ordered)
        print(f"{name:<44} {median * 1e3:>7.1f}ms {p90 * 1e3:>7.1f}ms  {len(samples)}")


if __name__ == "__main__":
    main()
