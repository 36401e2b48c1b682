"""Test doubles and small drivers for the sans-IO core: no sockets, no sleeping."""

from __future__ import annotations

import random
from collections.abc import Iterable
from typing import Any

from clientlb import Lease, Outcome, Pool
from clientlb._core import Member


class FakeClock:
    """A monotonic clock that moves only when the test says so."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def urls(n: int, *, port: int = 8000) -> list[str]:
    """``n`` distinct upstream URLs."""
    return [f"http://10.{i // 65536}.{i // 256 % 256}.{i % 256}:{port}" for i in range(n)]


def make_pool(
    upstreams: Iterable[Any],
    algorithm: Any = "round_robin",
    *,
    clock: FakeClock | None = None,
    seed: int = 0,
    rng: random.Random | None = None,
    **kwargs: Any,
) -> Pool:
    """A pool on a fake clock with seeded randomness (or ``rng``)."""
    return Pool(
        upstreams,
        algorithm=algorithm,
        clock=clock if clock is not None else FakeClock(),
        rng=rng if rng is not None else random.Random(seed),
        **kwargs,
    )


def member(pool: Pool, url: str) -> Member:
    """The pool's live member for ``url`` (as configured): the core's own record,
    for checks of what the public readings do not show."""
    for m in pool._live_members():
        if m.upstream.url == url:
            return m
    raise KeyError(url)


def pick_member(pool: Pool, url: str) -> Lease:
    """A lease on ``url``: every other upstream is excluded, as a retry would."""
    lease = pool.pick(exclude=[m for m in pool.members if m.url != url])
    assert lease.upstream.url == url
    return lease


def fail(pool: Pool, url: str, times: int, outcome: Outcome = Outcome.CONNECT_FAILURE) -> None:
    """``times`` failed attempts at ``url`` in a row."""
    for _ in range(times):
        pick_member(pool, url).finish(outcome)


def respond(pool: Pool, url: str, status: int, times: int = 1) -> None:
    """``times`` responses with ``status`` from ``url``, each body then closed."""
    for _ in range(times):
        lease = pick_member(pool, url)
        lease.responded(status)
        lease.finish()


def state(pool: Pool, url: str) -> str:
    """The snapshot state of ``url``: healthy, ejected, draining, slow-start, ..."""
    for entry in pool.snapshot()["upstreams"]:
        if entry["url"] == url:
            return str(entry["state"])
    return "removed"


def served(pool: Pool, count: int, *, key_prefix: str | None = None) -> dict[str, int]:
    """Send ``count`` sequential requests (pick, then finish); count them per URL."""
    counts: dict[str, int] = {}
    for i in range(count):
        lease = pool.pick(None if key_prefix is None else f"{key_prefix}{i}")
        lease.finish()
        counts[lease.upstream.url] = counts.get(lease.upstream.url, 0) + 1
    return counts


def fast_algorithm(name: str) -> Any:
    """The algorithm ``name``; the hashing ones with a small fixed table, quick to
    rebuild after every health change (the same code path as the default size)."""
    from clientlb._core import ConsistentHash, IpHash

    if name == "consistent_hash":
        return ConsistentHash(table_size=1009)
    if name == "ip_hash":
        return IpHash(table_size=1009)
    return name
