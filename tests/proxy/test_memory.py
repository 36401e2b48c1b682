"""Bounded memory: a large upload and a large download stream through the proxy
(the CLI, in its own process) without its resident set growing.

256 MiB each way here, to keep the suite fast; ``benchmarks/proxy_memory.py``
runs the same measurement with 1 GiB.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import httpx
import pytest

from .servers import Running, Served, Special

pytestmark = pytest.mark.integration

MIB = 256
CHUNK = 64 * 1024
LIMIT = 64 * 1024 * 1024


def rss(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise LookupError(field)


def chunks(total: int) -> Iterator[bytes]:
    chunk = b"u" * CHUNK
    for _ in range(total // CHUNK):
        yield chunk


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs /proc")
def test_large_upload_and_download_keep_memory_bounded() -> None:
    size = MIB * 1024 * 1024
    with Served(Special()) as upstream:
        running = Running(["--upstream", upstream.url])
        try:
            with httpx.Client(base_url=running.url, timeout=60) as client:
                client.get("/download?mib=1").raise_for_status()
                idle = rss(running.proc.pid, "VmRSS")
                assert client.post("/upload", content=chunks(size)).text == str(size)
                received = 0
                with client.stream("GET", f"/download?mib={MIB}") as response:
                    for piece in response.iter_raw(CHUNK):
                        received += len(piece)
                assert received == size
                peak = rss(running.proc.pid, "VmHWM")
        finally:
            assert running.stop() == 0
    assert peak - idle <= LIMIT, f"peak {peak >> 20} MiB vs idle {idle >> 20} MiB"
