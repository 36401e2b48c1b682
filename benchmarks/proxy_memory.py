"""Peak memory of ``clientlb proxy`` while a large upload and a large download
stream through it, and while clients send huge request heads.

    python benchmarks/proxy_memory.py [--mib 1024] [--heads 3] [--head-mib 6]
                                      [--ws-clients 40] [--ws-mib 15]

Starts an upstream (uvicorn) that counts what it receives and streams what is
asked of it, runs ``clientlb proxy`` as a subprocess in front of it, uploads then
downloads ``--mib`` MiB through the proxy with httpx, and reads the proxy's peak
resident set (``VmHWM``) against its idle resident set after a warm-up request.
Then, on a fresh proxy, ``--heads`` clients at once each send a request head of
``--head-mib`` MiB (a million short headers, the head-limit's worst case): each
must be refused (431) after the head limit, and the peak must stay as flat.
The target is a peak within 64 MiB of idle. Last, ``--ws-clients`` WebSockets
at once each send two permessage-deflate messages of ``--ws-mib`` MiB (a few
KiB on the wire each) to an upstream that answers their length: the target is
a peak within 128 MiB of idle. Loopback only; stops by itself.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import uvicorn

CHUNK = 64 * 1024
LIMIT_MIB = 64
WS_LIMIT_MIB = 128


async def upstream(scope: Any, receive: Any, send: Any) -> None:
    """``POST /upload`` answers the byte count; ``GET /download?mib=N`` streams; a
    WebSocket answers each message with its length."""
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        while (message := await receive())["type"] == "websocket.receive":
            size = len(message.get("bytes") or b"") + len(message.get("text") or "")
            await send({"type": "websocket.send", "text": str(size)})
        return
    if scope["type"] != "http":
        return
    if scope["path"] == "/upload":
        total = 0
        while True:
            message = await receive()
            total += len(message.get("body", b""))
            if not message.get("more_body"):
                break
        body = str(total).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})
        return
    mib = int(scope["query_string"].decode().partition("=")[2] or "1")
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-length", str(mib * 1024 * 1024).encode())],
        }
    )
    chunk = b"x" * CHUNK
    for _ in range(mib * 1024 * 1024 // CHUNK):
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


def _rss(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process, in bytes."""
    with open(f"/proc/{pid}/status") as f:
        fields = dict(line.split(":", 1) for line in f if line.startswith(("VmRSS", "VmHWM")))
    return {k: int(v.split()[0]) * 1024 for k, v in fields.items()}


class Upstream:
    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        config = uvicorn.Config(
            upstream, log_level="warning", lifespan="off", loop="asyncio", ws_max_size=32 << 20
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    def __enter__(self) -> str:
        self.thread.start()
        while not self.server.started:
            time.sleep(0.01)
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()


class Proxy:
    """``clientlb proxy`` in a subprocess; ``url`` once it listens."""

    def __init__(self, upstream_url: str) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "clientlb",
                "proxy",
                "--listen",
                "127.0.0.1:0",
                "--upstream",
                upstream_url,
            ],
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            found = re.search(r"listening on (http://[\d.:]+)", line)
            if found:
                self.url = found.group(1)
                break
        else:
            raise RuntimeError("the proxy did not start")
        threading.Thread(target=self.proc.stderr.read, daemon=True).start()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)
        if self.proc.stderr is not None:
            self.proc.stderr.close()


