"""The balancing algorithms.

Each algorithm holds the candidates of one tier (``rebuild``) and picks one per
request (``pick``). They are built for pools of thousands of upstreams: every pick is
O(1), O(log n) or O(number of distinct weights); only a pick that must skip
excluded upstreams (a retry) may fall back to a scan.

An algorithm that reads in-flight counts or latency sets ``tracks_load`` and is
told through ``changed(member)`` after every change, so that it can keep its index
(buckets, heap) exact. Algorithms never mutate members.
"""

from __future__ import annotations

import copy
import hashlib
import math
import random as _random
from bisect import bisect_right
from collections.abc import Callable, Collection, Sequence
from itertools import accumulate
from typing import ClassVar, Self

from ._errors import ConfigError
from ._member import Member


class Algorithm:
    """Base class of the balancing algorithms; subclass it for a custom one."""

    name: ClassVar[str] = "custom"
    #: Uses the request's key (client address, ``hash_on=``) rather than load.
    hashes: ClassVar[bool] = False
    #: Wants ``changed(member)`` after in-flight or latency changes.
    tracks_load: ClassVar[bool] = False

    rng: _random.Random
    clock: Callable[[], float]

    def bind(self, rng: _random.Random, clock: Callable[[], float]) -> Self:
        """A fresh copy of this algorithm's settings for one tier of one pool."""
        clone = copy.copy(self)
        clone.rng = rng
        clone.clock = clock
        return clone

    def rebuild(self, members: Sequence[Member]) -> None:
        """Take a new candidate list (in configuration order)."""
        raise NotImplementedError

    def pick(self, key: str | None, exclude: Collection[Member]) -> Member | None:
        """One candidate not in ``exclude``, or ``None`` if there is none."""
        raise NotImplementedError

    def changed(self, member: Member) -> None:
        """``member``'s in-flight count or latency changed (``tracks_load`` only)."""


def _allowed(members: Sequence[Member], exclude: Collection[Member]) -> list[Member]:
    return [m for m in members if m not in exclude]


def _load(m: Member) -> float:
    return (m.in_flight + 1) / m.weight


class RoundRobin(Algorithm):
    """Each candidate in turn, in a fixed cyclic order; weights are ignored.

    The cycle starts at a random place so that many clients do not move in step.
    """

    name = "round_robin"

    def rebuild(self, members: Sequence[Member]) -> None:
        self.members = list(members)
        self.next = self.rng.randrange(len(members)) if members else 0

    def pick(self, key: str | None, exclude: Collection[Member]) -> Member | None:
        members = self.members
        n = len(members)
        for _ in range(n):
            i = self.next % n
            self.next = i + 1
            m = members[i]
            if not exclude or m not in exclude:
                return m
        return None


class _Cohort:
    """Members of one weight, in configuration order, and how often it was picked."""

    __slots__ = ("indexes", "picks", "weight")

    def __init__(self, weight: float) -> None:
        self.weight = weight
        self.indexes: list[int] = []
        self.picks = 0


