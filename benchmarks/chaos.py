"""Chaos: real replicas SIGKILLed and restarted under load, through a proxy.

    python benchmarks/chaos.py [--replicas 4] [--kill-every 1.5] [--down-for 1.0]
                               [--gets 5000] [--posts 500] [--rate 300] [--peers]

It starts ``--replicas`` upstream replicas, each a small ASGI app under uvicorn
(httptools) in a process of its own on a fixed loopback port, and ``clientlb
proxy`` (the CLI) over all of them. While a load generator sends GETs and POSTs
open loop at ``--rate`` requests/s (a request starts on schedule whatever the
others are doing; POSTs spread evenly among the GETs; each request has 10 s), a
killer SIGKILLs one replica every ``--kill-every`` seconds, round robin, and
starts it again on the same port ``--down-for`` seconds later. The load
generator is a lean HTTP/1.1 client on asyncio streams with keep-alive
connections (never retrying anything), so that its cost per request stays flat
however many requests are in flight.

Each replica answers a GET with a short body naming the path, after a random
service time (0 to ``--service-ms`` ms). A POST carries a unique id; the replica
waits part of its service time, appends the id to its own log file (flushed)
before answering, waits the rest, and answers with the id. So a replica can be
killed with a POST in flight before or after it was recorded. At the end the
logs of every replica are read back, and it reports:

* GETs and POSTs sent, answered 2xx, failed (by status and by exception type),
  and responses whose body does not belong to their request (mismatched);
* duplicate POSTs (ids recorded more than once over all replicas), lost POSTs
  (2xx at the client, recorded by none), and ambiguous POSTs (failed at the
  client, yet recorded: a replica killed after recording and before answering;
  no proxy can know these, so they are counted apart);
* for clientlb: the sum of ``in_flight`` of the admin listener's ``/stats`` once
  the load is over (polled until 0, at most 10 s), and the proxy's open file
  descriptors after a warm-up and again after the load (replicas all up, idle
  connections given ``--settle`` seconds), with how many of them are sockets to
  the replicas (read from ``/proc``);
* the latency (p50, p99) of the successful requests, the CPU time of the proxy
  during the load, and the failed requests grouped in bursts, each with the kill
  next to it (and, for clientlb, how many upstreams its pool had available then,
  from ``/stats`` read every 0.2 s).

``--peers`` runs the same chaos through nginx (Debian ``nginx-light``: one
worker, keep-alive upstreams, its default ``proxy_next_upstream``) and HAProxy
(Debian ``haproxy``: ``balance roundrobin``, ``retries 2``, ``option
redispatch``, no health checks), each in a run of its own with fresh replicas; a
missing binary is skipped with a message. The targets, printed as PASS or MISS
for each proxy: 0 failed GETs, 0 duplicate POSTs, 0 lost POSTs and, for clientlb,
in-flight back to 0 and file descriptors back to their count before the load,
apart from idle keep-alive connections to the replicas. The script exits 0
either way unless ``--strict`` is given (then 1 when clientlb misses). Only
127.0.0.1 is used; every process it starts is killed at the end, on Ctrl-C too.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import random
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

HERE = os.path.abspath(__file__)
REQUEST_TIMEOUT = 10.0
SAMPLE_EVERY = 0.2  # seconds between two reads of clientlb's /stats during the load
TCP_STATES = {
    "01": "ESTABLISHED",
    "02": "SYN_SENT",
    "03": "SYN_RECV",
    "04": "FIN_WAIT1",
    "05": "FIN_WAIT2",
    "06": "TIME_WAIT",
    "07": "CLOSE",
    "08": "CLOSE_WAIT",
    "09": "LAST_ACK",
    "0A": "LISTEN",
    "0B": "CLOSING",
}


# -- ports and processes -----------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stable_port(taken: set[int]) -> int:
    """A free port below the ephemeral range, so that while a replica is down no
    outgoing connection can borrow its port as a source port (which would stop the
    replica from binding it again)."""
    low = 32768
    with (
        contextlib.suppress(OSError, ValueError),
        open("/proc/sys/net/ipv4/ip_local_port_range") as f,
    ):
        low = int(f.read().split()[0])
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(max(1025, low - 12000), max(1026, low))
        if port in taken:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        taken.add(port)
        return port
    port = free_port()
    taken.add(port)
    return port


def listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def wait_listening(
    port: int, proc: subprocess.Popen[Any] | None = None, timeout: float = 15
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        if listening(port):
            return
        time.sleep(0.02)
    raise RuntimeError(f"nothing listens on {port}")


class Processes:
    """Every process started, each the leader of its own process group, so that a
    Ctrl-C in the terminal reaches only this script, which then kills them all."""

    def __init__(self) -> None:
        self._procs: list[subprocess.Popen[Any]] = []
        self._lock = threading.Lock()
        self.closed = False

    def spawn(self, cmd: list[str], log: str) -> subprocess.Popen[Any]:
        with self._lock:
            if self.closed:
                raise RuntimeError("shutting down")
            with open(log, "a") as out:
                proc = subprocess.Popen(
                    cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
                )
            self._procs.append(proc)
            return proc

    def stop(self, proc: subprocess.Popen[Any], grace: float = 5.0) -> None:
        """SIGTERM (SIGKILL with ``grace=0``) to the group, then SIGKILL if needed."""
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGTERM if grace > 0 else signal.SIGKILL)
            try:
                proc.wait(grace if grace > 0 else 5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # a worker left behind (nginx)

    def close(self) -> None:
        with self._lock:
            self.closed = True
            procs = list(self._procs)
        for proc in procs:
            self.stop(proc, grace=0)


def binary(name: str) -> str | None:
    path = shutil.which(name)
    if path is None and os.path.exists(f"/usr/sbin/{name}"):
        path = f"/usr/sbin/{name}"
    return path


def tail(path: str, lines: int = 5) -> str:
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:]).rstrip()
    except OSError:
        return ""


# -- the replicas --------------------------------------------------------------------------


def serve_replica(port: int, index: int, log_path: str, seed: str, service_ms: float) -> None:
    """The replica, run as ``chaos.py --replica ...`` in a process of its own."""
    import uvicorn

    rng = random.Random(seed)
    service = service_ms / 1000
    log = open(log_path, "a")  # noqa: SIM115 - open for the life of the process
    name = str(index).encode()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
        total = rng.uniform(0, service)
        before = rng.uniform(0, total)
        if before:
            await asyncio.sleep(before)
        if scope["method"] == "POST":
            rid = body.decode("ascii", "replace").strip()
            log.write(rid + "\n")
            log.flush()  # recorded before anything is answered
            out = (rid + "\n").encode()
        else:
            out = ("ok " + scope["path"] + "\n").encode()
        if total - before:
            await asyncio.sleep(total - before)
        headers = [
            (b"content-type", b"text/plain"),
            (b"content-length", str(len(out)).encode()),
            (b"x-replica", name),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": out})

    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(1024)
    try:
        import uvloop  # noqa: F401

        loop = "uvloop"
    except ImportError:
        loop = "asyncio"
    config = uvicorn.Config(
        app,
        loop=loop,
        http="httptools",
        lifespan="off",
        access_log=False,
        log_level="warning",
    )
    uvicorn.Server(config).run(sockets=[sock])


@dataclass
class Replica:
    index: int
    port: int
    log: str
    out: str
    seed: int
    service_ms: float
    proc: subprocess.Popen[Any] | None = None
    generation: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    down_since: float | None = None
    downtimes: list[float] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [
            sys.executable,
            HERE,
            "--replica",
            str(self.port),
            str(self.index),
            self.log,
            f"{self.seed}:{self.index}:{self.generation}",
            str(self.service_ms),
        ]

    def start(self, procs: Processes) -> subprocess.Popen[Any]:
        with self.lock:
            self.generation += 1
            proc = procs.spawn(self.command(), self.out)
            self.proc = proc
        return proc


class Killer(threading.Thread):
    """Kills one replica every ``every`` seconds (round robin from ``first``) and
    starts it again ``down_for`` seconds later, until stopped."""

    def __init__(
        self,
        replicas: list[Replica],
        procs: Processes,
        every: float,
        down_for: float,
        first: int,
    ) -> None:
        super().__init__(name="killer", daemon=True)
        self.replicas = replicas
        self.procs = procs
        self.every = every
        self.down_for = down_for
        self.next = first
        self.stopping = threading.Event()
        self.kills = 0
        self.skipped = 0
        self.restarters: list[threading.Thread] = []
        self.errors: list[str] = []
        self.events: list[tuple[float, str, int]] = []  # (monotonic time, kill|up, replica)

    def run(self) -> None:
        start = time.monotonic()
        n = 1
        while not self.stopping.wait(max(0.0, start + n * self.every - time.monotonic())):
            self.kill_one()
            n += 1

    def kill_one(self) -> None:
        for _ in range(len(self.replicas)):
            replica = self.replicas[self.next]
            self.next = (self.next + 1) % len(self.replicas)
            with replica.lock:
                proc = replica.proc
                if proc is None or proc.poll() is not None or replica.down_since is not None:
                    continue  # still down or starting: try the next one
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                replica.proc = None
                replica.down_since = time.monotonic()
            self.events.append((replica.down_since, "kill", replica.index))
            self.kills += 1
            restarter = threading.Thread(target=self.restart, args=(replica,), daemon=True)
            self.restarters.append(restarter)
            restarter.start()
            return
        self.skipped += 1

    def restart(self, replica: Replica) -> None:
        time.sleep(self.down_for)
        try:
            proc = replica.start(self.procs)
            wait_listening(replica.port, proc)
        except RuntimeError as exc:
            self.errors.append(f"replica {replica.index}: {exc}")
            return
        now = time.monotonic()
        self.events.append((now, "up", replica.index))
        with replica.lock:
            if replica.down_since is not None:
                replica.downtimes.append(now - replica.down_since)
            replica.down_since = None

    def stop(self) -> None:
        """Stop killing, and wait for the replicas killed so far to be back."""
        self.stopping.set()
        self.join()
        for restarter in self.restarters:
            restarter.join()


# -- the proxies under test ------------------------------------------------------------------


NGINX_LB = """worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/nginx.err warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  upstream backends {{ {servers} keepalive 64; }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://backends;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
    }}
  }}
}}
"""

HAPROXY_LB = """global
  maxconn 4096
  nbthread 1
  log stderr format raw local0 info

