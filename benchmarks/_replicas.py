"""Replicas for the benchmarks: uvicorn servers on one asyncio loop, in a process
of their own, so that they and the measuring client use both cores.

A benchmark gives ``serve()`` the head of the replicas' script: code that reads
its own arguments from ``sys.argv[1:]`` and defines ``replicas`` (how many),
``http`` (uvicorn's HTTP implementation) and ``replica(index)`` (the ASGI app
of one replica). ``serve()`` adds the rest: one socket per replica on an
ephemeral loopback port, the ports printed for the parent, no signal handling
of its own (the parent stops it; it also ends when the parent's end of stdin
closes), and waits until every replica answers ``ready_path``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx

#: The part of every replicas' script after its head.
_TAIL = r"""
import asyncio, contextlib, os, signal, socket, sys, threading
import uvicorn


class Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self):  # the parent stops this process: no signal handling
        yield


signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
# the parent gone (stdin closed), this process goes too
threading.Thread(target=lambda: (sys.stdin.read(), os._exit(0)), daemon=True).start()
sockets = []
for _ in range(replicas):
    # IPPROTO_TCP named so that asyncio sets TCP_NODELAY on accepted connections
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    sockets.append(sock)
print(" ".join(str(s.getsockname()[1]) for s in sockets), flush=True)


async def main():
    servers = [
        Server(uvicorn.Config(replica(i), http=http, log_level="warning", access_log=False,
                              lifespan="off"))
        for i in range(replicas)
    ]
    await asyncio.gather(*(s.serve(sockets=[sock]) for s, sock in zip(servers, sockets)))


asyncio.run(main())
"""


def http_implementation() -> str:
    """uvicorn's fastest HTTP implementation installed here."""
    return "httptools" if importlib.util.find_spec("httptools") else "h11"


@contextlib.contextmanager
def serve(
    head: str, argv: list[str], count: int, *, ready_path: str = "/", answer_within: float = 1.0
) -> Iterator[list[str]]:
    """Start the replicas' process (``head`` run with ``argv``); the replicas'
    URLs once each answers ``ready_path`` within ``answer_within`` seconds. The
    process is stopped on exit."""
    process = subprocess.Popen(
        [sys.executable, "-c", head + _TAIL, *argv],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        ports = process.stdout.readline().split()
        if len(ports) != count or not all(p.isdigit() for p in ports):
            raise RuntimeError("the replicas did not start")
        urls = [f"http://127.0.0.1:{p}" for p in ports]
        deadline = time.monotonic() + 10 + answer_within
        for url in urls:  # until each one answers
            while True:
                try:
                    httpx.get(url + ready_path, timeout=answer_within).raise_for_status()
                    break
                except httpx.HTTPError:
                    if time.monotonic() > deadline or process.poll() is not None:
                        raise RuntimeError("the replicas did not start") from None
                    time.sleep(0.02)
        yield urls
    finally:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        for pipe in (process.stdin, process.stdout):
            if pipe is not None:
                pipe.close()