class WeightedRoundRobin(Algorithm):
    """Smooth weighted round robin: exactly nginx's sequence, in O(distinct weights).

    nginx adds every weight to a running score, picks the highest (the first on a
    tie) and takes the total off it. After t picks a member's score is
    ``t * weight - total * picks``; members of equal weight are therefore picked in
    configuration order, one round after another, and the best member of each weight
    group is known without looking at the others. For weights 5, 1, 1 this gives
    a a b a c a a.
    """

    name = "weighted_round_robin"

    def rebuild(self, members: Sequence[Member]) -> None:
        self.members = list(members)
        groups: dict[float, _Cohort] = {}
        for i, m in enumerate(self.members):
            cohort = groups.get(m.weight)
            if cohort is None:
                cohort = groups[m.weight] = _Cohort(m.weight)
            cohort.indexes.append(i)
        self.cohorts = list(groups.values())
        self.total = sum(m.weight for m in self.members)
        integral = all(float(m.weight).is_integer() for m in self.members)
        self.period = int(self.total) if integral else 0
        self.t = 0
        self.fallback = 0

    def pick(self, key: str | None, exclude: Collection[Member]) -> Member | None:
        if not self.members:
            return None
        t = self.t + 1
        total = self.total
        best = self.cohorts[0]
        best_score = -math.inf
        best_index = 0
        for cohort in self.cohorts:
            indexes = cohort.indexes
            n = len(indexes)
            picks = cohort.picks
            score = t * cohort.weight - total * (picks // n)
            index = indexes[picks % n]
            if score > best_score or (score == best_score and index < best_index):
                best, best_score, best_index = cohort, score, index
        member = self.members[best_index]
        if exclude and member in exclude:
            return self._skip(exclude)
        best.picks += 1
        self.t = t
        if t == self.period:  # a full period: every score is back at zero
            self.t = 0
            for cohort in self.cohorts:
                cohort.picks = 0
        return member

    def _skip(self, exclude: Collection[Member]) -> Member | None:
        """A retry: the next allowed member in order, leaving the sequence as it is."""
        n = len(self.members)
        for _ in range(n):
            self.fallback = (self.fallback + 1) % n
            m = self.members[self.fallback]
            if m not in exclude:
                return m
        return None


class _Group:
    """Members of one weight, bucketed by in-flight count, with the lowest count known."""

    __slots__ = ("buckets", "lowest", "weight")

    def __init__(self, weight: float) -> None:
        self.weight = weight
        self.buckets: dict[int, list[Member]] = {}
        self.lowest = 0


class LeastConnections(Algorithm):
    """Fewest in-flight requests per unit of weight: ``(in_flight + 1) / weight``.

    Exact, in O(distinct weights) per pick and O(1) per change: members of equal
    weight sit in buckets by in-flight count, and a count only ever moves by one,
    so the lowest bucket is tracked without a scan. Ties are broken at random.
    """

    name = "least_connections"
    tracks_load = True

    def rebuild(self, members: Sequence[Member]) -> None:
        self.members = list(members)
        groups: dict[float, _Group] = {}
        self.place: dict[Member, tuple[_Group, int, int]] = {}  # group, bucket, position
        for m in self.members:
            group = groups.get(m.weight)
            if group is None:
                group = groups[m.weight] = _Group(m.weight)
            self._put(group, m, m.in_flight)
        self.groups = list(groups.values())
        for group in self.groups:
            group.lowest = min(group.buckets)

    def _put(self, group: _Group, m: Member, load: int) -> None:
        bucket = group.buckets.get(load)
        if bucket is None:
            bucket = group.buckets[load] = []
        self.place[m] = (group, load, len(bucket))
        bucket.append(m)

    def changed(self, member: Member) -> None:
        where = self.place.get(member)
        if where is None:
            return
        group, load, position = where
        new = member.in_flight
        if new == load:
            return
        bucket = group.buckets[load]
        last = bucket.pop()
        if last is not member:
            bucket[position] = last
            self.place[last] = (group, load, position)
        if not bucket:
            del group.buckets[load]
        self._put(group, member, new)
        if new < group.lowest:
            group.lowest = new
        elif load == group.lowest and not bucket:
            group.lowest = min(group.buckets)

    def pick(self, key: str | None, exclude: Collection[Member]) -> Member | None:
        groups = self.groups
        if not groups:
            return None
        if len(groups) == 1:
            group = groups[0]
            bucket = group.buckets[group.lowest]
        else:
            best = min((g.lowest + 1) / g.weight for g in groups)
            tied = [g.buckets[g.lowest] for g in groups if (g.lowest + 1) / g.weight == best]
            if len(tied) == 1:
                bucket = tied[0]
            else:
                i = self.rng.randrange(sum(len(b) for b in tied))
                for bucket in tied:
                    if i < len(bucket):
                        break
                    i -= len(bucket)
        member = bucket[int(self.rng.random() * len(bucket))]
        if exclude and member in exclude:
            allowed = _allowed(self.members, exclude)
            if not allowed:
                return None
            best_load = min(_load(m) for m in allowed)
            return self.rng.choice([m for m in allowed if _load(m) == best_load])
        return member


class LeastResponseTime(Algorithm):
    """Lowest ``EWMA latency * (in_flight + 1) / weight``, kept in an indexed heap.

    A member with no latency sample yet is scored with the pool's mean latency at the
    time it joined (1 ms if nothing is known), so it is tried but not flooded.
    """

    name = "least_response_time"
    tracks_load = True
    default_latency = 0.001

    def rebuild(self, members: Sequence[Member]) -> None:
        self.members = list(members)
        sampled = [m.ewma for m in self.members if m.sampled]
        self.seed = sum(sampled) / len(sampled) if sampled else self.default_latency
        scored = sorted((self._score(m), i) for i, m in enumerate(self.members))
        self.keys = [score for score, _ in scored]
        self.heap = [self.members[i] for _, i in scored]
        self.pos = {m: i for i, m in enumerate(self.heap)}

    def _score(self, m: Member) -> float:
        return (m.ewma if m.sampled else self.seed) * (m.in_flight + 1) / m.weight

    def changed(self, member: Member) -> None:
        i = self.pos.get(member)
        if i is None:
            return
        keys, heap, pos = self.keys, self.heap, self.pos
        key = self._score(member)
        n = len(heap)
        if key < keys[i]:
            while i > 0:
                parent = (i - 1) >> 1
                if keys[parent] <= key:
                    break
                keys[i] = keys[parent]
                heap[i] = heap[parent]
                pos[heap[i]] = i
                i = parent
        else:
            while True:
                child = 2 * i + 1
                if child >= n:
                    break
                right = child + 1
                if right < n and keys[right] < keys[child]:
                    child = right
                if keys[child] >= key:
                    break
                keys[i] = keys[child]
                heap[i] = heap[child]
                pos[heap[i]] = i
                i = child
        keys[i] = key
        heap[i] = member
        pos[member] = i

    def pick(self, key: str | None, exclude: Collection[Member]) -> Member | None:
        if not self.heap:
            return None
        top = self.heap[0]
        if not exclude or top not in exclude:
            return top
        allowed = _allowed(self.members, exclude)
        return min(allowed, key=self._score) if allowed else None


class Random(Algorithm):
    """Uniformly at random, or in proportion to weight when weights differ."""

    name = "random"

    def rebuild(self, members: Sequence[Member]) -> None:
        self.members = list(members)
        weights = [m.weight for m in self.members]
        self.uniform = len(set(weights)) <= 1
        self.cumulative = list(accumulate(weights))

    def pick(self, key: str | None, exclude: Collection[Member]) -> Member | None:
        members = self.members
        if not members:
            return None
        if self.uniform:
            m = members[int(self.rng.random() * len(members))]
        else:
            total = self.cumulative[-1]
            i = bisect_right(self.cumulative, self.rng.random() * total)
            m = members[min(i, len(members) - 1)]
        if exclude and m in exclude:
            allowed = _allowed(members, exclude)
            if not allowed:
                return None
            return self.rng.choices(allowed, weights=[a.weight for a in allowed])[0]
        return m


class PowerOfTwo(Algorithm):
    """Two distinct members at random; the one with fewer in-flight per weight."""

    name = "power_of_two"

    def rebuild(self, members: Sequence[Member]) -> None:
        self.members = list(members)

    def cost(self, m: Member) -> float:
        return (m.in_flight + 1) / m.weight

    def pick(self, key: str | None, exclude: Collection[Member]) -> Member | None:
        a, b = self._two(self.members)
        if exclude and (a in exclude or b in exclude):  # redraw among the allowed only
            a, b = self._two(_allowed(self.members, exclude))
        if a is None:
            return None
        if b is None:
            return a
        return b if self.cost(b) < self.cost(a) else a

    def _two(self, members: Sequence[Member]) -> tuple[Member | None, Member | None]:
        """Two distinct members, drawn without replacement."""
        n = len(members)
        if n < 2:
            return (members[0] if n else None), None
        random = self.rng.random
        i = int(random() * n)
        j = int(random() * (n - 1))
        if j >= i:
            j += 1
        return members[i], members[j]


class PeakEwma(PowerOfTwo):
    """Two distinct members at random; the lower peak-EWMA cost (Finagle, Linkerd).

    Cost is the peak-sensitive latency estimate, decayed over 10 s, times
    ``(in_flight + 1) / weight``. A member never measured costs nothing while idle
    and a large penalty once it has requests outstanding.
    """

    name = "peak_ewma"
    penalty = 1e6

    def cost(self, m: Member) -> float:
        if not m.sampled:
            return self.penalty * m.in_flight / m.weight
        return m.peak_cost(self.clock()) * (m.in_flight + 1) / m.weight


def hash64(text: str) -> int:
    """A stable 64-bit hash: the same in every process (unlike ``hash()``)."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


#: The smallest default Maglev table (a prime is taken at or above the size).
MIN_TABLE_SIZE = 1 << 16


def _next_prime(n: int) -> int:
    def is_prime(k: int) -> bool:
        if k < 2 or k % 2 == 0:
            return k == 2
        return all(k % d for d in range(3, math.isqrt(k) + 1, 2))

    while not is_prime(n):
        n += 1
    return n


class ConsistentHash(Algorithm):
    """Maglev consistent hashing of a request key (``hash_on=``).

    A lookup table of prime size is filled by each member in turn from its own
    permutation, in proportion to its weight. A key's slot depends on the table
    size, so the size must not follow every membership change: it is 65,537 (as in
    Maglev and Envoy) and grows only in powers of two, to keep at least 100 entries
    per member past 648 members; ``table_size`` fixes it (rounded up to a prime).
    Each member owns an equal share of the table (so load is even), and removing
    one member reassigns its own entries and very few others. A pick is one hash
    and one table read. A request without a key is placed at random.
    """

    name = "consistent_hash"
    hashes = True

    def __init__(self, table_size: int | None = None) -> None:
        if table_size is not None and (not isinstance(table_size, int) or table_size < 2):
            raise ConfigError("table_size", f"must be a whole number >= 2, got {table_size!r}")
        self.table_size = table_size

    def rebuild(self, members: Sequence[Member]) -> None:
        signature = [(m.upstream.key, m.weight) for m in members]
        if getattr(self, "signature", None) == signature:
            self.members = list(members)  # the same upstreams: the table stands
            return
        self.signature = signature
        self.members = list(members)
        n = len(self.members)
        if not n:
            self.table: list[int] = []
            return
        size = self.table_size or max(MIN_TABLE_SIZE, 1 << (101 * n - 1).bit_length())
        self.table = self._populate(_next_prime(size))

    def _populate(self, size: int) -> list[int]:
        offsets, skips = [], []
        for m in self.members:
            h = hash64(m.upstream.key)
            offsets.append(h % size)
            skips.append((h >> 32) % (size - 1) + 1)
        top = max(m.weight for m in self.members)
        shares = [m.weight / top for m in self.members]
        table = [-1] * size
        nexts = [0] * len(self.members)
        counts = [0] * len(self.members)
        filled = 0
        turn = 0
        while True:
            turn += 1
            for i, share in enumerate(shares):
                if counts[i] >= turn * share:
                    continue  # a lighter member waits its turn
                offset, skip, j = offsets[i], skips[i], nexts[i]
                slot = (offset + j * skip) % size
                while table[slot] >= 0:
                    j += 1
                    slot = (offset + j * skip) % size
                table[slot] = i
                nexts[i] = j + 1
                counts[i] += 1
                filled += 1
                if filled == size:
                    return table

    def pick(self, key: str | None, exclude: Collection[Member]) -> Member | None:
        table = self.table
        if not table:
            return None
        slot = int(self.rng.random() * len(table)) if key is None else hash64(key) % len(table)
        m = self.members[table[slot]]
        if exclude and m in exclude:
            if len(exclude) >= len(self.members) and all(x in exclude for x in self.members):
                return None
            size = len(table)
            for step in range(1, size):  # the next owner along the table
                m = self.members[table[(slot + step) % size]]
                if m not in exclude:
                    break
        return m


class IpHash(ConsistentHash):
    """Maglev consistent hashing of the client address: removing an upstream
    remaps only the clients it served."""

    name = "ip_hash"


ALGORITHMS: dict[str, type[Algorithm]] = {
    cls.name: cls
    for cls in (
        RoundRobin,
        WeightedRoundRobin,
        LeastConnections,
        LeastResponseTime,
        IpHash,
        Random,
        PowerOfTwo,
        PeakEwma,
        ConsistentHash,
    )
}


def make_algorithm(value: object, field: str = "algorithm") -> Algorithm:
    """An algorithm from its name (see ``ALGORITHMS``) or an ``Algorithm`` object."""
    if isinstance(value, Algorithm):
        return value
    if isinstance(value, str):
        cls = ALGORITHMS.get(value)
        if cls is None:
            names = ", ".join(ALGORITHMS)
            raise ConfigError(field, f"unknown algorithm {value!r}; valid names: {names}")
        return cls()
    if isinstance(value, type) and issubclass(value, Algorithm):
        return value()
    raise ConfigError(field, f"expected an algorithm name or Algorithm, got {value!r}")