defaults
  mode http
  log global
  option httplog
  option dontlog-normal
  option redispatch
  retries 2
  timeout connect 2s
  timeout client 30s
  timeout server 30s

frontend fe
  bind 127.0.0.1:{port}
  default_backend be

backend be
  balance roundrobin
{servers}
"""


@dataclass
class Proxy:
    name: str
    port: int
    proc: subprocess.Popen[Any]
    log: str
    admin_port: int | None = None


def start_proxy(
    name: str, replicas: list[Replica], procs: Processes, tmp: str, extra: list[str]
) -> Proxy | str:
    """The proxy listening, or why it could not be started."""
    port = free_port()
    log = os.path.join(tmp, f"{name}.log")
    admin: int | None = None
    if name == "clientlb":
        admin = free_port()
        cmd = [sys.executable, "-m", "clientlb", "proxy", "--listen", f"127.0.0.1:{port}"]
        for replica in replicas:
            cmd += ["--upstream", replica.url]
        cmd += ["--admin", f"127.0.0.1:{admin}", "--log-level", "warning", *extra]
    elif name == "nginx":
        nginx = binary("nginx")
        if nginx is None:
            return "not installed (apt-get install nginx-light)"
        conf = os.path.join(tmp, "nginx.conf")
        servers = " ".join(f"server 127.0.0.1:{r.port};" for r in replicas)
        with open(conf, "w") as f:
            f.write(NGINX_LB.format(dir=tmp, servers=servers, port=port))
        cmd = [nginx, "-c", conf, "-p", tmp]
        log = os.path.join(tmp, "nginx.err")
    elif name == "haproxy":
        haproxy = binary("haproxy")
        if haproxy is None:
            return "not installed (apt-get install haproxy)"
        conf = os.path.join(tmp, "haproxy.cfg")
        servers = "\n".join(f"  server r{r.index} 127.0.0.1:{r.port}" for r in replicas)
        with open(conf, "w") as f:
            f.write(HAPROXY_LB.format(port=port, servers=servers))
        cmd = [haproxy, "-db", "-f", conf]
    else:
        raise ValueError(name)
    proc = procs.spawn(cmd, os.path.join(tmp, f"{name}.log"))
    try:
        wait_listening(port, proc)
        if admin is not None:
            wait_listening(admin, proc)
    except RuntimeError as exc:
        procs.stop(proc, grace=0)
        last = tail(os.path.join(tmp, f"{name}.log"))
        return f"{exc}" + (f"\n{last}" if last else "")
    return Proxy(name, port, proc, log, admin)


# -- what the proxy holds: /stats and /proc ------------------------------------------------


def admin_stats(port: int) -> dict[str, Any]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/stats", headers={"Connection": "close"}
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        data: dict[str, Any] = json.loads(response.read())
    return data


def in_flight(port: int) -> int:
    return sum(int(up.get("in_flight") or 0) for up in admin_stats(port)["upstreams"])


class StatsSampler(threading.Thread):
    """Reads ``/stats`` every ``interval`` seconds: when every upstream but one (or
    all) is ejected, the timeline shows it."""

    def __init__(self, port: int, interval: float = SAMPLE_EVERY) -> None:
        super().__init__(name="stats", daemon=True)
        self.port = port
        self.interval = interval
        self.stopping = threading.Event()
        self.samples: list[tuple[float, int, bool]] = []  # (time, upstreams available, panic)

    def run(self) -> None:
        while not self.stopping.wait(self.interval):
            try:
                snap = admin_stats(self.port)
            except OSError:
                continue
            available = sum(
                up.get("state") in ("healthy", "slow-start") for up in snap["upstreams"]
            )
            self.samples.append((time.monotonic(), available, bool(snap.get("panic"))))

    def stop(self) -> None:
        self.stopping.set()
        self.join()


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process and of its children (nginx's worker)."""
    tick = os.sysconf("SC_CLK_TCK")
    pids = [pid]
    with contextlib.suppress(OSError, ValueError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                pids += [int(child) for child in f.read().split()]
    total = 0.0
    for one_pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            with open(f"/proc/{one_pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return total


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def tcp_sockets(pid: int) -> dict[str, tuple[int, int, str]]:
    """inode -> (local port, remote port, state) of the TCP sockets the process sees."""
    table: dict[str, tuple[int, int, str]] = {}
    for name in ("tcp", "tcp6"):
        try:
            with open(f"/proc/{pid}/net/{name}") as f:
                lines = f.readlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if len(parts) < 10:
                continue
            local = int(parts[1].rsplit(":", 1)[1], 16)
            remote = int(parts[2].rsplit(":", 1)[1], 16)
            table[parts[9]] = (local, remote, TCP_STATES.get(parts[3], parts[3]))
    return table


@dataclass
class Fds:
    total: int
    upstream: collections.Counter[str]  # state -> sockets connected to a replica port
    client: int  # connections accepted on the proxy's own ports (listen, admin)
    listen: int
    other_sockets: int
    other: int

    @property
    def idle_upstream(self) -> int:
        return self.upstream["ESTABLISHED"]

    def describe(self) -> str:
        states = ", ".join(f"{n} {s}" for s, n in sorted(self.upstream.items())) or "none"
        return (
            f"{self.total} fds: to replicas {sum(self.upstream.values())} ({states}), "
            f"from clients {self.client}, listening {self.listen}, "
            f"other sockets {self.other_sockets}, not sockets {self.other}"
        )


def open_fds(pid: int, upstream_ports: set[int], own_ports: set[int]) -> Fds:
    sockets = tcp_sockets(pid)
    upstream: collections.Counter[str] = collections.Counter()
    client = listen = other_sockets = other = total = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue  # closed meanwhile
        total += 1
        match = re.fullmatch(r"socket:\[(\d+)\]", target)
        if match is None:
            other += 1
            continue
        entry = sockets.get(match.group(1))
        if entry is None:
            other_sockets += 1  # a pipe-like socket (socketpair) or not TCP
        elif entry[2] == "LISTEN":
            listen += 1
        elif entry[1] in upstream_ports:
            upstream[entry[2]] += 1
        elif entry[0] in own_ports:
            client += 1
        else:
            other_sockets += 1
    return Fds(total, upstream, client, listen, other_sockets, other)


# -- the load -----------------------------------------------------------------------------


@dataclass
class Outcome:
    kind: str  # "GET" or "POST"
    key: str  # the GET's path or the POST's id
    status: int | None = None
    error: str | None = None
    latency: float = 0.0
    mismatched: bool = False
    replica: str | None = None
    at: float = 0.0  # when it started (time.monotonic)
    reused: bool = False  # sent on a keep-alive connection of an earlier request

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300 and not self.mismatched


def plan(gets: int, posts: int) -> list[str]:
    """GET and POST interleaved, the POSTs spread evenly."""
    total = gets + posts
    return [
        "POST" if (i + 1) * posts // total > i * posts // total else "GET" for i in range(total)
    ]


class Closed(Exception):
    """The proxy closed the connection before the response was complete."""


class Client:
    """A lean HTTP/1.1 client for the load: keep-alive connections to one port,
    reused newest first and dropped after ``idle_timeout`` s idle (below the
    proxies' own keep-alive timeouts, so that a proxy closing an idle connection
    cannot fail a request). Its cost per request does not grow with the requests
    in flight, so a slow moment of the proxy does not turn the load generator
    itself into the bottleneck."""

    def __init__(self, port: int, idle_timeout: float = 2.0) -> None:
        self.port = port
        self.idle_timeout = idle_timeout
        self.idle: list[tuple[float, asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.writers: set[asyncio.StreamWriter] = set()

    async def _connection(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bool]:
        now = time.monotonic()
        while self.idle:
            since, reader, writer = self.idle.pop()
            if now - since < self.idle_timeout and not reader.at_eof() and not writer.is_closing():
                return reader, writer, True
            self._drop(writer)
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.writers.add(writer)
        return reader, writer, False

    def _drop(self, writer: asyncio.StreamWriter) -> None:
        writer.close()
        self.writers.discard(writer)

    async def request(
        self, outcome: Outcome, method: str, path: str, body: bytes = b""
    ) -> tuple[int, dict[str, str], bytes]:
        reader, writer, outcome.reused = await self._connection()
        keep = False
        try:
            head = f"{method} {path} HTTP/1.1\r\nhost: 127.0.0.1:{self.port}\r\n"
            if method == "POST":
                head += f"content-type: text/plain\r\ncontent-length: {len(body)}\r\n"
            writer.write(head.encode() + b"\r\n" + body)
            status, headers, data, keep = await read_response(reader)
            return status, headers, data
        finally:
            if keep:
                self.idle.append((time.monotonic(), reader, writer))
            else:
                self._drop(writer)

    async def aclose(self) -> None:
        writers = list(self.writers)
        self.idle.clear()
        self.writers.clear()
        for writer in writers:
            writer.close()
        for writer in writers:
            with contextlib.suppress(OSError):
                await writer.wait_closed()


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes, bool]:
    """Status, headers, body and whether the connection may be reused."""
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            version, status_text = lines[0].split(" ", 2)[:2]
            headers = {}
            for line in lines[1:]:
                if line:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
            status = int(status_text)
            if status >= 200:
                break
    except asyncio.IncompleteReadError as exc:
        raise Closed("closed mid-head" if exc.partial else "closed before the response") from None
    keep = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
    try:
        if "chunked" in headers.get("transfer-encoding", "").lower():
            body = b""
            while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
                body += (await reader.readexactly(size + 2))[:-2]
            while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers
                pass
        elif "content-length" in headers:
            body = await reader.readexactly(int(headers["content-length"]))
        else:
            body = await reader.read()
            keep = False
    except asyncio.IncompleteReadError:
        raise Closed("closed mid-body") from None
    return status, headers, body, keep


async def one(client: Client, kind: str, index: int) -> Outcome:
    key = uuid.uuid4().hex if kind == "POST" else f"/get/{index}"
    outcome = Outcome(kind, key, at=time.monotonic())
    start = time.perf_counter()
    try:
        async with asyncio.timeout(REQUEST_TIMEOUT):
            if kind == "POST":
                status, headers, body = await client.request(outcome, "POST", "/post", key.encode())
                expected = key + "\n"
            else:
                status, headers, body = await client.request(outcome, "GET", key)
                expected = f"ok {key}\n"
        outcome.status = status
        outcome.replica = headers.get("x-replica")
        if 200 <= status < 300 and body != expected.encode():
            outcome.mismatched = True
    except Closed as exc:
        outcome.error = str(exc)
    except Exception as exc:
        outcome.error = type(exc).__name__
    outcome.latency = time.perf_counter() - start
    return outcome


async def load(port: int, kinds: list[str], rate: float, t0: float) -> tuple[list[Outcome], float]:
    """Open loop: request i starts at i / rate seconds whatever the others do.
    ``t0`` is the schedule's start (time.monotonic). Returns the outcomes and the
    longest delay of a start behind its schedule."""
    lag = 0.0
    tasks: list[asyncio.Task[Outcome]] = []
    client = Client(port)
    try:
        for i, kind in enumerate(kinds):
            due = t0 + i / rate
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            lag = max(lag, time.monotonic() - due)
            tasks.append(asyncio.create_task(one(client, kind, i)))
        outcomes = list(await asyncio.gather(*tasks))
    finally:
        await client.aclose()
    return outcomes, lag


async def warm_up(port: int, count: int) -> list[Outcome]:
    client = Client(port)
    try:
        return [await one(client, "GET", -1 - i) for i in range(count)]
    finally:
        await client.aclose()


# -- one run ------------------------------------------------------------------------------


@dataclass
class Result:
    name: str
    outcomes: list[Outcome] = field(default_factory=list)
    recorded: collections.Counter[str] = field(default_factory=collections.Counter)
    where: dict[str, list[int]] = field(default_factory=dict)  # id -> replicas recording it
    torn_lines: int = 0
    kills: int = 0
    downtimes: list[float] = field(default_factory=list)
    lag: float = 0.0
    seconds: float = 0.0
    in_flight: int | None = None
    in_flight_wait: float = 0.0
    fds_before: Fds | None = None
    fds_after: Fds | None = None
    fds_wait: float = 0.0
    stats: dict[str, Any] | None = None
    log_lines: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    t0: float = 0.0
    cpu: tuple[float, float] = (0.0, 0.0)  # CPU seconds during the load: proxy, this script
    events: list[tuple[float, str, int]] = field(default_factory=list)
    samples: list[tuple[float, int, bool]] = field(default_factory=list)

    def by(self, kind: str) -> list[Outcome]:
        return [o for o in self.outcomes if o.kind == kind]

    @property
    def failed_gets(self) -> int:
        return sum(not o.ok for o in self.by("GET"))

    def post_accounting(self) -> dict[str, int]:
        posts = self.by("POST")
        sent = {o.key for o in posts}
        return {
            "duplicates": sum(1 for n in self.recorded.values() if n > 1),
            "extra_records": sum(n - 1 for n in self.recorded.values() if n > 1),
            "lost": sum(1 for o in posts if o.ok and self.recorded[o.key] == 0),
            "ambiguous": sum(1 for o in posts if not o.ok and self.recorded[o.key] > 0),
            "failed_unrecorded": sum(1 for o in posts if not o.ok and self.recorded[o.key] == 0),
            "unknown": sum(1 for k in self.recorded if k not in sent),
        }

    @property
    def fds_excess(self) -> int | None:
        """Descriptors after the load beyond those before, idle keep-alive
        connections to the replicas (ESTABLISHED) aside."""
        if self.fds_before is None or self.fds_after is None:
            return None
        before = self.fds_before.total - self.fds_before.idle_upstream
        after = self.fds_after.total - self.fds_after.idle_upstream
        return after - before

    def verdict(self) -> tuple[bool, list[str]]:
        posts = self.post_accounting()
        misses = []
        if self.failed_gets:
            misses.append(f"{self.failed_gets} failed GETs")
        if posts["duplicates"]:
            misses.append(f"{posts['duplicates']} duplicate POSTs")
        if posts["lost"]:
            misses.append(f"{posts['lost']} lost POSTs")
        if self.name == "clientlb":
            if self.in_flight is None or self.in_flight != 0:
                misses.append(f"in-flight {self.in_flight}")
            excess = self.fds_excess
            if excess is None:
                misses.append("fds not measured")
            elif excess > 0:
                misses.append(f"fds {excess:+d} beyond start")
        return not misses, misses


def read_logs(replicas: list[Replica]) -> tuple[dict[str, list[int]], int]:
    """Which replicas recorded each id (one entry per record), and the lines
    that are not an id."""
    where: dict[str, list[int]] = collections.defaultdict(list)
    torn = 0
    for replica in replicas:
        try:
            with open(replica.log) as f:
                for line in f:
                    rid = line.strip()
                    if re.fullmatch(r"[0-9a-f]{32}", rid):
                        where[rid].append(replica.index)
                    elif rid:
                        torn += 1
        except FileNotFoundError:
            continue
    return dict(where), torn


def log_summary(path: str) -> list[str]:
    """The proxy's log lines, most frequent first, numbers and addresses blurred."""
    try:
        with open(path, errors="replace") as f:
            lines = [line.rstrip() for line in f if line.strip()]
    except OSError:
        return []
    shapes: collections.Counter[str] = collections.Counter()
    for line in lines:
        if '"<BADREQ>"' in line and " CR-- " in line:
            continue  # HAProxy logging this script's probe of its port (connect, close)
        shape = re.sub(r"\b[0-9a-f]{32}\b", "<id>", line)
        shape = re.sub(r"\d+", "#", shape)
        shapes[shape[:160]] += 1
    return [f"{n:>5} x {shape}" for shape, n in shapes.most_common(6)]


def run(name: str, args: argparse.Namespace, procs: Processes, root: str) -> Result | None:
    tmp = tempfile.mkdtemp(prefix=f"{name}-", dir=root)
    rng = random.Random(args.seed)
    taken: set[int] = set()
    replicas = [
        Replica(
            i,
            stable_port(taken),
            os.path.join(tmp, f"replica{i}.ids"),
            os.path.join(tmp, f"replica{i}.log"),
            args.seed,
            args.service_ms,
        )
        for i in range(args.replicas)
    ]
    result = Result(name)
    killer: Killer | None = None
    sampler: StatsSampler | None = None
    proxy: Proxy | None = None
    try:
        started = [replica.start(procs) for replica in replicas]
        for replica, proc in zip(replicas, started, strict=True):
            wait_listening(replica.port, proc)
        started_proxy = start_proxy(name, replicas, procs, tmp, args.proxy_arg)
        if isinstance(started_proxy, str):
            print(f"skipping {name}: {started_proxy}")
            return None
        proxy = started_proxy
        upstream_ports = {r.port for r in replicas}
        own_ports = {proxy.port} | ({proxy.admin_port} if proxy.admin_port else set())

        warm = asyncio.run(warm_up(proxy.port, 4 * args.replicas))
        if not all(o.ok for o in warm):
            bad = collections.Counter(o.error or str(o.status) for o in warm if not o.ok)
            print(f"skipping {name}: warm-up requests failed ({dict(bad)})")
            return None
        if proxy.admin_port is not None:
            time.sleep(0.5)  # the warm-up client's connections closed on the proxy side
            admin_stats(proxy.admin_port)
            time.sleep(0.2)
            result.fds_before = open_fds(proxy.proc.pid, upstream_ports, own_ports)

        kinds = plan(args.gets, args.posts)
        killer = Killer(
            replicas, procs, args.kill_every, args.down_for, rng.randrange(args.replicas)
        )
        print(
            f"{name}: {args.gets} GETs + {args.posts} POSTs at {args.rate:g}/s through "
            f"{len(replicas)} replicas, one SIGKILLed every {args.kill_every:g} s "
            f"and restarted {args.down_for:g} s later ...",
            flush=True,
        )
        if proxy.admin_port is not None:
            sampler = StatsSampler(proxy.admin_port)
            sampler.start()
        cpu = cpu_seconds(proxy.proc.pid), own_cpu_seconds()
        result.t0 = time.monotonic()
        killer.start()
        outcomes, result.lag = asyncio.run(load(proxy.port, kinds, args.rate, result.t0))
        result.seconds = time.monotonic() - result.t0
        result.cpu = cpu_seconds(proxy.proc.pid) - cpu[0], own_cpu_seconds() - cpu[1]
        killer.stop()  # every replica killed so far is listening again
        if sampler is not None:
            sampler.stop()
            result.samples = sampler.samples
        result.kills = killer.kills
        result.events = sorted(killer.events)
        result.notes += killer.errors
        if killer.skipped:
            result.notes.append(f"{killer.skipped} kills skipped (every replica down)")
        for replica in replicas:  # in case a restart failed
            if replica.proc is None or replica.proc.poll() is not None:
                replica.start(procs)
            wait_listening(replica.port)
            result.downtimes += replica.downtimes
        result.outcomes = outcomes

        if proxy.proc.poll() is not None:
            result.notes.append(f"the proxy exited with {proxy.proc.returncode} during the load")
        elif proxy.admin_port is not None:
            deadline = time.monotonic() + 10
            t = time.monotonic()
            while True:
                try:
                    result.in_flight = in_flight(proxy.admin_port)
                except OSError as exc:
                    result.notes.append(f"the admin listener did not answer: {exc}")
                    result.in_flight = None
                    break
                if result.in_flight == 0 or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            result.in_flight_wait = time.monotonic() - t
            with contextlib.suppress(OSError):
                result.stats = admin_stats(proxy.admin_port)
            time.sleep(args.settle)
            t = time.monotonic()
            deadline = t + 10
            while True:
                result.fds_after = open_fds(proxy.proc.pid, upstream_ports, own_ports)
                excess = result.fds_excess
                if (excess is not None and excess <= 0) or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            result.fds_wait = args.settle + time.monotonic() - t
        else:
            time.sleep(1)
    finally:
        if killer is not None and killer.is_alive():
            killer.stop()
        if sampler is not None and sampler.is_alive():
            sampler.stop()
        if proxy is not None:
            procs.stop(proxy.proc)
        for replica in replicas:
            if replica.proc is not None:
                procs.stop(replica.proc, grace=0)
    result.where, result.torn_lines = read_logs(replicas)
    result.recorded = collections.Counter({k: len(v) for k, v in result.where.items()})
    if proxy is not None:
        result.log_lines = log_summary(proxy.log)
    return result


# -- the report ---------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def failures(outcomes: list[Outcome], kinds: bool = False) -> str:
    """The failed ones by status or error, e.g. ``502 x4, POST 502 x1``."""
    counts: collections.Counter[str] = collections.Counter()
    for o in outcomes:
        if o.ok:
            continue
        if o.mismatched:
            label = "mismatched body"
        elif o.status is not None:
            label = str(o.status)
        else:
            label = (o.error or "?") + (" (reused connection)" if o.reused else "")
        counts[f"{o.kind} {label}" if kinds else label] += 1
    return ", ".join(f"{k} x{n}" for k, n in counts.most_common()) or "none"


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def report(result: Result) -> None:
    gets, posts = result.by("GET"), result.by("POST")
    acct = result.post_accounting()
    print(f"\n== {result.name} ==")
    down = result.downtimes
    downs = f" (down {ms(sum(down) / len(down))} mean, {ms(max(down))} max)" if down else ""
    print(
        f"load: {len(result.outcomes)} requests in {result.seconds:.1f} s, "
        f"{result.kills} kills{downs}, start behind schedule at most {ms(result.lag)}"
    )
    print(
        f"CPU during the load: proxy {result.cpu[0]:.1f} s "
        f"({result.cpu[0] / max(result.seconds, 1e-9):.0%} of a core), "
        f"this script (load, killer, replicas' supervision) {result.cpu[1]:.1f} s"
    )
    for kind, items in (("GET", gets), ("POST", posts)):
        ok = sum(o.ok for o in items)
        print(f"{kind:<4} sent {len(items)}, 2xx {ok}, failed {len(items) - ok}: {failures(items)}")
    print(
        f"POST accounting: duplicates {acct['duplicates']} (extra records "
        f"{acct['extra_records']}), lost {acct['lost']}, ambiguous {acct['ambiguous']} "
        f"(failed at the client, recorded), failed and not recorded "
        f"{acct['failed_unrecorded']}, unknown ids {acct['unknown']}, "
        f"torn log lines {result.torn_lines}"
    )
    for o in posts:
        n = result.recorded[o.key]
        if n > 1 or (o.ok and n == 0):
            answer = o.status if o.status is not None else o.error
            print(
                f"  {'duplicate' if n > 1 else 'lost'}: {o.key} sent at "
                f"{o.at - result.t0:.2f} s, client got {answer}"
                f"{' (answered by replica ' + o.replica + ')' if o.replica else ''}, "
                f"recorded by replicas {result.where.get(o.key, [])}"
            )
    served = collections.Counter(o.replica for o in result.outcomes if o.ok)
    print("2xx by replica: " + ", ".join(f"{k}: {n}" for k, n in sorted(served.items(), key=str)))
    for kind, items in (("GET", gets), ("POST", posts)):
        lat = [o.latency for o in items if o.ok]
        print(
            f"latency of successful {kind}s: p50 {ms(percentile(lat, 0.5))}, "
            f"p99 {ms(percentile(lat, 0.99))}, max {ms(max(lat, default=float('nan')))}"
        )
    if result.name == "clientlb":
        print(f"in-flight after the load: {result.in_flight} (after {result.in_flight_wait:.1f} s)")
        if result.fds_before and result.fds_after:
            before, after = result.fds_before, result.fds_after
            print(f"fds before the load: {before.describe()}")
            print(f"fds after the load:  {after.describe()} ({result.fds_wait:.1f} s after)")
            print(
                f"fds: {before.total} -> {after.total} ({after.total - before.total:+d}); "
                f"idle keep-alive sockets to replicas {before.idle_upstream} -> "
                f"{after.idle_upstream}; beyond start apart from those: {result.fds_excess:+d}"
            )
        if result.stats:
            for up in result.stats.get("upstreams", []):
                print(
                    f"  {up.get('url')}: state {up.get('state')}, requests {up.get('requests')}, "
                    f"failures {up.get('failures')}, ejections {up.get('ejections')}, "
                    f"in_flight {up.get('in_flight')}"
                )
    if result.log_lines:
        print("proxy log (most frequent lines, numbers blurred):")
        for line in result.log_lines:
            print("  " + line)
    timeline(result)
    for note in result.notes:
        print(f"note: {note}")
    passed, misses = result.verdict()
    print(
        f"{result.name}: {'PASS' if passed else 'MISS'}"
        + (f" ({', '.join(misses)})" if misses else "")
    )


def timeline(result: Result) -> None:
    """Failed requests in bursts, each with the last kill before its end and, for
    clientlb, how many upstreams the pool had available at its start."""
    if result.samples:
        fewest = min(n for _, n, _ in result.samples)
        panic = sum(p for _, _, p in result.samples) * SAMPLE_EVERY
        total = len(result.stats["upstreams"]) if result.stats else "?"
        print(
            f"pool during the load (/stats every {SAMPLE_EVERY} s): fewest upstreams "
            f"available {fewest} of {total}, about {panic:.1f} s in panic (every one ejected)"
        )
        per_second: dict[int, int] = {}
        for t, n, _ in result.samples:
            second = int(t - result.t0)
            per_second[second] = min(n, per_second.get(second, n))
        print(
            "  fewest available in each second of the load: "
            + " ".join(str(per_second.get(i, "?")) for i in range(max(per_second, default=-1) + 1))
        )
    failed = sorted((o for o in result.outcomes if not o.ok), key=lambda o: o.at)
    if not failed:
        return
    bursts: list[list[Outcome]] = [[failed[0]]]
    for o in failed[1:]:
        if o.at - bursts[-1][-1].at > 0.5:
            bursts.append([])
        bursts[-1].append(o)
    kills = [(t, i) for t, what, i in result.events if what == "kill"]
    print(f"failed requests in {len(bursts)} bursts (seconds from the start of the load):")
    for burst in bursts[:12]:
        start, end = burst[0].at, burst[-1].at
        last = [(t, i) for t, i in kills if t <= end + 0.1]  # a kill just after a start
        killed = f"replica {last[-1][1]} at {last[-1][0] - result.t0:.2f} s" if last else "none"
        pool = ""
        before = [(n, p) for t, n, p in result.samples if t <= start]
        if before:
            pool = f"; pool then: {before[-1][0]} available{', panic' if before[-1][1] else ''}"
        print(
            f"  {start - result.t0:6.2f}-{end - result.t0:6.2f} s: {len(burst)} failed "
            f"({failures(burst, kinds=True)}); last kill: {killed}{pool}"
        )
    if len(bursts) > 12:
        print(f"  ... and {len(bursts) - 12} more bursts")


def summary(results: list[Result]) -> None:
    print()
    print(
        f"{'proxy':<9} {'GET fail':>8} {'POST fail':>9} {'dup':>4} {'lost':>5} {'ambig':>6} "
        f"{'in-flight':>9} {'fds':>10} {'p50 ms':>7} {'p99 ms':>7}  verdict"
    )
    for r in results:
        acct = r.post_accounting()
        posts = r.by("POST")
        lat = [o.latency for o in r.outcomes if o.ok]
        fds = "n/a"
        if r.fds_before and r.fds_after:
            fds = f"{r.fds_before.total}->{r.fds_after.total}"
        passed, _ = r.verdict()
        print(
            f"{r.name:<9} {r.failed_gets:>8} {sum(not o.ok for o in posts):>9} "
            f"{acct['duplicates']:>4} {acct['lost']:>5} {acct['ambiguous']:>6} "
            f"{'n/a' if r.in_flight is None else r.in_flight:>9} {fds:>10} "
            f"{percentile(lat, 0.5) * 1000:>7.1f} {percentile(lat, 0.99) * 1000:>7.1f}  "
            f"{'PASS' if passed else 'MISS'}"
        )


# -- main ---------------------------------------------------------------------------------


@contextlib.contextmanager
def interrupts_as_exceptions() -> Iterator[None]:
    """SIGTERM ends the script like Ctrl-C does, through the cleanup."""

    def handler(sig: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main() -> int:
    parser = argparse.ArgumentParser(
        description="replicas SIGKILLed and restarted under load, through clientlb proxy "
        "(and nginx and HAProxy with --peers)"
    )
    parser.add_argument("--replicas", type=int, default=4)
    parser.add_argument("--kill-every", type=float, default=1.5, help="seconds between kills")
    parser.add_argument(
        "--down-for", type=float, default=1.0, help="seconds before a killed replica restarts"
    )
    parser.add_argument("--gets", type=int, default=5000)
    parser.add_argument("--posts", type=int, default=500)
    parser.add_argument("--rate", type=float, default=300, help="requests per second, open loop")
    parser.add_argument(
        "--service-ms", type=float, default=5, help="a replica's random service time, at most"
    )
    parser.add_argument(
        "--settle", type=float, default=2, help="seconds idle before the fds are counted again"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--proxy-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="one more argument for clientlb proxy (repeat; e.g. --proxy-arg=--health-path=/)",
    )
    parser.add_argument("--peers", action="store_true", help="also run nginx and HAProxy")
    parser.add_argument("--only", nargs="*", help="run only these: clientlb, nginx, haproxy")
    parser.add_argument("--keep", action="store_true", help="keep the logs and print where")
    parser.add_argument("--strict", action="store_true", help="exit 1 when clientlb misses")
    parser.add_argument("--replica", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.replica:
        port, index, log, seed, service = args.replica
        serve_replica(int(port), int(index), log, seed, float(service))
        return 0
    if args.replicas < 1 or args.rate <= 0 or args.gets + args.posts < 1:
        parser.error("need at least one replica, one request and a positive rate")
    names = args.only or (["clientlb", "nginx", "haproxy"] if args.peers else ["clientlb"])
    root = tempfile.mkdtemp(prefix="clientlb-chaos-")
    procs = Processes()
    results: list[Result] = []
    try:
        with interrupts_as_exceptions():
            for name in names:
                if name not in ("clientlb", "nginx", "haproxy"):
                    parser.error(f"unknown proxy {name}")
                result = run(name, args, procs, root)
                if result is not None:
                    report(result)
                    results.append(result)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        procs.close()
        if args.keep:
            print(f"logs kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    if results:
        summary(results)
    ours = next((r for r in results if r.name == "clientlb"), None)
    if ours is not None:
        passed, misses = ours.verdict()
        print(
            f"\n{'PASS' if passed else 'MISS'}: clientlb against 0 failed GETs, 0 duplicate "
            f"POSTs, 0 lost POSTs, in-flight back to 0, fds back to start"
            + (f" (missed: {', '.join(misses)})" if misses else "")
        )
    if args.strict and ours is not None and not ours.verdict()[0]:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
