"""Balance an httpx.AsyncClient over replicas given on the command line.

    python examples/async_client.py http://127.0.0.1:8001 http://127.0.0.1:8002
"""

from __future__ import annotations

import sys

import anyio
import httpx

import clientlb


async def main(urls: list[str]) -> None:
    transport = clientlb.AsyncBalancingTransport(urls, algorithm="peak_ewma")
    async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
        for _ in range(10):
            response = await client.get("/")
            attempts = response.extensions["clientlb.attempts"]
            print(response.status_code, attempts[-1].upstream)
    for row in transport.snapshot()["upstreams"]:
        print(row)


if __name__ == "__main__":
    anyio.run(main, sys.argv[1:] or ["http://127.0.0.1:8001"])
