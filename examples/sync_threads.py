"""One sync transport shared by a pool of threads, with a standby.

    python examples/sync_threads.py http://127.0.0.1:8001 http://127.0.0.1:8002 --standby http://127.0.0.1:8009
"""

from __future__ import annotations

import argparse
from concurrent.futures import ThreadPoolExecutor

import httpx

import clientlb


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("upstreams", nargs="+")
    parser.add_argument("--standby", action="append", default=[])
    args = parser.parse_args()
    transport = clientlb.BalancingTransport(args.upstreams, standbys=args.standby)
    with httpx.Client(transport=transport, base_url="http://service") as client:

        def fetch(i: int) -> int:
            return client.get(f"/item/{i}").status_code

        with ThreadPoolExecutor(max_workers=16) as workers:
            statuses = list(workers.map(fetch, range(200)))
    print({status: statuses.count(status) for status in set(statuses)})
    for row in transport.snapshot()["upstreams"]:
        print(row["url"], row["tier"], row["state"], row["requests"])


if __name__ == "__main__":
    main()
