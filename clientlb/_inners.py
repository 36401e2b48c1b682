"""The inner transports that do a balancing transport's I/O.

Given one (``inner=``), every upstream shares it. By default each upstream gets an
``httpx.HTTPTransport`` (or the async one) of its own, made on its first request:
httpcore's pool looks at every connection it holds on each request, so one pool
holding the connections to every upstream costs more the more upstreams there are
(measured in ``benchmarks/transport_overhead.py``), and connection limits read as
per upstream, as in nginx's ``keepalive``. An upstream that leaves its pool has its
transport closed once no request of it is left in flight.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

from ._core import Member, Pool, Upstream

T = TypeVar("T")


class Inners(Generic[T]):
    """The inner transport of each upstream: the one given, or one each."""

    def __init__(self, given: T | None, factory: Callable[[], T], pools: Iterable[Pool]) -> None:
        self.given = given
        self._factory = factory
        self._pools = list(pools)
        self._by_key: dict[str, T] = {}
        self._lock = threading.Lock()
        self.retired: list[Member] = []  # removed from their pool; transport still open
        if given is None:
            for pool in self._pools:
                pool._watch(self._on_change)

    def _on_change(self, event: str, member: Member) -> None:
        if event == "removed":
            self.retired.append(member)  # a list append: safe under the pool's lock

    def get(self, upstream: Upstream) -> T:
        if self.given is not None:
            return self.given
        inner = self._by_key.get(upstream.key)
        if inner is None:
            with self._lock:
                inner = self._by_key.get(upstream.key)
                if inner is None:
                    inner = self._by_key[upstream.key] = self._factory()
        return inner

    def take_retired(self) -> list[T]:
        """Transports of upstreams that left every pool and have nothing in flight,
        for the caller to close."""
        with self._lock:
            waiting: list[Member] = []
            done: list[Member] = []
            for member in self.retired:
                (done if member.in_flight == 0 else waiting).append(member)
            self.retired = waiting
            if not done:
                return []
            live = {m.upstream.key for pool in self._pools for m in pool.members}
            closing = []
            for member in done:
                key = member.upstream.key
                if key not in live and key in self._by_key:
                    closing.append(self._by_key.pop(key))
            return closing

    def take_all(self) -> list[T]:
        """Every transport, for ``close()``; stops following the pools."""
        for pool in self._pools:
            pool._unwatch(self._on_change)
        with self._lock:
            owned = list(self._by_key.values())
            self._by_key.clear()
            self.retired.clear()
        return [self.given] if self.given is not None else owned