def _chunks(total: int) -> Iterator[bytes]:
    chunk = b"u" * CHUNK
    for _ in range(total // CHUNK):
        yield chunk


def measure(mib: int) -> dict[str, float]:
    """Stream ``mib`` MiB up and down through a fresh proxy; figures in MiB and s."""
    size = mib * 1024 * 1024
    with Upstream() as upstream_url:
        proxy = Proxy(upstream_url)
        try:
            timeout = httpx.Timeout(120.0)
            with httpx.Client(base_url=proxy.url, timeout=timeout) as client:
                client.get("/download?mib=1").raise_for_status()  # warm up
                idle = _rss(proxy.proc.pid)["VmRSS"]
                start = time.perf_counter()
                r = client.post("/upload", content=_chunks(size))
                up_s = time.perf_counter() - start
                assert r.text == str(size), r.text
                start = time.perf_counter()
                received = 0
                with client.stream("GET", f"/download?mib={mib}") as response:
                    for piece in response.iter_raw(CHUNK):
                        received += len(piece)
                down_s = time.perf_counter() - start
                assert received == size, received
                peak = _rss(proxy.proc.pid)["VmHWM"]
        finally:
            proxy.stop()
    mb = 1024 * 1024
    return {
        "mib": mib,
        "idle_mib": idle / mb,
        "peak_mib": peak / mb,
        "growth_mib": (peak - idle) / mb,
        "upload_s": up_s,
        "download_s": down_s,
    }


def _huge_head(port: int, mib: int, answers: list[bytes], sent: list[int]) -> None:
    """Send a head of ``mib`` MiB made of short headers; keep what comes back."""
    line = b"X-A: 1\r\n"  # 8 bytes: 6 MiB is about 800,000 headers
    block = line * (CHUNK // len(line))
    total = 0
    answer = b""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        try:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: proxy\r\n")
            while total < mib * 1024 * 1024:
                sock.sendall(block)
                total += len(block)
            sock.sendall(b"\r\n")
        except OSError:
            pass  # refused and closed before the end: the point
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except OSError:
            pass
    answers.append(answer)
    sent.append(total)


def measure_heads(clients: int, mib: int) -> dict[str, Any]:
    """``clients`` huge heads at once through a fresh proxy."""
    with Upstream() as upstream_url:
        proxy = Proxy(upstream_url)
        try:
            with httpx.Client(base_url=proxy.url) as client:
                client.get("/download?mib=1").raise_for_status()  # warm up
            idle = _rss(proxy.proc.pid)["VmRSS"]
            port = int(proxy.url.rsplit(":", 1)[1])
            answers: list[bytes] = []
            sent: list[int] = []
            threads = [
                threading.Thread(target=_huge_head, args=(port, mib, answers, sent))
                for _ in range(clients)
            ]
            start = time.perf_counter()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(60)
            elapsed = time.perf_counter() - start
            peak = _rss(proxy.proc.pid)["VmHWM"]
        finally:
            proxy.stop()
    mb = 1024 * 1024
    return {
        "statuses": [a.split(b"\r\n", 1)[0].decode("latin-1", "replace") for a in answers],
        "sent_kib": [n // 1024 for n in sent],
        "idle_mib": idle / mb,
        "peak_mib": peak / mb,
        "growth_mib": (peak - idle) / mb,
        "seconds": elapsed,
    }


async def _websocket_client(url: str, mib: int, messages: int) -> list[str]:
    from websockets.asyncio.client import connect

    data = b"w" * (mib * 1024 * 1024)  # deflates to about a thousandth
    answers = []
    async with connect(url, compression="deflate", max_size=None) as ws:
        for _ in range(messages):
            await ws.send(data)
            answers.append(str(await ws.recv()))
    return answers


def measure_websockets(clients: int, mib: int, messages: int) -> dict[str, Any]:
    """``clients`` WebSockets at once through a fresh proxy, each sending
    ``messages`` deflated messages of ``mib`` MiB."""
    import asyncio

    with Upstream() as upstream_url:
        proxy = Proxy(upstream_url)
        try:
            with httpx.Client(base_url=proxy.url) as client:
                client.get("/download?mib=1").raise_for_status()  # warm up
            idle = _rss(proxy.proc.pid)["VmRSS"]
            url = proxy.url.replace("http://", "ws://") + "/ws"

            async def run() -> list[list[str]]:
                tasks = [_websocket_client(url, mib, messages) for _ in range(clients)]
                return list(await asyncio.gather(*tasks))

            start = time.perf_counter()
            answers = asyncio.run(run())
            elapsed = time.perf_counter() - start
            peak = _rss(proxy.proc.pid)["VmHWM"]
        finally:
            proxy.stop()
    mb = 1024 * 1024
    expected = str(mib * mb)
    return {
        "relayed": sum(a == expected for per in answers for a in per),
        "idle_mib": idle / mb,
        "peak_mib": peak / mb,
        "growth_mib": (peak - idle) / mb,
        "seconds": elapsed,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=1024, help="size of each transfer (MiB)")
    parser.add_argument("--heads", type=int, default=3, help="clients sending huge heads")
    parser.add_argument("--head-mib", type=int, default=6, help="size of each head (MiB)")
    parser.add_argument("--ws-clients", type=int, default=40, help="WebSockets at once")
    parser.add_argument("--ws-mib", type=int, default=15, help="size of each message (MiB)")
    args = parser.parse_args()
    w = measure_websockets(args.ws_clients, args.ws_mib, 2)
    print(f"{args.ws_clients} WebSockets at once, each two deflated {args.ws_mib} MiB messages")
    print(f"  relayed {w['relayed']} of {2 * args.ws_clients} messages in {w['seconds']:.1f} s")
    print(
        f"  proxy RSS idle {w['idle_mib']:.1f} MiB, peak {w['peak_mib']:.1f} MiB, "
        f"growth {w['growth_mib']:.1f} MiB (target <= {WS_LIMIT_MIB})"
    )
    h = measure_heads(args.heads, args.head_mib)
    print(f"{args.heads} clients at once, each a {args.head_mib} MiB request head")
    print(f"  answered: {', '.join(h['statuses'])} in {h['seconds']:.2f} s")
    print(f"  sent before the proxy closed: {', '.join(str(k) for k in h['sent_kib'])} KiB")
    print(
        f"  proxy RSS idle {h['idle_mib']:.1f} MiB, peak {h['peak_mib']:.1f} MiB, "
        f"growth {h['growth_mib']:.1f} MiB (target <= {LIMIT_MIB})"
    )
    r = measure(args.mib)
    print(f"{r['mib']} MiB up and down through clientlb proxy")
    print(f"  upload   {r['upload_s']:.1f} s ({r['mib'] / r['upload_s']:.0f} MiB/s)")
    print(f"  download {r['download_s']:.1f} s ({r['mib'] / r['download_s']:.0f} MiB/s)")
    print(
        f"  proxy RSS idle {r['idle_mib']:.1f} MiB, peak {r['peak_mib']:.1f} MiB, "
        f"growth {r['growth_mib']:.1f} MiB (target <= {LIMIT_MIB})"
    )
    worst = max(r["growth_mib"], h["growth_mib"])
    return 0 if worst <= LIMIT_MIB and w["growth_mib"] <= WS_LIMIT_MIB else 1


if __name__ == "__main__":
    sys.exit(main())
